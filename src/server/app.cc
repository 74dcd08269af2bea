// The reference server's routes: health, metrics, the OpenRosa receiver, restore, the Case,
// form and UCR APIs and the changes feed. Authentication is in auth.cc, admin routes in
// admin_api.cc.
#include "server/app.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "commcare/pillows.h"
#include "server/responses.h"
#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::server {
namespace {

using util::XmlEscape;

namespace json = boost::json;
using http::Request;
using http::Response;

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':')
      out.push_back(static_cast<char>(c));
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

// "/a/{domain}/{rest}" -> (domain, rest); false if the path is not under /a/.
bool SplitDomainPath(const std::string& path, std::string* domain, std::string* rest) {
  if (path.rfind("/a/", 0) != 0) return false;
  auto slash = path.find('/', 3);
  *domain = path.substr(3, slash == std::string::npos ? std::string::npos : slash - 3);
  *rest = slash == std::string::npos ? "" : path.substr(slash + 1);
  return !domain->empty();
}

}  // namespace

Response App::Handle(const Request& r) {
  auto t0 = std::chrono::steady_clock::now();
  std::string route = "other";
  Response resp = Route(r, &route);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard l(metrics_.mu);
  auto& m = metrics_.routes[route];
  ++m.by_status[resp.status];
  size_t b = 0;
  while (b < Metrics::kBuckets.size() && secs > Metrics::kBuckets[b]) ++b;
  ++m.buckets[b];
  m.sum += secs;
  ++m.count;
  if (route == "receiver" && r.method == "POST") {
    auto n = resp.body.find("nature=\"");
    std::string nature = n == std::string::npos
                             ? "rejected"
                             : resp.body.substr(n + 8, resp.body.find('"', n + 8) - n - 8);
    ++metrics_.submissions[nature];
  }
  return resp;
}

Response App::Route(const Request& r, std::string* route) {
  if (r.path == "/api/domains" || r.path == "/api/domains/") {
    *route = "admin_domains";
    return DomainsApi(r);
  }
  if (r.path == "/health" || r.path == "/health/ready" || r.path == "/metrics") {
    *route = r.path.substr(1);
    if (r.method != "GET" && r.method != "HEAD") return Error(405, "use GET");
    if (r.path == "/health/ready") return Ready();
    if (r.path == "/metrics") return MetricsText();
    return Json(200, json::object{{"status", "ok"}});
  }
  std::string domain, rest;
  if (!SplitDomainPath(r.path, &domain, &rest)) return Error(404, "no such route");
  if (rest == "receiver" || rest.rfind("receiver/", 0) == 0) {
    *route = "receiver";
    return Receiver(r, domain, rest.size() > 9 ? rest.substr(9) : "");
  }
  if (rest.rfind("api/case/v2", 0) == 0) {
    *route = "case_api_v2";
    return CaseApi(r, domain, rest.substr(11));
  }
  if (rest == "api/users" || rest.rfind("api/users/", 0) == 0) {
    *route = "admin_users";
    return UsersApi(r, domain, rest.size() > 10 ? rest.substr(10) : "");
  }
  for (std::string_view kind : meta::kDocKinds) {
    const std::string base = fmt::format("api/{}s", kind);
    if (rest == base || rest.rfind(base + "/", 0) == 0) {
      *route = fmt::format("admin_{}s", kind);
      return DocsApi(r, domain, std::string(kind),
                     rest.substr(std::min(rest.size(), base.size() + 1)));
    }
  }
  if (rest == "phone/restore" || rest.rfind("phone/restore/", 0) == 0) {
    *route = "phone_restore";
    std::string app = rest.size() > 14 ? rest.substr(14) : "";
    while (!app.empty() && app.back() == '/') app.pop_back();
    return RestoreApi(r, domain, app);
  }
  if (rest == "api/changes" || rest == "api/changes/") {
    *route = "changes_api";
    return ChangesApi(r, domain);
  }
  if (rest == "api/tasks" || rest.rfind("api/tasks/", 0) == 0) {
    *route = "tasks_api";
    return TasksApi(r, domain, rest.substr(9));
  }
  if (rest == "api/exports" || rest.rfind("api/exports/", 0) == 0) {
    *route = "exports_api";
    return ExportsApi(r, domain, rest.substr(11));
  }
  if (rest == "api/forwarders" || rest.rfind("api/forwarders/", 0) == 0) {
    *route = "forwarders_api";
    return ForwardersApi(r, domain, rest.substr(14));
  }
  if (rest == "api/reports" || rest.rfind("api/reports/", 0) == 0) {
    *route = "reports_api";
    return ReportsApi(r, domain, rest.substr(11));
  }
  if (rest.rfind("api/ucr/", 0) == 0) {
    *route = "ucr_api";
    return UcrApi(r, domain, rest.substr(8));
  }
  if (rest.rfind("api/case/attachment/", 0) == 0 || rest.rfind("api/case_attachment/v1/", 0) == 0) {
    *route = "case_attachment";
    return CaseAttachment(r, domain, rest.substr(rest[8] == '/' ? 20 : 23));
  }
  if (rest.rfind("api/form/attachment/", 0) == 0) {
    *route = "form_attachment";
    return Attachment(r, domain, rest.substr(20));
  }
  if (rest.rfind("api/v0.5/form", 0) == 0) {
    *route = "form_api";
    return FormApi(r, domain, rest.substr(13));
  }
  return Error(404, "no such route");
}

