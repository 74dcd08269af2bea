// The `commcare` tool's change commands: changes, pillows, search, ucr.
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

int CmdChanges(const Args& a) {
  int64_t partition = -1, from = 0, limit = -1;
  if (a.Has("--partition") && (!ParseInt(a.Get("--partition"), &partition) || partition < 0))
    return Fail("--partition must be a non-negative integer");
  if (a.Has("--from") && (!ParseInt(a.Get("--from"), &from) || from < 0))
    return Fail("--from must be a non-negative offset");
  if (a.Has("--limit") && (!ParseInt(a.Get("--limit"), &limit) || limit < 0))
    return Fail("--limit must be a non-negative integer");
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto* log = (*host)->engine()->Changes();
  if (!log) return Fail("this data directory has no change log yet", 2);
  std::vector<std::string> topics;
  if (a.Has("--topic")) {
    topics.push_back(a.Get("--topic"));
  } else {
    auto t = log->Topics();
    if (!t.ok()) return FailStatus(t.status());
    topics = *t;
  }
  int64_t printed = 0;
  for (const auto& topic : topics) {
    auto parts = log->Partitions(topic);
    if (!parts.ok()) return FailStatus(parts.status());
    for (int p = 0; p < *parts; ++p) {
      if (partition >= 0 && p != partition) continue;
      for (int64_t off = from;;) {
        auto recs = log->Read(topic, p, off, 1000);
        if (!recs.ok()) return FailStatus(recs.status());
        if (recs->empty()) break;
        for (const auto& r : *recs) {
          if (limit >= 0 && printed >= limit) return 0;
          boost::system::error_code ec;
          json::value change = json::parse(r.value, ec);
          if (ec) change = json::string(r.value);
          json::object o{{"topic", r.topic},   {"partition", r.partition},
                         {"offset", r.offset}, {"timestamp", commcare::FormatTime(r.timestamp)},
                         {"key", r.key},       {"change", change}};
          std::cout << json::serialize(o) << "\n";
          ++printed;
        }
        off = recs->back().offset + 1;
      }
    }
  }
  std::cout.flush();
  return 0;
}

std::atomic<bool> g_stop{false};
extern "C" void OnStopSignal(int) { g_stop.store(true); }

int CmdPillows(const std::string& verb, const Args& a) {
  if (verb != "run" && verb != "status" && verb != "retries" && verb != "requeue" &&
      verb != "reconcile" && verb != "reset")
    return Fail("unknown pillows command '" + verb + "'");
  commcare::PillowHostOptions ho;
  ho.only = SplitCommas(a.Get("--only"));
  int64_t n = 1, k = 0;
  if (a.Has("--num-processes") && (!ParseInt(a.Get("--num-processes"), &n) || n < 1))
    return Fail("--num-processes must be a positive integer");
  if (a.Has("--process-num") && (!ParseInt(a.Get("--process-num"), &k) || k < 0 || k >= n))
    return Fail("--process-num must be in [0, --num-processes)");
  ho.num_processes = static_cast<int>(n);
  ho.process_num = static_cast<int>(k);
  ho.consumer_group = a.Get("--consumer-group");
  if (!ho.consumer_group.empty() && (a.Has("--num-processes") || a.Has("--once")))
    return Fail(
        "--consumer-group assigns partitions as members come and go: not with "
        "--num-processes or --once");
  std::string pillow = a.Get("--pillow");
  if (verb != "run" && verb != "status" && pillow.empty()) return Fail("--pillow NAME is required");
  if (!pillow.empty()) ho.only = {pillow};
  auto deployment = OpenHost(a, Access::kWriterOrReader);
  if (!deployment.ok()) return FailStatus(deployment.status());
  // Everything but run, reset and reconcile works beside running workers.
  ho.inspect_only = verb == "status" || verb == "retries" || verb == "requeue";
  auto host = (*deployment)->OpenPillows(ho);
  if (!host.ok()) return FailStatus(host.status());
  auto& h = *host;
  if (verb == "run") {
    if (a.Has("--once")) {
      auto r = h->RunUntilCaughtUp();
      if (!r.ok()) return FailStatus(r.status());
      std::cout << json::serialize(json::object{{"processed", *r}}) << std::endl;
      return 0;
    }
    struct sigaction sa = {};
    sa.sa_handler = OnStopSignal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::cerr << "pillows running: ";
    for (const auto& name : h->Pillows()) std::cerr << name << " ";
    std::cerr << "(SIGTERM stops)" << std::endl;
    Status s = h->Run(g_stop);
    if (!s.ok()) return FailStatus(s);
    std::cout << json::serialize(json::object{{"stopped", true}}) << std::endl;
    return 0;
  }
  if (verb == "status") {
    auto st = h->GetStatus();
    if (!st.ok()) return FailStatus(st.status());
    std::string out;  // joined as written: lag_seconds stays a plain decimal
    for (const auto& p : *st) out += (out.empty() ? "[" : ",") + commcare::PillowStatusToJson(p);
    std::cout << (out.empty() ? "[" : out) << "]" << std::endl;
    return 0;
  }
  if (verb == "retries") {
    auto rs = h->Retries(pillow);
    if (!rs.ok()) return FailStatus(rs.status());
    for (const auto& e : *rs) std::cout << commcare::RetryEntryToJson(e) << "\n";
    std::cout.flush();
    return 0;
  }
  if (verb == "requeue") {
    auto r = h->Requeue(pillow, a.Get("--doc"), a.Has("--dead"));
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{{"requeued", *r}}) << std::endl;
    return 0;
  }
  if (verb == "reconcile") {
    auto r = h->Reconcile(pillow);
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{{"republished", *r}}) << std::endl;
    return 0;
  }
  Status s = h->Reset(pillow);
  if (!s.ok()) return FailStatus(s);
  std::cout << json::serialize(json::object{{"reset", pillow}}) << std::endl;
  return 0;
}

