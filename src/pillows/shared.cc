// What the pillows share besides the host: user-defined processors, case fetching for a
// batch, the pillow stores' readers, and the JSON of pillow status and retry entries.
#include <fmt/format.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <thread>

#include "commcare/deployment.h"
#include "commcare/pillows.h"
#include "pillows/processor.h"
#include "util/sql_db.h"
#include "util/time.h"

namespace commcare::pillows {
namespace {

using util::SqlDb;

// ---- a user-defined processor ----

class UserProcessor final : public Processor {
 public:
  explicit UserProcessor(std::shared_ptr<ChangeProcessor> p) : p_(std::move(p)) {}
  bool WritesSql() const override { return false; }
  Status Setup(SqlDb&) override { return Status::Ok(); }
  Status Reset(SqlDb&) override { return Status::Ok(); }
  Status ProcessBatch(SqlDb&, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    for (size_t i = 0; i < changes.size(); ++i) {
      Status s;
      try {
        s = p_->Process(engine, *changes[i]);
      } catch (const std::exception& e) {
        s = Status::Internal(fmt::format("processor threw: {}", e.what()));
      } catch (...) {
        s = Status::Internal("processor threw a non-standard exception");
      }
      if (!s.ok()) failed->emplace_back(i, s.ToString());
    }
    return Status::Ok();
  }

 private:
  std::shared_ptr<ChangeProcessor> p_;
};

}  // namespace

std::vector<Result<CaseRecord>> FetchCases(Engine& engine,
                                           const std::vector<const Change*>& changes) {
  std::vector<Result<CaseRecord>> out(changes.size(), Status::NotFound(""));
  auto fetch = [&](size_t from, size_t to) {
    for (size_t i = from; i < to; ++i)
      out[i] = engine.GetCase(changes[i]->meta.domain, changes[i]->meta.document_id);
  };
  const size_t n = changes.size();
  if (n < 64) {
    fetch(0, n);
    return out;
  }
  std::thread helper(fetch, n / 2, n);
  fetch(0, n / 2);
  helper.join();
  return out;
}

std::unique_ptr<Processor> NewUserProcessor(std::shared_ptr<ChangeProcessor> p) {
  return std::make_unique<UserProcessor>(std::move(p));
}

std::string PillowSchema(std::string_view pillow) {
  return "commcare_pillow_" + std::string(pillow);
}

Result<StoreLease> OpenStore(const std::string& where, std::string_view pillow,
                             const std::function<Status(Conn&)>& setup, const char* table) {
  StoreLease out;
  if (util::SqlDb::IsPostgres(where)) {
    const std::string schema = PillowSchema(pillow);
    CC_ASSIGN_OR_RETURN(auto lease, util::BorrowSqlDb(where, schema));
    // Whether the table exists is asked only when a statement fails (not on every read).
    out.pg_table = fmt::format("\"{}\".{}", schema, table);
    out.absent = fmt::format(
        "the {} pillow has not built its tables yet (run the server with its pillows, or "
        "`commcare pillows run`)",
        pillow);
    out.pg.emplace(std::move(lease));
    return out;
  }
  std::string path = fmt::format("{}/{}.sqlite", where, pillow);
  // Unavailable (503 over REST): the secondary store is not built yet, which the pillows
  // fix; the message names the pillow, not the file (a REST client sees it).
  if (::access(path.c_str(), R_OK) != 0)
    return Status::Unavailable(
        fmt::format("the {} pillow has not built its database yet (run the server with its "
                    "pillows, or `commcare pillows run`)",
                    pillow));
  CC_ASSIGN_OR_RETURN(auto lease, util::ReadPool::Acquire(path, setup));
  out.sqlite.emplace(std::move(lease));
  return out;
}

Result<util::SqlRows> StoreLease::Query(const char* what, const std::string& sql,
                                        std::span<const util::SqlParam> params) {
  if (pg) {
    auto out = (*pg)->Query(what, sql, params);
    if (out.ok() || out.status().code() == StatusCode::kUnavailable) return out;
    auto known =
        (*pg)->Run("opening a pillow database", "SELECT CAST(to_regclass(?) AS TEXT)", {pg_table});
    if (known.ok() && (known->empty() || known->Str(0, 0).empty()))
      return Status::Unavailable(absent);
    return out;
  }
  Conn& db = **sqlite;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db.db(), sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
    Status e = Status::InvalidArgument(fmt::format("{}: {}", what, sqlite3_errmsg(db.db())));
    sqlite3_finalize(s);
    return e;
  }
  auto out = util::RunSqlite(db, s, what, params);
  sqlite3_finalize(s);
  return out;
}

}  // namespace commcare::pillows

namespace commcare {

std::string PillowStoreAt(const std::string& data_dir) {
  // A directory not set up yet keeps its files in itself (opening the engine names the problem).
  auto d = Deployment::Load(data_dir);
  return d.ok() ? d->StoreAt(data_dir, "pillows", "pillows") : data_dir + "/pillows";
}

namespace json = boost::json;

// Written by hand rather than by Boost.JSON, whose doubles come out as "7.9204E-2" and
// "0E0": seconds are plain decimals to the millisecond.
std::string PillowStatusToJson(const PillowStatus& st) {
  auto str = [](std::string_view s) { return json::serialize(json::string(s)); };
  auto secs = [](double s) { return fmt::format("{:.3f}", std::max(0.0, s)); };
  std::string parts;
  int64_t lag = 0;
  double lag_s = 0;
  for (const auto& p : st.partitions) {
    parts += fmt::format(
        R"({}{{"topic":{},"partition":{},"checkpoint":{},"end_offset":{},"lag":{},"lag_seconds":{}}})",
        parts.empty() ? "" : ",", str(p.topic), p.partition, p.checkpoint, p.end_offset, p.lag,
        secs(p.lag_seconds));
    lag += p.lag;
    lag_s = std::max(lag_s, p.lag_seconds);
  }
  return fmt::format(
      R"({{"pillow":{},"lag":{},"lag_seconds":{},"retries":{},"dead_letters":{},"partitions":[{}]}})",
      str(st.name), lag, secs(lag_s), st.retries, st.dead_letters, parts);
}

std::string RetryEntryToJson(const RetryEntry& e) {
  return json::serialize(json::object{{"doc_id", e.doc_id},
                                      {"topic", e.topic},
                                      {"partition", e.partition},
                                      {"offset", e.offset},
                                      {"attempts", e.attempts},
                                      {"next_attempt", FormatTime(e.next_attempt)},
                                      {"error", e.error},
                                      {"dead", e.dead}});
}

}  // namespace commcare
