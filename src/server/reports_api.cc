// Scheduled reports over REST (include/commcare/reports.h): GET /a/{domain}/api/reports/ lists
// the domain's saved reports; GET|PUT|DELETE .../reports/{name} reads, saves (the body is the
// definition; name and domain default to the URL's) and deletes one; POST .../{name}/send queues
// report.send now (202 with the task: follow it at api/tasks/{id}/); GET .../{name}/preview
// renders it from its UCR table ({"header", "rows", "totals", "source_rows"}). Reading needs API
// access, changing and sending edit-data.
#include <fmt/format.h>

#include <boost/json.hpp>

#include "commcare/reports.h"
#include "commcare/tasks.h"
#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response Fail(const Status& s) { return Error(StatusFor(s), s.message()); }

// The definition of a PUT body: "name" and "domain" default to the URL's and must match it.
Result<std::string> Definition(const std::string& body, const std::string& domain,
                               const std::string& name, int* status) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  *status = 400;
  if (ec || !v.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  json::object& o = v.get_object();
  if (!o.contains("name")) o["name"] = name;
  if (!o.contains("domain")) o["domain"] = domain;
  if (!o.at("name").is_string() || o.at("name").get_string() != name)
    return Status::InvalidArgument("the body's name is not the URL's");
  if (!o.at("domain").is_string() || o.at("domain").get_string() != domain) {
    *status = 403;
    return Status::PermissionDenied("the report's domain is not this domain");
  }
  return json::serialize(v);
}

}  // namespace

Response App::ReportsApi(const Request& r, const std::string& domain, std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  const auto slash = rest.find('/');
  const std::string name = rest.substr(0, slash);
  const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  const bool write = r.method != "GET" && r.method != "HEAD";
  if (r.method != "GET" && r.method != "PUT" && r.method != "DELETE" && r.method != "POST")
    return Error(405, "use GET, PUT, DELETE, or POST .../{name}/send");
  Response deny;
  auto user = Admit(r, domain, write ? meta::kEditData : meta::kAccessApi, &deny);
  if (!user) return deny;
  if (!tasks_) return Error(503, "this server has no task queue");
  if (name.empty()) {
    if (write) return Error(405, "GET lists the reports; PUT .../reports/{name} saves one");
    auto all = ListReports(tasks_, domain);
    if (!all.ok()) return Fail(all.status());
    json::array objects;
    for (const auto& line : *all) objects.push_back(json::parse(line));
    return Json(200, json::object{{"objects", std::move(objects)}});
  }
  if (verb == "send") {
    if (r.method != "POST") return Error(405, "POST .../{name}/send");
    auto id = SendReportNow(tasks_, domain, name);
    if (!id.ok()) return Fail(id.status());
    auto t = tasks_->Get(*id);
    if (!t.ok()) return Fail(t.status());
    return Json(202, json::parse(t->ToJson()));
  }
  if (verb == "preview") {
    if (r.method != "GET") return Error(405, "GET .../{name}/preview");
    auto t = PreviewReport(tasks_, pillows_dir_, domain, name);
    if (!t.ok()) return Fail(t.status());
    return Json(200, json::parse(t->ToJson()));
  }
  if (!verb.empty()) return Error(404, "no such route: .../reports/{name}[/send|/preview]");
  if (r.method == "GET") {
    auto line = GetReport(tasks_, domain, name);
    if (!line.ok()) return Fail(line.status());
    return Json(200, json::parse(*line));
  }
  if (r.method == "DELETE") {
    Status st = DeleteReport(tasks_, domain, name);
    if (!st.ok()) return Fail(st);
    return Json(200, json::object{{"name", name}, {"deleted", true}});
  }
  if (r.method != "PUT") return Error(405, "PUT a report's definition to save it");
  int status = 400;
  auto def = Definition(r.body, domain, name, &status);
  if (!def.ok()) return Error(status, def.status().message());
  const bool existed = GetReport(tasks_, domain, name).ok();
  auto saved = SaveReport(tasks_, *def);
  if (!saved.ok()) return Fail(saved.status());
  return Json(existed ? 200 : 201, json::parse(*saved));
}

}  // namespace commcare::server
