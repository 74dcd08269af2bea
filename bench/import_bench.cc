// Case import throughput: a CSV of N rows (external_id, name and 5 properties) imported into a
// fresh SQLite data directory through ImportCases (create new by external id, 100 case blocks per
// form, as HQ), end to end: reading, lookups, the forms through the engine, the result file.
// The floor, measured in the same run in a second fresh directory: the same case blocks, built
// in advance, submitted as the same number of forms (the engine's own cost of those writes).
// Then the imported cases are read back as the Case API serves them (GetCase + CaseToJson) and
// counted; and a rerun of the same import (every chunk found stored) is timed.
//   import_bench [rows=100000] [dir=/tmp/cc-import-bench]
#include <commcare/engine.h>
#include <commcare/importer.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "bench_util.h"

using namespace commcare;

namespace {

std::unique_ptr<Engine> Fresh(const std::string& data) {
  std::filesystem::remove_all(data);
  InitOptions io;
  io.data_dir = data;
  if (!Engine::Init(io).ok()) return nullptr;
  EngineOptions eo;
  eo.data_dir = data;
  auto e = Engine::Open(eo);
  return e.ok() ? std::move(*e) : nullptr;
}

std::string Props(long i) {
  return fmt::format(
      "<district>d{}</district><age>{}</age><sex>{}</sex><phone>+2547{:08}</phone>"
      "<status>active</status>",
      i % 47, i % 90, i % 2 ? "f" : "m", i);
}

// The floor: the same blocks, already built, submitted 100 per form.
double Floor(Engine* e, long n) {
  std::vector<std::string> forms;
  for (long f = 0; f * 100 < n; ++f) {
    std::string blocks;
    for (long i = f * 100; i < std::min(n, (f + 1) * 100); ++i)
      blocks += fmt::format(
          R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{:032x}" date_modified="2026-01-01T00:00:00.000000Z" user_id="u1"><create><case_type>patient</case_type><case_name>Person {}</case_name><owner_id>u1</owner_id></create><update><external_id>X{}</external_id>{}</update></case>)",
          i + 1, i, i, Props(i));
    forms.push_back(fmt::format(
        R"(<?xml version="1.0"?><system version="1" uiVersion="1" xmlns="http://commcarehq.org/case"><meta xmlns="http://openrosa.org/jr/xforms"><deviceID>floor</deviceID><timeStart>2026-01-01T00:00:00Z</timeStart><timeEnd>2026-01-01T00:00:00Z</timeEnd><username>u</username><userID>u1</userID><instanceID>{:032x}</instanceID></meta>{}</system>)",
        f + 1, blocks));
  }
  auto t0 = bench::Clock::now();
  for (auto& body : forms) {
    SubmitRequest r;
    r.domain = "bench";
    r.user_id = "u1";
    r.body = std::move(body);
    r.openrosa_version = "3.0";
    if (e->Submit(r).http_status != 201) fmt::print(stderr, "floor: a form failed\n");
  }
  return bench::Seconds(t0, bench::Clock::now());
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 100000;
  const std::string dir = argc > 2 ? argv[2] : "/tmp/cc-import-bench";
  std::filesystem::create_directories(dir);
  const std::string csv = dir + "/cases.csv";
  {
    std::ofstream out(csv);
    out << "external_id,name,district,age,sex,phone,status\n";
    for (long i = 0; i < n; ++i)
      out << fmt::format("X{},Person {},d{},{},{},+2547{:08},active\n", i, i, i % 47, i % 90,
                         i % 2 ? "f" : "m", i);
  }
  auto e = Fresh(dir + "/data");
  if (!e) return fmt::print(stderr, "cannot open {}/data\n", dir), 1;
  CaseImportOptions o;
  o.domain = "bench";
  o.case_type = "patient";
  o.search_field = "external_id";
  o.create_new = true;
  o.user_id = "u1";
  o.username = "bench";
  o.result_path = dir + "/result.jsonl";
  auto t0 = bench::Clock::now();
  auto r = ImportCases(e.get(), nullptr, o, csv);
  const double secs = bench::Seconds(t0, bench::Clock::now());
  if (!r.ok()) return fmt::print(stderr, "{}\n", r.status().ToString()), 1;
  fmt::print(
      "import: {} rows ({} created, {} forms) in {:.2f} s = {:.0f} rows/s (target <= 20 s "
      "for 100k)\n",
      r->rows, r->created_count, r->num_chunks, secs, r->rows / secs);
  // Visible through the Case API: each case read as Case API JSON, and counted.
  t0 = bench::Clock::now();
  long seen = 0, json_bytes = 0;
  storage::CaseFilter f;
  f.domain = "bench";
  f.type = "patient";
  std::vector<std::string> ids;
  (void)e->ListCases(f, [&](const CaseRecord& c) { return ids.push_back(c.case_id), true; });
  for (const auto& id : ids)
    if (auto c = e->GetCase("bench", id); c.ok()) ++seen, json_bytes += CaseToJson(*c).size();
  fmt::print("read back: {} of {} cases as Case API JSON ({} bytes) in {:.2f} s\n", seen, n,
             json_bytes, bench::Seconds(t0, bench::Clock::now()));
  t0 = bench::Clock::now();
  auto again = ImportCases(e.get(), nullptr, o, csv);
  if (!again.ok()) return fmt::print(stderr, "{}\n", again.status().ToString()), 1;
  fmt::print("rerun: {} of {} chunks found stored, {:.2f} s\n", again->chunks_already_applied,
             again->num_chunks, bench::Seconds(t0, bench::Clock::now()));
  e.reset();
  auto fe = Fresh(dir + "/floor");
  if (!fe) return 1;
  const double floor = Floor(fe.get(), n);
  fmt::print(
      "floor: the same {} case blocks pre-built, {} forms submitted: {:.2f} s = {:.0f} "
      "rows/s; import / floor = {:.2f}\n",
      n, (n + 99) / 100, floor, n / floor, secs / floor);
  return seen == n ? 0 : 1;
}
