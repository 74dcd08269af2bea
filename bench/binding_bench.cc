// The C++ side of the Python binding's figures (bench/binding_bench.py drives it):
//
//   binding_bench forms FILE N          writes N ~3 KB forms (one case of 20 properties each),
//                                       each as an 8-byte little-endian length + the bytes
//   binding_bench submit FILE DIR       submits them through Engine::Submit, one thread,
//                                       durable commits (BENCH_NOT_DURABLE=1: not), into a
//                                       new data directory DIR
//   binding_bench process DIR           runs a C change processor (cc_pillows_add) over DIR's
//                                       change log through the C ABI
// Each prints one JSON line with its rate.
#include <commcare/c.h>
#include <commcare/engine.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench_host.h"
#include "bench_util.h"

namespace {

using namespace bench;

std::vector<std::string> ReadForms(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> forms;
  uint64_t n;
  while (in.read(reinterpret_cast<char*>(&n), sizeof n)) {
    std::string s(n, '\0');
    in.read(s.data(), static_cast<std::streamsize>(n));
    forms.push_back(std::move(s));
  }
  return forms;
}

int Forms(const std::string& path, long n) {
  std::ofstream out(path, std::ios::binary);
  for (long i = 0; i < n; ++i) {
    std::string f = MakeForm(i, n);
    uint64_t len = f.size();
    out.write(reinterpret_cast<const char*>(&len), sizeof len);
    out.write(f.data(), static_cast<std::streamsize>(f.size()));
  }
  return out ? 0 : 1;
}

int Submit(const std::string& path, const std::string& dir) {
  auto forms = ReadForms(path);
  std::filesystem::remove_all(dir);
  commcare::EngineOptions o;
  o.durable = std::getenv("BENCH_NOT_DURABLE") == nullptr;
  auto host = bench::OpenHost(dir, "{}", o);
  commcare::Engine* e = host->engine();
  commcare::SubmitRequest r;
  r.domain = "bench";
  auto t0 = Clock::now();
  for (const auto& f : forms) {
    r.body = f;
    if (e->Submit(r).http_status != 201) return fmt::print(stderr, "submit failed\n"), 1;
  }
  double s = Seconds(t0, Clock::now());
  fmt::print("{{\"forms\": {}, \"seconds\": {:.3f}, \"forms_per_s\": {:.1f}}}\n", forms.size(), s,
             forms.size() / s);
  return 0;
}

int Count(const char* change_json, size_t len, void* payload) {
  // As little as a processor can do while still reading what it was given.
  if (len == 0 || change_json[0] != '{') return cc_error_set(CC_EINTERNAL, "bad change");
  ++*static_cast<long*>(payload);
  return 0;
}

int Process(const std::string& dir) {
  std::string cfg = fmt::format(R"({{"backend": "sqlite", "data_dir": "{}"}})", dir);
  cc_engine_options o = CC_ENGINE_OPTIONS_INIT;
  o.config_json = cfg.c_str();
  cc_engine* e = nullptr;
  cc_pillows* p = nullptr;
  std::string pdir = dir + "/bench-pillows-c";
  std::filesystem::remove_all(pdir);
  std::string popts = fmt::format(R"({{"builtin": false, "dir": "{}"}})", pdir);
  long seen = 0;
  if (cc_engine_open(&e, &o) < 0 || cc_pillows_open(&p, e, popts.c_str()) < 0 ||
      cc_pillows_add(p, R"({"name": "count", "topics": ["case-sql", "form-sql"]})", Count, &seen) <
          0)
    return fmt::print(stderr, "{}\n", cc_error_last()->message), 1;
  int64_t n = 0;
  auto t0 = Clock::now();
  if (cc_pillows_run_until_caught_up(&n, p) < 0)
    return fmt::print(stderr, "{}\n", cc_error_last()->message), 1;
  double s = Seconds(t0, Clock::now());
  cc_pillows_free(p);
  cc_engine_free(e);
  std::filesystem::remove_all(pdir);
  fmt::print("{{\"changes\": {}, \"seconds\": {:.3f}, \"changes_per_s\": {:.1f}}}\n", seen, s,
             seen / s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "forms" && argc == 4) return Forms(argv[2], std::stol(argv[3]));
  if (mode == "submit" && argc == 4) return Submit(argv[2], argv[3]);
  if (mode == "process" && argc == 3) return Process(argv[2]);
  fmt::print(stderr, "usage: binding_bench forms FILE N | submit FILE DIR | process DIR\n");
  return 2;
}