// Ready when the engine answers and the pillows are within 10,000 changes of the log's end.
Response App::Ready() {
  int64_t lag = 0;
  double lag_s = 0;
  if (pillows_) {
    auto st = pillows_->GetStatus();
    if (!st.ok())
      return Json(
          503, json::object{{"status", "pillows unavailable"}, {"error", st.status().message()}});
    for (const auto& p : *st)
      for (const auto& part : p.partitions) {
        lag += part.lag;
        lag_s = std::max(lag_s, part.lag_seconds);
      }
  }
  const bool ready = lag <= 10'000;
  return Json(ready ? 200 : 503, json::object{{"status", ready ? "ok" : "pillows behind"},
                                              {"pillow_lag", lag},
                                              {"pillow_lag_seconds", lag_s}});
}

Response App::MetricsText() {
  std::string out;
  {
    std::lock_guard l(metrics_.mu);
    out += "# HELP commcare_http_requests_total HTTP requests by route and status.\n";
    out += "# TYPE commcare_http_requests_total counter\n";
    for (const auto& [route, m] : metrics_.routes)
      for (const auto& [status, n] : m.by_status)
        out += fmt::format("commcare_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", route,
                           status, n);
    out += "# HELP commcare_http_request_seconds Time to answer a request, by route.\n";
    out += "# TYPE commcare_http_request_seconds histogram\n";
    for (const auto& [route, m] : metrics_.routes) {
      int64_t cum = 0;
      for (size_t b = 0; b < Metrics::kBuckets.size(); ++b) {
        cum += m.buckets[b];
        out += fmt::format("commcare_http_request_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n",
                           route, Metrics::kBuckets[b], cum);
      }
      out += fmt::format("commcare_http_request_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n",
                         route, m.count);
      out += fmt::format("commcare_http_request_seconds_sum{{route=\"{}\"}} {}\n", route, m.sum);
      out +=
          fmt::format("commcare_http_request_seconds_count{{route=\"{}\"}} {}\n", route, m.count);
    }
    out += "# HELP commcare_submissions_total Form submissions by OpenRosa outcome.\n";
    out += "# TYPE commcare_submissions_total counter\n";
    for (const auto& [nature, n] : metrics_.submissions)
      out += fmt::format("commcare_submissions_total{{nature=\"{}\"}} {}\n", nature, n);
  }
  const EngineStats es = engine_->Stats();
  out += "# HELP commcare_commit_groups_total Group commits (one transaction and flush each).\n";
  out += "# TYPE commcare_commit_groups_total counter\n";
  out += fmt::format("commcare_commit_groups_total {}\n", es.commit_groups);
  out +=
      "# HELP commcare_committed_batches_total Write batches committed (per group: the "
      "ratio of the two rates).\n";
  out += "# TYPE commcare_committed_batches_total counter\n";
  out += fmt::format("commcare_committed_batches_total {}\n", es.committed_batches);
  if (pillows_) {
    auto st = pillows_->GetStatus();
    if (st.ok()) {
      std::string processed;
      for (const auto& p : *st) {
        int64_t done = 0;
        for (const auto& part : p.partitions) done += part.checkpoint;
        processed +=
            fmt::format("commcare_pillow_processed_total{{pillow=\"{}\"}} {}\n", p.name, done);
      }
      out +=
          "# HELP commcare_pillow_processed_total Changes checkpointed, by pillow (its rate is "
          "the throughput).\n";
      out += "# TYPE commcare_pillow_processed_total counter\n" + processed;
      out += "# HELP commcare_pillow_lag Changes not yet processed, by pillow.\n";
      out += "# TYPE commcare_pillow_lag gauge\n";
      std::string lag_s, queue;
      for (const auto& p : *st) {
        int64_t lag = 0;
        double secs = 0;
        for (const auto& part : p.partitions) {
          lag += part.lag;
          secs = std::max(secs, part.lag_seconds);
        }
        out += fmt::format("commcare_pillow_lag{{pillow=\"{}\"}} {}\n", p.name, lag);
        lag_s += fmt::format("commcare_pillow_lag_seconds{{pillow=\"{}\"}} {}\n", p.name, secs);
        queue += fmt::format("commcare_pillow_retry_queue{{pillow=\"{}\",state=\"waiting\"}} {}\n",
                             p.name, p.retries);
        queue += fmt::format("commcare_pillow_retry_queue{{pillow=\"{}\",state=\"dead\"}} {}\n",
                             p.name, p.dead_letters);
      }
      out += "# TYPE commcare_pillow_lag_seconds gauge\n" + lag_s;
      out += "# TYPE commcare_pillow_retry_queue gauge\n" + queue;
    }
  }
  out += TaskMetrics();
  Response r;
  r.content_type = "text/plain; version=0.0.4";
  r.body = std::move(out);
  return r;
}

