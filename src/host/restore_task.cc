// restore.async: HQ's get_async_restore_payload task (casexml/apps/phone/tasks.py, started by
// RestoreConfig._get_asynchronous_payload in casexml/apps/phone/restore.py). The payload is a
// meta::RestoreParams; the task's domain is the restore's. The restore is written to
// <data_dir>/restore-async/<task id>.xml (a rerun overwrites it) with its progress reported as
// the task's (cases sent of cases to send); the result names the file and its HTTP status, and
// the restore route serves the file once, then deletes it (docs/sync.md).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>

#include "commcare/host.h"
#include "commcare/sync.h"
#include "commcare/tasks.h"
#include "host/task_types.h"
#include "meta/meta_store.h"
#include "meta/restore_params.h"

namespace commcare::host {

namespace json = boost::json;
namespace fs = std::filesystem;

Result<std::string> RunAsyncRestore(Host* host, TaskContext& c) {
  const std::string& dir = host->options().engine.data_dir;
  if (dir.empty()) return Status::FailedPrecondition("restore.async needs a data directory");
  CC_ASSIGN_OR_RETURN(meta::RestoreParams params, meta::RestoreParams::FromJson(c.payload()));
  CC_ASSIGN_OR_RETURN(meta::MetaStore * meta, host->Meta());
  CC_ASSIGN_OR_RETURN(Sync * sync, host->Syncer());
  const std::string& domain = c.task().spec.domain;
  CC_ASSIGN_OR_RETURN(meta::User user, meta->GetUser(params.username));
  if (!user.InDomain(domain) || !user.is_active)
    return Status::PermissionDenied(
        fmt::format("restore.async: {} is no active user of {}", user.username, domain));
  CC_ASSIGN_OR_RETURN(RestoreRequest q, meta::MakeRestoreRequest(meta, user, domain, params));
  q.progress = [&c](int64_t done, int64_t total) {
    c.Progress(done, total, "cases");
    // Test-only: COMMCARE_TEST_RESTORE_DELAY_MS holds a restore after its first progress.
    if (done == 0) HoldForTest("COMMCARE_TEST_RESTORE_DELAY_MS", c);
  };
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "restore-async", ec);
  if (ec)
    return Status::Unavailable(
        fmt::format("cannot create {}/restore-async: {}", dir, ec.message()));
  const std::string path =
      (fs::path(dir) / "restore-async" / (std::to_string(c.task().id) + ".xml")).string();
  std::ofstream out(path + ".tmp", std::ios::binary | std::ios::trunc);
  int64_t bytes = 0;
  auto res = sync->Restore(q, [&](int, std::string_view chunk) -> Status {
    out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    bytes += static_cast<int64_t>(chunk.size());
    if (c.Cancelled()) return Status::Aborted("restore.async: cancelled");
    return out ? Status::Ok() : Status::Unavailable("restore.async: cannot write " + path);
  });
  out.close();
  if (!res.ok() || !out) {
    fs::remove(path + ".tmp", ec);
    return res.ok() ? Status::Unavailable("restore.async: cannot write " + path) : res.status();
  }
  fs::rename(path + ".tmp", path, ec);
  if (ec)
    return Status::Unavailable(
        fmt::format("restore.async: cannot keep {}: {}", path, ec.message()));
  return json::serialize(json::object{{"status", res->http_status},
                                      {"file", path},
                                      {"bytes", bytes},
                                      {"restore_id", res->sync_id},
                                      {"cases", res->cases}});
}

}  // namespace commcare::host
