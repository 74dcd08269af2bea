// The task queue's tables and the statements over them, for SQLite and PostgreSQL alike. On
// SQLite a claim runs in BEGIN IMMEDIATE (one writer at a time, across processes); on
// PostgreSQL it locks the rows it takes with FOR UPDATE SKIP LOCKED, so workers on several
// machines never take the same task and never wait for each other.
#include "tasks/queue.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <thread>

#include "util/time.h"

namespace commcare::tasks {

namespace json = boost::json;
using util::SqlParam;

namespace {

constexpr int kSchemaVersion = 1;

// The tables in both dialects: {id} and {big} are filled in by Dialect.
constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS tasks(
  id {id}, queue TEXT NOT NULL, type TEXT NOT NULL,
  domain TEXT NOT NULL, payload TEXT NOT NULL, priority INTEGER NOT NULL, state TEXT NOT NULL,
  run_at {big} NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
  unique_key TEXT, created_at {big} NOT NULL, started_at {big} NOT NULL DEFAULT 0,
  finished_at {big} NOT NULL DEFAULT 0, lease_until {big} NOT NULL DEFAULT 0,
  worker TEXT NOT NULL DEFAULT '', progress_done {big} NOT NULL DEFAULT 0,
  progress_total {big} NOT NULL DEFAULT 0, progress_message TEXT NOT NULL DEFAULT '',
  result TEXT NOT NULL DEFAULT '', last_error TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks(queue, priority DESC, run_at, id)
  WHERE state IN ('queued','retrying');
CREATE INDEX IF NOT EXISTS tasks_leases ON tasks(lease_until) WHERE state='running';
CREATE UNIQUE INDEX IF NOT EXISTS tasks_unique ON tasks(unique_key)
  WHERE unique_key IS NOT NULL AND state IN ('queued','retrying','running');
CREATE INDEX IF NOT EXISTS tasks_domain ON tasks(domain, id);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_at) WHERE finished_at > 0;
CREATE TABLE IF NOT EXISTS task_schedules(
  name TEXT PRIMARY KEY, cron TEXT NOT NULL, time_zone TEXT NOT NULL, task TEXT NOT NULL,
  missed TEXT NOT NULL, enabled INTEGER NOT NULL, next_run_at {big} NOT NULL,
  last_run_at {big} NOT NULL DEFAULT 0))";

// kSchema for SQLite (postgres false) or PostgreSQL.
std::string Dialect(bool postgres) {
  std::string out = kSchema;
  auto fill = [&](std::string_view key, std::string_view value) {
    for (size_t at; (at = out.find(key)) != std::string::npos;) out.replace(at, key.size(), value);
  };
  fill("{id}", postgres ? "BIGSERIAL PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT");
  fill("{big}", postgres ? "BIGINT" : "INTEGER");
  return out;
}

constexpr const char* kNotifyChannel = "commcare_tasks";

Status CheckSpec(const TaskSpec& s) {
  auto bad = [](std::string_view field, std::string_view why) {
    return Status::InvalidArgument(fmt::format("task: \"{}\" {}", field, why));
  };
  if (s.type.empty() || s.type.size() > 200) return bad("type", "must be 1-200 characters");
  if (s.queue.empty() || s.queue.size() > 100) return bad("queue", "must be 1-100 characters");
  if (s.max_attempts < 1 || s.max_attempts > 100) return bad("max_attempts", "must be 1-100");
  if (s.priority < -1000 || s.priority > 1000) return bad("priority", "must be -1000..1000");
  boost::system::error_code ec;
  (void)json::parse(s.payload, ec);
  if (ec) return bad("payload", "is not JSON: " + ec.message());
  return Status::Ok();
}

}  // namespace

const char* const kColumns =
    "id, queue, type, domain, payload, priority, state, run_at, attempts, max_attempts, "
    "COALESCE(unique_key, ''), created_at, started_at, finished_at, lease_until, worker, "
    "progress_done, progress_total, progress_message, result, last_error, cancel_requested";

