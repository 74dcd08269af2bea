// The forwarding store: forwarders, repeat records and their attempts, in the forwarding
// pillow's database (SQLite file <pillows>/forwarding.sqlite, or the PostgreSQL schema
// commcare_pillow_forwarding), so the pillow writes records in its checkpoint's transaction.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <mutex>

#include "commcare/engine.h"
#include "integrations/forwarding/forwarding.h"
#include "pillows/processor.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::forwarding {

namespace json = boost::json;
using util::SqlDb;

namespace {

constexpr const char* kSqliteSchema = R"(
CREATE TABLE IF NOT EXISTS fwd_forwarders(
  id TEXT PRIMARY KEY, domain TEXT NOT NULL, config TEXT NOT NULL, paused INTEGER NOT NULL,
  deleted INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fwd_records(
  id INTEGER PRIMARY KEY AUTOINCREMENT, forwarder TEXT NOT NULL, domain TEXT NOT NULL,
  doc_id TEXT NOT NULL, doc_type TEXT NOT NULL, event TEXT NOT NULL, order_key TEXT NOT NULL,
  once_key TEXT UNIQUE, state INTEGER NOT NULL, open INTEGER NOT NULL, attempts INTEGER NOT NULL,
  tries INTEGER NOT NULL, created_at INTEGER NOT NULL, next_check INTEGER NOT NULL,
  last_checked INTEGER NOT NULL, change_ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS fwd_records_open ON fwd_records(forwarder, open, id);
CREATE INDEX IF NOT EXISTS fwd_records_domain ON fwd_records(domain, id);
CREATE TABLE IF NOT EXISTS fwd_attempts(
  record INTEGER NOT NULL, n INTEGER NOT NULL, at INTEGER NOT NULL, state INTEGER NOT NULL,
  http_status INTEGER NOT NULL, message TEXT NOT NULL, duration_us INTEGER NOT NULL,
  PRIMARY KEY(record, n));
)";
constexpr const char* kPostgresSchema = R"(
CREATE TABLE IF NOT EXISTS fwd_forwarders(
  id TEXT COLLATE "C" PRIMARY KEY, domain TEXT COLLATE "C" NOT NULL, config TEXT NOT NULL,
  paused INTEGER NOT NULL, deleted INTEGER NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS fwd_records(
  id BIGSERIAL PRIMARY KEY, forwarder TEXT COLLATE "C" NOT NULL, domain TEXT COLLATE "C" NOT NULL,
  doc_id TEXT NOT NULL, doc_type TEXT NOT NULL, event TEXT NOT NULL, order_key TEXT NOT NULL,
  once_key TEXT UNIQUE, state INTEGER NOT NULL, open INTEGER NOT NULL, attempts INTEGER NOT NULL,
  tries INTEGER NOT NULL, created_at BIGINT NOT NULL, next_check BIGINT NOT NULL,
  last_checked BIGINT NOT NULL, change_ts BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS fwd_records_open ON fwd_records(forwarder, open, id);
CREATE INDEX IF NOT EXISTS fwd_records_domain ON fwd_records(domain, id);
CREATE TABLE IF NOT EXISTS fwd_attempts(
  record BIGINT NOT NULL, n INTEGER NOT NULL, at BIGINT NOT NULL, state INTEGER NOT NULL,
  http_status INTEGER NOT NULL, message TEXT NOT NULL, duration_us BIGINT NOT NULL,
  PRIMARY KEY(record, n));
)";

}  // namespace

const char* const kRecordColumns =
    "id, forwarder, domain, doc_id, doc_type, event, state, attempts, tries, created_at, "
    "next_check, last_checked";

RepeatRecord RecordFromRow(const util::SqlRows& rows, size_t i) {
  RepeatRecord r;
  r.id = rows.Int(i, 0);
  r.forwarder_id = std::string(rows.Str(i, 1));
  r.domain = std::string(rows.Str(i, 2));
  r.doc_id = std::string(rows.Str(i, 3));
  r.doc_type = std::string(rows.Str(i, 4));
  r.event = std::string(rows.Str(i, 5));
  r.state = static_cast<RecordState>(rows.Int(i, 6));
  r.attempts = static_cast<int>(rows.Int(i, 7));
  r.tries = static_cast<int>(rows.Int(i, 8));
  r.created_at = rows.Int(i, 9);
  r.next_check = rows.Int(i, 10);
  r.last_checked = rows.Int(i, 11);
  return r;
}

Status Setup(SqlDb& db) {
  return db.Exec("creating the forwarding tables", db.postgres() ? kPostgresSchema : kSqliteSchema);
}

Result<std::unique_ptr<SqlDb>> OpenDb(const std::string& store) {
  if (store.empty())
    return Status::FailedPrecondition("data forwarding needs a data directory (no pillow store)");
  const bool pg = SqlDb::IsPostgres(store);
  if (!pg) {
    std::error_code ec;
    std::filesystem::create_directories(store, ec);
    if (ec) return Status::Unavailable(fmt::format("cannot create {}: {}", store, ec.message()));
  }
  CC_ASSIGN_OR_RETURN(auto db, SqlDb::Open(pg ? store : store + "/forwarding.sqlite",
                                           pillows::PillowSchema(kPillow)));
  CC_RETURN_IF_ERROR(
      db->Transaction("setting up forwarding", 7234618160, [&] { return Setup(*db); }));
  return db;
}

namespace {

Result<std::vector<Forwarder>> ReadForwarders(SqlDb& db, const char* what, const char* sql,
                                              std::initializer_list<util::SqlParam> params) {
  CC_ASSIGN_OR_RETURN(auto rows, db.Run(what, sql, params));
  std::vector<Forwarder> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    auto f = Forwarder::FromJson(rows.Str(i, 0));
    if (!f.ok())
      return Status::DataLoss("a stored forwarder does not parse: " + f.status().ToString());
    f->paused = rows.Int(i, 1) != 0;
    out.push_back(std::move(*f));
  }
  return out;
}

}  // namespace

Result<std::vector<Forwarder>> ActiveForwarders(SqlDb& db, bool include_paused) {
  return ReadForwarders(db, "listing forwarders",
                        "SELECT config, paused FROM fwd_forwarders WHERE deleted=0 AND "
                        "(paused=0 OR CAST(? AS INTEGER)=1) ORDER BY created_at, id",
                        {int64_t{include_paused}});
}

Result<Forwarder> LoadForwarder(SqlDb& db, std::string_view id) {
  CC_ASSIGN_OR_RETURN(auto v, ReadForwarders(db, "reading a forwarder",
                                             "SELECT config, paused FROM fwd_forwarders WHERE "
                                             "id=? AND deleted=0",
                                             {id}));
  if (v.empty()) return Status::NotFound(fmt::format("no forwarder {}", id));
  return std::move(v[0]);
}

Status EnqueueDelivery(TaskQueue* tasks, const std::string& domain, const std::string& id) {
  if (!tasks) return Status::Ok();
  TaskSpec spec;
  spec.type = kDeliverTask;
  spec.queue = "default";
  spec.domain = domain;
  spec.payload = json::serialize(json::object{{"forwarder", id}});
  spec.unique_key = "forward:" + id;
  spec.max_attempts = 100;
  return tasks->Enqueue(spec).status();
}

namespace {

class Store final : public ForwardingStore {
 public:
  Store(std::unique_ptr<SqlDb> db, TaskQueue* tasks) : db_(std::move(db)), tasks_(tasks) {}