Response App::Receiver(const Request& r, const std::string& domain, const std::string& rest) {
  // Route forms: "", "api/", "secure/", "secure/{app_id}/", "submission", "{app_id}/".
  std::string app_id;
  bool api = false;
  std::string tail = rest;
  if (!tail.empty() && tail.back() == '/') tail.pop_back();
  if (tail == "api") {
    api = true;
  } else if (tail == "secure" || tail == "submission" || tail.empty()) {
  } else if (tail.rfind("secure/", 0) == 0) {
    app_id = tail.substr(7);
  } else if (tail.find('/') == std::string::npos) {
    app_id = tail;
  } else {
    return Error(404, "no such receiver route");
  }
  auto d = meta_->GetDomain(domain);
  if (!d.ok()) return Error(404, d.status().message());
  if (r.method == "HEAD" || (r.method == "GET" && tail == "submission")) {
    // OpenRosa pre-flight: where to post and how much it may be.
    Response h;
    h.status = 204;
    h.content_type.clear();
    h.headers.emplace_back("X-OpenRosa-Version", "1.0");
    h.headers.emplace_back("X-OpenRosa-Accept-Content-Length",
                           std::to_string(engine_->Options().max_body_bytes));
    return h;
  }
  if (r.method != "POST") return Error(405, "submissions are POSTed");
  Response deny;
  auto user = Admit(r, domain, "", &deny);
  if (!user) return deny;
  const bool allowed =
      api ? user->Can(domain, meta::kEditData) && user->Can(domain, meta::kAccessApi)
          : user->Can(domain, meta::kMobileEndpoints) || user->Can(domain, meta::kEditData);
  if (!allowed)
    return Error(403,
                 fmt::format("user {} may not submit forms to domain {}", user->username, domain));
  SubmitRequest s;
  s.domain = domain;
  s.user_id = user->user_id;
  s.body = r.body;
  if (const auto* ct = r.Header("content-type")) s.content_type = *ct;
  if (const auto* v = r.Header("x-openrosa-version")) s.openrosa_version = *v;
  if (const auto* t = r.Header("x-commcarehq-lastsynctoken")) s.last_sync_token = *t;
  if (const auto* t = r.Header("x-submit-time")) {
    // HQ lets a proxy say when a form arrived; a time before 2000 or after tomorrow is a
    // mistake (or a lie), not a submission time.
    constexpr int64_t kY2000 = 946'684'800'000'000, kDay = 86'400'000'000;
    if (!util::ParseIsoTime(*t, &s.received_on) || s.received_on < kY2000 ||
        s.received_on > util::NowMicros() + kDay)
      return Error(400, fmt::format("X-Submit-Time: '{}' is not an ISO-8601 time between 2000 "
                                    "and tomorrow",
                                    *t));
  }
  if (const auto* t = r.Header("date")) util::ParseHttpDate(*t, &s.date_header);
  s.app_id = app_id;
  s.submit_ip = r.remote;
  SubmitResponse sr = engine_->Submit(s);
  if (sync_ && sr.http_status == 201 && !s.user_id.empty())
    sync_->InvalidateCache(domain, s.user_id);  // the user's cached first sync is stale now
  Response out;
  out.status = sr.http_status;
  out.content_type = sr.content_type;
  out.body = std::move(sr.body);
  out.headers.emplace_back("X-OpenRosa-Version", "1.0");
  if (!sr.form_id.empty()) {
    out.headers.emplace_back("X-CommCareHQ-FormID", sr.form_id);
    if (const auto* host = r.Header("host"))
      out.headers.emplace_back("Location",
                               fmt::format("{}://{}/", r.tls ? "https" : "http", *host));
  }
  return out;
}

// GET /a/{domain}/api/form/attachment/{form_id}/{name}: an attachment's bytes.
Response App::Attachment(const Request& r, const std::string& domain, const std::string& rest) {
  if (r.method != "GET") return Error(405, "use GET");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  auto slash = rest.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size())
    return Error(404, "name a form and an attachment: .../attachment/{form_id}/{name}");
  const std::string form_id = rest.substr(0, slash), name = rest.substr(slash + 1);
  auto f = engine_->GetForm(domain, form_id);
  if (!f.ok()) return Error(StatusFor(f.status()), f.status().message());
  auto data = engine_->GetFormAttachment(domain, form_id, name);
  if (!data.ok()) return Error(StatusFor(data.status()), data.status().message());
  Response out;
  out.content_type = "application/octet-stream";
  for (const auto& a : f->attachments)
    if (a.name == name && !a.content_type.empty()) out.content_type = a.content_type;
  out.body = std::move(*data);
  return out;
}

