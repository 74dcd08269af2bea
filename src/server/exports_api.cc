// Exports over REST (docs/exports.md):
//   POST /a/{domain}/api/exports/ takes an export definition (or {"saved": NAME}) and enqueues
//     an export.run task (202 with the task; follow it at api/tasks/{id}/);
//   GET  .../{task_id}/download streams the task's file from the export blob store (404: no
//     such export task in the domain or the file is gone; 409: not finished; 410: expired);
//   GET  .../saved/ lists saved definitions; GET|PUT|DELETE .../saved/{name} reads, saves (and
//     schedules) or deletes one; GET .../saved/{name}/download streams its latest file.
// Edit-data to POST, PUT or DELETE; API access to GET.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <memory>

#include "commcare/exports.h"
#include "commcare/storage/blob_store.h"
#include "commcare/tasks.h"
#include "server/app.h"
#include "server/responses.h"
#include "util/time.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

constexpr size_t kChunk = 1u << 20;  // bytes read from the blob store per chunk sent

// Streams a stored export file from the blob store a chunk at a time (memory holds one chunk);
// 410 once it has expired, 404 when its blob is gone.
Response Download(std::shared_ptr<storage::BlobStore> blobs, const StoredExport& s,
                  const std::string& what) {
  if (s.expires_at <= util::NowMicros())
    return Error(410,
                 fmt::format("{}'s file expired at {}", what, util::FormatIsoTime(s.expires_at)));
  auto first = blobs->ReadRange(s.key, 0, kChunk);
  if (!first.ok() && first.status().IsNotFound())
    return Error(404, fmt::format("{}'s file is gone", what));
  if (!first.ok()) return Error(StatusFor(first.status()), first.status().message());
  Response out;
  const std::string& f = s.file_name;
  out.content_type = f.ends_with(".xlsx")
                         ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                     : f.ends_with(".zip")  ? "application/zip"
                     : f.ends_with(".html") ? "text/html; charset=utf-8"
                     : f.ends_with(".json") ? "application/json"
                                            : "text/csv; charset=utf-8";
  out.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + f + "\"");
  out.stream = [blobs, key = s.key,
                chunk = std::move(*first)](const http::ChunkWriter& w) mutable -> Status {
    uint64_t off = 0;
    while (!chunk.empty()) {
      CC_RETURN_IF_ERROR(w(200, chunk));
      off += chunk.size();
      if (chunk.size() < kChunk) break;
      CC_ASSIGN_OR_RETURN(chunk, blobs->ReadRange(key, off, kChunk));
    }
    return Status::Ok();
  };
  return out;
}

// A definition from a request body, for the domain (the default) and saved name when given.
Result<ExportDefinition> BodyDefinition(const Request& r, const std::string& domain,
                                        const std::string& name, int* http_status) {
  *http_status = 400;
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  auto& o = v.get_object();
  if (!o.contains("domain")) o["domain"] = domain;
  if (!name.empty() && !o.contains("name")) o["name"] = name;
  CC_ASSIGN_OR_RETURN(ExportDefinition def, ExportDefinition::FromJson(json::serialize(v)));
  if (def.domain != domain) {
    *http_status = 403;
    return Status::PermissionDenied("the definition's domain is not this domain");
  }
  if (!name.empty() && def.name != name)
    return Status::InvalidArgument(
        fmt::format("export definition: \"name\" is \"{}\", not the URL's \"{}\"", def.name, name));
  return def;
}

// A saved definition's JSON, with its latest file when it has one.
json::value SavedJson(const ExportDefinition& def, storage::BlobStore* blobs) {
  json::value v = json::parse(def.ToJson());
  if (blobs)
    if (auto latest = LatestSavedExport(blobs, def.domain, def.name); latest.ok())
      v.get_object()["latest"] = json::parse(latest->ToJson());
  return v;
}