  Result<Forwarder> Add(const Forwarder& in) override {
    Forwarder f = in;
    CC_RETURN_IF_ERROR(CheckForwarder(f));
    f.id = util::NewUuidHex();
    f.created_at = util::NowMicros();
    if (tasks_) CC_RETURN_IF_ERROR(EnsureSweepSchedule(tasks_));  // the first forwarder's
    std::lock_guard l(mu_);
    CC_RETURN_IF_ERROR(db_->Run("adding a forwarder",
                                "INSERT INTO fwd_forwarders(id, domain, config, paused, deleted, "
                                "created_at) VALUES(?,?,?,?,0,?)",
                                {f.id, f.domain, f.ToJson(true), int64_t{f.paused}, f.created_at})
                           .status());
    return f;
  }

  Result<std::vector<Forwarder>> List(std::string_view domain) override {
    std::lock_guard l(mu_);
    return ReadForwarders(*db_, "listing forwarders",
                          "SELECT config, paused FROM fwd_forwarders WHERE domain=? AND deleted=0 "
                          "ORDER BY created_at, id",
                          {domain});
  }

  Result<Forwarder> Get(std::string_view domain, std::string_view id) override {
    std::lock_guard l(mu_);
    auto f = LoadForwarder(*db_, id);
    if (f.ok() && f->domain != domain) return Status::NotFound(fmt::format("no forwarder {}", id));
    return f;
  }

