// The internal processor interface: built-in pillows write their secondary store into the
// pillow's own database (a SQLite file, or a schema of a PostgreSQL database), inside the
// transaction that also stores the checkpoint.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "commcare/pillows.h"
#include "util/read_pool.h"
#include "util/sql_db.h"
#include "util/sqlite_conn.h"

namespace commcare::pillows {

using util::Conn;
using util::SqlDb;

// Per-change failures of a batch: (index into the batch, error text).
using Failures = std::vector<std::pair<size_t, std::string>>;

class Processor {
 public:
  virtual ~Processor() = default;
  // True if the processor writes only into the pillow database (its writes then commit with
  // the checkpoint, so the host checkpoints with every batch).
  virtual bool WritesSql() const = 0;
  // Whether the processor currently needs a topic's changes. The host skips a topic it does
  // not need to the log's end without reading it (a processor that starts wanting it later,
  // e.g. a new UCR data source, first fills its store from the primary store).
  virtual bool Wants(SqlDb& db, const std::string& topic) { return true; }
  // Creates the processor's tables (idempotent; in a transaction).
  virtual Status Setup(SqlDb& db) = 0;
  // Processes a batch inside an open transaction. Per-change failures go to *failed; a non-ok
  // return fails the whole batch (the host rolls back and retries one change at a time).
  virtual Status ProcessBatch(SqlDb& db, Engine& engine, const std::vector<const Change*>& changes,
                              Failures* failed) = 0;
  // Called after a batch's transaction has committed (effects outside the database, e.g.
  // enqueueing a task for what the batch wrote).
  virtual void Committed() {}
  // Drops the store's contents (a rebuild from scratch follows).
  virtual Status Reset(SqlDb& db) = 0;
  // Changes to republish for documents missing from or stale in the store.
  virtual Result<std::vector<ChangeMeta>> Missing(SqlDb& db, Engine& engine) {
    return Status::Unimplemented("this pillow cannot reconcile its store");
  }
};

// The current case of each change (NotFound for a missing one), read with two threads when
// the batch is large: re-reading documents is most of a pillow's work, and the primary store
// serves concurrent readers.
std::vector<Result<CaseRecord>> FetchCases(Engine& engine,
                                           const std::vector<const Change*>& changes);

// The case search index (topic case-sql): FTS5 and a property table on SQLite, tsvector and
// jsonb with GIN indexes on PostgreSQL.
std::unique_ptr<Processor> NewCaseSearchProcessor(bool postgres);
// The form read copy the REST API lists (topic form-sql).
std::unique_ptr<Processor> NewFormReadCopyProcessor();
// A user-defined ChangeProcessor, called for each change of a batch.
std::unique_ptr<Processor> NewUserProcessor(std::shared_ptr<ChangeProcessor> p);

// Adds a pillow with a built-in processor to a host made by PillowHost::Open (as the built-in
// pillows are; Host::OpenPillows adds the forwarding pillow this way).
Status AddBuiltinPillow(PillowHost* host, const PillowConfig& config,
                        std::unique_ptr<Processor> proc);

// The PostgreSQL schema that holds a pillow's tables.
std::string PillowSchema(std::string_view pillow);

// A reader's connection to a pillow's database: a pooled read-only SQLite file, or a pooled
// PostgreSQL connection in the pillow's schema.
struct StoreLease {
  std::optional<util::ReadPool::Lease> sqlite;
  std::optional<util::SqlDbLease> pg;
  std::string pg_table;  // PostgreSQL: the schema-qualified table a store without it lacks ...
  std::string absent;    // ... and the Unavailable message then
  // Runs a statement built at run time (`?` parameters); NotFound when the store has no
  // tables yet.
  Result<util::SqlRows> Query(const char* what, const std::string& sql,
                              std::span<const util::SqlParam> params);
};
// Opens the database of pillow at where (a pillow directory, or "postgres:<conninfo>");
// NotFound if a directory has none (on PostgreSQL, Query answers NotFound when the schema has
// no table `table` yet). setup runs once on each new SQLite connection.
Result<StoreLease> OpenStore(const std::string& where, std::string_view pillow,
                             const std::function<Status(Conn&)>& setup, const char* table);

}  // namespace commcare::pillows
