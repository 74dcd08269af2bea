// Export files in the blob store (S3 in production, files on one machine), their expiry and
// pruning, and saved exports with their schedules and latest-file pointers. docs/exports.md.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "commcare/deployment.h"
#include "commcare/exports.h"
#include "commcare/storage/blob_store.h"
#include "commcare/tasks.h"
#include "util/time.h"

namespace commcare {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// The blob holding a saved export's latest file (a StoredExport's JSON).
std::string LatestKey(std::string_view domain, std::string_view name) {
  return fmt::format("exports/{}/saved/{}.json", domain, name);
}

}  // namespace

std::string StoredExport::ToJson() const {
  return json::serialize(json::object{{"task_id", task_id},
                                      {"key", key},
                                      {"file", file_name},
                                      {"size", size},
                                      {"expires_at", util::FormatIsoTime(expires_at)}});
}

Result<StoredExport> StoredExport::FromJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  const json::object* o = ec ? nullptr : v.if_object();
  auto str = [&](const char* k) -> const json::string* {
    const json::value* x = o ? o->if_contains(k) : nullptr;
    return x ? x->if_string() : nullptr;
  };
  auto num = [&](const char* k) -> const int64_t* {
    const json::value* x = o ? o->if_contains(k) : nullptr;
    return x ? x->if_int64() : nullptr;
  };
  StoredExport s;
  if (!str("key") || !str("expires_at") ||
      !util::ParseIsoTime(std::string(*str("expires_at")), &s.expires_at))
    return Status::InvalidArgument("stored export: no \"key\" and \"expires_at\"");
  s.key = std::string(*str("key"));
  if (str("file")) s.file_name = std::string(*str("file"));
  if (num("task_id")) s.task_id = *num("task_id");
  if (num("size")) s.size = *num("size");
  return s;
}

Result<std::shared_ptr<storage::BlobStore>> ExportBlobStore(const std::string& data_dir) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<storage::BlobStore>> open;
  if (data_dir.empty()) return Status::FailedPrecondition("export files need a data directory");
  std::lock_guard l(mu);
  if (auto it = open.find(data_dir); it != open.end()) return it->second;
  CC_ASSIGN_OR_RETURN(Deployment d, Deployment::Load(data_dir));
  std::unique_ptr<storage::BlobStore> b;
  if (d.blobs == Deployment::Blobs::kS3) {
    CC_ASSIGN_OR_RETURN(b, storage::OpenS3BlobStore(d.s3));
  } else {
    CC_ASSIGN_OR_RETURN(b, storage::OpenFsBlobStore(data_dir + "/exports/files"));
  }
  std::shared_ptr<storage::BlobStore> shared(std::move(b));
  open[data_dir] = shared;
  return shared;
}

Result<StoredExport> StoreExportFile(storage::BlobStore* blobs, const ExportDefinition& def,
                                     int64_t task_id, const std::string& local_path, int64_t now,
                                     std::string_view saved_name) {
  StoredExport s;
  s.task_id = task_id;
  std::string ext = fs::path(local_path).extension().string();  // ".csv", ".zip", ".xlsx"
  s.file_name = fmt::format("{}{}", task_id, ext);
  std::error_code ec;
  s.size = static_cast<int64_t>(fs::file_size(local_path, ec));
  if (ec) return Status::Internal(fmt::format("export file {}: {}", local_path, ec.message()));
  CC_ASSIGN_OR_RETURN(
      s.key, blobs->PutFile(fmt::format("exports/{}/{}", def.domain, s.file_name), local_path));
  fs::remove(local_path, ec);
  s.expires_at = now + def.expiry_seconds * 1'000'000;
  if (!saved_name.empty()) {
    // Keep the newest task's file: a slow older run finishing late does not replace it.
    auto cur = LatestSavedExport(blobs, def.domain, saved_name);
    if (!cur.ok() && !cur.status().IsNotFound()) return cur.status();
    if (!cur.ok() || cur->task_id <= task_id)
      CC_RETURN_IF_ERROR(blobs->Put(LatestKey(def.domain, saved_name), s.ToJson(), true).status());
  }
  return s;
}

Result<StoredExport> LatestSavedExport(storage::BlobStore* blobs, std::string_view domain,
                                       std::string_view name) {
  auto text = blobs->Get(LatestKey(domain, name));
  if (!text.ok() && text.status().IsNotFound())
    return Status::NotFound(fmt::format("saved export \"{}\" has no file yet", name));
  if (!text.ok()) return text.status();
  return StoredExport::FromJson(*text);
}

