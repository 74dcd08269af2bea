// The `commcare` tool's rule commands: rules add|list|show|delete|run, through the public face
// include/commcare/rules.h (as REST, the C ABI and Python). A saved rule is a task-queue
// schedule "rule:<domain>:<name>" running rule.run with the rule's JSON (docs/rules.md). Output
// is JSON lines; `run` prints one line per changed case, then the summary.
#include <commcare/host.h>
#include <commcare/rules.h>
#include <commcare/tasks.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "definitions.h"
#include "integrations/rules/locations.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

int CmdAdd(const Args& a) {
  std::string text;
  if (int code = 0; !DefinitionArg(a, "the rule", nullptr, &text, &code)) return code;
  // --domain fills in a rule without one and must agree with one that has it.
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (!ec && v.is_object() && a.Has("--domain")) {
    auto& o = v.get_object();
    if (!o.contains("domain")) o["domain"] = a.Get("--domain");
    if (!o["domain"].is_string() || o["domain"].get_string() != a.Get("--domain"))
      return Fail("domain: the rule's domain is not --domain", kUsage);
    text = json::serialize(v);
  }
  if (Status st = ValidateRule(text); !st.ok()) return Fail(st.message(), kUsage);
  return WithQueue(
      a, [&](TaskQueue* q, Host*) { return SaveRule(q, text); }, true);
}

int CmdList(const Args& a) {
  return WithQueue(a, [&](TaskQueue* q, Host*) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto all, ListRules(q, a.Get("--domain")));
    return JsonLines(all);
  });
}

int CmdShow(const Args& a) {
  return WithQueue(
      a, [&](TaskQueue* q, Host*) { return GetRule(q, a.Get("--domain"), a.Get("--name")); });
}

int CmdDelete(const Args& a) {
  return WithQueue(a, [&](TaskQueue* q, Host*) -> Result<std::string> {
    CC_RETURN_IF_ERROR(DeleteRule(q, a.Get("--domain"), a.Get("--name")));
    return DeletedLine("rule", a);
  });
}

// Runs here when this process holds the writer (or for a dry run); beside a server (a reader)
// or with --later, queues a rule.run task for the server's workers instead.
int CmdRun(const Args& a) {
  const bool dry = a.Has("--dry-run");
  return WithQueue(a, [&](TaskQueue* q, Host* h) -> Result<std::string> {
    if (!dry && (a.Has("--later") || h->read_only())) {
      CC_ASSIGN_OR_RETURN(int64_t id, RunRuleLater(q, a.Get("--domain"), a.Get("--name")));
      return json::serialize(json::object{{"task", id}, {"type", "rule.run"}});
    }
    RuleRunOptions o;
    o.dry_run = dry;
    o.case_id = a.Get("--case");
    o.on_change = [](const std::string& line) {
      std::cout << line << "\n";
      return true;
    };
    CC_ASSIGN_OR_RETURN(meta::MetaStore * m, h->Meta());
    CC_ASSIGN_OR_RETURN(o.locations, rules::LoadRuleLocations(m, a.Get("--domain")));
    CC_ASSIGN_OR_RETURN(RuleRunSummary s,
                        RunSavedRule(h->engine(), q, a.Get("--domain"), a.Get("--name"), o));
    return s.ToJson(a.Get("--domain"), a.Get("--name"));
  });
}

}  // namespace

void RegisterRuleCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "rules", "automatic case update rules (docs/rules.md)");
  cli->Add(g, "add", "add or replace a rule (and its daily schedule)", CmdAdd)
      .Str("--domain", "the rule's domain (filled in when the rule has none)")
      .Str("--file", "the rule's JSON definition in a file")
      .Str("--json", "the rule's JSON definition");
  cli->Add(g, "list", "saved rules, one JSON line each", CmdList)
      .Str("--domain", "only this domain's");
  cli->Add(g, "show", "one saved rule", CmdShow)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "delete", "delete a rule and its schedule", CmdDelete)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(g, "run", "run a saved rule now: a JSON line per changed case, then a summary", CmdRun)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true)
      .Str("--case", "only this case")
      .Flag("--dry-run", "list the cases the rule would change (and how); change nothing")
      .Flag("--later", "queue a rule.run task instead of running here");
}

}  // namespace commcare::cli
