// The library's task types: what `commcare tasks run` and `commcare serve` workers can run
// without a host program registering anything.
#include "host/task_types.h"

#include <boost/json.hpp>

#include "commcare/host.h"
#include "commcare/tasks.h"
#include "integrations/reports.h"
#include "meta/meta_store.h"

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
  CC_ASSIGN_OR_RETURN(int64_t n, q->Prune(std::chrono::hours(24 * days)));
  return json::serialize(json::object{{"deleted", n}});
}

}  // namespace

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
}

}  // namespace commcare::host
