// A libpq connection with statements prepared once per connection, and a query result freed on
// scope exit (internal; shared by the PostgreSQL stores).
#pragma once

#include <fmt/format.h>
#include <libpq-fe.h>

#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare::pg {

// One query's result, freed on scope exit.
struct Res {
  PGresult* r = nullptr;
  explicit Res(PGresult* p) : r(p) {}
  Res(const Res&) = delete;
  ~Res() { PQclear(r); }
  int rows() const { return PQntuples(r); }
  std::string_view At(int row, int col) const {
    return {PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col))};
  }
  int64_t Int(int row, int col) const { return std::stoll(std::string(At(row, col))); }
  bool Bool(int row, int col) const { return At(row, col) == "t"; }
};

// A process-wide name for each statement text (they are string literals: keyed by address).
inline std::string StatementName(const char* sql) {
  static std::mutex mu;
  static std::map<const void*, int> ids;
  std::lock_guard l(mu);
  auto [it, added] = ids.emplace(sql, static_cast<int>(ids.size()));
  return "cc" + std::to_string(it->second);
}

// The connection's last error message without libpq's trailing newline.
inline std::string ErrorText(PGconn* c) {
  std::string msg = PQerrorMessage(c);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

// Statement parameters as libpq takes them: values, lengths and formats (text, except the
// one binary_param, a bytea; NULL where nulls says so). Points into the strings given, which
// must outlive it.
struct Params {
  std::vector<const char*> vals;
  std::vector<int> lens, fmts;
  Params(const std::vector<std::string>& hold, int binary_param,
         const std::vector<bool>& nulls = {}) {
    for (size_t i = 0; i < hold.size(); ++i) {
      vals.push_back(i < nulls.size() && nulls[i] ? nullptr : hold[i].c_str());
      lens.push_back(static_cast<int>(hold[i].size()));
      fmts.push_back(static_cast<int>(i) == binary_param ? 1 : 0);
    }
  }
};

class Conn {
 public:
  explicit Conn(PGconn* c) : c_(c) {}
  ~Conn() { PQfinish(c_); }
  PGconn* get() { return c_; }
  bool ok() const { return PQstatus(c_) == CONNECTION_OK; }
  // Whether this connection has prepared the statement (and marks it prepared).
  bool Prepared(const char* sql) { return !prepared_.insert(sql).second; }
  void Forget(const char* sql) { prepared_.erase(sql); }

  // Runs sql with text parameters (nullptr for NULL; binary marks a bytea parameter).
  Result<std::unique_ptr<Res>> Q(const char* what, const char* sql,
                                 std::initializer_list<std::string_view> params = {},
                                 int binary_param = -1) {
    return Q(what, sql, std::vector<std::string>(params.begin(), params.end()), binary_param);
  }
  Result<std::unique_ptr<Res>> Q(const char* what, const char* sql,
                                 const std::vector<std::string>& hold, int binary_param = -1,
                                 const std::vector<bool>& nulls = {}) {
    const Params p(hold, binary_param, nulls);
    const auto& [vals, lens, fmts] = p;
    // Without parameters PQexec, which also runs several statements (the schema); with them a
    // statement prepared once per connection (parsing and planning are most of a short
    // statement's cost).
    std::unique_ptr<Res> r;
    if (vals.empty()) {
      r = std::make_unique<Res>(PQexec(c_, sql));
    } else {
      const std::string name = StatementName(sql);
      if (!Prepared(sql)) {
        Res prep(PQprepare(c_, name.c_str(), sql, static_cast<int>(vals.size()), nullptr));
        if (PQresultStatus(prep.r) != PGRES_COMMAND_OK) {
          Forget(sql);
          return Status::Internal(
              fmt::format("postgres: preparing {}: {}", what, PQresultErrorMessage(prep.r)));
        }
      }
      r = std::make_unique<Res>(PQexecPrepared(c_, name.c_str(), static_cast<int>(vals.size()),
                                               vals.data(), lens.data(), fmts.data(), 0));
    }
    ExecStatusType st = PQresultStatus(r->r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      const char* state = PQresultErrorField(r->r, PG_DIAG_SQLSTATE);
      const std::string msg = fmt::format("postgres: {}: {}", what, ErrorText(c_));
      if (PQstatus(c_) != CONNECTION_OK) return Status::Unavailable(msg);
      if (state && (std::string_view(state) == "40001" || std::string_view(state) == "40P01"))
        return Status::Aborted(msg);
      return Status::Internal(msg);
    }
    return r;
  }
  Status Exec(const char* what, const char* sql,
              std::initializer_list<std::string_view> params = {}, int binary_param = -1) {
    return Q(what, sql, params, binary_param).status();
  }

 private:
  PGconn* c_;
  std::set<const char*> prepared_;
};

// A new session on dsn with synchronous commits; Unavailable names why it could not connect.
inline Result<std::unique_ptr<Conn>> Connect(const std::string& dsn) {
  auto c = std::make_unique<Conn>(PQconnectdb(dsn.c_str()));
  if (!c->ok()) {
    return Status::Unavailable(fmt::format("postgres: cannot connect: {}", ErrorText(c->get())));
  }
  CC_RETURN_IF_ERROR(c->Exec("setting up the session",
                             "SET synchronous_commit = on; SET client_min_messages = warning"));
  return c;
}

}  // namespace commcare::pg
