// Export throughput: N cases x 25 properties (submitted 50 cases per form), then a case export
// to CSV and to XLSX. Reports rows/s and RSS (before, and the peak sampled while exporting).
//   export_bench [cases=100000] [dir=/tmp/cc-export-bench]
#include <commcare/engine.h>
#include <commcare/exports.h>
#include <fmt/format.h>

#include <filesystem>

#include "bench_util.h"

using namespace commcare;

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 100000;
  const std::string dir = argc > 2 ? argv[2] : "/tmp/cc-export-bench";
  std::filesystem::remove_all(dir);
  InitOptions io;
  io.data_dir = dir + "/data";
  if (!Engine::Init(io).ok()) return 1;
  EngineOptions eo;
  eo.data_dir = io.data_dir;
  auto e = Engine::Open(eo);
  if (!e.ok()) return fmt::print(stderr, "{}\n", e.status().ToString()), 1;
  auto t0 = bench::Clock::now();
  const long per_form = 50;
  for (long f = 0; f * per_form < n; ++f) {
    std::string cases;
    for (long c = f * per_form; c < std::min(n, (f + 1) * per_form); ++c) {
      std::string props;
      for (int p = 0; p < 25; ++p) props += fmt::format("<p{:02}>v{}_{}</p{:02}>", p, c, p, p);
      cases += fmt::format(
          R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="case-{0}" date_modified="2020-01-01T00:00:00Z" user_id="u1"><create><case_type>person</case_type><case_name>Person {0}</case_name><owner_id>o1</owner_id></create><update>{1}</update></case>)",
          c, props);
    }
    SubmitRequest r;
    r.domain = "bench";
    r.body = fmt::format(
        R"(<?xml version="1.0"?><data xmlns="http://example.org/bench"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>form-{}</instanceID><userID>u1</userID></meta>{}</data>)",
        f, cases);
    auto resp = (*e)->Submit(r);
    if (resp.http_status != 201) return fmt::print(stderr, "submit: {}\n", resp.message), 1;
  }
  fmt::print("loaded {} cases in {:.1f} s\n", n, bench::Seconds(t0, bench::Clock::now()));
  for (int run = 0; run < 3; ++run) {
    auto fmt_ = run == 1 ? ExportDefinition::Format::kXlsx : ExportDefinition::Format::kCsv;
    ExportDefinition d;
    d.domain = "bench";
    d.format = fmt_;
    // run 2: the columns given (one pass over the cases instead of two).
    if (run == 2) {
      d.columns.push_back({"case_id", "", {}});
      d.columns.push_back({"name", "", {}});
      for (int p = 0; p < 25; ++p) d.columns.push_back({fmt::format("p{:02}", p), "", {}});
    }
    const char* name = run == 0 ? "csv" : run == 1 ? "xlsx" : "csv, 27 columns given";
    long before = bench::StatusKb("VmRSS"), peak = before;
    long anon_before = bench::StatusKb("RssAnon"), anon_peak = anon_before;
    auto t = bench::Clock::now();
    auto r =
        RunExport(e->get(), d, fmt::format("{}/cases{}.{}", dir, run, run == 1 ? "xlsx" : "csv"),
                  [&](int64_t, int64_t) {
                    peak = std::max(peak, bench::StatusKb("VmRSS"));
                    anon_peak = std::max(anon_peak, bench::StatusKb("RssAnon"));
                    return true;
                  });
    double s = bench::Seconds(t, bench::Clock::now());
    if (!r.ok()) return fmt::print(stderr, "{}\n", r.status().ToString()), 1;
    fmt::print(
        "{}: {} rows in {:.2f} s = {:.0f} rows/s; RSS before {} MB, peak {} MB (anon {} -> {} "
        "MB); file {} MB\n",
        name, r->rows, s, r->rows / s, before / 1024, peak / 1024, anon_before / 1024,
        anon_peak / 1024, std::filesystem::file_size(r->file) >> 20);
  }
  return 0;
}
