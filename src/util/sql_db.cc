#include "util/sql_db.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "storage/postgres/pg_conn.h"
#include "util/sqlite_conn.h"

namespace commcare::util {
namespace {

constexpr std::string_view kPostgresPrefix = "postgres:";

constexpr const char* kVersions =
    "CREATE TABLE IF NOT EXISTS schema_versions(name TEXT PRIMARY KEY, version INTEGER NOT NULL)";

// Reads the version recorded under name: records it when there is none, refuses a newer one.
Status CheckVersion(SqlDb* db, std::string_view name, int version) {
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

class SqliteDb final : public SqlDb {
 public:
  ~SqliteDb() override {
    for (auto& [k, st] : dynamic_) sqlite3_finalize(st);
  }
  Status Open(const std::string& path) {
    return db_.Open(path.empty() ? ":memory:" : path, false, false);
  }
  bool postgres() const override { return false; }
  Conn* sqlite() override { return &db_; }

  Status Migrate(std::string_view name, int version, const char* schema, const char*) override {
    return Transaction("applying the schema", 0, [&] {
      CC_RETURN_IF_ERROR(db_.Exec(kVersions));
      CC_RETURN_IF_ERROR(db_.Exec(schema));
      return CheckVersion(this, name, version);
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

class PostgresDb final : public SqlDb {
 public:
  PostgresDb(std::string dsn, std::string schema)
      : dsn_(std::move(dsn)), schema_(std::move(schema)) {}

  Status Connect() {
    CC_ASSIGN_OR_RETURN(c_, pg::Connect(dsn_));
    const std::string set =
        fmt::format("CREATE SCHEMA IF NOT EXISTS \"{0}\"; SET search_path = \"{0}\"", schema_);
    CC_RETURN_IF_ERROR(c_->Exec("choosing the schema", set.c_str()));
    for (int64_t key : locks_) {  // a new session: the old one's locks went with it
      CC_ASSIGN_OR_RETURN(bool got, Take(key));
      if (!got)
        return Status::Unavailable(fmt::format(
            "postgres: lock {} was taken by another session while the connection was lost", key));
    }
    return Status::Ok();
  }
  bool postgres() const override { return true; }

  Status Migrate(std::string_view name, int version, const char*, const char* schema) override {
    // Session lock: CREATE ... IF NOT EXISTS is not safe against a second process doing the same.
    CC_RETURN_IF_ERROR(Live());
    CC_RETURN_IF_ERROR(c_->Exec("locking the schema", "SELECT pg_advisory_lock(727275)"));
    Status s = c_->Exec("applying the schema", kVersions);
    if (s.ok()) s = c_->Exec("applying the schema", schema);
    if (s.ok()) s = CheckVersion(this, name, version);
    (void)c_->Exec("unlocking the schema", "SELECT pg_advisory_unlock(727275)");
    return s;
  }

  Result<SqlRows> Run(const char* what, const char* sql,
                      std::initializer_list<SqlParam> params) override {
    CC_RETURN_IF_ERROR(Live());
    auto it = numbered_.find(sql);
    if (it == numbered_.end()) it = numbered_.emplace(sql, Numbered(sql)).first;
    return Execute(what, it->second.c_str(), {params.begin(), params.size()});
  }

  Result<SqlRows> Query(const char* what, const std::string& sql,
                        std::span<const SqlParam> params) override {
    CC_RETURN_IF_ERROR(Live());
    auto it = dynamic_.find(sql);
    if (it == dynamic_.end()) it = dynamic_.emplace(sql, Numbered(sql.c_str())).first;
    return Execute(what, it->second.c_str(), params);
  }

  Status Exec(const char* what, const std::string& sql) override {
    CC_RETURN_IF_ERROR(Live());
    return c_->Exec(what, sql.c_str());
  }

  Result<bool> TryLock(int64_t key) override {
    CC_RETURN_IF_ERROR(Live());
    CC_ASSIGN_OR_RETURN(bool got, Take(key));
    if (got) locks_.push_back(key);
    return got;
  }

  Status Transaction(const char* what, int64_t lock, const std::function<Status()>& body) override {
    CC_RETURN_IF_ERROR(Live());
    CC_RETURN_IF_ERROR(c_->Exec(what, "BEGIN"));
    in_transaction_ = true;
    Status s;
    if (lock != 0) s = c_->Exec(what, "SELECT pg_advisory_xact_lock($1)", {std::to_string(lock)});
    if (s.ok()) s = body();
    if (s.ok()) s = c_->Exec(what, "COMMIT");
    if (!s.ok()) (void)c_->Exec(what, "ROLLBACK");
    in_transaction_ = false;
    return s;
  }

 private:
  Result<bool> Take(int64_t key) {
    CC_ASSIGN_OR_RETURN(
        auto r, c_->Q("taking a lock", "SELECT pg_try_advisory_lock($1)", {std::to_string(key)}));
    return r->Bool(0, 0);
  }

  // Runs a numbered statement (kept alive by the caller's map: libpq prepares it once per
  // connection, keyed by its address).
  Result<SqlRows> Execute(const char* what, const char* numbered,
                          std::span<const SqlParam> params) {
    std::vector<std::string> text;
    std::vector<bool> nulls;
    for (const auto& p : params) {
      nulls.push_back(std::holds_alternative<std::nullptr_t>(p));
      if (const auto* t = std::get_if<std::string_view>(&p))
        text.emplace_back(*t);
      else if (const auto* i = std::get_if<int64_t>(&p))
        text.push_back(std::to_string(*i));
      else if (const auto* d = std::get_if<double>(&p))
        text.push_back(fmt::format("{}", *d));
      else
        text.emplace_back();
    }
    CC_ASSIGN_OR_RETURN(auto r, c_->Q(what, numbered, text, -1, nulls));
    SqlRows out;
    out.cols = static_cast<size_t>(PQnfields(r->r));
    for (int row = 0; row < r->rows(); ++row)
      for (int c = 0; c < static_cast<int>(out.cols); ++c) out.cells.emplace_back(r->At(row, c));
    const char* n = PQcmdTuples(r->r);
    out.changed = n && *n ? std::atoll(n) : 0;
    return out;
  }

  // A connection (a new one after the server went away; never inside a transaction).
  Status Live() {
    if (c_ && c_->ok()) return Status::Ok();
    if (in_transaction_) return Status::Unavailable("postgres: the connection was lost");
    return Connect();
  }
  // sql with its `?`s numbered ($1, $2, ...).
  static std::string Numbered(const char* sql) {
    std::string out;
    int n = 0;
    for (const char* p = sql; *p; ++p) {
      if (*p == '?')
        out += fmt::format("${}", ++n);
      else
        out += *p;
    }
    return out;
  }

  std::string dsn_, schema_;
  std::unique_ptr<pg::Conn> c_;
  bool in_transaction_ = false;
  std::vector<int64_t> locks_;                            // session locks held (TryLock)
  std::map<const char*, std::string> numbered_;           // Run's statements, by address
  std::unordered_map<std::string, std::string> dynamic_;  // Query's, by text (nodes stay put)
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

Result<std::unique_ptr<SqlDb>> SqlDb::Open(const std::string& where, const std::string& pg_schema) {
  if (IsPostgres(where)) {
    auto db = std::make_unique<PostgresDb>(where.substr(kPostgresPrefix.size()), pg_schema);
    CC_RETURN_IF_ERROR(db->Connect());
    return std::unique_ptr<SqlDb>(std::move(db));
  }
  auto db = std::make_unique<SqliteDb>();
  CC_RETURN_IF_ERROR(db->Open(where));
  return std::unique_ptr<SqlDb>(std::move(db));
}

}  // namespace commcare::util
