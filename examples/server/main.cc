// The `commcare` command: a host for libcommcare on the embedded default.
// JSON on stdout; exit 0 on success, non-zero with {"error": ...} on failure.
#include <commcare/engine.h>
#include <commcare/pillows.h>
#include <fmt/format.h>
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

#include "commcare/sync.h"
#include "http/server.h"
#include "meta/meta_store.h"
#include "server/app.h"
#include "util/hash.h"
#include "util/time.h"

namespace json = boost::json;
using commcare::Engine;
using commcare::EngineOptions;
using commcare::Status;

namespace {

constexpr const char* kUsage = R"(usage:
  commcare init --data DIR [--config HOST.json] [--shards N] [--databases K]
      [--blob-store pack|files|S3_JSON]
      [--change-log '{"kind": "kafka", "bootstrap_servers": "HOST:PORT", ...}']
      [--primary '{"kind": "postgres", "databases": ["host=... dbname=shard0", ...]}']
      [--meta '{"kind": "postgres", "database": "host=... dbname=meta"}']
      [--pillows '{"kind": "postgres", "database": "host=... dbname=pillows"}']
  commcare submit --data DIR --domain D [--user U] [--openrosa-version V] [--content-type T] FILE...
  commcare form get --data DIR --domain D FORM_ID [--xml]
  commcare form archive|unarchive --data DIR --domain D FORM_ID
  commcare case get --data DIR --domain D CASE_ID
  commcare case list --data DIR --domain D [--type T] [--owner O] [--closed true|false]
  commcare case history --data DIR --domain D CASE_ID
  commcare case rebuild --data DIR --domain D CASE_ID
  commcare ledger get --data DIR --domain D CASE_ID
  commcare check --data DIR
  commcare changes --data DIR [--topic T] [--partition P] [--from OFFSET] [--limit N]
  commcare pillows run --data DIR [--only NAME,...] [--num-processes N --process-num K] [--once]
      [--consumer-group NAME]   (Kafka: partitions shared out by the group, cooperatively)
  commcare pillows status --data DIR [--only NAME,...]
  commcare pillows retries --data DIR --pillow NAME
  commcare pillows requeue --data DIR --pillow NAME [--doc ID] [--dead]
  commcare pillows reconcile|reset --data DIR --pillow NAME
  commcare search --data DIR --domain D [--type T] [--owner O] [--closed true|false]
      [--name N] [--external-id E] [--prop k=v]... [--range k:gt|gte|lt|lte:v]... [--text Q]
      [--limit L] [--cursor C]
  commcare ucr load --data DIR CONFIG.json
  commcare ucr rebuild --data DIR --domain D --table T
  commcare ucr rows --data DIR --domain D --table T [--limit N] [--offset N]
  commcare serve --data DIR [--listen 127.0.0.1:8000] [--no-pillows] [--access-log FILE|-]
      [--threads N] [--max-body-bytes N] [--header-timeout-ms N] [--body-timeout-ms N]
      [--idle-timeout-ms N] [--rate-limit-user R] [--rate-limit-domain R]
      [--max-connections N] [--max-body-bytes-in-flight N]
      [--max-long-polls-per-user N] [--max-long-polls N]
      [--max-streams-per-user N] [--max-streams N]
      [--login-failures N] [--lockout-seconds S] [--login-failures-per-address N]
      [--tls-cert CERT.pem --tls-key KEY.pem]    (creates DIR and an admin account on first start: COMMCARE_ADMIN_USER,
                        COMMCARE_ADMIN_PASSWORD, COMMCARE_DOMAIN, or printed once)
  commcare migrate --data DIR       (applies the stores' schema migrations; safe to run twice)
  Every command but init takes --config HOST.json in place of (or beside) --data DIR: the
  deployment's shared backends, and "data_dir" for this process's own state; the directory is
  set up from the file on first use and must match it afterwards.
  commcare restore --data DIR --domain D --user U [--since TOKEN] [--state ccsh:HASH]
      [--version 1.0|2.0|3.0] [--device-id ID]    (the OTA restore payload to stdout)
  commcare admin domain create --data DIR NAME [--open-submissions]
  commcare admin user create --data DIR --username U --password P --domain D [--web] [--superuser]
  commcare admin apikey create --data DIR --username U [--expires-days N]
  commcare admin apikey list --data DIR --username U
  commcare admin apikey revoke --data DIR --username U (--id ID | --all))";

struct Args {
  std::map<std::string, std::string> opts;
  std::multimap<std::string, std::string> multi;  // repeatable options (--prop, --range)
  std::vector<std::string> pos;
  bool Has(const std::string& k) const { return opts.count(k) > 0; }
  std::string Get(const std::string& k, const std::string& def = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? def : it->second;
  }
};

const std::vector<std::string> kFlags = {
    "--xml", "--once", "--dead", "--web", "--superuser", "--no-pillows", "--open-submissions",
    "--all"};
const std::vector<std::string> kRepeatable = {"--prop", "--range"};

int Fail(const std::string& msg, int code = 1) {
  std::cout << json::serialize(json::object{{"error", msg}}) << std::endl;
  return code;
}

int FailStatus(const Status& s) {
  int code = s.IsNotFound() ? 2 : s.code() == commcare::StatusCode::kFailedPrecondition ? 3 : 1;
  return Fail(s.message(), code);
}

bool ParseArgs(int argc, char** argv, int start, Args* a, std::string* err) {
  for (int i = start; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) == 0 && s.size() > 2) {
      if (std::find(kFlags.begin(), kFlags.end(), s) != kFlags.end()) {
        a->opts[s] = "1";
        continue;
      }
      if (i + 1 >= argc) {
        *err = "option " + s + " needs a value";
        return false;
      }
      if (std::find(kRepeatable.begin(), kRepeatable.end(), s) != kRepeatable.end())
        a->multi.emplace(s, argv[i + 1]);
      a->opts[s] = argv[++i];
    } else {
      a->pos.push_back(s);
    }
  }
  return true;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

