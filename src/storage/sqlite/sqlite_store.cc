// PrimaryStore on one SQLite file (WAL). One write connection used by CommitGroup; a pool of
// read connections for concurrent readers. Records are stored as JSON with indexed columns.
#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "commcare/storage/primary_store.h"
#include "util/codec.h"
#include "util/hash.h"
#include "util/sqlite_conn.h"
#include "util/time.h"

namespace commcare::storage {
namespace {

namespace json = boost::json;
using util::Bind;
using util::Col;
using util::Conn;

// Large documents live in rowid tables, appended in commit order, with small unique indexes on
// their ids: an insert touches the table's last page (shared by a whole group commit) and one
// page of a dense index, instead of a random leaf of a table of 2 KB rows.
constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS forms(
  id INTEGER PRIMARY KEY, form_id TEXT NOT NULL, domain TEXT NOT NULL, state INTEGER NOT NULL,
  doc TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS forms_id ON forms(form_id);
CREATE TABLE IF NOT EXISTS cases(
  id INTEGER PRIMARY KEY, case_id TEXT NOT NULL, domain TEXT NOT NULL, type TEXT,
  owner_id TEXT, closed INTEGER, deleted INTEGER, rev INTEGER NOT NULL, doc TEXT NOT NULL,
  indexed INTEGER NOT NULL DEFAULT 0, modified INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS cases_id ON cases(case_id);
CREATE INDEX IF NOT EXISTS cases_owner ON cases(domain, owner_id);
CREATE TABLE IF NOT EXISTS case_indices(
  case_id TEXT NOT NULL, identifier TEXT NOT NULL, referenced_id TEXT NOT NULL,
  referenced_type TEXT, relationship TEXT, PRIMARY KEY(case_id, identifier)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS case_indices_ref ON case_indices(referenced_id);
CREATE TABLE IF NOT EXISTS case_transactions(
  seq INTEGER PRIMARY KEY, case_id TEXT NOT NULL, form_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS case_transactions_case ON case_transactions(case_id);
CREATE TABLE IF NOT EXISTS ledger_values(
  case_id TEXT NOT NULL, section_id TEXT NOT NULL, entry_id TEXT NOT NULL, doc TEXT NOT NULL,
  PRIMARY KEY(case_id, section_id, entry_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_transactions(
  case_id TEXT NOT NULL, form_id TEXT NOT NULL, seq INTEGER NOT NULL, report_date INTEGER,
  doc TEXT NOT NULL, PRIMARY KEY(case_id, form_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blob_journal(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS intents(intent_id TEXT PRIMARY KEY, payload TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied_markers(marker TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
)SQL";

// Mobile sync's indexes (after kSchema and the column migration): open cases by owner with
// whether they index others, cases by server modification time, and extension indices by host.
constexpr const char* kSyncSchema = R"SQL(
CREATE INDEX IF NOT EXISTS cases_owner_open ON cases(domain, owner_id, case_id, indexed)
  WHERE closed=0 AND deleted=0;
CREATE INDEX IF NOT EXISTS cases_modified ON cases(domain, modified);
CREATE INDEX IF NOT EXISTS case_indices_ext ON case_indices(referenced_id)
  WHERE relationship='extension';
)SQL";

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

class SqlitePrimaryStore final : public PrimaryStore {
 public:
  SqlitePrimaryStore(std::string path, bool durable, bool read_only)
      : path_(std::move(path)), durable_(durable), read_only_(read_only) {}

  ~SqlitePrimaryStore() override {
    if (checkpointer_.joinable()) {
      {
        std::lock_guard<std::mutex> l(ckpt_mu_);
        stop_checkpointer_ = true;
      }
      ckpt_cv_.notify_all();
      checkpointer_.join();
    }
    if (sealer_.joinable()) {
      {
        std::lock_guard<std::recursive_mutex> lock(write_mu_);
        stop_sealer_ = true;
      }
      seal_cv_.notify_all();
      sealer_.join();
    }
    if (log_fd_ >= 0) {
      std::lock_guard<std::mutex> log_lock(log_mu_);
      std::lock_guard<std::recursive_mutex> lock(write_mu_);
      (void)CheckpointLocked();  // leave a short log behind: the next open replays nothing
      ::close(log_fd_);
    }
  }

  // Databases made before mobile sync lack cases.indexed and cases.modified: add them (modified
  // stays 0 for cases not written since, which no later sync needs to see as changed).
  Status MigrateCaseColumns() {
    sqlite3_stmt* q = writer_.Prep("SELECT 1 FROM pragma_table_info('cases') WHERE name='indexed'");
    const bool has = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_reset(q);
    if (has) return Status::Ok();
    return writer_.Exec(
        "BEGIN; ALTER TABLE cases ADD COLUMN indexed INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE cases ADD COLUMN modified INTEGER NOT NULL DEFAULT 0;"
        "UPDATE cases SET indexed=1 WHERE case_id IN (SELECT case_id FROM case_indices);"
        "COMMIT;");
  }

  Status Init() {
    if (!read_only_) {
      CC_RETURN_IF_ERROR(writer_.Open(path_, false, durable_));
      CC_RETURN_IF_ERROR(writer_.Exec(kSchema));
      CC_RETURN_IF_ERROR(MigrateCaseColumns());
      CC_RETURN_IF_ERROR(writer_.Exec(kSyncSchema));
      if (durable_) {
        log_path_ = path_ + ".log";
        log_fd_ = ::open(log_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (log_fd_ < 0)
          return Status::Unavailable(
              fmt::format("cannot open {}: {}", log_path_, std::strerror(errno)));
        CC_RETURN_IF_ERROR(ReplayLog());
        CC_RETURN_IF_ERROR(PreallocateLog());
        sealer_ = std::thread([this] { SealLoop(); });
        CC_RETURN_IF_ERROR(ckpt_conn_.Open(path_, false, durable_));
        checkpointer_ = std::thread([this] { CheckpointLoop(); });
      }
    }
    return Status::Ok();
  }

  // Makes every group CommitGroup returned durable: one fdatasync of the redo log.
  Status Sync() override {
    if (log_fd_ < 0) return Status::Ok();
    return SyncLog();
  }

  Status Flush() override {
    if (log_fd_ < 0) return Status::Ok();
    std::lock_guard<std::recursive_mutex> lock(write_mu_);
    CC_RETURN_IF_ERROR(broken_);
    return SealLocked();
  }

  void Prepare(WriteBatch* b) override {
    b->prepared.assign(b->ops.size(), std::string());
    for (size_t i = 0; i < b->ops.size(); ++i) b->prepared[i] = codec::EncodeDocument(b->ops[i]);
    if (log_fd_ >= 0) b->prepared_record = LogChunk(*b);
  }

  // The batch as its redo-log chunk: [json length u32][json][blob count u32][(length u32, bytes)*].
  // Documents already serialized by Prepare are spliced in rather than encoded again.
  static std::string LogChunk(const WriteBatch& b) {
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

  Status CommitGroup(std::span<WriteBatch* const> batches, std::vector<Status>* results) override {
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

  Status SyncLog() {
    const int64_t target = appended_lsn_.load();
    if (synced_lsn_.load() >= target) return Status::Ok();
    if (::fdatasync(log_fd_) != 0)
      return Status::Unavailable(fmt::format("syncing {}: {}", log_path_, std::strerror(errno)));
    int64_t prev = synced_lsn_.load();
    while (prev < target && !synced_lsn_.compare_exchange_weak(prev, target)) {
    }
    return Status::Ok();
  }

 private:
  // Applies a group and records lsn if set. With a redo log, the SQLite transaction stays open
  // across groups and is committed at most kSeal later (by the next group or the sealer
  // thread): one SQLite commit rewrites each touched page once for many groups. Reads of
  // documents written since the last seal go through the writer connection (ReaderFor), so this
  // store sees every applied group at once; other processes see them once sealed.
  Status ApplyGroup(std::span<WriteBatch* const> batches, std::vector<Status>* results,
                    int64_t lsn) {
    results->assign(batches.size(), Status::Ok());
    if (!txn_open_) {
      CC_RETURN_IF_ERROR(writer_.Exec("BEGIN IMMEDIATE"));
      txn_open_ = true;
      txn_started_ = std::chrono::steady_clock::now();
    }
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
    seal_cv_.notify_one();
    return Status::Ok();
  }

  static constexpr std::chrono::milliseconds kSeal{250};

  // Commits the open SQLite transaction, if any, once the log holds all of it durably.
  Status SealLocked() {
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

  // Copies sealed WAL frames into the database from a second connection, beside the writer
  // (SQLite's PASSIVE checkpoint blocks no one), so the log checkpoint that must hold the
  // write lock (CheckpointLocked, every kCheckpointLogBytes) finds little left to copy and
  // sync: commits then stall for milliseconds, not hundreds of them.
  void CheckpointLoop() {
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

  void SealLoop() {
    std::unique_lock<std::recursive_mutex> lock(write_mu_);
    while (!stop_sealer_) {
      seal_cv_.wait_for(lock, kSeal);
      if (txn_open_ && std::chrono::steady_clock::now() - txn_started_ >= kSeal) (void)SealLocked();
    }
  }

  Status AppendLog(int64_t lsn, std::span<WriteBatch* const> batches) {
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
    if (iov.size() > IOV_MAX || ::pwritev(log_fd_, iov.data(), static_cast<int>(iov.size()),
                                          static_cast<off_t>(log_size_)) != want) {
      Status s =
          Status::Unavailable(fmt::format("writing {}: {}", log_path_, std::strerror(errno)));
      // Cut off whatever part of the record reached the file, so it never replays.
      if (::ftruncate(log_fd_, static_cast<off_t>(log_size_)) == 0) ::fdatasync(log_fd_);
      return s;
    }
    log_size_ += static_cast<uint64_t>(want);
    log_bytes_.store(log_size_);
    appended_lsn_.store(lsn);
    return Status::Ok();
  }

  Status PreallocateLog() {
    struct stat st;
    if (::fstat(log_fd_, &st) != 0) return Status::Unavailable("cannot stat " + log_path_);
    if (static_cast<uint64_t>(st.st_size) >= kLogPreallocBytes) return Status::Ok();
    std::string zeros(1 << 20, '\0');
    for (uint64_t off = static_cast<uint64_t>(st.st_size); off < kLogPreallocBytes;
         off += zeros.size())
      if (::pwrite(log_fd_, zeros.data(), zeros.size(), static_cast<off_t>(off)) !=
          static_cast<ssize_t>(zeros.size()))
        return Status::Unavailable(
            fmt::format("preallocating {}: {}", log_path_, std::strerror(errno)));
    if (::fsync(log_fd_) != 0) return Status::Unavailable("cannot sync " + log_path_);
    return Status::Ok();
  }

  // Makes the database durable up to the last applied record, then reuses the log from the
  // start (every record in it is now in the database and replay would skip it).
  // Moves unreleased in-memory blob copies into the blob_journal table, in the open
  // transaction, so that they outlive the log's reuse.
  Status SpillStagedBlobs() {
    if (staged_.empty()) return Status::Ok();
    if (!txn_open_) {
      CC_RETURN_IF_ERROR(writer_.Exec("BEGIN IMMEDIATE"));
      txn_open_ = true;
      txn_started_ = std::chrono::steady_clock::now();
    }
    for (const auto& [seq, sb] : staged_) {
      sqlite3_stmt* s =
          writer_.Prep("INSERT OR REPLACE INTO blob_journal(seq, key, data) VALUES(?,?,?)");
      Bind(s, 1, seq);
      Bind(s, 2, sb.key);
      sqlite3_bind_blob(s, 3, sb.data.data(), static_cast<int>(sb.data.size()), SQLITE_STATIC);
      CC_RETURN_IF_ERROR(Step(s, "spilling journaled blobs"));
    }
    staged_.clear();
    return Status::Ok();
  }

  Status CheckpointLocked() {
    CC_RETURN_IF_ERROR(SpillStagedBlobs());
    CC_RETURN_IF_ERROR(SealLocked());
    int log_frames = 0, ckpt_frames = 0;
    int rc = sqlite3_wal_checkpoint_v2(writer_.db(), nullptr, SQLITE_CHECKPOINT_TRUNCATE,
                                       &log_frames, &ckpt_frames);
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

  // Applies the log's records the database does not have yet (after a crash), then checkpoints.
  Status ReplayLog() {
    int64_t applied = 0;
    {
      sqlite3_stmt* q = writer_.Prep("SELECT v FROM meta WHERE k='applied_lsn'");
      if (sqlite3_step(q) == SQLITE_ROW) applied = sqlite3_column_int64(q, 0);
      sqlite3_reset(q);
    }
    replaying_ = true;
    struct stat st;
    if (::fstat(log_fd_, &st) != 0) return Status::Unavailable("cannot stat " + log_path_);
    std::string log(static_cast<size_t>(st.st_size), '\0');
    if (!log.empty() &&
        ::pread(log_fd_, log.data(), log.size(), 0) != static_cast<ssize_t>(log.size()))
      return Status::Unavailable("cannot read " + log_path_);
    size_t off = 0;
    int64_t last = applied, prev = 0;
    while (off + kLogHeader <= log.size()) {
      uint32_t magic, len;
      int64_t lsn;
      std::memcpy(&magic, log.data() + off, 4);
      std::memcpy(&len, log.data() + off + 4, 4);
      std::memcpy(&lsn, log.data() + off + 8, 8);
      if (magic != kLogMagic || off + kLogHeader + len > log.size() || lsn <= prev) break;
      std::string_view payload(log.data() + off + kLogHeader, len);
      uint32_t crc;
      std::memcpy(&crc, log.data() + off + 16, 4);
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
            if (const auto* sb = std::get_if<StageBlob>(&op))
              CC_RETURN_IF_ERROR(Apply(*sb, nullptr));
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

  static Status DecodeLogPayload(std::string_view p, std::vector<WriteBatch>* out) {
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

 public:
  Result<std::optional<FormRecord>> GetForm(std::string_view form_id) override {
    auto r = ReaderFor("f:", form_id);
    sqlite3_stmt* s = r->Prep("SELECT doc FROM forms WHERE form_id=?");
    Bind(s, 1, form_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return std::optional<FormRecord>();
    if (rc != SQLITE_ROW) return r->Err("reading a form");
    FormRecord f;
    CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &f, codec::DecodeForm));
    return std::optional<FormRecord>(std::move(f));
  }

  Result<std::optional<CaseRecord>> GetCase(std::string_view case_id) override {
    auto r = ReaderFor("c:", case_id);
    sqlite3_stmt* s = r->Prep("SELECT doc FROM cases WHERE case_id=?");
    Bind(s, 1, case_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return std::optional<CaseRecord>();
    if (rc != SQLITE_ROW) return r->Err("reading a case");
    CaseRecord c;
    CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &c, codec::DecodeCase));
    return std::optional<CaseRecord>(std::move(c));
  }

  Result<std::vector<CaseTransaction>> GetCaseTransactions(std::string_view case_id) override {
    auto r = ReaderFor("c:", case_id);
    sqlite3_stmt* s =
        r->Prep("SELECT doc, seq FROM case_transactions WHERE case_id=? ORDER BY seq");
    Bind(s, 1, case_id);
    std::vector<CaseTransaction> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      CaseTransaction t;
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &t, codec::DecodeCaseTx));
      t.seq = sqlite3_column_int64(s, 1);
      out.push_back(std::move(t));
    }
    if (rc != SQLITE_DONE) return r->Err("reading case transactions");
    return out;
  }

  Result<std::vector<LedgerValue>> GetLedgerValues(std::string_view case_id) override {
    auto r = ReaderFor("c:", case_id);
    sqlite3_stmt* s =
        r->Prep("SELECT doc FROM ledger_values WHERE case_id=? ORDER BY section_id, entry_id");
    Bind(s, 1, case_id);
    std::vector<LedgerValue> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      LedgerValue v;
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &v, codec::DecodeLedgerValue));
      out.push_back(std::move(v));
    }
    if (rc != SQLITE_DONE) return r->Err("reading ledger values");
    return out;
  }

  Result<std::vector<LedgerTransaction>> GetLedgerTransactions(std::string_view case_id) override {
    auto r = ReaderFor("c:", case_id);
    sqlite3_stmt* s = r->Prep(
        "SELECT doc FROM ledger_transactions WHERE case_id=? ORDER BY report_date, form_id, seq");
    Bind(s, 1, case_id);
    std::vector<LedgerTransaction> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      LedgerTransaction t;
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &t, codec::DecodeLedgerTx));
      out.push_back(std::move(t));
    }
    if (rc != SQLITE_DONE) return r->Err("reading ledger transactions");
    return out;
  }

  Status ScanCases(const CaseFilter& f, const std::function<bool(const CaseRecord&)>& fn) override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep(
        "SELECT doc FROM cases WHERE (?1='' OR domain=?1) AND (?2='' OR type=?2) AND "
        "(?3='' OR owner_id=?3) AND (?4<0 OR closed=?4) AND (?5=1 OR deleted=0) ORDER BY case_id");
    sqlite3_stmt* by_owner = r->Prep(
        "SELECT doc FROM cases WHERE domain=?1 AND owner_id=?3 AND (?2='' OR type=?2) AND "
        "(?4<0 OR closed=?4) AND (?5=1 OR deleted=0) ORDER BY case_id");
    if (!f.domain.empty() && !f.owner_id.empty()) s = by_owner;
    Bind(s, 1, f.domain);
    Bind(s, 2, f.type);
    Bind(s, 3, f.owner_id);
    Bind(s, 4, static_cast<int64_t>(f.closed ? (*f.closed ? 1 : 0) : -1));
    Bind(s, 5, static_cast<int64_t>(f.include_deleted ? 1 : 0));
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      CaseRecord c;
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &c, codec::DecodeCase));
      if (!fn(c)) return Status::Ok();
    }
    if (rc != SQLITE_DONE) return r->Err("scanning cases");
    return Status::Ok();
  }

  // Mobile sync's reads use pooled readers: they see sealed commits (Engine::Restore seals
  // first) and never hold the writer's lock.
  Result<std::vector<CaseNode>> OpenCasesByOwner(std::string_view domain,
                                                 std::string_view owner_id) override {
    auto r = PooledReader();
    sqlite3_stmt* s = r->Prep(
        "SELECT case_id, indexed FROM cases INDEXED BY cases_owner_open WHERE domain=? AND "
        "owner_id=? AND closed=0 AND deleted=0");
    Bind(s, 1, domain);
    Bind(s, 2, owner_id);
    std::vector<CaseNode> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      out.push_back({std::string(Col(s, 0)), false, false, sqlite3_column_int(s, 1) != 0});
    if (rc != SQLITE_DONE) return r->Err("listing cases by owner");
    return out;
  }
  Result<std::vector<CaseRecord>> GetCases(std::span<const std::string> ids) override {
    return DecodeCaseDocs(ids);
  }
  Status ReadCaseDocs(std::span<const std::string> ids,
                      const std::function<Status(std::string_view)>& fn) override {
    auto r = PooledReader();
    ReadSnapshot snap(r.get());
    sqlite3_stmt* s = r->Prep("SELECT doc FROM cases WHERE case_id=?");
    for (const auto& id : ids) {
      Bind(s, 1, id);
      int rc = sqlite3_step(s);
      Status st = rc == SQLITE_ROW ? fn(Col(s, 0)) : Status::Ok();
      sqlite3_reset(s);
      CC_RETURN_IF_ERROR(st);
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return r->Err("reading cases");
    }
    return Status::Ok();
  }
  Result<std::vector<LedgerValue>> GetLedgerValuesOf(std::span<const std::string> ids) override {
    auto r = PooledReader();
    ReadSnapshot snap(r.get());
    sqlite3_stmt* s =
        r->Prep("SELECT doc FROM ledger_values WHERE case_id=? ORDER BY section_id, entry_id");
    std::vector<LedgerValue> out;
    for (const auto& id : ids) {
      Bind(s, 1, id);
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        out.emplace_back();
        CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &out.back(), codec::DecodeLedgerValue));
      }
      sqlite3_reset(s);
      if (rc != SQLITE_DONE) return r->Err("reading ledger values");
    }
    return out;
  }
  Result<std::vector<CaseNode>> CaseNodes(std::span<const std::string> ids) override {
    auto r = PooledReader();
    ReadSnapshot snap(r.get());
    sqlite3_stmt* s = r->Prep("SELECT closed, deleted, indexed FROM cases WHERE case_id=?");
    std::vector<CaseNode> out;
    for (const auto& id : ids) {
      Bind(s, 1, id);
      int rc = sqlite3_step(s);
      if (rc == SQLITE_ROW)
        out.push_back({id, sqlite3_column_int(s, 0) != 0, sqlite3_column_int(s, 1) != 0,
                       sqlite3_column_int(s, 2) != 0});
      sqlite3_reset(s);
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return r->Err("reading case states");
    }
    return out;
  }
  Result<std::vector<CaseIndexEdge>> IndicesOf(std::span<const std::string> ids) override {
    return Edges(ids,
                 "SELECT case_id, identifier, referenced_id, referenced_type, relationship FROM "
                 "case_indices WHERE case_id=?");
  }
  Result<std::vector<CaseIndexEdge>> ExtensionsOf(std::span<const std::string> ids) override {
    return Edges(ids,
                 "SELECT case_id, identifier, referenced_id, referenced_type, relationship FROM "
                 "case_indices INDEXED BY case_indices_ext WHERE referenced_id=? AND "
                 "relationship='extension'");
  }
  Result<std::vector<std::string>> CasesModifiedSince(std::string_view domain,
                                                      int64_t since) override {
    auto r = PooledReader();
    sqlite3_stmt* s = r->Prep(
        "SELECT case_id FROM cases INDEXED BY cases_modified WHERE domain=? AND modified>=?");
    Bind(s, 1, domain);
    Bind(s, 2, since);
    std::vector<std::string> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) out.emplace_back(Col(s, 0));
    if (rc != SQLITE_DONE) return r->Err("listing modified cases");
    return out;
  }

