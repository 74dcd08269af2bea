// The C ABI's task queue: enqueue, inspect, cancel, retry, wait, schedules, and worker pools
// whose task types are C callbacks (the Python binding's handlers among them).
#include "c_api_internal.h"
#include "commcare/tasks.h"
#include "util/time.h"

using namespace commcare;
using namespace commcare::capi;

struct cc_workers {
  cc_engine* owner = nullptr;
  std::unique_ptr<TaskWorkers> pool;
};

struct cc_task_ctx {
  TaskContext* ctx = nullptr;
  std::string result;
};

namespace {

Status Queue(cc_engine* e, Use* use, TaskQueue** q) {
  CC_RETURN_IF_ERROR(Open(e, use));
  CC_ASSIGN_OR_RETURN(*q, e->host->Tasks());
  return Status::Ok();
}

Status SpecOf(const json::object& o, const char* what, TaskSpec* s) {
  Reader r{o, what};
  CC_RETURN_IF_ERROR(r.Only(
      {"type", "payload", "queue", "domain", "priority", "run_at", "max_attempts", "unique_key"}));
  CC_RETURN_IF_ERROR(r.Str("type", &s->type));
  CC_RETURN_IF_ERROR(r.Str("queue", &s->queue));
  CC_RETURN_IF_ERROR(r.Str("domain", &s->domain));
  CC_RETURN_IF_ERROR(r.Str("unique_key", &s->unique_key));
  CC_RETURN_IF_ERROR(r.Int("priority", &s->priority, -1000, 1000));
  CC_RETURN_IF_ERROR(r.Int("max_attempts", &s->max_attempts, 1, 100));
  if (const auto* p = o.if_contains("payload")) s->payload = json::serialize(*p);
  std::string at;
  CC_RETURN_IF_ERROR(r.Str("run_at", &at));
  if (!at.empty() && !util::ParseIsoTime(at, &s->run_at))
    return Status::InvalidArgument(fmt::format("{}: \"run_at\" must be an ISO 8601 time", what));
  return Status::Ok();
}

// Calls a C handler with a task; its return code and cc_error_set message become the Status.
Result<std::string> CallHandler(cc_task_fn fn, void* payload, TaskContext& c) {
  cc_task_ctx ctx{&c, ""};
  const std::string task = c.task().ToJson();
  SetError(CC_OK, "no error");
  int rc = fn(&ctx, task.c_str(), payload);
  if (rc == 0) return ctx.result;
  if (t_error.e.code == rc && rc < 0) return Status(CodeOf(rc), t_error.message);
  return Status::Internal(fmt::format("the task handler returned {}", rc));
}

}  // namespace

extern "C" {

int cc_tasks_enqueue(int64_t* out_id, cc_engine* e, const char* spec_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out_id));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(spec_json, "spec_json", &o));
    TaskSpec s;
    CC_RETURN_IF_ERROR(SpecOf(o, "spec_json", &s));
    CC_ASSIGN_OR_RETURN(*out_id, q->Enqueue(s));
    return Status::Ok();
  });
}

int cc_tasks_get(char** out, cc_engine* e, int64_t id) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    CC_ASSIGN_OR_RETURN(auto t, q->Get(id));
    return Out(out, t.ToJson());
  });
}

int cc_tasks_list(char** out, cc_engine* e, const char* filter_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(filter_json, "filter_json", &o, false));
    Reader r{o, "filter_json"};
    CC_RETURN_IF_ERROR(r.Only({"domain", "queue", "type", "state", "before_id", "limit"}));
    TaskFilter f;
    std::string state;
    CC_RETURN_IF_ERROR(r.Str("domain", &f.domain));
    CC_RETURN_IF_ERROR(r.Str("queue", &f.queue));
    CC_RETURN_IF_ERROR(r.Str("type", &f.type));
    CC_RETURN_IF_ERROR(r.Str("state", &state));
    CC_RETURN_IF_ERROR(r.Int("before_id", &f.before_id, 0, INT64_MAX));
    CC_RETURN_IF_ERROR(r.Int("limit", &f.limit, 1, 10000));
    if (!state.empty()) {
      f.state = ParseTaskState(state);
      if (!f.state)
        return Status::InvalidArgument(fmt::format("filter_json: unknown state \"{}\"", state));
    }
    CC_ASSIGN_OR_RETURN(auto list, q->List(f));
    return Out(out, JsonArray(list, [](const TaskInfo& t) { return t.ToJson(); }));
  });
}

