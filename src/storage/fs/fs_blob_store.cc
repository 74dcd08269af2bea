// BlobStore in a directory. Each blob is one file in a fan-out directory, written as an unnamed
// O_TMPFILE and linked in under its name (or, where that is unsupported or a blob is replaced,
// written under tmp/ and renamed), so readers see all of a blob or none. Durability: fsync of the
// file and its directory (durable=true), or one syncfs() barrier for many puts (Sync()).
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>

#include "commcare/storage/blob_store.h"
#include "util/errno_status.h"
#include "util/hash.h"

namespace commcare::storage {
namespace {

namespace fs = std::filesystem;

Status Errno(const std::string& what) { return util::ErrnoStatus(what); }

class FsBlobStore final : public BlobStore {
 public:
  FsBlobStore(std::string root, bool read_only) : root_(std::move(root)), read_only_(read_only) {}

  Status Init() {
    std::error_code ec;
    if (!read_only_) fs::create_directories(root_ + "/tmp", ec);
    if (ec) return Status::Unavailable(fmt::format("cannot create {}: {}", root_, ec.message()));
    root_fd_ = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd_ < 0) return Errno("opening blob root " + root_);
    // Named temp files left in tmp/ by a crash are orphans nobody points at.
    if (!read_only_)
      for (const auto& e : fs::directory_iterator(root_ + "/tmp", ec)) fs::remove(e.path(), ec);
    return Status::Ok();
  }
  ~FsBlobStore() override {
    if (root_fd_ >= 0) ::close(root_fd_);
  }

  Result<std::string> Put(std::string_view key, std::string_view data, bool durable) override {
    return Write(key, durable, [&](int fd) { return WriteAll(fd, data); });
  }

  // Copies the file into the blob's temp file in 1 MiB pieces, then links it in as Put does.
  Result<std::string> PutFile(std::string_view key, const std::string& local_path) override {
    int in = ::open(local_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) {
      if (errno == ENOENT) return Status::NotFound(fmt::format("no file {}", local_path));
      return Errno("opening " + local_path);
    }
    auto r = Write(key, true, [&](int fd) -> Status {
      std::string buf(1u << 20, '\0');
      while (true) {
        ssize_t n = ::read(in, buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Errno("reading " + local_path);
        if (n == 0) return Status::Ok();
        CC_RETURN_IF_ERROR(WriteAll(fd, std::string_view(buf.data(), static_cast<size_t>(n))));
      }
    });
    ::close(in);
    return r;
  }

  Result<std::string> ReadRange(std::string_view key, uint64_t offset, size_t len) override {
    std::string path, dir;
    CC_RETURN_IF_ERROR(PathFor(key, &path, &dir));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return Status::NotFound(fmt::format("no blob '{}'", key));
      return Errno("opening blob " + path);
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      Status s = Errno("reading blob " + path);
      ::close(fd);
      return s;
    }
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    len = offset >= size ? 0 : static_cast<size_t>(std::min<uint64_t>(len, size - offset));
    std::string out(len, '\0');
    size_t got = 0;
    while (got < len) {
      ssize_t n = ::pread(fd, out.data() + got, len - got, static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Status s = Errno("reading blob " + path);
        ::close(fd);
        return s;
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    ::close(fd);
    out.resize(got);
    return out;
  }

  Result<std::string> Get(std::string_view key) override {
    std::string path, dir;
    CC_RETURN_IF_ERROR(PathFor(key, &path, &dir));
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) return Status::NotFound(fmt::format("no blob '{}'", key));
      return Errno("opening blob " + path);
    }
    std::string out;
    char buf[65536];
    while (true) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        Status s = Errno("reading blob " + path);
        ::close(fd);
        return s;
      }
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }

  Status Delete(std::string_view key) override {
    std::string path, dir;
    CC_RETURN_IF_ERROR(PathFor(key, &path, &dir));
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Errno("deleting blob " + path);
    return Status::Ok();
  }

  Result<bool> Exists(std::string_view key) override {
    std::string path, dir;
    CC_RETURN_IF_ERROR(PathFor(key, &path, &dir));
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return true;
    if (errno == ENOENT) return false;
    return Errno("checking blob " + path);
  }

