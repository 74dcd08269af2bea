// The task queue over REST: /a/{domain}/api/tasks/ lists the domain's tasks (GET) and adds one
// (POST); /a/{domain}/api/tasks/{id}/ shows one; .../{id}/cancel and .../{id}/retry (POST)
// act on it. A domain sees and touches only its own tasks; the library's own types
// ("commcare." ...) are enqueued by the library, not over REST.
#include <fmt/format.h>

#include "commcare/tasks.h"
#include "server/app.h"
#include "server/responses.h"
#include "util/time.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response TaskJson(int status, const TaskInfo& t) { return Json(status, json::parse(t.ToJson())); }

// A TaskSpec from a POST body; InvalidArgument names the bad field.
Result<TaskSpec> SpecFromBody(const std::string& body, const std::string& domain) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  const json::object& o = v.get_object();
  TaskSpec s;
  s.domain = domain;
  for (const auto& [k, val] : o) {
    auto str = [&](std::string* out) -> Status {
      if (!val.is_string())
        return Status::InvalidArgument(fmt::format("\"{}\" must be a string", std::string(k)));
      *out = val.get_string();
      return Status::Ok();
    };
    auto num = [&](int* out) -> Status {
      if (!val.is_int64())
        return Status::InvalidArgument(
            fmt::format("\"{}\" must be a whole number", std::string(k)));
      *out = int(val.get_int64());
      return Status::Ok();
    };
    if (k == "type")
      CC_RETURN_IF_ERROR(str(&s.type));
    else if (k == "queue")
      CC_RETURN_IF_ERROR(str(&s.queue));
    else if (k == "unique_key")
      CC_RETURN_IF_ERROR(str(&s.unique_key));
    else if (k == "priority")
      CC_RETURN_IF_ERROR(num(&s.priority));
    else if (k == "max_attempts")
      CC_RETURN_IF_ERROR(num(&s.max_attempts));
    else if (k == "payload")
      s.payload = json::serialize(val);
    else if (k == "run_at") {
      std::string t;
      CC_RETURN_IF_ERROR(str(&t));
      if (!util::ParseIsoTime(t, &s.run_at))
        return Status::InvalidArgument("\"run_at\" must be an ISO 8601 time");
    } else {
      return Status::InvalidArgument(
          fmt::format("unknown field \"{}\" (type, payload, queue, priority, run_at, max_attempts, "
                      "unique_key)",
                      std::string(k)));
    }
  }
  if (s.type.rfind("commcare.", 0) == 0)
    return Status::PermissionDenied(
        fmt::format("\"{}\" is one of the library's own task types", s.type));
  return s;
}

}  // namespace

