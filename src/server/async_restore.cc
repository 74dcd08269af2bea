// Asynchronous restore, as HQ's RestoreConfig._get_asynchronous_payload and
// AsyncRestoreResponse (casexml/apps/phone/restore.py): the first request starts a
// restore.async task and waits up to 10 s (INITIAL_ASYNC_TIMEOUT_THRESHOLD); while it runs the
// answer is 202 with Retry-After: 5 (ASYNC_RETRY_AFTER) and the task's progress; a later poll
// waits 1 s. The task is keyed per (domain, user, sync token, device), as HQ's
// AsyncRestoreTaskIdCache; its payload is served once, byte for byte, then deleted.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "commcare/log.h"
#include "commcare/sync.h"
#include "meta/restore_params.h"
#include "server/app.h"
#include "server/responses.h"
#include "util/hash.h"

namespace commcare::server {

namespace json = boost::json;
using http::Response;

namespace {

constexpr auto kInitialWait = std::chrono::seconds(10);  // INITIAL_ASYNC_TIMEOUT_THRESHOLD
constexpr auto kPollWait = std::chrono::seconds(1);      // _get_task_timeout of a known task
constexpr int kRetryAfter = 5;                           // ASYNC_RETRY_AFTER

bool Failed(TaskState s) { return s == TaskState::kDead || s == TaskState::kCancelled; }

void LogFailed(int64_t id, std::string error) {
  Log(LogLevel::kWarning, "an asynchronous restore task failed; the next request starts anew",
      {{"task", std::to_string(id)}, {"error", std::move(error)}});
}

// The newest restore task of this unique key if it succeeded and its payload file is still
// there (not yet served).
std::optional<TaskInfo> FinishedAsyncRestore(TaskQueue* tasks, const std::string& domain,
                                             const std::string& unique_key) {
  TaskFilter f;
  f.domain = domain;
  f.type = meta::kAsyncRestoreTask;
  f.unique_key = unique_key;
  f.limit = 1;
  auto list = tasks->List(f);
  if (!list.ok() || list->empty() || list->front().state != TaskState::kSucceeded)
    return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(list->front().result, ec);
  const json::value* file = !ec && v.is_object() ? v.get_object().if_contains("file") : nullptr;
  std::error_code fec;
  if (!file || !file->is_string() || !std::filesystem::exists(std::string(file->get_string()), fec))
    return std::nullopt;
  return list->front();
}

}  // namespace

Response App::AsyncRestore(const std::string& domain, const meta::User& target,
                           const meta::RestoreParams& params) {
  const std::string key =
      fmt::format("{}\n{}\n{}\n{}", domain, target.user_id, params.since, params.device_id);
  // One restore task per key across servers and restarts (the queue's unique key).
  const std::string unique_key = "restore:" + util::Md5Hex(key);
  int64_t id = 0;
  {
    std::lock_guard l(async_mu_);
    if (auto it = async_restores_.find(key); it != async_restores_.end()) id = it->second;
  }
  bool fresh = false;
  if (id != 0) {
    auto t = tasks_->Get(id);
    if (!t.ok() || Failed(t->state)) {
      LogFailed(id, t.ok() ? t->last_error : t.status().message());
      id = 0;
    }
  }
  if (id == 0) {
    // Not known to this process (a restart, or another server took the first request): a
    // finished task of this key whose payload is still unserved is served now, as HQ's
    // AsyncRestoreTaskIdCache (in Redis) outlives a web worker. Otherwise a new task starts.
    if (auto done = FinishedAsyncRestore(tasks_, domain, unique_key))
      return AsyncPayload(key, target.username, *done);
  }
  if (id == 0) {
    TaskSpec spec;
    spec.type = meta::kAsyncRestoreTask;
    spec.domain = domain;
    spec.payload = params.ToJson();
    spec.max_attempts = 3;
    spec.unique_key = unique_key;
    auto e = tasks_->Enqueue(spec);
    if (!e.ok())
      return OtaXml(
          StatusFor(e.status()),
          RestoreErrorPayload(fmt::format("cannot start the restore: {}", e.status().message())));
    id = *e;
    fresh = true;
    std::lock_guard l(async_mu_);
    async_restores_[key] = id;
  }
  auto t = tasks_->Wait(id, fresh ? kInitialWait : kPollWait);
  if (!t.ok()) return OtaXml(StatusFor(t.status()), RestoreErrorPayload(t.status().message()));
  if (t->state == TaskState::kSucceeded) return AsyncPayload(key, target.username, *t);
  if (Failed(t->state)) {
    LogFailed(id, t->last_error);
    std::lock_guard l(async_mu_);
    async_restores_.erase(key);
    return OtaXml(500, RestoreErrorPayload(fmt::format("the restore failed: {}", t->last_error)));
  }
  Response pending = OtaXml(202, RestorePendingPayload(target.username, t->progress_done,
                                                       t->progress_total, kRetryAfter));
  pending.headers.emplace_back("Retry-After", std::to_string(kRetryAfter));
  return pending;
}

// The finished task's payload, once: the file is opened and unlinked under the lock, so a
// concurrent poll finds no key and starts a new restore rather than a missing file.
Response App::AsyncPayload(const std::string& key, const std::string& username,
                           const TaskInfo& task) {
  boost::system::error_code ec;
  json::value v = json::parse(task.result, ec);
  const json::object* o = !ec && v.is_object() ? &v.get_object() : nullptr;
  const json::value* file = o ? o->if_contains("file") : nullptr;
  const json::value* status = o ? o->if_contains("status") : nullptr;
  if (!file || !file->is_string() || !status || !status->is_int64())
    return OtaXml(500, RestoreErrorPayload(fmt::format(
                           "restore task {} left no payload (result {})", task.id, task.result)));
  auto in = std::make_shared<std::ifstream>();
  {
    std::lock_guard l(async_mu_);
    async_restores_.erase(key);
    in->open(std::string(file->get_string()), std::ios::binary);
    std::remove(std::string(file->get_string()).c_str());
  }
  if (!*in) {  // served already: the next request starts a fresh restore
    Response pending = OtaXml(202, RestorePendingPayload(username, 0, 0, kRetryAfter));
    pending.headers.emplace_back("Retry-After", std::to_string(kRetryAfter));
    return pending;
  }
  const int code = static_cast<int>(status->get_int64());
  Response out = OtaXml(code, "");
  out.stream = [in, code](const http::ChunkWriter& write) -> Status {
    std::string buf(64 << 10, '\0');
    while (*in) {
      in->read(buf.data(), static_cast<std::streamsize>(buf.size()));
      if (in->gcount() > 0)
        CC_RETURN_IF_ERROR(
            write(code, std::string_view(buf.data(), static_cast<size_t>(in->gcount()))));
    }
    return Status::Ok();
  };
  return out;
}

}  // namespace commcare::server
