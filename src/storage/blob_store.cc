// BlobStore's default streaming methods, built on Put and Get (they hold the whole blob; the file
// and S3 stores override them to read and write in pieces).
#include "commcare/storage/blob_store.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace commcare::storage {

Result<std::string> BlobStore::PutFile(std::string_view name, const std::string& local_path) {
  std::ifstream in(local_path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("cannot open {}", local_path));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::Internal(fmt::format("cannot read {}", local_path));
  return Put(name, ss.str(), true);
}

Result<std::string> BlobStore::ReadRange(std::string_view key, uint64_t offset, size_t len) {
  CC_ASSIGN_OR_RETURN(std::string all, Get(key));
  if (offset >= all.size()) return std::string();
  return all.substr(offset, len);
}

}  // namespace commcare::storage
