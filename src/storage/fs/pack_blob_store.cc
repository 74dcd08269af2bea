// BlobStore on append-only volume files (Haystack's design). A Put appends one record — a
// 32-byte header (magic, length, MD5 of the data) and the data — at an offset reserved
// atomically, so writers run in parallel; the key it returns says where the record lies.
// Sync() is one fdatasync per volume written since the last Sync (the engine calls it from a
// background flusher, off the submission path: see the blob journal). A writer never appends to a
// volume an earlier process wrote: after a crash the unsynced tail of the old volume is simply
// never referenced.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "commcare/storage/blob_store.h"
#include "util/errno_status.h"
#include "util/hash.h"

namespace commcare::storage {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[8] = {'C', 'C', 'B', 'L', 'O', 'B', '0', '1'};
constexpr size_t kHeader = 32;                 // magic 8, length 8, crc32c 4, zero 12
constexpr uint64_t kVolumeBytes = 1ULL << 30;  // roll over to a new volume at 1 GiB

Status Errno(const std::string& what) { return util::ErrnoStatus(what); }

// A volume file; tail and dirty are guarded by the store's mutex.
struct Volume {
  uint32_t id = 0;
  int fd = -1;
  uint64_t tail = 0;  // next free offset
  bool dirty = false;
};

bool ParseKey(std::string_view key, uint32_t* vol, uint64_t* off, uint64_t* len) {
  if (key.substr(0, 5) != "pack/") return false;
  key.remove_prefix(5);
  auto num = [&](auto* out) {
    auto r = std::from_chars(key.data(), key.data() + key.size(), *out);
    if (r.ec != std::errc()) return false;
    key.remove_prefix(static_cast<size_t>(r.ptr - key.data()));
    return true;
  };
  if (!num(vol) || key.empty() || key[0] != '/') return false;
  key.remove_prefix(1);
  if (!num(off) || key.empty() || key[0] != '/') return false;
  key.remove_prefix(1);
  return num(len) && key.empty();
}

class PackBlobStore final : public BlobStore {
 public:
  PackBlobStore(std::string root, bool read_only) : root_(std::move(root)), read_only_(read_only) {}

  ~PackBlobStore() override {
    for (auto& [id, fd] : read_fds_) ::close(fd);
    if (cur_ && cur_->fd >= 0) {
      ::fdatasync(cur_->fd);
      ::close(cur_->fd);
    }
    for (auto& v : old_) ::close(v->fd);
  }

  Status Init() {
    std::error_code ec;
    if (!read_only_) fs::create_directories(root_, ec);
    if (ec) return Status::Unavailable(fmt::format("cannot create {}: {}", root_, ec.message()));
    if (read_only_) return Status::Ok();
    uint32_t max_id = 0;
    for (const auto& e : fs::directory_iterator(root_, ec)) {
      std::string n = e.path().filename().string();
      uint32_t id;
      if (n.size() == 15 && n.rfind("vol-", 0) == 0 &&
          std::from_chars(n.data() + 4, n.data() + 10, id).ec == std::errc())
        max_id = std::max(max_id, id);
    }
    CC_RETURN_IF_ERROR(NewVolume(max_id + 1));
    return Status::Ok();
  }

  Result<std::string> Put(std::string_view name, std::string_view data, bool durable) override {
    if (read_only_) return Status::FailedPrecondition("the blob store is open read-only");
    const uint64_t size = kHeader + data.size();
    if (size > kVolumeBytes) return Status::ResourceExhausted("blob larger than a volume (1 GiB)");
    char header[kHeader] = {};
    std::memcpy(header, kMagic, 8);
    uint64_t len = data.size();
    std::memcpy(header + 8, &len, 8);
    uint32_t crc = util::Crc32c(data);
    std::memcpy(header + 16, &crc, 4);
    Volume* v;
    uint64_t off;
    {
      std::unique_lock l(mu_);
      v = cur_.get();
      off = v->tail;
      if (off + size > kVolumeBytes) {
        CC_RETURN_IF_ERROR(NewVolume(v->id + 1));
        v = cur_.get();
        off = 0;
      }
      v->tail = off + size;
      v->dirty = true;
    }
    struct iovec iov[2] = {{header, kHeader}, {const_cast<char*>(data.data()), data.size()}};
    ssize_t n = ::pwritev(v->fd, iov, 2, static_cast<off_t>(off));
    if (n != static_cast<ssize_t>(size)) {
      if (n >= 0) errno = ENOSPC;  // a short write to a file: the disk filled
      return Errno(fmt::format("writing blob '{}' to volume {}", name, v->id));
    }
    if (durable && ::fdatasync(v->fd) != 0) return Errno("syncing a blob volume");
    return fmt::format("pack/{}/{}/{}", v->id, off, data.size());
  }

  Result<std::string> Get(std::string_view key) override {
    uint32_t vol;
    uint64_t off, len;
    if (!ParseKey(key, &vol, &off, &len))
      return Status::InvalidArgument(fmt::format("'{}' is not a pack blob key", key));
    CC_ASSIGN_OR_RETURN(int fd, ReadFd(vol));
    std::string buf(kHeader + len, '\0');
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
    if (n < 0) return Errno(fmt::format("reading blob {}", key));
    if (static_cast<size_t>(n) < kHeader || std::memcmp(buf.data(), kMagic, 8) != 0)
      return Status::NotFound(fmt::format("no blob '{}'", key));
    uint64_t stored;
    std::memcpy(&stored, buf.data() + 8, 8);
    if (stored != len || static_cast<size_t>(n) != buf.size())
      return Status::DataLoss(fmt::format("blob {} is truncated or its header is corrupt", key));
    uint32_t crc;
    std::memcpy(&crc, buf.data() + 16, 4);
    if (util::Crc32c(std::string_view(buf).substr(kHeader)) != crc)
      return Status::DataLoss(fmt::format("blob {} fails its checksum", key));
    return buf.substr(kHeader);
  }