// GET /a/{domain}/api/changes/?since=TOKEN&limit=N&timeout=S : the domain's changes (forms,
// cases, ledgers) after a position in the change log, waiting up to S seconds (≤ 30) for one.
// The token lists offsets per (topic, partition): "case-sql.0.12~form-sql.3.7~...".
Response App::ChangesApi(const Request& r, const std::string& domain) {
  if (r.method != "GET") return Error(405, "the changes API serves GET");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  storage::ChangeLog* log = engine_->Changes();
  if (!log) return Error(503, "this server has no change log");
  size_t limit = 100;
  double timeout = 0;
  std::map<std::pair<std::string, int>, int64_t> pos;
  for (const auto& [k, v] : r.query) {
    if (k == "limit" || k == "timeout") {
      char* end = nullptr;
      double n = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || !std::isfinite(n) || n < 0 ||
          (k == "limit" && (n < 1 || n > 1000 || n != std::floor(n))) || (k == "timeout" && n > 30))
        return Error(400, k == "limit" ? "limit must be 1..1000" : "timeout must be 0..30 seconds");
      if (k == "limit")
        limit = static_cast<size_t>(n);
      else
        timeout = n;
    } else if (k == "since") {
      size_t start = 0;
      while (start < v.size()) {
        size_t end = v.find('~', start);
        std::string item =
            v.substr(start, end == std::string::npos ? std::string::npos : end - start);
        auto d1 = item.find('.'), d2 = item.rfind('.');
        char* e1 = nullptr;
        char* e2 = nullptr;
        long p = d1 == std::string::npos ? -1 : std::strtol(item.c_str() + d1 + 1, &e1, 10);
        long long o = d2 == d1 ? -1 : std::strtoll(item.c_str() + d2 + 1, &e2, 10);
        if (d1 == std::string::npos || d2 == d1 || p < 0 || o < 0 || *e2 || e1 != item.c_str() + d2)
          return Error(400, fmt::format("'{}' is not a changes token", v));
        pos[{item.substr(0, d1), static_cast<int>(p)}] = o;
        if (end == std::string::npos) break;
        start = end + 1;
      }
    } else {
      return Error(400, fmt::format("unknown parameter '{}'", k));
    }
  }
  // A long-poll holds a slot and no thread: the server asks again every 250 ms, and the log
  // is read again when it was appended to (or each second, for appends by other processes).
  std::shared_ptr<void> slot;
  if (timeout > 0) {
    slot = TakeSlot(&long_polls_, user->username, limits_.long_polls_per_user, limits_.long_polls);
    if (!slot) return TooManyRequests(1, "too many long-polls waiting for this user or the server");
  }
  struct Poll {
    std::map<std::pair<std::string, int>, int64_t> pos;
    uint64_t seen = 0;
    std::chrono::steady_clock::time_point read{};
  };
  auto state = std::make_shared<Poll>();
  state->pos = std::move(pos);
  auto answer = [this, log, domain, limit, state, slot](bool last) -> std::optional<Response> {
    const auto now = std::chrono::steady_clock::now();
    const uint64_t appended = log->WaitForAppend(state->seen, std::chrono::milliseconds(0));
    if (!last && state->read != std::chrono::steady_clock::time_point{} &&
        appended == state->seen && now - state->read < std::chrono::seconds(1))
      return std::nullopt;  // nothing new since the last read
    state->seen = appended;
    state->read = now;
    json::array out;
    for (const char* topic : {"form-sql", "case-sql", "ledger", "domain", "commcare-user",
                              "web-user", "role", "group", "location", "app"}) {
      auto parts = log->Partitions(topic);
      if (!parts.ok()) continue;
      for (int p = 0; p < *parts && out.size() < limit; ++p) {
        int64_t& off = state->pos[{topic, p}];
        auto recs = log->Read(topic, p, off, 1000);
        if (!recs.ok()) return Error(500, recs.status().message());
        for (const auto& rec : *recs) {
          if (out.size() >= limit) break;
          off = rec.offset + 1;
          auto m = ChangeMetaFromJson(rec.value);
          if (!m.ok() || m->domain != domain) continue;
          boost::system::error_code ec;
          json::value change = json::parse(rec.value, ec);
          if (ec) continue;
          out.push_back(json::object{
              {"topic", topic}, {"partition", p}, {"offset", rec.offset}, {"change", change}});
        }
      }
    }
    if (out.empty() && !last) return std::nullopt;
    std::string token;
    for (const auto& [tp, off] : state->pos)
      token += fmt::format("{}{}.{}.{}", token.empty() ? "" : "~", tp.first, tp.second, off);
    return Json(200, json::object{{"changes", out}, {"next_since", token}});
  };
  if (timeout <= 0) return *answer(true);
  Response wait;
  wait.poll = std::move(answer);
  wait.poll_interval_ms = 250;
  wait.poll_timeout_ms = static_cast<int>(timeout * 1000);
  return wait;
}

