// Delivery: the forward.deliver task sends one forwarder's due records in record order, holding
// back a document's later records while an earlier one waits (order per case), and records
// each attempt with HQ's states and retry schedule. forward.sweep (every minute, like HQ's
// check_repeaters) enqueues delivery for forwarders whose records came due.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <mutex>
#include <set>

#include "commcare/log.h"
#include "integrations/forwarding/forwarding.h"
#include "util/time.h"

namespace commcare::forwarding {

namespace json = boost::json;
using util::SqlDb;

namespace {

constexpr int64_t kHour = 3600LL * 1'000'000;
constexpr int kPage = 500;
constexpr size_t kFlushEvery = 64;  // outcomes per transaction, at most ...
constexpr auto kFlushAfter = std::chrono::milliseconds(200);  // ... or this old

// One attempt's outcome, written with others in one transaction.
struct Done {
  RepeatRecord rec;
  ForwardAttempt attempt;
  int tries = 0;
  int64_t next_check = 0;
};

bool Open(RecordState s) { return s == RecordState::kPending || s == RecordState::kFailed; }

// A database shared by the handlers of one process (SqlDb: one caller at a time).
class SharedDb {
 public:
  explicit SharedDb(std::string store) : store_(std::move(store)) {}
  template <typename F>
  Status With(F fn) {
    std::lock_guard l(mu_);
    if (!db_) {
      auto db = OpenDb(store_);
      if (!db.ok()) return db.status();
      db_ = std::move(*db);
    }
    Status s = fn(*db_);
    if (s.code() == StatusCode::kUnavailable) db_.reset();  // reconnect next time
    return s;
  }