// .../saved/[{name}[/download]]: the saved definitions of a domain.
Response SavedApi(const Request& r, const std::string& data_dir, TaskQueue* tasks,
                  const std::string& domain, const std::string& rest) {
  if (data_dir.empty()) return Error(503, "saved exports need a data directory");
  auto blobs = ExportBlobStore(data_dir);
  if (!blobs.ok()) return Error(StatusFor(blobs.status()), blobs.status().message());
  const auto slash = rest.find('/');
  const std::string name = rest.substr(0, slash);
  const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (name.empty()) {
    if (r.method != "GET") return Error(405, "GET the saved exports; PUT saved/{name} to save");
    auto names = ListExportDefinitions(data_dir, domain);
    if (!names.ok()) return Error(StatusFor(names.status()), names.status().message());
    json::array objects;
    for (const auto& n : *names)
      if (auto def = LoadExportDefinition(data_dir, domain, n); def.ok())
        objects.push_back(SavedJson(*def, nullptr));
    return Json(200, json::object{{"objects", std::move(objects)}});
  }
  if (verb == "download") {
    if (r.method != "GET") return Error(405, "GET saved/{name}/download");
    auto def = LoadExportDefinition(data_dir, domain, name);
    if (!def.ok()) return Error(404, def.status().message());
    auto latest = LatestSavedExport(blobs->get(), domain, name);
    if (!latest.ok()) return Error(StatusFor(latest.status()), latest.status().message());
    return Download(*blobs, *latest, fmt::format("saved export \"{}\"", name));
  }
  if (!verb.empty()) return Error(404, "no such route: saved/{name} or saved/{name}/download");
  if (r.method == "GET") {
    auto def = LoadExportDefinition(data_dir, domain, name);
    if (!def.ok()) return Error(StatusFor(def.status()), def.status().message());
    return Json(200, SavedJson(*def, blobs->get()));
  }
  if (r.method == "DELETE") {
    Status s = DeleteSavedExport(data_dir, tasks, blobs->get(), domain, name);
    if (!s.ok()) return Error(StatusFor(s), s.message());
    return Json(200, json::object{{"deleted", name}});
  }
  if (r.method != "PUT") return Error(405, "use GET, PUT or DELETE on saved/{name}");
  int code = 400;
  auto def = BodyDefinition(r, domain, name, &code);
  if (!def.ok()) return Error(code, def.status().message());
  Status s = PutSavedExport(data_dir, tasks, *def);
  if (!s.ok()) return Error(StatusFor(s), s.message());
  return Json(200, SavedJson(*def, nullptr));
}

}  // namespace

Response App::ExportsApi(const Request& r, const std::string& domain, std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  const bool write = r.method == "POST" || r.method == "PUT" || r.method == "DELETE";
  if (!write && r.method != "GET") return Error(405, "use GET, or POST to start an export");
  Response deny;
  auto user = Admit(r, domain, write ? meta::kEditData : meta::kAccessApi, &deny);
  if (!user) return deny;
  if (!tasks_) return Error(503, "this server has no task queue");
  const std::string& data_dir = engine_->Options().data_dir;
  if (rest == "saved" || rest.starts_with("saved/"))
    return SavedApi(r, data_dir, tasks_, domain, rest == "saved" ? "" : rest.substr(6));
  if (rest.empty()) {
    if (r.method != "POST") return Error(405, "POST an export definition");
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
      int code = 400;
      auto def = BodyDefinition(r, domain, "", &code);
      if (!def.ok()) return Error(code, def.status().message());
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
  if (verb != "download" || r.method != "GET")
    return Error(404, "no such route: GET .../{id}/download");
  char* end = nullptr;
  const int64_t id = std::strtoll(id_text.c_str(), &end, 10);
  if (*end || id <= 0) return Error(404, "no such export");
  auto t = tasks_->Get(id);
  if (!t.ok() || t->spec.domain != domain || t->spec.type != "export.run")
    return Error(404, fmt::format("export {} does not exist", id));
  if (t->state != TaskState::kSucceeded)
    return Error(409, fmt::format("export {} is {}", id, TaskStateName(t->state)));
  auto stored = StoredExport::FromJson(t->result);
  if (!stored.ok()) return Error(404, fmt::format("export {}'s file is gone", id));
  auto blobs = ExportBlobStore(data_dir);
  if (!blobs.ok()) return Error(StatusFor(blobs.status()), blobs.status().message());
  return Download(*blobs, *stored, fmt::format("export {}", id));
}

}  // namespace commcare::server