int cc_tasks_cancel(cc_engine* e, int64_t id) {
  return Fence([&]() -> Status {
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    return q->Cancel(id);
  });
}

int cc_tasks_retry(cc_engine* e, int64_t id) {
  return Fence([&]() -> Status {
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    return q->Retry(id);
  });
}

int cc_tasks_wait(char** out, cc_engine* e, int64_t id, int64_t timeout_ms) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    CC_ASSIGN_OR_RETURN(auto t,
                        q->Wait(id, std::chrono::milliseconds(std::max<int64_t>(0, timeout_ms))));
    return Out(out, t.ToJson());
  });
}

int cc_tasks_stats(char** out, cc_engine* e) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    CC_ASSIGN_OR_RETURN(auto st, q->Stats());
    return Out(
        out, JsonArray(st, [](const QueueStats& s) {
          return fmt::format(
              "{{\"queue\":{},\"queued\":{},\"running\":{},\"retrying\":{},"
              "\"succeeded\":{},\"dead\":{},\"cancelled\":{},\"oldest_due_seconds\":{:.3f}}}",
              json::serialize(json::string(s.queue)), s.queued, s.running, s.retrying, s.succeeded,
              s.dead, s.cancelled, s.oldest_due_seconds);
        }));
  });
}

int cc_tasks_schedule_put(cc_engine* e, const char* schedule_json) {
  return Fence([&]() -> Status {
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(schedule_json, "schedule_json", &o));
    Reader r{o, "schedule_json"};
    CC_RETURN_IF_ERROR(r.Only({"name", "cron", "time_zone", "task", "missed", "enabled"}));
    Schedule s;
    std::string missed = "once";
    CC_RETURN_IF_ERROR(r.Str("name", &s.name));
    CC_RETURN_IF_ERROR(r.Str("cron", &s.cron));
    CC_RETURN_IF_ERROR(r.Str("time_zone", &s.time_zone));
    CC_RETURN_IF_ERROR(r.Str("missed", &missed));
    CC_RETURN_IF_ERROR(r.Bool("enabled", &s.enabled));
    if (missed != "once" && missed != "skip")
      return Status::InvalidArgument("schedule_json: \"missed\" must be \"once\" or \"skip\"");
    s.missed = missed == "skip" ? Schedule::Missed::kSkip : Schedule::Missed::kOnce;
    const auto* task = o.if_contains("task");
    if (!task || !task->is_object())
      return Status::InvalidArgument("schedule_json: \"task\" must be an object");
    CC_RETURN_IF_ERROR(SpecOf(task->get_object(), "schedule_json.task", &s.task));
    return q->PutSchedule(s);
  });
}

int cc_tasks_schedules(char** out, cc_engine* e) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
    return Out(out, JsonArray(all, [](const Schedule& s) { return s.ToJson(); }));
  });
}

int cc_tasks_schedule_delete(cc_engine* e, const char* name) {
  return Fence([&]() -> Status {
    Use use;
    TaskQueue* q = nullptr;
    CC_RETURN_IF_ERROR(Queue(e, &use, &q));
    std::string n;
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    return q->DeleteSchedule(n);
  });
}

