// Task queue throughput: N no-op tasks enqueued, then run by a pool of worker threads; beside it
// the floor — the same claims and finishes done by one thread with no pool (the least work the
// queue's tables need). SQLite by default; --pg CONNINFO for PostgreSQL.
//
//   build/bin/tasks_bench [--tasks 100000] [--workers 2] [--prefetch 64] [--pg CONNINFO]
#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>

#include "bench_util.h"
#include "commcare/tasks.h"
#include "tasks/queue.h"

using namespace commcare;

namespace {

std::unique_ptr<tasks::SqlTaskQueue> Fresh(const std::string& where) {
  if (where.rfind("postgres:", 0) != 0) std::filesystem::remove(where);
  auto q = tasks::SqlTaskQueue::Open(where);
  if (!q.ok()) {
    fmt::print(stderr, "open {}: {}\n", where, q.status().ToString());
    std::exit(1);
  }
  return std::move(*q);
}

double Enqueue(tasks::SqlTaskQueue* q, int n) {
  auto t0 = bench::Clock::now();
  TaskSpec s;
  s.type = "commcare.noop";
  for (int i = 0; i < n; ++i)
    if (!q->Enqueue(s).ok()) std::exit(1);
  return n / bench::Seconds(t0, bench::Clock::now());
}

}  // namespace

int main(int argc, char** argv) {
  int n = 100000, workers = 2, prefetch = 64;
  std::string pg;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tasks")) n = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--workers")) workers = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--prefetch")) prefetch = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--pg")) pg = argv[i + 1];
  }
  const std::string where =
      pg.empty() ? (std::filesystem::temp_directory_path() / "cc-tasks-bench.db").string()
                 : "postgres:" + pg;
  fmt::print("backend {}, {} tasks, {} workers, prefetch {}\n", pg.empty() ? "sqlite" : "postgres",
             n, workers, prefetch);

  // The pool: enqueue, then run them all.
  auto q = Fresh(where);
  if (!pg.empty()) (void)q->Prune(std::chrono::seconds(0));
  const double enq = Enqueue(q.get(), n);
  TaskWorkersOptions o;
  o.queues = {};
  o.workers = workers;
  o.prefetch = prefetch;
  o.run_schedules = false;
  auto w = NewTaskWorkers(q.get(), o);
  w->Register("commcare.noop", [](TaskContext&) -> Result<std::string> { return std::string(); });
  auto t0 = bench::Clock::now();
  if (!w->Start().ok()) return 1;
  while (w->Finished() < n) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  w->Stop();  // writes the last outcomes
  const double pool = n / bench::Seconds(t0, bench::Clock::now());
  int64_t succeeded = 0;
  for (const auto& s : *q->Stats()) succeeded += s.succeeded;
  if (succeeded != n) {
    fmt::print(stderr, "only {} of {} tasks succeeded\n", succeeded, n);
    return 1;
  }

  // The floor: one thread claiming and finishing batches, no handlers, no pool.
  auto f = Fresh(pg.empty() ? where + ".floor" : where);
  if (!pg.empty()) (void)f->Prune(std::chrono::seconds(0));
  Enqueue(f.get(), n);
  t0 = bench::Clock::now();
  const int batch = workers * prefetch;
  for (int done = 0; done < n;) {
    auto c = f->Claim({}, {"commcare.noop"}, batch, "floor", INT64_MAX / 2);
    std::vector<tasks::Outcome> out;
    for (const auto& t : *c) out.push_back({.id = t.id, .ok = true});
    if (!f->Finish(out, "floor").ok()) return 1;
    done += int(c->size());
  }
  const double floor = n / bench::Seconds(t0, bench::Clock::now());
  fmt::print("enqueue            {:>9.0f} tasks/s (one transaction each)\n", enq);
  fmt::print("pool run           {:>9.0f} tasks/s\n", pool);
  fmt::print("floor (batches {:>3}) {:>8.0f} tasks/s\n", batch, floor);
  fmt::print("ratio pool/floor   {:>9.2f}\n", pool / floor);
  return 0;
}
