// The task queue: CommCare's asynchronous work (Celery's role in HQ) done durably in the
// deployment's own database — SQLite on one machine, PostgreSQL (FOR UPDATE SKIP LOCKED,
// LISTEN/NOTIFY) when several machines share the work. Tasks are delivered at least once: a
// worker that dies loses its lease and the task runs again, so a handler makes its effect
// idempotent (keyed by the task id or its unique key). docs/tasks.md has the whole contract.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare {

// What to run: a registered type, its JSON payload, where and when.
struct TaskSpec {
  std::string type;            // a handler's name, e.g. "export.cases"
  std::string payload = "{}";  // a JSON value the handler reads
  std::string queue = "default";
  std::string domain;      // the project the task works for ("" for the system)
  int priority = 0;        // higher runs first among due tasks of a queue
  int64_t run_at = 0;      // microseconds since the epoch; 0: now
  int max_attempts = 5;    // attempts before the task is dead-lettered (1..100)
  std::string unique_key;  // at most one queued, retrying or running task per key ("": none)
};

// A task's states. queued → running → succeeded | retrying (→ running ...) | dead | cancelled.
enum class TaskState { kQueued, kRunning, kRetrying, kSucceeded, kDead, kCancelled };
std::string_view TaskStateName(TaskState s);  // "queued", "running", ...
std::optional<TaskState> ParseTaskState(std::string_view name);

// A task as the queue holds it.
struct TaskInfo {
  int64_t id = 0;
  TaskSpec spec;
  TaskState state = TaskState::kQueued;
  int attempts = 0;         // started so far
  int64_t created_at = 0;   // microseconds since the epoch, as every time here
  int64_t started_at = 0;   // the last attempt's start (0: never)
  int64_t finished_at = 0;  // when it succeeded, died or was cancelled (0: not yet)
  int64_t lease_until = 0;  // a running task's lease; past it the task is rescued
  std::string worker;       // the running or last worker ("host:pid:n")
  int64_t progress_done = 0, progress_total = 0;
  std::string progress_message;
  std::string result;             // the handler's JSON result ("" until it succeeds)
  std::string last_error;         // the last attempt's error
  bool cancel_requested = false;  // a running task asked to stop
  std::string ToJson() const;     // one JSON object, times as ISO 8601
};

// Which tasks List returns, newest first.
struct TaskFilter {
  std::string domain;  // "" any
  std::string queue;   // "" any
  std::string type;    // "" any
  std::optional<TaskState> state;
  std::string unique_key;  // "" any; else the tasks enqueued with this key, finished or not
  int64_t before_id = 0;   // paging: ids below this (0: from the newest)
  int limit = 100;
};

// A queue's figures for /metrics and `commcare tasks stats`.
struct QueueStats {
  std::string queue;
  int64_t queued = 0, running = 0, retrying = 0, succeeded = 0, dead = 0, cancelled = 0;
  double oldest_due_seconds = 0;  // how long the oldest due, unstarted task has waited
};

// A periodic schedule: a cron line in a time zone that enqueues `task` once per firing, across
// every worker of the deployment. Missed firings (no worker running) follow `missed`.
struct Schedule {
  std::string name;  // unique
  std::string cron;  // "m h dom mon dow" (Vixie syntax: lists, ranges, steps, names) or @daily...
  std::string time_zone = "UTC";  // an IANA name, e.g. "Africa/Nairobi"; DST-correct
  TaskSpec task;                  // run_at and unique_key are set per firing
  enum class Missed { kOnce, kSkip };
  Missed missed = Missed::kOnce;  // once: one catch-up firing; skip: wait for the next one
  bool enabled = true;
  int64_t next_run_at = 0;  // set by the queue
  int64_t last_run_at = 0;  // the last firing (0: never)
  std::string ToJson() const;
};

// Checks a cron line and time zone; InvalidArgument names the bad field or zone.
Status CheckSchedule(std::string_view cron, std::string_view time_zone);
// The first firing of cron in time_zone strictly after `after` (microseconds since the epoch).
Result<int64_t> NextCronTime(std::string_view cron, std::string_view time_zone, int64_t after);

