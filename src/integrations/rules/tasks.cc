// The rule task types and the case-rules pillow (integrations/rules/tasks.h).
#include "integrations/rules/tasks.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <chrono>
#include <mutex>
#include <set>

#include "commcare/rules.h"
#include "integrations/rules/locations.h"
#include "integrations/rules/rule.h"

namespace commcare::rules {

namespace json = boost::json;

namespace {

// The active run_on_change rules of the saved ones (every domain's).
Result<std::vector<Rule>> OnChangeRules(TaskQueue* q) {
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  std::vector<Rule> out;
  for (const auto& s : all) {
    if (s.task.type != "rule.run" || !s.name.starts_with("rule:")) continue;
    auto r = ParseRule(s.task.payload);
    if (r.ok() && r->run_on_change && r->active && s.enabled) out.push_back(std::move(*r));
  }
  return out;
}

class ChangeProcessorImpl : public ChangeProcessor {
 public:
  explicit ChangeProcessorImpl(std::function<Result<TaskQueue*>()> queue)
      : queue_(std::move(queue)) {}

  Status Process(Engine&, const Change& change) override {
    const ChangeMeta& m = change.meta;
    if (m.document_type != "CommCareCase" || m.is_deletion) return Status::Ok();
    CC_ASSIGN_OR_RETURN(TaskQueue * q, queue_());
    CC_ASSIGN_OR_RETURN(bool wanted, Wanted(q, m.domain, m.document_subtype));
    if (!wanted) return Status::Ok();
    TaskSpec t;
    t.type = "rule.case";
    t.domain = m.domain;
    t.payload = json::serialize(json::object{{"case_id", m.document_id}});
    t.unique_key = fmt::format("rule.case:{}:{}", m.domain, m.document_id);
    return q->Enqueue(t).status();
  }

 private:
  // Whether a run_on_change rule covers (domain, case type); the rules are cached for 5 s.
  Result<bool> Wanted(TaskQueue* q, const std::string& domain, const std::string& type) {
    std::lock_guard l(mu_);
    auto now = std::chrono::steady_clock::now();
    if (!loaded_ || now - loaded_at_ > std::chrono::seconds(5)) {
      CC_ASSIGN_OR_RETURN(auto list, OnChangeRules(q));
      covered_.clear();
      for (const auto& r : list) covered_.emplace(r.domain, r.case_type);
      loaded_ = true;
      loaded_at_ = now;
    }
    return covered_.count({domain, type}) > 0;
  }

  std::function<Result<TaskQueue*>()> queue_;
  std::mutex mu_;
  bool loaded_ = false;
  std::chrono::steady_clock::time_point loaded_at_;
  std::set<std::pair<std::string, std::string>> covered_;
};

}  // namespace

TaskHandler RunRuleHandler(Engine* engine, MetaSource meta) {
  return [engine, meta](TaskContext& c) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(Rule r, ParseRule(c.payload()));
    if (!c.task().spec.domain.empty() && r.domain != c.task().spec.domain)
      return Status::PermissionDenied("rule.run: the rule's domain is not the task's");
    RuleRunOptions o;
    o.progress = [&c](int64_t scanned) {
      c.Progress(scanned, 0, "cases scanned");
      return !c.Cancelled();
    };
    if (r.NeedsLocations()) {
      CC_ASSIGN_OR_RETURN(meta::MetaStore * m, meta());
      CC_ASSIGN_OR_RETURN(o.locations, LoadRuleLocations(m, r.domain));
    }
    CC_ASSIGN_OR_RETURN(RuleRunSummary s, RunRule(engine, c.payload(), o));
    return s.ToJson(r.domain, r.name);
  };
}

TaskHandler CaseChangedHandler(Engine* engine, std::function<Result<TaskQueue*>()> queue,
                               MetaSource meta) {
  return [engine, queue, meta](TaskContext& c) -> Result<std::string> {
    boost::system::error_code ec;
    json::value v = json::parse(c.payload(), ec);
    const json::value* id = !ec && v.is_object() ? v.get_object().if_contains("case_id") : nullptr;
    if (!id || !id->is_string())
      return Status::InvalidArgument("rule.case: payload must be {\"case_id\": ID}");
    CC_ASSIGN_OR_RETURN(TaskQueue * q, queue());
    CC_ASSIGN_OR_RETURN(auto list, OnChangeRules(q));
    RuleRunOptions o;
    o.case_id = std::string(id->get_string());
    int64_t n = 0, changed = 0;
    for (const auto& r : list) {
      if (r.domain != c.task().spec.domain) continue;
      if (r.NeedsLocations() && !o.locations) {
        CC_ASSIGN_OR_RETURN(meta::MetaStore * m, meta());
        CC_ASSIGN_OR_RETURN(o.locations, LoadRuleLocations(m, r.domain));
      }
      CC_ASSIGN_OR_RETURN(RuleRunSummary s, RunRule(engine, r.json, o));
      ++n;
      changed += s.changed;
    }
    return json::serialize(
        json::object{{"case_id", o.case_id}, {"rules", n}, {"changed", changed}});
  };
}

PillowConfig ChangePillowConfig() {
  PillowConfig c;
  c.name = "case-rules";
  c.topics = {"case-sql"};
  return c;
}

std::shared_ptr<ChangeProcessor> NewChangeProcessor(std::function<Result<TaskQueue*>()> queue) {
  return std::make_shared<ChangeProcessorImpl>(std::move(queue));
}

}  // namespace commcare::rules