TaskInfo TaskFromRow(const util::SqlRows& r, size_t i) {
  TaskInfo t;
  t.id = r.Int(i, 0);
  t.spec.queue = r.Str(i, 1);
  t.spec.type = r.Str(i, 2);
  t.spec.domain = r.Str(i, 3);
  t.spec.payload = r.Str(i, 4);
  t.spec.priority = int(r.Int(i, 5));
  t.state = ParseTaskState(r.Str(i, 6)).value_or(TaskState::kQueued);
  t.spec.run_at = r.Int(i, 7);
  t.attempts = int(r.Int(i, 8));
  t.spec.max_attempts = int(r.Int(i, 9));
  t.spec.unique_key = r.Str(i, 10);
  t.created_at = r.Int(i, 11);
  t.started_at = r.Int(i, 12);
  t.finished_at = r.Int(i, 13);
  t.lease_until = r.Int(i, 14);
  t.worker = r.Str(i, 15);
  t.progress_done = r.Int(i, 16);
  t.progress_total = r.Int(i, 17);
  t.progress_message = r.Str(i, 18);
  t.result = r.Str(i, 19);
  t.last_error = r.Str(i, 20);
  t.cancel_requested = r.Int(i, 21) != 0;
  return t;
}

SqlTaskQueue::SqlTaskQueue(std::unique_ptr<util::SqlDb> db, std::string where)
    : db_(std::move(db)), where_(std::move(where)) {}

SqlTaskQueue::~SqlTaskQueue() = default;

Result<std::unique_ptr<SqlTaskQueue>> SqlTaskQueue::Open(const std::string& where) {
  CC_ASSIGN_OR_RETURN(auto db, util::SqlDb::Open(where, "commcare_tasks"));
  static const std::string sqlite = Dialect(false), postgres = Dialect(true);
  CC_RETURN_IF_ERROR(db->Migrate("tasks", kSchemaVersion, sqlite.c_str(), postgres.c_str()));
  std::unique_ptr<SqlTaskQueue> q(new SqlTaskQueue(std::move(db), where));
  if (q->db_->postgres()) CC_RETURN_IF_ERROR(q->StartListener());
  return q;
}

Result<int64_t> SqlTaskQueue::EnqueueIn(util::SqlDb* db, const TaskSpec& spec) {
  CC_RETURN_IF_ERROR(CheckSpec(spec));
  const int64_t now = util::NowMicros();
  const int64_t run_at = spec.run_at ? spec.run_at : now;
  SqlParam key = spec.unique_key.empty() ? SqlParam(nullptr) : SqlParam(spec.unique_key);
  CC_ASSIGN_OR_RETURN(
      auto r, db->Run("enqueueing a task",
                      "INSERT INTO tasks(queue, type, domain, payload, priority, state, run_at, "
                      "max_attempts, unique_key, created_at) VALUES(?,?,?,?,?,'queued',?,?,?,?) "
                      "ON CONFLICT DO NOTHING RETURNING id",
                      {spec.queue, spec.type, spec.domain, spec.payload, int64_t{spec.priority},
                       run_at, int64_t{spec.max_attempts}, key, now}));
  if (!r.empty()) {
    if (db->postgres())
      CC_RETURN_IF_ERROR(
          db->Run("waking the workers", "SELECT pg_notify(?, ?)", {kNotifyChannel, spec.queue})
              .status());
    return r.Int(0, 0);
  }
  CC_ASSIGN_OR_RETURN(auto held, db->Run("reading the task that holds a unique key",
                                         "SELECT id FROM tasks WHERE unique_key=? AND state IN "
                                         "('queued','retrying','running')",
                                         {spec.unique_key}));
  if (held.empty())
    return Status::Aborted("task: the unique key's holder finished meanwhile; enqueue again");
  return held.Int(0, 0);
}

Result<int64_t> SqlTaskQueue::Enqueue(const TaskSpec& spec) {
  int64_t id = 0;
  {
    std::lock_guard lk(mu_);
    CC_RETURN_IF_ERROR(db_->Transaction("enqueueing a task", 0, [&]() -> Status {
      CC_ASSIGN_OR_RETURN(id, EnqueueIn(db_.get(), spec));
      return Status::Ok();
    }));
  }
  Notify();
  return id;
}

Result<TaskInfo> SqlTaskQueue::Get(int64_t id) {
  static const std::string sql = fmt::format("SELECT {} FROM tasks WHERE id=?", kColumns);
  std::lock_guard lk(mu_);
  SqlParam p[] = {id};
  CC_ASSIGN_OR_RETURN(auto r, db_->Query("reading a task", sql, p));
  if (r.empty()) return Status::NotFound(fmt::format("task {} does not exist", id));
  return TaskFromRow(r, 0);
}

