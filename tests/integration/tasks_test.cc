// The task queue: cron lines and time zones, the queue's life cycle (retries, dead letters,
// unique keys, cancel, rescue of a dead worker's task), schedules firing once, enqueueing in
// the caller's transaction, and PostgreSQL with two pools and LISTEN/NOTIFY wake-ups.
#include "commcare/tasks.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "../private_postgres.h"
#include "../test_util.h"
#include "tasks/queue.h"
#include "util/sql_db.h"
#include "util/time.h"

using namespace commcare;
using namespace std::chrono_literals;

namespace {

int64_t At(const char* iso) {
  int64_t t = 0;
  REQUIRE(util::ParseIsoTime(iso, &t));
  return t;
}

std::string Next(const char* cron, const char* tz, const char* after) {
  auto r = NextCronTime(cron, tz, At(after));
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return util::FormatIsoTime(*r);
}

std::unique_ptr<tasks::SqlTaskQueue> OpenQueue(const std::string& where = "") {
  auto q = tasks::SqlTaskQueue::Open(where.empty() ? cctest::FreshTempDir("cc-tasks", "q") + ".db"
                                                   : where);
  REQUIRE_MESSAGE(q.ok(), q.status().ToString());
  return std::move(*q);
}

TaskSpec Spec(std::string type, std::string payload = "{}") {
  TaskSpec s;
  s.type = std::move(type);
  s.payload = std::move(payload);
  return s;
}

TaskInfo WaitDone(TaskQueue* q, int64_t id) {
  auto t = q->Wait(id, 20s);
  REQUIRE(t.ok());
  REQUIRE_MESSAGE(t->finished_at > 0, t->ToJson());
  return *t;
}

}  // namespace

TEST_CASE("Cron: next firings in UTC with lists ranges steps names and macros") {
  CHECK(Next("*/15 * * * *", "UTC", "2026-12-06T10:07:00Z") == "2026-12-06T10:15:00.000000Z");
  CHECK(Next("0 9 * * mon-fri", "UTC", "2026-12-05T12:00:00Z") == "2026-12-07T09:00:00.000000Z");
  CHECK(Next("@daily", "UTC", "2026-12-06T00:00:00Z") == "2026-12-07T00:00:00.000000Z");
  CHECK(Next("30 6 1,15 jan *", "UTC", "2026-12-06T00:00:00Z") == "2027-01-01T06:30:00.000000Z");
  CHECK(Next("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z") == "2028-02-29T00:00:00.000000Z");
  // Both day fields restricted: either matches (Vixie): the 13th or a Friday.
  CHECK(Next("0 0 13 * 5", "UTC", "2026-12-06T00:00:00Z") == "2026-12-11T00:00:00.000000Z");
}

TEST_CASE("Cron: a bad line or zone is refused with the field named") {
  auto err = [](const char* cron, const char* tz = "UTC") {
    auto s = CheckSchedule(cron, tz);
    REQUIRE(s.code() == StatusCode::kInvalidArgument);
    return s.message();
  };
  CHECK(err("0 25 * * *").find("field 2 (hour)") != std::string::npos);
  CHECK(err("0 0 * * funday").find("day of week") != std::string::npos);
  CHECK(err("* * *").find("3 fields") != std::string::npos);
  CHECK(err("*/0 * * * *").find("bad step") != std::string::npos);
  CHECK(err("@sometimes").find("@sometimes") != std::string::npos);
  CHECK(err("0 0 31 2 *").find("never fires") != std::string::npos);
  CHECK(err("0 0 * * *", "Mars/Olympus").find("Mars/Olympus") != std::string::npos);
}

