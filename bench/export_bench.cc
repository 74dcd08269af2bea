// Export throughput: N cases x 25 properties (submitted 50 cases per form), then case exports
// to CSV and XLSX, and the floor measured in the same run: the least work a CSV export of these
// cases must do (the same case documents read from the same SQLite file with the same query,
// and the same number of bytes written), alone and with each document parsed as JSON.
// Reports rows/s, the ratio to the floor and RSS (before, and the peak sampled while exporting).
//   export_bench [cases=100000] [dir=/tmp/cc-export-bench] [--reuse: keep an earlier load]
//                [--csv-only: only the one-pass CSV export and the floors, e.g. to profile]
#include <commcare/engine.h>
#include <commcare/exports.h>
#include <fmt/format.h>
#include <sqlite3.h>

#include <boost/json.hpp>
#include <cstring>
#include <filesystem>

#include "bench_engine.h"

using namespace commcare;

namespace {

// The floor: every case document of the domain read with the store's scan query from the
// database file, bytes_per_row bytes of each written through a 256 KiB buffer; with parse, each
// document is also parsed into a JSON DOM (the store's format). Returns rows/s.
double Floor(const std::string& db_path, const std::string& out, size_t bytes_per_row, bool parse,
             long* rows) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db,
                     "SELECT doc FROM cases WHERE (?1='' OR domain=?1) AND (?2='' OR type=?2) AND "
                     "(?3='' OR owner_id=?3) AND (?4<0 OR closed=?4) AND (?5=1 OR deleted=0) "
                     "ORDER BY case_id",
                     -1, &s, nullptr);
  sqlite3_bind_text(s, 1, "bench", -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, "", -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, "", -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 4, -1);
  sqlite3_bind_int64(s, 5, 0);
  FILE* f = fopen(out.c_str(), "wb");
  setvbuf(f, nullptr, _IOFBF, 1 << 18);
  std::string pad(bytes_per_row, 'x');
  boost::json::parser p;
  long n = 0, parsed_keys = 0;
  auto t = bench::Clock::now();
  while (sqlite3_step(s) == SQLITE_ROW) {
    const char* doc = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    const size_t len = size_t(sqlite3_column_bytes(s, 0));
    if (parse) {
      unsigned char buf[16384];
      boost::json::monotonic_resource mr(buf, sizeof buf);
      p.reset(&mr);
      boost::system::error_code ec;
      p.write(doc, len, ec);
      parsed_keys += long(p.release().get_object().size());
    }
    // The row's bytes: the document's own bytes where it is long enough (they were just read).
    if (len >= bytes_per_row)
      fwrite(doc, 1, bytes_per_row, f);
    else
      fwrite(pad.data(), 1, bytes_per_row, f);
    ++n;
  }
  fclose(f);
  double secs = bench::Seconds(t, bench::Clock::now());
  sqlite3_finalize(s);
  sqlite3_close(db);
  if (parse && parsed_keys == 0) fmt::print(stderr, "floor: nothing parsed\n");
  *rows = n;
  return n / secs;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  bool reuse = false, csv_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reuse") == 0)
      reuse = true;
    else if (std::strcmp(argv[i], "--csv-only") == 0)
      csv_only = true;
    else
      args.push_back(argv[i]);
  }
  const long n = args.size() > 0 ? std::atol(args[0].c_str()) : 100000;
  const std::string dir = args.size() > 1 ? args[1] : "/tmp/cc-export-bench";
  const std::string data = dir + "/data";
  auto e = bench::OpenLoaded(dir, reuse, n, [](long c) {
    std::string props;
    for (int p = 0; p < 25; ++p) props += fmt::format("<p{:02}>v{}_{}</p{:02}>", p, c, p, p);
    return props;
  });
  if (!e.ok()) return fmt::print(stderr, "{}\n", e.status().ToString()), 1;
  double given_rate = 0;
  size_t given_bytes_per_row = 0;
  for (int run = 0; run < (csv_only ? 1 : 3); ++run) {
    ExportDefinition d;
    d.domain = "bench";
    d.format = run == 2 ? ExportDefinition::Format::kXlsx : ExportDefinition::Format::kCsv;
    // run 0: the columns given (one pass); runs 1 and 2: every column, discovered (two passes).
    if (run == 0) {
      d.columns.push_back({"case_id", "", {}});
      d.columns.push_back({"name", "", {}});
      for (int p = 0; p < 25; ++p) d.columns.push_back({fmt::format("p{:02}", p), "", {}});
    }
    const char* name = run == 0 ? "csv, 27 columns given" : run == 1 ? "csv, all 39" : "xlsx";
    long before = bench::StatusKb("VmRSS"), peak = before;
    long anon_before = bench::StatusKb("RssAnon"), anon_peak = anon_before;
    auto t = bench::Clock::now();
    auto r =
        RunExport(e->get(), d, fmt::format("{}/cases{}.{}", dir, run, run == 2 ? "xlsx" : "csv"),
                  [&](int64_t, int64_t) {
                    peak = std::max(peak, bench::StatusKb("VmRSS"));
                    anon_peak = std::max(anon_peak, bench::StatusKb("RssAnon"));
                    return true;
                  });
    double s = bench::Seconds(t, bench::Clock::now());
    if (!r.ok()) return fmt::print(stderr, "{}\n", r.status().ToString()), 1;
    const auto bytes = std::filesystem::file_size(r->file);
    if (run == 0) {
      given_rate = r->rows / s;
      given_bytes_per_row = r->rows ? bytes / size_t(r->rows) : 0;
    }
    fmt::print(
        "{}: {} rows in {:.2f} s = {:.0f} rows/s; RSS before {} MB, peak {} MB (anon {} -> {} "
        "MB); file {} MB\n",
        name, r->rows, s, r->rows / s, before / 1024, peak / 1024, anon_before / 1024,
        anon_peak / 1024, bytes >> 20);
  }
  long rows = 0;
  const std::string db = data + "/db/p0.sqlite";
  for (bool parse : {false, true}) {
    double rate = Floor(db, dir + "/floor.csv", given_bytes_per_row, parse, &rows);
    fmt::print(
        "floor{}: {} rows, {} bytes each = {:.0f} rows/s; csv (27 columns) / floor = {:.2f}\n",
        parse ? " with JSON parse" : "", rows, given_bytes_per_row, rate, given_rate / rate);
  }
  return 0;
}