  Status Delete(std::string_view key) override {
    uint32_t vol;
    uint64_t off, len;
    if (!ParseKey(key, &vol, &off, &len))
      return Status::InvalidArgument(fmt::format("'{}' is not a pack blob key", key));
    CC_ASSIGN_OR_RETURN(int fd, ReadFd(vol));
    // Punching a hole zeroes the header (so the blob reads as absent) and frees the space.
    if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                    static_cast<off_t>(kHeader + len)) != 0) {
      char zero[kHeader] = {};
      if (::pwrite(fd, zero, kHeader, static_cast<off_t>(off)) != static_cast<ssize_t>(kHeader))
        return Errno(fmt::format("deleting blob {}", key));
    }
    return Status::Ok();
  }

  Result<bool> Exists(std::string_view key) override {
    uint32_t vol;
    uint64_t off, len;
    if (!ParseKey(key, &vol, &off, &len)) return false;
    auto fd = ReadFd(vol);
    if (!fd.ok()) return fd.status().IsNotFound() ? Result<bool>(false) : Result<bool>(fd.status());
    char header[kHeader];
    ssize_t n = ::pread(*fd, header, kHeader, static_cast<off_t>(off));
    if (n < 0) return Errno(fmt::format("reading blob {}", key));
    uint64_t stored;
    std::memcpy(&stored, header + 8, 8);
    return n == static_cast<ssize_t>(kHeader) && std::memcmp(header, kMagic, 8) == 0 &&
           stored == len;
  }

  Status Restore(std::string_view key, std::string_view data) override {
    if (read_only_) return Status::FailedPrecondition("the blob store is open read-only");
    uint32_t vol;
    uint64_t off, len;
    if (!ParseKey(key, &vol, &off, &len) || len != data.size())
      return Status::InvalidArgument(
          fmt::format("'{}' is not a pack key for {} bytes", key, data.size()));
    CC_ASSIGN_OR_RETURN(int fd, ReadFd(vol));
    char header[kHeader] = {};
    std::memcpy(header, kMagic, 8);
    std::memcpy(header + 8, &len, 8);
    uint32_t crc = util::Crc32c(data);
    std::memcpy(header + 16, &crc, 4);
    struct iovec iov[2] = {{header, kHeader}, {const_cast<char*>(data.data()), data.size()}};
    if (::pwritev(fd, iov, 2, static_cast<off_t>(off)) != static_cast<ssize_t>(kHeader + len) ||
        ::fdatasync(fd) != 0)
      return Errno(fmt::format("restoring blob {}", key));
    return Status::Ok();
  }

  Status Sync() override {
    std::vector<int> fds;
    {
      std::lock_guard l(mu_);
      if (cur_ && cur_->dirty) {
        fds.push_back(cur_->fd);
        cur_->dirty = false;
      }
      for (auto& v : old_)
        if (v->dirty) {
          fds.push_back(v->fd);
          v->dirty = false;
        }
    }
    for (int fd : fds)
      if (::fdatasync(fd) != 0) return Errno("syncing a blob volume");
    return Status::Ok();
  }

 private:
  std::string PathOf(uint32_t id) const { return fmt::format("{}/vol-{:06}.pack", root_, id); }

  // Opens a new volume; called with mu_ held (or before any writer exists).
  Status NewVolume(uint32_t id) {
    auto v = std::make_unique<Volume>();
    v->id = id;
    v->fd = ::open(PathOf(id).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (v->fd < 0) return Errno("creating blob volume " + PathOf(id));
    // Make the new volume's directory entry durable before any key points into it.
    int dfd = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    if (cur_) old_.push_back(std::move(cur_));
    cur_ = std::move(v);
    return Status::Ok();
  }

  Result<int> ReadFd(uint32_t vol) {
    std::lock_guard l(read_mu_);
    auto it = read_fds_.find(vol);
    if (it != read_fds_.end()) return it->second;
    int fd = ::open(PathOf(vol).c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) fd = ::open(PathOf(vol).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT)
        return Status::NotFound(fmt::format("blob volume {} does not exist", vol));
      return Errno("opening blob volume " + PathOf(vol));
    }
    read_fds_[vol] = fd;
    return fd;
  }

  std::string root_;
  bool read_only_;
  std::mutex mu_;
  std::unique_ptr<Volume> cur_;
  std::vector<std::unique_ptr<Volume>> old_;
  std::mutex read_mu_;
  std::map<uint32_t, int> read_fds_;
};

}  // namespace

Result<std::unique_ptr<BlobStore>> OpenPackBlobStore(const std::string& root, bool read_only) {
  auto s = std::make_unique<PackBlobStore>(root, read_only);
  CC_RETURN_IF_ERROR(s->Init());
  return std::unique_ptr<BlobStore>(std::move(s));
}

}  // namespace commcare::storage
