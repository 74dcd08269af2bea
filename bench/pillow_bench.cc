// Change log and pillow throughput (issue: change log and pillows figures).
//
//   pillow_bench [--changes N] [--burst B] [--dir DIR] [--skip-burst] [--skip-floor]
//                [--skip-ucr] [--pillows postgres:<conninfo>]
//
// --pillows: where the case-search and ucr stages keep the pillow databases (default
// DIR/pillows; a PostgreSQL database must be empty).
//
// Prints, for the ~3 KB forms of submit_bench (one case create-or-update of 20 properties):
//  * relay:        outbox rows moved to the change log per second (2 per form: form + case)
//  * case-search:  case changes indexed per second by the case-search pillow
//  * end to end:   N case changes / (relay time + indexing time)
//  * burst:        B forms submitted by 8 submitters while relay and pillows run; the time
//                  from the last acknowledgement to lag 0
//  * ucr:          the ucr pillow with a 10-column case data source: documents/s
//  * floor:        the same index rows inserted straight into the same SQLite tables in
//                  1,000-case transactions, and the ratio (for case-search and for ucr)
#include <commcare/engine.h>
#include <commcare/pillows.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "bench_host.h"
#include "bench_util.h"

namespace {

using namespace bench;

struct Args {
  long changes = 1000000;
  long burst = 100000;
  std::string dir;
  std::string pillows;  // "" = dir/pillows
  bool skip_burst = false;
  bool skip_floor = false;
  bool skip_ucr = false;
};

std::string g_change_log;  // --change-log: commcare.json's change_log (e.g. Kafka)

std::unique_ptr<commcare::Host> OpenEngine(const std::string& dir, bool relay, bool durable) {
  commcare::EngineOptions o;
  o.relay = relay;
  o.durable = durable;
  return bench::OpenHost(
      dir, g_change_log.empty() ? "{}" : R"({"change_log": )" + g_change_log + "}", o);
}

void Init(const std::string& dir) { std::filesystem::remove_all(dir); }

void SubmitAll(commcare::Engine* e, long from, long to, long ncases, int threads) {
  std::atomic<long> next{from};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      commcare::SubmitRequest r;
      r.domain = "bench";
      for (long i; (i = next.fetch_add(1)) < to;) {
        // One low-cardinality property (50 values spread over the cases) for exact filters.
        r.body =
            MakeForm(i, ncases, fmt::format("<district>district-{}</district>", i % ncases % 50));
        auto resp = e->Submit(r);
        if (resp.http_status != 201) {
          fmt::print(stderr, "form {}: {}\n", i, resp.message);
          std::exit(1);
        }
      }
    });
  for (auto& t : ts) t.join();
}

std::unique_ptr<commcare::PillowHost> OpenHost(commcare::Engine* e, const std::string& dir,
                                               const char* pillow = "case-search") {
  commcare::PillowHostOptions o;
  o.dir = dir;
  o.only = {pillow};
  auto h = commcare::PillowHost::Open(e, o);
  if (!h.ok()) {
    fmt::print(stderr, "pillows: {}\n", h.status().ToString());
    std::exit(1);
  }
  return std::move(h).value();
}

int64_t Lag(commcare::PillowHost* h) {
  auto st = h->GetStatus();
  if (!st.ok()) return -1;
  int64_t lag = 0;
  for (const auto& p : *st)
    for (const auto& part : p.partitions) lag += part.lag;
  return lag;
}

