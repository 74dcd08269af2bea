#include "util/sql_db.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "util/sqlite_conn.h"

namespace commcare::util {
namespace {

constexpr std::string_view kPostgresPrefix = "postgres:";

}  // namespace

const char* const kSchemaVersions =
    "CREATE TABLE IF NOT EXISTS schema_versions(name TEXT PRIMARY KEY, version INTEGER NOT NULL)";

Status CheckSchemaVersion(SqlDb* db, std::string_view name, int version) {
  CC_ASSIGN_OR_RETURN(auto v, db->Run("reading the schema version",
                                      "SELECT version FROM schema_versions WHERE name=?", {name}));
  if (v.empty())
    return db
        ->Run("recording the schema version",
              "INSERT INTO schema_versions(name, version) VALUES(?,?)", {name, int64_t{version}})
        .status();
  if (v.Int(0, 0) > version)
    return Status::FailedPrecondition(
        fmt::format("the {} store has schema version {}, newer than this library's {}", name,
                    v.Int(0, 0), version));
  return Status::Ok();
}

namespace {

class SqliteDb final : public SqlDb {
 public:
  ~SqliteDb() override {
    for (auto& [k, st] : dynamic_) sqlite3_finalize(st);
  }
  Status Open(const std::string& path, bool durable) {
    CC_RETURN_IF_ERROR(db_.Open(path.empty() ? ":memory:" : path, false, false));
    return durable ? db_.SyncEachCommit() : Status::Ok();
  }
  bool postgres() const override { return false; }
  Conn* sqlite() override { return &db_; }

  Status Migrate(std::string_view name, int version, const char* schema, const char*) override {
    return Transaction("applying the schema", 0, [&] {
      CC_RETURN_IF_ERROR(db_.Exec(kSchemaVersions));
      CC_RETURN_IF_ERROR(db_.Exec(schema));
      return CheckSchemaVersion(this, name, version);
    });
  }

  Result<SqlRows> Run(const char* what, const char* sql,
                      std::initializer_list<SqlParam> params) override {
    return RunSqlite(db_, db_.Prep(sql), what, {params.begin(), params.size()});
  }

  Result<SqlRows> Query(const char* what, const std::string& sql,
                        std::span<const SqlParam> params) override {
    auto it = dynamic_.find(sql);
    if (it == dynamic_.end()) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v3(db_.db(), sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr) !=
          SQLITE_OK)
        return db_.Err(what);
      it = dynamic_.emplace(sql, st).first;
    } else {
      sqlite3_reset(it->second);
      sqlite3_clear_bindings(it->second);
    }
    return RunSqlite(db_, it->second, what, params);
  }

  Status Exec(const char* what, const std::string& sql) override {
    Status s = db_.Exec(sql.c_str());
    if (!s.ok()) return Status::Internal(fmt::format("{}: {}", what, s.message()));
    return s;
  }

  Status Transaction(const char* what, int64_t, const std::function<Status()>& body) override {
    CC_RETURN_IF_ERROR(db_.Exec("BEGIN IMMEDIATE"));
    Status s = body();
    if (!s.ok()) {
      ResetAll();
      (void)db_.Exec("ROLLBACK");
      return s;
    }
    s = db_.Exec("COMMIT");
    if (!s.ok()) {
      (void)db_.Exec("ROLLBACK");
      return Status::Internal(fmt::format("{}: {}", what, s.message()));
    }
    return s;
  }

  Result<bool> TryLock(int64_t) override { return true; }

 private:
  void ResetAll() {
    db_.ResetAll();
    for (auto& [k, st] : dynamic_) sqlite3_reset(st);
  }

  Conn db_;
  std::unordered_map<std::string, sqlite3_stmt*> dynamic_;
};

}  // namespace

Result<SqlRows> RunSqlite(Conn& db, sqlite3_stmt* s, const char* what,
                          std::span<const SqlParam> params) {
  if (!s) return db.Err(what);
  int i = 1;
  for (const auto& p : params) std::visit([&](auto v) { Bind(s, i++, v); }, p);
  SqlRows out;
  out.cols = static_cast<size_t>(sqlite3_column_count(s));
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW)
    for (int c = 0; c < static_cast<int>(out.cols); ++c) out.cells.emplace_back(Col(s, c));
  if (rc != SQLITE_DONE) {
    Status e = db.Err(what);
    sqlite3_reset(s);
    return e;
  }
  out.changed = sqlite3_changes(db.db());
  sqlite3_reset(s);
  return out;
}

namespace {
struct Pool {
  std::mutex mu;
  std::map<std::string, std::vector<std::unique_ptr<SqlDb>>> idle;
};
Pool& ThePool() {
  static Pool* p = new Pool;  // outlives leases returned during static destruction
  return *p;
}
}  // namespace

SqlDbLease::~SqlDbLease() {
  if (!db_) return;
  std::lock_guard l(ThePool().mu);
  auto& idle = ThePool().idle[key_];
  if (idle.size() < 8) idle.push_back(std::move(db_));
}

Result<SqlDbLease> BorrowSqlDb(const std::string& where, const std::string& pg_schema) {
  std::string key = where + '\n' + pg_schema;
  {
    std::lock_guard l(ThePool().mu);
    auto& idle = ThePool().idle[key];
    if (!idle.empty()) {
      auto db = std::move(idle.back());
      idle.pop_back();
      return SqlDbLease(std::move(db), std::move(key));
    }
  }
  CC_ASSIGN_OR_RETURN(auto db, SqlDb::Open(where, pg_schema));
  return SqlDbLease(std::move(db), std::move(key));
}

int64_t SqlRows::Int(size_t row, size_t col) const {
  const std::string& s = cells[row * cols + col];
  return s.empty() ? 0 : std::stoll(s);
}

bool SqlDb::IsPostgres(std::string_view where) { return where.starts_with(kPostgresPrefix); }

Result<std::unique_ptr<SqlDb>> SqlDb::Open(const std::string& where, const std::string& pg_schema,
                                           bool durable) {
  if (IsPostgres(where)) return OpenPostgresSqlDb(where.substr(kPostgresPrefix.size()), pg_schema);
  auto db = std::make_unique<SqliteDb>();
  CC_RETURN_IF_ERROR(db->Open(where, durable));
  return std::unique_ptr<SqlDb>(std::move(db));
}

}  // namespace commcare::util
