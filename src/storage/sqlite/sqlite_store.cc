// The SQLite PrimaryStore's schema, migration, opening and closing (class: sqlite_store_impl.h).
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "storage/sqlite/sqlite_store_impl.h"
#include "util/durable_file.h"

namespace commcare::storage::sqlite_internal {
namespace {

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

}  // namespace

SqlitePrimaryStore::~SqlitePrimaryStore() {
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

Status SqlitePrimaryStore::MigrateCaseColumns() {
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

Status SqlitePrimaryStore::Init() {
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
      // The log's name (and the database's, which SQLite does not sync) must be durable before
      // any acknowledged group lives only in the log.
      CC_RETURN_IF_ERROR(util::SyncDirectory(util::ParentDirectory(log_path_)));
      CC_RETURN_IF_ERROR(ReplayLog());
      CC_RETURN_IF_ERROR(PreallocateLog());
      sealer_ = std::thread([this] { SealLoop(); });
      CC_RETURN_IF_ERROR(ckpt_conn_.Open(path_, false, durable_));
      checkpointer_ = std::thread([this] { CheckpointLoop(); });
    }
  }
  return Status::Ok();
}

}  // namespace commcare::storage::sqlite_internal

namespace commcare::storage {

using sqlite_internal::SqlitePrimaryStore;

Result<std::unique_ptr<PrimaryStore>> OpenSqlitePrimaryStore(const std::string& path, bool durable,
                                                             bool read_only) {
  auto store = std::make_unique<SqlitePrimaryStore>(path, durable, read_only);
  CC_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<PrimaryStore>(std::move(store));
}

}  // namespace commcare::storage