TEST_CASE("Cron: DST — a time in the spring gap fires when it ends and a repeated one fires once") {
  // New York springs forward on 2026-03-08 at 02:00 EST (07:00Z) to 03:00 EDT.
  CHECK(Next("30 2 * * *", "America/New_York", "2026-03-08T00:00:00Z") ==
        "2026-03-08T07:00:00.000000Z");
  CHECK(Next("30 2 * * *", "America/New_York", "2026-03-08T07:00:00Z") ==
        "2026-03-09T06:30:00.000000Z");
  // It falls back on 2026-11-01 at 02:00 EDT (06:00Z) to 01:00 EST: 01:30 happens twice.
  CHECK(Next("30 1 * * *", "America/New_York", "2026-11-01T00:00:00Z") ==
        "2026-11-01T05:30:00.000000Z");
  CHECK(Next("30 1 * * *", "America/New_York", "2026-11-01T05:30:00Z") ==
        "2026-11-02T06:30:00.000000Z");
  // A daily 09:00 in Nairobi (UTC+3, no DST).
  CHECK(Next("0 9 * * *", "Africa/Nairobi", "2026-12-06T07:00:00Z") ==
        "2026-12-07T06:00:00.000000Z");
}

TEST_CASE("Tasks: run with result and progress then retried with backoff then dead-lettered") {
  auto q = OpenQueue();
  auto w = NewTaskWorkers(q.get(), {.queues = {}, .workers = 2, .poll = 50ms});
  std::atomic<int> flaky_calls{0};
  w->Register("echo", [](TaskContext& c) -> Result<std::string> {
    c.Progress(1, 1, "done");
    return std::string(c.payload());
  });
  TaskTypeOptions fast;
  fast.backoff_base = 20ms;
  w->Register(
      "flaky",
      [&](TaskContext&) -> Result<std::string> {
        if (++flaky_calls < 3) return Status::Unavailable("not yet");
        return std::string("{\"ok\":true}");
      },
      fast);
  w->Register(
      "broken", [](TaskContext&) -> Result<std::string> { return Status::Internal("boom"); }, fast);
  w->Register("bad", [](TaskContext&) -> Result<std::string> {
    return Status::InvalidArgument("no such export");
  });
  REQUIRE(w->Start().ok());

  auto echo = q->Enqueue(Spec("echo", "{\"n\":7}"));
  REQUIRE(echo.ok());
  TaskInfo t = WaitDone(q.get(), *echo);
  CHECK(t.state == TaskState::kSucceeded);
  CHECK(t.result == "{\"n\":7}");
  CHECK(t.attempts == 1);

  TaskSpec flaky = Spec("flaky");
  t = WaitDone(q.get(), *q->Enqueue(flaky));
  CHECK(t.state == TaskState::kSucceeded);
  CHECK(t.attempts == 3);
  CHECK(t.last_error.find("not yet") != std::string::npos);

  TaskSpec broken = Spec("broken");
  broken.max_attempts = 2;
  t = WaitDone(q.get(), *q->Enqueue(broken));
  CHECK(t.state == TaskState::kDead);
  CHECK(t.attempts == 2);
  CHECK(t.last_error == "Internal: boom");

  t = WaitDone(q.get(), *q->Enqueue(Spec("bad")));
  CHECK(t.state == TaskState::kDead);
  CHECK(t.attempts == 1);  // a permanent error is not retried

  // A dead task queued again runs again (and dies again, here).
  REQUIRE(q->Retry(t.id).ok());
  t = WaitDone(q.get(), t.id);
  CHECK(t.attempts == 1);
  CHECK(q->Retry(*echo).code() == StatusCode::kFailedPrecondition);  // it succeeded

  auto stats = q->Stats();
  REQUIRE(stats.ok());
  REQUIRE(stats->size() == 1);
  CHECK(stats->at(0).succeeded == 2);
  CHECK(stats->at(0).dead == 2);
  w->Stop();
  auto runs = w->RunStats();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].failed == 2 + 2 + 2);  // flaky twice, broken twice, bad twice
}

