#include "http/spool.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace commcare::http {

namespace {

// An unlinked file in TMPDIR (or /tmp), readable by this process only.
int OpenTemporary() {
  const char* dir = std::getenv("TMPDIR");
  std::string d = dir && *dir ? dir : "/tmp";
  int fd = -1;
#ifdef O_TMPFILE
  fd = ::open(d.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
#endif
  std::string path = d + "/commcare-spool-XXXXXX";
  fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd >= 0) ::unlink(path.c_str());
  return fd;
}

}  // namespace

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

Status Spool::Append(std::string_view bytes) {
  if (bytes.empty()) return Status::Ok();
  if (fd_ < 0 && memory_bytes_ + bytes.size() <= memory_limit_) {
    memory_.emplace_back(bytes);
    memory_bytes_ += bytes.size();
    return Status::Ok();
  }
  if (fd_ < 0 && (fd_ = OpenTemporary()) < 0)
    return Status::Unavailable(fmt::format("cannot spool a streamed answer to a temporary file: {}",
                                           std::strerror(errno)));
  while (!bytes.empty()) {
    ssize_t n = ::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(file_end_));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return Status::Unavailable(
          fmt::format("cannot spool a streamed answer: {}", std::strerror(errno)));
    file_end_ += static_cast<uint64_t>(n);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Result<std::string> Spool::Take(size_t max) {
  std::string out;
  if (!memory_.empty()) {
    out = std::move(memory_.front());
    memory_.pop_front();
    memory_bytes_ -= out.size();
    return out;  // a chunk as written (writers send pieces of a sensible size)
  }
  if (file_read_ >= file_end_) return out;
  out.resize(static_cast<size_t>(std::min<uint64_t>(max, file_end_ - file_read_)));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n =
        ::pread(fd_, out.data() + got, out.size() - got, static_cast<off_t>(file_read_ + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return Status::Unavailable(
          fmt::format("cannot read back a spooled answer: {}", std::strerror(errno)));
    got += static_cast<size_t>(n);
  }
  file_read_ += got;
  return out;
}

}  // namespace commcare::http
