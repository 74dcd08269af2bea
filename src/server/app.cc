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
#include "server/request_parse.h"
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

// The tail of a route's path without its leading slash ("/{id}" -> "{id}").
std::string NoSlash(const std::string& tail) {
  return !tail.empty() && tail.front() == '/' ? tail.substr(1) : tail;
}

}  // namespace

Response App::Handle(const Request& r) {
  auto t0 = std::chrono::steady_clock::now();
  std::string route = "other";
  Response resp = Route(r, &route);
  // The console signs in with its own form: no browser credential dialog for its requests.
  if (resp.status == 401 && r.Header("x-commcare-console"))
    std::erase_if(resp.headers, [](const auto& h) { return h.first == "WWW-Authenticate"; });
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

const std::vector<App::RouteSpec>& App::Routes() {
  using M = RouteSpec::Match;
  static const std::vector<RouteSpec> routes = [] {
    // Global routes take the request alone; the console's own dispatch answers its paths.
    auto console = [](App* a, const Request& r, const std::string&, const std::string&) {
      std::string ignored;
      return *a->Console(r, &ignored);
    };
    auto probe = [](App* a, const Request& r, const std::string&, const std::string&) {
      if (r.method != "GET" && r.method != "HEAD") return Error(405, "use GET");
      if (r.path.starts_with("/health/ready")) return a->Ready();
      if (r.path.starts_with("/metrics")) return a->MetricsText();
      return Json(200, json::object{{"status", "ok"}});
    };
    std::vector<RouteSpec> v = {
        {"console", "/", false, M::kExact, console},
        {"console_api", "/console/api/", false, M::kPrefix, console},
        {"console", "/console", false, M::kSegment, console},
        {"admin_domains", "/api/domains", false, M::kExact,
         [](App* a, const Request& r, const std::string&, const std::string&) {
           return a->DomainsApi(r);
         }},
        {"health/ready", "/health/ready", false, M::kExact, probe},
        {"health", "/health", false, M::kExact, probe},
        {"metrics", "/metrics", false, M::kExact, probe},
        {"receiver", "receiver", true, M::kSegment,
         [](App* a, const Request& r, const std::string& d, const std::string& t) {
           return a->Receiver(r, d, NoSlash(t));
         }},
        {"case_api_v2", "api/case/v2", true, M::kSegment,
         [](App* a, const Request& r, const std::string& d, const std::string& t) {
           return a->CaseApi(r, d, t);
         }},
        // HQ serves the Case API v2 under v0.6/case/ too (corehq/apps/api/urls.py).
        {"case_api_v06", "api/v0.6/case", true, M::kSegment,
         [](App* a, const Request& r, const std::string& d, const std::string& t) {
           return a->CaseApi(r, d, t);
         }},
        {"admin_users", "api/users", true, M::kSegment,
         [](App* a, const Request& r, const std::string& d, const std::string& t) {
           return a->UsersApi(r, d, NoSlash(t));
         }}};
    for (std::string_view kind : meta::kDocKinds)
      v.push_back({fmt::format("admin_{}s", kind), fmt::format("api/{}s", kind), true, M::kSegment,
                   [kind = std::string(kind)](App* a, const Request& r, const std::string& d,
                                              const std::string& t) {
                     return a->DocsApi(r, d, kind, NoSlash(t));
                   }});
    auto add = [&v](const char* name, const char* path, M match, auto fn) {
      v.push_back({name, path, true, match, fn});
    };
    add("phone_restore", "phone/restore", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          std::string app = NoSlash(t);
          while (!app.empty() && app.back() == '/') app.pop_back();
          return a->RestoreApi(r, d, app);
        });
    add("changes_api", "api/changes", M::kExact,
        [](App* a, const Request& r, const std::string& d, const std::string&) {
          return a->ChangesApi(r, d);
        });
    add("tasks_api", "api/tasks", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->TasksApi(r, d, t);
        });
    add("exports_api", "api/exports", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->ExportsApi(r, d, t);
        });
    add("import_api", "api/import", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->ImportApi(r, d, t);
        });
    add("forwarders_api", "api/forwarders", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->ForwardersApi(r, d, t);
        });
    add("reports_api", "api/reports", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->ReportsApi(r, d, t);
        });
    add("rules_api", "api/rules", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->RulesApi(r, d, t);
        });
    add("alerts_api", "api/alerts", M::kSegment,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->AlertsApi(r, d, t);
        });
    add("ucr_report_api", "api/ucr/report/", M::kPrefix,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->UcrReportApi(r, d, t);
        });
    add("ucr_api", "api/ucr/", M::kPrefix,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->UcrApi(r, d, t);
        });
    for (const char* path : {"api/case/attachment/", "api/case_attachment/v1/"})
      add("case_attachment", path, M::kPrefix,
          [](App* a, const Request& r, const std::string& d, const std::string& t) {
            return a->CaseAttachment(r, d, t);
          });
    add("form_attachment", "api/form/attachment/", M::kPrefix,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->Attachment(r, d, t);
        });
    add("console_api", "api/console/", M::kPrefix,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->ConsoleApi(r, d, t);
        });
    for (const char* kind : {"cases", "forms"})
      for (const char* path : {"api/odata/{}/v1/", "api/v0.5/odata/{}/"})
        v.push_back({fmt::format("odata_{}", kind), fmt::format(fmt::runtime(path), kind), true,
                     M::kPrefix,
                     [kind = std::string(kind)](App* a, const Request& r, const std::string& d,
                                                const std::string& t) {
                       return a->ODataApi(r, d, kind, t);
                     }});
    add("form_api", "api/v0.5/form", M::kPrefix,
        [](App* a, const Request& r, const std::string& d, const std::string& t) {
          return a->FormApi(r, d, t);
        });
    for (const char* resource : {"fixture", "lookup_table", "lookup_table_item"})
      v.push_back({fmt::format("lookup_v05_{}", resource), fmt::format("api/v0.5/{}", resource),
                   true, M::kSegment,
                   [resource = std::string(resource)](App* a, const Request& r,
                                                      const std::string& d, const std::string& t) {
                     return a->LookupApi(r, d, resource, t);
                   }});
    add("case_bulk_upload", "importer/excel/bulk_upload_api", M::kExact,
        [](App* a, const Request& r, const std::string& d, const std::string&) {
          return a->BulkUploadApi(r, d);
        });
    add("lookup_upload", "fixtures/fixapi", M::kExact,
        [](App* a, const Request& r, const std::string& d, const std::string&) {
          return a->LookupUploadApi(r, d);
        });
    return v;
  }();
  return routes;
}

Response App::Route(const Request& r, std::string* route) {
  std::string domain, rest;
  const bool under_domain = SplitDomainPath(r.path, &domain, &rest);
  for (const RouteSpec& spec : Routes()) {
    if (spec.domain != under_domain || !spec.Matches(spec.domain ? rest : r.path)) continue;
    *route = spec.name;
    return spec.handle(this, r, domain, spec.domain ? rest.substr(spec.path.size()) : "");
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
  if (out.status == 503) out.headers.emplace_back("Retry-After", "30");  // a backend or the disk
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
                              "web-user", "role", "group", "location", "app", "lookup_table"}) {
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

}  // namespace commcare::server
