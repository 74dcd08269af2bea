// The C ABI's exports and scheduled reports: an export run in the calling thread (with a
// progress callback), saved export definitions (as JSON through include/commcare/exports.h, so
// fields added there pass through), export.run tasks; reports saved as schedules, sent now,
// rendered (include/commcare/reports.h).
#include "c_api_internal.h"
#include "commcare/exports.h"
#include "commcare/reports.h"
#include "commcare/tasks.h"
#include "util/time.h"

using namespace commcare;
using namespace commcare::capi;

namespace {

// The engine open for one call, and its data directory (saved definitions live there).
Status DataDir(cc_engine* e, Use* use, std::string* dir) {
  CC_RETURN_IF_ERROR(Open(e, use));
  *dir = e->host->options().engine.data_dir;
  if (dir->empty())
    return Status::FailedPrecondition(
        "saved export definitions need an engine on a data directory");
  return Status::Ok();
}

Status Queue(cc_engine* e, Use* use, TaskQueue** q) {
  CC_RETURN_IF_ERROR(Open(e, use));
  CC_ASSIGN_OR_RETURN(*q, e->host->Tasks());
  return Status::Ok();
}

// An export definition from JSON text (FromJson names a bad field).
Result<ExportDefinition> Definition(const char* p, const char* what) {
  std::string text;
  CC_RETURN_IF_ERROR(Arg(p, what, &text));
  auto def = ExportDefinition::FromJson(text);
  if (!def.ok())
    return Status::InvalidArgument(fmt::format("{}: {}", what, def.status().message()));
  return def;
}

std::string ResultJson(const ExportResult& r) {
  json::array tables;
  for (const auto& t : r.tables) tables.emplace_back(t);
  return json::serialize(
      json::object{{"file", r.file}, {"rows", r.rows}, {"tables", std::move(tables)}});
}

// The shape of the report calls: out checked (when out_required), the engine's queue opened,
// fn's text handed out through out.
template <typename F>
int ReportCall(char** out, bool out_required, cc_engine* e, F&& fn) {
  return Fence([&]() -> Status {
    if (out_required) CC_RETURN_IF_ERROR(NeedOut(out));
    if (out) *out = nullptr;
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    CC_ASSIGN_OR_RETURN(std::string text, fn(q));
    return Out(out, text);
  });
}

}  // namespace

extern "C" {

int cc_export_run(char** out_result, cc_engine* e, const char* definition_json,
                  const char* out_path, cc_progress_fn progress, void* payload) {
  return Fence([&]() -> Status {
    if (out_result) *out_result = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(ExportDefinition def, Definition(definition_json, "definition_json"));
    std::string path;
    CC_RETURN_IF_ERROR(Arg(out_path, "out_path", &path));
    ExportProgress p;
    if (progress)
      p = [progress, payload](int64_t done, int64_t total) {
        return progress(done, total, payload) == 0;
      };
    CC_ASSIGN_OR_RETURN(ExportResult r, RunExport(use.engine, def, path, p));
    return Out(out_result, ResultJson(r));
  });
}

int cc_export_save(cc_engine* e, const char* definition_json) {
  return Fence([&]() -> Status {
    Use use;
    std::string dir;
    CC_RETURN_IF_ERROR(DataDir(e, &use, &dir));
    CC_ASSIGN_OR_RETURN(ExportDefinition def, Definition(definition_json, "definition_json"));
    if (def.name.empty()) return Status::InvalidArgument("definition_json: name: is required");
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    return PutSavedExport(dir, q, def);  // with its daily schedule, if it has one
  });
}

int cc_export_load(char** out, cc_engine* e, const char* domain, const char* name) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    std::string dir, d, n;
    CC_RETURN_IF_ERROR(DataDir(e, &use, &dir));
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_ASSIGN_OR_RETURN(ExportDefinition def, LoadExportDefinition(dir, d, n));
    return Out(out, def.ToJson());
  });
}

int cc_export_list(char** out, cc_engine* e, const char* domain) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    std::string dir, d;
    CC_RETURN_IF_ERROR(DataDir(e, &use, &dir));
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_ASSIGN_OR_RETURN(auto names, ListExportDefinitions(dir, d));
    json::array a;
    for (const auto& n : names) a.emplace_back(n);
    return Out(out, json::serialize(a));
  });
}

