// The SQLite store's group commit: the redo log, sealing, checkpoints and replay after a crash.
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "storage/sqlite/sqlite_store_impl.h"
#include "util/codec.h"
#include "util/hash.h"

namespace commcare::storage::sqlite_internal {
namespace {

using util::Bind;

// The redo log of a durable store: records of [magic u32][payload length u32][lsn u64]
// [crc32c of payload u32][12 zero bytes][payload]; payload = [batch count u32] then per batch
// [json length u32][json][blob count u32] and per blob [length u32][bytes].
constexpr uint32_t kLogMagic = 0x474c4343;  // "CCLG"
constexpr size_t kLogHeader = 32;
constexpr uint64_t kCheckpointLogBytes = 48ULL << 20;
// A background PASSIVE checkpoint runs after this much more log.
constexpr uint64_t kPassiveEveryBytes = 16ULL << 20;
// The log file is zero-filled to this size once and then reused from the start after each
// checkpoint (as RocksDB recycles WAL files): appends overwrite allocated blocks, so a sync
// flushes data only, not the file's size and extents. Replay stops at the first record that
// is torn, zero, or not newer than the one before it.
constexpr uint64_t kLogPreallocBytes = 64ULL << 20;

void PutU32(std::string* s, uint32_t v) { s->append(reinterpret_cast<const char*>(&v), 4); }
bool GetU32(std::string_view* s, uint32_t* v) {
  if (s->size() < 4) return false;
  std::memcpy(v, s->data(), 4);
  s->remove_prefix(4);
  return true;
}

}  // namespace

Status SqlitePrimaryStore::Sync() {
  if (log_fd_ < 0) return Status::Ok();
  return SyncLog();
}

Status SqlitePrimaryStore::Flush() {
  if (log_fd_ < 0) return Status::Ok();
  std::lock_guard<std::recursive_mutex> lock(write_mu_);
  CC_RETURN_IF_ERROR(broken_);
  return SealLocked();
}

void SqlitePrimaryStore::Prepare(WriteBatch* b) {
  b->prepared.assign(b->ops.size(), std::string());
  for (size_t i = 0; i < b->ops.size(); ++i) b->prepared[i] = codec::EncodeDocument(b->ops[i]);
  if (log_fd_ >= 0) b->prepared_record = LogChunk(*b);
}

std::string SqlitePrimaryStore::LogChunk(const WriteBatch& b) {
  std::vector<std::string_view> blobs;
  std::string js = "{\"marker\":";
  js += json::serialize(json::value(b.applied_marker));
  js += ",\"ops\":[";
  for (size_t i = 0; i < b.ops.size(); ++i) {
    if (i) js += ',';
    js += codec::EncodeOpText(b.ops[i], i < b.prepared.size() ? b.prepared[i] : "", &blobs);
  }
  js += "]}";
  std::string out;
  PutU32(&out, static_cast<uint32_t>(js.size()));
  out += js;
  PutU32(&out, static_cast<uint32_t>(blobs.size()));
  for (auto blob : blobs) {
    PutU32(&out, static_cast<uint32_t>(blob.size()));
    out.append(blob);
  }
  return out;
}

Status SqlitePrimaryStore::CommitGroup(std::span<WriteBatch* const> batches,
                                       std::vector<Status>* results) {
  if (read_only_) return Status::FailedPrecondition("the store is open read-only");
  // The commit point is the group's record in the redo log, made durable by Sync() (the
  // group committer coalesces those). SQLite is applied at once, in a transaction that is
  // committed ("sealed") only after the log is synced past it, so no row can reach the
  // database file ahead of its log record.
  std::lock_guard<std::mutex> log_lock(log_mu_);
  int64_t lsn = 0;
  if (log_fd_ >= 0) {
    lsn = next_lsn_++;
    CC_RETURN_IF_ERROR(AppendLog(lsn, batches));
  }
  std::lock_guard<std::recursive_mutex> lock(write_mu_);
  CC_RETURN_IF_ERROR(broken_);
  Status s = ApplyGroup(batches, results, lsn);
  if (!s.ok()) return s;
  if (log_fd_ >= 0 && log_size_ >= kCheckpointLogBytes) (void)CheckpointLocked();
  return Status::Ok();
}

Status SqlitePrimaryStore::SyncLog() {
  const int64_t target = appended_lsn_.load();
  if (synced_lsn_.load() >= target) return Status::Ok();
  if (::fdatasync(log_fd_) != 0)
    return Status::Unavailable(fmt::format("syncing {}: {}", log_path_, std::strerror(errno)));
  int64_t prev = synced_lsn_.load();
  while (prev < target && !synced_lsn_.compare_exchange_weak(prev, target)) {
  }
  return Status::Ok();
}

Status SqlitePrimaryStore::ApplyGroup(std::span<WriteBatch* const> batches,
                                      std::vector<Status>* results, int64_t lsn) {
  results->assign(batches.size(), Status::Ok());
  CC_RETURN_IF_ERROR(BeginLocked());
  for (size_t i = 0; i < batches.size(); ++i) {
    // A batch's only expected failure is a rev check, made before it writes anything, so no
    // savepoint is needed (savepoints journal every page they touch). Any other failure
    // abandons the whole group.
    Status s = CheckRevs(*batches[i]);
    if (s.ok()) s = ApplyBatch(batches[i]);
    if (s.IsAborted()) {
      (*results)[i] = s;
      batches[i]->outbox_seqs.clear();
      continue;
    }
    if (!s.ok()) {
      (void)writer_.Exec("ROLLBACK");
      txn_open_ = false;
      if (lsn > 0) broken_ = s;
      return s;
    }
  }
  if (lsn > 0) {
    sqlite3_stmt* m = writer_.Prep("INSERT OR REPLACE INTO meta(k, v) VALUES('applied_lsn', ?)");
    Bind(m, 1, lsn);
    if (sqlite3_step(m) != SQLITE_DONE) {
      Status e = writer_.Err("recording the applied log position");
      (void)writer_.Exec("ROLLBACK");
      txn_open_ = false;
      broken_ = e;  // acknowledged groups are in the log: reopen replays them
      return e;
    }
  }
  if (lsn == 0 || std::chrono::steady_clock::now() - txn_started_ >= kSeal) return SealLocked();
  return Status::Ok();
}

Status SqlitePrimaryStore::BeginLocked() {
  if (txn_open_) return Status::Ok();
  CC_RETURN_IF_ERROR(writer_.Exec("BEGIN IMMEDIATE"));
  txn_open_ = true;
  txn_started_ = std::chrono::steady_clock::now();
  // Only an opening wakes the sealer (it then sleeps until this transaction is due): a wake-up
  // per group cost a context switch and a turn on the write lock for every commit.
  seal_cv_.notify_one();
  return Status::Ok();
}

Status SqlitePrimaryStore::SealLocked() {
  if (!txn_open_) return Status::Ok();
  if (log_fd_ >= 0) CC_RETURN_IF_ERROR(SyncLog());
  writer_.ResetAll();
  Status c = writer_.Exec("COMMIT");
  txn_open_ = false;
  {
    std::lock_guard<std::mutex> l(unsealed_mu_);
    unsealed_.clear();  // committed: pooled readers see these documents now
  }
  if (!c.ok()) {
    (void)writer_.Exec("ROLLBACK");
    if (log_fd_ >= 0) broken_ = c;  // the log still holds what was lost: reopen replays it
    return c;
  }
  return Status::Ok();
}

void SqlitePrimaryStore::CheckpointLoop() {
  uint64_t last = 0;
  std::unique_lock<std::mutex> l(ckpt_mu_);
  while (!stop_checkpointer_) {
    ckpt_cv_.wait_for(l, std::chrono::milliseconds(100));
    if (stop_checkpointer_) break;
    const uint64_t size = log_bytes_.load();
    if (size >= last && size - last < kPassiveEveryBytes) {
      continue;
    }
    last = size;
    l.unlock();
    int frames = 0, done = 0;
    (void)sqlite3_wal_checkpoint_v2(ckpt_conn_.db(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &frames,
                                    &done);
    l.lock();
  }
}

void SqlitePrimaryStore::SealLoop() {
  std::unique_lock<std::recursive_mutex> lock(write_mu_);
  while (!stop_sealer_) {
    if (txn_open_)
      seal_cv_.wait_until(lock, txn_started_ + kSeal);
    else
      seal_cv_.wait(lock);
    if (txn_open_ && std::chrono::steady_clock::now() - txn_started_ >= kSeal) (void)SealLocked();
  }
}

Status SqlitePrimaryStore::AppendLog(int64_t lsn, std::span<WriteBatch* const> batches) {
  // Header [magic][payload length][lsn][crc32c of payload][12 zero bytes], then the batch
  // count and each batch's chunk (prepared outside the lock by Prepare).
  std::vector<std::string> fresh;
  std::vector<struct iovec> iov;
  char header[kLogHeader] = {};
  char count[4];
  uint32_t n = static_cast<uint32_t>(batches.size());
  std::memcpy(count, &n, 4);
  iov.push_back({header, kLogHeader});
  iov.push_back({count, 4});
  uint32_t crc = util::Crc32c(std::string_view(count, 4));
  size_t len = 4;
  fresh.reserve(batches.size());
  for (const WriteBatch* b : batches) {
    const std::string* chunk = &b->prepared_record;
    if (chunk->empty()) {
      fresh.push_back(LogChunk(*b));
      chunk = &fresh.back();
    }
    iov.push_back({const_cast<char*>(chunk->data()), chunk->size()});
    crc = util::Crc32c(*chunk, crc);
    len += chunk->size();
  }
  uint32_t magic = kLogMagic, len32 = static_cast<uint32_t>(len);
  std::memcpy(header, &magic, 4);
  std::memcpy(header + 4, &len32, 4);
  std::memcpy(header + 8, &lsn, 8);
  std::memcpy(header + 16, &crc, 4);
  const ssize_t want = static_cast<ssize_t>(kLogHeader + len);
  errno = E2BIG;  // too many pieces for one write
  const ssize_t wrote = iov.size() > IOV_MAX
                            ? -1
                            : ::pwritev(log_fd_, iov.data(), static_cast<int>(iov.size()),
                                        static_cast<off_t>(log_size_));
  if (wrote != want) {
    if (wrote >= 0) errno = ENOSPC;  // a short write: the disk filled
    Status s = Status::Unavailable(fmt::format("writing {}: {}", log_path_, std::strerror(errno)));
    // Cut off whatever part of the record reached the file, so it never replays.
    if (::ftruncate(log_fd_, static_cast<off_t>(log_size_)) == 0) ::fdatasync(log_fd_);
    return s;
  }
  log_size_ += static_cast<uint64_t>(want);
  log_bytes_.store(log_size_);
  appended_lsn_.store(lsn);
  return Status::Ok();
}

Status SqlitePrimaryStore::PreallocateLog() {
  struct stat st;
  if (::fstat(log_fd_, &st) != 0) return Status::Unavailable("cannot stat " + log_path_);
  if (static_cast<uint64_t>(st.st_size) >= kLogPreallocBytes) return Status::Ok();
  std::string zeros(1 << 20, '\0');
  for (uint64_t off = static_cast<uint64_t>(st.st_size); off < kLogPreallocBytes;
       off += zeros.size()) {
    const ssize_t wrote = ::pwrite(log_fd_, zeros.data(), zeros.size(), static_cast<off_t>(off));
    if (wrote != static_cast<ssize_t>(zeros.size()))
      return Status::Unavailable(fmt::format("preallocating {} ({} MiB): {}", log_path_,
                                             kLogPreallocBytes >> 20,
                                             std::strerror(wrote >= 0 ? ENOSPC : errno)));
  }
  if (::fsync(log_fd_) != 0) return Status::Unavailable("cannot sync " + log_path_);
  return Status::Ok();
}

Status SqlitePrimaryStore::CheckpointLocked() {
  CC_RETURN_IF_ERROR(SpillStagedBlobs());
  CC_RETURN_IF_ERROR(SealLocked());
  int log_frames = 0, ckpt_frames = 0;
  int rc = sqlite3_wal_checkpoint_v2(writer_.db(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, &log_frames,
                                     &ckpt_frames);
  if (rc != SQLITE_OK) {
    // Readers pinned the WAL: a full checkpoint plus an explicit sync still makes it durable.
    rc = sqlite3_wal_checkpoint_v2(writer_.db(), nullptr, SQLITE_CHECKPOINT_FULL, &log_frames,
                                   &ckpt_frames);
    if (rc != SQLITE_OK || ckpt_frames < log_frames) return writer_.Err("checkpointing");
  }
  log_size_ = 0;
  log_bytes_.store(0);
  synced_lsn_.store(appended_lsn_.load());
  return Status::Ok();
}

Status SqlitePrimaryStore::ReplayLog() {
  int64_t applied = 0;
  {
    sqlite3_stmt* q = writer_.Prep("SELECT v FROM meta WHERE k='applied_lsn'");
    if (sqlite3_step(q) == SQLITE_ROW) applied = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
  }
  replaying_ = true;
  struct stat st;
  if (::fstat(log_fd_, &st) != 0) return Status::Unavailable("cannot stat " + log_path_);
  // Read record by record: the file is preallocated (64 MiB of zeros), and reading it whole
  // cost every open of a store half a second.
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t off = 0;
  int64_t last = applied, prev = 0;
  std::string payload_buf;
  while (off + kLogHeader <= size) {
    char header[kLogHeader];
    if (::pread(log_fd_, header, kLogHeader, static_cast<off_t>(off)) !=
        static_cast<ssize_t>(kLogHeader))
      return Status::Unavailable("cannot read " + log_path_);
    uint32_t magic, len, crc;
    int64_t lsn;
    std::memcpy(&magic, header, 4);
    std::memcpy(&len, header + 4, 4);
    std::memcpy(&lsn, header + 8, 8);
    std::memcpy(&crc, header + 16, 4);
    if (magic != kLogMagic || off + kLogHeader + len > size || lsn <= prev) break;
    payload_buf.resize(len);
    if (len > 0 && ::pread(log_fd_, payload_buf.data(), len,
                           static_cast<off_t>(off + kLogHeader)) != static_cast<ssize_t>(len))
      return Status::Unavailable("cannot read " + log_path_);
    std::string_view payload(payload_buf);
    if (util::Crc32c(payload) != crc) break;
    off += kLogHeader + len;
    prev = lsn;
    last = std::max(last, lsn);
    std::vector<WriteBatch> owned;
    CC_RETURN_IF_ERROR(DecodeLogPayload(payload, &owned));
    if (lsn <= applied) {
      // Already in the database, but its journaled blobs lived in memory: stage them again
      // so that the engine verifies them (RecoverBlobs) before they are dropped.
      for (auto& b : owned)
        for (const auto& op : b.ops)
          if (const auto* sb = std::get_if<StageBlob>(&op)) CC_RETURN_IF_ERROR(Apply(*sb, nullptr));
      continue;
    }
    std::vector<WriteBatch*> ptrs;
    for (auto& b : owned) ptrs.push_back(&b);
    std::vector<Status> results;
    CC_RETURN_IF_ERROR(ApplyGroup(ptrs, &results, lsn));
    ++replayed_;
  }
  replaying_ = false;
  next_lsn_ = last + 1;
  appended_lsn_.store(last);
  synced_lsn_.store(last);
  log_size_ = off;
  return CheckpointLocked();
}

Status SqlitePrimaryStore::DecodeLogPayload(std::string_view p, std::vector<WriteBatch>* out) {
  uint32_t n;
  if (!GetU32(&p, &n)) return Status::DataLoss("log record: no batch count");
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t jl, nb;
    if (!GetU32(&p, &jl) || p.size() < jl) return Status::DataLoss("log record: short batch");
    std::string_view js = p.substr(0, jl);
    p.remove_prefix(jl);
    if (!GetU32(&p, &nb)) return Status::DataLoss("log record: no blob count");
    std::vector<std::string_view> blobs;
    for (uint32_t k = 0; k < nb; ++k) {
      uint32_t bl;
      if (!GetU32(&p, &bl) || p.size() < bl) return Status::DataLoss("log record: short blob");
      blobs.push_back(p.substr(0, bl));
      p.remove_prefix(bl);
    }
    WriteBatch b;
    CC_RETURN_IF_ERROR(codec::DecodeBatch(js, &b, &blobs));
    out->push_back(std::move(b));
  }
  return Status::Ok();
}

}  // namespace commcare::storage::sqlite_internal