commcare::Result<std::unique_ptr<Engine>> OpenEngine(const Args& a, bool read_only) {
  if (!a.Has("--data")) return Status::InvalidArgument("--data DIR is required");
  EngineOptions o;
  o.data_dir = a.Get("--data");
  o.read_only = read_only;
  return Engine::Open(o);
}

bool NeedDomain(const Args& a, std::string* domain) {
  *domain = a.Get("--domain");
  return !domain->empty();
}

// A host file (--config): what every process of a deployment shares ("shards", "databases",
// "primary", "blob_store", "change_log", "meta", "pillows") and, optionally, "data_dir": this
// process's own directory (its lock, users, sync logs and pillow state). *host gets the shared
// part.
Status ReadHostFile(const std::string& path, commcare::InitOptions* o, std::string* data_dir,
                    json::object* host) {
  std::string text;
  boost::system::error_code ec;
  json::value v = ReadFile(path, &text) ? json::parse(text, ec) : json::value();
  if (ec || !v.is_object())
    return Status::InvalidArgument("--config " + path + " is not a readable JSON object");
  for (const auto& kv : v.get_object()) {
    const std::string_view k = kv.key();
    const json::value& x = kv.value();
    if ((k == "shards" || k == "databases") && x.is_int64()) {
      (k == "shards" ? o->shards : o->databases) = static_cast<int>(x.get_int64());
    } else if (k == "blob_store" && (x.is_string() || x.is_object())) {
      o->blob_store = x.is_string() ? std::string(x.get_string()) : json::serialize(x);
    } else if ((k == "primary" || k == "change_log" || k == "meta" || k == "pillows") &&
               x.is_object()) {
      (k == "primary"   ? o->primary
       : k == "meta"    ? o->meta
       : k == "pillows" ? o->pillows
                        : o->change_log) = json::serialize(x);
    } else if (k == "data_dir" && x.is_string()) {
      *data_dir = x.get_string();
      continue;
    } else if (k != "comment") {
      return Status::InvalidArgument(
          fmt::format("--config: \"{}\" is unknown or of the wrong type", k));
    }
    if (k != "comment") (*host)[k] = x;
  }
  return Status::Ok();
}

// For every command but init: --config HOST.json names the deployment; this process's data
// directory (--data, else the file's "data_dir") is initialised from it on first use, and
// must match it afterwards. Sets --data.
Status UseHostFile(Args* a) {
  commcare::InitOptions o;
  std::string dir;
  json::object host;
  CC_RETURN_IF_ERROR(ReadHostFile(a->Get("--config"), &o, &dir, &host));
  if (a->Has("--data")) dir = a->Get("--data");
  if (dir.empty())
    return Status::InvalidArgument("--config: give --data DIR or \"data_dir\" in the file");
  a->opts["--data"] = dir;
  std::string text;
  if (!ReadFile(dir + "/commcare.json", &text)) {
    o.data_dir = dir;
    return Engine::Init(o);
  }
  boost::system::error_code ec;
  json::value have = json::parse(text, ec);
  if (ec || !have.is_object()) return Status::DataLoss(dir + "/commcare.json is not JSON");
  for (const auto& [k, want] : host) {
    const json::value* got = have.get_object().if_contains(k);
    if (!got || *got != want)
      return Status::FailedPrecondition(
          fmt::format("{} was set up with another \"{}\" than {} has (use a new --data directory "
                      "for a new deployment)",
                      dir, std::string_view(k), a->Get("--config")));
  }
  return Status::Ok();
}

