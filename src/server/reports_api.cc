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
#include "server/named_definitions.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response Fail(const Status& s) { return Error(StatusFor(s), s.message()); }

}  // namespace

Response App::ReportsApi(const Request& r, const std::string& domain, std::string rest) {
  if (auto stop = AdmitNamed(r, domain, "use GET, PUT, DELETE, or POST .../{name}/send"))
    return *stop;
  const auto [name, verb] = SplitNamedPath(std::move(rest));
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
  NamedDefinitions d;
  d.list = [&] { return ListReports(tasks_, domain); };
  d.get = [&](const std::string& n) { return GetReport(tasks_, domain, n); };
  d.save = [&](const std::string& def) { return SaveReport(tasks_, def); };
  d.remove = [&](const std::string& n) { return DeleteReport(tasks_, domain, n); };
  d.texts = {"the body's name is not the URL's", "the report's domain is not this domain",
             "GET lists the reports; PUT .../reports/{name} saves one",
             "PUT a report's definition to save it"};
  return ServeNamedDefinitions(r, domain, {name, verb}, d);
}

}  // namespace commcare::server
