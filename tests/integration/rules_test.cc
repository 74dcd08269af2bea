// Automatic case update rules (docs/rules.md): each criterion and action, the parent update,
// the dry run, an idempotent rerun, schedule registration, bad rules refused, archive, and the
// run-on-change pillow.
#include "commcare/rules.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <boost/json.hpp>

#include "commcare/host.h"
#include "commcare/pillows.h"
#include "commcare/tasks.h"
#include "engine_helpers.h"
#include "integrations/rules/locations.h"
#include "integrations/rules/rule.h"
#include "integrations/rules/tasks.h"
#include "meta/meta_store.h"
#include "util/time.h"

using namespace commcare;
using namespace cctest;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

int64_t Iso(const char* s) {
  int64_t t = 0;
  REQUIRE(util::ParseIsoTime(s, &t));
  return t;
}

// A case of type patient (or type) with properties, optionally a child of parent.
void MakeCase(Engine* e, const std::string& id, const std::string& props,
              const std::string& type = "patient", const std::string& parent = "") {
  std::string idx =
      parent.empty()
          ? ""
          : fmt::format(R"(<index><parent case_type="household">{}</parent></index>)", parent);
  auto r = Submit(e, CaseForm("f-" + id, id,
                              fmt::format("<create><case_type>{}</case_type><case_name>{}</"
                                          "case_name><owner_id>u1</owner_id></create><update>{}</"
                                          "update>{}",
                                          type, id, props, idx)));
  REQUIRE_MESSAGE(r.http_status == 201, r.message);
}

std::string Prop(Engine* e, const std::string& id, const std::string& name) {
  auto c = e->GetCase("demo", id);
  REQUIRE(c.ok());
  auto it = c->properties.find(name);
  return it == c->properties.end() ? "" : it->second;
}

// A rule on patients with the given criteria and actions (JSON fragments).
std::string RuleJson(const std::string& criteria, const std::string& actions,
                     const std::string& extra = "") {
  return fmt::format(
      R"({{"name": "r1", "domain": "demo", "case_type": "patient", "criteria": [{}], "actions": {{{}}}{}}})",
      criteria, actions, extra);
}

RuleRunSummary Run(Engine* e, const std::string& rule, bool dry = false, int64_t now = 0,
                   std::vector<std::string>* changes = nullptr) {
  RuleRunOptions o;
  o.dry_run = dry;
  o.now = now;
  o.on_change = [changes](const std::string& c) {
    if (changes) changes->push_back(c);
    return true;
  };
  auto s = RunRule(e, rule, o);
  REQUIRE_MESSAGE(s.ok(), s.status().ToString());
  return *s;
}

const char* kSetFlag = R"("update": [{"name": "flag", "value": "yes"}])";

// Runs saved rule r1 now through the queue with one worker, as its schedule's firing does;
// the task's result.
json::object RunSavedNow(Host* h, TaskQueue* q) {
  auto w = h->NewTaskWorkers({.workers = 1, .poll = 50ms});
  REQUIRE(w.ok());
  REQUIRE((*w)->Start().ok());
  auto id = RunRuleLater(q, "demo", "r1");
  REQUIRE(id.ok());
  auto t = q->Wait(*id, 30s);
  (*w)->Stop();
  REQUIRE(t.ok());
  CHECK_MESSAGE(t->state == TaskState::kSucceeded, t->last_error);
  return json::parse(t->result).as_object();
}

}  // namespace

