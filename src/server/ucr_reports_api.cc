// /a/{domain}/api/ucr/report/{id}/: HQ's UCR report configurations (ReportConfiguration),
// kept as MetaStore documents of kind ucr_report and run over their data source's table
// (integrations/ucr_report_config.h). GET answers HQ's configurablereportdata JSON, or CSV with
// format=csv; PUT stores a configuration; DELETE removes it.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdlib>

#include "commcare/pillows.h"
#include "integrations/ucr_report_config.h"
#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

constexpr const char* kKind = "ucr_report";

// limit (1..1000, default 50) and offset from the query.
Status Paging(const Request& r, size_t* limit, size_t* offset) {
  for (const char* k : {"limit", "offset"}) {
    auto it = r.query.find(k);
    if (it == r.query.end()) continue;
    char* end = nullptr;
    const long n = std::strtol(it->second.c_str(), &end, 10);
    const bool is_limit = std::string_view(k) == "limit";
    if (it->second.empty() || *end || n < (is_limit ? 1 : 0) || (is_limit && n > 1000))
      return Status::InvalidArgument(is_limit ? "limit: must be 1..1000"
                                              : "offset: must be a non-negative integer");
    *(is_limit ? limit : offset) = static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

Response App::UcrReportApi(const Request& r, const std::string& domain, std::string id) {
  while (!id.empty() && id.back() == '/') id.pop_back();
  if (id.empty() || id.find('/') != std::string::npos)
    return Error(404, "name a report: /a/{domain}/api/ucr/report/{id}/");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  if (r.method == "PUT" || r.method == "DELETE") {
    if (!user->Can(domain, meta::kEditData))
      return Error(403,
                   fmt::format("user {} may not edit data in domain {}", user->username, domain));
    auto old = meta_->GetDoc(kKind, domain, id);
    if (!old.ok() && !old.status().IsNotFound())
      return Error(StatusFor(old.status()), old.status().message());
    if (r.method == "DELETE") {
      if (!old.ok()) return Error(404, fmt::format("no report configuration '{}'", id));
      Status s = meta_->DeleteDoc(kKind, domain, id, old->rev);
      if (!s.ok()) return Error(StatusFor(s), s.message());
      return Json(200, json::object{{"deleted", id}});
    }
    auto config = reports::UcrReportConfiguration::FromJson(r.body);
    if (!config.ok()) return Error(400, config.status().message());
    meta::Doc d{kKind, id, domain, json::parse(r.body).as_object(), old.ok() ? old->rev : 0};
    auto put = meta_->PutDoc(std::move(d));
    if (!put.ok()) return Error(StatusFor(put.status()), put.status().message());
    return Json(200, json::object{{"id", put->id}, {"_rev", put->rev}});
  }
  if (r.method != "GET") return Error(405, "a report configuration serves GET, PUT and DELETE");
  auto doc = meta_->GetDoc(kKind, domain, id);
  if (!doc.ok()) return Error(404, fmt::format("no report configuration '{}'", id));
  auto config = reports::UcrReportConfiguration::FromJson(json::serialize(doc->body));
  if (!config.ok()) return Error(500, config.status().message());
  size_t limit = 50, offset = 0;
  if (Status s = Paging(r, &limit, &offset); !s.ok()) return Error(400, s.message());
  const std::string format = r.Param("format", "json");
  if (format != "json" && format != "csv") return Error(400, "format: must be json or csv");
  auto rows = UcrRows(pillows_dir_, domain, config->config_id, size_t(1) << 40, 0);
  if (!rows.ok()) return Error(StatusFor(rows.status()), rows.status().message());
  auto data = reports::RunUcrReport(*config, *rows, r.query, {"limit", "offset", "format"});
  if (!data.ok()) return Error(StatusFor(data.status()), data.status().message());
  Response out;
  if (format == "csv") {
    out.content_type = "text/csv; charset=utf-8";
    out.body = data->ToCsv();
    return out;
  }
  std::string link = fmt::format("/a/{}/api/ucr/report/{}/?", domain, id);
  if (const auto* host = r.Header("host"))
    link = fmt::format("{}://{}{}", r.tls ? "https" : "http", *host, link);
  for (const auto& [k, v] : r.query)
    if (k != "offset" && k != "limit") link += UrlEncode(k) + "=" + UrlEncode(v) + "&";
  out.body = data->ToJson(offset, limit, link);
  return out;
}

}  // namespace commcare::server
