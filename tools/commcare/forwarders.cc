// The `commcare` tool's data forwarding commands: forwarders list|add|pause|resume|delete|
// records|record|resend, through include/commcare/forwarding.h (as REST, the C ABI and Python).
// Output is JSON lines (docs/forwarding.md).
#include <commcare/forwarding.h>
#include <commcare/host.h>
#include <commcare/tasks.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

// Opens the host, its task queue and the forwarding store, runs fn and prints its lines.
// InvalidArgument exits as a usage error.
template <typename F>
int WithStore(const Args& a, F&& fn) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return kUsage;
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  auto store = ForwardingStore::Open((*host)->PillowStore(), *q);
  if (!store.ok()) return FailStatus(store.status());
  Result<std::vector<std::string>> out = fn(store->get(), domain);
  if (!out.ok() && out.status().IsInvalidArgument()) return Fail(out.status().message(), kUsage);
  if (!out.ok()) return FailStatus(out.status());
  for (const auto& line : *out) std::cout << line << "\n";
  std::cout.flush();
  return kOk;
}

json::array Values(const Args& a, const std::string& opt) {
  json::array out;
  auto [lo, hi] = a.multi.equal_range(opt);
  for (auto it = lo; it != hi; ++it)
    for (const auto& s : SplitCommas(it->second)) out.emplace_back(s);
  return out;
}

// The forwarder the options describe (--json first, then the options on top of it).
Result<Forwarder> FromArgs(const Args& a, const std::string& domain) {
  json::object o;
  if (a.Has("--json")) {
    boost::system::error_code ec;
    auto v = json::parse(a.Get("--json"), ec);
    if (ec || !v.is_object()) return Status::InvalidArgument("--json must be a JSON object");
    o = v.get_object();
  }
  o["domain"] = domain;
  for (const char* k : {"url", "kind", "format", "name", "auth", "username", "password", "token"})
    if (a.Has(std::string("--") + k)) o[k] = a.Get(std::string("--") + k);
  if (a.Has("--xmlns")) o["xmlns"] = Values(a, "--xmlns");
  if (a.Has("--case-type")) o["case_types"] = Values(a, "--case-type");
  if (a.Has("--event")) o["events"] = Values(a, "--event");
  if (a.Has("--no-case-blocks")) o["include_case_blocks"] = false;
  if (a.Has("--no-app-id-param")) o["include_app_id_param"] = false;
  if (a.Has("--paused")) o["paused"] = true;
  for (const char* k : {"max-attempts", "timeout-ms"}) {
    int64_t n = 0;
    if (a.Has(std::string("--") + k) && ParseInt(a.Get(std::string("--") + k), &n)) {
      std::string key(k);
      key[key.find('-')] = '_';
      o[key] = n;
    }
  }
  if (a.Has("--header")) {
    json::object h = o.contains("headers") && o["headers"].is_object() ? o["headers"].get_object()
                                                                       : json::object();
    auto [lo, hi] = a.multi.equal_range("--header");
    for (auto it = lo; it != hi; ++it) {
      size_t colon = it->second.find(':');
      if (colon == std::string::npos)
        return Status::InvalidArgument("--header must be 'Name: value' (got '" + it->second + "')");
      std::string v = it->second.substr(colon + 1);
      v.erase(0, v.find_first_not_of(' '));
      h[it->second.substr(0, colon)] = v;
    }
    o["headers"] = std::move(h);
  }
  return Forwarder::FromJson(json::serialize(o));
}

int CmdList(const Args& a) {
  return WithStore(
      a, [&](ForwardingStore* s, const std::string& d) -> Result<std::vector<std::string>> {
        CC_ASSIGN_OR_RETURN(auto all, s->List(d));
        std::vector<std::string> out;
        for (const auto& f : all) out.push_back(f.ToJson());
        return out;
      });
}

int CmdAdd(const Args& a) {
  return WithStore(
      a, [&](ForwardingStore* s, const std::string& d) -> Result<std::vector<std::string>> {
        CC_ASSIGN_OR_RETURN(Forwarder f, FromArgs(a, d));
        CC_ASSIGN_OR_RETURN(f, s->Add(f));
        return std::vector<std::string>{f.ToJson()};
      });
}

int CmdPause(const Args& a, bool paused) {
  return WithStore(
      a, [&](ForwardingStore* s, const std::string& d) -> Result<std::vector<std::string>> {
        CC_RETURN_IF_ERROR(s->SetPaused(d, a.Get("--id"), paused));
        CC_ASSIGN_OR_RETURN(Forwarder f, s->Get(d, a.Get("--id")));
        return std::vector<std::string>{f.ToJson()};
      });
}

int CmdDelete(const Args& a) {
  return WithStore(
      a, [&](ForwardingStore* s, const std::string& d) -> Result<std::vector<std::string>> {
        CC_RETURN_IF_ERROR(s->Delete(d, a.Get("--id")));
        return std::vector<std::string>{json::serialize(json::object{{"deleted", a.Get("--id")}})};
      });
}