TEST_CASE("Rules: each match type selects the cases HQ's would") {
  auto e = OpenMemory();
  MakeCase(e.get(), "a", "<status>new</status><dob>2023-01-01</dob><code>AB-12</code>");
  MakeCase(e.get(), "b", "<status>old</status><dob>2024-05-20T10:00:00Z</dob><code>x</code>");
  MakeCase(e.get(), "c", "<status></status>");
  const int64_t now = Iso("2024-06-01T12:00:00Z");
  struct Case {
    const char* criterion;
    std::vector<std::string> match;
  } cases[] = {
      {R"({"property_name": "status", "match_type": "EQUAL", "property_value": "new"})", {"a"}},
      {R"({"property_name": "status", "match_type": "NOT_EQUAL", "property_value": "new"})",
       {"b", "c"}},
      {R"({"property_name": "status", "match_type": "HAS_VALUE"})", {"a", "b"}},
      {R"({"property_name": "status", "match_type": "HAS_NO_VALUE"})", {"c"}},
      {R"({"property_name": "code", "match_type": "REGEX", "property_value": "^[A-Z]+-\\d+$"})",
       {"a"}},
      {R"({"property_name": "dob", "match_type": "DAYS", "property_value": 365})", {"a"}},
      {R"({"property_name": "dob", "match_type": "DAYS", "property_value": "12"})", {"a", "b"}},
      {R"({"property_name": "dob", "match_type": "DAYS_BEFORE", "property_value": "30"})", {"b"}},
  };
  for (const auto& k : cases) {
    CAPTURE(k.criterion);
    std::vector<std::string> changes;
    Run(e.get(), RuleJson(k.criterion, kSetFlag), true, now, &changes);
    std::vector<std::string> ids;
    for (const auto& c : changes) ids.emplace_back(json::parse(c).at("case_id").as_string());
    std::sort(ids.begin(), ids.end());
    CHECK(ids == k.match);
  }
  // ANY of two criteria; the server-modified boundary as one more criterion.
  std::vector<std::string> any;
  Run(e.get(),
      RuleJson(R"({"property_name": "status", "match_type": "EQUAL", "property_value": "new"},
                  {"property_name": "status", "match_type": "EQUAL", "property_value": "old"})",
               kSetFlag, R"(, "criteria_operator": "ANY")"),
      true, now, &any);
  CHECK(any.size() == 2);
  const int64_t later = util::NowMicros() + 10 * 86'400'000'000LL;
  CHECK(Run(e.get(), RuleJson("", kSetFlag, R"(, "server_modified_boundary": 5)"), true, later)
            .matched == 3);
  CHECK(Run(e.get(), RuleJson("", kSetFlag, R"(, "server_modified_boundary": 20)"), true, later)
            .matched == 0);
}

// HQ's UCRFilterDefinition: a UCR filter on the case's JSON (case.to_json()).
TEST_CASE("Rules: the UCR filter criterion") {
  auto e = OpenMemory();
  MakeCase(e.get(), "a", "<status>new</status>");
  MakeCase(e.get(), "b", "<status>old</status>");
  MakeCase(e.get(), "c", "<status>gone</status>");
  std::vector<std::string> changes;
  Run(e.get(),
      RuleJson(R"({"configured_filter": {"type": "boolean_expression", "expression":
                   {"type": "property_name", "property_name": "status"}, "operator": "in",
                   "property_value": ["new", "old"]}})",
               kSetFlag),
      true, 0, &changes);
  std::vector<std::string> ids;
  for (const auto& c : changes) ids.emplace_back(json::parse(c).at("case_id").as_string());
  std::sort(ids.begin(), ids.end());
  CHECK(ids == std::vector<std::string>{"a", "b"});
  // With ANY, beside a property criterion; a case field (owner_id) at the top level as HQ's.
  changes.clear();
  Run(e.get(),
      RuleJson(R"({"property_name": "status", "match_type": "EQUAL", "property_value": "gone"},
                  {"configured_filter": {"type": "boolean_expression", "expression":
                   {"type": "property_name", "property_name": "owner_id"}, "operator": "eq",
                   "property_value": "nobody"}})",
               kSetFlag, R"(, "criteria_operator": "ANY")"),
      true, 0, &changes);
  REQUIRE(changes.size() == 1);
  CHECK(json::parse(changes[0]).at("case_id").as_string() == "c");
  CHECK(ValidateRule(RuleJson(R"({"configured_filter": {"type": "nope"}})", kSetFlag))
            .message()
            .find("criteria[0].configured_filter") != std::string::npos);
  CHECK(ValidateRule(RuleJson(R"({"configured_filter": {"type": "named", "name": "x"}})", kSetFlag))
            .message()
            .find("named") != std::string::npos);
}

