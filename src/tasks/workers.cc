// The worker pool: one dispatcher thread claims due tasks in batches, renews their leases,
// writes progress and outcomes back in batches, rescues tasks whose worker died and fires due
// schedules; worker threads run the handlers. A task is delivered at least once: a pool that
// dies holding it stops renewing its lease and another pool runs it again.
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <deque>
#include <map>
#include <random>
#include <thread>

#include "commcare/log.h"
#include "tasks/queue.h"
#include "util/time.h"

namespace commcare::tasks {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string WorkerId() {
  static std::atomic<int> n{0};
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return fmt::format("{}:{}:{}", host, getpid(), ++n);
}

bool Permanent(StatusCode c) {
  return c == StatusCode::kInvalidArgument || c == StatusCode::kNotFound ||
         c == StatusCode::kPermissionDenied || c == StatusCode::kFailedPrecondition;
}

struct Handler {
  TaskHandler fn;
  TaskTypeOptions options;
};

// A claimed task in this process: waiting for a thread, then running.
struct Held {
  TaskInfo task;
  const Handler* handler = nullptr;
  std::atomic<bool> cancelled{false};
  std::mutex mu;  // the progress below
  bool progress_dirty = false;
  int64_t done = 0, total = 0;
  std::string message;
};

class Context final : public TaskContext {
 public:
  Context(Held* h, const std::atomic<bool>* stopping) : h_(h), stopping_(stopping) {}
  const TaskInfo& task() const override { return h_->task; }
  void Progress(int64_t done, int64_t total, std::string_view message) override {
    std::lock_guard lk(h_->mu);
    h_->done = done;
    h_->total = total;
    h_->message = message;
    h_->progress_dirty = true;
  }
  bool Cancelled() const override { return h_->cancelled || *stopping_; }

 private:
  Held* h_;
  const std::atomic<bool>* stopping_;
};

class Pool final : public TaskWorkers {
 public:
  Pool(SqlTaskQueue* q, TaskWorkersOptions o) : q_(q), o_(std::move(o)), id_(WorkerId()) {}
  ~Pool() override { Stop(milliseconds(0)); }

  void Register(std::string type, TaskHandler fn, TaskTypeOptions options) override {
    handlers_[std::move(type)] = Handler{std::move(fn), options};
  }
  bool Handles(std::string_view type) const override {
    return handlers_.count(std::string(type)) > 0;
  }

  Status Start() override {
    if (started_) return Status::FailedPrecondition("the task workers are running already");
    if (o_.workers < 1 || o_.workers > 256)
      return Status::InvalidArgument("task workers: \"workers\" must be 1-256");
    started_ = true;
    for (const auto& [type, h] : handlers_) {
      types_.push_back(type);
      lease_ = std::min(lease_, h.options.lease);
    }
    dispatcher_ = std::thread([this] { Dispatch(); });
    for (int i = 0; i < o_.workers; ++i) threads_.emplace_back([this] { Work(); });
    return Status::Ok();
  }

  void Stop(milliseconds grace) override {
    if (!started_ || stopped_.exchange(true)) return;
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    ready_.notify_all();
    q_->Notify();
    if (dispatcher_.joinable()) dispatcher_.join();
    (void)HandBack(grace);
  }

  int64_t Finished() const override { return finished_; }

  std::vector<QueueRunStats> RunStats() const override {
    std::lock_guard lk(stats_mu_);
    std::vector<QueueRunStats> out;
    for (const auto& [k, v] : stats_) out.push_back(v);
    return out;
  }

 private:
  void Dispatch();
  void Work();
  Status Beat();
  Status FlushOutcomes();
  Status HandBack(milliseconds grace);
  void Record(const Held& h, const Status& s, double seconds);
  int64_t Backoff(const Held& h) const;

  SqlTaskQueue* q_;
  TaskWorkersOptions o_;
  std::string id_;
  std::map<std::string, Handler> handlers_;
  std::vector<std::string> types_;
  milliseconds lease_{3'600'000};
  bool started_ = false;
  std::atomic<bool> stopped_{false};

  std::mutex mu_;  // the members below
  std::condition_variable ready_;
  bool stopping_ = false;
  std::atomic<bool> stop_flag_{false};
  std::deque<std::shared_ptr<Held>> waiting_;
  std::map<int64_t, std::shared_ptr<Held>> held_;  // waiting and running
  std::vector<Outcome> outcomes_;
  std::vector<int64_t> interrupted_;  // handlers that gave up because the pool stops
  int running_ = 0;