  Status SetPaused(std::string_view domain, std::string_view id, bool paused) override {
    CC_ASSIGN_OR_RETURN(Forwarder f, Get(domain, id));
    {
      std::lock_guard l(mu_);
      CC_RETURN_IF_ERROR(db_->Run("pausing a forwarder",
                                  "UPDATE fwd_forwarders SET paused=? WHERE id=?",
                                  {int64_t{paused}, id})
                             .status());
    }
    return paused ? Status::Ok() : EnqueueDelivery(tasks_, f.domain, f.id);
  }

  Status Delete(std::string_view domain, std::string_view id) override {
    CC_ASSIGN_OR_RETURN(Forwarder f, Get(domain, id));
    std::lock_guard l(mu_);
    return db_->Transaction("deleting a forwarder", 0, [&] {
      CC_RETURN_IF_ERROR(
          db_->Run("deleting a forwarder", "UPDATE fwd_forwarders SET deleted=1 WHERE id=?", {id})
              .status());
      return db_
          ->Run("cancelling a deleted forwarder's records",
                "UPDATE fwd_records SET state=?, open=0 WHERE forwarder=? AND open=1",
                {int64_t{static_cast<int>(RecordState::kCancelled)}, id})
          .status();
    });
  }

  Result<std::vector<RepeatRecord>> Records(const RecordFilter& q) override {
    if (q.domain.empty()) return Status::InvalidArgument("records need a domain");
    if (q.limit < 1 || q.limit > 1000) return Status::InvalidArgument("limit must be 1..1000");
    std::string sql = fmt::format("SELECT {} FROM fwd_records WHERE domain=?", kRecordColumns);
    std::vector<util::SqlParam> params{std::string_view(q.domain)};
    if (!q.forwarder_id.empty()) sql += " AND forwarder=?", params.emplace_back(q.forwarder_id);
    if (q.state) sql += " AND state=?", params.emplace_back(int64_t{static_cast<int>(*q.state)});
    if (q.before_id > 0) sql += " AND id<?", params.emplace_back(q.before_id);
    sql += fmt::format(" ORDER BY id DESC LIMIT {}", q.limit);
    std::lock_guard l(mu_);
    CC_ASSIGN_OR_RETURN(auto rows, db_->Query("listing repeat records", sql, params));
    std::vector<RepeatRecord> out;
    for (size_t i = 0; i < rows.size(); ++i) out.push_back(RecordFromRow(rows, i));
    return out;
  }

  Result<RepeatRecord> Record(std::string_view domain, int64_t id) override {
    std::lock_guard l(mu_);
    return ReadRecord(domain, id);
  }