TEST_CASE("Rules: properties are set from constants and other properties and cases closed") {
  auto e = OpenMemory();
  MakeCase(e.get(), "a", "<status>new</status><edd>2024-07-01</edd>");
  MakeCase(e.get(), "b", "<status>done</status>");
  MakeCase(e.get(), "h", "<status>new</status>", "household");
  auto s =
      Run(e.get(),
          RuleJson(R"({"property_name": "status", "match_type": "EQUAL", "property_value": "new"})",
                   R"("update": [{"name": "stage", "value": "two"},
                                      {"name": "due", "value_type": "CASE_PROPERTY", "value": "edd"}],
                           "close_case": true)"));
  CHECK(s.matched == 1);
  CHECK(s.changed == 1);
  CHECK(Prop(e.get(), "a", "stage") == "two");
  CHECK(Prop(e.get(), "a", "due") == "2024-07-01");
  CHECK(e->GetCase("demo", "a")->closed);
  CHECK(!e->GetCase("demo", "b")->closed);
  CHECK(!e->GetCase("demo", "h")->closed);  // another case type
  auto hist = e->CaseHistory("demo", "a");
  REQUIRE(hist.ok());
  REQUIRE(hist->size() == 2);
  auto form = e->GetForm("demo", hist->back().form_id);
  REQUIRE(form.ok());
  CHECK(form->xmlns == kRuleFormXmlns);
  CHECK(form->user_id == "system");
  // A closed case is not looked at by a rule on open cases (HQ's default), but is by one on
  // closed cases.
  const std::string reopen =
      RuleJson("", R"("update": [{"name": "seen", "value": "1"}])", R"(, "case_status": "closed")");
  CHECK(Run(e.get(), reopen).changed == 1);
  CHECK(Prop(e.get(), "a", "seen") == "1");
}

TEST_CASE("Rules: a parent's property is matched and updated") {
  auto e = OpenMemory();
  MakeCase(e.get(), "h1", "<visits>0</visits><area>north</area>", "household");
  MakeCase(e.get(), "c1", "<status>sick</status>", "patient", "h1");
  MakeCase(e.get(), "c2", "<status>sick</status>");  // no parent: parent/ criteria never hold
  auto s = Run(
      e.get(),
      RuleJson(
          R"({"property_name": "parent/area", "match_type": "EQUAL", "property_value": "north"})",
          R"("update": [{"name": "parent/alert", "value": "yes"},
                                      {"name": "area", "value_type": "CASE_PROPERTY", "value": "parent/area"}])"));
  CHECK(s.matched == 1);
  CHECK(Prop(e.get(), "h1", "alert") == "yes");
  CHECK(Prop(e.get(), "c1", "area") == "north");
  CHECK(Prop(e.get(), "c2", "area") == "");
  auto hist = e->CaseHistory("demo", "h1");
  REQUIRE(hist.ok());
  CHECK(e->GetForm("demo", hist->back().form_id)->xmlns == kRuleFormXmlns);
}

// corehq/apps/data_interfaces/models.py ClosedParentDefinition.matches: a case whose parent
// (identifier "parent", a child index) is closed; no parent, or an open one, does not match.
TEST_CASE("Rules: the closed-parent criterion") {
  auto e = OpenMemory();
  MakeCase(e.get(), "h-open", "", "household");
  MakeCase(e.get(), "h-shut", "", "household");
  REQUIRE(Submit(e.get(), CaseForm("f-close", "h-shut", "<close/>")).http_status == 201);
  MakeCase(e.get(), "p-open", "", "patient", "h-open");
  MakeCase(e.get(), "p-shut", "", "patient", "h-shut");
  MakeCase(e.get(), "p-none", "");
  auto s = Run(e.get(), RuleJson(R"({"closed_parent": true})", R"("close_case": true)"));
  CHECK(s.matched == 1);
  CHECK(e->GetCase("demo", "p-shut")->closed);
  CHECK(!e->GetCase("demo", "p-open")->closed);
  CHECK(!e->GetCase("demo", "p-none")->closed);
  CHECK(rules::ParseRule(RuleJson(R"({"closed_parent": false})", kSetFlag))
            .status()
            .message()
            .find("criteria[0].closed_parent") != std::string::npos);
  CHECK(rules::ParseRule(RuleJson(R"({"closed_parent": true, "property_name": "x"})", kSetFlag))
            .status()
            .message()
            .find("criteria[0].property_name: unknown field") != std::string::npos);
}