  std::thread dispatcher_;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> finished_{0};
  mutable std::mutex stats_mu_;
  std::map<std::string, QueueRunStats> stats_;
};

void Pool::Dispatch() {
  auto next_chores = Clock::now();
  auto next_beat = Clock::now() + lease_ / 4;
  bool logged = false;  // a failing database, logged once per streak
  for (;;) {
    const uint64_t seen = q_->Wakes();
    {
      std::lock_guard lk(mu_);
      if (stopping_) break;
    }
    Status s = FlushOutcomes();
    if (s.ok() && Clock::now() >= next_beat) {
      s = Beat();
      next_beat = Clock::now() + std::max(lease_ / 4, milliseconds(100));
    }
    if (s.ok() && Clock::now() >= next_chores) {
      auto rescued = q_->Rescue();
      s = rescued.status();
      if (rescued.ok() && *rescued > 0)
        Log(LogLevel::kWarning, "tasks whose worker stopped renewing its lease were requeued",
            {{"component", "tasks"},
             {"count", std::to_string(*rescued)},
             {"next", "retried now, or dead-lettered at their max attempts"}});
      if (s.ok() && o_.run_schedules) s = q_->FireSchedules().status();
      next_chores = Clock::now() + milliseconds(1000);
    }
    int free = 0;
    {
      std::lock_guard lk(mu_);
      free = o_.workers * std::max(1, o_.prefetch) - int(held_.size());
    }
    size_t claimed = 0;
    if (s.ok() && free > 0) {
      auto now_us = util::NowMicros();
      auto tasks =
          q_->Claim(o_.queues, types_, free, id_,
                    now_us + std::chrono::duration_cast<std::chrono::microseconds>(lease_).count());
      s = tasks.status();
      if (tasks.ok()) {
        claimed = tasks->size();
        std::lock_guard lk(mu_);
        for (auto& t : *tasks) {
          auto h = std::make_shared<Held>();
          h->handler = &handlers_.at(t.spec.type);
          h->task = std::move(t);
          held_[h->task.id] = h;
          waiting_.push_back(std::move(h));
        }
      }
      if (claimed) ready_.notify_all();
    }
    if (!s.ok()) {
      if (!logged)
        Log(LogLevel::kError, "the task queue's database failed; the workers keep trying",
            {{"component", "tasks"}, {"error", s.ToString()}, {"next", "retry in 1 s"}});
      logged = true;
      q_->WaitForWork(milliseconds(1000), seen);
      continue;
    }
    if (logged) Log(LogLevel::kInfo, "the task queue's database is back", {{"component", "tasks"}});
    logged = false;
    if (claimed == 0) q_->WaitForWork(std::min(o_.poll, lease_ / 4), seen);
  }
}

void Pool::Work() {
  for (;;) {
    std::shared_ptr<Held> h;
    {
      std::unique_lock lk(mu_);
      ready_.wait(lk, [&] { return stopping_ || !waiting_.empty(); });
      if (stopping_) return;
      h = std::move(waiting_.front());
      waiting_.pop_front();
      ++running_;
    }
    Context ctx(h.get(), &stop_flag_);
    const auto start = Clock::now();
    Result<std::string> r = Status::Internal("unset");
    try {
      r = h->handler->fn(ctx);
    } catch (const std::exception& e) {
      r = Status::Internal(fmt::format("the handler threw: {}", e.what()));
    } catch (...) {
      r = Status::Internal("the handler threw");
    }
    const double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (!r.ok() && stop_flag_ && !h->cancelled) {
      // Stopped by the pool's shutdown, not by its own fault or a user's cancel: handed back
      // whole (the attempt is not counted) for the next worker, as one not yet started is.
      Log(LogLevel::kWarning, "a task was interrupted by shutdown",
          {{"component", "tasks"},
           {"task", std::to_string(h->task.id)},
           {"type", h->task.spec.type},
           {"next", "handed back: it runs again, this attempt not counted"}});
      std::lock_guard lk(mu_);
      interrupted_.push_back(h->task.id);
      held_.erase(h->task.id);
      --running_;
      continue;
    }
    Record(*h, r.status(), secs);
    Outcome o;
    o.id = h->task.id;
    o.ok = r.ok();
    if (r.ok()) {
      o.result = *r;
    } else {
      o.error = r.status().ToString();
      o.permanent = Permanent(r.status().code());
      o.retry_at = util::NowMicros() + Backoff(*h);
    }
    {
      std::lock_guard lk(h->mu);
      o.progress = h->progress_dirty;
      o.done = h->done;
      o.total = h->total;
      o.message = h->message;
    }
    {
      std::lock_guard lk(mu_);
      outcomes_.push_back(std::move(o));
      held_.erase(h->task.id);
      --running_;
    }
    ++finished_;
    q_->Notify();
  }
}

int64_t Pool::Backoff(const Held& h) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const auto& opt = h.handler->options;
  double d = double(opt.backoff_base.count()) * std::pow(2.0, std::max(0, h.task.attempts - 1));
  d = std::min(d, double(opt.backoff_max.count()));
  d *= std::uniform_real_distribution<double>(0.8, 1.2)(rng);
  return int64_t(d * 1000);
}

