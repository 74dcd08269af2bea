// Periodic schedules: stored beside the tasks, each firing claimed by a compare-and-set on
// its next_run_at in the same transaction that enqueues its task, so one firing enqueues one
// task however many workers look at the schedule at once.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "commcare/log.h"
#include "tasks/queue.h"
#include "util/time.h"

namespace commcare {

namespace json = boost::json;

std::string_view TaskStateName(TaskState s) {
  switch (s) {
    case TaskState::kQueued:
      return "queued";
    case TaskState::kRunning:
      return "running";
    case TaskState::kRetrying:
      return "retrying";
    case TaskState::kSucceeded:
      return "succeeded";
    case TaskState::kDead:
      return "dead";
    case TaskState::kCancelled:
      return "cancelled";
  }
  return "queued";
}

std::optional<TaskState> ParseTaskState(std::string_view name) {
  for (auto s : {TaskState::kQueued, TaskState::kRunning, TaskState::kRetrying,
                 TaskState::kSucceeded, TaskState::kDead, TaskState::kCancelled})
    if (TaskStateName(s) == name) return s;
  return std::nullopt;
}

namespace {

json::value Time(int64_t micros) {
  return micros ? json::value(util::FormatIsoTime(micros)) : json::value(nullptr);
}

json::value JsonOrText(const std::string& s) {
  if (s.empty()) return nullptr;
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  return ec ? json::value(s) : v;
}

json::object SpecJson(const TaskSpec& s) {
  return {{"type", s.type},
          {"payload", JsonOrText(s.payload)},
          {"queue", s.queue},
          {"domain", s.domain},
          {"priority", s.priority},
          {"max_attempts", s.max_attempts},
          {"unique_key", s.unique_key.empty() ? json::value(nullptr) : json::value(s.unique_key)}};
}

Result<TaskSpec> SpecFromJson(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return Status::DataLoss("schedule: its task is not a JSON object");
  const auto& o = v.get_object();
  TaskSpec s;
  auto str = [&](const char* k) -> std::string {
    const auto* x = o.if_contains(k);
    return x && x->is_string() ? std::string(x->get_string()) : std::string();
  };
  s.type = str("type");
  s.queue = str("queue");
  s.domain = str("domain");
  s.unique_key = str("unique_key");
  if (const auto* p = o.if_contains("payload")) s.payload = json::serialize(*p);
  if (const auto* p = o.if_contains("priority"); p && p->is_int64())
    s.priority = int(p->get_int64());
  if (const auto* p = o.if_contains("max_attempts"); p && p->is_int64())
    s.max_attempts = int(p->get_int64());
  return s;
}

}  // namespace

std::string TaskInfo::ToJson() const {
  json::object o = SpecJson(spec);
  o["id"] = id;
  o["state"] = TaskStateName(state);
  o["run_at"] = Time(spec.run_at);
  o["attempts"] = attempts;
  o["created_at"] = Time(created_at);
  o["started_at"] = Time(started_at);
  o["finished_at"] = Time(finished_at);
  o["lease_until"] = Time(lease_until);
  o["worker"] = worker;
  o["progress"] = {
      {"done", progress_done}, {"total", progress_total}, {"message", progress_message}};
  o["result"] = JsonOrText(result);
  o["last_error"] = last_error;
  o["cancel_requested"] = cancel_requested;
  return json::serialize(o);
}

std::string Schedule::ToJson() const {
  return json::serialize(json::object{{"name", name},
                                      {"cron", cron},
                                      {"time_zone", time_zone},
                                      {"task", SpecJson(task)},
                                      {"missed", missed == Missed::kOnce ? "once" : "skip"},
                                      {"enabled", enabled},
                                      {"next_run_at", Time(next_run_at)},
                                      {"last_run_at", Time(last_run_at)}});
}

namespace tasks {

Status SqlTaskQueue::PutSchedule(const Schedule& s) {
  if (s.name.empty() || s.name.size() > 200)
    return Status::InvalidArgument("schedule: \"name\" must be 1-200 characters");
  CC_RETURN_IF_ERROR(CheckSchedule(s.cron, s.time_zone));
  if (s.task.type.empty()) return Status::InvalidArgument("schedule: its task needs a \"type\"");
  CC_ASSIGN_OR_RETURN(int64_t next, NextCronTime(s.cron, s.time_zone, util::NowMicros()));
  const std::string task = json::serialize(SpecJson(s.task));
  std::lock_guard lk(mu_);
  return db_
      ->Run("saving a schedule",
            "INSERT INTO task_schedules(name, cron, time_zone, task, missed, enabled, "
            "next_run_at) VALUES(?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
            "cron=excluded.cron, time_zone=excluded.time_zone, task=excluded.task, "
            "missed=excluded.missed, enabled=excluded.enabled, next_run_at=excluded.next_run_at",
            {s.name, s.cron, s.time_zone, task,
             s.missed == Schedule::Missed::kOnce ? "once" : "skip", int64_t{s.enabled}, next})
      .status();
}

Status SqlTaskQueue::DeleteSchedule(std::string_view name) {
  std::lock_guard lk(mu_);
  CC_ASSIGN_OR_RETURN(
      auto r, db_->Run("deleting a schedule", "DELETE FROM task_schedules WHERE name=?", {name}));
  if (r.changed == 0) return Status::NotFound(fmt::format("schedule \"{}\" does not exist", name));
  return Status::Ok();
}

Result<std::vector<Schedule>> SqlTaskQueue::Schedules() {
  std::lock_guard lk(mu_);
  CC_ASSIGN_OR_RETURN(auto r, db_->Run("listing schedules",
                                       "SELECT name, cron, time_zone, task, missed, enabled, "
                                       "next_run_at, last_run_at FROM task_schedules "
                                       "ORDER BY name"));
  std::vector<Schedule> out;
  for (size_t i = 0; i < r.size(); ++i) {
    Schedule s;
    s.name = r.Str(i, 0);
    s.cron = r.Str(i, 1);
    s.time_zone = r.Str(i, 2);
    CC_ASSIGN_OR_RETURN(s.task, SpecFromJson(r.Str(i, 3)));
    s.missed = r.Str(i, 4) == "skip" ? Schedule::Missed::kSkip : Schedule::Missed::kOnce;
    s.enabled = r.Int(i, 5) != 0;
    s.next_run_at = r.Int(i, 6);
    s.last_run_at = r.Int(i, 7);
    out.push_back(std::move(s));
  }
  return out;
}

Status SqlTaskQueue::SetNextRun(std::string_view name, int64_t micros) {
  std::lock_guard lk(mu_);
  return db_
      ->Run("moving a schedule", "UPDATE task_schedules SET next_run_at=? WHERE name=?",
            {micros, name})
      .status();
}

// A firing later than this after its time counts as missed (the policy decides).
constexpr int64_t kMissedAfterMicros = 60'000'000;

Result<int> SqlTaskQueue::FireSchedules() {
  const int64_t now = util::NowMicros();
  CC_ASSIGN_OR_RETURN(auto all, Schedules());
  int fired = 0;
  for (const auto& s : all) {
    if (!s.enabled || s.next_run_at > now) continue;
    auto next = NextCronTime(s.cron, s.time_zone, now);
    if (!next.ok()) {
      Log(LogLevel::kError, "a schedule no longer parses; it stays as it is until replaced",
          {{"component", "tasks"}, {"schedule", s.name}, {"error", next.status().ToString()}});
      continue;
    }
    const bool missed = now - s.next_run_at > kMissedAfterMicros;
    const bool fire = !missed || s.missed == Schedule::Missed::kOnce;
    bool won = false;
    std::lock_guard lk(mu_);
    CC_RETURN_IF_ERROR(db_->Transaction("firing a schedule", 0, [&]() -> Status {
      CC_ASSIGN_OR_RETURN(auto r,
                          db_->Run("claiming a schedule's firing",
                                   "UPDATE task_schedules SET next_run_at=?, "
                                   "last_run_at=? WHERE name=? AND next_run_at=?",
                                   {*next, fire ? now : s.last_run_at, s.name, s.next_run_at}));
      won = r.changed == 1;
      if (!won || !fire) return Status::Ok();
      TaskSpec t = s.task;
      t.run_at = now;
      return EnqueueIn(db_.get(), t).status();
    }));
    if (won && fire) ++fired;
    if (won && missed)
      Log(LogLevel::kWarning,
          fire ? "a schedule missed its time; firing once now"
               : "a schedule missed its time; "
                 "skipped until the next one",
          {{"component", "tasks"},
           {"schedule", s.name},
           {"missed", util::FormatIsoTime(s.next_run_at)},
           {"next", util::FormatIsoTime(*next)}});
  }
  if (fired) Notify();
  return fired;
}

}  // namespace tasks
}  // namespace commcare
