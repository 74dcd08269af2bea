// The web console's files (src/server/console/), compiled into the binary at build time by
// cmake/EmbedFiles.cmake into console_assets.cc.
#pragma once

#include <string_view>

namespace commcare::server::console {

struct Asset {
  std::string_view path;          // relative to src/server/console/, e.g. "js/app.js"
  std::string_view content_type;  // from the file's extension
  std::string_view data;
  std::string_view etag;  // the first 32 hex digits of the content's SHA-256
};

// The file at path, or nullptr.
const Asset* FindAsset(std::string_view path);

}  // namespace commcare::server::console
