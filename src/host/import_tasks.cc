// Case import and bulk edit as tasks (docs/import.md). The uploaded file lives in the export
// blob store; a worker copies it to <data_dir>/imports/<task id>.upload, imports it with the task's
// creation time as date_modified (a rerun builds the same forms and skips those stored), and
// stores the per-row result file at imports/<domain>/<task id>.result.jsonl beside it.
#include "host/import_tasks.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>

#include "commcare/exports.h"
#include "commcare/host.h"
#include "commcare/importer.h"
#include "commcare/log.h"
#include "commcare/storage/blob_store.h"
#include "commcare/tasks.h"
#include "util/hash.h"

namespace commcare {

namespace json = boost::json;
namespace fs = std::filesystem;

Result<int64_t> EnqueueCaseImport(TaskQueue* tasks, const std::string& data_dir,
                                  const CaseImportOptions& options, std::string_view file_bytes) {
  if (data_dir.empty()) return Status::FailedPrecondition("an import task needs a data directory");
  CaseImportOptions o = options;
  o.dry_run = false;
  o.result_path.clear();
  if (o.case_type.empty()) return Status::InvalidArgument("case_type: is required");
  if (o.search_field != "case_id" && o.search_field != "external_id")
    return Status::InvalidArgument("search_field: must be case_id or external_id");
  if (file_bytes.empty()) return Status::InvalidArgument("the file is empty");
  CC_ASSIGN_OR_RETURN(auto blobs, ExportBlobStore(data_dir));
  const std::string name =
      fmt::format("imports/{}/{}.upload", o.domain, util::Sha256Hex(file_bytes).substr(0, 32));
  CC_ASSIGN_OR_RETURN(std::string key, blobs->Put(name, file_bytes, true));
  json::value payload = json::parse(CaseImportOptionsToJson(o));
  payload.get_object()["upload"] = key;
  TaskSpec s;
  s.type = "import.cases";
  s.domain = o.domain;
  s.queue = "default";
  s.payload = json::serialize(payload);
  return tasks->Enqueue(s);
}

Result<int64_t> EnqueueBulkEdit(TaskQueue* tasks, const BulkEditOptions& options) {
  BulkEditOptions o = options;
  o.preview = false;
  CC_RETURN_IF_ERROR(CheckBulkEdit(o));
  TaskSpec s;
  s.type = "import.bulk_edit";
  s.domain = o.domain;
  s.payload = BulkEditOptionsToJson(o);
  return tasks->Enqueue(s);
}

namespace host {
namespace {

// Copies a blob to a local file a MiB at a time.
Status Download(storage::BlobStore* blobs, const std::string& key, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Status::Internal("cannot write " + path);
  for (uint64_t off = 0;;) {
    CC_ASSIGN_OR_RETURN(std::string chunk, blobs->ReadRange(key, off, 1u << 20));
    out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    off += chunk.size();
    if (chunk.size() < (1u << 20)) break;
  }
  out.close();
  if (!out) return Status::Internal("cannot write " + path);
  return Status::Ok();
}

Result<std::string> RunImport(Host* host, TaskContext& c) {
  const std::string& dir = host->options().engine.data_dir;
  if (dir.empty()) return Status::FailedPrecondition("import.cases needs a data directory");
  boost::system::error_code ec;
  json::value v = json::parse(c.payload(), ec);
  if (ec || !v.is_object() || !v.get_object().contains("upload") ||
      !v.get_object().at("upload").is_string())
    return Status::InvalidArgument("import.cases: payload must be options with \"upload\"");
  const std::string key(v.get_object().at("upload").get_string());
  v.get_object().erase("upload");
  CC_ASSIGN_OR_RETURN(CaseImportOptions o, CaseImportOptionsFromJson(json::serialize(v)));
  if (o.domain != c.task().spec.domain)
    return Status::PermissionDenied("import.cases: the options' domain is not the task's");
  std::error_code fe;
  fs::create_directories(fs::path(dir) / "imports", fe);
  if (fe) return Status::Internal("cannot create " + dir + "/imports: " + fe.message());
  const std::string base = (fs::path(dir) / "imports" / std::to_string(c.task().id)).string();
  CC_ASSIGN_OR_RETURN(auto blobs, ExportBlobStore(dir));
  CC_RETURN_IF_ERROR(Download(blobs.get(), key, base + ".upload"));
  o.dry_run = false;
  o.time = c.task().created_at;  // the same forms on every attempt
  o.result_path = base + ".result.jsonl";
  auto meta = host->Meta();
  auto r = ImportCases(host->engine(), meta.ok() ? *meta : nullptr, o, base + ".upload",
                       [&c](int64_t done, int64_t total) {
                         c.Progress(done, total, "rows");
                         return !c.Cancelled();
                       });
  fs::remove(base + ".upload", fe);
  if (!r.ok()) return r.status();
  CC_ASSIGN_OR_RETURN(
      std::string result_key,
      blobs->PutFile(fmt::format("imports/{}/{}.result.jsonl", o.domain, c.task().id),
                     r->result_path));
  fs::remove(r->result_path, fe);
  json::value res = json::parse(r->ToJson());
  res.get_object().erase("result_file");
  res.get_object()["result_key"] = result_key;
  return json::serialize(res);
}

Result<std::string> RunBulkEdit(Host* host, TaskContext& c) {
  CC_ASSIGN_OR_RETURN(BulkEditOptions o, BulkEditOptionsFromJson(c.payload()));
  if (o.domain != c.task().spec.domain)
    return Status::PermissionDenied("import.bulk_edit: the options' domain is not the task's");
  o.preview = false;
  o.time = c.task().created_at;
  o.edit_id = util::Md5Hex(fmt::format("bulk-edit/{}/{}", o.domain, c.task().id));
  std::string snapshot;
  if (const std::string& dir = host->options().engine.data_dir; !dir.empty()) {
    std::error_code fe;
    fs::create_directories(fs::path(dir) / "imports", fe);
    snapshot = (fs::path(dir) / "imports" / fmt::format("{}.bulk_edit.ids", c.task().id)).string();
  }
  CC_ASSIGN_OR_RETURN(BulkEditResult r,
                      BulkEditCases(host->engine(), o, snapshot, [&c](int64_t done, int64_t total) {
                        c.Progress(done, total, "cases");
                        return !c.Cancelled();
                      }));
  return r.ToJson();  // the snapshot stays: a rerun of this task edits the same cases
}

}  // namespace

void RegisterImportTaskTypes(Host* host, TaskWorkers* w) {
  // A 20 s lease (heartbeats every 5 s): a dead worker's import is taken over soon.
  TaskTypeOptions o;
  o.lease = std::chrono::seconds(20);
  w->Register(
      "import.cases", [host](TaskContext& c) { return RunImport(host, c); }, o);
  w->Register(
      "import.bulk_edit", [host](TaskContext& c) { return RunBulkEdit(host, c); }, o);
}

}  // namespace host
}  // namespace commcare