Result<StoredExport> FetchExportFile(TaskQueue* tasks, storage::BlobStore* blobs,
                                     std::string_view domain, int64_t task_id,
                                     const std::string& out_path, int64_t now) {
  auto t = tasks->Get(task_id);
  if (!t.ok() || t->spec.domain != domain || t->spec.type != "export.run")
    return Status::NotFound(fmt::format("export {} does not exist in domain {}", task_id, domain));
  if (t->state != TaskState::kSucceeded)
    return Status::FailedPrecondition(
        fmt::format("export {} is {}, not succeeded", task_id, TaskStateName(t->state)));
  auto s = StoredExport::FromJson(t->result);
  if (!s.ok()) return Status::NotFound(fmt::format("export {}'s file is gone", task_id));
  if (s->expires_at <= now) return Status::NotFound(fmt::format("export {} expired", task_id));
  const std::string tmp = out_path + ".part";
  FILE* f = fopen(tmp.c_str(), "wb");
  if (!f) return Status::Internal(fmt::format("cannot create {}: {}", tmp, strerror(errno)));
  Status st;
  constexpr size_t kChunk = 1 << 20;
  for (uint64_t off = 0; st.ok() && off < uint64_t(s->size); off += kChunk) {
    auto part = blobs->ReadRange(s->key, off, kChunk);
    if (!part.ok()) {
      st = part.status().IsNotFound()
               ? Status::NotFound(fmt::format("export {}'s file is gone", task_id))
               : part.status();
    } else if (part->empty() || fwrite(part->data(), 1, part->size(), f) != part->size()) {
      st = Status::Internal(fmt::format("cannot write {} (or the stored file is short)", tmp));
    }
  }
  if (fclose(f) != 0 && st.ok()) st = Status::Internal("cannot write " + tmp);
  std::error_code ec;
  if (st.ok()) fs::rename(tmp, out_path, ec);
  if (st.ok() && ec) st = Status::Internal(fmt::format("cannot rename to {}", out_path));
  if (!st.ok()) fs::remove(tmp, ec);
  CC_RETURN_IF_ERROR(st);
  return std::move(*s);
}

Result<int64_t> PruneExpiredExports(TaskQueue* tasks, storage::BlobStore* blobs, int64_t now,
                                    int64_t finished_before) {
  int64_t n = 0;
  TaskFilter f;
  f.type = "export.run";
  f.state = TaskState::kSucceeded;
  f.limit = 500;
  while (true) {
    CC_ASSIGN_OR_RETURN(std::vector<TaskInfo> page, tasks->List(f));
    for (const TaskInfo& t : page) {
      auto s = StoredExport::FromJson(t.result);
      if (!s.ok()) continue;  // a result without a stored file (written before blobs)
      if (s->expires_at > now && !(finished_before && t.finished_at < finished_before)) continue;
      CC_ASSIGN_OR_RETURN(bool there, blobs->Exists(s->key));
      if (!there) continue;
      CC_RETURN_IF_ERROR(blobs->Delete(s->key));
      ++n;
    }
    if (page.size() < static_cast<size_t>(f.limit)) break;
    f.before_id = page.back().id;
  }
  return n;
}

std::string SavedExportScheduleName(std::string_view domain, std::string_view name) {
  return fmt::format("export:{}:{}", domain, name);
}

Status PutSavedExport(const std::string& data_dir, TaskQueue* tasks, const ExportDefinition& def) {
  if (!tasks) return Status::FailedPrecondition("saved exports need the task queue");
  CC_RETURN_IF_ERROR(SaveExportDefinition(data_dir, def));
  const std::string name = SavedExportScheduleName(def.domain, def.name);
  if (def.cron.empty()) {
    Status s = tasks->DeleteSchedule(name);
    return s.IsNotFound() ? Status::Ok() : s;
  }
  Schedule s;
  s.name = name;
  s.cron = def.cron;
  s.time_zone = def.time_zone;
  s.task.type = "export.run";
  s.task.payload = json::serialize(json::object{{"saved", def.name}});
  s.task.domain = def.domain;
  s.missed = Schedule::Missed::kOnce;
  return tasks->PutSchedule(s);
}

Status DeleteSavedExport(const std::string& data_dir, TaskQueue* tasks, storage::BlobStore* blobs,
                         std::string_view domain, std::string_view name) {
  // The schedule and the pointer go even when the definition is already gone.
  Status st = DeleteExportDefinition(data_dir, domain, name);
  if (tasks) {
    Status s = tasks->DeleteSchedule(SavedExportScheduleName(domain, name));
    if (!s.ok() && !s.IsNotFound()) return s;
  }
  if (blobs && (st.ok() || st.IsNotFound()))
    CC_RETURN_IF_ERROR(blobs->Delete(LatestKey(domain, name)));
  return st;
}

}  // namespace commcare