// The floor: the case-search rows of n cases straight into the same tables, with the pillow
// database's settings (src/util/sqlite_conn.h).
double RunFloor(const std::string& dir, long n) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  sqlite3* db;
  sqlite3_open((dir + "/floor.sqlite").c_str(), &db);
  // The case-search pillow's schema (src/pillows/case_search.cc).
  sqlite3_exec(
      db,
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;"
      "PRAGMA mmap_size=268435456; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=16384;"
      "CREATE TABLE cs_cases(id INTEGER PRIMARY KEY, case_id TEXT NOT NULL UNIQUE, "
      "domain TEXT NOT NULL, type TEXT NOT NULL, owner_id TEXT NOT NULL, closed INTEGER "
      "NOT NULL, name TEXT NOT NULL, external_id TEXT NOT NULL, date_opened TEXT NOT "
      "NULL, last_modified TEXT NOT NULL, server_last_modified TEXT NOT NULL, "
      "date_closed TEXT NOT NULL, indexed_on INTEGER NOT NULL, props TEXT NOT NULL, doc "
      "TEXT NOT NULL);"
      "CREATE INDEX cs_cases_page ON cs_cases(domain, indexed_on, id);"
      "CREATE INDEX cs_cases_type ON cs_cases(domain, type, indexed_on, id);"
      "CREATE INDEX cs_cases_owner ON cs_cases(domain, owner_id);"
      "CREATE TABLE cs_props(domain TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT "
      "NULL, num REAL, case_rowid INTEGER NOT NULL, PRIMARY KEY(domain, key, value, "
      "case_rowid)) WITHOUT ROWID;"
      "CREATE INDEX cs_props_num ON cs_props(domain, key, num) WHERE num IS NOT NULL;"
      "CREATE VIRTUAL TABLE cs_fts USING fts5(name, body, content='');",
      nullptr, nullptr, nullptr);
  sqlite3_stmt *c, *p, *f;
  sqlite3_prepare_v2(db,
                     "INSERT INTO cs_cases(case_id, domain, type, owner_id, closed, name, "
                     "external_id, date_opened, last_modified, server_last_modified, date_closed, "
                     "indexed_on, props, doc) VALUES(?,?,?,?,0,?,'',?,?,?,'',?,?,?)",
                     -1, &c, nullptr);
  sqlite3_prepare_v2(
      db, "INSERT INTO cs_props(domain, key, value, num, case_rowid) VALUES(?,?,?,NULL,?)", -1, &p,
      nullptr);
  sqlite3_prepare_v2(db, "INSERT INTO cs_fts(rowid, name, body) VALUES(?,?,?)", -1, &f, nullptr);
  auto bind = [](sqlite3_stmt* s, int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  };
  const std::string doc(1900, 'd'), when = "2020-05-01T10:00:00.000000Z";
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    if (i % 1000 == 0) sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    std::string props, body;
    std::vector<std::pair<std::string, std::string>> kv;
    for (int k = 0; k < 20; ++k) {
      kv.emplace_back(fmt::format("prop_{}", k),
                      fmt::format("value {0} of form {1} with some padding text", k, i));
      props += kv.back().first + '\x1f' + kv.back().second + '\x1e';
      body += kv.back().second + ' ';
    }
    bind(c, 1, fmt::format("bench-case-{}", i));
    bind(c, 2, "bench");
    bind(c, 3, "patient");
    bind(c, 4, "bench-user");
    bind(c, 5, "Patient");
    bind(c, 6, when);
    bind(c, 7, when);
    bind(c, 8, when);
    sqlite3_bind_int64(c, 9, i);
    bind(c, 10, props);
    bind(c, 11, doc);
    sqlite3_step(c);
    sqlite3_reset(c);
    int64_t id = sqlite3_last_insert_rowid(db);
    for (const auto& [k, v] : kv) {
      bind(p, 1, "bench");
      bind(p, 2, k);
      bind(p, 3, v);
      sqlite3_bind_int64(p, 4, id);
      sqlite3_step(p);
      sqlite3_reset(p);
    }
    sqlite3_bind_int64(f, 1, id);
    bind(f, 2, "Patient");
    bind(f, 3, body);
    sqlite3_step(f);
    sqlite3_reset(f);
    if (i % 1000 == 999 || i == n - 1) sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double s = Seconds(t0, Clock::now());
  for (auto* st : {c, p, f}) sqlite3_finalize(st);
  sqlite3_close(db);
  return n / s;
}

