// Case import and bulk case edit over REST (docs/import.md):
//   POST /a/{domain}/api/import/cases/?case_type=T[&search_field=case_id|external_id]
//        [&search_column=C][&create_new=true][&map=COLUMN:PROPERTY...][&dry_run=true]
//     the body is the CSV or XLSX file (raw, or a multipart/form-data part named "file", whose
//     other parts may carry the same options). A dry run answers 200 inline with the result and
//     every problem row; otherwise the file is stored and an import.cases task is enqueued
//     (202 with the task; follow it at api/tasks/{id}/).
//   GET  .../cases/{task_id}/result streams the per-row result file (JSON lines) of a finished
//     import (404: no such import in the domain; 409: not finished).
//   POST /a/{domain}/api/import/edit/ {"filter": {...}, "set": {...}, "close": bool,
//     "preview": bool}: a preview answers 200 with the count; else 202 with the bulk edit task.
//   POST /a/{domain}/importer/excel/bulk_upload_api/: HQ's case importer API
//     (corehq/apps/case_importer/views.py bulk_case_upload_api): multipart file, case_type,
//     search_field, search_column, create_new_cases ("on"), name_column, comment; answers
//     {"code": 200, "message": "success", "status_url"} with the import task's URL.
// Edit-data permission for all of it.
#include <fmt/format.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "commcare/exports.h"
#include "commcare/importer.h"
#include "commcare/storage/blob_store.h"
#include "commcare/tasks.h"
#include "server/app.h"
#include "server/responses.h"
#include "xform/parser.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

// Applies one option (from the query or a multipart field); false names a bad one in *err.
bool Option(const std::string& k, const std::string& v, CaseImportOptions* o, std::string* err) {
  if (k == "case_type")
    o->case_type = v;
  else if (k == "search_field")
    o->search_field = v;
  else if (k == "search_column")
    o->search_column = v;
  else if (k == "create_new" || k == "dry_run") {
    if (v != "true" && v != "false") return *err = k + " must be true or false", false;
    (k == "create_new" ? o->create_new : o->dry_run) = v == "true";
  } else if (k == "map") {
    auto c = v.find(':');
    if (c == std::string::npos || c == 0) return *err = "map must be COLUMN:PROPERTY", false;
    o->columns[v.substr(0, c)] = v.substr(c + 1);
  } else if (k == "chunk_size") {
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n < 1 || n > 1000) return *err = "chunk_size must be 1..1000", false;
    o->chunk_size = static_cast<int>(n);
  } else {
    return *err = fmt::format("unknown parameter '{}'", k), false;
  }
  return true;
}

// A dry run of the uploaded bytes: written to a temp file, imported dry, removed.
Response DryRun(Engine* engine, meta::MetaStore* meta, const CaseImportOptions& o,
                std::string_view file) {
  char tmpl[] = "/tmp/commcare-import-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) return Error(500, "cannot make a temp file for the dry run");
  bool ok = ::write(fd, file.data(), file.size()) == static_cast<ssize_t>(file.size());
  ::close(fd);
  json::array problems;
  auto r =
      ok ? ImportCases(engine, meta, o, tmpl, {},
                       [&](const ImportProblem& p) { problems.push_back(json::parse(p.ToJson())); })
         : Result<CaseImportResult>(Status::Internal("cannot write the dry run's temp file"));
  std::remove(tmpl);
  if (!r.ok()) return Error(StatusFor(r.status()), r.status().message());
  json::value v = json::parse(r->ToJson());
  v.get_object()["problems"] = std::move(problems);
  return Json(200, v);
}

}  // namespace

