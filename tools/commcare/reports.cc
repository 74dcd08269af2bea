// The `commcare` tool's report commands: reports set|list|delete|send-now. A saved report is a
// task-queue schedule "report:<domain>:<name>" running report.send with the report's JSON
// (docs/email-and-reports.md). Output is JSON lines.
#include "integrations/reports.h"

#include <commcare/tasks.h>
#include <fmt/format.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

// One saved report as a JSON line: its definition plus the schedule's state.
std::string ReportLine(const Schedule& s) {
  boost::system::error_code ec;
  json::value def = json::parse(s.task.payload, ec);
  json::value sched = json::parse(s.ToJson(), ec);
  json::object o;
  o["schedule"] = s.name;
  o["report"] = def;
  if (sched.is_object()) {
    for (const char* k : {"next_run_at", "last_run_at", "enabled"})
      if (const auto* v = sched.get_object().if_contains(k)) o[k] = *v;
  }
  return json::serialize(o);
}

Result<Schedule> FindReport(TaskQueue* q, const std::string& domain, const std::string& name) {
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  const std::string want = reports::ScheduleName(domain, name);
  for (auto& s : all)
    if (s.name == want) return s;
  return Status::NotFound(fmt::format("no report '{}' in domain '{}'", name, domain));
}

int CmdSet(const Args& a) {
  std::string text = a.Get("--json");
  if (a.Has("--file") && !ReadFile(a.Get("--file"), &text))
    return Fail("cannot read " + a.Get("--file"), kUsage);
  if (text.empty()) return Fail("give the report as --file PATH or --json TEXT", kUsage);
  auto r = reports::ParseReport(text);
  if (!r.ok()) return Fail(r.status().message(), kUsage);
  auto s = reports::ToSchedule(*r);
  if (!s.ok()) return Fail(s.status().message(), kUsage);
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  if (Status st = (*q)->PutSchedule(*s); !st.ok()) return FailStatus(st);
  auto saved = FindReport(*q, r->domain, r->name);
  if (!saved.ok()) return FailStatus(saved.status());
  std::cout << ReportLine(*saved) << std::endl;
  return kOk;
}

int CmdList(const Args& a) {
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  auto all = (*q)->Schedules();
  if (!all.ok()) return FailStatus(all.status());
  const std::string prefix =
      a.Has("--domain") ? reports::ScheduleName(a.Get("--domain"), "") : "report:";
  for (const auto& s : *all)
    if (s.task.type == "report.send" && s.name.starts_with(prefix))
      std::cout << ReportLine(s) << "\n";
  std::cout.flush();
  return kOk;
}

int CmdDelete(const Args& a) {
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  const std::string name = reports::ScheduleName(a.Get("--domain"), a.Get("--name"));
  if (Status st = (*q)->DeleteSchedule(name); !st.ok()) return FailStatus(st);
  std::cout << json::serialize(json::object{{"deleted", name}}) << std::endl;
  return kOk;
}

int CmdSendNow(const Args& a) {
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  auto s = FindReport(*q, a.Get("--domain"), a.Get("--name"));
  if (!s.ok()) return FailStatus(s.status());
  TaskSpec t = s->task;
  t.run_at = 0;
  t.unique_key.clear();
  auto id = (*q)->Enqueue(t);
  if (!id.ok()) return FailStatus(id.status());
  std::cout << json::serialize(json::object{{"task", *id}, {"type", t.type}}) << std::endl;
  return kOk;
}

}  // namespace

void RegisterReportCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "reports", "scheduled reports over UCR tables, sent by email");
  cli->Add(g, "set", "add or replace a report (and its schedule)", CmdSet)
      .Str("--file", "the report's JSON definition in a file")
      .Str("--json", "the report's JSON definition");
  cli->Add(g, "list", "saved reports, one JSON line each", CmdList)
      .Str("--domain", "only this domain's");
  cli->Add(g, "delete", "delete a report", CmdDelete)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "send-now", "queue a report.send task for a saved report now", CmdSendNow)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
}

}  // namespace commcare::cli