// A 10-column case data source (the bench forms' case properties).
const char* kUcrConfig =
    R"({"domain":"bench","table_id":"patients","referenced_doc_type":"CommCareCase",
 "configured_filter":{"type":"boolean_expression","expression":{"type":"property_name","property_name":"type"},"operator":"eq","property_value":"patient"},
 "configured_indicators":[
  {"type":"raw","column_id":"owner","property_name":"owner_id"},
  {"type":"raw","column_id":"name","property_name":"name"},
  {"type":"expression","column_id":"opened","datatype":"date","expression":{"type":"property_name","property_name":"opened_on"}},
  {"type":"expression","column_id":"modified","datatype":"datetime","expression":{"type":"property_name","property_name":"modified_on"}},
  {"type":"boolean","column_id":"closed","filter":{"type":"boolean_expression","expression":{"type":"property_name","property_name":"closed"},"operator":"eq","property_value":true}},
  {"type":"raw","column_id":"p0","property_name":"prop_0"},
  {"type":"raw","column_id":"p1","property_name":"prop_1"},
  {"type":"raw","column_id":"p2","property_name":"prop_2"},
  {"type":"expression","column_id":"p3_word","datatype":"string","expression":{"type":"split_string","string_expression":{"type":"property_name","property_name":"prop_3"},"index_expression":0}},
  {"type":"expression","column_id":"month","datatype":"date","expression":{"type":"month_start_date","date_expression":{"type":"property_name","property_name":"modified_on"}}}]})";