// GET /a/{domain}/api/ucr/{table_id}/?limit=&offset= : a UCR data source's rows.
Response App::UcrApi(const Request& r, const std::string& domain, const std::string& rest) {
  if (r.method != "GET") return Error(405, "the UCR API serves GET");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  std::string table = rest;
  while (!table.empty() && table.back() == '/') table.pop_back();
  if (table.empty() || table.find('/') != std::string::npos)
    return Error(404, "name a data source: /a/{domain}/api/ucr/{table_id}/");
  size_t limit = 100, offset = 0;
  for (const auto& [k, v] : r.query) {
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (k != "limit" && k != "offset") return Error(400, fmt::format("unknown parameter '{}'", k));
    if (v.empty() || *end || n < 0 || (k == "limit" && (n < 1 || n > 5000)))
      return Error(400, k == "limit" ? "limit must be 1..5000" : "offset must be non-negative");
    (k == "limit" ? limit : offset) = static_cast<size_t>(n);
  }
  auto rows = UcrRows(pillows_dir_, domain, table, limit + 1, offset);
  if (!rows.ok()) return Error(StatusFor(rows.status()), rows.status().message());
  json::array out;
  for (size_t i = 0; i < rows->size() && i < limit; ++i) out.push_back(json::parse((*rows)[i]));
  json::value next = nullptr;
  if (rows->size() > limit)
    next = json::value(
        fmt::format("/a/{}/api/ucr/{}/?limit={}&offset={}", domain, table, limit, offset + limit));
  return Json(200, json::object{{"rows", out}, {"next", next}});
}

Response App::FormApi(const Request& r, const std::string& domain, const std::string& rest) {
  if (r.method != "GET") return Error(405, "the form API serves GET");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  std::string id = rest;
  while (!id.empty() && id.front() == '/') id.erase(0, 1);
  while (!id.empty() && id.back() == '/') id.pop_back();
  if (!id.empty()) {
    bool xml = false;
    if (id.size() > 4 && id.substr(id.size() - 4) == "/xml") {
      xml = true;
      id.resize(id.size() - 4);
    }
    auto f = engine_->GetForm(domain, id);
    if (!f.ok()) return Error(StatusFor(f.status()), f.status().message());
    if (!xml) return Json(200, json::parse(FormToJson(*f)));
    auto body = engine_->GetFormXml(domain, id);
    if (!body.ok()) return Error(StatusFor(body.status()), body.status().message());
    Response x;
    x.content_type = "text/xml; charset=utf-8";
    x.body = std::move(*body);
    return x;
  }
  FormListQuery q;
  q.domain = domain;
  for (const auto& [k, v] : r.query) {
    if (k == "xmlns")
      q.xmlns = v;
    else if (k == "app_id")
      q.app_id = v;
    else if (k == "user_id")
      q.user_id = v;
    else if (k == "include_archived")
      q.include_archived = v == "true";
    else if (k == "received_on_start" || k == "received_on_end") {
      int64_t t;
      if (!util::ParseIsoTime(v, &t))
        return Error(400, fmt::format("{} is not a date: '{}'", k, v));
      (k == "received_on_start" ? q.received_from : q.received_to) = t;
    } else if (k == "limit" || k == "offset") {
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 0) return Error(400, k + " must be a non-negative integer");
      (k == "limit" ? q.limit : q.offset) = static_cast<size_t>(n);
    } else if (k != "format") {
      return Error(400, fmt::format("unknown filter '{}'", k));
    }
  }
  auto page = ListForms(pillows_dir_, q);
  if (!page.ok()) return Error(StatusFor(page.status()), page.status().message());
  json::array objects;
  for (const auto& f : page->forms) objects.push_back(json::parse(f));
  auto link = [&](int64_t offset) -> json::value {
    if (offset < 0 || offset >= page->total_count) return nullptr;
    std::string l = fmt::format("/a/{}/api/v0.5/form/?", domain);
    for (const auto& [k, v] : r.query)
      if (k != "offset") l += UrlEncode(k) + "=" + UrlEncode(v) + "&";
    return json::value(l + fmt::format("offset={}", offset));
  };
  const auto off = static_cast<int64_t>(q.offset), lim = static_cast<int64_t>(q.limit);
  json::object meta{{"limit", q.limit},
                    {"offset", q.offset},
                    {"total_count", page->total_count},
                    {"next", link(off + lim)},
                    {"previous", off > 0 ? link(std::max<int64_t>(0, off - lim)) : json::value()}};
  return Json(200, json::object{{"meta", meta}, {"objects", objects}});
}

