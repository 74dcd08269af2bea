// Making names and small files durable: what a power cut may otherwise undo even after the
// data itself was synced (a file's directory entry is durable only once its directory is
// fsynced; a renamed file whose data was never synced can come back empty).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <string_view>

#include "util/errno_status.h"

namespace commcare::util {

// fsync of a directory: the names created, renamed or removed in it are durable after it.
inline Status SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("opening directory " + dir);
  const bool ok = ::fsync(fd) == 0;
  Status s = ok ? Status::Ok() : ErrnoStatus("syncing directory " + dir);
  ::close(fd);
  return s;
}

// The parent directory of path ("." for a bare name).
inline std::string ParentDirectory(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

// Replaces path with contents durably: a temporary file beside it, written and fsynced, renamed
// over it, then the directory fsynced.
inline Status WriteFileDurably(const std::string& path, std::string_view contents) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot write " + tmp);
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;
      if (errno == EINTR) continue;
      Status s = ErrnoStatus("cannot write " + tmp);
      ::close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status s = ErrnoStatus("cannot sync " + tmp);
    ::close(fd);
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("cannot write " + path);
  return SyncDirectory(ParentDirectory(path));
}

}  // namespace commcare::util
