// Submission throughput benchmark (issue: core engine figures).
//
//   submit_bench [--forms N] [--threads T] [--dir DIR] [--warmup W] [--databases K]
//                [--primary '{"kind": "postgres", "databases": [DSN, ...]}'] (fresh databases)
//                [--pg-floor CONNINFO] (with --primary: the floor in PostgreSQL instead)
//
// Prints, for ~3 KB forms with meta and one case create-or-update of 20 properties:
//  * engine: forms/s through Engine::Submit with T submitters, durable group commits
//  * floor:  Expat-only parse of the same bytes + raw SQLite inserts of equivalent rows
//            (form, case, case transaction, 2 outbox rows) in 1,000-form transactions
//  * single: forms/s with one submitter (one durable commit per form) beside the disk's raw
//            SQLite commit rate (one-row durable transactions) measured in the same run
//  * RSS after every 100k forms
//  * parse: single-thread CPU per form of the bench's own form generation, a bare Expat
//    parse (the floor's) and the engine's ParseForm (--skip-parse to leave out)
#include <commcare/engine.h>
#include <expat.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_host.h"
#include "bench_util.h"
#include "xform/parser.h"
#ifdef COMMCARE_BENCH_PG
#include "pg_floor.h"
#endif

namespace {

using namespace bench;

struct Args {
  long forms = 100000;
  long warmup = 10000;
  int threads = 8;
  int databases = 1;
  long single_forms = 2000;
  std::string dir;
  bool skip_floor = false;
  bool skip_single = false;
  bool skip_parse = false;
};

std::string g_primary;   // --primary: commcare.json's primary (PostgreSQL)
std::string g_pg_floor;  // --pg-floor: where the PostgreSQL floor writes

std::unique_ptr<commcare::Host> OpenEngine(const std::string& dir, int databases) {
  std::filesystem::remove_all(dir);
  commcare::EngineOptions o;
  o.durable = std::getenv("BENCH_NOT_DURABLE") == nullptr;
  o.in_memory = std::getenv("BENCH_IN_MEMORY") != nullptr;
  return OpenHost(dir,
                  fmt::format(R"({{"databases": {}{}}})", databases,
                              g_primary.empty() ? "" : ", \"primary\": " + g_primary),
                  o);
}

// Submits forms [from, to) with `threads` submitters; returns seconds.
double RunEngine(commcare::Engine* e, long from, long to, long ncases, int threads,
                 std::atomic<long>* failures, bool report_rss) {
  std::atomic<long> next{from};
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      commcare::SubmitRequest r;
      r.domain = "bench";
      while (true) {
        long i = next.fetch_add(1);
        if (i >= to) break;
        r.body = MakeForm(i, ncases);
        auto resp = e->Submit(r);
        if (resp.nature != "submit_success") {
          if (failures->fetch_add(1) < 5)
            fmt::print(stderr, "form {}: {} {}\n", i, resp.http_status, resp.message);
        }
        if (report_rss && (i + 1) % 100000 == 0)
          fmt::print("  rss after {:>8} forms: {:>7} KB (anon {} KB, mapped files {} KB)\n", i + 1,
                     StatusKb("VmRSS"), StatusKb("RssAnon"), StatusKb("RssFile"));
      }
    });
  for (auto& t : ts) t.join();
  return Seconds(t0, Clock::now());
}