namespace {

bool XmlName(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
  if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
      return false;
  return true;
}

// One case block of a Case API write; `at` names the item in errors ("" or "[3]").
Result<std::string> CaseBlock(const json::value& v, const std::string& at, bool create,
                              std::string case_id, const std::string& user_id,
                              const std::map<std::string, std::string>& temp_ids,
                              std::string* out_case_id) {
  if (!v.is_object())
    return Status::InvalidArgument(fmt::format("{}: must be an object", at.empty() ? "body" : at));
  const auto& o = v.get_object();
  auto field = [&](const char* k) { return at.empty() ? std::string(k) : at + "." + k; };
  auto str = [&](const char* k, std::string* out) -> Status {
    const json::value* x = o.if_contains(k);
    if (!x || x->is_null()) return Status::Ok();
    if (!x->is_string()) return Status::InvalidArgument(field(k) + ": must be a string");
    *out = std::string(x->get_string());
    return Status::Ok();
  };
  std::string type, name, owner, external;
  CC_RETURN_IF_ERROR(str("case_type", &type));
  CC_RETURN_IF_ERROR(str("case_name", &name));
  CC_RETURN_IF_ERROR(str("owner_id", &owner));
  CC_RETURN_IF_ERROR(str("external_id", &external));
  for (const auto& kv : o) {
    static const std::set<std::string_view> kKnown = {
        "case_type", "case_name", "owner_id", "external_id", "properties",
        "indices",   "close",     "create",   "case_id",     "temporary_id"};
    if (!kKnown.count(kv.key()))
      return Status::InvalidArgument(
          fmt::format("{}: unknown field", field(std::string(kv.key()).c_str())));
  }
  if (create) {
    if (type.empty()) return Status::InvalidArgument(field("case_type") + ": is required");
    if (name.empty()) return Status::InvalidArgument(field("case_name") + ": is required");
    if (owner.empty()) owner = user_id;
  }
  *out_case_id = case_id;
  std::string xml = fmt::format(
      R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{}" date_modified="{}" user_id="{}">)",
      XmlEscape(case_id), util::FormatIsoTime(util::NowMicros()), XmlEscape(user_id));
  if (create)
    xml += fmt::format(
        "<create><case_type>{}</case_type><case_name>{}</case_name><owner_id>{}</owner_id></"
        "create>",
        XmlEscape(type), XmlEscape(name), XmlEscape(owner));
  std::string update;
  if (!create) {
    if (!type.empty()) update += "<case_type>" + XmlEscape(type) + "</case_type>";
    if (!name.empty()) update += "<case_name>" + XmlEscape(name) + "</case_name>";
    if (!owner.empty()) update += "<owner_id>" + XmlEscape(owner) + "</owner_id>";
  }
  if (!external.empty()) update += "<external_id>" + XmlEscape(external) + "</external_id>";
  if (const json::value* props = o.if_contains("properties")) {
    if (!props->is_object())
      return Status::InvalidArgument(field("properties") + ": must be an object");
    for (const auto& kv : props->get_object()) {
      std::string k(kv.key());
      std::string pf = field("properties") + "." + k;
      if (!XmlName(k)) return Status::InvalidArgument(pf + ": not a valid property name");
      if (!kv.value().is_string()) return Status::InvalidArgument(pf + ": must be a string");
      update += fmt::format("<{0}>{1}</{0}>", k, XmlEscape(kv.value().get_string()));
    }
  }
  if (!update.empty()) xml += "<update>" + update + "</update>";
  if (const json::value* idx = o.if_contains("indices")) {
    if (!idx->is_object()) return Status::InvalidArgument(field("indices") + ": must be an object");
    std::string index;
    for (const auto& kv : idx->get_object()) {
      std::string k(kv.key());
      std::string pf = field("indices") + "." + k;
      if (!XmlName(k)) return Status::InvalidArgument(pf + ": not a valid index name");
      if (!kv.value().is_object()) return Status::InvalidArgument(pf + ": must be an object");
      const auto& io = kv.value().get_object();
      auto get = [&](const char* f) {
        const json::value* x = io.if_contains(f);
        return x && x->is_string() ? std::string(x->get_string()) : std::string();
      };
      std::string target = get("case_id");
      if (target.empty() && !get("temporary_id").empty()) {
        auto t = temp_ids.find(get("temporary_id"));
        if (t == temp_ids.end())
          return Status::InvalidArgument(pf + ".temporary_id: no case in this request has it");
        target = t->second;
      }
      std::string rel = get("relationship").empty() ? "child" : get("relationship");
      if (rel != "child" && rel != "extension")
        return Status::InvalidArgument(pf + ".relationship: must be child or extension");
      if (get("case_type").empty()) return Status::InvalidArgument(pf + ".case_type: is required");
      index += fmt::format(R"(<{0} case_type="{1}" relationship="{2}">{3}</{0}>)", k,
                           XmlEscape(get("case_type")), rel, XmlEscape(target));
    }
    if (!index.empty()) xml += "<index>" + index + "</index>";
  }
  if (const json::value* c = o.if_contains("close")) {
    if (!c->is_bool()) return Status::InvalidArgument(field("close") + ": must be true or false");
    if (c->get_bool()) xml += "<close/>";
  }
  return xml + "</case>";
}

}  // namespace