Result<std::vector<TaskInfo>> SqlTaskQueue::List(const TaskFilter& f) {
  std::string sql = fmt::format("SELECT {} FROM tasks WHERE 1=1", kColumns);
  std::vector<SqlParam> params;
  auto add = [&](const char* clause, SqlParam p) {
    sql += clause;
    params.push_back(p);
  };
  if (!f.domain.empty()) add(" AND domain=?", f.domain);
  if (!f.queue.empty()) add(" AND queue=?", f.queue);
  if (!f.type.empty()) add(" AND type=?", f.type);
  if (f.state) add(" AND state=?", TaskStateName(*f.state));
  if (!f.unique_key.empty()) add(" AND unique_key=?", f.unique_key);
  if (f.before_id > 0) add(" AND id<?", f.before_id);
  add(" ORDER BY id DESC LIMIT ?", int64_t{std::clamp(f.limit, 1, 10000)});
  std::lock_guard lk(mu_);
  CC_ASSIGN_OR_RETURN(auto r, db_->Query("listing tasks", sql, params));
  std::vector<TaskInfo> out;
  for (size_t i = 0; i < r.size(); ++i) out.push_back(TaskFromRow(r, i));
  return out;
}

Status SqlTaskQueue::Cancel(int64_t id) {
  const int64_t now = util::NowMicros();
  std::lock_guard lk(mu_);
  return db_->Transaction("cancelling a task", 0, [&]() -> Status {
    CC_ASSIGN_OR_RETURN(auto r,
                        db_->Run("reading a task", "SELECT state FROM tasks WHERE id=?", {id}));
    if (r.empty()) return Status::NotFound(fmt::format("task {} does not exist", id));
    auto state = ParseTaskState(r.Str(0, 0));
    if (state == TaskState::kRunning)
      return db_
          ->Run("asking a task to stop", "UPDATE tasks SET cancel_requested=1 WHERE id=?", {id})
          .status();
    if (state != TaskState::kQueued && state != TaskState::kRetrying)
      return Status::FailedPrecondition(
          fmt::format("task {} has finished ({}); nothing to cancel", id, r.Str(0, 0)));
    return db_
        ->Run("cancelling a task", "UPDATE tasks SET state='cancelled', finished_at=? WHERE id=?",
              {now, id})
        .status();
  });
}

Status SqlTaskQueue::Retry(int64_t id) {
  const int64_t now = util::NowMicros();
  {
    std::lock_guard lk(mu_);
    CC_RETURN_IF_ERROR(db_->Transaction("retrying a task", 0, [&]() -> Status {
      CC_ASSIGN_OR_RETURN(auto r,
                          db_->Run("reading a task", "SELECT state FROM tasks WHERE id=?", {id}));
      if (r.empty()) return Status::NotFound(fmt::format("task {} does not exist", id));
      auto state = ParseTaskState(r.Str(0, 0));
      if (state != TaskState::kDead && state != TaskState::kCancelled)
        return Status::FailedPrecondition(fmt::format(
            "task {} is {}; only a dead or cancelled task can be retried", id, r.Str(0, 0)));
      auto u = db_->Run("queueing a task again",
                        "UPDATE tasks SET state='queued', run_at=?, attempts=0, finished_at=0, "
                        "cancel_requested=0, worker='' WHERE id=?",
                        {now, id});
      if (!u.ok() && u.status().code() == StatusCode::kAlreadyExists)
        return Status::FailedPrecondition(
            fmt::format("task {}: another task with its unique key is queued or running", id));
      return u.status();
    }));
  }
  Notify();
  return Status::Ok();
}

Result<TaskInfo> SqlTaskQueue::Wait(int64_t id, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const uint64_t seen = Wakes();
    CC_ASSIGN_OR_RETURN(TaskInfo t, Get(id));
    if (t.finished_at > 0 || std::chrono::steady_clock::now() >= deadline) return t;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    WaitForWork(std::min(left, std::chrono::milliseconds(100)), seen);
  }
}

Result<std::vector<QueueStats>> SqlTaskQueue::Stats() {
  const int64_t now = util::NowMicros();
  std::lock_guard lk(mu_);
  CC_ASSIGN_OR_RETURN(auto r, db_->Run("counting tasks",
                                       "SELECT queue, state, COUNT(*) FROM tasks "
                                       "GROUP BY queue, state ORDER BY queue"));
  CC_ASSIGN_OR_RETURN(auto due, db_->Run("finding the oldest due task",
                                         "SELECT queue, MIN(run_at) FROM tasks WHERE state IN "
                                         "('queued','retrying') AND run_at<=? GROUP BY queue",
                                         {now}));
  std::map<std::string, QueueStats> by;
  for (size_t i = 0; i < r.size(); ++i) {
    QueueStats& q = by[std::string(r.Str(i, 0))];
    q.queue = r.Str(i, 0);
    const int64_t n = r.Int(i, 2);
    switch (ParseTaskState(r.Str(i, 1)).value_or(TaskState::kQueued)) {
      case TaskState::kQueued:
        q.queued += n;
        break;
      case TaskState::kRunning:
        q.running += n;
        break;
      case TaskState::kRetrying:
        q.retrying += n;
        break;
      case TaskState::kSucceeded:
        q.succeeded += n;
        break;
      case TaskState::kDead:
        q.dead += n;
        break;
      case TaskState::kCancelled:
        q.cancelled += n;
        break;
    }
  }
  for (size_t i = 0; i < due.size(); ++i) {
    QueueStats& q = by[std::string(due.Str(i, 0))];
    q.queue = due.Str(i, 0);
    q.oldest_due_seconds = double(now - due.Int(i, 1)) / 1e6;
  }
  std::vector<QueueStats> out;
  for (auto& [k, v] : by) out.push_back(std::move(v));
  return out;
}

