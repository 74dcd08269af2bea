// The `commcare` tool's data commands: init, migrate, submit, form, case, ledger, check.
#include <commcare/engine.h>
#include <commcare/pillows.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "commcare/sync.h"
#include "common.h"
#include "meta/meta_store.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

int CmdInit(const Args& a) {
  if (a.Has("--config")) {  // a deployment's host file: its settings, not flags
    for (const char* flag : {"--shards", "--databases", "--blob-store", "--change-log", "--primary",
                             "--meta", "--pillows"})
      if (a.Has(flag))
        return Fail(fmt::format("{} is set in the --config file, not beside it", flag), kUsage);
    auto o = HostOptions::FromHostFile(a.Get("--config"), a.Get("--data"));
    if (!o.ok()) return FailStatus(o.status());
    if (Status s = Engine::Create(o->engine.data_dir, *o->deployment); !s.ok())
      return FailStatus(s);
    const Deployment& d = *o->deployment;  // no connection strings or keys on stdout
    std::cout << json::serialize(
                     json::object{{"data", o->engine.data_dir},
                                  {"shards", d.shards},
                                  {"databases", d.databases},
                                  {"blob_store", d.blobs == Deployment::Blobs::kS3      ? "s3"
                                                 : d.blobs == Deployment::Blobs::kFiles ? "files"
                                                                                        : "pack"}})
              << std::endl;
    return 0;
  }
  commcare::InitOptions o;
  o.data_dir = a.Get("--data");
  if (o.data_dir.empty()) return Fail("--data DIR is required");
  try {
    if (a.Has("--shards")) o.shards = std::stoi(a.Get("--shards"));
    if (a.Has("--databases")) o.databases = std::stoi(a.Get("--databases"));
    if (a.Has("--blob-store")) o.blob_store = a.Get("--blob-store");
    if (a.Has("--change-log")) o.change_log = a.Get("--change-log");
    if (a.Has("--primary")) o.primary = a.Get("--primary");
    if (a.Has("--meta")) o.meta = a.Get("--meta");
    if (a.Has("--pillows")) o.pillows = a.Get("--pillows");
  } catch (const std::exception&) {
    return Fail("--shards and --databases take whole numbers");
  }
  Status s = Engine::Init(o);
  if (!s.ok()) return FailStatus(s);
  std::cout << json::serialize(json::object{{"data", o.data_dir},
                                            {"shards", o.shards},
                                            {"databases", o.databases},
                                            {"blob_store", o.blob_store}})
            << std::endl;
  return 0;
}

int CmdSubmit(const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  if (a.pos.empty()) return Fail("no FILE given to submit");
  auto host = OpenHost(a, Access::kWriter);
  if (!host.ok()) return FailStatus(host.status());
  Engine* eng = (*host)->engine();
  int rc = 0;
  for (const auto& path : a.pos) {
    commcare::SubmitRequest req;
    req.domain = domain;
    req.user_id = a.Get("--user");
    req.openrosa_version = a.Get("--openrosa-version");
    req.content_type = a.Get("--content-type", "text/xml");
    if (!ReadFile(path, &req.body)) {
      std::cout << json::serialize(json::object{{"file", path}, {"error", "cannot read file"}})
                << std::endl;
      rc = kNotFound;
      continue;
    }
    commcare::SubmitResponse r = eng->Submit(req);
    json::object o{{"file", path},
                   {"status", r.http_status},
                   {"nature", r.nature},
                   {"message", r.message},
                   {"form_id", r.form_id},
                   {"state", r.state ? json::value(std::string(commcare::FormStateName(*r.state)))
                                     : json::value(nullptr)}};
    std::cout << json::serialize(o) << std::endl;  // endl flushes: the form is durable now
  }
  return rc;
}