Response App::ImportApi(const Request& r, const std::string& domain, std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  Response deny;
  auto user = Admit(r, domain, meta::kEditData, &deny);
  if (!user) return deny;
  if (!tasks_) return Error(503, "this server has no task queue");
  const std::string& data_dir = engine_->Options().data_dir;
  if (rest == "edit") {
    if (r.method != "POST") return Error(405, "POST a bulk edit");
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object()) return Error(400, "the body must be a JSON object");
    auto& ob = v.get_object();
    if (ob.contains("domain") && ob["domain"] != json::value(domain))
      return Error(403, "the bulk edit's domain is not this domain");
    ob["domain"] = domain;
    ob["user_id"] = user->user_id;
    ob["username"] = user->username;
    auto o = BulkEditOptionsFromJson(json::serialize(v));
    if (!o.ok()) return Error(400, o.status().message());
    if (o->preview) {
      auto res = BulkEditCases(engine_, *o);
      if (!res.ok()) return Error(StatusFor(res.status()), res.status().message());
      return Json(200, json::parse(res->ToJson()));
    }
    auto id = EnqueueBulkEdit(tasks_, *o);
    if (!id.ok()) return Error(StatusFor(id.status()), id.status().message());
    auto t = tasks_->Get(*id);
    if (!t.ok()) return Error(StatusFor(t.status()), t.status().message());
    return Json(202, json::parse(t->ToJson()));
  }
  if (rest == "cases") {
    if (r.method != "POST") return Error(405, "POST the file to import");
    CaseImportOptions o;
    o.domain = domain;
    o.user_id = user->user_id;
    o.username = user->username;
    std::string err;
    for (const auto& [k, v] : r.query)
      if (!Option(k, v, &o, &err)) return Error(400, err);
    std::string_view file = r.body;
    std::vector<xform::MultipartPart> parts;
    const auto* ct = r.Header("content-type");
    if (std::string b = xform::MultipartBoundary(ct ? *ct : ""); !b.empty()) {
      if (Status s = xform::ParseMultipart(r.body, b, &parts); !s.ok())
        return Error(400, s.message());
      bool found = false;
      for (const auto& p : parts) {
        if (p.name == "file") {
          file = p.data;
          found = true;
        } else if (!Option(p.name, std::string(p.data), &o, &err)) {
          return Error(400, err);
        }
      }
      if (!found) return Error(400, "the multipart body has no part named \"file\"");
    }
    if (o.case_type.empty()) return Error(400, "case_type: is required");
    if (file.empty()) return Error(400, "the file is empty");
    if (o.dry_run) return DryRun(engine_, meta_, o, file);
    auto id = EnqueueCaseImport(tasks_, data_dir, o, file);
    if (!id.ok()) return Error(StatusFor(id.status()), id.status().message());
    auto t = tasks_->Get(*id);
    if (!t.ok()) return Error(StatusFor(t.status()), t.status().message());
    return Json(202, json::parse(t->ToJson()));
  }
  // cases/{task_id}/result
  const std::string prefix = "cases/", suffix = "/result";
  if (!rest.starts_with(prefix) || !rest.ends_with(suffix) || r.method != "GET")
    return Error(404, "no such route: POST cases/, GET cases/{id}/result, POST edit/");
  const std::string id_text =
      rest.substr(prefix.size(), rest.size() - prefix.size() - suffix.size());
  char* end = nullptr;
  const int64_t id = std::strtoll(id_text.c_str(), &end, 10);
  if (*end || id <= 0) return Error(404, "no such import");
  auto t = tasks_->Get(id);
  if (!t.ok() || t->spec.domain != domain || t->spec.type != "import.cases")
    return Error(404, fmt::format("import {} does not exist", id));
  if (t->state != TaskState::kSucceeded)
    return Error(409, fmt::format("import {} is {}", id, TaskStateName(t->state)));
  boost::system::error_code ec;
  json::value res = json::parse(t->result, ec);
  const json::value* key =
      ec || !res.is_object() ? nullptr : res.get_object().if_contains("result_key");
  if (!key || !key->is_string()) return Error(404, fmt::format("import {} has no result file", id));
  auto blobs = ExportBlobStore(data_dir);
  if (!blobs.ok()) return Error(StatusFor(blobs.status()), blobs.status().message());
  auto body = (*blobs)->Get(key->get_string());
  if (!body.ok()) return Error(StatusFor(body.status()), body.status().message());
  Response out;
  out.content_type = "application/x-ndjson";
  out.body = std::move(*body);
  return out;
}

// HQ's _bulk_case_upload_api: every column is a case property of its own name, but name_column
// (default "name") sets the case name. HQ answers every failure {"code": 500, "message"} with
// HTTP 500; here the body is the same and the HTTP status says whose fault it is (400 for the
// request). The comment is accepted and not kept (imports here have none).
Response App::BulkUploadApi(const Request& r, const std::string& domain) {
  auto fail = [](int status, const std::string& message) {
    return Json(status, json::object{{"code", 500}, {"message", message}});
  };
  if (r.method != "POST") return Error(405, "POST the file as multipart/form-data");
  Response deny;
  auto user = Admit(r, domain, meta::kEditData, &deny);
  if (!user) return deny;
  if (!tasks_) return fail(503, "this server has no task queue");
  std::vector<xform::MultipartPart> parts;
  const auto* ct = r.Header("content-type");
  if (std::string b = xform::MultipartBoundary(ct ? *ct : ""); !b.empty())
    if (Status s = xform::ParseMultipart(r.body, b, &parts); !s.ok()) return fail(400, s.message());
  std::map<std::string, std::string> form;
  std::string_view file;
  for (const auto& p : parts) {
    if (p.name == "file")
      file = p.data;
    else
      form[p.name] = std::string(p.data);
  }
  if (file.empty() || form["case_type"].empty())
    return fail(400, "Invalid POST request. Both 'file' and 'case_type' are required");
  CaseImportOptions o;
  o.domain = domain;
  o.user_id = user->user_id;
  o.username = user->username;
  o.case_type = form["case_type"];
  o.search_field = form.count("search_field") ? form["search_field"] : "case_id";
  if (o.search_field != "case_id" && o.search_field != "external_id")
    return fail(400, "Illegal value for search_field: " + o.search_field);
  o.search_column = form.count("search_column") ? form["search_column"] : o.search_field;
  o.create_new = form["create_new_cases"] == "on";
  const std::string name_column = form.count("name_column") ? form["name_column"] : "name";
  if (name_column != "name") o.columns[name_column] = "name";
  for (const auto& [k, v] : form)
    if (k != "case_type" && k != "search_field" && k != "search_column" &&
        k != "create_new_cases" && k != "name_column" && k != "comment")
      return fail(400, fmt::format("unknown field '{}'", k));
  auto id = EnqueueCaseImport(tasks_, engine_->Options().data_dir, o, file);
  if (!id.ok()) return fail(StatusFor(id.status()), std::string(id.status().message()));
  // HQ's absolute_reverse: this server's scheme and host (the path alone without a Host).
  const auto* host = r.Header("host");
  const std::string origin =
      host ? fmt::format("{}://{}", r.tls ? "https" : "http", *host) : std::string();
  return Json(
      200, json::object{{"code", 200},
                        {"message", "success"},
                        {"status_url", fmt::format("{}/a/{}/api/tasks/{}/", origin, domain, *id)}});
}

}  // namespace commcare::server
