// util::SqlDb on PostgreSQL (built with COMMCARE_WITH_POSTGRES): a libpq connection whose
// tables live in one schema, `?` parameters numbered, reconnecting after the server went away.
#include <fmt/format.h>

#include <cstdlib>
#include <map>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "storage/postgres/pg_conn.h"
#include "util/sql_db.h"

namespace commcare::util {
namespace {

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
    Status s = c_->Exec("applying the schema", kSchemaVersions);
    if (s.ok()) s = c_->Exec("applying the schema", schema);
    if (s.ok()) s = CheckSchemaVersion(this, name, version);
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

Result<std::unique_ptr<SqlDb>> OpenPostgresSqlDb(const std::string& dsn,
                                                 const std::string& schema) {
  auto db = std::make_unique<PostgresDb>(dsn, schema);
  CC_RETURN_IF_ERROR(db->Connect());
  return std::unique_ptr<SqlDb>(std::move(db));
}

}  // namespace commcare::util