TEST_CASE("Rules: a dry run lists what would change and changes nothing") {
  auto e = OpenMemory();
  MakeCase(e.get(), "a", "<status>new</status>");
  MakeCase(e.get(), "b", "<status>new</status><flag>yes</flag>");
  const int64_t rev = e->GetCase("demo", "a")->rev;
  std::vector<std::string> changes;
  auto s = Run(e.get(), RuleJson("", kSetFlag, ""), true, 0, &changes);
  CHECK(s.dry_run);
  CHECK(s.matched == 2);
  CHECK(s.changed == 1);
  CHECK(s.unchanged == 1);
  REQUIRE(changes.size() == 1);
  auto c = json::parse(changes[0]);
  CHECK(c.at("case_id").as_string() == "a");
  CHECK(c.at("update").at("flag").as_string() == "yes");
  CHECK(c.at("close").as_bool() == false);
  CHECK(e->GetCase("demo", "a")->rev == rev);
  CHECK(Prop(e.get(), "a", "flag") == "");
}

TEST_CASE("Rules: a rerun changes nothing and a resubmitted rule form is a duplicate") {
  std::string dir;
  auto e = OpenSqlite(1, &dir);
  MakeCase(e.get(), "a", "<status>new</status>");
  const std::string rule = RuleJson("", kSetFlag, "");
  std::vector<std::string> changes;
  CHECK(Run(e.get(), rule, false, 0, &changes).changed == 1);
  const int64_t rev = e->GetCase("demo", "a")->rev;
  auto again = Run(e.get(), rule);
  CHECK(again.changed == 0);
  CHECK(again.unchanged == 1);
  CHECK(e->GetCase("demo", "a")->rev == rev);
  // A worker that died after submitting resubmits the same bytes under the same id.
  REQUIRE(changes.size() == 1);
  const std::string form_id(json::parse(changes[0]).at("form_id").as_string());
  auto xml = e->GetFormXml("demo", form_id);
  REQUIRE(xml.ok());
  auto r = Submit(e.get(), *xml, "3.0");
  CHECK(r.http_status == 201);
  REQUIRE(r.state);
  CHECK(*r.state == FormState::kDuplicate);
  CHECK(e->GetCase("demo", "a")->rev == rev);
}

TEST_CASE("Rules: archiving a rule's form reverts the case") {
  auto e = OpenMemory();
  MakeCase(e.get(), "a", "<status>new</status>");
  std::vector<std::string> changes;
  Run(e.get(),
      RuleJson("", R"("update": [{"name": "status", "value": "old"}], "close_case": true)"), false,
      0, &changes);
  REQUIRE(changes.size() == 1);
  CHECK(Prop(e.get(), "a", "status") == "old");
  const std::string form_id(json::parse(changes[0]).at("form_id").as_string());
  REQUIRE(e->ArchiveForm("demo", form_id).ok());
  CHECK(Prop(e.get(), "a", "status") == "new");
  CHECK(!e->GetCase("demo", "a")->closed);
}