// The floor: Expat parse of the same bytes + raw SQLite inserts in 1,000-form transactions.
double RunFloor(const std::string& dir, long n, long ncases) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  sqlite3* db;
  sqlite3_open((dir + "/floor.sqlite").c_str(), &db);
  // The engine's schema for these rows (src/storage/sqlite/sqlite_store.cc).
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE forms(id INTEGER PRIMARY KEY, form_id TEXT NOT NULL, domain TEXT NOT "
               "NULL, state INTEGER NOT NULL, doc TEXT NOT NULL);"
               "CREATE UNIQUE INDEX forms_id ON forms(form_id);"
               "CREATE TABLE cases(id INTEGER PRIMARY KEY, case_id TEXT NOT NULL, domain TEXT NOT "
               "NULL, type TEXT, owner_id TEXT, closed INTEGER, deleted INTEGER, rev INTEGER NOT "
               "NULL, doc TEXT NOT NULL);"
               "CREATE UNIQUE INDEX cases_id ON cases(case_id);"
               "CREATE INDEX cases_owner ON cases(domain, owner_id);"
               "CREATE TABLE case_transactions(seq INTEGER PRIMARY KEY, case_id TEXT NOT NULL, "
               "form_id TEXT NOT NULL, doc TEXT NOT NULL);"
               "CREATE INDEX case_transactions_case ON case_transactions(case_id);"
               "CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, "
               "meta TEXT NOT NULL);",
               nullptr, nullptr, nullptr);
  sqlite3_stmt *f, *c, *t, *o;
  sqlite3_prepare_v2(db,
                     "INSERT OR REPLACE INTO forms(form_id, domain, state, doc) VALUES(?,?,?,?)",
                     -1, &f, nullptr);
  sqlite3_prepare_v2(db,
                     "INSERT OR REPLACE INTO cases(case_id, domain, type, owner_id, closed, "
                     "deleted, rev, doc) VALUES(?,?,?,?,?,?,?,?)",
                     -1, &c, nullptr);
  sqlite3_prepare_v2(db, "INSERT INTO case_transactions(case_id, form_id, doc) VALUES(?,?,?)", -1,
                     &t, nullptr);
  sqlite3_prepare_v2(db, "INSERT INTO outbox(doc_id, meta) VALUES(?,?)", -1, &o, nullptr);
  // Document sizes as the engine writes them for these forms.
  std::string form_doc(1100, 'f'), case_doc(1900, 'c'), tx_doc(230, 't'), meta(260, 'm');
  auto bind = [](sqlite3_stmt* s, int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  };
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    if (i % 1000 == 0) sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    std::string xml = MakeForm(i, ncases);
    XML_Parser p = XML_ParserCreateNS(nullptr, '\x01');
    XML_Parse(p, xml.data(), static_cast<int>(xml.size()), XML_TRUE);
    XML_ParserFree(p);
    std::string fid = fmt::format("bench-form-{}", i),
                cid = fmt::format("bench-case-{}", i % ncases);
    bind(f, 1, fid);
    bind(f, 2, "bench");
    sqlite3_bind_int(f, 3, 1);
    bind(f, 4, form_doc);
    sqlite3_step(f);
    sqlite3_reset(f);
    bind(c, 1, cid);
    bind(c, 2, "bench");
    bind(c, 3, "patient");
    bind(c, 4, "u");
    sqlite3_bind_int(c, 5, 0);
    sqlite3_bind_int(c, 6, 0);
    sqlite3_bind_int64(c, 7, i);
    bind(c, 8, case_doc);
    sqlite3_step(c);
    sqlite3_reset(c);
    bind(t, 1, cid);
    bind(t, 2, fid);
    bind(t, 3, tx_doc);
    sqlite3_step(t);
    sqlite3_reset(t);
    for (const auto& id : {fid, cid}) {
      bind(o, 1, id);
      bind(o, 2, meta);
      sqlite3_step(o);
      sqlite3_reset(o);
    }
    if (i % 1000 == 999 || i == n - 1) sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  double s = Seconds(t0, Clock::now());
  for (auto* st : {f, c, t, o}) sqlite3_finalize(st);
  sqlite3_close(db);
  return s;
}

// Microseconds per form, one thread, of: making the form text; that plus a bare Expat parse;
// that plus the engine's ParseForm.
void RunParse(long n, long ncases) {
  auto time_us = [&](auto&& each) {
    auto t0 = Clock::now();
    for (long i = 0; i < n; ++i) each(MakeForm(i, ncases));
    return Seconds(t0, Clock::now()) * 1e6 / n;
  };
  const double make = time_us([](const std::string&) {});
  const double expat = time_us([](const std::string& xml) {
    XML_Parser p = XML_ParserCreateNS(nullptr, '\x01');
    XML_Parse(p, xml.data(), static_cast<int>(xml.size()), XML_TRUE);
    XML_ParserFree(p);
  });
  const double parse = time_us([](const std::string& xml) {
    commcare::xform::ParsedForm pf;
    (void)commcare::xform::ParseForm(xml, commcare::xform::ParseLimits{}, &pf);
  });
  fmt::print(
      "parse, one thread, per form: Expat alone {:.1f} us, ParseForm {:.1f} us "
      "(making the form text, {:.1f} us, left out)\n",
      expat - make, parse - make, make);
}

