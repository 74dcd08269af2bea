// The `commcare` tool's task commands: tasks list|show|enqueue|cancel|retry|stats|run and
// tasks schedules|schedule set|schedule delete. Output is JSON lines.
#include <commcare/tasks.h>
#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "common.h"
#include "util/time.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

std::atomic<bool> g_stop_tasks{false};
extern "C" void OnTaskStopSignal(int) { g_stop_tasks.store(true); }

// The host's task queue, for a command that runs beside a server.
struct Queue {
  std::unique_ptr<Host> host;
  TaskQueue* q = nullptr;
};
Result<Queue> OpenQueue(const Args& a, Access access = Access::kWriterOrReader) {
  Queue out;
  CC_ASSIGN_OR_RETURN(out.host, OpenHost(a, access));
  CC_ASSIGN_OR_RETURN(out.q, out.host->Tasks());
  return out;
}

bool TaskId(const Args& a, int64_t* id) {
  return !a.pos.empty() && ParseInt(a.pos[0], id) && *id > 0;
}

int CmdList(const Args& a) {
  TaskFilter f;
  f.domain = a.Get("--domain");
  f.queue = a.Get("--queue");
  f.type = a.Get("--type");
  if (a.Has("--state")) f.state = ParseTaskState(a.Get("--state"));
  int64_t n = 100;
  if (a.Has("--limit")) ParseInt(a.Get("--limit"), &n);
  if (a.Has("--before")) ParseInt(a.Get("--before"), &f.before_id);
  f.limit = int(n);
  auto q = OpenQueue(a);
  if (!q.ok()) return FailStatus(q.status());
  auto list = q->q->List(f);
  if (!list.ok()) return FailStatus(list.status());
  for (const auto& t : *list) std::cout << t.ToJson() << "\n";
  std::cout.flush();
  return kOk;
}

int CmdShow(const Args& a, const std::string& verb) {
  int64_t id = 0;
  if (!TaskId(a, &id)) return Fail("give the task's id (a positive number)", kUsage);
  auto q = OpenQueue(a);
  if (!q.ok()) return FailStatus(q.status());
  if (verb == "cancel" || verb == "retry") {
    Status s = verb == "cancel" ? q->q->Cancel(id) : q->q->Retry(id);
    if (!s.ok()) return FailStatus(s);
  }
  auto t = q->q->Get(id);
  if (!t.ok()) return FailStatus(t.status());
  std::cout << t->ToJson() << std::endl;
  return kOk;
}

int CmdEnqueue(const Args& a) {
  TaskSpec s;
  s.type = a.Get("--type");
  s.payload = a.Get("--payload", "{}");
  s.queue = a.Get("--queue", "default");
  s.domain = a.Get("--domain");
  s.unique_key = a.Get("--unique-key");
  int64_t v = 0;
  if (a.Has("--priority") && ParseInt(a.Get("--priority"), &v)) s.priority = int(v);
  if (a.Has("--max-attempts") && ParseInt(a.Get("--max-attempts"), &v)) s.max_attempts = int(v);
  if (a.Has("--run-at") && !util::ParseIsoTime(a.Get("--run-at"), &s.run_at))
    return Fail("--run-at must be an ISO 8601 time, e.g. 2026-12-06T09:00:00Z", kUsage);
  auto q = OpenQueue(a);
  if (!q.ok()) return FailStatus(q.status());
  auto id = q->q->Enqueue(s);
  if (!id.ok()) return FailStatus(id.status());
  int64_t wait = 0;
  if (a.Has("--wait") && ParseInt(a.Get("--wait"), &wait) && wait > 0) {
    auto t = q->q->Wait(*id, std::chrono::seconds(wait));
    if (!t.ok()) return FailStatus(t.status());
    std::cout << t->ToJson() << std::endl;
    if (t->finished_at == 0) return Fail(fmt::format("task {} did not finish in {} s", *id, wait));
    return t->state == TaskState::kSucceeded ? kOk : kFailed;
  }
  std::cout << json::serialize(json::object{{"id", *id}}) << std::endl;
  return kOk;
}

