// The C ABI's case import and bulk case edit (include/commcare/importer.h): an import or a bulk
// edit run in the calling thread (with a progress callback), or enqueued as a task.
#include "c_api_internal.h"
#include "commcare/importer.h"
#include "commcare/tasks.h"

using namespace commcare;
using namespace commcare::capi;

namespace {

ImportProgress Progress(cc_progress_fn progress, void* payload) {
  if (!progress) return {};
  return [progress, payload](int64_t done, int64_t total) {
    return progress(done, total, payload) == 0;
  };
}

Result<CaseImportOptions> ImportOptions(const char* p) {
  std::string text;
  CC_RETURN_IF_ERROR(Arg(p, "options_json", &text));
  auto o = CaseImportOptionsFromJson(text);
  if (!o.ok()) return Status::InvalidArgument("options_json: " + o.status().message());
  return o;
}

Result<BulkEditOptions> EditOptions(const char* p) {
  std::string text;
  CC_RETURN_IF_ERROR(Arg(p, "options_json", &text));
  auto o = BulkEditOptionsFromJson(text);
  if (!o.ok()) return Status::InvalidArgument("options_json: " + o.status().message());
  return o;
}

}  // namespace

int cc_import_cases(char** out_result, cc_engine* e, const char* options_json, const char* path,
                    cc_progress_fn progress, void* payload) {
  return Fence([&]() -> Status {
    if (out_result) *out_result = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(CaseImportOptions o, ImportOptions(options_json));
    std::string file;
    CC_RETURN_IF_ERROR(Arg(path, "path", &file));
    auto meta = e->host->Meta();
    json::array problems;
    CC_ASSIGN_OR_RETURN(CaseImportResult r,
                        ImportCases(use.engine, meta.ok() ? *meta : nullptr, o, file,
                                    Progress(progress, payload), [&](const ImportProblem& p) {
                                      if (problems.size() < 1000)
                                        problems.push_back(json::parse(p.ToJson()));
                                    }));
    json::value v = json::parse(r.ToJson());
    v.get_object()["problems"] = std::move(problems);
    return Out(out_result, json::serialize(v));
  });
}

int cc_import_enqueue(int64_t* out_id, cc_engine* e, const char* options_json, const char* data,
                      size_t len) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out_id));
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(CaseImportOptions o, ImportOptions(options_json));
    if (!data && len) return Status::InvalidArgument("data: is NULL");
    CC_ASSIGN_OR_RETURN(TaskQueue * q, e->host->Tasks());
    CC_ASSIGN_OR_RETURN(*out_id, EnqueueCaseImport(q, e->host->options().engine.data_dir, o,
                                                   std::string_view(data ? data : "", len)));
    return Status::Ok();
  });
}

int cc_bulk_edit(char** out_result, cc_engine* e, const char* options_json, cc_progress_fn progress,
                 void* payload) {
  return Fence([&]() -> Status {
    if (out_result) *out_result = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(BulkEditOptions o, EditOptions(options_json));
    CC_ASSIGN_OR_RETURN(BulkEditResult r,
                        BulkEditCases(use.engine, o, "", Progress(progress, payload)));
    return Out(out_result, r.ToJson());
  });
}

int cc_bulk_edit_enqueue(int64_t* out_id, cc_engine* e, const char* options_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out_id));
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(BulkEditOptions o, EditOptions(options_json));
    CC_ASSIGN_OR_RETURN(TaskQueue * q, e->host->Tasks());
    CC_ASSIGN_OR_RETURN(*out_id, EnqueueBulkEdit(q, o));
    return Status::Ok();
  });
}
