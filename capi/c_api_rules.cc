// The C ABI's case update rules (include/commcare/rules.h) and reminders
// (include/commcare/reminders.h): saved as schedules, run (checked) in the calling thread, or
// queued as a rule.run (reminder.check) task; the reminders' message log.
#include "c_api_internal.h"
#include "commcare/reminders.h"
#include "commcare/rules.h"
#include "commcare/tasks.h"
#include "integrations/rules/locations.h"

using namespace commcare;
using namespace commcare::capi;

namespace {

// The shape of the calls: out checked (when out_required), the engine's queue opened, fn's
// text handed out through out.
template <typename F>
int RuleCall(char** out, bool out_required, cc_engine* e, F&& fn) {
  return Fence([&]() -> Status {
    if (out_required) CC_RETURN_IF_ERROR(NeedOut(out));
    if (out) *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(TaskQueue * q, e->host->Tasks());
    CC_ASSIGN_OR_RETURN(std::string text, fn(q));
    return Out(out, text);
  });
}

}  // namespace

extern "C" {

int cc_rule_set(char** out, cc_engine* e, const char* rule_json) {
  return RuleCall(out, false, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string text;
    CC_RETURN_IF_ERROR(Arg(rule_json, "rule_json", &text));
    return SaveRule(q, text);
  });
}

int cc_rule_list(char** out, cc_engine* e, const char* domain) {
  return RuleCall(out, true, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d, false));
    CC_ASSIGN_OR_RETURN(auto all, ListRules(q, d));
    return JsonArray(all, [](const std::string& s) { return s; });
  });
}

int cc_rule_get(char** out, cc_engine* e, const char* domain, const char* name) {
  return RuleCall(out, true, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    return GetRule(q, d, n);
  });
}

int cc_rule_delete(cc_engine* e, const char* domain, const char* name) {
  return RuleCall(nullptr, false, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_RETURN_IF_ERROR(DeleteRule(q, d, n));
    return std::string();
  });
}

int cc_rule_run(char** out, cc_engine* e, const char* domain, const char* name, int dry_run) {
  return RuleCall(out, true, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    std::vector<std::string> changes;
    RuleRunOptions o;
    o.dry_run = dry_run != 0;
    o.on_change = [&changes](const std::string& c) {
      changes.push_back(c);
      return true;
    };
    CC_ASSIGN_OR_RETURN(meta::MetaStore * m, e->host->Meta());
    CC_ASSIGN_OR_RETURN(o.locations, rules::LoadRuleLocations(m, d));
    CC_ASSIGN_OR_RETURN(RuleRunSummary s, RunSavedRule(e->host->engine(), q, d, n, o));
    return fmt::format(R"({{"changes":{},"summary":{}}})",
                       JsonArray(changes, [](const std::string& c) { return c; }), s.ToJson(d, n));
  });
}

int cc_rule_run_later(int64_t* out_id, cc_engine* e, const char* domain, const char* name) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out_id));
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(TaskQueue * q, e->host->Tasks());
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_ASSIGN_OR_RETURN(*out_id, RunRuleLater(q, d, n));
    return Status::Ok();
  });
}

int cc_alert_set(char** out, cc_engine* e, const char* alert_json) {
  return RuleCall(out, false, e, [&](TaskQueue*) -> Result<std::string> {
    std::string text;
    CC_RETURN_IF_ERROR(Arg(alert_json, "alert_json", &text));
    return SaveAlert(e->host.get(), text);
  });
}

int cc_alert_list(char** out, cc_engine* e, const char* domain) {
  return RuleCall(out, true, e, [&](TaskQueue*) -> Result<std::string> {
    std::string d;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d, false));
    CC_ASSIGN_OR_RETURN(auto all, ListAlerts(e->host.get(), d));
    return JsonArray(all, [](const std::string& s) { return s; });
  });
}

int cc_alert_get(char** out, cc_engine* e, const char* domain, const char* name) {
  return RuleCall(out, true, e, [&](TaskQueue*) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    return GetAlert(e->host.get(), d, n);
  });
}

int cc_alert_delete(cc_engine* e, const char* domain, const char* name) {
  return RuleCall(nullptr, false, e, [&](TaskQueue*) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_RETURN_IF_ERROR(DeleteAlert(e->host.get(), d, n));
    return std::string();
  });
}

int cc_alert_check(char** out, cc_engine* e, const char* domain, const char* name) {
  return RuleCall(out, true, e, [&](TaskQueue*) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    return CheckAlertNow(e->host.get(), d, n);
  });
}

int cc_alert_check_later(int64_t* out_id, cc_engine* e, const char* domain, const char* name) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out_id));
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_ASSIGN_OR_RETURN(*out_id, CheckAlertLater(e->host.get(), d, n));
    return Status::Ok();
  });
}

int cc_alert_messages(char** out, cc_engine* e, const char* query_json) {
  return RuleCall(out, true, e, [&](TaskQueue*) -> Result<std::string> {
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(query_json, "query_json", &o));
    Reader r{o, "query_json"};
    CC_RETURN_IF_ERROR(r.Only({"domain", "alert", "case_id", "outcome", "limit", "offset"}));
    ReminderMessageQuery m;
    CC_RETURN_IF_ERROR(r.Str("domain", &m.domain));
    if (m.domain.empty()) return Status::InvalidArgument("query_json: \"domain\" is required");
    CC_RETURN_IF_ERROR(r.Str("alert", &m.alert));
    CC_RETURN_IF_ERROR(r.Str("case_id", &m.case_id));
    CC_RETURN_IF_ERROR(r.Str("outcome", &m.outcome));
    CC_RETURN_IF_ERROR(r.Int("limit", &m.limit, 1, 1'000'000));
    CC_RETURN_IF_ERROR(r.Int("offset", &m.offset, 0, INT64_MAX));
    CC_ASSIGN_OR_RETURN(auto all, ListReminderMessages(e->host.get(), m));
    return JsonArray(all, [](const std::string& s) { return s; });
  });
}

}  // extern "C"