void Pool::Record(const Held& h, const Status& s, double seconds) {
  {
    std::lock_guard lk(stats_mu_);
    auto& q = stats_[h.task.spec.queue];
    q.queue = h.task.spec.queue;
    (s.ok() ? q.succeeded : q.failed) += 1;
    q.run_seconds += seconds;
  }
  if (s.ok()) return;
  const bool dead = Permanent(s.code()) || h.task.attempts >= h.task.spec.max_attempts;
  Log(dead ? LogLevel::kError : LogLevel::kWarning, "a task failed",
      {{"component", "tasks"},
       {"task", std::to_string(h.task.id)},
       {"type", h.task.spec.type},
       {"attempt", fmt::format("{}/{}", h.task.attempts, h.task.spec.max_attempts)},
       {"error", s.ToString()},
       {"next", dead ? "dead-lettered (commcare tasks retry ID queues it again)"
                     : "retried with backoff"}});
}

Status Pool::FlushOutcomes() {
  std::vector<Outcome> out;
  {
    std::lock_guard lk(mu_);
    out.swap(outcomes_);
  }
  Status s = q_->Finish(out, id_);
  if (!s.ok()) {
    std::lock_guard lk(mu_);
    outcomes_.insert(outcomes_.begin(), out.begin(), out.end());  // tried again next round
  }
  return s;
}

Status Pool::Beat() {
  std::vector<tasks::Beat> beats;
  std::map<int64_t, std::shared_ptr<Held>> held;
  {
    std::lock_guard lk(mu_);
    held = held_;
  }
  const int64_t now = util::NowMicros();
  for (auto& [id, h] : held) {
    struct Beat b;
    b.id = id;
    b.lease_until =
        now +
        std::chrono::duration_cast<std::chrono::microseconds>(h->handler->options.lease).count();
    std::lock_guard lk(h->mu);
    if (h->progress_dirty) {
      b.progress = true;
      b.done = h->done;
      b.total = h->total;
      b.message = h->message;
      h->progress_dirty = false;
    }
    beats.push_back(std::move(b));
  }
  CC_ASSIGN_OR_RETURN(auto cancelled, q_->Heartbeat(beats, id_));
  for (int64_t id : cancelled)
    if (auto it = held.find(id); it != held.end()) it->second->cancelled = true;
  return Status::Ok();
}

Status Pool::HandBack(milliseconds grace) {
  std::vector<int64_t> unstarted;
  {
    std::lock_guard lk(mu_);
    for (auto& h : waiting_) {
      unstarted.push_back(h->task.id);
      held_.erase(h->task.id);
    }
    waiting_.clear();
  }
  Status s = q_->Release(unstarted, id_);
  const auto deadline = Clock::now() + grace;
  for (;;) {  // running handlers finish (their outcomes written) until grace passes
    (void)FlushOutcomes();
    {
      std::lock_guard lk(mu_);
      if (running_ == 0) break;
    }
    if (Clock::now() >= deadline) {
      stop_flag_ = true;  // Cancelled() now answers true: handlers return soon
      break;
    }
    q_->WaitForWork(milliseconds(50), q_->Wakes());
  }
  ready_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  (void)FlushOutcomes();
  Status r = q_->Release(interrupted_, id_);
  interrupted_.clear();
  return s.ok() ? r : s;
}

}  // namespace
}  // namespace commcare::tasks

namespace commcare {

Result<std::unique_ptr<TaskQueue>> OpenTaskQueue(const std::string& where) {
  CC_ASSIGN_OR_RETURN(auto q, tasks::SqlTaskQueue::Open(where));
  return std::unique_ptr<TaskQueue>(std::move(q));
}

std::unique_ptr<TaskWorkers> NewTaskWorkers(TaskQueue* queue, TaskWorkersOptions options) {
  auto* q = dynamic_cast<tasks::SqlTaskQueue*>(queue);
  if (!q) return nullptr;
  return std::make_unique<tasks::Pool>(q, std::move(options));
}

}  // namespace commcare