int CmdForm(const std::string& verb, const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  if (a.pos.size() != 1) return Fail("form " + verb + " takes one FORM_ID");
  const std::string& id = a.pos[0];
  if (verb == "get") {
    auto host = OpenHost(a, Access::kReader);
    if (!host.ok()) return FailStatus(host.status());
    Engine* eng = (*host)->engine();
    if (a.Has("--xml")) {
      auto x = eng->GetFormXml(domain, id);
      if (!x.ok()) return FailStatus(x.status());
      std::cout << *x;
      return 0;
    }
    auto f = eng->GetForm(domain, id);
    if (!f.ok()) return FailStatus(f.status());
    std::cout << commcare::FormToJson(*f) << std::endl;
    return 0;
  }
  if (verb == "archive" || verb == "unarchive") {
    auto host = OpenHost(a, Access::kWriter);
    if (!host.ok()) return FailStatus(host.status());
    Engine* eng = (*host)->engine();
    Status s = verb == "archive" ? eng->ArchiveForm(domain, id) : eng->UnarchiveForm(domain, id);
    if (!s.ok()) return FailStatus(s);
    auto f = eng->GetForm(domain, id);
    if (!f.ok()) return FailStatus(f.status());
    std::cout << commcare::FormToJson(*f) << std::endl;
    return 0;
  }
  return Fail("unknown form command '" + verb + "'");
}

int CmdCase(const std::string& verb, const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  auto host = OpenHost(a, verb == "rebuild" ? Access::kWriter : Access::kReader);
  if (!host.ok()) return FailStatus(host.status());
  Engine* eng = (*host)->engine();
  if (verb == "list") {
    commcare::storage::CaseFilter f;
    f.domain = domain;
    f.type = a.Get("--type");
    f.owner_id = a.Get("--owner");
    if (a.Has("--closed")) {
      std::string c = a.Get("--closed");
      if (c != "true" && c != "false") return Fail("--closed takes true or false");
      f.closed = c == "true";
    }
    Status s = eng->ListCases(f, [](const commcare::CaseRecord& c) {
      std::cout << commcare::CaseToJson(c) << "\n";
      return true;
    });
    std::cout.flush();
    return s.ok() ? 0 : FailStatus(s);
  }
  if (a.pos.size() != 1) return Fail("case " + verb + " takes one CASE_ID");
  const std::string& id = a.pos[0];
  if (verb == "get") {
    auto c = eng->GetCase(domain, id);
    if (!c.ok()) return FailStatus(c.status());
    std::cout << commcare::CaseToJson(*c) << std::endl;
    return 0;
  }
  if (verb == "history") {
    auto h = eng->CaseHistory(domain, id);
    if (!h.ok()) return FailStatus(h.status());
    for (const auto& t : *h) std::cout << commcare::CaseTransactionToJson(t) << "\n";
    std::cout.flush();
    return 0;
  }
  if (verb == "rebuild") {
    Status s = eng->RebuildCase(domain, id);
    if (!s.ok()) return FailStatus(s);
    auto c = eng->GetCase(domain, id);
    if (!c.ok()) return FailStatus(c.status());
    std::cout << commcare::CaseToJson(*c) << std::endl;
    return 0;
  }
  return Fail("unknown case command '" + verb + "'");
}

int CmdLedger(const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  if (a.pos.size() != 1) return Fail("ledger get takes one CASE_ID");
  auto host = OpenHost(a, Access::kReader);
  if (!host.ok()) return FailStatus(host.status());
  auto l = (*host)->engine()->GetLedger(domain, a.pos[0]);
  if (!l.ok()) return FailStatus(l.status());
  std::cout << commcare::LedgerToJson(*l) << std::endl;
  return 0;
}

int CmdCheck(const Args& a) {
  // Open as the writer when nobody else is, so that a crashed writer's pending cross-database
  // intents are rolled forward first; beside a running writer, check read-only.
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto r = (*host)->engine()->Check();
  if (!r.ok()) return FailStatus(r.status());
  json::array problems;
  for (const auto& p : r->problems) problems.push_back(json::string(p));
  json::object o{{"ok", r->problems.empty()},
                 {"forms", r->forms},
                 {"cases", r->cases},
                 {"outbox_rows", r->outbox_rows},
                 {"logged_changes", r->logged_changes},
                 {"pending_intents", r->pending_intents},
                 {"problems", problems}};
  std::cout << json::serialize(o) << std::endl;
  return r->problems.empty() ? 0 : 4;
}