  Status ScanForms(const std::function<bool(const FormRecord&)>& fn) override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep("SELECT doc FROM forms ORDER BY id");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      FormRecord f;
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &f, codec::DecodeForm));
      if (!fn(f)) return Status::Ok();
    }
    if (rc != SQLITE_DONE) return r->Err("scanning forms");
    return Status::Ok();
  }

  Result<std::vector<OutboxRow>> ReadOutbox(int64_t after_seq, size_t max) override {
    // A pooled reader sees sealed groups only: durable, and visible to every process, so a
    // change is never published before its document can be read back.
    auto r = PooledReader();
    sqlite3_stmt* s = r->Prep("SELECT seq, meta FROM outbox WHERE seq>? ORDER BY seq LIMIT ?");
    Bind(s, 1, after_seq);
    Bind(s, 2, static_cast<int64_t>(max));
    std::vector<OutboxRow> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      OutboxRow row;
      row.seq = sqlite3_column_int64(s, 0);
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 1), &row.meta, codec::DecodeChange));
      out.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) return r->Err("reading the outbox");
    return out;
  }

  Result<std::vector<StagedBlob>> ReadStagedBlobs(int64_t after_seq, size_t max) override {
    auto r = Reader();
    std::vector<StagedBlob> mem;
    for (auto it = staged_.upper_bound(after_seq); it != staged_.end() && mem.size() < max; ++it)
      mem.push_back(it->second);
    sqlite3_stmt* s =
        r->Prep("SELECT seq, key, data FROM blob_journal WHERE seq>? ORDER BY seq LIMIT ?");
    Bind(s, 1, after_seq);
    Bind(s, 2, static_cast<int64_t>(max));
    std::vector<StagedBlob> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(s, 2));
      out.push_back({sqlite3_column_int64(s, 0), std::string(Col(s, 1)),
                     std::string(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(s, 2)))});
    }
    if (rc != SQLITE_DONE) return r->Err("reading the blob journal");
    // Table rows have lower seqs than the in-memory ones (see StageBlob).
    for (auto& m : mem)
      if (out.size() < max) out.push_back(std::move(m));
    return out;
  }

  Result<int64_t> MaxStagedBlobSeq() override {
    auto r = Reader();
    if (!staged_.empty()) return staged_.rbegin()->first;
    sqlite3_stmt* s = r->Prep("SELECT COALESCE(MAX(seq), 0) FROM blob_journal");
    if (sqlite3_step(s) != SQLITE_ROW) return r->Err("reading the blob journal");
    return static_cast<int64_t>(sqlite3_column_int64(s, 0));
  }

  Result<std::vector<Intent>> PendingIntents() override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep("SELECT intent_id, payload FROM intents ORDER BY intent_id");
    std::vector<Intent> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      out.push_back({std::string(Col(s, 0)), std::string(Col(s, 1))});
    if (rc != SQLITE_DONE) return r->Err("reading intents");
    return out;
  }

  Status PruneAppliedMarkers(const std::vector<std::string>& keep) override {
    if (read_only_) return Status::FailedPrecondition("the store is open read-only");
    std::lock_guard<std::recursive_mutex> lock(write_mu_);
    CC_RETURN_IF_ERROR(SealLocked());
    CC_RETURN_IF_ERROR(writer_.Exec("BEGIN IMMEDIATE"));
    CC_RETURN_IF_ERROR(
        writer_.Exec("CREATE TEMP TABLE IF NOT EXISTS keep_markers(m TEXT PRIMARY KEY)"));
    CC_RETURN_IF_ERROR(writer_.Exec("DELETE FROM keep_markers"));
    for (const auto& k : keep) {
      sqlite3_stmt* s = writer_.Prep("INSERT OR IGNORE INTO keep_markers VALUES(?)");
      Bind(s, 1, k);
      if (sqlite3_step(s) != SQLITE_DONE) return writer_.Err("pruning markers");
    }
    CC_RETURN_IF_ERROR(writer_.Exec(
        "DELETE FROM applied_markers WHERE marker NOT IN (SELECT m FROM keep_markers)"));
    return writer_.Exec("COMMIT");
  }

 private:
  // A pooled read connection, returned to the pool when the handle dies.
  struct ReaderDeleter {
    SqlitePrimaryStore* store;
    bool is_writer = false;
    void operator()(Conn* c) const {
      if (is_writer) {
        store->write_mu_.unlock();
        return;
      }
      c->ResetAll();
      std::lock_guard<std::mutex> l(store->pool_mu_);
      store->pool_.emplace_back(c);
    }
  };
  using ReaderHandle = std::unique_ptr<Conn, ReaderDeleter>;

  // A connection to read with: with a redo log, the writer (it sees unsealed groups); else a
  // pooled read-only connection. Callbacks of a scan must not scan the same store again.
  // Many point reads in one read transaction: one snapshot, one WAL read lock.
  struct ReadSnapshot {
    explicit ReadSnapshot(Conn* c) : c(c) { ok = c->Exec("BEGIN").ok(); }
    ~ReadSnapshot() {
      if (ok) {
        c->ResetAll();
        (void)c->Exec("COMMIT");
      }
    }
    Conn* c;
    bool ok = false;
  };

  Result<std::vector<CaseIndexEdge>> Edges(std::span<const std::string> ids, const char* sql) {
    auto r = PooledReader();
    ReadSnapshot snap(r.get());
    sqlite3_stmt* s = r->Prep(sql);
    std::vector<CaseIndexEdge> out;
    for (const auto& id : ids) {
      Bind(s, 1, id);
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        out.push_back({std::string(Col(s, 0)),
                       {std::string(Col(s, 1)), std::string(Col(s, 3)), std::string(Col(s, 2)),
                        std::string(Col(s, 4))}});
      sqlite3_reset(s);
      if (rc != SQLITE_DONE) return r->Err("reading case indices");
    }
    return out;
  }

  ReaderHandle Reader() {
    if (log_fd_ >= 0) {
      write_mu_.lock();
      return ReaderHandle(&writer_, ReaderDeleter{this, true});
    }
    return PooledReader();
  }

  // For reads of one document: a pooled connection unless the document was written in the
  // unsealed transaction (only the writer sees that yet), so readers rarely wait for writers.
  ReaderHandle ReaderFor(std::string_view kind, std::string_view id) {
    if (log_fd_ >= 0) {
      std::string key(kind);
      key += id;
      bool unsealed;
      {
        std::lock_guard<std::mutex> l(unsealed_mu_);  // never held while taking write_mu_
        unsealed = unsealed_.count(key) > 0;
      }
      if (unsealed) {
        write_mu_.lock();
        return ReaderHandle(&writer_, ReaderDeleter{this, true});
      }
    }
    return PooledReader();
  }

  void MarkUnsealed(std::string_view kind, std::string_view id) {
    if (log_fd_ < 0) return;
    std::string key(kind);
    key += id;
    std::lock_guard<std::mutex> l(unsealed_mu_);
    unsealed_.insert(std::move(key));
  }

  ReaderHandle PooledReader() {
    {
      std::lock_guard<std::mutex> l(pool_mu_);
      if (!pool_.empty()) {
        Conn* c = pool_.back().release();
        pool_.pop_back();
        return ReaderHandle(c, ReaderDeleter{this});
      }
    }
    auto* c = new Conn();
    Status s = c->Open(path_, true, durable_);
    (void)s;  // a failed open surfaces as errors on the first statement
    return ReaderHandle(c, ReaderDeleter{this});
  }

  template <typename T, typename F>
  static Status DecodeDoc(std::string_view text, T* out, F decode) {
    unsigned char buf[8192];
    json::monotonic_resource mr(buf, sizeof buf);
    boost::system::error_code ec;
    json::value v = json::parse(text, ec, &mr);
    if (ec) return Status::DataLoss("a stored row is not valid JSON");
    return decode(v, out);
  }

  Status Step(sqlite3_stmt* s, const char* what) {
    if (!s) return writer_.Err(what);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return writer_.Err(what);
    return Status::Ok();
  }

  // Aborted if a PutCase of the batch expects another rev than the stored one (or an earlier
  // PutCase of the same batch leaves). A batch whose applied marker is recorded passes.
  Status CheckRevs(const WriteBatch& b) {
    if (!b.applied_marker.empty()) {
      sqlite3_stmt* q = writer_.Prep("SELECT 1 FROM applied_markers WHERE marker=?");
      Bind(q, 1, b.applied_marker);
      bool seen = sqlite3_step(q) == SQLITE_ROW;
      sqlite3_reset(q);
      if (seen) return Status::Ok();
    }
    std::vector<std::pair<std::string_view, int64_t>> pending;
    for (const auto& op : b.ops) {
      if (const auto* pf = std::get_if<PutForm>(&op); pf && pf->must_be_new) {
        sqlite3_stmt* q = writer_.Prep("SELECT 1 FROM forms WHERE form_id=?");
        Bind(q, 1, pf->form.form_id);
        int rc = sqlite3_step(q);
        sqlite3_reset(q);
        if (rc == SQLITE_ROW)
          return Status::Aborted(
              fmt::format("form '{}' was stored concurrently", pf->form.form_id));
        if (rc != SQLITE_DONE) return writer_.Err("looking for a form");
      }
      const auto* pc = std::get_if<PutCase>(&op);
      if (!pc) continue;
      const std::string& id = pc->record.case_id;
      int64_t current = -1;
      for (auto it = pending.rbegin(); it != pending.rend(); ++it)
        if (it->first == id) {
          current = it->second;
          break;
        }
      if (current < 0) {
        sqlite3_stmt* q = writer_.Prep("SELECT rev FROM cases WHERE case_id=?");
        Bind(q, 1, id);
        int rc = sqlite3_step(q);
        current = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
        sqlite3_reset(q);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return writer_.Err("reading a case rev");
      }
      if (current != pc->expected_rev)
        return Status::Aborted(fmt::format("case '{}' changed concurrently (rev {} != expected {})",
                                           id, current, pc->expected_rev));
      pending.emplace_back(id, pc->record.rev);
    }
    return Status::Ok();
  }

  Status ApplyBatch(WriteBatch* b) {
    b->outbox_seqs.clear();
    if (!b->applied_marker.empty()) {
      sqlite3_stmt* s = writer_.Prep("INSERT OR IGNORE INTO applied_markers VALUES(?)");
      Bind(s, 1, b->applied_marker);
      CC_RETURN_IF_ERROR(Step(s, "recording an applied marker"));
      if (sqlite3_changes(writer_.db()) == 0) return Status::Ok();  // applied before: skip
    }
    if (b->prepared.size() != b->ops.size()) Prepare(b);
    for (size_t i = 0; i < b->ops.size(); ++i) {
      doc_ = &b->prepared[i];
      Status st = std::visit([&](const auto& o) { return Apply(o, b); }, b->ops[i]);
      CC_RETURN_IF_ERROR(st);
    }
    return Status::Ok();
  }

  Status Apply(const PutForm& op, WriteBatch*) {
    const FormRecord& f = op.form;
    MarkUnsealed("f:", f.form_id);
    const std::string& doc = *doc_;
    sqlite3_stmt* s = writer_.Prep(
        "INSERT INTO forms(form_id, domain, state, doc) VALUES(?1,?2,?3,?4) "
        "ON CONFLICT(form_id) DO UPDATE SET domain=excluded.domain, state=excluded.state, "
        "doc=excluded.doc");
    Bind(s, 1, f.form_id);
    Bind(s, 2, f.domain);
    Bind(s, 3, static_cast<int64_t>(f.state));
    Bind(s, 4, doc);
    return Step(s, "writing a form");
  }
  Status Apply(const DeleteForm& op, WriteBatch*) {
    MarkUnsealed("f:", op.form_id);
    sqlite3_stmt* s = writer_.Prep("DELETE FROM forms WHERE form_id=?");
    Bind(s, 1, op.form_id);
    return Step(s, "deleting a form");
  }
  Status Apply(const PutCase& op, WriteBatch*) {
    // CheckRevs has verified the stored rev: 0 means the case does not exist yet.
    const CaseRecord& c = op.record;
    const bool exists = op.expected_rev != 0;
    MarkUnsealed("c:", c.case_id);
    sqlite3_stmt* s = writer_.Prep(
        exists ? "UPDATE cases SET domain=?2, type=?3, owner_id=?4, closed=?5, deleted=?6, rev=?7, "
                 "doc=?8, indexed=?9, modified=?10 WHERE case_id=?1"
               : "INSERT INTO cases(case_id, domain, type, owner_id, closed, deleted, rev, doc, "
                 "indexed, modified) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)");
    Bind(s, 1, c.case_id);
    Bind(s, 2, c.domain);
    Bind(s, 3, c.type);
    Bind(s, 4, c.owner_id);
    Bind(s, 5, static_cast<int64_t>(c.closed));
    Bind(s, 6, static_cast<int64_t>(c.deleted));
    Bind(s, 7, c.rev);
    Bind(s, 8, *doc_);
    Bind(s, 9, static_cast<int64_t>(!c.indices.empty()));
    Bind(s, 10, util::NowMicros());  // the server's clock, not the (overridable) received_on
    CC_RETURN_IF_ERROR(Step(s, "writing a case"));
    if (exists || !c.indices.empty()) {
      sqlite3_stmt* d = writer_.Prep("DELETE FROM case_indices WHERE case_id=?");
      Bind(d, 1, c.case_id);
      CC_RETURN_IF_ERROR(Step(d, "deleting case indices"));
      for (const auto& i : c.indices) {
        sqlite3_stmt* ins = writer_.Prep(
            "INSERT OR REPLACE INTO case_indices(case_id, identifier, referenced_id, "
            "referenced_type, relationship) VALUES(?,?,?,?,?)");
        Bind(ins, 1, c.case_id);
        Bind(ins, 2, i.identifier);
        Bind(ins, 3, i.referenced_id);
        Bind(ins, 4, i.referenced_type);
        Bind(ins, 5, i.relationship);
        CC_RETURN_IF_ERROR(Step(ins, "writing a case index"));
      }
    }
    return Status::Ok();
  }
  Status Apply(const PutCaseTransaction& op, WriteBatch*) {
    const CaseTransaction& t = op.tx;
    MarkUnsealed("c:", t.case_id);
    int64_t seq = 0;
    if (!t.form_id.empty() && op.upsert) {
      sqlite3_stmt* q =
          writer_.Prep("SELECT seq FROM case_transactions WHERE case_id=? AND form_id=?");
      Bind(q, 1, t.case_id);
      Bind(q, 2, t.form_id);
      if (sqlite3_step(q) == SQLITE_ROW) seq = sqlite3_column_int64(q, 0);
      sqlite3_reset(q);
    }
    const std::string& doc = *doc_;  // its seq field is not read back: the column is
    if (seq != 0) {
      sqlite3_stmt* u = writer_.Prep("UPDATE case_transactions SET doc=? WHERE seq=?");
      Bind(u, 1, doc);
      Bind(u, 2, seq);
      return Step(u, "writing a case transaction");
    }
    // New transactions take the next rowid: seq orders a case's history.
    sqlite3_stmt* s =
        writer_.Prep("INSERT INTO case_transactions(case_id, form_id, doc) VALUES(?,?,?)");
    Bind(s, 1, t.case_id);
    Bind(s, 2, t.form_id);
    Bind(s, 3, doc);
    return Step(s, "writing a case transaction");
  }
  Status Apply(const PutLedgerValue& op, WriteBatch*) {
    MarkUnsealed("c:", op.value.case_id);
    sqlite3_stmt* s = writer_.Prep(
        "INSERT OR REPLACE INTO ledger_values(case_id, section_id, entry_id, doc) VALUES(?,?,?,?)");
    Bind(s, 1, op.value.case_id);
    Bind(s, 2, op.value.section_id);
    Bind(s, 3, op.value.entry_id);
    Bind(s, 4, *doc_);
    return Step(s, "writing a ledger value");
  }
  Status Apply(const ReplaceLedgerTransactions& op, WriteBatch*) {
    MarkUnsealed("c:", op.case_id);
    sqlite3_stmt* d = writer_.Prep("DELETE FROM ledger_transactions WHERE case_id=? AND form_id=?");
    Bind(d, 1, op.case_id);
    Bind(d, 2, op.form_id);
    CC_RETURN_IF_ERROR(Step(d, "deleting ledger transactions"));
    for (const auto& t : op.txs) {
      sqlite3_stmt* s = writer_.Prep(
          "INSERT OR REPLACE INTO ledger_transactions(case_id, form_id, seq, report_date, doc) "
          "VALUES(?,?,?,?,?)");
      Bind(s, 1, t.case_id);
      Bind(s, 2, t.form_id);
      Bind(s, 3, t.seq);
      Bind(s, 4, t.report_date);
      Bind(s, 5, json::serialize(codec::EncodeLedgerTx(t)));
      CC_RETURN_IF_ERROR(Step(s, "writing a ledger transaction"));
    }
    return Status::Ok();
  }
  Status Apply(const AddOutbox& op, WriteBatch* b) {
    sqlite3_stmt* s = writer_.Prep("INSERT INTO outbox(doc_id, meta) VALUES(?,?)");
    Bind(s, 1, op.meta.document_id);
    Bind(s, 2, *doc_);
    CC_RETURN_IF_ERROR(Step(s, "writing an outbox row"));
    b->outbox_seqs.push_back(sqlite3_last_insert_rowid(writer_.db()));
    return Status::Ok();
  }
  // With a redo log, a journaled blob is already durable in the log: it is kept in memory
  // (staged_) rather than written into the database and deleted again a few ms later. Only
  // the copies still unreleased when the log is reused are moved into the blob_journal table
  // (SpillStagedBlobs, at each checkpoint). Without a log, the table holds them directly.
  Status Apply(const StageBlob& op, WriteBatch*) {
    if (log_fd_ >= 0) {
      if (next_staged_ == 0) {
        sqlite3_stmt* q = writer_.Prep("SELECT COALESCE(MAX(seq), 0) FROM blob_journal");
        next_staged_ = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) + 1 : 1;
        sqlite3_reset(q);
      }
      int64_t seq = next_staged_++;
      staged_[seq] = StagedBlob{seq, op.key, op.data};
      return Status::Ok();
    }
    sqlite3_stmt* s = writer_.Prep("INSERT INTO blob_journal(key, data) VALUES(?,?)");
    Bind(s, 1, op.key);
    sqlite3_bind_blob(s, 2, op.data.data(), static_cast<int>(op.data.size()), SQLITE_STATIC);
    return Step(s, "journaling a blob");
  }
  Status Apply(const DeleteOutbox& op, WriteBatch*) {
    sqlite3_stmt* s = writer_.Prep("DELETE FROM outbox WHERE seq<=?");
    Bind(s, 1, op.up_to_seq);
    return Step(s, "deleting relayed outbox rows");
  }
  Status Apply(const ReleaseBlobs& op, WriteBatch*) {
    // A replayed release names seqs of the crashed process; the copies staged again during
    // replay have new seqs and stay until the engine has verified and synced their blobs.
    if (!replaying_) staged_.erase(staged_.begin(), staged_.upper_bound(op.up_to_seq));
    sqlite3_stmt* s = writer_.Prep("DELETE FROM blob_journal WHERE seq<=?");
    Bind(s, 1, op.up_to_seq);
    return Step(s, "releasing journaled blobs");
  }
  Status Apply(const PutIntent& op, WriteBatch*) {
    sqlite3_stmt* s =
        writer_.Prep("INSERT OR REPLACE INTO intents(intent_id, payload) VALUES(?,?)");
    Bind(s, 1, op.intent_id);
    Bind(s, 2, op.payload);
    return Step(s, "writing an intent");
  }
  Status Apply(const DeleteIntent& op, WriteBatch*) {
    sqlite3_stmt* s = writer_.Prep("DELETE FROM intents WHERE intent_id=?");
    Bind(s, 1, op.intent_id);
    return Step(s, "deleting an intent");
  }

  const std::string* doc_ = nullptr;  // the prepared document of the op being applied
  bool txn_open_ = false;             // an unsealed SQLite transaction is open on writer_
  std::chrono::steady_clock::time_point txn_started_;
  Status broken_;  // set when SQLite lost applied groups; reopen replays
  std::thread sealer_;
  util::Conn ckpt_conn_;  // the background checkpointer's own connection
  std::thread checkpointer_;
  std::mutex ckpt_mu_;
  std::condition_variable ckpt_cv_;
  bool stop_checkpointer_ = false;
  std::atomic<uint64_t> log_bytes_{0};  // log_size_, readable without log_mu_
  std::condition_variable_any seal_cv_;
  bool stop_sealer_ = false;
  std::mutex log_mu_;                     // appends to (and truncation of) the redo log
  std::map<int64_t, StagedBlob> staged_;  // journaled blobs held by the log (guarded by write_mu_)
  int64_t next_staged_ = 0;
  bool replaying_ = false;
  std::mutex unsealed_mu_;
  std::unordered_set<std::string> unsealed_;  // "f:"/"c:" ids written since the last seal
  std::atomic<int64_t> appended_lsn_{0}, synced_lsn_{0};
  int log_fd_ = -1;  // the redo log (durable stores only)
  std::string log_path_;
  uint64_t log_size_ = 0;
  int64_t next_lsn_ = 1;
  int replayed_ = 0;
  std::string path_;
  bool durable_;
  bool read_only_;
  std::recursive_mutex write_mu_;
  Conn writer_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Conn>> pool_;
};

}  // namespace

Result<std::unique_ptr<PrimaryStore>> OpenSqlitePrimaryStore(const std::string& path, bool durable,
                                                             bool read_only) {
  auto store = std::make_unique<SqlitePrimaryStore>(path, durable, read_only);
  CC_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<PrimaryStore>(std::move(store));
}

}  // namespace commcare::storage