TEST_CASE("Tasks: bad specs are refused and a unique key holds one unfinished task") {
  auto q = OpenQueue();
  CHECK(q->Enqueue(Spec("")).status().message().find("\"type\"") != std::string::npos);
  CHECK(q->Enqueue(Spec("x", "{oops")).status().message().find("payload") != std::string::npos);
  TaskSpec s = Spec("x");
  s.max_attempts = 0;
  CHECK(q->Enqueue(s).status().code() == StatusCode::kInvalidArgument);

  TaskSpec u = Spec("export");
  u.unique_key = "export:clinic:daily";
  auto a = q->Enqueue(u), b = q->Enqueue(u);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a == *b);
  REQUIRE(q->Cancel(*a).ok());
  CHECK(q->Get(*a)->state == TaskState::kCancelled);
  CHECK(q->Cancel(*a).code() == StatusCode::kFailedPrecondition);
  auto c = q->Enqueue(u);  // the key is free again
  REQUIRE(c.ok());
  CHECK(*c != *a);
  CHECK(q->Get(999999).status().code() == StatusCode::kNotFound);
}

TEST_CASE("Tasks: a running task sees its cancellation and ends cancelled") {
  auto q = OpenQueue();
  TaskTypeOptions short_lease;
  short_lease.lease = 400ms;  // heartbeats every 100 ms carry the cancel back
  auto w = NewTaskWorkers(q.get(), {.workers = 1, .poll = 50ms});
  std::atomic<bool> started{false};
  w->Register(
      "long",
      [&](TaskContext& c) -> Result<std::string> {
        started = true;
        for (int i = 0; i < 200 && !c.Cancelled(); ++i) std::this_thread::sleep_for(10ms);
        return std::string(c.Cancelled() ? "\"stopped\"" : "\"ran out\"");
      },
      short_lease);
  REQUIRE(w->Start().ok());
  auto id = q->Enqueue(Spec("long"));
  REQUIRE(id.ok());
  for (int i = 0; i < 200 && !started; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(started);
  REQUIRE(q->Cancel(*id).ok());
  TaskInfo t = WaitDone(q.get(), *id);
  CHECK(t.state == TaskState::kCancelled);
  CHECK(t.result == "\"stopped\"");
}

TEST_CASE("Tasks: a task interrupted by shutdown is handed back whole and runs again") {
  auto q = OpenQueue();
  TaskSpec s = Spec("long");
  s.max_attempts = 1;  // were the interruption an attempt, the task would be dead now
  auto id = q->Enqueue(s);
  REQUIRE(id.ok());
  std::atomic<bool> started{false};
  {
    auto w = NewTaskWorkers(q.get(), {.workers = 1, .poll = 50ms});
    w->Register("long", [&](TaskContext& c) -> Result<std::string> {
      started = true;
      while (!c.Cancelled()) std::this_thread::sleep_for(5ms);
      return Status::Aborted("stopped half way");
    });
    REQUIRE(w->Start().ok());
    for (int i = 0; i < 400 && !started; ++i) std::this_thread::sleep_for(10ms);
    REQUIRE(started);
    w->Stop(100ms);  // the grace runs out: Cancelled() turns true and the handler gives up
  }
  auto t = q->Get(*id);
  REQUIRE(t.ok());
  CHECK(t->state == TaskState::kQueued);
  CHECK(t->attempts == 0);
  CHECK(t->finished_at == 0);
  auto w = NewTaskWorkers(q.get(), {.workers = 1, .poll = 50ms});
  w->Register("long", [](TaskContext& c) -> Result<std::string> {
    return fmt::format("{}", c.task().attempts);
  });
  REQUIRE(w->Start().ok());
  TaskInfo done = WaitDone(q.get(), *id);
  CHECK(done.state == TaskState::kSucceeded);
  CHECK(done.result == "1");  // one attempt counted: the one that ran to the end
  w->Stop();
}

TEST_CASE("Tasks: a task whose worker died (lease passed) runs again elsewhere") {
  auto q = OpenQueue();
  auto id = q->Enqueue(Spec("job"));
  REQUIRE(id.ok());
  // A worker that claims it and dies: its lease is already over.
  auto claimed = q->Claim({}, {"job"}, 10, "ghost:1:1", util::NowMicros() - 1);
  REQUIRE(claimed.ok());
  REQUIRE(claimed->size() == 1);
  auto w = NewTaskWorkers(q.get(), {.workers = 1, .poll = 50ms});
  w->Register("job", [](TaskContext& c) -> Result<std::string> {
    return fmt::format("{}", c.task().attempts);
  });
  REQUIRE(w->Start().ok());
  TaskInfo t = WaitDone(q.get(), *id);
  CHECK(t.state == TaskState::kSucceeded);
  CHECK(t.attempts == 2);
  CHECK(t.last_error.find("ghost:1:1 stopped renewing its lease") != std::string::npos);
  // The ghost's late outcome is ignored: the task is no longer its own.
  REQUIRE(q->Finish({{.id = *id, .ok = false, .error = "late"}}, "ghost:1:1").ok());
  CHECK(q->Get(*id)->state == TaskState::kSucceeded);
}

TEST_CASE("Tasks: a schedule fires once per period across pools and a missed one by its policy") {
  auto path = cctest::FreshTempDir("cc-tasks", "sched") + ".db";
  auto q1 = OpenQueue(path), q2 = OpenQueue(path);  // two processes' views of one database
  Schedule s;
  s.name = "nightly";
  s.cron = "0 2 * * *";
  s.time_zone = "Africa/Nairobi";
  s.task = Spec("report", "{\"r\":1}");
  REQUIRE(q1->PutSchedule(s).ok());
  auto all = q2->Schedules();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 1);
  CHECK(all->at(0).next_run_at > util::NowMicros());
  // Due now: both look at once; one firing.
  REQUIRE(q1->SetNextRun("nightly", util::NowMicros() - 1000).ok());
  std::atomic<int> fired{0};
  std::thread a([&] { fired += *q1->FireSchedules(); });
  std::thread b([&] { fired += *q2->FireSchedules(); });
  a.join();
  b.join();
  CHECK(fired == 1);
  CHECK(q1->List({.type = "report"})->size() == 1);
  CHECK(*q1->FireSchedules() == 0);
  // Missed by a day: "once" fires one catch-up; "skip" waits for the next time.
  REQUIRE(q1->SetNextRun("nightly", util::NowMicros() - 86400'000'000LL).ok());
  CHECK(*q1->FireSchedules() == 1);
  s.missed = Schedule::Missed::kSkip;
  REQUIRE(q1->PutSchedule(s).ok());
  REQUIRE(q1->SetNextRun("nightly", util::NowMicros() - 86400'000'000LL).ok());
  CHECK(*q1->FireSchedules() == 0);
  CHECK(q1->List({.type = "report"})->size() == 2);
  CHECK(q1->Schedules()->at(0).next_run_at > util::NowMicros());
  s.cron = "61 * * * *";
  CHECK(q1->PutSchedule(s).code() == StatusCode::kInvalidArgument);
  CHECK(q1->DeleteSchedule("nightly").ok());
  CHECK(q1->DeleteSchedule("nightly").code() == StatusCode::kNotFound);
}