// One-row durable SQLite transactions: the disk's raw commit rate.
double RawCommitRate(const std::string& dir, int n) {
  std::filesystem::create_directories(dir);
  sqlite3* db;
  sqlite3_open((dir + "/commit.sqlite").c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(k INTEGER PRIMARY "
               "KEY, v TEXT);",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* s;
  sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES('row')", -1, &s, nullptr);
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
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
      (std::filesystem::temp_directory_path() / fmt::format("cc-bench-{}", ::getpid())).string();
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (k == "--forms")
      a.forms = std::stol(next());
    else if (k == "--warmup")
      a.warmup = std::stol(next());
    else if (k == "--threads")
      a.threads = std::stoi(next());
    else if (k == "--databases")
      a.databases = std::stoi(next());
    else if (k == "--single-forms")
      a.single_forms = std::stol(next());
    else if (k == "--dir")
      a.dir = next();
    else if (k == "--skip-floor")
      a.skip_floor = true;
    else if (k == "--skip-single")
      a.skip_single = true;
    else if (k == "--skip-parse")
      a.skip_parse = true;
    else if (k == "--primary")
      g_primary = next();
    else if (k == "--pg-floor")
      g_pg_floor = next();
    else {
      fmt::print(stderr, "unknown option {}\n", k);
      return 2;
    }
  }
  const long total = a.warmup + a.forms;
  const long ncases = total / 2;  // every case is created once and updated once
  fmt::print("form size: {} bytes; {} forms after {} warm-up; {} submitters; {} database(s)\n",
             MakeForm(0, ncases).size(), a.forms, a.warmup, a.threads, a.databases);

  std::atomic<long> failures{0};
  auto eng = OpenEngine(a.dir + "/engine", a.databases);
  RunEngine(eng->engine(), 0, a.warmup, ncases, a.threads, &failures, false);
  long long written0 = WrittenBytes();
  double secs = RunEngine(eng->engine(), a.warmup, total, ncases, a.threads, &failures, true);
  long long written = WrittenBytes() - written0;
  double engine_rate = a.forms / secs;
  fmt::print("rss at the end: {} KB (anon {} KB)\n", StatusKb("VmRSS"), StatusKb("RssAnon"));
  auto check = eng->engine()->Check();
  eng.reset();
  fmt::print("engine: {:.0f} forms/s ({} forms in {:.2f} s, {} failures, check {})\n", engine_rate,
             a.forms, secs, failures.load(),
             check.ok() && check->problems.empty() ? "ok" : "FAILED");
  fmt::print("bytes written per form: {}\n", written / a.forms);

  if (!a.skip_floor && !g_pg_floor.empty()) {
#ifdef COMMCARE_BENCH_PG
    double fsecs = bench::RunPgFloor(g_pg_floor, a.forms, ncases);
    fmt::print(
        "floor:  {:.0f} forms/s (Expat parse + PostgreSQL rows, one multi-row INSERT per table "
        "per 1,000-form transaction, one connection)\n",
        a.forms / fsecs);
    fmt::print("ratio engine/floor: {:.2f}\n", engine_rate / (a.forms / fsecs));
#else
    fmt::print(stderr, "--pg-floor: built without PostgreSQL\n");
    return 2;
#endif
  } else if (!a.skip_floor) {
    long long w0 = WrittenBytes();
    double fsecs = RunFloor(a.dir + "/floor", a.forms, ncases);
    double floor_rate = a.forms / fsecs;
    fmt::print(
        "floor:  {:.0f} forms/s (Expat parse + raw SQLite rows, 1,000-form transactions; "
        "{} bytes written per form)\n",
        floor_rate, (WrittenBytes() - w0) / a.forms);
    fmt::print("ratio engine/floor: {:.2f}\n", engine_rate / floor_rate);
  }
  if (!a.skip_single) {
    auto single = OpenEngine(a.dir + "/single", a.databases);
    std::atomic<long> f2{0};
    double ssecs = RunEngine(single->engine(), 0, a.single_forms, a.single_forms, 1, &f2, false);
    single.reset();
    double raw = RawCommitRate(a.dir + "/raw", static_cast<int>(a.single_forms));
    fmt::print("single submitter: {:.0f} forms/s; raw SQLite durable commits: {:.0f}/s\n",
               a.single_forms / ssecs, raw);
  }
  if (!a.skip_parse) RunParse(std::min(a.forms, 20000L), ncases);
  std::filesystem::remove_all(a.dir);
  return failures.load() == 0 ? 0 : 1;
}