int CmdInit(const Args& a) {
  commcare::InitOptions o;
  if (a.Has("--config")) {  // flags given beside the host file win
    std::string dir;
    json::object host;
    if (auto s = ReadHostFile(a.Get("--config"), &o, &dir, &host); !s.ok()) return FailStatus(s);
    if (!a.Has("--data")) o.data_dir = dir;
  }
  if (a.Has("--data")) o.data_dir = a.Get("--data");
  if (o.data_dir.empty()) return Fail("--data DIR is required");
  try {
    if (a.Has("--shards")) o.shards = std::stoi(a.Get("--shards"));
    if (a.Has("--databases")) o.databases = std::stoi(a.Get("--databases"));
    if (a.Has("--blob-store")) o.blob_store = a.Get("--blob-store");
    if (a.Has("--change-log")) o.change_log = a.Get("--change-log");
    if (a.Has("--primary")) o.primary = a.Get("--primary");
    if (a.Has("--meta")) o.meta = a.Get("--meta");
    if (a.Has("--pillows")) o.pillows = a.Get("--pillows");
  } catch (const std::exception&) {
    return Fail("--shards and --databases take whole numbers");
  }
  Status s = Engine::Init(o);
  if (!s.ok()) return FailStatus(s);
  std::cout << json::serialize(json::object{{"data", o.data_dir},
                                            {"shards", o.shards},
                                            {"databases", o.databases},
                                            {"blob_store", o.blob_store}})
            << std::endl;
  return 0;
}

int CmdSubmit(const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  if (a.pos.empty()) return Fail("no FILE given to submit");
  auto eng = OpenEngine(a, false);
  if (!eng.ok()) return FailStatus(eng.status());
  int rc = 0;
  for (const auto& path : a.pos) {
    commcare::SubmitRequest req;
    req.domain = domain;
    req.user_id = a.Get("--user");
    req.openrosa_version = a.Get("--openrosa-version");
    req.content_type = a.Get("--content-type", "text/xml");
    if (!ReadFile(path, &req.body)) {
      std::cout << json::serialize(json::object{{"file", path}, {"error", "cannot read file"}})
                << std::endl;
      rc = 1;
      continue;
    }
    commcare::SubmitResponse r = (*eng)->Submit(req);
    json::object o{{"file", path},
                   {"status", r.http_status},
                   {"nature", r.nature},
                   {"message", r.message},
                   {"form_id", r.form_id},
                   {"state", r.state ? json::value(std::string(commcare::FormStateName(*r.state)))
                                     : json::value(nullptr)}};
    std::cout << json::serialize(o) << std::endl;  // endl flushes: the form is durable now
  }
  return rc;
}

int CmdForm(const std::string& verb, const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  if (a.pos.size() != 1) return Fail("form " + verb + " takes one FORM_ID");
  const std::string& id = a.pos[0];
  if (verb == "get") {
    auto eng = OpenEngine(a, true);
    if (!eng.ok()) return FailStatus(eng.status());
    if (a.Has("--xml")) {
      auto x = (*eng)->GetFormXml(domain, id);
      if (!x.ok()) return FailStatus(x.status());
      std::cout << *x;
      return 0;
    }
    auto f = (*eng)->GetForm(domain, id);
    if (!f.ok()) return FailStatus(f.status());
    std::cout << commcare::FormToJson(*f) << std::endl;
    return 0;
  }
  if (verb == "archive" || verb == "unarchive") {
    auto eng = OpenEngine(a, false);
    if (!eng.ok()) return FailStatus(eng.status());
    Status s =
        verb == "archive" ? (*eng)->ArchiveForm(domain, id) : (*eng)->UnarchiveForm(domain, id);
    if (!s.ok()) return FailStatus(s);
    auto f = (*eng)->GetForm(domain, id);
    if (!f.ok()) return FailStatus(f.status());
    std::cout << commcare::FormToJson(*f) << std::endl;
    return 0;
  }
  return Fail("unknown form command '" + verb + "'");
}

int CmdCase(const std::string& verb, const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  auto eng = OpenEngine(a, verb != "rebuild");
  if (!eng.ok()) return FailStatus(eng.status());
  if (verb == "list") {
    commcare::storage::CaseFilter f;
    f.domain = domain;
    f.type = a.Get("--type");
    f.owner_id = a.Get("--owner");
    if (a.Has("--closed")) {
      std::string c = a.Get("--closed");
      if (c != "true" && c != "false") return Fail("--closed takes true or false");
      f.closed = c == "true";
    }
    Status s = (*eng)->ListCases(f, [](const commcare::CaseRecord& c) {
      std::cout << commcare::CaseToJson(c) << "\n";
      return true;
    });
    std::cout.flush();
    return s.ok() ? 0 : FailStatus(s);
  }
  if (a.pos.size() != 1) return Fail("case " + verb + " takes one CASE_ID");
  const std::string& id = a.pos[0];
  if (verb == "get") {
    auto c = (*eng)->GetCase(domain, id);
    if (!c.ok()) return FailStatus(c.status());
    std::cout << commcare::CaseToJson(*c) << std::endl;
    return 0;
  }
  if (verb == "history") {
    auto h = (*eng)->CaseHistory(domain, id);
    if (!h.ok()) return FailStatus(h.status());
    for (const auto& t : *h) std::cout << commcare::CaseTransactionToJson(t) << "\n";
    std::cout.flush();
    return 0;
  }
  if (verb == "rebuild") {
    Status s = (*eng)->RebuildCase(domain, id);
    if (!s.ok()) return FailStatus(s);
    auto c = (*eng)->GetCase(domain, id);
    if (!c.ok()) return FailStatus(c.status());
    std::cout << commcare::CaseToJson(*c) << std::endl;
    return 0;
  }
  return Fail("unknown case command '" + verb + "'");
}

