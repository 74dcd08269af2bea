// Mobile sync benchmark: a domain of --cases cases (20 properties each, 10% with a parent
// index); one user owns --owned of them, a second user --big. Measures the server time of an
// initial restore of the first user (to the last byte, written to a counting sink), of an
// incremental restore after 100 of its cases changed, and the peak memory one restore of the
// second user adds (it must not grow with the payload: the payload is streamed).
//   sync_bench [--cases 1000000] [--owned 10000] [--big 100000] [--dir DIR] [--runs 10] [--keep]
// --keep: leave DIR in place, and reuse a DIR a previous --keep run left (skips the setup).
#include <commcare/engine.h>
#include <commcare/sync.h>
#include <fmt/format.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "bench_host.h"
#include "bench_util.h"

namespace {

using namespace bench;

constexpr int kCasesPerForm = 10;

// Case c: owner "bench-user" for c < owned, "big-user" for owned <= c < owned + big, else one
// of 1,000 other owners; every 10th case is the child of the case 5 before it.
std::string CaseBlock(long c, long owned, long big, long form) {
  std::string owner = c < owned         ? "bench-user"
                      : c < owned + big ? "big-user"
                                        : fmt::format("other-{}", c % 1000);
  std::string props;
  for (int p = 0; p < 20; ++p)
    props += fmt::format("<prop_{0}>value {0} of case {1} form {2}</prop_{0}>", p, c, form);
  std::string index;
  if (c % 10 == 9)
    index = fmt::format("<n0:index><n0:parent case_type=\"patient\">case-{}</n0:parent></n0:index>",
                        c - 5);
  return fmt::format(
      R"(<n0:case xmlns:n0="http://commcarehq.org/case/transaction/v2" case_id="case-{0}" date_modified="2020-05-01T10:00:00.000Z" user_id="bench-user"><n0:create><n0:case_type>patient</n0:case_type><n0:case_name>Patient {0}</n0:case_name><n0:owner_id>{1}</n0:owner_id></n0:create><n0:update>{2}</n0:update>{3}</n0:case>)",
      c, owner, props, index);
}

std::string Form(long form, const std::string& blocks) {
  return fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://openrosa.org/formdesigner/sync-bench"><n1:meta xmlns:n1="http://openrosa.org/jr/xforms"><n1:instanceID>sync-form-{}</n1:instanceID><n1:userID>bench-user</n1:userID></n1:meta>{}</data>)",
      form, blocks);
}

void Die(const std::string& what) {
  fmt::print(stderr, "{}\n", what);
  std::exit(1);
}

// Bytes the allocator has handed out now.
size_t HeapInUse() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

struct Timed {
  size_t peak_heap = 0;  // the most the heap held at any chunk
  double ms = 0;
  commcare::RestoreResult result;
  long long bytes = 0;
};