int CmdRecords(const Args& a) {
  return WithStore(
      a, [&](ForwardingStore* s, const std::string& d) -> Result<std::vector<std::string>> {
        RecordFilter q;
        q.domain = d;
        q.forwarder_id = a.Get("--forwarder");
        if (a.Has("--state")) {
          q.state = ParseRecordState(a.Get("--state"));
          if (!q.state)
            return Status::InvalidArgument(
                "--state must be pending, failed, succeeded, cancelled, empty or invalid_payload");
        }
        int64_t n = 0;
        if (a.Has("--limit") && ParseInt(a.Get("--limit"), &n)) q.limit = static_cast<int>(n);
        if (a.Has("--before") && ParseInt(a.Get("--before"), &n)) q.before_id = n;
        CC_ASSIGN_OR_RETURN(auto all, s->Records(q));
        std::vector<std::string> out;
        for (const auto& r : all) out.push_back(r.ToJson());
        return out;
      });
}

int CmdRecord(const Args& a) {
  return WithStore(
      a, [&](ForwardingStore* s, const std::string& d) -> Result<std::vector<std::string>> {
        int64_t id = 0;
        if (!ParseInt(a.Get("--id"), &id))
          return Status::InvalidArgument("--id must be a record id");
        CC_ASSIGN_OR_RETURN(RepeatRecord r, s->Record(d, id));
        return std::vector<std::string>{r.ToJson()};
      });
}

int CmdResend(const Args& a) {
  return WithStore(
      a, [&](ForwardingStore* s, const std::string& d) -> Result<std::vector<std::string>> {
        if (a.Has("--record") == a.Has("--failed"))
          return Status::InvalidArgument("give --record ID or --failed");
        if (a.Has("--record")) {
          int64_t id = 0;
          if (!ParseInt(a.Get("--record"), &id))
            return Status::InvalidArgument("--record must be an id");
          CC_RETURN_IF_ERROR(s->Resend(d, id));
          return std::vector<std::string>{json::serialize(json::object{{"resent", 1}})};
        }
        CC_ASSIGN_OR_RETURN(int64_t n, s->ResendFailed(d, a.Get("--forwarder")));
        return std::vector<std::string>{json::serialize(json::object{{"resent", n}})};
      });
}

}  // namespace

void RegisterForwarderCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "forwarders", "data forwarding (CommCare's repeaters)");
  cli->Add(g, "list", "the domain's forwarders, one JSON line each", CmdList)
      .Str("--domain", "the domain", true);
  cli->Add(g, "add", "add a forwarder of forms or cases to a URL", CmdAdd)
      .Str("--domain", "the domain", true)
      .Str("--url", "where to POST (http:// or https://)")
      .Choice("--kind", "what it forwards (default form)", {"form", "case"})
      .Choice("--format", "the payload (default form_xml / case_json)",
              {"form_xml", "form_json", "case_xml", "case_json"})
      .Str("--name", "a label")
      .Many("--xmlns", "forms: only this xmlns (repeatable)")
      .Flag("--no-case-blocks", "forms: drop the case blocks from the payload")
      .Flag("--no-app-id-param", "forms: do not append ?app_id=")
      .Many("--case-type", "cases: only this type (repeatable)")
      .Many("--event", "cases: create, update or close (repeatable; default all)")
      .Choice("--auth", "authentication", {"basic", "digest", "bearer"})
      .Str("--username", "basic and digest")
      .Str("--password", "basic and digest")
      .Str("--token", "bearer")
      .Many("--header", "'Name: value' sent with each request (repeatable)")
      .Int("--max-attempts", "failed tries before a record is cancelled (default 3)", 1)
      .Int("--timeout-ms", "per request (default 60000)", 100)
      .Flag("--paused", "add it paused")
      .Str("--json", "the forwarder as JSON (options given override its fields)");
  cli->Add(g, "pause", "pause a forwarder (records wait)",
           [](const Args& a) { return CmdPause(a, true); })
      .Str("--domain", "the domain", true)
      .Str("--id", "the forwarder", true);
  cli->Add(g, "resume", "resume a forwarder", [](const Args& a) { return CmdPause(a, false); })
      .Str("--domain", "the domain", true)
      .Str("--id", "the forwarder", true);
  cli->Add(g, "delete", "delete a forwarder (its waiting records are cancelled)", CmdDelete)
      .Str("--domain", "the domain", true)
      .Str("--id", "the forwarder", true);
  cli->Add(g, "records", "repeat records, newest first, one JSON line each", CmdRecords)
      .Str("--domain", "the domain", true)
      .Str("--forwarder", "only this forwarder's")
      .Choice("--state", "only this state",
              {"pending", "failed", "succeeded", "cancelled", "empty", "invalid_payload"})
      .Int("--limit", "at most this many (1..1000, default 100)", 1)
      .Int("--before", "ids below this (paging)", 1);
  cli->Add(g, "record", "one repeat record with its attempts", CmdRecord)
      .Str("--domain", "the domain", true)
      .Str("--id", "the record id", true);
  cli->Add(g, "resend", "send one record again, or every failed and cancelled one", CmdResend)
      .Str("--domain", "the domain", true)
      .Str("--record", "the record id")
      .Flag("--failed", "every failed and cancelled record")
      .Str("--forwarder", "with --failed: only this forwarder's");
}

}  // namespace commcare::cli
