#include "util/sql_db.h"

#include <fmt/format.h>

#include <map>

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
  Status Open(const std::string& path) {
    return db_.Open(path.empty() ? ":memory:" : path, false, false);
  }
  bool postgres() const override { return false; }

  Status Migrate(std::string_view name, int version, const char* schema, const char*) override {
    return Transaction("applying the schema", 0, [&] {
      CC_RETURN_IF_ERROR(db_.Exec(kVersions));
      CC_RETURN_IF_ERROR(db_.Exec(schema));
      return CheckVersion(this, name, version);
    });
  }

  Result<SqlRows> Run(const char* what, const char* sql,
                      std::initializer_list<SqlParam> params) override {
    sqlite3_stmt* s = db_.Prep(sql);
    if (!s) return db_.Err(what);
    int i = 1;
    for (const auto& p : params) std::visit([&](auto v) { Bind(s, i++, v); }, p);
    SqlRows out;
    out.cols = static_cast<size_t>(sqlite3_column_count(s));
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      for (int c = 0; c < static_cast<int>(out.cols); ++c) out.cells.emplace_back(Col(s, c));
    if (rc != SQLITE_DONE) {
      Status e = db_.Err(what);
      sqlite3_reset(s);
      return e;
    }
    out.changed = sqlite3_changes(db_.db());
    sqlite3_reset(s);
    return out;
  }

  Status Transaction(const char* what, int64_t, const std::function<Status()>& body) override {
    CC_RETURN_IF_ERROR(db_.Exec("BEGIN IMMEDIATE"));
    Status s = body();
    if (!s.ok()) {
      db_.ResetAll();
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

 private:
  Conn db_;
};

class PostgresDb final : public SqlDb {
 public:
  PostgresDb(std::string dsn, std::string schema)
      : dsn_(std::move(dsn)), schema_(std::move(schema)) {}

  Status Connect() {
    CC_ASSIGN_OR_RETURN(c_, pg::Connect(dsn_));
    const std::string set =
        fmt::format("CREATE SCHEMA IF NOT EXISTS \"{0}\"; SET search_path = \"{0}\"", schema_);
    return c_->Exec("choosing the schema", set.c_str());
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
    std::vector<std::string> text;
    for (const auto& p : params) {
      if (const auto* t = std::get_if<std::string_view>(&p))
        text.emplace_back(*t);
      else
        text.push_back(std::to_string(std::get<int64_t>(p)));
    }
    CC_ASSIGN_OR_RETURN(auto r, c_->Q(what, Numbered(sql), text));
    SqlRows out;
    out.cols = static_cast<size_t>(PQnfields(r->r));
    for (int row = 0; row < r->rows(); ++row)
      for (int c = 0; c < static_cast<int>(out.cols); ++c) out.cells.emplace_back(r->At(row, c));
    const char* n = PQcmdTuples(r->r);
    out.changed = n && *n ? std::atoll(n) : 0;
    return out;
  }

  Status Transaction(const char* what, int64_t lock, const std::function<Status()>& body) override {
    CC_RETURN_IF_ERROR(Live());
    CC_RETURN_IF_ERROR(c_->Exec(what, "BEGIN"));
    in_transaction_ = true;
    Status s = c_->Exec(what, "SELECT pg_advisory_xact_lock($1)", {std::to_string(lock)});
    if (s.ok()) s = body();
    if (s.ok()) s = c_->Exec(what, "COMMIT");
    if (!s.ok()) (void)c_->Exec(what, "ROLLBACK");
    in_transaction_ = false;
    return s;
  }

 private:
  // A connection (a new one after the server went away; never inside a transaction).
  Status Live() {
    if (c_ && c_->ok()) return Status::Ok();
    if (in_transaction_) return Status::Unavailable("postgres: the connection was lost");
    return Connect();
  }
  // sql with its `?`s numbered ($1, $2, ...), kept per statement.
  const char* Numbered(const char* sql) {
    auto it = numbered_.find(sql);
    if (it == numbered_.end()) {
      std::string out;
      int n = 0;
      for (const char* p = sql; *p; ++p) {
        if (*p == '?')
          out += fmt::format("${}", ++n);
        else
          out += *p;
      }
      it = numbered_.emplace(sql, std::move(out)).first;
    }
    return it->second.c_str();
  }

  std::string dsn_, schema_;
  std::unique_ptr<pg::Conn> c_;
  bool in_transaction_ = false;
  std::map<const char*, std::string> numbered_;
};

}  // namespace

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
