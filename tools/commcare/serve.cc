// The `commcare serve` command: the reference HTTP server on a data directory.
#include <commcare/engine.h>
#include <commcare/pillows.h>
#include <commcare/tasks.h>
#include <fmt/format.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "commcare/log.h"
#include "commcare/sync.h"
#include "common.h"
#include "http/server.h"
#include "integrations/rules/tasks.h"
#include "meta/meta_store.h"
#include "server/app.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

// A server's first start on an empty store: a domain and a superuser to log in with. Servers
// sharing a PostgreSQL meta database that start together race to make them: a loser is told
// Aborted for the domain and goes on.
Status FirstStart(commcare::meta::MetaStore* meta) {
  CC_ASSIGN_OR_RETURN(auto domains, meta->ListDomains());
  if (!domains.empty()) return Status::Ok();
  commcare::meta::Domain d;
  d.name = Env("COMMCARE_DOMAIN", "demo");
  auto made = meta->PutDomain(d);
  if (made.status().code() == commcare::StatusCode::kAborted) return Status::Ok();
  if (!made.ok()) return made.status();
  std::string user = Env("COMMCARE_ADMIN_USER", "admin");
  const bool generated = !std::getenv("COMMCARE_ADMIN_PASSWORD");
  std::string password = Env("COMMCARE_ADMIN_PASSWORD", commcare::util::NewUuidHex().substr(0, 20));
  commcare::meta::User u;
  u.username = user;
  u.web_user = true;
  u.is_superuser = true;
  u.domains = {d.name};
  if (auto r = meta->PutUser(u, password); !r.ok()) return r.status();
  std::cerr << "created domain '" << d.name << "' and superuser '" << user << "'"
            << (generated ? " with password " + password + " (shown once)" : "") << std::endl;
  return Status::Ok();
}