int CmdStats(const Args& a) {
  auto q = OpenQueue(a);
  if (!q.ok()) return FailStatus(q.status());
  auto st = q->q->Stats();
  if (!st.ok()) return FailStatus(st.status());
  for (const auto& s : *st) {
    std::string line = json::serialize(json::object{{"queue", s.queue},
                                                    {"queued", s.queued},
                                                    {"running", s.running},
                                                    {"retrying", s.retrying},
                                                    {"succeeded", s.succeeded},
                                                    {"dead", s.dead},
                                                    {"cancelled", s.cancelled}});
    line.pop_back();  // a plain decimal, not Boost.JSON's 0E0
    std::cout << line << fmt::format(",\"oldest_due_seconds\":{:.3f}}}\n", s.oldest_due_seconds);
  }
  std::cout.flush();
  return kOk;
}

int CmdSchedules(const Args& a) {
  auto q = OpenQueue(a);
  if (!q.ok()) return FailStatus(q.status());
  auto all = q->q->Schedules();
  if (!all.ok()) return FailStatus(all.status());
  for (const auto& s : *all) std::cout << s.ToJson() << "\n";
  std::cout.flush();
  return kOk;
}

int CmdScheduleSet(const Args& a) {
  Schedule s;
  s.name = a.Get("--name");
  s.cron = a.Get("--cron");
  s.time_zone = a.Get("--tz", "UTC");
  s.task.type = a.Get("--type");
  s.task.payload = a.Get("--payload", "{}");
  s.task.queue = a.Get("--queue", "default");
  s.task.domain = a.Get("--domain");
  s.missed =
      a.Get("--missed", "once") == "skip" ? Schedule::Missed::kSkip : Schedule::Missed::kOnce;
  s.enabled = !a.Has("--disabled");
  if (Status c = CheckSchedule(s.cron, s.time_zone); !c.ok()) return Fail(c.message(), kUsage);
  auto q = OpenQueue(a);
  if (!q.ok()) return FailStatus(q.status());
  if (Status st = q->q->PutSchedule(s); !st.ok()) return FailStatus(st);
  for (const auto& x : *q->q->Schedules())
    if (x.name == s.name) std::cout << x.ToJson() << std::endl;
  return kOk;
}

int CmdScheduleDelete(const Args& a) {
  auto q = OpenQueue(a);
  if (!q.ok()) return FailStatus(q.status());
  if (Status st = q->q->DeleteSchedule(a.Get("--name")); !st.ok()) return FailStatus(st);
  std::cout << json::serialize(json::object{{"deleted", a.Get("--name")}}) << std::endl;
  return kOk;
}

// --until-idle beside a server: idle too when nothing runs and every due task is of a type this
// pool leaves to others (the kinds that need the writer).
bool OnlyOthersDue(TaskQueue* q, const TaskWorkers& w, const std::vector<std::string>& queues) {
  const int64_t now = util::NowMicros();
  for (TaskState s : {TaskState::kRunning, TaskState::kQueued, TaskState::kRetrying}) {
    TaskFilter f;
    f.state = s;
    f.limit = 1000;
    auto tasks = q->List(f);
    if (!tasks.ok()) return false;
    for (const auto& t : *tasks) {
      const bool mine =
          queues.empty() || std::find(queues.begin(), queues.end(), t.spec.queue) != queues.end();
      const bool due = t.spec.run_at <= now;
      if (mine && (s == TaskState::kRunning || (due && w.Handles(t.spec.type)))) return false;
    }
  }
  return true;
}

