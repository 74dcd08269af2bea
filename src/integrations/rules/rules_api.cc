// The public face of case update rules (include/commcare/rules.h): saved rules as task-queue
// schedules "rule:<domain>:<name>" (the queue is the store every machine of a deployment
// shares), running one now as a task, and running a saved one in this process.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "commcare/rules.h"
#include "commcare/tasks.h"
#include "integrations/rules/rule.h"

namespace commcare {

namespace json = boost::json;

namespace {

// One saved rule: its definition plus the schedule's state.
std::string RuleLine(const Schedule& s) {
  boost::system::error_code ec;
  json::value def = json::parse(s.task.payload, ec);
  json::value sched = json::parse(s.ToJson(), ec);
  json::object o;
  o["schedule"] = s.name;
  o["rule"] = def;
  if (sched.is_object())
    for (const char* k : {"next_run_at", "last_run_at", "enabled"})
      if (const auto* v = sched.get_object().if_contains(k)) o[k] = *v;
  return json::serialize(o);
}

Result<Schedule> FindRule(TaskQueue* q, std::string_view domain, std::string_view name) {
  if (!q) return Status::InvalidArgument("no task queue");
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  const std::string want = rules::ScheduleName(domain, name);
  for (auto& s : all)
    if (s.name == want && s.task.type == "rule.run") return s;
  return Status::NotFound(fmt::format("no rule '{}' in domain '{}'", name, domain));
}

}  // namespace

Status ValidateRule(std::string_view rule_json) { return rules::ParseRule(rule_json).status(); }

Result<std::string> SaveRule(TaskQueue* q, std::string_view rule_json) {
  if (!q) return Status::InvalidArgument("no task queue");
  CC_ASSIGN_OR_RETURN(rules::Rule r, rules::ParseRule(rule_json));
  CC_RETURN_IF_ERROR(q->PutSchedule(rules::ToSchedule(r)));
  CC_ASSIGN_OR_RETURN(Schedule saved, FindRule(q, r.domain, r.name));
  return RuleLine(saved);
}

Result<std::vector<std::string>> ListRules(TaskQueue* q, std::string_view domain) {
  if (!q) return Status::InvalidArgument("no task queue");
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  std::sort(all.begin(), all.end(),
            [](const Schedule& a, const Schedule& b) { return a.name < b.name; });
  const std::string prefix = domain.empty() ? "rule:" : rules::ScheduleName(domain, "");
  std::vector<std::string> out;
  for (const auto& s : all)
    if (s.task.type == "rule.run" && s.name.starts_with(prefix)) out.push_back(RuleLine(s));
  return out;
}

Result<std::string> GetRule(TaskQueue* q, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindRule(q, domain, name));
  return RuleLine(s);
}

Status DeleteRule(TaskQueue* q, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindRule(q, domain, name));
  return q->DeleteSchedule(s.name);
}

Result<int64_t> RunRuleLater(TaskQueue* q, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindRule(q, domain, name));
  TaskSpec t = s.task;
  t.run_at = 0;
  t.unique_key = fmt::format("rule.run:{}:{}", domain, name);  // one run at a time per rule
  return q->Enqueue(t);
}

Result<RuleRunSummary> RunSavedRule(Engine* engine, TaskQueue* q, std::string_view domain,
                                    std::string_view name, const RuleRunOptions& options) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindRule(q, domain, name));
  return RunRule(engine, s.task.payload, options);
}

}  // namespace commcare