TEST_CASE("Tasks: enqueued in the caller's transaction and gone with its rollback") {
  auto path = cctest::FreshTempDir("cc-tasks", "tx") + ".db";
  auto q = OpenQueue(path);
  auto db = util::SqlDb::Open(path, "commcare_tasks");
  REQUIRE(db.ok());
  REQUIRE((*db)->Exec("a table of the caller's", "CREATE TABLE forwarded(id TEXT)").ok());
  Status s = (*db)->Transaction("a write that fails", 0, [&]() -> Status {
    CC_RETURN_IF_ERROR((*db)->Run("a row", "INSERT INTO forwarded VALUES('f1')").status());
    CC_RETURN_IF_ERROR(tasks::SqlTaskQueue::EnqueueIn(db->get(), Spec("forward")).status());
    return Status::Aborted("the caller's write failed");
  });
  CHECK(s.IsAborted());
  CHECK(q->List({})->empty());
  s = (*db)->Transaction("a write that commits", 0, [&]() -> Status {
    CC_RETURN_IF_ERROR((*db)->Run("a row", "INSERT INTO forwarded VALUES('f2')").status());
    return tasks::SqlTaskQueue::EnqueueIn(db->get(), Spec("forward")).status();
  });
  REQUIRE(s.ok());
  CHECK(q->List({})->size() == 1);
}