// sample_heap: record the heap at every chunk (mallinfo2 is slow: memory runs only).
Timed Restore(commcare::Sync* sync, const commcare::RestoreRequest& q, bool sample_heap = false) {
  Timed t;
  auto t0 = Clock::now();
  auto r = sync->Restore(q, [&](int, std::string_view chunk) {
    t.bytes += static_cast<long long>(chunk.size());
    if (sample_heap) t.peak_heap = std::max(t.peak_heap, HeapInUse());
    return commcare::Status::Ok();
  });
  t.ms = Seconds(t0, Clock::now()) * 1e3;
  if (!r.ok()) Die("restore: " + r.status().ToString());
  if (r->http_status != 200) Die("restore: " + r->message);
  t.result = *r;
  if (std::getenv("SYNC_BENCH_TIMINGS")) {
    for (const auto& [phase, ms] : r->timings) fmt::print(" {} {:.1f}", phase, ms);
    fmt::print("\n");
  }
  return t;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  long cases = 1000000, owned = 10000, big = 100000;
  int runs = 10;
  bool keep = false;
  std::string dir =
      (std::filesystem::temp_directory_path() / fmt::format("cc-sbench-{}", ::getpid())).string();
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (k == "--cases")
      cases = std::stol(next());
    else if (k == "--owned")
      owned = std::stol(next());
    else if (k == "--big")
      big = std::stol(next());
    else if (k == "--dir")
      dir = next();
    else if (k == "--runs")
      runs = std::stoi(next());
    else if (k == "--keep")
      keep = true;
    else
      Die("unknown option " + k);
  }
  const bool reuse = keep && std::filesystem::exists(dir + "/data/setup-done");
  if (!reuse) std::filesystem::remove_all(dir);
  commcare::EngineOptions o;
  o.durable = false;  // setup speed; restores only read
  auto host = bench::OpenHost(dir + "/data", "{}", o);
  commcare::Engine* engine = host->engine();
  auto t0 = Clock::now();
  if (!reuse) {
    std::atomic<long> next{0};
    const long forms = (cases + kCasesPerForm - 1) / kCasesPerForm;
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&] {
        commcare::SubmitRequest r;
        r.domain = "bench";
        for (long f; (f = next.fetch_add(1)) < forms;) {
          std::string blocks;
          for (long c = f * kCasesPerForm; c < std::min(cases, (f + 1) * kCasesPerForm); ++c)
            blocks += CaseBlock(c, owned, big, f);
          r.body = Form(f, blocks);
          auto resp = engine->Submit(r);
          if (resp.http_status != 201) Die(fmt::format("form {}: {}", f, resp.message));
        }
      });
    for (auto& t : ts) t.join();
    std::ofstream(dir + "/data/setup-done") << cases;
  }
  fmt::print("setup: {} cases in {:.1f} s\n", cases, Seconds(t0, Clock::now()));
  auto sync = commcare::Sync::Open(engine, dir + "/synclogs.sqlite");
  if (!sync.ok()) Die(sync.status().ToString());
  commcare::RestoreRequest q;
  q.domain = "bench";
  q.user.username = "bench";
  q.user.user_id = "bench-user";
  q.user.owner_ids = {"bench-user"};
  q.items = true;

  std::vector<double> initial;
  Timed first;
  for (int i = 0; i < runs; ++i) {
    first = Restore(sync->get(), q);
    initial.push_back(first.ms);
  }
  fmt::print(
      "initial restore: {} cases ({} bytes) of {} in the domain: median {:.1f} ms, best {:.1f} ms "
      "({} runs)\n",
      first.result.cases, first.bytes, cases, Median(initial),
      *std::min_element(initial.begin(), initial.end()), runs);

  // 100 of the user's cases change (by another device), then incremental restores.
  commcare::RestoreRequest inc = q;
  inc.since = first.result.sync_id;
  {
    commcare::SubmitRequest r;
    r.domain = "bench";
    r.last_sync_token = "another-device";
    for (long f = 0; f < 10; ++f) {
      std::string blocks;
      for (long c = f * 10; c < f * 10 + 10; ++c)
        blocks += fmt::format(
            R"(<n0:case xmlns:n0="http://commcarehq.org/case/transaction/v2" case_id="case-{}" date_modified="2020-06-01T10:00:00.000Z" user_id="bench-user"><n0:update><prop_1>changed</prop_1></n0:update></n0:case>)",
            c * (owned / 100));
      r.body = Form(10000000 + ::getpid() * 100L + f, blocks);  // new ids on a reused DIR
      auto resp = engine->Submit(r);
      if (resp.http_status != 201) Die("update: " + resp.message);
    }
  }
  std::vector<double> incremental;
  Timed last;
  for (int i = 0; i < runs * 3; ++i) {
    last = Restore(sync->get(), inc);
    incremental.push_back(last.ms);
  }
  if (last.result.cases != 100) Die(fmt::format("incremental sent {} cases", last.result.cases));
  fmt::print("incremental restore after 100 changes: {} cases: median {:.2f} ms, best {:.2f} ms\n",
             last.result.cases, Median(incremental),
             *std::min_element(incremental.begin(), incremental.end()));

  // Peak memory a restore adds, for the 10k user and the 100k user: the heap (sampled at every
  // chunk written) above what it held before, and the peak RSS (which also counts the pages of
  // the database files SQLite maps while reading).
  for (const char* user : {"bench-user", "big-user"}) {
    commcare::RestoreRequest b = q;
    b.user.user_id = user;
    b.user.owner_ids = {user};
    { std::ofstream("/proc/self/clear_refs") << "5"; }  // resets VmHWM
    const long before = StatusKb("VmRSS");
    const size_t heap_before = HeapInUse();
    // Sampled at every chunk and every 2 ms (livequery's sets peak before the first chunk).
    std::atomic<bool> stop{false};
    std::atomic<size_t> sampled{0};
    std::thread sampler([&] {
      while (!stop) {
        size_t h = HeapInUse();
        if (h > sampled) sampled = h;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
    Timed t = Restore(sync->get(), b, /*sample_heap=*/true);
    stop = true;
    sampler.join();
    t.peak_heap = std::max(t.peak_heap, sampled.load());
    const long peak = StatusKb("VmHWM");
    fmt::print(
        "{}: {} cases, {:.1f} MB payload (heap sampled per chunk: slower) in {:.0f} ms; peak heap "
        "added {:.1f} MB, peak RSS added "
        "{:.1f} MB\n",
        user, t.result.cases, t.bytes / 1e6, t.ms,
        (static_cast<double>(t.peak_heap) - static_cast<double>(heap_before)) / 1e6,
        (peak - before) / 1024.0);
  }
  if (!keep) std::filesystem::remove_all(dir);
  return 0;
}