// The most case ids one bulk_fetch may name (as a case list's page).
constexpr size_t kMaxBulkFetch = 5000;

Response App::BulkFetch(const Request& r, const std::string& domain) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return Error(400, "body: must be a JSON object");
  const json::value* ids = v.get_object().if_contains("case_ids");
  if (!ids || !ids->is_array()) return Error(400, "case_ids: must be a list");
  if (ids->get_array().size() > kMaxBulkFetch)
    return Error(400, fmt::format("case_ids: at most {} per request (got {})", kMaxBulkFetch,
                                  ids->get_array().size()));
  json::array cases;
  std::set<std::string_view> seen;
  for (const auto& id : ids->get_array()) {
    if (!id.is_string()) return Error(400, "case_ids: must hold strings");
    if (!seen.insert(id.get_string()).second) continue;  // each case once
    auto c = engine_->GetCase(domain, id.get_string());
    if (c.ok()) cases.push_back(json::parse(CaseToJson(*c)));
  }
  return Json(200, json::object{{"matching_records", cases.size()}, {"cases", cases}});
}

Response App::CaseWrite(const Request& r, const std::string& domain, const std::string& id,
                        const meta::User& user) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec) return Error(400, "body: not JSON (" + ec.message() + ")");
  const bool bulk = v.is_array();
  if (bulk && r.method != "POST") return Error(400, "a bulk write is a POST of a list");
  if (bulk && v.get_array().size() > 100) return Error(400, "body: at most 100 cases per request");
  if (!bulk && !id.empty() && r.method != "PUT") return Error(405, "update a case with PUT");
  if (r.method == "PUT" && id.empty()) return Error(400, "PUT needs /case/v2/{case_id}");
  std::vector<const json::value*> items;
  if (bulk)
    for (const auto& x : v.get_array()) items.push_back(&x);
  else
    items.push_back(&v);
  // Case ids first (temporary ids may refer to cases created later in the list).
  std::map<std::string, std::string> temp_ids;
  std::vector<std::pair<bool, std::string>> plan;  // (create, case id)
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string at = bulk ? fmt::format("[{}]", i) : "";
    if (!items[i]->is_object())
      return Error(400, (at.empty() ? "body" : at) + ": must be an object");
    const auto& o = items[i]->get_object();
    bool create = r.method == "POST";
    if (bulk) {
      const json::value* c = o.if_contains("create");
      if (!c || !c->is_bool()) return Error(400, at + ".create: is required (true or false)");
      create = c->get_bool();
    }
    std::string case_id;
    if (create) {
      case_id = util::NewUuidHex();
    } else if (!bulk) {
      case_id = id;
    } else if (const json::value* cid = o.if_contains("case_id"); cid && cid->is_string()) {
      case_id = std::string(cid->get_string());
    } else {
      return Error(400, at + ".case_id: is required to update a case");
    }
    if (!create) {
      auto existing = engine_->GetCase(domain, case_id);
      if (!existing.ok())
        return Error(404, fmt::format("{}: no case {}", at.empty() ? "case_id" : at, case_id));
    }
    if (const json::value* t = o.if_contains("temporary_id"); t && t->is_string())
      temp_ids[std::string(t->get_string())] = case_id;
    plan.emplace_back(create, case_id);
  }
  std::string blocks;
  for (size_t i = 0; i < items.size(); ++i) {
    std::string cid;
    auto b = CaseBlock(*items[i], bulk ? fmt::format("[{}]", i) : "", plan[i].first, plan[i].second,
                       user.user_id, temp_ids, &cid);
    if (!b.ok()) return Error(400, b.status().message());
    blocks += *b;
  }
  const std::string form_id = util::NewUuidHex();
  const std::string now = util::FormatIsoTime(util::NowMicros());
  std::string xml = fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://commcarehq.org/case_api"><meta xmlns="http://openrosa.org/jr/xforms"><deviceID>case_api</deviceID><timeStart>{1}</timeStart><timeEnd>{1}</timeEnd><username>{2}</username><userID>{3}</userID><instanceID>{0}</instanceID></meta>{4}</data>)",
      form_id, now, XmlEscape(user.username), XmlEscape(user.user_id), blocks);
  SubmitRequest s;
  s.domain = domain;
  s.user_id = user.user_id;
  s.body = std::move(xml);
  s.content_type = "text/xml";
  s.openrosa_version = "3.0";
  s.submit_ip = r.remote;
  SubmitResponse sr = engine_->Submit(s);
  if (sr.http_status != 201)
    return Json(400, json::object{{"error", sr.message}, {"xform_id", sr.form_id}});
  json::array cases;
  for (const auto& [create, cid] : plan) {
    auto c = engine_->GetCase(domain, cid);
    if (c.ok()) cases.push_back(json::parse(CaseToJson(*c)));
  }
  const int status = r.method == "POST" ? 201 : 200;
  if (bulk) return Json(status, json::object{{"xform_id", form_id}, {"cases", cases}});
  return Json(status, json::object{{"xform_id", form_id},
                                   {"case", cases.empty() ? json::value() : cases[0]}});
}