TEST_CASE(
    "Tasks on PostgreSQL: two pools share the work with each task once and NOTIFY wakes them") {
  auto dsns = cctest::NewPostgresDatabases(1);
  if (dsns.empty()) return;
  const std::string where = "postgres:" + dsns[0];
  auto q1 = OpenQueue(where), q2 = OpenQueue(where);
  std::mutex mu;
  std::multiset<int64_t> ran;
  auto handler = [&](TaskContext& c) -> Result<std::string> {
    std::lock_guard lk(mu);
    ran.insert(c.task().id);
    return std::string();
  };
  // Polls far apart: only wake-ups make this quick.
  TaskWorkersOptions o{.queues = {}, .workers = 2, .poll = 30s, .run_schedules = false};
  auto w1 = NewTaskWorkers(q1.get(), o), w2 = NewTaskWorkers(q2.get(), o);
  w1->Register("n", handler);
  w2->Register("n", handler);
  REQUIRE(w1->Start().ok());
  REQUIRE(w2->Start().ok());
  std::this_thread::sleep_for(200ms);  // both asleep on their poll
  auto producer = OpenQueue(where);    // a third process enqueues
  std::vector<int64_t> ids;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) ids.push_back(*producer->Enqueue(Spec("n")));
  for (int64_t id : ids) CHECK(WaitDone(producer.get(), id).state == TaskState::kSucceeded);
  CHECK(std::chrono::steady_clock::now() - start < 15s);
  w1->Stop();
  w2->Stop();
  CHECK(ran.size() == 200);
  CHECK(std::set<int64_t>(ran.begin(), ran.end()).size() == 200);
  CHECK(w1->Finished() > 0);
  CHECK(w2->Finished() > 0);
}

TEST_CASE("Tasks on PostgreSQL: a server restart under two pools loses no task") {
  if (cctest::TestServer("COMMCARE_TEST_PG").empty()) return;  // this machine runs PostgreSQL
  cctest::PrivatePostgres pg;
  const std::string where = "postgres:" + pg.dsn;
  auto q1 = OpenQueue(where), q2 = OpenQueue(where);
  std::mutex mu;
  std::set<int64_t> ran;
  std::atomic<int> runs{0};
  TaskTypeOptions short_lease;
  short_lease.lease = 1000ms;
  short_lease.backoff_base = 50ms;
  auto handler = [&](TaskContext& c) -> Result<std::string> {
    std::this_thread::sleep_for(5ms);
    std::lock_guard lk(mu);
    ran.insert(c.task().id);
    ++runs;
    return std::string();
  };
  TaskWorkersOptions o{.queues = {}, .workers = 2, .poll = 100ms, .run_schedules = false};
  auto w1 = NewTaskWorkers(q1.get(), o), w2 = NewTaskWorkers(q2.get(), o);
  w1->Register("n", handler, short_lease);
  w2->Register("n", handler, short_lease);
  std::vector<int64_t> ids;
  TaskSpec s = Spec("n");
  s.max_attempts = 100;
  for (int i = 0; i < 300; ++i) ids.push_back(*q1->Enqueue(s));
  REQUIRE(w1->Start().ok());
  REQUIRE(w2->Start().ok());
  while (runs < 60) std::this_thread::sleep_for(5ms);
  pg.Stop();  // mid-load: claims, finishes and heartbeats fail and are retried
  std::this_thread::sleep_for(1500ms);
  pg.Start();
  for (int64_t id : ids) {
    auto t = q1->Wait(id, 60s);
    for (int i = 0; i < 50 && !t.ok(); ++i) {  // the first call after the restart may fail
      std::this_thread::sleep_for(100ms);
      t = q1->Wait(id, 60s);
    }
    REQUIRE(t.ok());
    CHECK_MESSAGE(t->state == TaskState::kSucceeded, t->ToJson());
  }
  w1->Stop();
  w2->Stop();
  CHECK(ran.size() == 300);  // every task ran; a few may have run twice (at least once)
  CHECK(runs >= 300);
}