  Status Resend(std::string_view domain, int64_t id) override {
    RepeatRecord r;
    {
      std::lock_guard l(mu_);
      CC_ASSIGN_OR_RETURN(r, ReadRecord(domain, id));
      CC_RETURN_IF_ERROR(LoadForwarder(*db_, r.forwarder_id).status());
      CC_RETURN_IF_ERROR(db_->Run("resending a record",
                                  "UPDATE fwd_records SET state=1, open=1, tries=0, next_check=? "
                                  "WHERE id=?",
                                  {util::NowMicros(), id})
                             .status());
    }
    return EnqueueDelivery(tasks_, r.domain, r.forwarder_id);
  }

  Result<int64_t> ResendFailed(std::string_view domain, std::string_view fwd) override {
    CC_ASSIGN_OR_RETURN(auto forwarders, List(domain));
    int64_t n = 0;
    for (const auto& f : forwarders) {
      if (!fwd.empty() && f.id != fwd) continue;
      {
        std::lock_guard l(mu_);
        CC_ASSIGN_OR_RETURN(auto up, db_->Run("resending failed records",
                                              "UPDATE fwd_records SET state=1, open=1, tries=0, "
                                              "next_check=? WHERE forwarder=? AND state IN (2,8)",
                                              {util::NowMicros(), f.id}));
        n += up.changed;
        if (up.changed == 0) continue;
      }
      CC_RETURN_IF_ERROR(EnqueueDelivery(tasks_, f.domain, f.id));
    }
    if (!fwd.empty() && std::none_of(forwarders.begin(), forwarders.end(),
                                     [&](const Forwarder& f) { return f.id == fwd; }))
      return Status::NotFound(fmt::format("no forwarder {}", fwd));
    return n;
  }

  Result<std::string> Counts(std::string_view domain) override {
    std::lock_guard l(mu_);
    CC_ASSIGN_OR_RETURN(auto rows, db_->Run("counting repeat records",
                                            "SELECT state, COUNT(*) FROM fwd_records WHERE "
                                            "domain=? GROUP BY state",
                                            {domain}));
    json::object o;
    for (int st : {1, 2, 4, 8, 16, 32}) o[RecordStateName(static_cast<RecordState>(st))] = 0;
    for (size_t i = 0; i < rows.size(); ++i)
      o[RecordStateName(static_cast<RecordState>(rows.Int(i, 0)))] = rows.Int(i, 1);
    return json::serialize(o);
  }

 private:
  Result<RepeatRecord> ReadRecord(std::string_view domain, int64_t id) {
    CC_ASSIGN_OR_RETURN(
        auto rows, db_->Query("reading a repeat record",
                              fmt::format("SELECT {} FROM fwd_records WHERE id=?", kRecordColumns),
                              std::vector<util::SqlParam>{id}));
    if (rows.empty() || rows.Str(0, 2) != domain)
      return Status::NotFound(fmt::format("no repeat record {} in {}", id, domain));
    RepeatRecord r = RecordFromRow(rows, 0);
    CC_ASSIGN_OR_RETURN(auto at, db_->Run("reading attempts",
                                          "SELECT at, state, http_status, message, duration_us "
                                          "FROM fwd_attempts WHERE record=? ORDER BY n",
                                          {id}));
    for (size_t i = 0; i < at.size(); ++i)
      r.attempt_log.push_back({at.Int(i, 0), static_cast<RecordState>(at.Int(i, 1)),
                               static_cast<int>(at.Int(i, 2)), std::string(at.Str(i, 3)),
                               at.Int(i, 4)});
    return r;
  }

  std::mutex mu_;  // the connection
  std::unique_ptr<SqlDb> db_;
  TaskQueue* tasks_;
};

}  // namespace

}  // namespace commcare::forwarding

namespace commcare {

Result<std::unique_ptr<ForwardingStore>> ForwardingStore::Open(const std::string& pillow_store,
                                                               TaskQueue* tasks) {
  CC_ASSIGN_OR_RETURN(auto db, forwarding::OpenDb(pillow_store));
  return std::unique_ptr<ForwardingStore>(new forwarding::Store(std::move(db), tasks));
}

}  // namespace commcare
