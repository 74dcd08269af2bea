// The `commcare` tool's reminder commands: alerts add|list|show|delete|check|messages,
// through the public face include/commcare/reminders.h. A saved alert is a task-queue schedule
// "alert:<domain>:<name>" running reminder.check; its messages go out as email.send and
// sms.send tasks (`commcare tasks run` or a server's workers). Output is JSON lines.
#include <commcare/host.h>
#include <commcare/reminders.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "definitions.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

// Every alert call goes through the host (the message log lives beside its task queue).
template <typename F>
int WithHost(const Args& a, F&& fn) {
  return WithQueue(
      a, [&](TaskQueue*, Host* h) -> Result<std::string> { return fn(h); }, true);
}

int CmdAdd(const Args& a) {
  std::string text;
  if (int code = 0; !DefinitionArg(a, "the alert", ValidateAlert, &text, &code)) return code;
  return WithHost(a, [&](Host* h) { return SaveAlert(h, text); });
}

int CmdList(const Args& a) {
  return WithHost(a, [&](Host* h) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto all, ListAlerts(h, a.Get("--domain")));
    return JsonLines(all);
  });
}

int CmdShow(const Args& a) {
  return WithHost(a, [&](Host* h) { return GetAlert(h, a.Get("--domain"), a.Get("--name")); });
}

int CmdDelete(const Args& a) {
  return WithHost(a, [&](Host* h) -> Result<std::string> {
    CC_RETURN_IF_ERROR(DeleteAlert(h, a.Get("--domain"), a.Get("--name")));
    return DeletedLine("alert", a);
  });
}

// Checks here when this process holds the writer; beside a server (a reader) or with --later,
// queues a reminder.check task for the server's workers instead.
int CmdCheck(const Args& a) {
  return WithHost(a, [&](Host* h) -> Result<std::string> {
    if (a.Has("--later") || h->read_only()) {
      CC_ASSIGN_OR_RETURN(int64_t id, CheckAlertLater(h, a.Get("--domain"), a.Get("--name")));
      return json::serialize(json::object{{"task", id}, {"type", "reminder.check"}});
    }
    return CheckAlertNow(h, a.Get("--domain"), a.Get("--name"));
  });
}

int CmdMessages(const Args& a) {
  ReminderMessageQuery m;
  m.domain = a.Get("--domain");
  m.alert = a.Get("--alert");
  m.case_id = a.Get("--case");
  m.outcome = a.Get("--outcome");
  if (a.Has("--limit") && !ParseInt(a.Get("--limit"), &m.limit))
    return Fail("--limit must be a whole number", kUsage);
  if (a.Has("--offset") && !ParseInt(a.Get("--offset"), &m.offset))
    return Fail("--offset must be a whole number", kUsage);
  return WithHost(a, [&](Host* h) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto all, ListReminderMessages(h, m));
    return JsonLines(all);
  });
}

}  // namespace

void RegisterAlertCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "alerts", "reminders: conditional alerts on cases");
  cli->Add(g, "add", "add or replace an alert (and its check schedule)", CmdAdd)
      .Str("--file", "the alert's JSON definition in a file")
      .Str("--json", "the alert's JSON definition");
  cli->Add(g, "list", "saved alerts, one JSON line each", CmdList)
      .Str("--domain", "only this domain's");
  cli->Add(g, "show", "one saved alert", CmdShow)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "delete", "delete an alert (its logged messages stay)", CmdDelete)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "check", "queue the alert's due messages now", CmdCheck)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true)
      .Flag("--later", "queue a reminder.check task instead of checking here");
  cli->Add(g, "messages", "the message log, newest first, one JSON line each", CmdMessages)
      .Str("--domain", "the domain", true)
      .Str("--alert", "only this alert's")
      .Str("--case", "only this case's")
      .Str("--outcome", "only this outcome's (a task state, or skipped)")
      .Int("--limit", "at most this many (default 100)", 1)
      .Int("--offset", "pass over this many first", 0);
}

}  // namespace commcare::cli