int CmdRun(const Args& a) {
  TaskWorkersOptions o;
  o.queues = SplitCommas(a.Get("--queues"));
  int64_t n = 2;
  if (a.Has("--workers")) ParseInt(a.Get("--workers"), &n);
  o.workers = int(n);
  if (a.Has("--prefetch") && ParseInt(a.Get("--prefetch"), &n)) o.prefetch = int(n);
  // The writer when no server holds it, so that every kind runs; beside a server, a reader that
  // leaves the kinds that submit forms (rules, imports) to the server's workers.
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  if ((*host)->read_only())
    std::cerr << "a server holds the writer's lock: rule.run, rule.case, import.cases and "
                 "import.bulk_edit are left to its workers"
              << std::endl;
  auto w = (*host)->NewTaskWorkers(o);
  if (!w.ok()) return FailStatus(w.status());
  if (Status s = (*w)->Start(); !s.ok()) return FailStatus(s);
  struct sigaction sa = {};
  sa.sa_handler = OnTaskStopSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::cerr << fmt::format("task workers running: {} threads on {} (SIGTERM stops)", o.workers,
                           o.queues.empty() ? "every queue" : a.Get("--queues"))
            << std::endl;
  const bool until_idle = a.Has("--until-idle");
  auto* q = *(*host)->Tasks();
  while (!g_stop_tasks) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (until_idle) {
      auto st = q->Stats();
      bool busy = false;
      for (const auto& s : st.ok() ? *st : std::vector<QueueStats>{})
        if ((o.queues.empty() ||
             std::find(o.queues.begin(), o.queues.end(), s.queue) != o.queues.end()) &&
            (s.running > 0 || s.oldest_due_seconds > 0))
          busy = true;
      if (st.ok() && !busy) break;
      if (st.ok() && OnlyOthersDue(q, **w, o.queues)) break;
    }
  }
  (*w)->Stop();
  std::cout << json::serialize(json::object{{"stopped", true}, {"finished", (*w)->Finished()}})
            << std::endl;
  return kOk;
}

}  // namespace

void RegisterTaskCommands(Cli* cli) {
  CLI::App* tasks = cli->Group(nullptr, "tasks", "the task queue: list, inspect, run");
  cli->Add(tasks, "list", "tasks, newest first, one JSON line each", CmdList)
      .Str("--domain", "only this domain's")
      .Str("--queue", "only this queue's")
      .Str("--type", "only this type")
      .Choice("--state", "only in this state",
              {"queued", "running", "retrying", "succeeded", "dead", "cancelled"})
      .Int("--limit", "at most this many (default 100)", 1)
      .Int("--before", "ids below this one (paging)", 1);
  for (const char* verb : {"show", "cancel", "retry"}) {
    const char* help = std::string_view(verb) == "show" ? "one task"
                       : std::string_view(verb) == "cancel"
                           ? "cancel a queued task, or ask a running one to stop"
                           : "queue a dead or cancelled task again";
    cli->Add(tasks, verb, help, [verb](const Args& a) { return CmdShow(a, verb); })
        .Positional("ID", "the task's id");
  }
  cli->Add(tasks, "enqueue", "add a task", CmdEnqueue)
      .Str("--type", "the task type, e.g. commcare.noop", true)
      .Str("--payload", "its JSON payload (default {})")
      .Str("--queue", "the queue (default \"default\")")
      .Str("--domain", "the domain it works for")
      .Int("--priority", "higher runs first (-1000..1000)", -1000)
      .Int("--max-attempts", "attempts before it is dead-lettered (default 5)", 1)
      .Str("--unique-key", "at most one unfinished task per key")
      .Str("--run-at", "not before this ISO 8601 time")
      .Int("--wait", "wait this many seconds for it to finish; exit 1 if it failed", 1);
  cli->Add(tasks, "stats", "per queue: tasks by state, the oldest due task's wait", CmdStats);
  cli->Add(tasks, "schedules", "the periodic schedules, one JSON line each", CmdSchedules);
  CLI::App* schedule = cli->Group(tasks, "schedule", "add, change or delete a schedule");
  cli->Add(schedule, "set", "add or replace a schedule", CmdScheduleSet)
      .Str("--name", "its unique name", true)
      .Str("--cron", "\"m h dom mon dow\" or @daily, @hourly, ...", true)
      .Str("--tz", "an IANA time zone (default UTC)")
      .Str("--type", "the task type it enqueues", true)
      .Str("--payload", "the task's JSON payload")
      .Str("--queue", "the task's queue")
      .Str("--domain", "the task's domain")
      .Choice("--missed", "a firing missed while no worker ran: once (default) or skip",
              {"once", "skip"})
      .Flag("--disabled", "keep it but do not fire it");
  cli->Add(schedule, "delete", "delete a schedule", CmdScheduleDelete)
      .Str("--name", "its name", true);
  cli->Add(tasks, "run", "run task workers until SIGTERM", CmdRun)
      .Str("--queues", "only these queues (Q,...; default every queue)")
      .Int("--workers", "worker threads (default 2)", 1)
      .Int("--prefetch", "tasks claimed per thread at a time (default 4)", 1)
      .Flag("--until-idle", "stop when no task of these queues is due or running");
}

}  // namespace commcare::cli
