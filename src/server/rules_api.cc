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
#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response Fail(const Status& s) { return Error(StatusFor(s), s.message()); }

// The rule of a body: "domain" defaults to the URL's and must match it; so must "name" when the
// URL has one.
Result<std::string> Definition(const std::string& body, const std::string& domain,
                               const std::string& name, int* status) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  *status = 400;
  if (ec || !v.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  json::object& o = v.get_object();
  if (!name.empty() && !o.contains("name")) o["name"] = name;
  if (!o.contains("domain")) o["domain"] = domain;
  if (!name.empty() && (!o.at("name").is_string() || o.at("name").get_string() != name))
    return Status::InvalidArgument("name: the body's name is not the URL's");
  if (!o.at("domain").is_string() || o.at("domain").get_string() != domain) {
    *status = 403;
    return Status::PermissionDenied("domain: the rule's domain is not this domain");
  }
  return json::serialize(v);
}

}  // namespace

Response App::RulesApi(const Request& r, const std::string& domain, std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  const auto slash = rest.find('/');
  const std::string name = rest.substr(0, slash);
  const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  const bool write = r.method != "GET" && r.method != "HEAD";
  if (r.method != "GET" && r.method != "PUT" && r.method != "DELETE" && r.method != "POST")
    return Error(405, "use GET, POST, PUT or DELETE");
  Response deny;
  auto user = Admit(r, domain, write ? meta::kEditData : meta::kAccessApi, &deny);
  if (!user) return deny;
  if (!tasks_) return Error(503, "this server has no task queue");
  if (name.empty()) {
    if (r.method == "GET") {
      auto all = ListRules(tasks_, domain);
      if (!all.ok()) return Fail(all.status());
      json::array objects;
      for (const auto& line : all.value()) objects.push_back(json::parse(line));
      return Json(200, json::object{{"objects", std::move(objects)}});
    }
    if (r.method != "POST") return Error(405, "GET lists the rules; POST adds one");
  }
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
    auto s = RunSavedRule(engine_, tasks_, domain, name, o);
    if (!s.ok()) return Fail(s.status());
    return Json(200, json::object{{"changes", std::move(changes)},
                                  {"truncated", truncated},
                                  {"summary", json::parse(s->ToJson(domain, name))}});
  }
  if (!verb.empty()) return Error(404, "no such route: .../rules/{name}[/run|/dry_run]");
  if (r.method == "GET") {
    auto line = GetRule(tasks_, domain, name);
    if (!line.ok()) return Fail(line.status());
    return Json(200, json::parse(*line));
  }
  if (r.method == "DELETE") {
    Status st = DeleteRule(tasks_, domain, name);
    if (!st.ok()) return Fail(st);
    return Json(200, json::object{{"name", name}, {"deleted", true}});
  }
  if (r.method == "POST" && !name.empty()) return Error(405, "PUT .../rules/{name} saves a rule");
  int status = 400;
  auto def = Definition(r.body, domain, name, &status);
  if (!def.ok()) return Error(status, def.status().message());
  auto parsed = json::parse(*def);
  const json::value* nv = parsed.get_object().if_contains("name");
  const std::string rule_name = nv && nv->is_string() ? std::string(nv->get_string()) : "";
  const bool existed = !rule_name.empty() && GetRule(tasks_, domain, rule_name).ok();
  auto saved = SaveRule(tasks_, *def);
  if (!saved.ok()) return Fail(saved.status());
  return Json(existed ? 200 : 201, json::parse(*saved));
}

}  // namespace commcare::server
