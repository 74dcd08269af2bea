// Case update rules over REST (include/commcare/rules.h): GET /a/{domain}/api/rules/ lists the
// domain's rules and POST there adds one (the body is the rule; "domain" defaults to the URL's);
// GET|PUT|DELETE .../rules/{name} reads, saves and deletes one; POST .../{name}/run queues
// rule.run now (202 with the task: follow it at api/tasks/{id}/); GET .../{name}/dry_run lists
// the changes the rule would make ({"changes": [...], "truncated", "summary"}, at most `limit`,
// default 1000). Reading needs API access, changing and running edit-data.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "commcare/rules.h"
#include "commcare/tasks.h"
#include "integrations/rules/locations.h"
#include "server/app.h"
#include "server/named_definitions.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response Fail(const Status& s) { return Error(StatusFor(s), s.message()); }

}  // namespace

Response App::RulesApi(const Request& r, const std::string& domain, std::string rest) {
  if (auto stop = AdmitNamed(r, domain, "use GET, POST, PUT or DELETE")) return *stop;
  const auto [name, verb] = SplitNamedPath(std::move(rest));
  if (verb == "run") {
    if (r.method != "POST") return Error(405, "POST .../{name}/run");
    auto id = RunRuleLater(tasks_, domain, name);
    if (!id.ok()) return Fail(id.status());
    auto t = tasks_->Get(*id);
    if (!t.ok()) return Fail(t.status());
    return Json(202, json::parse(t->ToJson()));
  }
  if (verb == "dry_run") {
    if (r.method != "GET" && r.method != "POST") return Error(405, "GET .../{name}/dry_run");
    int64_t limit = 1000;
    try {
      limit = std::stoll(r.Param("limit", "1000"));
    } catch (...) {
      return Error(400, "limit: must be a whole number");
    }
    json::array changes;
    bool truncated = false;
    RuleRunOptions o;
    o.dry_run = true;
    o.case_id = r.Param("case_id");
    o.on_change = [&](const std::string& c) {
      if (static_cast<int64_t>(changes.size()) >= limit) return !(truncated = true);
      changes.push_back(json::parse(c));
      return true;
    };
    auto locations = rules::LoadRuleLocations(meta_, domain);
    if (!locations.ok()) return Fail(locations.status());
    o.locations = std::move(*locations);
    auto s = RunSavedRule(engine_, tasks_, domain, name, o);
    if (!s.ok()) return Fail(s.status());
    return Json(200, json::object{{"changes", std::move(changes)},
                                  {"truncated", truncated},
                                  {"summary", json::parse(s->ToJson(domain, name))}});
  }
  if (!verb.empty()) return Error(404, "no such route: .../rules/{name}[/run|/dry_run]");
  NamedDefinitions d;
  d.list = [&] { return ListRules(tasks_, domain); };
  d.get = [&](const std::string& n) { return GetRule(tasks_, domain, n); };
  d.save = [&](const std::string& def) { return SaveRule(tasks_, def); };
  d.remove = [&](const std::string& n) { return DeleteRule(tasks_, domain, n); };
  d.post_adds = true;
  d.texts = {"name: the body's name is not the URL's",
             "domain: the rule's domain is not this domain", "GET lists the rules; POST adds one",
             "PUT .../rules/{name} saves a rule"};
  return ServeNamedDefinitions(r, domain, {name, verb}, d);
}

}  // namespace commcare::server