int CmdLedger(const Args& a) {
  std::string domain;
  if (!NeedDomain(a, &domain)) return Fail("--domain is required");
  if (a.pos.size() != 1) return Fail("ledger get takes one CASE_ID");
  auto eng = OpenEngine(a, true);
  if (!eng.ok()) return FailStatus(eng.status());
  auto l = (*eng)->GetLedger(domain, a.pos[0]);
  if (!l.ok()) return FailStatus(l.status());
  std::cout << commcare::LedgerToJson(*l) << std::endl;
  return 0;
}

// Opens the writer when nobody else holds it (so pending changes are relayed first), else a
// read-only engine beside the running writer.
commcare::Result<std::unique_ptr<Engine>> OpenWriterOrReader(const Args& a) {
  auto eng = OpenEngine(a, false);
  if (!eng.ok() && eng.status().code() == commcare::StatusCode::kFailedPrecondition)
    eng = OpenEngine(a, true);
  return eng;
}

int CmdCheck(const Args& a) {
  // Open as the writer when nobody else is, so that a crashed writer's pending cross-database
  // intents are rolled forward first; beside a running writer, check read-only.
  auto eng = OpenWriterOrReader(a);
  if (!eng.ok()) return FailStatus(eng.status());
  auto r = (*eng)->Check();
  if (!r.ok()) return FailStatus(r.status());
  json::array problems;
  for (const auto& p : r->problems) problems.push_back(json::string(p));
  json::object o{{"ok", r->problems.empty()},
                 {"forms", r->forms},
                 {"cases", r->cases},
                 {"outbox_rows", r->outbox_rows},
                 {"logged_changes", r->logged_changes},
                 {"pending_intents", r->pending_intents},
                 {"problems", problems}};
  std::cout << json::serialize(o) << std::endl;
  return r->problems.empty() ? 0 : 4;
}

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

int CmdChanges(const Args& a) {
  int64_t partition = -1, from = 0, limit = -1;
  if (a.Has("--partition") && (!ParseInt(a.Get("--partition"), &partition) || partition < 0))
    return Fail("--partition must be a non-negative integer");
  if (a.Has("--from") && (!ParseInt(a.Get("--from"), &from) || from < 0))
    return Fail("--from must be a non-negative offset");
  if (a.Has("--limit") && (!ParseInt(a.Get("--limit"), &limit) || limit < 0))
    return Fail("--limit must be a non-negative integer");
  auto eng = OpenWriterOrReader(a);
  if (!eng.ok()) return FailStatus(eng.status());
  auto* log = (*eng)->Changes();
  if (!log) return Fail("this data directory has no change log yet", 2);
  std::vector<std::string> topics;
  if (a.Has("--topic")) {
    topics.push_back(a.Get("--topic"));
  } else {
    auto t = log->Topics();
    if (!t.ok()) return FailStatus(t.status());
    topics = *t;
  }
  int64_t printed = 0;
  for (const auto& topic : topics) {
    auto parts = log->Partitions(topic);
    if (!parts.ok()) return FailStatus(parts.status());
    for (int p = 0; p < *parts; ++p) {
      if (partition >= 0 && p != partition) continue;
      for (int64_t off = from;;) {
        auto recs = log->Read(topic, p, off, 1000);
        if (!recs.ok()) return FailStatus(recs.status());
        if (recs->empty()) break;
        for (const auto& r : *recs) {
          if (limit >= 0 && printed >= limit) return 0;
          boost::system::error_code ec;
          json::value change = json::parse(r.value, ec);
          if (ec) change = json::string(r.value);
          json::object o{{"topic", r.topic},   {"partition", r.partition},
                         {"offset", r.offset}, {"timestamp", commcare::FormatTime(r.timestamp)},
                         {"key", r.key},       {"change", change}};
          std::cout << json::serialize(o) << "\n";
          ++printed;
        }
        off = recs->back().offset + 1;
      }
    }
  }
  std::cout.flush();
  return 0;
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty()) out.push_back(part);
  return out;
}

std::atomic<bool> g_stop{false};
extern "C" void OnStopSignal(int) { g_stop.store(true); }

