// The public face of reminders (include/commcare/reminders.h) and the reminder.check task: saved
// alerts as task-queue schedules, and the message log kept in the task queue's own database (so
// a message's log row and its send task commit together; in memory: a log of its own).
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdint>
#include <map>
#include <mutex>

#include "commcare/deployment.h"
#include "commcare/host.h"
#include "commcare/reminders.h"
#include "commcare/tasks.h"
#include "integrations/reminders/alert.h"
#include "integrations/reminders/tasks.h"
#include "util/sql_db.h"
#include "util/time.h"

namespace commcare {

namespace json = boost::json;

namespace {

std::string ScheduleName(std::string_view domain, std::string_view name) {
  return fmt::format("alert:{}:{}", domain, name);
}

std::string AlertLine(const Schedule& s) {
  boost::system::error_code ec;
  json::value sched = json::parse(s.ToJson(), ec);
  json::object o{{"schedule", s.name}, {"alert", json::parse(s.task.payload, ec)}};
  if (sched.is_object())
    for (const char* k : {"next_run_at", "last_run_at", "enabled"})
      if (const auto* v = sched.get_object().if_contains(k)) o[k] = *v;
  return json::serialize(o);
}

Result<Schedule> FindAlert(TaskQueue* q, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  for (auto& s : all)
    if (s.name == ScheduleName(domain, name) && s.task.type == "reminder.check") return s;
  return Status::NotFound(fmt::format("no alert '{}' in domain '{}'", name, domain));
}

}  // namespace

namespace reminders {

Result<LogDb> OpenLog(Host* host) {
  // A SQLite connection is opened without SQLite's own mutex (util::SqlDb), so the one kept
  // per directory comes with a mutex its users hold: a check in a worker and a page reading
  // the log at the same moment once corrupted the connection's transactions.
  static std::mutex mu;
  static std::map<std::string, LogDb> open;
  const std::string& dir = host->options().engine.data_dir;
  std::lock_guard l(mu);
  const std::string key =
      dir.empty() ? "memory:" + std::to_string(reinterpret_cast<uintptr_t>(host)) : dir;
  LogDb& log = open[key];
  if (!log.db) {
    std::unique_ptr<util::SqlDb> db;
    if (dir.empty()) {  // an in-memory host: a log of its own, tasks through the queue
      CC_ASSIGN_OR_RETURN(db, util::SqlDb::Open("", "commcare_tasks"));
    } else {
      CC_ASSIGN_OR_RETURN(Deployment d, Deployment::Load(dir));
      CC_ASSIGN_OR_RETURN(db,
                          util::SqlDb::Open(d.StoreAt(dir, "tasks", "tasks.db"), "commcare_tasks"));
    }
    CC_RETURN_IF_ERROR(reminders::MigrateLog(db.get()));
    log.db = std::move(db);
    log.mu = std::make_shared<std::mutex>();
  }
  LogDb out = log;
  if (dir.empty()) {
    CC_ASSIGN_OR_RETURN(out.queue, host->Tasks());
  }
  return out;
}

TaskHandler CheckHandler(Host* host) {
  return [host](TaskContext& c) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(Alert a, ParseAlert(c.payload()));
    if (!c.task().spec.domain.empty() && a.domain != c.task().spec.domain)
      return Status::PermissionDenied("reminder.check: the alert's domain is not the task's");
    CC_ASSIGN_OR_RETURN(LogDb log, OpenLog(host));
    auto meta = host->Meta();
    std::lock_guard g(*log.mu);
    CC_ASSIGN_OR_RETURN(TickSummary s, RunAlert(host->engine(), log.db.get(), log.queue,
                                                meta.ok() ? *meta : nullptr, a, util::NowMicros()));
    return s.ToJson(a.domain, a.name);
  };
}

}  // namespace reminders

Status ValidateAlert(std::string_view alert_json) {
  return reminders::ParseAlert(alert_json).status();
}

Result<std::string> SaveAlert(Host* host, std::string_view alert_json) {
  CC_ASSIGN_OR_RETURN(reminders::Alert a, reminders::ParseAlert(alert_json));
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  Schedule s;
  s.name = ScheduleName(a.domain, a.name);
  s.cron = a.check;
  s.time_zone = a.time_zone;
  s.task.type = "reminder.check";
  s.task.payload = a.json;
  s.task.domain = a.domain;
  s.missed = Schedule::Missed::kOnce;
  CC_RETURN_IF_ERROR(q->PutSchedule(s));
  CC_ASSIGN_OR_RETURN(Schedule saved, FindAlert(q, a.domain, a.name));
  return AlertLine(saved);
}

Result<std::vector<std::string>> ListAlerts(Host* host, std::string_view domain) {
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  std::sort(all.begin(), all.end(),
            [](const Schedule& a, const Schedule& b) { return a.name < b.name; });
  const std::string prefix = domain.empty() ? "alert:" : ScheduleName(domain, "");
  std::vector<std::string> out;
  for (const auto& s : all)
    if (s.task.type == "reminder.check" && s.name.starts_with(prefix)) out.push_back(AlertLine(s));
  return out;
}

Status DeleteAlert(Host* host, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  CC_ASSIGN_OR_RETURN(Schedule s, FindAlert(q, domain, name));
  return q->DeleteSchedule(s.name);
}

Result<std::string> CheckAlertNow(Host* host, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  CC_ASSIGN_OR_RETURN(Schedule s, FindAlert(q, domain, name));
  CC_ASSIGN_OR_RETURN(reminders::Alert a, reminders::ParseAlert(s.task.payload));
  CC_ASSIGN_OR_RETURN(reminders::LogDb log, reminders::OpenLog(host));
  auto meta = host->Meta();
  std::lock_guard g(*log.mu);
  CC_ASSIGN_OR_RETURN(reminders::TickSummary t,
                      reminders::RunAlert(host->engine(), log.db.get(), log.queue,
                                          meta.ok() ? *meta : nullptr, a, util::NowMicros()));
  return t.ToJson(a.domain, a.name);
}

Result<std::string> GetAlert(Host* host, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  CC_ASSIGN_OR_RETURN(Schedule s, FindAlert(q, domain, name));
  return AlertLine(s);
}

Result<int64_t> CheckAlertLater(Host* host, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  CC_ASSIGN_OR_RETURN(Schedule s, FindAlert(q, domain, name));
  TaskSpec t = s.task;
  t.run_at = 0;
  t.unique_key = fmt::format("reminder.check:{}:{}", domain, name);  // one check at a time
  return q->Enqueue(t);
}

Result<std::vector<std::string>> ListReminderMessages(Host* host,
                                                      const ReminderMessageQuery& query) {
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  CC_ASSIGN_OR_RETURN(reminders::LogDb log, reminders::OpenLog(host));
  std::lock_guard g(*log.mu);
  return reminders::ListMessages(log.db.get(), q, query);
}

}  // namespace commcare