// Opens the data directory's stores for writing, which applies their schema migrations (each
// versioned, under a lock, safe to run twice and beside running servers of other hosts).
int CmdMigrate(const Args& a) {
  auto o = HostOptionsOf(a, Access::kWriter);
  if (!o.ok()) return FailStatus(o.status());
  o->engine.relay = false;
  auto host = Host::Open(std::move(*o));
  if (!host.ok()) return FailStatus(host.status());
  if (auto meta = (*host)->Meta(); !meta.ok()) return FailStatus(meta.status());
  if (auto sync = (*host)->Syncer(); !sync.ok()) return FailStatus(sync.status());
  commcare::PillowHostOptions ho;  // the pillow databases' tables, without running them
  ho.inspect_only = true;
  auto pillows = (*host)->OpenPillows(ho);
  if (!pillows.ok()) return FailStatus(pillows.status());
  std::cout << json::serialize(json::object{{"data", (*host)->options().engine.data_dir},
                                            {"databases", (*host)->engine()->NumDatabases()},
                                            {"migrated", true}})
            << std::endl;
  return 0;
}

}  // namespace

void RegisterDataCommands(Cli* cli) {
  cli->Add(nullptr, "init", "create a data directory (or a deployment's, from --config)", CmdInit)
      .Int("--shards", "logical shards, a power of two (default 1024)", 1)
      .Int("--databases", "physical databases the shards are spread over (default 1)", 1)
      .Str("--blob-store", "pack, files, or an S3 bucket as JSON")
      .Str("--change-log", "a Kafka change log as JSON")
      .Str("--primary", "PostgreSQL primary databases as JSON")
      .Str("--meta", "the shared users/sync-log PostgreSQL database as JSON")
      .Str("--pillows", "the shared pillow PostgreSQL database as JSON");
  cli->Add(nullptr, "migrate", "apply the stores' schema migrations (safe to run twice)",
           CmdMigrate);
  cli->Add(nullptr, "submit", "process form submissions (XML or multipart files)", CmdSubmit)
      .Str("--domain", "the domain", true)
      .Str("--user", "the submitting user's id")
      .Str("--openrosa-version", "X-OpenRosa-Version (1.0, 2.0, 2.1, 3.0)")
      .Str("--content-type", "the files' content type (default text/xml)")
      .Positional("FILE", "form files to submit", true);
  CLI::App* form = cli->Group(nullptr, "form", "read, archive or unarchive a form");
  cli->Add(form, "get", "a form's metadata (or its XML)",
           [](const Args& a) { return CmdForm("get", a); })
      .Str("--domain", "the domain", true)
      .Flag("--xml", "print the form's XML")
      .Positional("FORM_ID", "the form");
  for (const char* verb : {"archive", "unarchive"})
    cli->Add(form, verb, std::string(verb) + " a form (its cases are rebuilt)",
             [verb](const Args& a) { return CmdForm(verb, a); })
        .Str("--domain", "the domain", true)
        .Positional("FORM_ID", "the form");
  CLI::App* kase = cli->Group(nullptr, "case", "read, list or rebuild cases");
  for (auto [verb, help] : {std::pair<const char*, const char*>{"get", "a case as Case API JSON"},
                            {"history", "a case's transactions"},
                            {"rebuild", "re-derive a case from its transactions"}})
    cli->Add(kase, verb, help, [verb](const Args& a) { return CmdCase(verb, a); })
        .Str("--domain", "the domain", true)
        .Positional("CASE_ID", "the case");
  cli->Add(kase, "list", "the domain's cases, one JSON line each",
           [](const Args& a) { return CmdCase("list", a); })
      .Str("--domain", "the domain", true)
      .Str("--type", "only this case type")
      .Str("--owner", "only this owner id")
      .Choice("--closed", "only closed (true) or open (false) cases", {"true", "false"});
  CLI::App* ledger = cli->Group(nullptr, "ledger", "read a case's ledger");
  cli->Add(ledger, "get", "a case's ledger values", CmdLedger)
      .Str("--domain", "the domain", true)
      .Positional("CASE_ID", "the case");
  cli->Add(nullptr, "check", "verify the store (exit 4 when it finds problems)", CmdCheck);
}

}  // namespace commcare::cli
