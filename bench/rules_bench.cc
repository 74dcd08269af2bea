// Case update rule throughput: N cases of type person (10% with status=new) submitted 50 per
// form, then a rule "status = new -> set status=seen, stage=2" run three ways, each timed:
//   floor  the scan alone: every person case read through Engine::ListCases, nothing judged;
//   dry    the rule judged on every case, the changes listed, nothing written;
//   run    the rule applied: one system form per matching case through Engine::Submit;
//   rerun  the same rule again: it matches nothing (status is no longer new), so no form.
// Reports cases/s for the scan-bound passes and forms/s for the applying pass.
//   rules_bench [cases=1000000] [dir=/tmp/cc-rules-bench] [--reuse: keep an earlier load]
#include <commcare/engine.h>
#include <commcare/rules.h>
#include <fmt/format.h>

#include <cstring>
#include <filesystem>

#include "bench_engine.h"

using namespace commcare;

namespace {

constexpr const char* kRule = R"({"name": "seen", "domain": "bench", "case_type": "person",
  "criteria": [{"property_name": "status", "match_type": "EQUAL", "property_value": "new"}],
  "actions": {"update": [{"name": "status", "value": "seen"}, {"name": "stage", "value": "2"}]}})";

void Report(const char* what, const RuleRunSummary& s, double secs, bool forms) {
  fmt::print("{:6} {:8.2f} s  scanned {} matched {} changed {} failed {}  {:.0f} {}/s\n", what,
             secs, s.scanned, s.matched, s.changed, s.failed,
             forms ? s.changed / secs : s.scanned / secs, forms ? "forms" : "cases");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  bool reuse = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reuse") == 0)
      reuse = true;
    else
      args.push_back(argv[i]);
  }
  const long n = args.size() > 0 ? std::atol(args[0].c_str()) : 1000000;
  const std::string dir = args.size() > 1 ? args[1] : "/tmp/cc-rules-bench";
  auto e = bench::OpenLoaded(dir, reuse, n, [](long c) {
    return fmt::format(
        "<status>{1}</status><dob>1990-01-01</dob><village>v{2}</village><phone>555{0}</phone>", c,
        c % 10 == 0 ? "new" : "old", c % 100);
  });
  if (!e.ok()) return fmt::print(stderr, "{}\n", e.status().ToString()), 1;
  // The floor: the same scan the rule makes, with nothing judged.
  auto t0 = bench::Clock::now();
  RuleRunSummary floor;
  storage::CaseFilter f;
  f.domain = "bench";
  f.type = "person";
  f.closed = false;
  auto st = (*e)->ListCases(f, [&](const CaseRecord&) { return ++floor.scanned, true; });
  if (!st.ok()) return fmt::print(stderr, "{}\n", st.ToString()), 1;
  Report("floor", floor, bench::Seconds(t0, bench::Clock::now()), false);
  for (const char* pass : {"dry", "run", "rerun"}) {
    RuleRunOptions o;
    o.dry_run = std::strcmp(pass, "dry") == 0;
    t0 = bench::Clock::now();
    auto s = RunRule(e->get(), kRule, o);
    if (!s.ok()) return fmt::print(stderr, "{}\n", s.status().ToString()), 1;
    Report(pass, *s, bench::Seconds(t0, bench::Clock::now()), std::strcmp(pass, "run") == 0);
  }
  return 0;
}
