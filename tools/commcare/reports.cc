// The `commcare` tool's report commands: reports set|list|get|delete|send-now|preview, through
// the public face include/commcare/reports.h (as REST, the C ABI and Python). A saved report is
// a task-queue schedule "report:<domain>:<name>" running report.send with the report's JSON
// (docs/email-and-reports.md). Output is JSON lines.
#include <commcare/host.h>
#include <commcare/reports.h>
#include <commcare/tasks.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "definitions.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

int CmdSet(const Args& a) {
  std::string text;
  if (int code = 0; !DefinitionArg(a, "the report", ValidateReport, &text, &code)) return code;
  return WithQueue(
      a, [&](TaskQueue* q, Host*) { return SaveReport(q, text); }, true);
}

int CmdList(const Args& a) {
  return WithQueue(a, [&](TaskQueue* q, Host*) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto all, ListReports(q, a.Get("--domain")));
    return JsonLines(all);
  });
}

int CmdGet(const Args& a) {
  return WithQueue(
      a, [&](TaskQueue* q, Host*) { return GetReport(q, a.Get("--domain"), a.Get("--name")); });
}

int CmdDelete(const Args& a) {
  return WithQueue(a, [&](TaskQueue* q, Host*) -> Result<std::string> {
    CC_RETURN_IF_ERROR(DeleteReport(q, a.Get("--domain"), a.Get("--name")));
    return DeletedLine("report", a);
  });
}

int CmdSendNow(const Args& a) {
  return WithQueue(a, [&](TaskQueue* q, Host*) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(int64_t id, SendReportNow(q, a.Get("--domain"), a.Get("--name")));
    return json::serialize(json::object{{"task", id}, {"type", "report.send"}});
  });
}

int CmdPreview(const Args& a) {
  return WithQueue(a, [&](TaskQueue* q, Host* h) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(ReportTable t,
                        PreviewReport(q, h->PillowStore(), a.Get("--domain"), a.Get("--name")));
    return t.ToJson();
  });
}

}  // namespace

void RegisterReportCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "reports", "scheduled reports over UCR tables, sent by email");
  cli->Add(g, "set", "add or replace a report (and its schedule)", CmdSet)
      .Str("--file", "the report's JSON definition in a file")
      .Str("--json", "the report's JSON definition");
  cli->Add(g, "list", "saved reports, one JSON line each", CmdList)
      .Str("--domain", "only this domain's");
  cli->Add(g, "get", "one saved report", CmdGet)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "delete", "delete a report", CmdDelete)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "send-now", "queue a report.send task for a saved report now", CmdSendNow)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "preview", "render a saved report from its UCR table (JSON: header, rows, totals)",
           CmdPreview)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
}

}  // namespace commcare::cli