int CmdPillows(const std::string& verb, const Args& a) {
  if (verb != "run" && verb != "status" && verb != "retries" && verb != "requeue" &&
      verb != "reconcile" && verb != "reset")
    return Fail("unknown pillows command '" + verb + "'");
  commcare::PillowHostOptions ho;
  ho.only = SplitCommas(a.Get("--only"));
  int64_t n = 1, k = 0;
  if (a.Has("--num-processes") && (!ParseInt(a.Get("--num-processes"), &n) || n < 1))
    return Fail("--num-processes must be a positive integer");
  if (a.Has("--process-num") && (!ParseInt(a.Get("--process-num"), &k) || k < 0 || k >= n))
    return Fail("--process-num must be in [0, --num-processes)");
  ho.num_processes = static_cast<int>(n);
  ho.process_num = static_cast<int>(k);
  ho.consumer_group = a.Get("--consumer-group");
  if (!ho.consumer_group.empty() && (a.Has("--num-processes") || a.Has("--once")))
    return Fail(
        "--consumer-group assigns partitions as members come and go: not with "
        "--num-processes or --once");
  std::string pillow = a.Get("--pillow");
  if (verb != "run" && verb != "status" && pillow.empty()) return Fail("--pillow NAME is required");
  if (!pillow.empty()) ho.only = {pillow};
  auto eng = OpenWriterOrReader(a);
  if (!eng.ok()) return FailStatus(eng.status());
  // Everything but run, reset and reconcile works beside running workers.
  ho.inspect_only = verb == "status" || verb == "retries" || verb == "requeue";
  auto host = commcare::PillowHost::Open(eng->get(), ho);
  if (!host.ok()) return FailStatus(host.status());
  auto& h = *host;
  if (verb == "run") {
    if (a.Has("--once")) {
      auto r = h->RunUntilCaughtUp();
      if (!r.ok()) return FailStatus(r.status());
      std::cout << json::serialize(json::object{{"processed", *r}}) << std::endl;
      return 0;
    }
    struct sigaction sa = {};
    sa.sa_handler = OnStopSignal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::cerr << "pillows running: ";
    for (const auto& name : h->Pillows()) std::cerr << name << " ";
    std::cerr << "(SIGTERM stops)" << std::endl;
    Status s = h->Run(g_stop);
    if (!s.ok()) return FailStatus(s);
    std::cout << json::serialize(json::object{{"stopped", true}}) << std::endl;
    return 0;
  }
  if (verb == "status") {
    auto st = h->GetStatus();
    if (!st.ok()) return FailStatus(st.status());
    std::string out;  // joined as written: lag_seconds stays a plain decimal
    for (const auto& p : *st) out += (out.empty() ? "[" : ",") + commcare::PillowStatusToJson(p);
    std::cout << (out.empty() ? "[" : out) << "]" << std::endl;
    return 0;
  }
  if (verb == "retries") {
    auto rs = h->Retries(pillow);
    if (!rs.ok()) return FailStatus(rs.status());
    for (const auto& e : *rs) std::cout << commcare::RetryEntryToJson(e) << "\n";
    std::cout.flush();
    return 0;
  }
  if (verb == "requeue") {
    auto r = h->Requeue(pillow, a.Get("--doc"), a.Has("--dead"));
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{{"requeued", *r}}) << std::endl;
    return 0;
  }
  if (verb == "reconcile") {
    auto r = h->Reconcile(pillow);
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{{"republished", *r}}) << std::endl;
    return 0;
  }
  Status s = h->Reset(pillow);
  if (!s.ok()) return FailStatus(s);
  std::cout << json::serialize(json::object{{"reset", pillow}}) << std::endl;
  return 0;
}

int CmdSearch(const Args& a) {
  commcare::CaseSearchQuery q;
  if (!NeedDomain(a, &q.domain)) return Fail("--domain is required");
  q.case_type = a.Get("--type");
  q.owner_id = a.Get("--owner");
  q.case_name = a.Get("--name");
  q.external_id = a.Get("--external-id");
  if (a.Has("--closed")) {
    std::string c = a.Get("--closed");
    if (c != "true" && c != "false") return Fail("--closed must be true or false");
    q.closed = c == "true";
  }
  auto [pb, pe] = a.multi.equal_range("--prop");
  for (auto it = pb; it != pe; ++it) {
    auto eq = it->second.find('=');
    if (eq == std::string::npos || eq == 0) return Fail("--prop must be key=value");
    q.equals.emplace_back(it->second.substr(0, eq), it->second.substr(eq + 1));
  }
  auto [rb, re] = a.multi.equal_range("--range");
  for (auto it = rb; it != re; ++it) {
    auto c1 = it->second.find(':');
    auto c2 = c1 == std::string::npos ? c1 : it->second.find(':', c1 + 1);
    if (c2 == std::string::npos) return Fail("--range must be key:op:value");
    q.ranges.push_back({it->second.substr(0, c1), it->second.substr(c1 + 1, c2 - c1 - 1),
                        it->second.substr(c2 + 1)});
  }
  q.text = a.Get("--text");
  q.cursor = a.Get("--cursor");
  int64_t limit = 20;
  if (a.Has("--limit") && !ParseInt(a.Get("--limit"), &limit))
    return Fail("--limit must be an integer");
  q.limit = static_cast<size_t>(std::max<int64_t>(0, limit));
  auto page = commcare::SearchCases(commcare::PillowStoreAt(a.Get("--data")), q);
  if (!page.ok()) return FailStatus(page.status());
  json::array cases;
  for (const auto& c : page->cases) cases.push_back(json::parse(c));
  std::cout << json::serialize(json::object{
                   {"cases", cases},
                   {"next", page->next_cursor.empty() ? json::value(nullptr)
                                                      : json::value(page->next_cursor)}})
            << std::endl;
  return 0;
}