TEST_CASE("Rules: bad rules are refused naming the field") {
  struct Bad {
    std::string rule, field;
  } bad[] = {
      {RuleJson(R"({"property_name": "x", "match_type": "LIKE", "property_value": "1"})", kSetFlag),
       "criteria[0].match_type"},
      {RuleJson(R"({"property_name": "x", "match_type": "REGEX", "property_value": "(a"})",
                kSetFlag),
       "criteria[0].property_value"},
      {RuleJson(R"({"property_name": "x", "match_type": "DAYS", "property_value": "soon"})",
                kSetFlag),
       "criteria[0].property_value"},
      {RuleJson(R"({"property_name": "a/b", "match_type": "HAS_VALUE"})", kSetFlag),
       "criteria[0].property_name"},
      {RuleJson(R"({"property_name": "x", "match_type": "HAS_VALUE", "color": 1})", kSetFlag),
       "criteria[0].color"},
      {RuleJson("", R"("update": [{"name": "x", "value_type": "FORMULA", "value": "1"}])"),
       "actions.update[0].value_type"},
      {RuleJson("", R"("update": [{"name": "case_id", "value": "1"}])"), "actions.update[0].name"},
      {RuleJson("", R"("close_case": false)"), "actions"},
      {RuleJson("", kSetFlag, R"(, "time_zone": "Mars/Olympus")"), "time_zone"},
      {RuleJson("", kSetFlag, R"(, "schedule": "61 * * * *")"), "schedule"},
      {RuleJson("", kSetFlag, R"(, "case_status": "sleeping")"), "case_status"},
      {RuleJson("", kSetFlag, R"(, "owner": "me")"), "owner"},
      {R"({"domain": "demo", "case_type": "p", "actions": {"close_case": true}})", "name"},
  };
  auto q = OpenTaskQueue("");
  REQUIRE(q.ok());
  for (const auto& b : bad) {
    CAPTURE(b.rule);
    Status s = ValidateRule(b.rule);
    CHECK(s.IsInvalidArgument());
    CHECK_MESSAGE(s.message().rfind(b.field + ":", 0) == 0, s.message());
    CHECK(SaveRule(q->get(), b.rule).status().IsInvalidArgument());
  }
  CHECK(ListRules(q->get(), "demo")->empty());
}

TEST_CASE("Rules: a saved rule is a daily schedule in its time zone that runs it") {
  auto h = NewHost("rules-host");
  Engine* e = h->engine();
  TaskQueue* q = *h->Tasks();
  MakeCase(e, "a", "<status>new</status>");
  auto saved = SaveRule(
      q, RuleJson("", kSetFlag, R"(, "schedule": "30 2 * * *", "time_zone": "Africa/Nairobi")"));
  REQUIRE_MESSAGE(saved.ok(), saved.status().ToString());
  CHECK(json::parse(*saved).at("schedule").as_string() == "rule:demo:r1");
  auto scheds = q->Schedules();
  REQUIRE(scheds.ok());
  REQUIRE(scheds->size() == 1);
  const Schedule& s = scheds->front();
  CHECK(s.cron == "30 2 * * *");
  CHECK(s.time_zone == "Africa/Nairobi");
  CHECK(s.task.type == "rule.run");
  // 02:30 in Nairobi (UTC+3) is 23:30 UTC.
  CHECK(util::FormatIsoTime(s.next_run_at).substr(11, 5) == "23:30");
  CHECK(ListRules(q, "demo")->size() == 1);
  CHECK(ListRules(q, "other")->empty());
  // Run now through the queue, as the schedule's firing does.
  CHECK(RunSavedNow(h.get(), q).at("changed").as_int64() == 1);
  CHECK(Prop(e, "a", "flag") == "yes");
  CHECK(DeleteRule(q, "demo", "r1").ok());
  CHECK(DeleteRule(q, "demo", "r1").IsNotFound());
  CHECK(q->Schedules()->empty());
}

TEST_CASE("Rules: a case change runs the rules that ask for it") {
  auto h = NewHost("rules-change");
  Host* host = h.get();
  Engine* e = host->engine();
  TaskQueue* q = *host->Tasks();
  REQUIRE(
      SaveRule(
          q,
          RuleJson(R"({"property_name": "status", "match_type": "EQUAL", "property_value": "new"})",
                   kSetFlag, R"(, "run_on_change": true)"))
          .ok());
  auto pillows = host->OpenPillows({.builtin = false});
  REQUIRE(pillows.ok());
  REQUIRE((*pillows)
              ->AddPillow(rules::ChangePillowConfig(),
                          rules::NewChangeProcessor([host] { return host->Tasks(); }))
              .ok());
  MakeCase(e, "a", "<status>new</status>");
  MakeCase(e, "b", "<status>done</status>");
  MakeCase(e, "h", "<status>new</status>", "household");  // no rule for households
  REQUIRE(e->RelayChanges().ok());
  REQUIRE((*pillows)->RunUntilCaughtUp().ok());
  auto tasks = q->List({.type = "rule.case"});
  REQUIRE(tasks.ok());
  CHECK(tasks->size() == 2);
  auto w = host->NewTaskWorkers({.workers = 1, .poll = 50ms});
  REQUIRE(w.ok());
  REQUIRE((*w)->Start().ok());
  for (const auto& t : *tasks) {
    auto done = q->Wait(t.id, 30s);
    REQUIRE(done.ok());
    CHECK_MESSAGE(done->state == TaskState::kSucceeded, done->last_error);
  }
  CHECK(Prop(e, "a", "flag") == "yes");
  CHECK(Prop(e, "b", "flag") == "");
  // The rule's own form is a change too: its rule.case task finds nothing left to do.
  REQUIRE(e->RelayChanges().ok());
  REQUIRE((*pillows)->RunUntilCaughtUp().ok());
  auto all = q->List({.type = "rule.case"});
  REQUIRE(all.ok());
  CHECK(all->size() == 3);
  int64_t changed = 0;
  for (const auto& t : *all) {
    auto done = q->Wait(t.id, 30s);
    REQUIRE(done.ok());
    REQUIRE_MESSAGE(done->state == TaskState::kSucceeded, done->last_error);
    changed += json::parse(done->result).at("changed").as_int64();
  }
  CHECK(changed == 1);
  (*w)->Stop();
}

// HQ's LocationFilterDefinition (corehq/apps/data_interfaces/models.py): the case's owner is
// the location, or one under it (include_child_locations, default true; descendants include
// the location itself), or a user whose primary location is.
TEST_CASE("Rules: the location criterion, with the host's locations and users") {
  auto h = NewHost("rules-loc");
  Engine* e = h->engine();
  meta::MetaStore* m = *h->Meta();
  meta::Domain d;
  d.name = "demo";
  REQUIRE(m->PutDomain(d).ok());
  auto loc = [&](const std::string& id, const std::string& parent) {
    meta::Doc l;
    l.kind = "location";
    l.id = id;
    l.domain = "demo";
    l.body = {{"name", id}, {"location_type", "district"}};
    if (!parent.empty()) l.body["parent_id"] = parent;
    auto put = m->PutDoc(l);
    REQUIRE_MESSAGE(put.ok(), put.status().ToString());
  };
  loc("loc-a", "");
  loc("loc-b", "loc-a");
  loc("loc-c", "");
  meta::User u;
  u.username = "nurse@demo.commcarehq.org";
  u.domains = {"demo"};
  u.location_ids = {"loc-b", "loc-c"};  // the first is the primary location
  const std::string nurse = m->PutUser(u, "pw").value().user_id;
  u.username = "clerk@demo.commcarehq.org";
  u.location_ids = {"loc-c", "loc-a"};
  const std::string clerk = m->PutUser(u, "pw").value().user_id;
  for (const auto& [id, owner] :
       std::vector<std::pair<std::string, std::string>>{{"on-a", "loc-a"},
                                                        {"on-b", "loc-b"},
                                                        {"on-c", "loc-c"},
                                                        {"nurse", nurse},
                                                        {"clerk", clerk},
                                                        {"nobody", "someone-else"},
                                                        {"on-gone", "loc-gone"}}) {
    auto r = Submit(e, CaseForm("f-" + id, id,
                                fmt::format("<create><case_type>patient</case_type><case_name>{}"
                                            "</case_name><owner_id>{}</owner_id></create>",
                                            id, owner)));
    REQUIRE_MESSAGE(r.http_status == 201, r.message);
  }
  auto matched = [&](const std::string& criterion) {
    RuleRunOptions o;
    o.dry_run = true;
    o.locations = rules::LoadRuleLocations(m, "demo").value();
    std::vector<std::string> ids;
    o.on_change = [&](const std::string& c) {
      ids.emplace_back(json::parse(c).at("case_id").as_string());
      return true;
    };
    auto s = RunRule(e, RuleJson(criterion, kSetFlag), o);
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    std::sort(ids.begin(), ids.end());
    return ids;
  };
  CHECK(matched(R"({"location_id": "loc-a"})") ==
        std::vector<std::string>{"nurse", "on-a", "on-b"});
  CHECK(matched(R"({"location_id": "loc-a", "include_child_locations": false})") ==
        std::vector<std::string>{"on-a"});
  CHECK(matched(R"({"location_id": "loc-c"})") == std::vector<std::string>{"clerk", "on-c"});
  // No such location: HQ's location is None, so only the exact id matches, without children.
  CHECK(matched(R"({"location_id": "loc-gone"})").empty());
  CHECK(matched(R"({"location_id": "loc-gone", "include_child_locations": false})") ==
        std::vector<std::string>{"on-gone"});
  // Without the locations a run says what it needs; a bad criterion is refused by name.
  auto bare = RunRule(e, RuleJson(R"({"location_id": "loc-a"})", kSetFlag), {});
  CHECK(bare.status().code() == StatusCode::kFailedPrecondition);
  CHECK(bare.status().message().find("location") != std::string::npos);
  CHECK(ValidateRule(RuleJson(R"({"location_id": ""})", kSetFlag))
            .message()
            .find("criteria[0].location_id") != std::string::npos);
  CHECK(ValidateRule(RuleJson(R"({"location_id": "x", "radius": 1})", kSetFlag))
            .message()
            .find("radius") != std::string::npos);
  // Saved and run as a task: the worker loads the host's locations.
  TaskQueue* q = *h->Tasks();
  REQUIRE(SaveRule(q, RuleJson(R"({"location_id": "loc-a"})", kSetFlag)).ok());
  CHECK(RunSavedNow(h.get(), q).at("changed").as_int64() == 3);
  CHECK(Prop(e, "on-b", "flag") == "yes");
  CHECK(Prop(e, "on-c", "flag") == "");
}

// HQ's CaseDeduplicationActionDefinition (corehq/apps/data_interfaces/models.py) and
// find_duplicate_case_ids (deduplication.py): cases of the type whose listed properties are
// equal (exactly, case-sensitively; blanks do not match), the rule's filters applied to each,
// closed cases left out unless include_closed; the updates go to each duplicate.
TEST_CASE("Rules: a deduplicate rule flags the cases whose properties match") {
  auto e = OpenMemory();
  MakeCase(e.get(), "p1", "<first>Ana</first><dob>2020-01-01</dob><village>n</village>");
  MakeCase(e.get(), "p2", "<first>Ana</first><dob>2020-01-01</dob><village>s</village>");
  MakeCase(e.get(), "p3", "<first>ana</first><dob>2020-01-01</dob>");  // case differs
  MakeCase(e.get(), "p4", "<first>Bo</first><dob>2021-02-02</dob><village>n</village>");
  MakeCase(e.get(), "p5", "<first>Bo</first><dob>2021-02-02</dob><village>x</village>");
  MakeCase(e.get(), "p6", "<dob>1999-09-09</dob>");
  MakeCase(e.get(), "p7", "<dob>1999-09-09</dob>");  // first blank in both: still equal under ALL
  MakeCase(e.get(), "p8", "");                       // every listed property blank: never
  MakeCase(e.get(), "p9", "");
  MakeCase(e.get(), "h1", "<first>Ana</first><dob>2020-01-01</dob>", "household");  // other type
  auto dedup = [](const char* match, const char* extra = "") {
    return RuleJson(
        R"({"property_name": "village", "match_type": "NOT_EQUAL", "property_value": "x"})",
        fmt::format(
            R"("deduplicate": {{"match_type": "{}", "case_properties": ["first", "dob"]{}}}, )"
            R"("update": [{{"name": "potential_duplicate", "value": "yes"}}])",
            match, extra));
  };
  std::vector<std::string> changes;
  auto s = Run(e.get(), dedup("ALL"), true, 0, &changes);
  CHECK(s.scanned == 9);
  CHECK(s.matched == 4);  // p1, p2; p6, p7 (p5 fails the filter, so p4 has no duplicate)
  std::map<std::string, std::vector<std::string>> dups;
  for (const auto& c : changes) {
    auto v = json::parse(c);
    for (const auto& d : v.at("duplicates").as_array())
      dups[std::string(v.at("case_id").as_string())].emplace_back(d.as_string());
  }
  CHECK(dups == std::map<std::string, std::vector<std::string>>{
                    {"p1", {"p2"}}, {"p2", {"p1"}}, {"p6", {"p7"}}, {"p7", {"p6"}}});
  CHECK(Prop(e.get(), "p1", "potential_duplicate") == "");  // a dry run
  s = Run(e.get(), dedup("ALL"));
  CHECK(s.changed == 4);
  for (const char* id : {"p1", "p2", "p6", "p7"})
    CHECK(Prop(e.get(), id, "potential_duplicate") == "yes");
  for (const char* id : {"p3", "p4", "p5", "p8", "p9"})
    CHECK(Prop(e.get(), id, "potential_duplicate") == "");
  CHECK(Run(e.get(), dedup("ALL")).changed == 0);  // idempotent
  // ANY: one equal non-blank value links cases (p3 shares dob with p1 and p2).
  s = Run(e.get(), dedup("ANY"), true, 0, &changes);
  CHECK(s.matched == 5);
  CHECK(s.changed == 1);  // p3; the others are flagged already
  // One changed case (a run on change): only its group is looked at.
  RuleRunOptions one;
  one.dry_run = true;
  one.case_id = "p4";
  auto only = RunRule(e.get(), dedup("ANY"), one);
  REQUIRE(only.ok());
  CHECK(only->matched == 0);  // p4's duplicate p5 fails the filter
  // Closed cases are left out unless include_closed.
  REQUIRE(Submit(e.get(), CaseForm("close-p2", "p2", "<close/>")).http_status == 201);
  CHECK(Run(e.get(), dedup("ALL"), true).matched == 2);  // p6, p7
  CHECK(Run(e.get(), dedup("ALL", R"(, "include_closed": true)"), true).matched == 4);
}

TEST_CASE("Rules: bad deduplicate rules are refused naming the field") {
  auto bad = [](const std::string& actions, const std::string& extra = "") {
    Status s = ValidateRule(RuleJson("", actions, extra));
    REQUIRE_FALSE(s.ok());
    return s.message();
  };
  const char* flag = R"("update": [{"name": "dup", "value": "yes"}])";
  CHECK(bad(fmt::format(R"("deduplicate": {{"case_properties": []}}, {})", flag))
            .find("actions.deduplicate.case_properties") != std::string::npos);
  CHECK(bad(fmt::format(R"("deduplicate": {{"case_properties": ["a"], "match_type": "SOME"}}, {})",
                        flag))
            .find("actions.deduplicate.match_type") != std::string::npos);
  CHECK(bad(fmt::format(R"("deduplicate": {{"case_properties": ["a", "a"]}}, {})", flag))
            .find("listed twice") != std::string::npos);
  CHECK(bad(fmt::format(R"("deduplicate": {{"case_properties": ["a"], "fuzzy": true}}, {})", flag))
            .find("actions.deduplicate.fuzzy") != std::string::npos);
  CHECK(
      bad(R"("deduplicate": {"case_properties": ["dup"]}, "update": [{"name": "dup", "value": "y"}])")
          .find("matched on") != std::string::npos);
  CHECK(bad(fmt::format(R"("deduplicate": {{"case_properties": ["a"]}}, "close_case": true, {})",
                        flag))
            .find("actions.close_case") != std::string::npos);
  CHECK(bad(fmt::format(R"("deduplicate": {{"case_properties": ["a"]}}, {})", flag),
            R"(, "case_status": "any")")
            .find("case_status") != std::string::npos);
}