Result<std::vector<TaskInfo>> SqlTaskQueue::Claim(const std::vector<std::string>& queues,
                                                  const std::vector<std::string>& types, int n,
                                                  const std::string& worker, int64_t lease_until) {
  if (types.empty() || n <= 0) return std::vector<TaskInfo>{};
  const int64_t now = util::NowMicros();
  std::vector<SqlParam> params = {now, lease_until, std::string_view(worker), now};
  auto in = [&](const std::vector<std::string>& values) {
    std::string s = "(";
    for (size_t i = 0; i < values.size(); ++i) {
      s += i ? ",?" : "?";
      params.push_back(std::string_view(values[i]));
    }
    return s + ")";
  };
  std::string where = "state IN ('queued','retrying') AND run_at<=?";
  if (!queues.empty()) where += " AND queue IN " + in(queues);
  where += " AND type IN " + in(types);
  params.push_back(int64_t{n});
  const std::string sql = fmt::format(
      "UPDATE tasks SET state='running', attempts=attempts+1, started_at=?, lease_until=?, "
      "worker=?, cancel_requested=0 WHERE id IN (SELECT id FROM tasks WHERE {} ORDER BY "
      "priority DESC, run_at, id LIMIT ?{}) RETURNING {}",
      where, db_->postgres() ? " FOR UPDATE SKIP LOCKED" : "", kColumns);
  std::vector<TaskInfo> out;
  std::lock_guard lk(mu_);
  CC_RETURN_IF_ERROR(db_->Transaction("claiming tasks", 0, [&]() -> Status {
    CC_ASSIGN_OR_RETURN(auto r, db_->Query("claiming tasks", sql, params));
    for (size_t i = 0; i < r.size(); ++i) out.push_back(TaskFromRow(r, i));
    return Status::Ok();
  }));
  std::sort(out.begin(), out.end(), [](const TaskInfo& a, const TaskInfo& b) {
    if (a.spec.priority != b.spec.priority) return a.spec.priority > b.spec.priority;
    return a.id < b.id;
  });
  return out;
}

Status SqlTaskQueue::Finish(const std::vector<Outcome>& outcomes, const std::string& worker) {
  if (outcomes.empty()) return Status::Ok();
  const int64_t now = util::NowMicros();
  {
    std::lock_guard lk(mu_);
    CC_RETURN_IF_ERROR(db_->Transaction("finishing tasks", 0, [&]() -> Status {
      for (const auto& o : outcomes) {
        if (o.progress)
          CC_RETURN_IF_ERROR(db_->Run("writing task progress",
                                      "UPDATE tasks SET progress_done=?, progress_total=?, "
                                      "progress_message=? WHERE id=? AND worker=?",
                                      {o.done, o.total, o.message, o.id, worker})
                                 .status());
        if (o.ok) {
          CC_RETURN_IF_ERROR(
              db_->Run("finishing a task",
                       "UPDATE tasks SET state=CASE WHEN cancel_requested=1 THEN 'cancelled' "
                       "ELSE 'succeeded' END, result=?, finished_at=?, lease_until=0 "
                       "WHERE id=? AND worker=? AND state='running'",
                       {o.result, now, o.id, worker})
                  .status());
          continue;
        }
        CC_RETURN_IF_ERROR(
            db_->Run("failing a task",
                     "UPDATE tasks SET state=CASE WHEN cancel_requested=1 THEN 'cancelled' "
                     "WHEN ?=1 OR attempts>=max_attempts THEN 'dead' ELSE 'retrying' END, "
                     "finished_at=CASE WHEN cancel_requested=1 OR ?=1 OR "
                     "attempts>=max_attempts THEN CAST(? AS BIGINT) ELSE 0 END, run_at=?, "
                     "last_error=?, "
                     "lease_until=0 WHERE id=? AND worker=? AND state='running'",
                     {int64_t{o.permanent}, int64_t{o.permanent}, now, o.retry_at, o.error, o.id,
                      worker})
                .status());
      }
      return Status::Ok();
    }));
  }
  Notify();
  return Status::Ok();
}