Response App::CaseApi(const Request& r, const std::string& domain, const std::string& rest) {
  if (r.method != "GET" && r.method != "POST" && r.method != "PUT")
    return Error(405, "the Case API serves GET, POST and PUT");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  std::string ids = rest;
  while (!ids.empty() && ids.front() == '/') ids.erase(0, 1);
  while (!ids.empty() && ids.back() == '/') ids.pop_back();
  if (r.method != "GET") {
    if (!user->Can(domain, meta::kEditData))
      return Error(403,
                   fmt::format("user {} may not edit data in domain {}", user->username, domain));
    if (ids == "bulk_fetch" && r.method == "POST") return BulkFetch(r, domain);
    return CaseWrite(r, domain, ids, *user);
  }
  if (!ids.empty()) {  // one case, or several comma-separated
    std::vector<std::string> list;
    size_t start = 0;
    for (size_t i = 0; i <= ids.size(); ++i)
      if (i == ids.size() || ids[i] == ',') {
        if (i > start) list.push_back(ids.substr(start, i - start));
        start = i + 1;
      }
    json::array cases;
    for (const auto& id : list) {
      auto c = engine_->GetCase(domain, id);
      if (!c.ok()) {
        if (list.size() == 1) return Error(StatusFor(c.status()), c.status().message());
        continue;
      }
      cases.push_back(json::parse(CaseToJson(*c)));
    }
    if (list.size() == 1) return Json(200, cases[0]);
    return Json(200, json::object{{"matching_records", cases.size()}, {"cases", cases}});
  }
  CaseSearchQuery q;
  q.domain = domain;
  for (const auto& [k, v] : r.query) {
    if (k == "q")  // full text over name and properties (libcommcare's extension)
      q.text = v;
    else if (k == "case_type")
      q.case_type = v;
    else if (k == "owner_id")
      q.owner_id = v;
    else if (k == "case_name")
      q.case_name = v;
    else if (k == "external_id")
      q.external_id = v;
    else if (k == "closed") {
      if (v != "true" && v != "false") return Error(400, "closed must be true or false");
      q.closed = v == "true";
    } else if (k == "limit") {
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (!*v.c_str() || *end || n < 1 || n > 5000) return Error(400, "limit must be 1..5000");
      q.limit = static_cast<size_t>(n);
    } else if (k == "cursor") {
      q.cursor = v;
    } else if (auto dot = k.rfind('.'); dot != std::string::npos &&
                                        (k.substr(dot + 1) == "gt" || k.substr(dot + 1) == "gte" ||
                                         k.substr(dot + 1) == "lt" || k.substr(dot + 1) == "lte")) {
      std::string field = k.substr(0, dot);
      if (field.rfind("properties.", 0) == 0) field = field.substr(11);
      q.ranges.push_back({field, k.substr(dot + 1), v});
    } else if (k.rfind("properties.", 0) == 0) {
      q.equals.emplace_back(k.substr(11), v);
    } else {
      return Error(400, fmt::format("unknown filter '{}'", k));
    }
  }
  auto page = SearchCases(pillows_dir_, q);
  if (!page.ok()) return Error(StatusFor(page.status()), page.status().message());
  json::array cases;
  for (const auto& c : page->cases) cases.push_back(json::parse(c));
  json::value next = nullptr;
  if (!page->next_cursor.empty()) {
    std::string link = fmt::format("/a/{}/api/case/v2/?", domain);
    for (const auto& [k, v] : r.query)
      if (k != "cursor") link += UrlEncode(k) + "=" + UrlEncode(v) + "&";
    link += "cursor=" + UrlEncode(page->next_cursor);
    next = json::value(link);
  }
  return Json(200,
              json::object{{"matching_records", cases.size()}, {"cases", cases}, {"next", next}});
}

}  // namespace commcare::server