int CmdSearch(const Args& a) {
  commcare::CaseSearchQuery q;
  if (!NeedDomain(a, &q.domain)) return Fail("--domain is required");
  q.case_type = a.Get("--type");
  q.owner_id = a.Get("--owner");
  q.case_name = a.Get("--name");
  q.external_id = a.Get("--external-id");
  if (a.Has("--closed")) {
    std::string c = a.Get("--closed");
    if (c != "true" && c != "false") return Fail("--closed must be true or false");
    q.closed = c == "true";
  }
  auto [pb, pe] = a.multi.equal_range("--prop");
  for (auto it = pb; it != pe; ++it) {
    auto eq = it->second.find('=');
    if (eq == std::string::npos || eq == 0) return Fail("--prop must be key=value");
    q.equals.emplace_back(it->second.substr(0, eq), it->second.substr(eq + 1));
  }
  auto [rb, re] = a.multi.equal_range("--range");
  for (auto it = rb; it != re; ++it) {
    auto c1 = it->second.find(':');
    auto c2 = c1 == std::string::npos ? c1 : it->second.find(':', c1 + 1);
    if (c2 == std::string::npos) return Fail("--range must be key:op:value");
    q.ranges.push_back({it->second.substr(0, c1), it->second.substr(c1 + 1, c2 - c1 - 1),
                        it->second.substr(c2 + 1)});
  }
  q.text = a.Get("--text");
  q.cursor = a.Get("--cursor");
  int64_t limit = 20;
  if (a.Has("--limit") && !ParseInt(a.Get("--limit"), &limit))
    return Fail("--limit must be an integer");
  q.limit = static_cast<size_t>(std::max<int64_t>(0, limit));
  auto page = commcare::SearchCases(commcare::PillowStoreAt(a.Get("--data")), q);
  if (!page.ok()) return FailStatus(page.status());
  json::array cases;
  for (const auto& c : page->cases) cases.push_back(json::parse(c));
  std::cout << json::serialize(json::object{
                   {"cases", cases},
                   {"next", page->next_cursor.empty() ? json::value(nullptr)
                                                      : json::value(page->next_cursor)}})
            << std::endl;
  return 0;
}

int CmdUcr(const std::string& verb, const Args& a) {
  if (verb == "rows") {
    std::string domain;
    if (!NeedDomain(a, &domain)) return Fail("--domain is required");
    if (!a.Has("--table")) return Fail("--table is required");
    int64_t limit = 1000, offset = 0;
    if (a.Has("--limit") && (!ParseInt(a.Get("--limit"), &limit) || limit < 0))
      return Fail("--limit must be a non-negative integer");
    if (a.Has("--offset") && (!ParseInt(a.Get("--offset"), &offset) || offset < 0))
      return Fail("--offset must be a non-negative integer");
    auto rows =
        commcare::UcrRows(commcare::PillowStoreAt(a.Get("--data")), domain, a.Get("--table"),
                          static_cast<size_t>(limit), static_cast<size_t>(offset));
    if (!rows.ok()) return FailStatus(rows.status());
    for (const auto& r : *rows) std::cout << r << "\n";
    std::cout.flush();
    return 0;
  }
  if (verb != "load" && verb != "rebuild") return Fail("unknown ucr command '" + verb + "'");
  std::string config;
  if (verb == "load") {
    if (a.pos.size() != 1) return Fail("ucr load takes one CONFIG.json");
    if (!ReadFile(a.pos[0], &config)) return Fail("cannot read " + a.pos[0]);
  } else if (!a.Has("--domain") || !a.Has("--table")) {
    return Fail("--domain and --table are required");
  }
  auto deployment = OpenHost(a, Access::kWriterOrReader);
  if (!deployment.ok()) return FailStatus(deployment.status());
  commcare::PillowHostOptions ho;
  ho.only = {"ucr"};
  ho.inspect_only = true;  // beside a running ucr worker, which picks the change up
  auto host = (*deployment)->OpenPillows(ho);
  if (!host.ok()) return FailStatus(host.status());
  auto r = verb == "load" ? (*host)->UcrLoad(config)
                          : (*host)->UcrRebuild(a.Get("--domain"), a.Get("--table"));
  if (!r.ok()) return FailStatus(r.status());
  std::cout << json::serialize(json::object{{"rows", *r}}) << std::endl;
  return 0;
}

}  // namespace

