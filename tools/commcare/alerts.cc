// The `commcare` tool's reminder commands: alerts add|list|delete|check|messages, through the
// public face include/commcare/reminders.h. A saved alert is a task-queue schedule
// "alert:<domain>:<name>" running reminder.check; its messages go out as email.send and
// sms.send tasks (`commcare tasks run` or a server's workers). Output is JSON lines.
#include <commcare/host.h>
#include <commcare/reminders.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

template <typename F>
int WithHost(const Args& a, F&& fn, Access access = Access::kWriterOrReader) {
  auto host = OpenHost(a, access);
  if (!host.ok()) return FailStatus(host.status());
  Result<std::string> out = fn(host->get());
  if (!out.ok() && out.status().IsInvalidArgument()) return Fail(out.status().message(), kUsage);
  if (!out.ok()) return FailStatus(out.status());
  if (!out->empty()) std::cout << *out << "\n";
  std::cout.flush();
  return kOk;
}

std::string Lines(const std::vector<std::string>& all) {
  std::string out;
  for (const auto& line : all) out += (out.empty() ? "" : "\n") + line;
  return out;
}

int CmdAdd(const Args& a) {
  std::string text = a.Get("--json");
  if (a.Has("--file") && !ReadFile(a.Get("--file"), &text))
    return Fail("cannot read " + a.Get("--file"), kUsage);
  if (text.empty()) return Fail("give the alert as --file PATH or --json TEXT", kUsage);
  if (Status st = ValidateAlert(text); !st.ok()) return Fail(st.message(), kUsage);
  return WithHost(a, [&](Host* h) { return SaveAlert(h, text); });
}

int CmdList(const Args& a) {
  return WithHost(a, [&](Host* h) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto all, ListAlerts(h, a.Get("--domain")));
    return Lines(all);
  });
}

int CmdDelete(const Args& a) {
  return WithHost(a, [&](Host* h) -> Result<std::string> {
    CC_RETURN_IF_ERROR(DeleteAlert(h, a.Get("--domain"), a.Get("--name")));
    return json::serialize(
        json::object{{"deleted", "alert:" + a.Get("--domain") + ":" + a.Get("--name")}});
  });
}

int CmdCheck(const Args& a) {
  return WithHost(a, [&](Host* h) { return CheckAlertNow(h, a.Get("--domain"), a.Get("--name")); });
}

int CmdMessages(const Args& a) {
  int64_t limit = 100;
  if (a.Has("--limit") && !ParseInt(a.Get("--limit"), &limit))
    return Fail("--limit must be a whole number", kUsage);
  return WithHost(a, [&](Host* h) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto all, ListReminderMessages(h, a.Get("--domain"), int(limit)));
    return Lines(all);
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
  cli->Add(g, "delete", "delete an alert (its logged messages stay)", CmdDelete)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "check", "queue the alert's due messages now", CmdCheck)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "messages", "the message log, newest first, one JSON line each", CmdMessages)
      .Str("--domain", "the domain", true)
      .Int("--limit", "at most this many (default 100)", 1);
}

}  // namespace commcare::cli