// The default connection cap: the descriptor limit less room for the stores' files.
int MaxConnections() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1024;
  const auto n = static_cast<int64_t>(rl.rlim_cur);
  return static_cast<int>(std::clamp<int64_t>(n - 128, 16, 10'000));
}

// --print-routes: one JSON line per route, in the order they are tried (a test walks them all).
int PrintRoutes() {
  for (const auto& route : server::App::Routes()) {
    using M = server::App::RouteSpec::Match;
    const char* match = route.match == M::kExact     ? "exact"
                        : route.match == M::kSegment ? "segment"
                                                     : "prefix";
    std::cout << json::serialize(
                     json::object{{"name", route.name},
                                  {"path", (route.domain ? "/a/{domain}/" : "") + route.path},
                                  {"domain", route.domain},
                                  {"match", match}})
              << "\n";
  }
  return 0;
}

int CmdServe(const Args& a) {
  namespace fs = std::filesystem;
  if (a.Has("--print-routes")) return PrintRoutes();
  // A long-running server's heap should not keep what its largest transient buffers held.
  // glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so
  // blocks that size then come from the heap and their memory stays with the process after
  // free: RssAnon grew with each export as the exports grew (docs/reliability.md, "Soak").
  // A fixed threshold keeps blocks of 1 MiB and more in their own mappings, returned on free.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  const std::string data = a.Get("--data");
  auto opts = HostOptionsOf(a, Access::kWriter);
  if (!opts.ok()) return FailStatus(opts.status());
  if (!fs::exists(data + "/commcare.json"))  // a first start: the host file's, or the default
    if (auto s = Engine::Create(data, opts->deployment.value_or(Deployment{})); !s.ok())
      return FailStatus(s);
  // As PostgreSQL: no serving from a directory others can read (it holds Digest HA1s, API
  // key hashes and health data).
  std::error_code ec;
  const auto perms = fs::status(data, ec).permissions();
  if (!ec && (perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
    return Fail(
        fmt::format("data directory {} is open to group or others (mode {:04o}); it holds password "
                    "equivalents and health data: chmod 0700 {}",
                    data, static_cast<unsigned>(perms) & 0777, data));
  // The log on stderr: JSON lines (a log shipper reads them), or text.
  const std::string log_format = a.Get("--log-format", "json");
  if (log_format != "json" && log_format != "text")
    return Fail("--log-format is json or text", kUsage);
  SetLogger(log_format == "json" ? NewJsonLinesLogger(stderr) : NewTextLogger(stderr));
  // Signals are taken by this thread (sigwait) only; every thread started below blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  opts->restore_cache_dir = data + "/restore-cache";
  auto host = Host::Open(std::move(*opts));
  if (!host.ok()) return FailStatus(host.status());
  Engine* eng = (*host)->engine();
  auto meta = (*host)->Meta();  // a writer's: domain, user, role, ... changes reach the change log
  if (!meta.ok()) return FailStatus(meta.status());
  if (auto s = FirstStart(*meta); !s.ok()) return FailStatus(s);
  commcare::server::App app(eng, *meta, (*host)->PillowStore());
  auto sync = (*host)->Syncer();
  if (!sync.ok()) return FailStatus(sync.status());
  app.SetSync(*sync);
  double user_rate = 0, domain_rate = 0;
  for (auto [flag, field] : {std::pair<const char*, double*>{"--rate-limit-user", &user_rate},
                             {"--rate-limit-domain", &domain_rate}}) {
    if (!a.Has(flag)) continue;
    char* end = nullptr;
    *field = std::strtod(a.Get(flag).c_str(), &end);
    if (*end || *field < 0) return Fail(std::string(flag) + " must be a non-negative number");
  }
  app.SetRateLimits(user_rate, domain_rate);
  commcare::server::AppLimits limits;
  for (auto [flag, field] :
       {std::pair<const char*, int*>{"--max-long-polls-per-user", &limits.long_polls_per_user},
        {"--max-long-polls", &limits.long_polls},
        {"--max-streams-per-user", &limits.streams_per_user},
        {"--max-streams", &limits.streams},
        {"--login-failures", &limits.login.failures_before_lockout},
        {"--lockout-seconds", &limits.login.lockout_seconds},
        {"--login-failures-per-address", &limits.login.failures_per_address}}) {
    int64_t v = 0;
    if (!a.Has(flag)) continue;
    if (!ParseInt(a.Get(flag), &v) || v < 1 || v > 1'000'000)
      return Fail(std::string(flag) + " must be a whole number, 1..1000000");
    *field = static_cast<int>(v);
  }
  limits.login.max_lockout_seconds =
      std::max(limits.login.max_lockout_seconds, limits.login.lockout_seconds);
  app.SetLimits(limits);
  commcare::http::ServerOptions so;
  so.listen = a.Get("--listen", "127.0.0.1:8000");
  so.access_log = a.Get("--access-log");
  so.tls_cert = a.Get("--tls-cert");
  so.tls_key = a.Get("--tls-key");
  int64_t threads = 0;
  if (a.Has("--threads") && (!ParseInt(a.Get("--threads"), &threads) || threads < 1))
    return Fail("--threads must be a positive integer");
  so.io_threads = static_cast<int>(threads);
  so.max_body_bytes = eng->Options().max_body_bytes;
  for (auto [flag, field] :
       {std::pair<const char*, int*>{"--header-timeout-ms", &so.header_timeout_ms},
        {"--body-timeout-ms", &so.body_timeout_ms},
        {"--idle-timeout-ms", &so.idle_timeout_ms}}) {
    int64_t v = 0;
    if (a.Has(flag)) {
      if (!ParseInt(a.Get(flag), &v) || v < 1) return Fail(std::string(flag) + " must be positive");
      *field = static_cast<int>(v);
    }
  }
  if (a.Has("--max-body-bytes")) {
    int64_t v = 0;
    if (!ParseInt(a.Get("--max-body-bytes"), &v) || v < 1)
      return Fail("--max-body-bytes must be positive");
    so.max_body_bytes = static_cast<size_t>(v);
  }
  if (a.Has("--max-body-bytes-in-flight")) {
    int64_t v = 0;
    if (!ParseInt(a.Get("--max-body-bytes-in-flight"), &v) || v < 1)
      return Fail("--max-body-bytes-in-flight must be positive");
    so.max_body_bytes_in_flight = static_cast<size_t>(v);
  }
  // Connections: the flag, else as many as the descriptor limit leaves room for.
  so.max_connections = MaxConnections();
  if (a.Has("--max-connections")) {
    int64_t v = 0;
    if (!ParseInt(a.Get("--max-connections"), &v) || v < 1 || v > 1'000'000)
      return Fail("--max-connections must be a whole number, 1..1000000");
    so.max_connections = static_cast<int>(v);
  }
  std::unique_ptr<commcare::PillowHost> pillows;
  std::thread pillow_thread;
  std::atomic<bool> stop_pillows{false};
  if (!a.Has("--no-pillows")) {
    auto h = (*host)->OpenPillows({});
    if (!h.ok()) return FailStatus(h.status());
    pillows = std::move(h).value();
    // Rules that run on each case change (docs/rules.md): rule.case tasks for the workers.
    commcare::Host* hp = host->get();
    auto on_change = commcare::rules::NewChangeProcessor([hp] { return hp->Tasks(); });
    if (auto s = pillows->AddPillow(commcare::rules::ChangePillowConfig(), on_change); !s.ok())
      return FailStatus(s);
    pillow_thread = std::thread([&] {
      if (auto s = pillows->Run(stop_pillows); !s.ok())
        Log(LogLevel::kError, "pillows stopped: " + s.ToString(),
            {{"component", "pillows"}, {"next", "the server goes on without pillows"}});
    });
  }
  app.SetPillows(pillows.get());
  // Task workers: --task-workers threads (0: none here, e.g. when `commcare tasks run` runs
  // them elsewhere); the tasks API and metrics work either way.
  int64_t task_threads = 2;
  if (a.Has("--task-workers") && !ParseInt(a.Get("--task-workers"), &task_threads))
    return Fail("--task-workers must be a whole number", kUsage);
  auto tasks = (*host)->Tasks();
  if (!tasks.ok()) return FailStatus(tasks.status());
  std::unique_ptr<TaskWorkers> workers;
  if (task_threads > 0) {
    TaskWorkersOptions to;
    to.workers = static_cast<int>(task_threads);
    auto w = (*host)->NewTaskWorkers(to);
    if (!w.ok()) return FailStatus(w.status());
    workers = std::move(*w);
    if (Status s = workers->Start(); !s.ok()) return FailStatus(s);
  }
  app.SetTasks(*tasks, workers.get());
  app.SetHost(host->get());
  auto server = commcare::http::Server::Start(
      so, [&app](const commcare::http::Request& r) { return app.Handle(r); },
      [&app](commcare::http::Request& head) { return app.Gate(head); });
  if (!server.ok()) {
    if (workers) workers->Stop();
    stop_pillows = true;
    if (pillow_thread.joinable()) pillow_thread.join();
    return FailStatus(server.status());
  }
  std::cout << json::serialize(json::object{
                   {"listening", fmt::format("{}:{}", so.listen.substr(0, so.listen.rfind(':')),
                                             (*server)->Port())},
                   {"scheme", so.tls_cert.empty() ? "http" : "https"},
                   {"data", data},
                   {"pillows", !a.Has("--no-pillows")},
                   {"task_workers", task_threads}})
            << std::endl;
  int sig = 0;
  sigwait(&sigs, &sig);
  Log(LogLevel::kInfo, "stopping: finishing requests in flight", {{"signal", std::to_string(sig)}});
  (*server)->Stop();
  if (workers) workers->Stop();
  stop_pillows = true;
  if (pillow_thread.joinable()) pillow_thread.join();
  pillows.reset();
  std::cout << json::serialize(json::object{{"stopped", true}}) << std::endl;
  return 0;
}

}  // namespace

void RegisterServeCommand(Cli* cli) {
  Command& c = cli->Add(nullptr, "serve",
                        "run the reference HTTP server (creates DIR and an admin on first start: "
                        "COMMCARE_ADMIN_USER, COMMCARE_ADMIN_PASSWORD, COMMCARE_DOMAIN)",
                        CmdServe);
  c.Str("--listen", "HOST:PORT (default 127.0.0.1:8000)")
      .Flag("--no-pillows", "do not run the pillows in this process")
      .Flag("--print-routes", "list the routes (JSON lines) and exit")
      .Int("--task-workers", "task worker threads in this process (default 2; 0: none)")
      .Str("--access-log", "FILE, or - for stderr")
      .Int("--threads", "I/O threads", 1)
      .Number("--rate-limit-user", "requests/s per user (0: none)")
      .Number("--rate-limit-domain", "requests/s per domain (0: none)")
      .Str("--tls-cert", "serve HTTPS with this certificate (PEM)")
      .Str("--tls-key", "and this key (PEM)")
      .Choice("--log-format", "json (default) or text, for the log on stderr", {"json", "text"});
  for (const char* flag :
       {"--max-body-bytes", "--header-timeout-ms", "--body-timeout-ms", "--idle-timeout-ms",
        "--max-connections", "--max-body-bytes-in-flight", "--max-long-polls-per-user",
        "--max-long-polls", "--max-streams-per-user", "--max-streams", "--login-failures",
        "--lockout-seconds", "--login-failures-per-address"})
    c.Int(flag, "a limit (see docs/security.md)", 1);
}

}  // namespace commcare::cli
