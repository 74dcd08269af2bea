// Exports over REST: POST /a/{domain}/api/exports/ takes an export definition (or
// {"saved": NAME}) and enqueues an export.run task (202 with the task; follow it at
// api/tasks/{id}/); GET /a/{domain}/api/exports/{task_id}/download streams the file once the
// task has succeeded (404: no such export task in the domain; 409: not finished or failed).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdio>
#include <memory>

#include "commcare/exports.h"
#include "commcare/tasks.h"
#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

Response App::ExportsApi(const Request& r, const std::string& domain, std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  const bool write = r.method == "POST";
  if (!write && r.method != "GET") return Error(405, "use GET, or POST to start an export");
  Response deny;
  auto user = Admit(r, domain, write ? meta::kEditData : meta::kAccessApi, &deny);
  if (!user) return deny;
  if (!tasks_) return Error(503, "this server has no task queue");
  if (rest.empty()) {
    if (!write) return Error(405, "POST an export definition");
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object()) return Error(400, "the body must be a JSON object");
    TaskSpec s;
    s.type = "export.run";
    s.domain = domain;
    if (v.get_object().contains("saved")) {
      const auto& n = v.get_object().at("saved");
      if (!n.is_string() || v.get_object().size() != 1)
        return Error(400, "{\"saved\": NAME} takes a name only");
      s.payload = json::serialize(v);
    } else {
      if (!v.get_object().contains("domain")) v.get_object()["domain"] = domain;
      auto def = ExportDefinition::FromJson(json::serialize(v));
      if (!def.ok()) return Error(400, def.status().message());
      if (def->domain != domain) return Error(403, "the definition's domain is not this domain");
      s.payload = def->ToJson();
    }
    auto id = tasks_->Enqueue(s);
    if (!id.ok()) return Error(StatusFor(id.status()), id.status().message());
    auto t = tasks_->Get(*id);
    if (!t.ok()) return Error(StatusFor(t.status()), t.status().message());
    return Json(202, json::parse(t->ToJson()));
  }
  const auto slash = rest.find('/');
  const std::string id_text = rest.substr(0, slash);
  const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (verb != "download" || write) return Error(404, "no such route: GET .../{id}/download");
  char* end = nullptr;
  const int64_t id = std::strtoll(id_text.c_str(), &end, 10);
  if (*end || id <= 0) return Error(404, "no such export");
  auto t = tasks_->Get(id);
  if (!t.ok() || t->spec.domain != domain || t->spec.type != "export.run")
    return Error(404, fmt::format("export {} does not exist", id));
  if (t->state != TaskState::kSucceeded)
    return Error(409, fmt::format("export {} is {}", id, TaskStateName(t->state)));
  boost::system::error_code ec;
  json::value res = json::parse(t->result, ec);
  std::string file;
  if (res.is_object())
    if (const auto* f = res.get_object().if_contains("file"); f && f->is_string())
      file = std::string(f->get_string());
  std::shared_ptr<FILE> fp(file.empty() ? nullptr : fopen(file.c_str(), "rb"), [](FILE* f) {
    if (f) fclose(f);
  });
  if (!fp) return Error(404, fmt::format("export {}'s file is gone (kept 7 days)", id));
  Response out;
  const bool xlsx = file.size() > 5 && file.substr(file.size() - 5) == ".xlsx";
  const bool zip = file.size() > 4 && file.substr(file.size() - 4) == ".zip";
  out.content_type = xlsx  ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                     : zip ? "application/zip"
                           : "text/csv; charset=utf-8";
  std::string name = file.substr(file.find_last_of('/') + 1);
  out.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + name + "\"");
  out.stream = [fp](const http::ChunkWriter& w) -> Status {
    std::string buf(1 << 16, '\0');
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), fp.get())) > 0)
      CC_RETURN_IF_ERROR(w(200, std::string_view(buf.data(), n)));
    return Status::Ok();
  };
  return out;
}

}  // namespace commcare::server