int cc_task_ctx_result(cc_task_ctx* ctx, const char* result_json) {
  return Fence([&]() -> Status {
    if (!ctx) return Status::InvalidArgument("ctx is NULL");
    std::string r;
    CC_RETURN_IF_ERROR(Arg(result_json, "result_json", &r, false));
    boost::system::error_code ec;
    if (!r.empty()) (void)json::parse(r, ec);
    if (ec) return Status::InvalidArgument("result_json is not JSON: " + ec.message());
    ctx->result = std::move(r);
    return Status::Ok();
  });
}

int cc_task_ctx_progress(cc_task_ctx* ctx, int64_t done, int64_t total, const char* message) {
  return Fence([&]() -> Status {
    if (!ctx) return Status::InvalidArgument("ctx is NULL");
    ctx->ctx->Progress(done, total, message ? message : "");
    return Status::Ok();
  });
}

int cc_task_ctx_cancelled(cc_task_ctx* ctx) { return ctx && ctx->ctx->Cancelled() ? 1 : 0; }

int cc_workers_open(cc_workers** out, cc_engine* e, const char* options_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(options_json, "options_json", &o, false));
    Reader r{o, "options_json"};
    CC_RETURN_IF_ERROR(r.Only({"queues", "workers", "poll_ms", "prefetch", "run_schedules"}));
    TaskWorkersOptions wo;
    int64_t poll = wo.poll.count();
    CC_RETURN_IF_ERROR(r.StrList("queues", &wo.queues));
    CC_RETURN_IF_ERROR(r.Int("workers", &wo.workers, 1, 256));
    CC_RETURN_IF_ERROR(r.Int("poll_ms", &poll, 1, 3'600'000));
    CC_RETURN_IF_ERROR(r.Int("prefetch", &wo.prefetch, 1, 1000));
    CC_RETURN_IF_ERROR(r.Bool("run_schedules", &wo.run_schedules));
    wo.poll = std::chrono::milliseconds(poll);
    auto w = std::make_unique<cc_workers>();
    w->owner = e;
    CC_ASSIGN_OR_RETURN(w->pool, e->host->NewTaskWorkers(wo));
    *out = w.release();
    return Status::Ok();
  });
}

int cc_workers_register(cc_workers* w, const char* type, const char* options_json, cc_task_fn fn,
                        void* payload) {
  return Fence([&]() -> Status {
    if (!w || !w->pool) return Status::InvalidArgument("workers is NULL");
    if (!fn) return Status::InvalidArgument("fn is NULL");
    std::string t;
    CC_RETURN_IF_ERROR(Arg(type, "type", &t));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(options_json, "options_json", &o, false));
    Reader r{o, "options_json"};
    CC_RETURN_IF_ERROR(r.Only({"lease_ms", "backoff_base_ms", "backoff_max_ms"}));
    TaskTypeOptions to;
    int64_t lease = to.lease.count(), base = to.backoff_base.count(), max = to.backoff_max.count();
    CC_RETURN_IF_ERROR(r.Int("lease_ms", &lease, 100, 86'400'000));
    CC_RETURN_IF_ERROR(r.Int("backoff_base_ms", &base, 1, 86'400'000));
    CC_RETURN_IF_ERROR(r.Int("backoff_max_ms", &max, 1, 86'400'000 * int64_t{30}));
    to.lease = std::chrono::milliseconds(lease);
    to.backoff_base = std::chrono::milliseconds(base);
    to.backoff_max = std::chrono::milliseconds(max);
    w->pool->Register(
        t, [fn, payload](TaskContext& c) { return CallHandler(fn, payload, c); }, to);
    return Status::Ok();
  });
}

int cc_workers_start(cc_workers* w) {
  return Fence([&]() -> Status {
    if (!w || !w->pool) return Status::InvalidArgument("workers is NULL");
    return w->pool->Start();
  });
}

void cc_workers_free(cc_workers* w, int64_t grace_ms) {
  if (!w) return;
  try {
    if (w->pool) w->pool->Stop(std::chrono::milliseconds(std::max<int64_t>(0, grace_ms)));
  } catch (...) {
  }
  delete w;
}

}  // extern "C"
