// SqlitePrimaryStore's declaration, shared by the sqlite_store*.cc files that define it.
#pragma once

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "commcare/storage/primary_store.h"
#include "util/sqlite_conn.h"

namespace commcare::storage::sqlite_internal {

namespace json = boost::json;
using util::Conn;

// A PrimaryStore on one SQLite file (WAL). One write connection used by CommitGroup; a pool of
// read connections for concurrent readers. Records are stored as JSON with indexed columns.
class SqlitePrimaryStore final : public PrimaryStore {
 public:
  SqlitePrimaryStore(std::string path, bool durable, bool read_only)
      : path_(std::move(path)), durable_(durable), read_only_(read_only) {}

  ~SqlitePrimaryStore() override;

  // Databases made before mobile sync lack cases.indexed and cases.modified: add them (modified
  // stays 0 for cases not written since, which no later sync needs to see as changed).
  Status MigrateCaseColumns();

  Status Init();

  // Makes every group CommitGroup returned durable: one fdatasync of the redo log.
  Status Sync() override;
  Status Flush() override;
  void Prepare(WriteBatch* b) override;

  // The batch as its redo-log chunk: [json length u32][json][blob count u32][(length u32, bytes)*].
  // Documents already serialized by Prepare are spliced in rather than encoded again.
  static std::string LogChunk(const WriteBatch& b);

  Status CommitGroup(std::span<WriteBatch* const> batches, std::vector<Status>* results) override;
  Status SyncLog();

 private:
  // Applies a group and records lsn if set. With a redo log, the SQLite transaction stays open
  // across groups and is committed at most kSeal later (by the next group or the sealer
  // thread): one SQLite commit rewrites each touched page once for many groups. Reads of
  // documents written since the last seal go through the writer connection (ReaderFor), so this
  // store sees every applied group at once; other processes see them once sealed.
  Status ApplyGroup(std::span<WriteBatch* const> batches, std::vector<Status>* results,
                    int64_t lsn);

  static constexpr std::chrono::milliseconds kSeal{250};

  // Commits the open SQLite transaction, if any, once the log holds all of it durably.
  Status SealLocked();
  // Opens the writer's transaction if none is open (and wakes the sealer to time it).
  Status BeginLocked();

  // Copies sealed WAL frames into the database from a second connection, beside the writer
  // (SQLite's PASSIVE checkpoint blocks no one), so the log checkpoint that must hold the
  // write lock (CheckpointLocked, every kCheckpointLogBytes) finds little left to copy and
  // sync: commits then stall for milliseconds, not hundreds of them.
  void CheckpointLoop();
  void SealLoop();
  Status AppendLog(int64_t lsn, std::span<WriteBatch* const> batches);
  Status PreallocateLog();

  // Moves unreleased in-memory blob copies into the blob_journal table, in the open
  // transaction, so that they outlive the log's reuse.
  Status SpillStagedBlobs();
  // Makes the database durable up to the last applied record, then reuses the log from the
  // start (every record in it is now in the database and replay would skip it).
  Status CheckpointLocked();

  // Applies the log's records the database does not have yet (after a crash), then checkpoints.
  Status ReplayLog();
  static Status DecodeLogPayload(std::string_view p, std::vector<WriteBatch>* out);

 public:
  Result<std::optional<FormRecord>> GetForm(std::string_view form_id) override;
  Result<std::optional<CaseRecord>> GetCase(std::string_view case_id) override;
  Result<std::vector<CaseTransaction>> GetCaseTransactions(std::string_view case_id) override;
  Result<std::vector<LedgerValue>> GetLedgerValues(std::string_view case_id) override;
  Result<std::vector<LedgerTransaction>> GetLedgerTransactions(std::string_view case_id) override;
  Status ScanCaseDocs(const CaseFilter& f,
                      const std::function<bool(std::string_view)>& fn) override;

