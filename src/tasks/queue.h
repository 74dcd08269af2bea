// The task queue over a SQL database (internal): what the public TaskQueue offers, plus what
// the worker pool needs — claiming due tasks, finishing them, heartbeats, rescuing tasks whose
// worker died, firing due schedules — and Enqueue inside a caller's own transaction.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "commcare/tasks.h"
#include "util/sql_db.h"

namespace commcare::tasks {

// A claimed task's outcome, written back in batches.
struct Outcome {
  int64_t id = 0;
  bool ok = false;
  bool permanent = false;  // dead-letter now
  std::string result;      // ok: the handler's JSON
  std::string error;       // !ok: the status text
  int64_t retry_at = 0;    // !ok && !permanent: when to try again
  bool progress = false;   // the handler's last progress, not yet written
  int64_t done = 0, total = 0;
  std::string message;
};

// Progress and lease renewals for running tasks, written in one transaction.
struct Beat {
  int64_t id = 0;
  int64_t lease_until = 0;
  bool progress = false;
  int64_t done = 0, total = 0;
  std::string message;
};

class SqlTaskQueue final : public TaskQueue {
 public:
  static Result<std::unique_ptr<SqlTaskQueue>> Open(const std::string& where);

  // The TaskQueue contract (include/commcare/tasks.h).
  Result<int64_t> Enqueue(const TaskSpec& spec) override;
  Result<TaskInfo> Get(int64_t id) override;
  Result<std::vector<TaskInfo>> List(const TaskFilter& filter) override;
  Status Cancel(int64_t id) override;
  Status Retry(int64_t id) override;
  Result<TaskInfo> Wait(int64_t id, std::chrono::milliseconds timeout) override;
  Result<std::vector<QueueStats>> Stats() override;
  Status PutSchedule(const Schedule& schedule) override;
  Status DeleteSchedule(std::string_view name) override;
  Result<std::vector<Schedule>> Schedules() override;
  Result<int64_t> Prune(std::chrono::seconds older_than) override;

  // Adds a task on db, inside a transaction the caller holds there (db holds this queue's
  // tables: the task commits or rolls back with the caller's write).
  static Result<int64_t> EnqueueIn(util::SqlDb* db, const TaskSpec& spec);

  // Marks up to n due tasks of queues (empty: all) and types running for worker, leased until
  // lease_until; returns them.
  Result<std::vector<TaskInfo>> Claim(const std::vector<std::string>& queues,
                                      const std::vector<std::string>& types, int n,
                                      const std::string& worker, int64_t lease_until);
  // Writes outcomes of worker's tasks (a task it no longer holds is left alone).
  Status Finish(const std::vector<Outcome>& outcomes, const std::string& worker);
  // Renews leases and writes progress; returns the ids whose cancel was requested.
  Result<std::set<int64_t>> Heartbeat(const std::vector<Beat>& beats, const std::string& worker);
  // Hands back claimed tasks that never started (their attempt uncounted).
  Status Release(const std::vector<int64_t>& ids, const std::string& worker);
  // Requeues (or dead-letters, at max_attempts) running tasks whose lease has passed; returns
  // how many.
  Result<int64_t> Rescue();
  // Enqueues the task of every due schedule once (across processes); returns how many fired.
  Result<int> FireSchedules();
  // How many wake-ups this process has seen (pass it to WaitForWork).
  uint64_t Wakes();
  // Blocks until a wake-up after `seen` (an enqueue or finish in this process, a NOTIFY on
  // PostgreSQL) or until timeout passes.
  void WaitForWork(std::chrono::milliseconds timeout, uint64_t seen);
  // Wakes WaitForWork and Wait callers in this process.
  void Notify();
  bool postgres() const { return db_->postgres(); }
  // Moves a schedule's next firing (tests: a missed period without waiting for it).
  Status SetNextRun(std::string_view name, int64_t micros);

 private:
  explicit SqlTaskQueue(std::unique_ptr<util::SqlDb> db, std::string where);
  Status StartListener();

  std::mutex mu_;  // the connection
  std::unique_ptr<util::SqlDb> db_;
  std::string where_;
  std::mutex wake_mu_;
  std::condition_variable wake_;
  uint64_t wakes_ = 0;
  struct Listener;
  std::shared_ptr<Listener> listener_;  // PostgreSQL LISTEN thread
 public:
  ~SqlTaskQueue() override;
};

// Reads a task row selected with kColumns.
TaskInfo TaskFromRow(const util::SqlRows& rows, size_t i);
extern const char* const kColumns;

}  // namespace commcare::tasks
