// Automatic case update rules (CommCare HQ's AutomaticUpdateRule, docs/rules.md): criteria on a
// case type's cases (property matches, days since a date property, days since the last change,
// open or closed) and actions (set properties, close, set the parent's properties), applied by
// system forms with xmlns http://commcarehq.org/hq_case_update_rule through the engine, so each
// effect is in the case's history and the change log and can be archived. A saved rule is a
// task-queue schedule "rule:<domain>:<name>" running "rule.run" with the rule's JSON. These
// functions are what the CLI (`commcare rules`), REST (/a/{domain}/api/rules/), the C ABI
// (cc_rule_*) and Python (Engine.set_rule, ...) call. Thread-safe as the Engine and TaskQueue are.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare {

class Engine;
class TaskQueue;

// The xmlns of the forms a rule submits (HQ's AUTO_UPDATE_XMLNS).
inline constexpr const char* kRuleFormXmlns = "http://commcarehq.org/hq_case_update_rule";

// Checks a rule definition; InvalidArgument names the bad field (an unknown criterion, a bad
// regex, a bad cron line or time zone, ...).
Status ValidateRule(std::string_view rule_json);

// Adds or replaces a saved rule and returns it as saved: {"schedule": "rule:<domain>:<name>",
// "rule": {...}, "next_run_at", "last_run_at", "enabled"}. Nothing is stored for a bad rule.
Result<std::string> SaveRule(TaskQueue* q, std::string_view rule_json);

// The saved rules of a domain ("": of every domain), each as SaveRule returns it, by name.
Result<std::vector<std::string>> ListRules(TaskQueue* q, std::string_view domain);

// One saved rule as SaveRule returns it; NotFound when there is none.
Result<std::string> GetRule(TaskQueue* q, std::string_view domain, std::string_view name);

// Deletes a saved rule and its schedule; NotFound when there is none.
Status DeleteRule(TaskQueue* q, std::string_view domain, std::string_view name);

// Queues a rule.run task for a saved rule now (its schedule is untouched); returns the task id.
Result<int64_t> RunRuleLater(TaskQueue* q, std::string_view domain, std::string_view name);

// A domain's locations and mobile workers, which a rule's location criteria (HQ's
// LocationFilterDefinition) are judged against.
struct RuleLocations {
  std::map<std::string, std::string> parent_of;      // location id -> parent id ("": a root)
  std::map<std::string, std::string> user_location;  // user id -> primary location id
};

// How a run goes.
struct RuleRunOptions {
  bool dry_run = false;  // only report what would change
  int64_t now = 0;       // µs since the epoch the criteria are judged at (0: now)
  std::string case_id;   // only this case ("": every case of the rule's type)
  // Called with each change (made or, in a dry run, that would be made) as JSON:
  // {"case_id", "update": {...}, "close": bool, "parent_id", "parent_update": {...},
  //  "form_id"}; returning false stops the run.
  std::function<bool(const std::string& change_json)> on_change;
  // Called every 1,000 cases scanned; returning false stops the run (a cancelled task).
  std::function<bool(int64_t scanned)> progress;
  // Needed by a rule with a location criterion (FailedPrecondition without); callers with a
  // Host load them from its MetaStore.
  std::optional<RuleLocations> locations;
};

// What a run did.
struct RuleRunSummary {
  int64_t scanned = 0;    // cases of the rule's type (and status) looked at
  int64_t matched = 0;    // cases meeting the criteria
  int64_t changed = 0;    // cases changed (dry run: that would be)
  int64_t unchanged = 0;  // matched, but the actions change nothing (already applied)
  int64_t failed = 0;     // forms the engine refused (each logged once)
  bool dry_run = false;
  // {"rule", "domain", "dry_run", "scanned", "matched", "changed", "unchanged", "failed"}
  std::string ToJson(std::string_view domain, std::string_view rule) const;
};

// Runs a rule definition over its domain's cases. A rerun changes nothing the second time:
// actions that would not change a case submit nothing, and a form's id is derived from (rule,
// case, the case's last change), so a form submitted twice is absorbed as a duplicate.
// InvalidArgument for a bad rule; FailedPrecondition for a read-only engine (unless dry_run).
Result<RuleRunSummary> RunRule(Engine* engine, std::string_view rule_json,
                               const RuleRunOptions& options);

// Runs a saved rule (as RunRule); NotFound when there is none.
Result<RuleRunSummary> RunSavedRule(Engine* engine, TaskQueue* q, std::string_view domain,
                                    std::string_view name, const RuleRunOptions& options);

}  // namespace commcare