Result<std::set<int64_t>> SqlTaskQueue::Heartbeat(const std::vector<Beat>& beats,
                                                  const std::string& worker) {
  std::set<int64_t> cancelled;
  if (beats.empty()) return cancelled;
  std::lock_guard lk(mu_);
  CC_RETURN_IF_ERROR(db_->Transaction("renewing task leases", 0, [&]() -> Status {
    for (const auto& b : beats) {
      util::SqlRows r;
      if (b.progress) {
        CC_ASSIGN_OR_RETURN(r, db_->Run("writing task progress",
                                        "UPDATE tasks SET lease_until=?, progress_done=?, "
                                        "progress_total=?, progress_message=? WHERE id=? AND "
                                        "worker=? AND state='running' RETURNING cancel_requested",
                                        {b.lease_until, b.done, b.total, b.message, b.id, worker}));
      } else {
        CC_ASSIGN_OR_RETURN(r, db_->Run("renewing a task lease",
                                        "UPDATE tasks SET lease_until=? WHERE id=? AND worker=? "
                                        "AND state='running' RETURNING cancel_requested",
                                        {b.lease_until, b.id, worker}));
      }
      if (!r.empty() && r.Int(0, 0) != 0) cancelled.insert(b.id);
    }
    return Status::Ok();
  }));
  return cancelled;
}

Status SqlTaskQueue::Release(const std::vector<int64_t>& ids, const std::string& worker) {
  if (ids.empty()) return Status::Ok();
  {
    std::lock_guard lk(mu_);
    CC_RETURN_IF_ERROR(db_->Transaction("releasing tasks", 0, [&]() -> Status {
      for (int64_t id : ids)
        CC_RETURN_IF_ERROR(db_->Run("releasing a task",
                                    "UPDATE tasks SET state=CASE WHEN attempts>1 THEN 'retrying' "
                                    "ELSE 'queued' END, attempts=attempts-1, lease_until=0, "
                                    "worker='' WHERE id=? AND worker=? AND state='running'",
                                    {id, worker})
                               .status());
      return Status::Ok();
    }));
  }
  Notify();
  return Status::Ok();
}

Result<int64_t> SqlTaskQueue::Rescue() {
  const int64_t now = util::NowMicros();
  std::lock_guard lk(mu_);
  int64_t n = 0;
  CC_RETURN_IF_ERROR(db_->Transaction("rescuing tasks", 0, [&]() -> Status {
    CC_ASSIGN_OR_RETURN(
        auto r, db_->Run("rescuing tasks whose worker stopped",
                         "UPDATE tasks SET state=CASE WHEN attempts>=max_attempts THEN 'dead' "
                         "ELSE 'retrying' END, finished_at=CASE WHEN attempts>=max_attempts "
                         "THEN CAST(? AS BIGINT) ELSE 0 END, run_at=?, lease_until=0, "
                         "last_error='the worker ' || worker || ' stopped renewing its lease' "
                         "WHERE state='running' AND lease_until<?",
                         {now, now, now}));
    n = r.changed;
    return Status::Ok();
  }));
  if (n > 0) Notify();
  return n;
}

Result<int64_t> SqlTaskQueue::Prune(std::chrono::seconds older_than) {
  const int64_t cutoff =
      util::NowMicros() - std::chrono::duration_cast<std::chrono::microseconds>(older_than).count();
  std::lock_guard lk(mu_);
  CC_ASSIGN_OR_RETURN(
      auto r, db_->Run("pruning finished tasks",
                       "DELETE FROM tasks WHERE finished_at>0 AND finished_at<?", {cutoff}));
  return r.changed;
}

uint64_t SqlTaskQueue::Wakes() {
  std::lock_guard lk(wake_mu_);
  return wakes_;
}

void SqlTaskQueue::WaitForWork(std::chrono::milliseconds timeout, uint64_t seen) {
  std::unique_lock lk(wake_mu_);
  wake_.wait_for(lk, timeout, [&] { return wakes_ != seen; });
}

void SqlTaskQueue::Notify() {
  {
    std::lock_guard lk(wake_mu_);
    ++wakes_;
  }
  wake_.notify_all();
}

}  // namespace commcare::tasks
