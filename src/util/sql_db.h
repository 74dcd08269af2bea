// A small SQL database over SQLite or PostgreSQL (internal): what the MetaStore and the sync log
// store need to keep one copy of their logic for both — statements with `?` parameters, rows
// as text, schemas applied once per version, and write transactions that exclude every other
// writer of the database in any process.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "commcare/status.h"

struct sqlite3_stmt;

namespace commcare::util {

// A statement parameter: text, a whole number, a real number or NULL.
using SqlParam = std::variant<std::string_view, int64_t, double, std::nullptr_t>;

// A statement's result: its rows as text, and how many rows it changed.
struct SqlRows {
  size_t cols = 0;
  std::vector<std::string> cells;  // row by row
  int64_t changed = 0;             // rows an INSERT, UPDATE or DELETE changed

  size_t size() const { return cols ? cells.size() / cols : 0; }
  bool empty() const { return cells.empty(); }
  std::string_view Str(size_t row, size_t col) const { return cells[row * cols + col]; }
  int64_t Int(size_t row, size_t col) const;
};

class Conn;

class SqlDb {
 public:
  virtual ~SqlDb() = default;

  // Where names a database: "postgres:<libpq connection string>", else a SQLite file path (""
  // keeps the database in memory). On PostgreSQL the tables live in the schema pg_schema
  // (created if missing), so several stores may share one database. On SQLite, durable syncs
  // every commit (a store whose writes are acknowledged: users, tasks, forwarders); without it
  // a power cut can take the last commits back, never corrupt (pillows, sync logs: they
  // rebuild). PostgreSQL commits are always durable.
  static Result<std::unique_ptr<SqlDb>> Open(const std::string& where, const std::string& pg_schema,
                                             bool durable = true);
  // Whether where names a PostgreSQL database.
  static bool IsPostgres(std::string_view where);

  virtual bool postgres() const = 0;
  // The SQLite connection underneath (nullptr on PostgreSQL), for code written for SQLite alone.
  virtual Conn* sqlite() { return nullptr; }

  // Applies the dialect's schema (statements separated by ';', safe to run twice) under a
  // lock, and records version under name; FailedPrecondition if the database holds a newer one.
  virtual Status Migrate(std::string_view name, int version, const char* sqlite_schema,
                         const char* postgres_schema) = 0;

  // Runs one statement; its `?`s take params in order. sql must outlive the database (a
  // string literal: statements are prepared once, keyed by address).
  virtual Result<SqlRows> Run(const char* what, const char* sql,
                              std::initializer_list<SqlParam> params = {}) = 0;

  // Runs a statement built at run time (prepared once per connection, kept by its text).
  virtual Result<SqlRows> Query(const char* what, const std::string& sql,
                                std::span<const SqlParam> params) = 0;

  // Runs statements without parameters (several, separated by ';').
  virtual Status Exec(const char* what, const std::string& sql) = 0;

  // Runs body in one transaction that excludes every other writer of the database in any
  // process (SQLite: BEGIN IMMEDIATE; PostgreSQL: the transaction-level advisory lock `lock`,
  // so writers of different locks run side by side; 0 takes none, leaving writers to row
  // locks). Commits when body returns Ok, else rolls back and returns body's status.
  virtual Status Transaction(const char* what, int64_t lock,
                             const std::function<Status()>& body) = 0;

  // Takes the session-level lock `key` if no other session holds it; false if one does
  // (PostgreSQL: an advisory lock, taken again on a new connection — Unavailable if another
  // session took it meanwhile. SQLite: always true; exclusion is the caller's, e.g. a lock file).
  virtual Result<bool> TryLock(int64_t key) = 0;
};

// A PostgreSQL database kept open between calls for readers (internal): Borrow lends one
// connection per caller, returned to the pool when the lease is destroyed.
class SqlDbLease {
 public:
  SqlDbLease(std::unique_ptr<SqlDb> db, std::string key)
      : db_(std::move(db)), key_(std::move(key)) {}
  SqlDbLease(SqlDbLease&&) = default;
  ~SqlDbLease();
  SqlDb& operator*() { return *db_; }
  SqlDb* operator->() { return db_.get(); }

 private:
  std::unique_ptr<SqlDb> db_;
  std::string key_;
};
Result<SqlDbLease> BorrowSqlDb(const std::string& where, const std::string& pg_schema);

// For the two implementations (internal): the table of schema versions, and the check of
// the version recorded under name (records it when there is none; FailedPrecondition if the
// database holds a newer one).
extern const char* const kSchemaVersions;
Status CheckSchemaVersion(SqlDb* db, std::string_view name, int version);

// A PostgreSQL database (what SqlDb::Open does for "postgres:<dsn>"): defined in
// storage/postgres/sql_db_postgres.cc, or by storage/postgres/disabled.cc when the library is
// built without PostgreSQL (FailedPrecondition).
Result<std::unique_ptr<SqlDb>> OpenPostgresSqlDb(const std::string& dsn, const std::string& schema);

// Runs a prepared SQLite statement with params and reads all its rows (internal).
Result<SqlRows> RunSqlite(Conn& db, sqlite3_stmt* s, const char* what,
                          std::span<const SqlParam> params);

}  // namespace commcare::util