void RegisterChangeCommands(Cli* cli) {
  cli->Add(nullptr, "changes", "read the change log, one JSON line per change", CmdChanges)
      .Str("--topic", "only this topic")
      .Int("--partition", "only this partition")
      .Int("--from", "the first offset (default 0)")
      .Int("--limit", "at most this many changes");
  CLI::App* pillows = cli->Group(nullptr, "pillows", "run and inspect the pillows");
  cli->Add(pillows, "run", "process the change log into the secondary stores",
           [](const Args& a) { return CmdPillows("run", a); })
      .Str("--only", "only these pillows (NAME,...)")
      .Int("--num-processes", "pillow processes sharing the partitions", 1)
      .Int("--process-num", "this process's number, from 0")
      .Flag("--once", "stop when caught up")
      .Str("--consumer-group", "Kafka: share partitions by a consumer group");
  cli->Add(pillows, "status", "each pillow's checkpoints and lag",
           [](const Args& a) { return CmdPillows("status", a); })
      .Str("--only", "only these pillows (NAME,...)")
      .Int("--num-processes", "pillow processes sharing the partitions", 1)
      .Int("--process-num", "this process's number, from 0");
  cli->Add(pillows, "retries", "a pillow's retry queue",
           [](const Args& a) { return CmdPillows("retries", a); })
      .Str("--pillow", "the pillow", true);
  cli->Add(pillows, "requeue", "retry a pillow's failed documents now",
           [](const Args& a) { return CmdPillows("requeue", a); })
      .Str("--pillow", "the pillow", true)
      .Str("--doc", "only this document")
      .Flag("--dead", "also dead-lettered documents");
  for (auto [verb, help] : {std::pair<const char*, const char*>{
                                "reconcile", "republish what the pillow's store misses"},
                            {"reset", "start the pillow again from the beginning"}})
    cli->Add(pillows, verb, help, [verb](const Args& a) { return CmdPillows(verb, a); })
        .Str("--pillow", "the pillow", true);
  cli->Add(nullptr, "search", "search cases in the case-search index", CmdSearch)
      .Str("--domain", "the domain", true)
      .Str("--type", "case type")
      .Str("--owner", "owner id")
      .Choice("--closed", "closed (true) or open (false)", {"true", "false"})
      .Str("--name", "case name (exact)")
      .Str("--external-id", "external id (exact)")
      .Many("--prop", "a property equal to a value, KEY=VALUE (repeatable)")
      .Many("--range", "KEY:gt|gte|lt|lte:VALUE (repeatable)")
      .Str("--text", "full text over names and values")
      .Int("--limit", "results per page (default 20)")
      .Str("--cursor", "the next page's cursor");
  CLI::App* ucr = cli->Group(nullptr, "ucr", "UCR data sources and their tables");
  cli->Add(ucr, "load", "load (or replace) a UCR data source",
           [](const Args& a) { return CmdUcr("load", a); })
      .Positional("CONFIG", "the data source's JSON file");
  cli->Add(ucr, "rebuild", "rebuild a UCR table from the primary store",
           [](const Args& a) { return CmdUcr("rebuild", a); })
      .Str("--domain", "the domain", true)
      .Str("--table", "the table id", true);
  cli->Add(ucr, "rows", "a UCR table's rows, one JSON line each",
           [](const Args& a) { return CmdUcr("rows", a); })
      .Str("--domain", "the domain", true)
      .Str("--table", "the table id", true)
      .Int("--limit", "at most this many rows (default 1000)")
      .Int("--offset", "skip this many rows");
}

}  // namespace commcare::cli