  Status Sync() override {
    if (::syncfs(root_fd_) != 0) return Errno("syncing the blob file system");
    return Status::Ok();
  }

  Status Restore(std::string_view key, std::string_view data) override {
    return Put(key, data, true).status();
  }

 private:
  // Writes a blob whose bytes fill() writes to fd: an unnamed temp file linked in when written.
  Result<std::string> Write(std::string_view key, bool durable,
                            const std::function<Status(int fd)>& fill) {
    std::string path, dir;
    CC_RETURN_IF_ERROR(PathFor(key, &path, &dir));
    // An unnamed file in the blob's own directory (O_TMPFILE), linked in under its name once
    // written: readers never see a partial blob and a crash leaves no temp file behind.
    int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Errno("creating " + dir);
      fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    }
    bool named_tmp = false;
    std::string tmp;
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
      // File systems without O_TMPFILE: a named temp file beside the blob, then rename.
      named_tmp = true;
      tmp = TempName();
      fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (fd < 0) return Errno("creating a blob file in " + dir);
    auto fail = [&](const std::string& what) {
      Status s = Errno(what);
      ::close(fd);
      if (named_tmp) ::unlink(tmp.c_str());
      return s;
    };
    if (Status st = fill(fd); !st.ok()) {
      ::close(fd);
      if (named_tmp) ::unlink(tmp.c_str());
      return st;
    }
    if (durable && ::fdatasync(fd) != 0) return (Result<std::string>)fail("syncing blob " + path);
    if (named_tmp) {
      ::close(fd);
      if (::rename(tmp.c_str(), path.c_str()) != 0) {
        Status s = Errno("renaming blob into " + path);
        ::unlink(tmp.c_str());
        return s;
      }
    } else {
      std::string proc = fmt::format("/proc/self/fd/{}", fd);
      if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        if (errno != EEXIST) return (Result<std::string>)fail("linking blob " + path);
        // Replacing an existing blob: link under a temp name, then rename over it.
        std::string t2 = TempName();
        if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, t2.c_str(), AT_SYMLINK_FOLLOW) != 0)
          return (Result<std::string>)fail("linking blob " + t2);
        if (::rename(t2.c_str(), path.c_str()) != 0) {
          ::unlink(t2.c_str());
          return (Result<std::string>)fail("renaming blob into " + path);
        }
      }
      ::close(fd);
    }
    if (durable) {
      int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd < 0) return Errno("opening blob directory " + dir);
      int rc = ::fsync(dfd);
      ::close(dfd);
      if (rc != 0) return Errno("syncing blob directory " + dir);
    }
    return std::string(key);
  }

  static Status WriteAll(int fd, std::string_view data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Errno("writing a blob");
      off += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Status PathFor(std::string_view key, std::string* path, std::string* dir) const {
    if (key.empty() || key.size() > 1024 || key.find("..") != std::string_view::npos)
      return Status::InvalidArgument(fmt::format("invalid blob key '{}'", key));
    std::string name;
    name.reserve(key.size() + 8);
    for (char c : key) {
      unsigned char u = static_cast<unsigned char>(c);
      if (std::isalnum(u) || c == '.' || c == '-' || c == '_')
        name.push_back(c);
      else if (c == '/')
        name.push_back('~');
      else
        name += fmt::format("%{:02X}", u);
    }
    uint32_t h = util::ShardHash(key);
    *dir = fmt::format("{}/{:03x}", root_, h & 0xfff);
    *path = *dir + "/" + name;
    return Status::Ok();
  }

  std::string TempName() const { return fmt::format("{}/tmp/{}", root_, util::NewUuidHex()); }

  std::string root_;
  bool read_only_;
  int root_fd_ = -1;
};

}  // namespace

Result<std::unique_ptr<BlobStore>> OpenFsBlobStore(const std::string& root, bool read_only) {
  auto s = std::make_unique<FsBlobStore>(root, read_only);
  CC_RETURN_IF_ERROR(s->Init());
  return std::unique_ptr<BlobStore>(std::move(s));
}

}  // namespace commcare::storage