// The durable queue. Thread-safe; several processes may share one database.
class TaskQueue {
 public:
  virtual ~TaskQueue() = default;
  // Adds a task; returns its id. With a unique key already held by an unfinished task, adds
  // nothing and returns that task's id. InvalidArgument names a bad field.
  virtual Result<int64_t> Enqueue(const TaskSpec& spec) = 0;
  virtual Result<TaskInfo> Get(int64_t id) = 0;  // NotFound when there is none
  virtual Result<std::vector<TaskInfo>> List(const TaskFilter& filter) = 0;
  // A queued or retrying task is cancelled; a running one is asked to stop (its handler sees
  // Cancelled()); FailedPrecondition for a finished one.
  virtual Status Cancel(int64_t id) = 0;
  // Queues a dead or cancelled task again, now, with its attempts reset.
  virtual Status Retry(int64_t id) = 0;
  // Waits until the task has finished (succeeded, dead or cancelled) or timeout passes;
  // returns it either way.
  virtual Result<TaskInfo> Wait(int64_t id, std::chrono::milliseconds timeout) = 0;
  virtual Result<std::vector<QueueStats>> Stats() = 0;

  // Adds or replaces a schedule by name (its next firing computed from now).
  virtual Status PutSchedule(const Schedule& schedule) = 0;
  virtual Status DeleteSchedule(std::string_view name) = 0;  // NotFound when there is none
  virtual Result<std::vector<Schedule>> Schedules() = 0;
  // Deletes finished tasks older than the given age; returns how many.
  virtual Result<int64_t> Prune(std::chrono::seconds older_than) = 0;
};

// What a running handler sees of its task.
class TaskContext {
 public:
  virtual ~TaskContext() = default;
  virtual const TaskInfo& task() const = 0;
  std::string_view payload() const { return task().spec.payload; }
  // Reports progress (also a heartbeat: the lease is renewed). Cheap to call often.
  virtual void Progress(int64_t done, int64_t total, std::string_view message = {}) = 0;
  // Whether the task was cancelled while running: a handler returns soon after.
  virtual bool Cancelled() const = 0;
};

// A handler returns its result as JSON ("" for none), or an error. InvalidArgument, NotFound,
// PermissionDenied and FailedPrecondition are permanent (dead-lettered at once); any other error
// is retried with exponential backoff and jitter until max_attempts.
using TaskHandler = std::function<Result<std::string>(TaskContext&)>;

// How a task type runs.
struct TaskTypeOptions {
  std::chrono::milliseconds lease{60000};          // renewed by heartbeats while it runs
  std::chrono::milliseconds backoff_base{1000};    // attempt n waits base * 2^(n-1) ± 20%
  std::chrono::milliseconds backoff_max{3600000};  // capped here
};

// A pool of worker threads running tasks from some queues of a TaskQueue.
struct TaskWorkersOptions {
  std::vector<std::string> queues = {"default"};  // empty: every queue
  int workers = 2;                                // threads running handlers
  std::chrono::milliseconds poll{500};  // when nothing wakes them (SQLite across processes)
  bool run_schedules = true;            // fire due schedules
  int prefetch = 4;  // tasks claimed per worker thread at a time (more: faster short tasks)
};

// What one pool has run per queue since it started (for /metrics).
struct QueueRunStats {
  std::string queue;
  int64_t succeeded = 0, failed = 0;  // attempts that returned Ok / an error
  double run_seconds = 0;             // handlers' total run time
};

class TaskWorkers {
 public:
  virtual ~TaskWorkers() = default;
  // Registers a handler before Start. Types with no handler here are left for other workers.
  virtual void Register(std::string type, TaskHandler handler, TaskTypeOptions options = {}) = 0;
  // Whether a handler is registered for this type (so this pool claims its tasks).
  virtual bool Handles(std::string_view type) const = 0;
  virtual Status Start() = 0;
  // Stops claiming, lets running handlers finish (their tasks' leases are released when they
  // do not finish within grace), and joins the threads.
  virtual void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(10000)) = 0;
  // Tasks finished by this pool since Start (succeeded + failed attempts).
  virtual int64_t Finished() const = 0;
  virtual std::vector<QueueRunStats> RunStats() const = 0;
};

// Opens the queue in a database: "postgres:<conninfo>" or a SQLite file ("" in memory).
Result<std::unique_ptr<TaskQueue>> OpenTaskQueue(const std::string& where);
// A worker pool over queue (which must outlive it).
std::unique_ptr<TaskWorkers> NewTaskWorkers(TaskQueue* queue, TaskWorkersOptions options);

}  // namespace commcare