  // Mobile sync's reads use pooled readers: they see sealed commits (Engine::Restore seals
  // first) and never hold the writer's lock.
  Result<std::vector<CaseNode>> OpenCasesByOwner(std::string_view domain,
                                                 std::string_view owner_id) override;
  Result<std::vector<CaseRecord>> GetCases(std::span<const std::string> ids) override;
  Status ReadCaseDocs(std::span<const std::string> ids,
                      const std::function<Status(std::string_view)>& fn) override;
  Result<std::vector<LedgerValue>> GetLedgerValuesOf(std::span<const std::string> ids) override;
  Result<std::vector<CaseNode>> CaseNodes(std::span<const std::string> ids) override;
  Result<std::vector<CaseIndexEdge>> IndicesOf(std::span<const std::string> ids) override;
  Result<std::vector<CaseIndexEdge>> ExtensionsOf(std::span<const std::string> ids) override;
  Result<std::vector<CaseIndexEdge>> IndicesPointingAt(std::span<const std::string> ids) override;
  Result<std::vector<std::string>> CasesModifiedSince(std::string_view domain,
                                                      int64_t since) override;

  Status ScanForms(const std::function<bool(const FormRecord&)>& fn) override;

  Result<std::vector<OutboxRow>> ReadOutbox(int64_t after_seq, size_t max) override;
  Result<std::vector<StagedBlob>> ReadStagedBlobs(int64_t after_seq, size_t max) override;
  Result<int64_t> MaxStagedBlobSeq() override;
  Result<std::vector<Intent>> PendingIntents() override;
  Result<std::vector<std::string>> AppliedMarkers() override;
  Status DeleteAppliedMarkers(std::span<const std::string> markers) override;

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

  Result<std::vector<CaseIndexEdge>> Edges(std::span<const std::string> ids, const char* sql);

  // A connection to read with: with a redo log, the writer (it sees unsealed groups); else a
  // pooled read-only connection. Callbacks of a scan must not scan the same store again.
  ReaderHandle Reader();

  // For reads of one document: a pooled connection unless the document was written in the
  // unsealed transaction (only the writer sees that yet), so readers rarely wait for writers.
  ReaderHandle ReaderFor(std::string_view kind, std::string_view id);

  void MarkUnsealed(std::string_view kind, std::string_view id);
  ReaderHandle PooledReader();

  template <typename T, typename F>
  static Status DecodeDoc(std::string_view text, T* out, F decode) {
    unsigned char buf[8192];
    json::monotonic_resource mr(buf, sizeof buf);
    boost::system::error_code ec;
    json::value v = json::parse(text, ec, &mr);
    if (ec) return Status::DataLoss("a stored row is not valid JSON");
    return decode(v, out);
  }

  Status Step(sqlite3_stmt* s, const char* what);

  // Aborted if a PutCase of the batch expects another rev than the stored one (or an earlier
  // PutCase of the same batch leaves). A batch whose applied marker is recorded passes.
  Status CheckRevs(const WriteBatch& b);

  Status ApplyBatch(WriteBatch* b);

  Status Apply(const PutForm& op, WriteBatch*);
  Status Apply(const DeleteForm& op, WriteBatch*);
  Status Apply(const PutCase& op, WriteBatch*);
  Status Apply(const PutCaseTransaction& op, WriteBatch*);
  Status Apply(const PutLedgerValue& op, WriteBatch*);
  Status Apply(const ReplaceLedgerTransactions& op, WriteBatch*);
  Status Apply(const AddOutbox& op, WriteBatch* b);
  // With a redo log, a journaled blob is already durable in the log: it is kept in memory
  // (staged_) rather than written into the database and deleted again a few ms later. Only
  // the copies still unreleased when the log is reused are moved into the blob_journal table
  // (SpillStagedBlobs, at each checkpoint). Without a log, the table holds them directly.
  Status Apply(const StageBlob& op, WriteBatch*);
  Status Apply(const DeleteOutbox& op, WriteBatch*);
  Status Apply(const ReleaseBlobs& op, WriteBatch*);
  Status Apply(const PutIntent& op, WriteBatch*);
  Status Apply(const DeleteIntent& op, WriteBatch*);

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

}  // namespace commcare::storage::sqlite_internal