int cc_export_delete(cc_engine* e, const char* domain, const char* name) {
  return Fence([&]() -> Status {
    Use use;
    std::string dir, d, n;
    CC_RETURN_IF_ERROR(DataDir(e, &use, &dir));
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    CC_ASSIGN_OR_RETURN(auto blobs, ExportBlobStore(dir));
    return DeleteSavedExport(dir, q, blobs.get(), d, n);
  });
}

int cc_export_enqueue(int64_t* out_id, cc_engine* e, const char* domain, const char* request_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out_id));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    TaskSpec s;
    s.type = "export.run";
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &s.domain));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(request_json, "request_json", &o));
    if (const auto* saved = o.if_contains("saved")) {
      if (!saved->is_string() || o.size() != 1)
        return Status::InvalidArgument("request_json: {\"saved\": NAME} takes a name only");
      const std::string& dir = e->host->options().engine.data_dir;
      if (dir.empty()) return Status::FailedPrecondition("saved exports need a data directory");
      CC_RETURN_IF_ERROR(
          LoadExportDefinition(dir, s.domain, std::string(saved->get_string())).status());
      s.payload = json::serialize(o);
    } else {
      if (!o.contains("domain")) o["domain"] = s.domain;
      const std::string text = json::serialize(o);
      CC_ASSIGN_OR_RETURN(ExportDefinition def, Definition(text.c_str(), "request_json"));
      if (def.domain != s.domain)
        return Status::PermissionDenied("request_json: the definition's domain is not domain");
      s.payload = def.ToJson();
    }
    CC_ASSIGN_OR_RETURN(*out_id, q->Enqueue(s));
    return Status::Ok();
  });
}

int cc_export_fetch(char** out_result, cc_engine* e, const char* domain, int64_t task_id,
                    const char* out_path) {
  return Fence([&]() -> Status {
    if (out_result) *out_result = nullptr;
    Use use;
    std::string dir, d, path;
    CC_RETURN_IF_ERROR(DataDir(e, &use, &dir));
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(out_path, "out_path", &path));
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    CC_ASSIGN_OR_RETURN(auto blobs, ExportBlobStore(dir));
    CC_ASSIGN_OR_RETURN(StoredExport s,
                        FetchExportFile(q, blobs.get(), d, task_id, path, util::NowMicros()));
    if (out_result) *out_result = Dup(s.ToJson());
    return Status::Ok();
  });
}

int cc_report_set(char** out, cc_engine* e, const char* report_json) {
  return ReportCall(out, false, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string text;
    CC_RETURN_IF_ERROR(Arg(report_json, "report_json", &text));
    return SaveReport(q, text);
  });
}

int cc_report_list(char** out, cc_engine* e, const char* domain) {
  return ReportCall(out, true, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d, false));
    CC_ASSIGN_OR_RETURN(auto all, ListReports(q, d));
    return JsonArray(all, [](const std::string& s) { return s; });
  });
}

int cc_report_get(char** out, cc_engine* e, const char* domain, const char* name) {
  return ReportCall(out, true, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    return GetReport(q, d, n);
  });
}

int cc_report_delete(cc_engine* e, const char* domain, const char* name) {
  return ReportCall(nullptr, false, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_RETURN_IF_ERROR(DeleteReport(q, d, n));
    return std::string();
  });
}

int cc_report_send(int64_t* out_id, cc_engine* e, const char* domain, const char* name) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out_id));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_ASSIGN_OR_RETURN(*out_id, SendReportNow(q, d, n));
    return Status::Ok();
  });
}

int cc_report_preview(char** out, cc_engine* e, const char* domain, const char* name) {
  return ReportCall(out, true, e, [&](TaskQueue* q) -> Result<std::string> {
    std::string d, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_ASSIGN_OR_RETURN(ReportTable t, PreviewReport(q, e->host->PillowStore(), d, n));
    return t.ToJson();
  });
}

int cc_report_render(char** out, cc_engine* e, const char* report_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    std::string text;
    CC_RETURN_IF_ERROR(Arg(report_json, "report_json", &text));
    CC_ASSIGN_OR_RETURN(ReportTable t, RenderReport(e->host->PillowStore(), text));
    return Out(out, t.ToJson());
  });
}

}  // extern "C"