int CmdUcr(const std::string& verb, const Args& a) {
  if (verb == "rows") {
    std::string domain;
    if (!NeedDomain(a, &domain)) return Fail("--domain is required");
    if (!a.Has("--table")) return Fail("--table is required");
    int64_t limit = 1000, offset = 0;
    if (a.Has("--limit") && (!ParseInt(a.Get("--limit"), &limit) || limit < 0))
      return Fail("--limit must be a non-negative integer");
    if (a.Has("--offset") && (!ParseInt(a.Get("--offset"), &offset) || offset < 0))
      return Fail("--offset must be a non-negative integer");
    auto rows =
        commcare::UcrRows(commcare::PillowStoreAt(a.Get("--data")), domain, a.Get("--table"),
                          static_cast<size_t>(limit), static_cast<size_t>(offset));
    if (!rows.ok()) return FailStatus(rows.status());
    for (const auto& r : *rows) std::cout << r << "\n";
    std::cout.flush();
    return 0;
  }
  if (verb != "load" && verb != "rebuild") return Fail("unknown ucr command '" + verb + "'");
  std::string config;
  if (verb == "load") {
    if (a.pos.size() != 1) return Fail("ucr load takes one CONFIG.json");
    if (!ReadFile(a.pos[0], &config)) return Fail("cannot read " + a.pos[0]);
  } else if (!a.Has("--domain") || !a.Has("--table")) {
    return Fail("--domain and --table are required");
  }
  auto eng = OpenWriterOrReader(a);
  if (!eng.ok()) return FailStatus(eng.status());
  commcare::PillowHostOptions ho;
  ho.only = {"ucr"};
  ho.inspect_only = true;  // beside a running ucr worker, which picks the change up
  auto host = commcare::PillowHost::Open(eng->get(), ho);
  if (!host.ok()) return FailStatus(host.status());
  auto r = verb == "load" ? (*host)->UcrLoad(config)
                          : (*host)->UcrRebuild(a.Get("--domain"), a.Get("--table"));
  if (!r.ok()) return FailStatus(r.status());
  std::cout << json::serialize(json::object{{"rows", *r}}) << std::endl;
  return 0;
}

commcare::Result<std::unique_ptr<commcare::meta::MetaStore>> OpenMeta(const std::string& data) {
  return commcare::meta::MetaStore::Open(commcare::meta::StoreAt(data, "meta.sqlite"));
}

std::string Env(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : def;
}

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

// The sync logs of the data directory (a file in it, or its shared "meta" database).
commcare::Result<std::unique_ptr<commcare::Sync>> OpenSync(Engine* eng, const std::string& data,
                                                           const std::string& cache_dir = "") {
  return commcare::Sync::Open(eng, commcare::meta::StoreAt(data, "synclogs.sqlite"), cache_dir);
}

// Opens the data directory's stores for writing, which applies their schema migrations (each
// versioned, under a lock, safe to run twice and beside running servers of other hosts).
int CmdMigrate(const Args& a) {
  EngineOptions o;
  o.data_dir = a.Get("--data");
  o.relay = false;
  auto eng = Engine::Open(o);
  if (!eng.ok()) return FailStatus(eng.status());
  auto meta = OpenMeta(o.data_dir);
  if (!meta.ok()) return FailStatus(meta.status());
  auto sync = OpenSync(eng->get(), o.data_dir);
  if (!sync.ok()) return FailStatus(sync.status());
  commcare::PillowHostOptions ho;  // the pillow databases' tables, without running them
  ho.inspect_only = true;
  auto pillows = commcare::PillowHost::Open(eng->get(), ho);
  if (!pillows.ok()) return FailStatus(pillows.status());
  std::cout << json::serialize(json::object{
                   {"data", o.data_dir}, {"databases", (*eng)->NumDatabases()}, {"migrated", true}})
            << std::endl;
  return 0;
}

