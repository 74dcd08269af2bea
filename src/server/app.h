// The reference server's routes: the OpenRosa receiver, the Case API v2 (case_api.cc), the Form
// API v0.5 (form_api.cc), restore, admin, health.
// Plain Request -> Response over an Engine, the MetaStore and the pillows' stores.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "commcare/engine.h"
#include "commcare/host.h"
#include "commcare/pillows.h"
#include "commcare/sync.h"
#include "commcare/tasks.h"
#include "http/server.h"
#include "meta/meta_store.h"
#include "meta/restore_params.h"
#include "server/login_guard.h"

namespace commcare::server {

// Caps on what one user, and everyone together, may hold open at once.
struct AppLimits {
  int long_polls_per_user = 4;  // changes-feed long-polls waiting at once
  int long_polls = 256;
  int streams_per_user = 4;  // restores being sent at once
  int streams = 128;
  LoginLimits login;
  int session_seconds = 8 * 3600;  // a console session's lifetime from sign-in
};

class App {
 public:
  // One route: its name (the metrics label), its path ("/health", or under /a/{domain}/ when
  // domain is set: "api/case/v2") and how a request's path is matched against it.
  struct RouteSpec {
    enum Match { kExact, kSegment, kPrefix };  // path or path/; path or path/...; path...
    std::string name, path;
    bool domain;
    Match match;
    std::function<http::Response(App*, const http::Request&, const std::string& domain,
                                 const std::string& tail)>
        handle;
    bool Matches(const std::string& p) const;  // p: the path, or what follows /a/{domain}/
  };
  // Every route, in the order they are tried (`commcare serve --print-routes` lists them).
  static const std::vector<RouteSpec>& Routes();
  App(Engine* engine, meta::MetaStore* meta, std::string pillows_dir);
  http::Response Handle(const http::Request& r);
  // The server's gate: authenticates from the headers alone, before a body is read (401 or
  // 429 for a request with a body and no or wrong credentials); the user becomes
  // head.principal.
  std::optional<http::Response> Gate(http::Request& head);
  void SetLimits(const AppLimits& limits) {
    limits_ = limits;
    login_guard_.SetLimits(limits.login);
  }
  // The pillows running beside the server (readiness and metrics report their lag).
  void SetPillows(PillowHost* pillows) { pillows_ = pillows; }
  // Mobile sync (the restore route answers 503 without it).
  void SetSync(Sync* sync) { sync_ = sync; }
  // The task queue (the tasks API answers 503 without it) and this server's workers (metrics).
  void SetTasks(TaskQueue* tasks, TaskWorkers* workers) {
    tasks_ = tasks;
    task_workers_ = workers;
  }
  // The host the reminders API works through (alerts answer 503 without it).
  void SetHost(Host* host) { host_ = host; }
  // Token-bucket limits on authenticated requests, per user and per domain (requests per
  // second, bursts of twice that; 0 = no limit). Over the limit: 429 with Retry-After.
  void SetRateLimits(double per_user, double per_domain) {
    user_rate_ = per_user;
    domain_rate_ = per_domain;
  }