// The UCR floor: the same 10-column rows (plus doc_id, inserted_at) straight into a table
// with the same doc_id index.
double RunUcrFloor(const std::string& dir, long n) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  sqlite3* db;
  sqlite3_open((dir + "/ucr-floor.sqlite").c_str(), &db);
  sqlite3_exec(
      db,
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;"
      "PRAGMA mmap_size=268435456; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=16384;"
      "CREATE TABLE t(doc_id TEXT NOT NULL, inserted_at TEXT NOT NULL, owner TEXT, name "
      "TEXT, opened TEXT, modified TEXT, closed INTEGER NOT NULL, p0 TEXT, p1 TEXT, p2 "
      "TEXT, p3_word TEXT, month TEXT); CREATE INDEX t_doc ON t(doc_id);",
      nullptr, nullptr, nullptr);
  sqlite3_stmt* s;
  sqlite3_prepare_v2(db, "INSERT INTO t VALUES(?,?,?,?,?,?,0,?,?,?,?,?)", -1, &s, nullptr);
  auto bind = [](sqlite3_stmt* st, int i, const std::string& v) {
    sqlite3_bind_text(st, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  };
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    if (i % 1000 == 0) sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    bind(s, 1, fmt::format("bench-case-{}", i));
    bind(s, 2, "2026-01-01T00:00:00.000000Z");
    bind(s, 3, "bench-user");
    bind(s, 4, "Patient");
    bind(s, 5, "2020-05-01");
    bind(s, 6, "2020-05-01T10:00:00.000000Z");
    for (int k = 0; k < 3; ++k)
      bind(s, 7 + k, fmt::format("value {0} of form {1} with some padding text", k, i));
    bind(s, 10, "value");
    bind(s, 11, "2020-05-01");
    sqlite3_step(s);
    sqlite3_reset(s);
    if (i % 1000 == 999 || i == n - 1) sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double secs = Seconds(t0, Clock::now());
  sqlite3_finalize(s);
  sqlite3_close(db);
  return n / secs;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  a.dir =
      (std::filesystem::temp_directory_path() / fmt::format("cc-pbench-{}", ::getpid())).string();
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (k == "--changes")
      a.changes = std::stol(next());
    else if (k == "--burst")
      a.burst = std::stol(next());
    else if (k == "--dir")
      a.dir = next();
    else if (k == "--change-log")
      g_change_log = next();
    else if (k == "--skip-burst")
      a.skip_burst = true;
    else if (k == "--skip-floor")
      a.skip_floor = true;
    else if (k == "--skip-ucr")
      a.skip_ucr = true;
    else if (k == "--pillows")
      a.pillows = next();
    else {
      fmt::print(stderr, "unknown option {}\n", k);
      return 2;
    }
  }
  if (a.pillows.empty()) a.pillows = a.dir + "/pillows";
  // Setup (not timed): N forms, each one case change (N/2 cases, created then updated), left
  // in the outbox.
  const std::string data = a.dir + "/data";
  Init(data);
  {
    auto host = OpenEngine(data, /*relay=*/false, /*durable=*/false);
    commcare::Engine* e = host->engine();
    auto t0 = Clock::now();
    SubmitAll(e, 0, a.changes, a.changes / 2, 4);
    fmt::print("setup: {} forms in {:.1f} s (outbox only)\n", a.changes, Seconds(t0, Clock::now()));
  }
  double relay_s, index_s, ucr_s = 0;
  {
    auto host = OpenEngine(data, /*relay=*/false, /*durable=*/true);
    commcare::Engine* e = host->engine();
    ::sync();  // each phase starts with no dirty pages of the one before
    auto t0 = Clock::now();
    if (auto s = e->RelayChanges(); !s.ok()) {
      fmt::print(stderr, "relay: {}\n", s.ToString());
      return 1;
    }
    relay_s = Seconds(t0, Clock::now());
    fmt::print("relay: {:.0f} outbox rows/s ({} rows in {:.2f} s)\n", 2 * a.changes / relay_s,
               2 * a.changes, relay_s);
    auto h = OpenHost(e, a.pillows);
    ::sync();
    t0 = Clock::now();
    auto n = h->RunUntilCaughtUp();
    index_s = Seconds(t0, Clock::now());
    if (!n.ok() || *n != a.changes) {
      fmt::print(stderr, "pillow processed {} of {}: {}\n", n.ok() ? *n : -1, a.changes,
                 n.status().ToString());
      return 1;
    }
    fmt::print("case-search: {:.0f} case changes/s ({} in {:.2f} s)\n", a.changes / index_s,
               a.changes, index_s);
    fmt::print("end to end (relay + case-search): {:.0f} case changes/s\n",
               a.changes / (relay_s + index_s));
    // Case API v2 style lists of 100 cases from the index just built, 1,000 queries each (the
    // HTTP layer adds ~0.3 ms on loopback): the API's exact property match on a common value
    // (1 in 50 cases) and on a unique one, and a range (beyond the API: its matches cluster at
    // the end of page order, the plans' worst case).
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<double> lat;
      for (int qn = 0; qn < 1000; ++qn) {
        commcare::CaseSearchQuery q;
        q.domain = "bench";
        q.case_type = "patient";
        q.limit = 100;
        const long form = (qn * 7919L) % a.changes;
        if (kind == 0)
          q.equals.emplace_back("district", fmt::format("district-{}", qn % 50));
        else if (kind == 1)
          q.equals.emplace_back("prop_1",
                                fmt::format("value 1 of form {} with some padding text", form));
        else
          q.ranges.push_back({"prop_1", "gte", fmt::format("value 1 of form {}", form)});
        auto qt = Clock::now();
        auto page = commcare::SearchCases(a.pillows, q);
        lat.push_back(Seconds(qt, Clock::now()) * 1e3);
        if (!page.ok()) {
          fmt::print(stderr, "search: {}\n", page.status().ToString());
          return 1;
        }
        if (kind == 0 && page->cases.size() != 100) {
          fmt::print(stderr, "search: {} cases of district-{}\n", page->cases.size(), qn % 50);
          return 1;
        }
      }
      std::sort(lat.begin(), lat.end());
      static const char* kNames[] = {"exact match, 1 in 50 cases", "exact match, unique value",
                                     "range (clustered matches)"};
      fmt::print("case list of 100 by property, {} ({} cases): p50 {:.2f} ms, p99 {:.2f} ms\n",
                 kNames[kind], a.changes / 2, lat[500], lat[990]);
    }
    fmt::print("rss: {} KB\n", StatusKb("VmRSS"));
    h.reset();
  }
  if (!a.skip_ucr) {
    auto host = OpenEngine(data, /*relay=*/false, /*durable=*/true);
    commcare::Engine* e = host->engine();
    // UCR: a 10-column data source over the same case changes.
    auto u = OpenHost(e, a.pillows, "ucr");
    auto t0 = Clock::now();
    auto loaded = u->UcrLoad(kUcrConfig);
    double load_s = Seconds(t0, Clock::now());
    if (!loaded.ok()) {
      fmt::print(stderr, "ucr load: {}\n", loaded.status().ToString());
      return 1;
    }
    fmt::print("ucr load (rebuild from the primary store): {:.0f} cases/s ({} rows in {:.2f} s)\n",
               *loaded / load_s, *loaded, load_s);
    ::sync();
    t0 = Clock::now();
    auto un = u->RunUntilCaughtUp();
    ucr_s = Seconds(t0, Clock::now());
    if (!un.ok()) {
      fmt::print(stderr, "ucr pillow: {}\n", un.status().ToString());
      return 1;
    }
    fmt::print(
        "ucr pillow: {:.0f} case documents/s ({} case changes, plus {} form changes it skips, "
        "in {:.2f} s)\n",
        a.changes / ucr_s, a.changes, a.changes, ucr_s);
  }
  if (!a.skip_burst) {
    // A burst: 8 submitters, durable, relay and the case-search pillow running beside them.
    const std::string bdata = a.dir + "/burst";
    Init(bdata);
    auto host = OpenEngine(bdata, /*relay=*/true, /*durable=*/true);
    commcare::Engine* e = host->engine();
    auto h = OpenHost(e, a.dir + "/burst-pillows");
    std::atomic<bool> stop{false};
    std::thread runner([&] { (void)h->Run(stop); });
    auto t0 = Clock::now();
    SubmitAll(e, 0, a.burst, a.burst / 2, 8);
    auto t_last = Clock::now();
    // Lag 0 here means: the outbox is empty and the pillow's checkpoints reached the log's end.
    while (true) {
      int64_t outbox = 0;
      for (int d = 0; d < e->NumDatabases(); ++d)
        outbox += static_cast<int64_t>(e->Database(d)->ReadOutbox(0, 1)->size());
      if (outbox == 0 && Lag(h.get()) == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    auto t_zero = Clock::now();
    stop = true;
    runner.join();
    fmt::print(
        "burst: {} forms in {:.2f} s ({:.0f} forms/s with relay and pillow running); lag 0 "
        "{:.2f} s after the last acknowledgement\n",
        a.burst, Seconds(t0, t_last), a.burst / Seconds(t0, t_last), Seconds(t_last, t_zero));
  }
  if (!a.skip_floor) {
    double floor = RunFloor(a.dir + "/floor", a.changes);
    fmt::print("floor: {:.0f} cases/s (the same index rows inserted directly)\n", floor);
    fmt::print("ratio case-search/floor: {:.2f}; end to end/floor: {:.2f}\n",
               (a.changes / index_s) / floor, (a.changes / (relay_s + index_s)) / floor);
    if (!a.skip_ucr) {
      double ufloor = RunUcrFloor(a.dir + "/ucr-floor", a.changes);
      fmt::print("ucr floor: {:.0f} rows/s (the same rows inserted directly); ratio {:.2f}\n",
                 ufloor, (a.changes / ucr_s) / ufloor);
    }
  }
  if (!std::getenv("PILLOW_BENCH_KEEP")) std::filesystem::remove_all(a.dir);
  return 0;
}