// The default connection cap: the descriptor limit less room for the stores' files.
int MaxConnections() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1024;
  const auto n = static_cast<int64_t>(rl.rlim_cur);
  return static_cast<int>(std::clamp<int64_t>(n - 128, 16, 10'000));
}

int CmdServe(const Args& a) {
  namespace fs = std::filesystem;
  const std::string data = a.Get("--data");
  if (!fs::exists(data + "/commcare.json")) {
    commcare::InitOptions io;
    io.data_dir = data;
    if (auto s = Engine::Init(io); !s.ok()) return FailStatus(s);
  }
  // As PostgreSQL: no serving from a directory others can read (it holds Digest HA1s, API
  // key hashes and health data).
  std::error_code ec;
  const auto perms = fs::status(data, ec).permissions();
  if (!ec && (perms & (fs::perms::group_all | fs::perms::others_all)) != fs::perms::none)
    return Fail(
        fmt::format("data directory {} is open to group or others (mode {:04o}); it holds password "
                    "equivalents and health data: chmod 0700 {}",
                    data, static_cast<unsigned>(perms) & 0777, data));
  // Signals are taken by this thread (sigwait) only; every thread started below blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  auto eng = OpenEngine(a, false);
  if (!eng.ok()) return FailStatus(eng.status());
  auto meta = OpenMeta(data);
  if (!meta.ok()) return FailStatus(meta.status());
  // Domain, user, role, group, location and app changes go to the change log from now on
  // (with what CLI admin commands queued while no server ran).
  if (auto* log = (*eng)->Changes())
    if (auto s = (*meta)->SetChangeLog(log); !s.ok()) return FailStatus(s);
  if (auto s = FirstStart(meta->get()); !s.ok()) return FailStatus(s);
  commcare::server::App app(eng->get(), meta->get(), commcare::PillowStoreAt(data));
  auto sync = OpenSync(eng->get(), data, data + "/restore-cache");
  if (!sync.ok()) return FailStatus(sync.status());
  app.SetSync(sync->get());
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
  so.max_body_bytes = (*eng)->Options().max_body_bytes;
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
    auto h = commcare::PillowHost::Open(eng->get(), {});
    if (!h.ok()) return FailStatus(h.status());
    pillows = std::move(h).value();
    pillow_thread = std::thread([&] {
      if (auto s = pillows->Run(stop_pillows); !s.ok())
        std::cerr << "pillows stopped: " << s.ToString() << std::endl;
    });
  }
  app.SetPillows(pillows.get());
  auto server = commcare::http::Server::Start(
      so, [&app](const commcare::http::Request& r) { return app.Handle(r); },
      [&app](commcare::http::Request& head) { return app.Gate(head); });
  if (!server.ok()) {
    stop_pillows = true;
    if (pillow_thread.joinable()) pillow_thread.join();
    return FailStatus(server.status());
  }
  std::cout << json::serialize(json::object{
                   {"listening", fmt::format("{}:{}", so.listen.substr(0, so.listen.rfind(':')),
                                             (*server)->Port())},
                   {"scheme", so.tls_cert.empty() ? "http" : "https"},
                   {"data", data},
                   {"pillows", !a.Has("--no-pillows")}})
            << std::endl;
  int sig = 0;
  sigwait(&sigs, &sig);
  std::cerr << "stopping (signal " << sig << "): finishing requests in flight" << std::endl;
  (*server)->Stop();
  stop_pillows = true;
  if (pillow_thread.joinable()) pillow_thread.join();
  pillows.reset();
  std::cout << json::serialize(json::object{{"stopped", true}}) << std::endl;
  return 0;
}

// commcare restore: the OTA restore payload of a user, to stdout (sync logs kept beside the
// data, so the printed restore_id works as --since next time).
int CmdRestore(const Args& a) {
  if (!a.Has("--domain") || !a.Has("--user")) return Fail("--domain and --user are required");
  auto meta = OpenMeta(a.Get("--data"));
  if (!meta.ok()) return FailStatus(meta.status());
  auto user = (*meta)->GetUser(a.Get("--user"));
  if (!user.ok()) return FailStatus(user.status());
  if (!user->InDomain(a.Get("--domain")))
    return Fail("user " + user->username + " is not in domain " + a.Get("--domain"), 2);
  auto q = commcare::meta::MakeRestoreRequest(meta->get(), *user, a.Get("--domain"));
  if (!q.ok()) return FailStatus(q.status());
  q->since = a.Get("--since");
  q->version = a.Get("--version", "2.0");
  q->state = a.Get("--state");
  q->device_id = a.Get("--device-id");
  q->items = true;
  auto eng = OpenEngine(a, /*read_only=*/true);
  if (!eng.ok()) return FailStatus(eng.status());
  auto sync = OpenSync(eng->get(), a.Get("--data"));
  if (!sync.ok()) return FailStatus(sync.status());
  auto r = (*sync)->Restore(*q, [](int, std::string_view chunk) {
    std::cout.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    return std::cout ? commcare::Status::Ok() : commcare::Status::Unavailable("stdout closed");
  });
  std::cout << std::endl;
  if (!r.ok()) return FailStatus(r.status());
  std::cerr << json::serialize(json::object{{"status", r->http_status},
                                            {"restore_id", r->sync_id},
                                            {"cases", r->cases},
                                            {"footprint", r->footprint}})
            << std::endl;
  return r->http_status == 200 ? 0 : 3;
}