 private:
  std::string store_;
  std::mutex mu_;
  std::unique_ptr<SqlDb> db_;
};

Status Flush(SharedDb& shared, std::vector<Done>* done) {
  if (done->empty()) return Status::Ok();
  Status s = shared.With([&](SqlDb& db) {
    return db.Transaction("recording delivery attempts", 0, [&]() -> Status {
      for (const Done& d : *done) {
        const auto st = static_cast<int64_t>(static_cast<int>(d.attempt.state));
        CC_RETURN_IF_ERROR(db.Run("recording an attempt",
                                  "UPDATE fwd_records SET state=?, open=?, attempts=attempts+1, "
                                  "tries=?, next_check=?, last_checked=? WHERE id=? AND open=1",
                                  {st, int64_t{Open(d.attempt.state)}, int64_t{d.tries},
                                   d.next_check, d.attempt.at, d.rec.id})
                               .status());
        CC_RETURN_IF_ERROR(
            db.Run("recording an attempt",
                   "INSERT INTO fwd_attempts(record, n, at, state, http_status, "
                   "message, duration_us) VALUES(?,?,?,?,?,?,?) "
                   "ON CONFLICT(record, n) DO NOTHING",
                   {d.rec.id, int64_t{d.rec.attempts + 1}, d.attempt.at, st,
                    int64_t{d.attempt.http_status}, d.attempt.message, d.attempt.duration_us})
                .status());
      }
      return Status::Ok();
    });
  });
  if (s.ok()) done->clear();
  return s;
}

// Sends one record; its outcome. A storage error reading the document is returned as is (the
// task is retried; nothing is recorded).
Result<Done> Attempt(Engine& engine, HttpSender& http, const Forwarder& f, const RepeatRecord& r,
                     std::string_view base_url) {
  Done d{r, {}, r.tries, 0};
  d.attempt.at = util::NowMicros();
  auto payload = BuildPayload(engine, f, r, base_url);
  if (!payload.ok()) {
    const Status& s = payload.status();
    if (s.IsNotFound()) {
      d.attempt.state = RecordState::kEmpty;
    } else if (s.code() == StatusCode::kInvalidArgument) {
      d.attempt.state = RecordState::kInvalidPayload;
    } else {
      return s;
    }
    d.attempt.message = s.message();
    return d;
  }
  HttpResult h = http.Post(f, *payload);
  d.attempt.http_status = h.status;
  d.attempt.duration_us = h.duration_us;
  d.attempt.message = h.status ? fmt::format("{}: {}", h.status, h.excerpt) : h.excerpt;
  if (h.status >= 200 && h.status < 300) {
    d.attempt.state = RecordState::kSucceeded;
    return d;
  }
  d.tries = r.tries + 1;
  const int64_t now = util::NowMicros();
  if (d.tries >= f.max_attempts) {
    d.attempt.state = RecordState::kCancelled;
    d.attempt.message += fmt::format(" (attempt {} of {}: cancelled)", d.tries, f.max_attempts);
  } else {
    d.attempt.state = RecordState::kFailed;
    d.next_check = now + RetryWaitMicros(now, r.last_checked);
  }
  return d;
}

struct RunStats {
  int64_t succeeded = 0, failed = 0, cancelled = 0, empty = 0;
  std::string first_error;
};

// One pass over the forwarder's open records; how many were attempted.
Result<int64_t> Pass(SharedDb& shared, Engine& engine, HttpSender& http, const Forwarder& f,
                     std::string_view base_url, TaskContext& c, RunStats* stats) {
  std::set<std::string> held;  // documents with an earlier record still waiting
  std::vector<Done> done;
  auto first_unwritten = std::chrono::steady_clock::now();
  int64_t after = 0, attempted = 0;
  while (!c.Cancelled()) {
    util::SqlRows rows;
    CC_RETURN_IF_ERROR(shared.With([&](SqlDb& db) -> Status {
      CC_ASSIGN_OR_RETURN(rows, db.Query("reading due records",
                                         fmt::format("SELECT {}, order_key FROM fwd_records "
                                                     "WHERE forwarder=? AND open=1 AND id>? "
                                                     "ORDER BY id LIMIT {}",
                                                     kRecordColumns, kPage),
                                         std::vector<util::SqlParam>{f.id, after}));
      return Status::Ok();
    }));
    const int64_t now = util::NowMicros();
    for (size_t i = 0; i < rows.size() && !c.Cancelled(); ++i) {
      RepeatRecord r = RecordFromRow(rows, i);
      after = r.id;
      std::string key(rows.Str(i, 12));
      if (held.count(key)) continue;
      if (r.next_check > now) {
        held.insert(std::move(key));
        continue;
      }
      CC_ASSIGN_OR_RETURN(Done d, Attempt(engine, http, f, r, base_url));
      ++attempted;
      switch (d.attempt.state) {
        case RecordState::kSucceeded:
          ++stats->succeeded;
          break;
        case RecordState::kFailed:
          ++stats->failed, held.insert(key);
          break;
        case RecordState::kCancelled:
          ++stats->cancelled;
          break;
        default:
          ++stats->empty;
      }
      if (d.attempt.state != RecordState::kSucceeded && stats->first_error.empty())
        stats->first_error = d.attempt.message;
      if (done.empty()) first_unwritten = std::chrono::steady_clock::now();
      done.push_back(std::move(d));
      if (done.size() >= kFlushEvery ||
          std::chrono::steady_clock::now() - first_unwritten >= kFlushAfter)
        CC_RETURN_IF_ERROR(Flush(shared, &done));
    }
    CC_RETURN_IF_ERROR(Flush(shared, &done));
    c.Progress(stats->succeeded + stats->failed + stats->cancelled + stats->empty, 0, "records");
    if (rows.size() < static_cast<size_t>(kPage)) break;
  }
  return attempted;
}

Result<std::string> Deliver(SharedDb& shared, Engine* engine, std::string_view base_url,
                            TaskContext& c) {
  boost::system::error_code ec;
  json::value v = json::parse(c.payload(), ec);
  const json::value* id = !ec && v.is_object() ? v.get_object().if_contains("forwarder") : nullptr;
  if (!id || !id->is_string())
    return Status::InvalidArgument("forward.deliver: payload must be {\"forwarder\": ID}");
  const std::string fid(id->get_string());
  thread_local HttpSender http;  // keeps connections alive across runs of this worker thread
  RunStats stats;
  while (!c.Cancelled()) {
    Forwarder f;
    Status s = shared.With([&](SqlDb& db) -> Status {
      CC_ASSIGN_OR_RETURN(f, LoadForwarder(db, fid));
      return Status::Ok();
    });
    if (s.IsNotFound()) return std::string("{\"forwarder\":\"deleted\"}");
    CC_RETURN_IF_ERROR(s);
    if (f.paused) return std::string("{\"forwarder\":\"paused\"}");
    CC_ASSIGN_OR_RETURN(int64_t n, Pass(shared, *engine, http, f, base_url, c, &stats));
    if (n == 0) break;  // nothing due now; new records enqueue this task again
  }
  if (stats.failed + stats.cancelled > 0)
    Log(LogLevel::kWarning,
        fmt::format("forwarding: {} record(s) failed and {} were cancelled for forwarder {}; "
                    "first error: {}",
                    stats.failed, stats.cancelled, fid, stats.first_error),
        {{"component", "forwarding"},
         {"domain", c.task().spec.domain},
         {"next",
          "failed records are tried again at their next_check (3 x the time since the "
          "last try, 1 h to 7 days); cancelled ones only when resent"}});
  json::object out{{"succeeded", stats.succeeded},
                   {"failed", stats.failed},
                   {"cancelled", stats.cancelled},
                   {"empty", stats.empty}};
  return json::serialize(out);
}

}  // namespace

int64_t RetryWaitMicros(int64_t now, int64_t last_checked) {
  const int64_t lo = kHour, hi = 7 * 24 * kHour;
  if (last_checked <= 0 || last_checked > now) return lo;
  return std::clamp<int64_t>(3 * (now - last_checked), lo, hi);
}

TaskHandler DeliverHandler(Engine* engine, std::string pillow_store, std::string base_url) {
  auto shared = std::make_shared<SharedDb>(std::move(pillow_store));
  return
      [shared, engine, base_url](TaskContext& c) { return Deliver(*shared, engine, base_url, c); };
}

TaskHandler SweepHandler(std::string pillow_store, TaskQueue* tasks) {
  auto shared = std::make_shared<SharedDb>(std::move(pillow_store));
  return [shared, tasks](TaskContext&) -> Result<std::string> {
    std::vector<Forwarder> due;
    CC_RETURN_IF_ERROR(shared->With([&](SqlDb& db) -> Status {
      CC_ASSIGN_OR_RETURN(auto all, ActiveForwarders(db, /*include_paused=*/false));
      for (auto& f : all) {
        CC_ASSIGN_OR_RETURN(auto r, db.Run("finding due records",
                                           "SELECT 1 FROM fwd_records WHERE forwarder=? AND "
                                           "open=1 AND next_check<=? LIMIT 1",
                                           {f.id, util::NowMicros()}));
        if (!r.empty()) due.push_back(std::move(f));
      }
      return Status::Ok();
    }));
    for (const auto& f : due) CC_RETURN_IF_ERROR(EnqueueDelivery(tasks, f.domain, f.id));
    return json::serialize(json::object{{"enqueued", static_cast<int64_t>(due.size())}});
  };
}

Status EnsureSweepSchedule(TaskQueue* tasks) {
  CC_ASSIGN_OR_RETURN(auto all, tasks->Schedules());
  for (const auto& s : all)
    if (s.name == kSweepSchedule) return Status::Ok();
  Schedule s;
  s.name = kSweepSchedule;
  s.cron = "* * * * *";
  s.task.type = kSweepTask;
  s.task.queue = "default";
  s.task.max_attempts = 1;
  s.missed = Schedule::Missed::kSkip;
  return tasks->PutSchedule(s);
}

}  // namespace commcare::forwarding
