// A small SQL database over SQLite or PostgreSQL (internal): what the MetaStore and the sync log
// store need to keep one copy of their logic for both — statements with `?` parameters, rows
// as text, schemas applied once per version, and write transactions that exclude every other
// writer of the database in any process.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "commcare/status.h"

namespace commcare::util {

// A statement parameter: text or a whole number.
using SqlParam = std::variant<std::string_view, int64_t>;

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

class SqlDb {
 public:
  virtual ~SqlDb() = default;

  // Where names a database: "postgres:<libpq connection string>", else a SQLite file path (""
  // keeps the database in memory). On PostgreSQL the tables live in the schema pg_schema
  // (created if missing), so several stores may share one database.
  static Result<std::unique_ptr<SqlDb>> Open(const std::string& where,
                                             const std::string& pg_schema);
  // Whether where names a PostgreSQL database.
  static bool IsPostgres(std::string_view where);

  virtual bool postgres() const = 0;

  // Applies the dialect's schema (statements separated by ';', safe to run twice) under a
  // lock, and records version under name; FailedPrecondition if the database holds a newer one.
  virtual Status Migrate(std::string_view name, int version, const char* sqlite_schema,
                         const char* postgres_schema) = 0;

  // Runs one statement; its `?`s take params in order. sql must outlive the database (a
  // string literal: statements are prepared once, keyed by address).
  virtual Result<SqlRows> Run(const char* what, const char* sql,
                              std::initializer_list<SqlParam> params = {}) = 0;

  // Runs body in one transaction that excludes every other writer of the database in any
  // process (SQLite: BEGIN IMMEDIATE; PostgreSQL: the transaction-level advisory lock `lock`,
  // so writers of different locks run side by side). Commits when body returns Ok, else rolls
  // back and returns body's status.
  virtual Status Transaction(const char* what, int64_t lock,
                             const std::function<Status()>& body) = 0;
};

}  // namespace commcare::util
