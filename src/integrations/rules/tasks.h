// Case update rules in the background: the rule.run and rule.case task types and the
// case-rules pillow that queues rule.case for each changed case of a domain whose rules ask to
// run on each change (docs/rules.md). Registered by the Host (src/host/).
#pragma once

#include <functional>
#include <memory>

#include "commcare/pillows.h"
#include "commcare/tasks.h"

namespace commcare {
namespace meta {
class MetaStore;
}

namespace rules {

// Where a rule with a location criterion gets the domain's locations and users.
using MetaSource = std::function<Result<meta::MetaStore*>()>;

// rule.run: payload is a rule definition (a saved rule's schedule puts it there); runs it over
// the task's domain. Result: RuleRunSummary's JSON.
TaskHandler RunRuleHandler(Engine* engine, MetaSource meta);

// rule.case: payload {"case_id"}; runs every active run_on_change rule of the task's domain on
// that case. Result: {"case_id", "rules": N, "changed": N}.
TaskHandler CaseChangedHandler(Engine* engine, std::function<Result<TaskQueue*>()> queue,
                               MetaSource meta);

// The case-rules pillow's settings (topic case-sql) and its processor, which queues one
// rule.case task per changed case (unique per case while queued) when a run_on_change rule
// covers the case's domain and type. The rules are read from the queue at most every 5 s.
PillowConfig ChangePillowConfig();
std::shared_ptr<ChangeProcessor> NewChangeProcessor(std::function<Result<TaskQueue*>()> queue);

}  // namespace rules
}  // namespace commcare
