// Helpers shared by the test programs.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace cctest {

// A fresh, empty directory under the temp dir, removed when the test process exits.
inline std::string FreshTempDir(const char* prefix, const char* tag) {
  static int n = 0;
  static struct Cleaner {
    std::vector<std::filesystem::path> dirs;
    ~Cleaner() {
      std::error_code ec;
      for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
    }
  } cleaner;
  auto p = std::filesystem::temp_directory_path() /
           fmt::format("{}-{}-{}-{}-{}", prefix, tag, ::getpid(), n++, std::rand());
  std::filesystem::remove_all(p);
  cleaner.dirs.push_back(p);
  return p.string();
}

}  // namespace cctest