// commcare admin apikey create|list|revoke: a user's API keys (keys are shown once, at
// creation; a list shows ids, creation and expiry).
int CmdApiKey(const std::string& verb, commcare::meta::MetaStore* meta, const Args& a) {
  if (!a.Has("--username")) return Fail("--username is required");
  const std::string user = a.Get("--username");
  auto when = [](int64_t secs) -> json::value {
    return secs > 0 ? json::value(commcare::util::FormatIsoTime(secs * 1'000'000)) : nullptr;
  };
  if (verb == "create") {
    int64_t expires = 0;
    if (a.Has("--expires-days")) {
      int64_t days = 0;
      if (!ParseInt(a.Get("--expires-days"), &days) || days < 1 || days > 3650)
        return Fail("--expires-days must be a whole number of days, 1..3650");
      expires = commcare::util::NowMicros() / 1'000'000 + days * 86'400;
    }
    std::string id;
    auto k = meta->CreateApiKey(user, expires, &id);
    if (!k.ok()) return FailStatus(k.status());
    std::cout << json::serialize(json::object{
                     {"username", user}, {"key", *k}, {"id", id}, {"expires", when(expires)}})
              << std::endl;
    return 0;
  }
  if (verb == "list") {
    auto keys = meta->ListApiKeys(user);
    if (!keys.ok()) return FailStatus(keys.status());
    json::array out;
    for (const auto& k : *keys)
      out.push_back(
          json::object{{"id", k.id}, {"created", when(k.created)}, {"expires", when(k.expires)}});
    std::cout << json::serialize(json::object{{"username", user}, {"api_keys", out}}) << std::endl;
    return 0;
  }
  if (verb == "revoke") {
    if (a.Has("--id") == a.Has("--all")) return Fail("name a key with --id ID, or --all");
    if (Status s = meta->RevokeApiKey(user, a.Has("--all") ? "" : a.Get("--id")); !s.ok())
      return FailStatus(s);
    std::cout << json::serialize(json::object{{"username", user},
                                              {"revoked", a.Has("--all") ? "all" : a.Get("--id")}})
              << std::endl;
    return 0;
  }
  return Fail("unknown admin command 'apikey " + verb + "'");
}

int CmdAdmin(const std::string& verb, const Args& a) {
  auto meta = OpenMeta(a.Get("--data"));
  if (!meta.ok()) return FailStatus(meta.status());
  if (verb == "domain create") {
    if (a.pos.size() != 1) return Fail("admin domain create takes one NAME");
    commcare::meta::Domain d;
    d.name = a.pos[0];
    d.secure_submissions = !a.Has("--open-submissions");
    auto r = (*meta)->PutDomain(d);
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{{"domain", r->name}, {"rev", r->rev}}) << std::endl;
    return 0;
  }
  if (verb == "user create") {
    if (!a.Has("--username") || !a.Has("--password") || !a.Has("--domain"))
      return Fail("--username, --password and --domain are required");
    commcare::meta::User u;
    u.username = a.Get("--username");
    u.domains = {a.Get("--domain")};
    u.web_user = a.Has("--web") || a.Has("--superuser");
    u.is_superuser = a.Has("--superuser");
    auto& granted = u.permissions[u.domains.front()];
    granted = {std::string(commcare::meta::kEditData),
               std::string(commcare::meta::kMobileEndpoints)};
    if (u.web_user) {
      granted.emplace_back(commcare::meta::kAccessApi);
      granted.emplace_back(commcare::meta::kManageUsers);
    }
    if (auto old = (*meta)->GetUser(u.username); old.ok()) u.rev = old->rev;
    auto r = (*meta)->PutUser(u, a.Get("--password"));
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{
                     {"username", r->username}, {"user_id", r->user_id}, {"rev", r->rev}})
              << std::endl;
    return 0;
  }
  if (verb.rfind("apikey ", 0) == 0) return CmdApiKey(verb.substr(7), meta->get(), a);
  return Fail("unknown admin command '" + verb + "'");
}

}  // namespace

int main(int argc, char** argv) {
  umask(077);  // every file and directory the command makes is its owner's alone
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    std::cerr << kUsage << std::endl;
    return argc < 2 ? 1 : 0;
  }
  std::string cmd = argv[1];
  std::string verb;
  int start = 2;
  if ((cmd == "form" || cmd == "case" || cmd == "ledger" || cmd == "pillows" || cmd == "ucr") &&
      argc >= 3) {
    verb = argv[2];
    start = 3;
  } else if (cmd == "admin" && argc >= 4) {
    verb = std::string(argv[2]) + " " + argv[3];
    start = 4;
  }
  Args a;
  std::string err;
  if (!ParseArgs(argc, argv, start, &a, &err)) return Fail(err);
  if (cmd != "init" && a.Has("--config"))
    if (Status s = UseHostFile(&a); !s.ok()) return FailStatus(s);
  if (cmd != "init" && !a.Has("--data"))
    return Fail("--data DIR is required (or --config HOST.json)");
  try {
    if (cmd == "init") return CmdInit(a);
    if (cmd == "migrate") return CmdMigrate(a);
    if (cmd == "submit") return CmdSubmit(a);
    if (cmd == "form") return CmdForm(verb, a);
    if (cmd == "case") return CmdCase(verb, a);
    if (cmd == "ledger") return verb == "get" ? CmdLedger(a) : Fail("unknown ledger command");
    if (cmd == "check") return CmdCheck(a);
    if (cmd == "changes") return CmdChanges(a);
    if (cmd == "pillows") return CmdPillows(verb, a);
    if (cmd == "search") return CmdSearch(a);
    if (cmd == "ucr") return CmdUcr(verb, a);
    if (cmd == "restore") return CmdRestore(a);
    if (cmd == "serve") return CmdServe(a);
    if (cmd == "admin") return CmdAdmin(verb, a);
  } catch (const std::exception& e) {
    return Fail(std::string("internal error: ") + e.what());
  }
  return Fail("unknown command '" + cmd + "'; run `commcare --help`");
}