Response App::TasksApi(const Request& r, const std::string& domain, std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  const bool write = r.method == "POST";
  if (!write && r.method != "GET") return Error(405, "use GET, or POST to act");
  Response deny;
  auto user = Admit(r, domain, write ? meta::kEditData : meta::kAccessApi, &deny);
  if (!user) return deny;
  if (!tasks_) return Error(503, "this server has no task queue");
  if (rest.empty()) {
    if (write) {
      auto spec = SpecFromBody(r.body, domain);
      if (!spec.ok()) return Error(StatusFor(spec.status()), spec.status().message());
      auto id = tasks_->Enqueue(*spec);
      if (!id.ok()) return Error(StatusFor(id.status()), id.status().message());
      auto t = tasks_->Get(*id);
      if (!t.ok()) return Error(StatusFor(t.status()), t.status().message());
      return TaskJson(201, *t);
    }
    TaskFilter f;
    f.domain = domain;
    f.queue = r.Param("queue");
    f.type = r.Param("type");
    if (auto s = r.Param("state"); !s.empty()) {
      f.state = ParseTaskState(s);
      if (!f.state)
        return Error(400, "state must be queued, running, retrying, succeeded, dead or cancelled");
    }
    char* end = nullptr;
    const std::string limit = r.Param("limit", "50"), before = r.Param("before", "0");
    f.limit = int(std::strtol(limit.c_str(), &end, 10));
    if (*end || f.limit < 1 || f.limit > 1000) return Error(400, "limit must be 1..1000");
    f.before_id = std::strtoll(before.c_str(), &end, 10);
    if (*end || f.before_id < 0) return Error(400, "before must be a task id");
    auto list = tasks_->List(f);
    if (!list.ok()) return Error(StatusFor(list.status()), list.status().message());
    json::array objects;
    for (const auto& t : *list) objects.push_back(json::parse(t.ToJson()));
    json::object out{{"objects", std::move(objects)}};
    if (int(list->size()) == f.limit)
      out["next"] = fmt::format("?limit={}&before={}", f.limit, list->back().id);
    return Json(200, out);
  }
  const auto slash = rest.find('/');
  const std::string id_text = rest.substr(0, slash);
  const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  char* end = nullptr;
  const int64_t id = std::strtoll(id_text.c_str(), &end, 10);
  if (*end || id <= 0) return Error(404, "no such task");
  auto t = tasks_->Get(id);
  if (!t.ok() || t->spec.domain != domain)
    return Error(404, fmt::format("task {} does not exist", id));
  if (verb.empty())
    return write ? Error(405, "POST to .../cancel or .../retry") : TaskJson(200, *t);
  if (!write) return Error(405, fmt::format("POST to .../{}", verb));
  Status s = verb == "cancel"  ? tasks_->Cancel(id)
             : verb == "retry" ? tasks_->Retry(id)
                               : Status::NotFound("no such action: use cancel or retry");
  if (!s.ok()) return Error(StatusFor(s), s.message());
  t = tasks_->Get(id);
  if (!t.ok()) return Error(StatusFor(t.status()), t.status().message());
  return TaskJson(200, *t);
}

// The task queue's figures: depth and the oldest due task's wait per queue (from the
// database: every worker's view), and this server's own runs (its workers' attempts).
std::string App::TaskMetrics() {
  std::string out;
  if (!tasks_) return out;
  auto st = tasks_->Stats();
  if (st.ok()) {
    out += "# HELP commcare_tasks Tasks by queue and state.\n# TYPE commcare_tasks gauge\n";
    for (const auto& q : *st)
      for (auto [state, n] : {std::pair<const char*, int64_t>{"queued", q.queued},
                              {"running", q.running},
                              {"retrying", q.retrying},
                              {"succeeded", q.succeeded},
                              {"dead", q.dead},
                              {"cancelled", q.cancelled}})
        out += fmt::format("commcare_tasks{{queue=\"{}\",state=\"{}\"}} {}\n", q.queue, state, n);
    out +=
        "# HELP commcare_tasks_oldest_due_seconds How long the oldest due, unstarted task has "
        "waited.\n# TYPE commcare_tasks_oldest_due_seconds gauge\n";
    for (const auto& q : *st)
      out += fmt::format("commcare_tasks_oldest_due_seconds{{queue=\"{}\"}} {:.3f}\n", q.queue,
                         q.oldest_due_seconds);
  }
  if (task_workers_) {
    auto runs = task_workers_->RunStats();
    out +=
        "# HELP commcare_task_runs_total Task attempts run by this server's workers, by "
        "outcome.\n# TYPE commcare_task_runs_total counter\n";
    for (const auto& q : runs) {
      out += fmt::format("commcare_task_runs_total{{queue=\"{}\",outcome=\"ok\"}} {}\n", q.queue,
                         q.succeeded);
      out += fmt::format("commcare_task_runs_total{{queue=\"{}\",outcome=\"failed\"}} {}\n",
                         q.queue, q.failed);
    }
    out +=
        "# HELP commcare_task_run_seconds_total Time this server's workers spent in handlers.\n"
        "# TYPE commcare_task_run_seconds_total counter\n";
    for (const auto& q : runs)
      out += fmt::format("commcare_task_run_seconds_total{{queue=\"{}\"}} {:.6f}\n", q.queue,
                         q.run_seconds);
  }
  return out;
}

}  // namespace commcare::server