 private:
  // Request counts and latency histograms per route, submissions by outcome.
  struct Metrics {
    static constexpr std::array<double, 12> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                        0.1,   0.25,   0.5,   1,    2.5,   5};
    struct Route {
      std::map<int, int64_t> by_status;
      std::array<int64_t, 13> buckets{};  // the last: +Inf
      double sum = 0;
      int64_t count = 0;
    };
    std::mutex mu;
    std::map<std::string, Route> routes;
    std::map<std::string, int64_t> submissions;  // by OpenRosa nature
  };
  http::Response Route(const http::Request& r, std::string* route);
  http::Response Ready();
  http::Response MetricsText();
  http::Response Receiver(const http::Request& r, const std::string& domain,
                          const std::string& rest);
  http::Response CaseWrite(const http::Request& r, const std::string& domain, const std::string& id,
                           const meta::User& user, const std::string& external_id);  // case_api.cc
  http::Response BulkFetch(const http::Request& r, const std::string& domain);       // case_api.cc
  http::Response DomainsApi(const http::Request& r);
  http::Response UsersApi(const http::Request& r, const std::string& domain,
                          const std::string& rest);
  http::Response ApiKeys(const http::Request& r, const std::string& domain, const meta::User& actor,
                         const std::string& name, const std::string& id);
  http::Response RestoreApi(const http::Request& r, const std::string& domain,
                            const std::string& app_id);  // sync_api.cc
  // An async_restore domain's restore (async_restore.cc): 202 with progress while its task
  // runs, then the payload once.
  http::Response AsyncRestore(const std::string& domain, const meta::User& target,
                              const meta::RestoreParams& params);
  http::Response AsyncPayload(const std::string& key, const std::string& username,
                              const TaskInfo& task);
  http::Response CaseAttachment(const http::Request& r, const std::string& domain,
                                const std::string& rest);  // sync_api.cc
  http::Response DocsApi(const http::Request& r, const std::string& domain, const std::string& kind,
                         const std::string& rest);
  http::Response Attachment(const http::Request& r, const std::string& domain,
                            const std::string& rest);
  http::Response ChangesApi(const http::Request& r, const std::string& domain);
  http::Response TasksApi(const http::Request& r, const std::string& domain, std::string rest);
  http::Response ExportsApi(const http::Request& r, const std::string& domain, std::string rest);
  http::Response ImportApi(const http::Request& r, const std::string& domain, std::string rest);
  // HQ's case importer API, POST importer/excel/bulk_upload_api/ (import_api.cc).
  http::Response BulkUploadApi(const http::Request& r, const std::string& domain);
  http::Response ReportsApi(const http::Request& r, const std::string& domain, std::string rest);
  http::Response RulesApi(const http::Request& r, const std::string& domain, std::string rest);
  http::Response AlertsApi(const http::Request& r, const std::string& domain,
                           std::string rest);  // alerts_api.cc
  // The start the saved-definition routes share (named_definitions.cc): the method (405 with
  // `methods`), the user (API access to read, edit-data to write), the task queue (503); the
  // answer to send when the request stops here.
  std::optional<http::Response> AdmitNamed(const http::Request& r, const std::string& domain,
                                           std::string_view methods);
  http::Response ForwardersApi(const http::Request& r, const std::string& domain,
                               std::string rest);  // forwarders_api.cc
  std::string TaskMetrics();                       // tasks_api.cc
  http::Response UcrApi(const http::Request& r, const std::string& domain, const std::string& rest);
  // HQ's UCR report configurations at api/ucr/report/{id}/ (ucr_reports_api.cc).
  http::Response UcrReportApi(const http::Request& r, const std::string& domain, std::string id);
  // OData feeds of saved exports (odata_api.cc); kind is "cases" or "forms".
  http::Response ODataApi(const http::Request& r, const std::string& domain, std::string_view kind,
                          const std::string& rest);
  http::Response FormApi(const http::Request& r, const std::string& domain,
                         const std::string& rest);  // form_api.cc
  http::Response CaseApi(const http::Request& r, const std::string& domain,
                         const std::string& rest);  // case_api.cc
  // HQ's v0.5 fixture/ (read-only), lookup_table/ and lookup_table_item/ resources
  // (lookup_api.cc); LookupWrite answers their POST, PUT and DELETE.
  http::Response LookupApi(const http::Request& r, const std::string& domain,
                           const std::string& resource, const std::string& rest);
  http::Response LookupWrite(const http::Request& r, const std::string& domain,
                             const std::string& resource, const std::string& id);
  // HQ's lookup-table Excel upload, POST fixtures/fixapi/ (lookup_api.cc).
  http::Response LookupUploadApi(const http::Request& r, const std::string& domain);
  // The web console (console.cc): its assets at / and /console/, and /console/api/ (login,
  // logout, session, pillows[/...]); nullopt when the path is not the console's.
  std::optional<http::Response> Console(const http::Request& r, std::string* route);
  http::Response Login(const http::Request& r);
  http::Response Logout(const http::Request& r);
  http::Response SessionInfo(const http::Request& r);
  http::Response PillowsJson(const http::Request& r);
  // /console/api/pillows/{name}/retries (GET) and .../requeue (POST), for superusers: a
  // pillow's retry queue, and requeueing it (console_api.cc).
  http::Response PillowQueue(const http::Request& r, const std::string& rest);
  // The console's data routes missing from the APIs (console_api.cc): /a/{domain}/api/console/
  // case/{id}/history and form/{id}/archive|unarchive.
  http::Response ConsoleApi(const http::Request& r, const std::string& domain,
                            const std::string& rest);
  // The user of the request's console session cookie, when it is live and the user active; a
  // state-changing request must also carry the session's CSRF token (X-CSRF-Token) and, if it
  // names an Origin, come from this server's. Unauthenticated or PermissionDenied otherwise.
  Result<meta::User> SessionUser(const http::Request& r);
  // The authenticated user (Basic, Digest or ApiKey): the gate's, or checked now.
  // Unauthenticated says why (a message starting "stale" for an expired Digest nonce);
  // ResourceExhausted when failed logins of the user or the address must wait.
  Result<meta::User> Authenticate(const http::Request& r);
  Result<meta::User> CheckCredentials(const http::Request& r);
  // Digest's check of the Authorization header's parameters p.
  Result<meta::User> AuthenticateDigest(const http::Request& r,
                                        std::map<std::string, std::string> p);
  // Records a Digest nonce count; false if it is not above every count seen with the nonce
  // (a replayed header).
  bool FreshNonceCount(const std::string& nonce, uint64_t nc);
  // A slot of table for user (released when the returned token is); nullptr when the user
  // or everyone holds the most allowed.
  struct SlotTable {
    std::mutex mu;
    std::map<std::string, int> by_user;
    int total = 0;
  };
  static std::shared_ptr<void> TakeSlot(SlotTable* table, const std::string& user, int per_user,
                                        int total);
  // The authenticated, not rate-limited member of the domain holding permission ("" = any);
  // else nullopt with the 401/429/403 to send in *deny.
  std::optional<meta::User> Admit(const http::Request& r, const std::string& domain,
                                  std::string_view permission, http::Response* deny);
  // 401 with a challenge for every scheme (a fresh Digest nonce).
  http::Response Unauthorized(const Status& why) const;
  std::string Nonce() const;
  bool NonceValid(std::string_view nonce, bool* stale) const;

  Engine* engine_;
  meta::MetaStore* meta_;
  std::string pillows_dir_;
  std::string secret_;  // signs Digest nonces (new per process: old nonces become stale)
  std::string opaque_;  // sent with every challenge; random, unrelated to the secret
  std::mutex nonce_mu_;
  std::map<std::string, std::pair<uint64_t, int64_t>> nonce_counts_;  // nonce -> (nc, time)
  AppLimits limits_;
  LoginGuard login_guard_;
  SlotTable long_polls_, streams_;
  // Takes a token from the user's and the domain's buckets; the seconds to wait if empty.
  double Throttle(const std::string& user, const std::string& domain);
  PillowHost* pillows_ = nullptr;
  Sync* sync_ = nullptr;
  TaskQueue* tasks_ = nullptr;
  TaskWorkers* task_workers_ = nullptr;
  Host* host_ = nullptr;
  double user_rate_ = 0, domain_rate_ = 0;
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point last{};
    bool fresh = true;
  };
  std::mutex buckets_mu_;
  std::map<std::string, Bucket> buckets_;
  Metrics metrics_;
  std::mutex async_mu_;
  std::map<std::string, int64_t> async_restores_;  // (domain, user, token, device) -> task
};

}  // namespace commcare::server
