// The library's task types: what `commcare tasks run` and `commcare serve` workers can run
// without a host program registering anything.
#include "host/task_types.h"

#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "commcare/exports.h"
#include "commcare/host.h"
#include "commcare/tasks.h"
#include "host/import_tasks.h"
#include "integrations/forwarding/forwarding.h"
#include "integrations/reminders/sms.h"
#include "integrations/reminders/tasks.h"
#include "integrations/reports.h"
#include "integrations/rules/tasks.h"
#include "meta/meta_store.h"
#include "meta/restore_params.h"
#include "util/time.h"

namespace commcare::host {

namespace json = boost::json;

namespace {

Result<std::string> Noop(TaskContext& c) {
  c.Progress(1, 1, "done");
  return std::string(c.payload());
}

Result<std::string> PruneTasks(Host* host, TaskContext& c) {
  int64_t days = 30;
  boost::system::error_code ec;
  auto v = json::parse(c.payload(), ec);
  if (!ec && v.is_object())
    if (const auto* d = v.get_object().if_contains("days"); d && d->is_int64())
      days = d->get_int64();
  if (days < 0) return Status::InvalidArgument("commcare.prune_tasks: \"days\" must be >= 0");
  CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
  json::object out;
  // Export files go when they expire, or with their tasks (found from the tasks' results, so
  // first); temp files an interrupted export left behind after 7 days (docs/exports.md).
  if (const std::string& dir = host->options().engine.data_dir; !dir.empty()) {
    CC_ASSIGN_OR_RETURN(auto blobs, ExportBlobStore(dir));
    const int64_t now = util::NowMicros();
    CC_ASSIGN_OR_RETURN(
        int64_t e, PruneExpiredExports(q, blobs.get(), now, now - days * 24 * 3600 * 1'000'000));
    CC_ASSIGN_OR_RETURN(int64_t t, PruneExportFiles(dir, std::chrono::hours(24 * 7)));
    out["exports_deleted"] = e + t;
  }
  CC_ASSIGN_OR_RETURN(int64_t n, q->Prune(std::chrono::hours(24 * days)));
  out["deleted"] = n;
  return json::serialize(out);
}

// export.run: payload is an export definition, or {"saved": NAME} (the task's domain's saved
// definition). Writes <data_dir>/exports/<task id>.<csv|zip|xlsx>, then moves it to the export
// blob store (exports/<domain>/<task id>.<ext>, expiring); a rerun overwrites both.
Result<std::string> RunExportTask(Host* host, TaskContext& c) {
  const std::string& dir = host->options().engine.data_dir;
  if (dir.empty()) return Status::FailedPrecondition("export.run needs a data directory");
  boost::system::error_code ec;
  auto v = json::parse(c.payload(), ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("export.run: payload must be an object");
  ExportDefinition def;
  std::string saved_name;
  if (const auto* saved = v.get_object().if_contains("saved")) {
    if (!saved->is_string() || v.get_object().size() != 1)
      return Status::InvalidArgument("export.run: {\"saved\": NAME} takes a name only");
    saved_name = std::string(saved->get_string());
    CC_ASSIGN_OR_RETURN(def, LoadExportDefinition(dir, c.task().spec.domain, saved_name));
  } else {
    CC_ASSIGN_OR_RETURN(def, ExportDefinition::FromJson(c.payload()));
  }
  if (!c.task().spec.domain.empty() && def.domain != c.task().spec.domain)
    return Status::PermissionDenied("export.run: the definition's domain is not the task's");
  std::filesystem::path out_dir = std::filesystem::path(dir) / "exports";
  std::error_code fe;
  std::filesystem::create_directories(out_dir, fe);
  if (fe) return Status::Internal("cannot create " + out_dir.string() + ": " + fe.message());
  std::string out = (out_dir / (std::to_string(c.task().id) + "." + ExportExtension(def))).string();
  // The writers spool to temporary files they remove, so an export cancelled or failed half way
  // leaves nothing in exports/.
  CC_ASSIGN_OR_RETURN(ExportResult r,
                      RunExport(host->engine(), def, out, [&c](int64_t done, int64_t total) {
                        c.Progress(done, total, "rows");
                        // Test-only: COMMCARE_TEST_EXPORT_DELAY_MS holds an export at its start.
                        if (done == 0) HoldForTest("COMMCARE_TEST_EXPORT_DELAY_MS", c);
                        return !c.Cancelled();
                      }));
  CC_ASSIGN_OR_RETURN(auto blobs, ExportBlobStore(dir));
  CC_ASSIGN_OR_RETURN(StoredExport stored, StoreExportFile(blobs.get(), def, c.task().id, r.file,
                                                           util::NowMicros(), saved_name));
  json::value res = json::parse(stored.ToJson());
  json::array tables;
  for (const auto& t : r.tables) tables.emplace_back(t);
  res.get_object()["rows"] = r.rows;
  res.get_object()["tables"] = std::move(tables);
  if (!saved_name.empty()) res.get_object()["saved"] = saved_name;
  return json::serialize(res);
}

}  // namespace

void HoldForTest(const char* env, TaskContext& c) {
  const char* v = std::getenv(env);
  if (!v) return;
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(std::strtoll(v, nullptr, 10));
  while (std::chrono::steady_clock::now() < until && !c.Cancelled())
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

void RegisterTaskTypes(Host* host, TaskWorkers* w) {
  w->Register("commcare.noop", Noop);
  w->Register("commcare.prune_tasks", [host](TaskContext& c) { return PruneTasks(host, c); });
  // SMTP settings from $COMMCARE_SMTP_URL / $COMMCARE_SMTP_FROM, read at each send.
  w->Register("email.send",
              reports::EmailSendHandler([] { return SmtpOptions::FromEnvironment(); }));
  w->Register("report.send", [host](TaskContext& c) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(TaskQueue * q, host->Tasks());
    auto meta = host->Meta();
    return reports::SendReport(c, host->PillowStore(), meta.ok() ? *meta : nullptr, q);
  });
  w->Register("export.run", [host](TaskContext& c) { return RunExportTask(host, c); });
  // A phone polls for it: a short lease, so that its progress is written every 2.5 s and a
  // dead worker's restore runs again soon.
  TaskTypeOptions restore;
  restore.lease = std::chrono::seconds(10);
  w->Register(
      meta::kAsyncRestoreTask, [host](TaskContext& c) { return RunAsyncRestore(host, c); },
      restore);
  // Reminders: a scheduled check queues due messages; SMS through an HTTP gateway.
  w->Register("reminder.check", reminders::CheckHandler(host));
  w->Register("sms.send", reminders::SmsSendHandler());
  if (auto q = host->Tasks(); q.ok() && !host->PillowStore().empty()) {  // docs/forwarding.md
    TaskTypeOptions deliver;
    deliver.lease = std::chrono::seconds(10);  // a dead worker's records are resent soon
    w->Register(forwarding::kDeliverTask,
                forwarding::DeliverHandler(host->engine(), host->PillowStore(), host->BaseUrl()),
                deliver);
    w->Register(forwarding::kSweepTask, forwarding::SweepHandler(host->PillowStore(), *q));
  }
  // The kinds that submit forms need the writer's engine. A read-only host (a worker beside a
  // running server) leaves them unclaimed for a writer's workers, rather than claiming them to
  // fail each attempt with "open read-only" until they are dead letters.
  if (host->read_only()) return;
  // Case update rules (docs/rules.md): a scan can take minutes, its lease is renewed meanwhile.
  auto meta = [host] { return host->Meta(); };
  w->Register("rule.run", rules::RunRuleHandler(host->engine(), meta));
  w->Register("rule.case", rules::CaseChangedHandler(
                               host->engine(), [host] { return host->Tasks(); }, meta));
  RegisterImportTaskTypes(host, w);
}

}  // namespace commcare::host
