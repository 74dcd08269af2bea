// The C ABI (include/commcare/c.h) over the C++ library: handles, JSON in and out, error codes.
// Every entry point is fenced: no exception leaves, failures become -code + cc_error_last().
#include <fmt/format.h>
#include <stdlib.h>

#include <atomic>
#include <boost/json.hpp>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "commcare/c.h"
#include "commcare/engine.h"
#include "commcare/host.h"
#include "commcare/log.h"
#include "commcare/pillows.h"
#include "commcare/sync.h"
#include "meta/meta_store.h"
#include "util/time.h"

namespace json = boost::json;
using commcare::Result;
using commcare::Status;
using commcare::StatusCode;

namespace {

// ---- errors -------------------------------------------------------------------------------

struct LastError {
  std::string message = "no error";
  cc_error e{CC_OK, nullptr};
};
thread_local LastError t_error;

int SetError(int code, std::string message) {
  t_error.message = std::move(message);
  t_error.e.code = code;
  return code;
}

int Report(const Status& s) {
  if (s.ok()) return SetError(CC_OK, "no error");
  return SetError(-static_cast<int>(s.code()), s.message());
}

StatusCode CodeOf(int rc) {
  int c = -rc;
  if (c <= 0 || c > static_cast<int>(StatusCode::kUnauthenticated)) return StatusCode::kInternal;
  return static_cast<StatusCode>(c);
}

// Runs f (returning Status), turning exceptions into CC_EINTERNAL / CC_ERESOURCE.
template <typename F>
int Fence(F&& f) noexcept {
  try {
    return Report(f());
  } catch (const std::bad_alloc&) {
    return SetError(CC_ERESOURCE, "out of memory");
  } catch (const std::exception& e) {
    return SetError(CC_EINTERNAL, fmt::format("internal error: {}", e.what()));
  } catch (...) {
    return SetError(CC_EINTERNAL, "internal error: unknown exception");
  }
}

// ---- arguments ----------------------------------------------------------------------------

bool ValidUtf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// A required (or optional: NULL -> "") UTF-8 string argument.
Status Arg(const char* p, const char* what, std::string* out, bool required = true) {
  if (!p) {
    if (required) return Status::InvalidArgument(fmt::format("{} is NULL", what));
    out->clear();
    return Status::Ok();
  }
  std::string_view v(p);
  if (!ValidUtf8(v)) return Status::InvalidArgument(fmt::format("{} is not valid UTF-8", what));
  if (required && v.empty()) return Status::InvalidArgument(fmt::format("{} is empty", what));
  out->assign(v);
  return Status::Ok();
}

// A JSON object argument (NULL -> {} when optional).
Status JsonArg(const char* p, const char* what, json::object* out, bool required = true) {
  if (!p) {
    if (required) return Status::InvalidArgument(fmt::format("{} is NULL", what));
    out->clear();
    return Status::Ok();
  }
  boost::system::error_code ec;
  json::value v = json::parse(p, ec);
  if (ec)
    return Status::InvalidArgument(fmt::format("{} is not valid JSON: {}", what, ec.message()));
  if (!v.is_object()) return Status::InvalidArgument(fmt::format("{} must be a JSON object", what));
  *out = std::move(v.get_object());
  return Status::Ok();
}

// Typed readers of an object's keys; a wrong type is InvalidArgument naming the key.
struct Reader {
  const json::object& o;
  const char* what;
  Status Str(std::string_view k, std::string* out) const {
    auto* v = o.if_contains(k);
    if (!v || v->is_null()) return Status::Ok();
    if (!v->is_string())
      return Status::InvalidArgument(fmt::format("{}: \"{}\" must be a string", what, k));
    out->assign(v->get_string());
    return Status::Ok();
  }
  Status Bool(std::string_view k, bool* out) const {
    auto* v = o.if_contains(k);
    if (!v || v->is_null()) return Status::Ok();
    if (!v->is_bool())
      return Status::InvalidArgument(fmt::format("{}: \"{}\" must be true or false", what, k));
    *out = v->get_bool();
    return Status::Ok();
  }
  template <typename T>
  Status Int(std::string_view k, T* out, int64_t lo, int64_t hi) const {
    auto* v = o.if_contains(k);
    if (!v || v->is_null()) return Status::Ok();
    if (!v->is_int64() && !v->is_uint64())
      return Status::InvalidArgument(fmt::format("{}: \"{}\" must be an integer", what, k));
    int64_t x = v->is_int64() ? v->get_int64() : static_cast<int64_t>(v->get_uint64());
    if (x < lo || x > hi)
      return Status::InvalidArgument(
          fmt::format("{}: \"{}\" must be between {} and {} (got {})", what, k, lo, hi, x));
    *out = static_cast<T>(x);
    return Status::Ok();
  }
  Status StrList(std::string_view k, std::vector<std::string>* out) const {
    auto* v = o.if_contains(k);
    if (!v || v->is_null()) return Status::Ok();
    if (!v->is_array())
      return Status::InvalidArgument(fmt::format("{}: \"{}\" must be a list of strings", what, k));
    out->clear();
    for (const auto& x : v->get_array()) {
      if (!x.is_string())
        return Status::InvalidArgument(
            fmt::format("{}: \"{}\" must be a list of strings", what, k));
      out->emplace_back(x.get_string());
    }
    return Status::Ok();
  }
  // InvalidArgument naming the first key not in allowed.
  Status Only(std::initializer_list<std::string_view> allowed) const {
    for (const auto& kv : o) {
      bool ok = false;
      for (auto a : allowed) ok = ok || a == kv.key();
      if (!ok)
        return Status::InvalidArgument(fmt::format("{}: unknown key \"{}\"", what, kv.key()));
    }
    return Status::Ok();
  }
};

// ---- results ------------------------------------------------------------------------------

char* Dup(std::string_view s) {
  char* p = static_cast<char*>(::malloc(s.size() + 1));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

Status Out(char** out, std::string_view s) {
  if (out) *out = Dup(s);
  return Status::Ok();
}

Status NeedOut(const void* out) {
  return out ? Status::Ok() : Status::InvalidArgument("out is NULL");
}

// Text that is JSON already.
const std::string& Verbatim(const std::string& s) { return s; }

// A JSON array of the items, each as to_json writes it (pre-serialized JSON text).
template <typename V, typename F>
std::string JsonArray(const V& items, F&& to_json) {
  std::string s = "[";
  for (const auto& x : items) {
    if (s.size() > 1) s += ',';
    s += to_json(x);
  }
  return s + "]";
}

std::string ChangeRecordJson(const commcare::storage::ChangeRecord& r) {
  std::string s = "{\"topic\":";
  s += json::serialize(json::string(r.topic));
  s += fmt::format(",\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":", r.partition,
                   r.offset, r.timestamp);
  s += json::serialize(json::string(r.key));
  s += ",\"change\":";
  s += r.value.empty() ? "null" : r.value;
  s += '}';
  return s;
}

}  // namespace

// ---- handles ------------------------------------------------------------------------------

struct cc_engine {
  std::shared_mutex mu;  // calls hold it shared; close holds it exclusively
  std::unique_ptr<commcare::Host> host;

  Status Meta(commcare::meta::MetaStore** out) {
    CC_ASSIGN_OR_RETURN(*out, host->Meta());
    return Status::Ok();
  }
  Status Syncer(commcare::Sync** out) {
    CC_ASSIGN_OR_RETURN(*out, host->Syncer());
    return Status::Ok();
  }
};

struct cc_pillows {
  cc_engine* owner = nullptr;
  std::unique_ptr<commcare::PillowHost> host;
  std::atomic<bool> stop{false};
};

namespace {

// Holds an open engine's lock for one call.
struct Use {
  std::shared_lock<std::shared_mutex> lock;
  commcare::Engine* engine = nullptr;
};
Status Open(cc_engine* e, Use* use) {
  if (!e) return Status::InvalidArgument("engine is NULL");
  use->lock = std::shared_lock(e->mu);
  if (!e->host) return Status::FailedPrecondition("the engine is closed");
  use->engine = e->host->engine();
  return Status::Ok();
}
Status Open(cc_pillows* p, Use* use) {
  if (!p) return Status::InvalidArgument("pillows is NULL");
  CC_RETURN_IF_ERROR(Open(p->owner, use));
  if (!p->host) return Status::FailedPrecondition("the pillow host is closed");
  return Status::Ok();
}

class CProcessor : public commcare::ChangeProcessor {
 public:
  CProcessor(cc_change_fn fn, void* payload) : fn_(fn), payload_(payload) {}
  Status Process(commcare::Engine&, const commcare::Change& c) override {
    std::string j = "{\"topic\":";
    j += json::serialize(json::string(c.topic));
    j += fmt::format(",\"partition\":{},\"offset\":{},\"timestamp\":{},\"change\":", c.partition,
                     c.offset, c.timestamp);
    j += commcare::ChangeMetaToJson(c.meta);
    j += '}';
    SetError(CC_OK, "no error");
    int rc = fn_(j.data(), j.size(), payload_);
    if (rc == 0) return Status::Ok();
    if (t_error.e.code == rc && rc < 0) return Status(CodeOf(rc), t_error.message);
    return Status::Internal(fmt::format("the processor returned {}", rc));
  }

 private:
  cc_change_fn fn_;
  void* payload_;
};

// The shape of the (domain, document id) calls: checks the out-param and arguments, runs fn on
// the open engine and hands its JSON out (kOut false: a call with no result, out unused).
template <bool kOut = true, typename F>
int DocCall(char** out, cc_engine* engine, const char* domain, const char* id, const char* id_name,
            F&& fn) {
  return Fence([&]() -> Status {
    Use use;
    if (kOut) {
      CC_RETURN_IF_ERROR(NeedOut(out));
      *out = nullptr;
    }
    CC_RETURN_IF_ERROR(Open(engine, &use));
    std::string d, i;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(id, id_name, &i));
    CC_ASSIGN_OR_RETURN(std::string json, fn(use.engine, d, i));
    return kOut ? Out(out, json) : Status::Ok();
  });
}

// The shape of the MetaStore calls: the out-param checked (required when kOutRequired, else
// NULL means "no result wanted"), the engine open, its MetaStore opened on first use; fn's JSON
// handed out.
template <bool kOutRequired, typename F>
int MetaCall(char** out, cc_engine* engine, F&& fn) {
  return Fence([&]() -> Status {
    if (kOutRequired) CC_RETURN_IF_ERROR(NeedOut(out));
    if (out) *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    commcare::meta::MetaStore* meta;
    CC_RETURN_IF_ERROR(engine->Meta(&meta));
    CC_ASSIGN_OR_RETURN(std::string json, fn(meta));
    if (out) *out = Dup(json);
    return Status::Ok();
  });
}

json::object DomainJson(const commcare::meta::Domain& d) {
  return {{"name", d.name}, {"secure_submissions", d.secure_submissions}, {"_rev", d.rev}};
}

}  // namespace

// ---- the ABI ------------------------------------------------------------------------------

extern "C" {

const cc_error* cc_error_last(void) {
  t_error.e.message = t_error.message.c_str();
  return &t_error.e;
}

int cc_error_set(int code, const char* message) {
  try {
    return SetError(code, message ? message : "");
  } catch (...) {
    return code;
  }
}

namespace {
// Forwards log records to a C callback.
class CLogger final : public commcare::Logger {
 public:
  CLogger(cc_log_fn fn, void* user, int min) : fn_(fn), user_(user), min_(min) {}
  void Log(commcare::LogLevel level, std::string_view message,
           std::span<const commcare::LogField> fields) override {
    if (static_cast<int>(level) < min_) return;
    json::object o;
    for (const auto& f : fields) o[f.key] = f.value;
    const std::string m(message), j = json::serialize(o);
    fn_(user_, static_cast<int>(level), m.c_str(), j.c_str());
  }

 private:
  cc_log_fn fn_;
  void* user_;
  int min_;
};
}  // namespace

int cc_set_logger(cc_log_fn fn, void* user, int min_level) {
  return Fence([&]() -> Status {
    if (min_level < 0 || min_level > 3)
      return Status::InvalidArgument(fmt::format("min_level must be 0..3 (got {})", min_level));
    commcare::SetLogger(fn ? std::make_shared<CLogger>(fn, user, min_level) : nullptr);
    return Status::Ok();
  });
}

void cc_version(int* major, int* minor, int* patch) {
  if (major) *major = CC_VERSION_MAJOR;
  if (minor) *minor = CC_VERSION_MINOR;
  if (patch) *patch = CC_VERSION_PATCH;
}

void cc_free(void* ptr) { ::free(ptr); }

int cc_engine_options_init(cc_engine_options* opts, unsigned int version) {
  return Fence([&] {
    if (!opts) return Status::InvalidArgument("opts is NULL");
    if (version != CC_ENGINE_OPTIONS_VERSION)
      return Status::InvalidArgument(
          fmt::format("cc_engine_options version {} is not supported (this library: {})", version,
                      CC_ENGINE_OPTIONS_VERSION));
    *opts = cc_engine_options CC_ENGINE_OPTIONS_INIT;
    return Status::Ok();
  });
}

int cc_submit_options_init(cc_submit_options* opts, unsigned int version) {
  return Fence([&] {
    if (!opts) return Status::InvalidArgument("opts is NULL");
    if (version != CC_SUBMIT_OPTIONS_VERSION)
      return Status::InvalidArgument(
          fmt::format("cc_submit_options version {} is not supported (this library: {})", version,
                      CC_SUBMIT_OPTIONS_VERSION));
    *opts = cc_submit_options CC_SUBMIT_OPTIONS_INIT;
    return Status::Ok();
  });
}

int cc_engine_open(cc_engine** out, const cc_engine_options* opts) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    if (!opts) return Status::InvalidArgument("opts is NULL");
    if (opts->version != CC_ENGINE_OPTIONS_VERSION)
      return Status::InvalidArgument(
          fmt::format("cc_engine_options version {} is not supported (this library: {})",
                      opts->version, CC_ENGINE_OPTIONS_VERSION));
    json::object cfg;
    CC_RETURN_IF_ERROR(JsonArg(opts->config_json, "config_json", &cfg));
    Reader r{cfg, "config"};
    CC_RETURN_IF_ERROR(r.Only({"backend", "data_dir", "create", "shards", "databases", "blob_store",
                               "durable", "strict_case_updates", "max_xml_bytes", "relay",
                               "read_only", "change_log", "primary", "meta", "pillows"}));
    std::string backend = "sqlite";
    CC_RETURN_IF_ERROR(r.Str("backend", &backend));
    commcare::HostOptions ho;
    commcare::EngineOptions& eo = ho.engine;
    bool create = false;
    CC_RETURN_IF_ERROR(r.Str("data_dir", &eo.data_dir));
    CC_RETURN_IF_ERROR(r.Bool("create", &create));
    CC_RETURN_IF_ERROR(r.Bool("durable", &eo.durable));
    CC_RETURN_IF_ERROR(r.Bool("strict_case_updates", &eo.strict_case_updates));
    CC_RETURN_IF_ERROR(r.Int("max_xml_bytes", &eo.max_xml_bytes, 1, int64_t{1} << 40));
    CC_RETURN_IF_ERROR(r.Bool("relay", &eo.relay));
    CC_RETURN_IF_ERROR(r.Bool("read_only", &eo.read_only));
    // The deployment's keys, checked by Deployment (which names a bad one).
    json::object shared;
    for (const char* key :
         {"shards", "databases", "blob_store", "change_log", "primary", "meta", "pillows"})
      if (const auto* v = cfg.if_contains(key)) shared[key] = *v;
    CC_ASSIGN_OR_RETURN(commcare::Deployment d,
                        commcare::Deployment::FromJson(json::serialize(shared), "config"));
    if (backend == "memory") {
      if (!eo.data_dir.empty())
        return Status::InvalidArgument("config: the memory backend takes no data_dir");
      eo.in_memory = true;
      if (cfg.contains("shards")) eo.memory_shards = d.shards;
      if (cfg.contains("databases")) eo.memory_databases = d.databases;
    } else if (backend == "sqlite") {
      if (eo.data_dir.empty())
        return Status::InvalidArgument("config: \"data_dir\" is required for the sqlite backend");
      // Set up on first use; keys given for an existing directory are checked against it.
      bool fresh = !std::filesystem::exists(std::filesystem::path(eo.data_dir) / "commcare.json");
      if (create && (fresh || !shared.empty())) ho.deployment = std::move(d);
    } else {
      return Status::InvalidArgument(
          fmt::format("config: unknown backend \"{}\" (this build has: memory, sqlite)", backend));
    }
    auto h = std::make_unique<cc_engine>();
    CC_ASSIGN_OR_RETURN(h->host, commcare::Host::Open(std::move(ho)));
    *out = h.release();
    return Status::Ok();
  });
}

int cc_engine_close(cc_engine* engine) {
  return Fence([&]() -> Status {
    if (!engine) return Status::InvalidArgument("engine is NULL");
    std::unique_lock l(engine->mu);
    engine->host.reset();
    return Status::Ok();
  });
}

void cc_engine_free(cc_engine* engine) {
  if (!engine) return;
  (void)cc_engine_close(engine);
  delete engine;
}

int cc_engine_submit(cc_submit_result** out, cc_engine* engine, const cc_submit_options* opts,
                     const void* body, size_t body_len) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    if (!opts) return Status::InvalidArgument("opts is NULL");
    if (opts->version != CC_SUBMIT_OPTIONS_VERSION)
      return Status::InvalidArgument(
          fmt::format("cc_submit_options version {} is not supported (this library: {})",
                      opts->version, CC_SUBMIT_OPTIONS_VERSION));
    if (!body && body_len) return Status::InvalidArgument("body is NULL");
    commcare::SubmitRequest req;
    CC_RETURN_IF_ERROR(Arg(opts->domain, "domain", &req.domain));
    CC_RETURN_IF_ERROR(Arg(opts->content_type, "content_type", &req.content_type, false));
    CC_RETURN_IF_ERROR(Arg(opts->user_id, "user_id", &req.user_id, false));
    CC_RETURN_IF_ERROR(Arg(opts->app_id, "app_id", &req.app_id, false));
    json::object headers;
    CC_RETURN_IF_ERROR(JsonArg(opts->headers_json, "headers_json", &headers, false));
    for (const auto& kv : headers) {
      if (!kv.value().is_string())
        return Status::InvalidArgument(
            fmt::format("headers_json: \"{}\" must be a string", kv.key()));
      std::string k(kv.key());
      for (auto& ch : k) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      std::string_view v = kv.value().get_string();
      if (k == "x-openrosa-version") {
        req.openrosa_version = v;
      } else if (k == "x-commcarehq-lastsynctoken") {
        req.last_sync_token = v;
      } else if (k == "x-submit-time") {
        if (!commcare::util::ParseIsoTime(v, &req.received_on))
          return Status::InvalidArgument(
              fmt::format("headers_json: X-Submit-Time \"{}\" is not an ISO time", v));
      } else if (k == "date") {
        commcare::util::ParseHttpDate(v, &req.date_header);
      } else if (k == "x-forwarded-for") {
        req.submit_ip = v.substr(0, v.find(','));
      }
    }
    req.body.assign(static_cast<const char*>(body), body_len);
    commcare::SubmitResponse r = use.engine->Submit(req);
    auto* res = static_cast<cc_submit_result*>(::calloc(1, sizeof(cc_submit_result)));
    if (!res) throw std::bad_alloc();
    *out = res;
    res->http_status = r.http_status;
    res->nature = Dup(r.nature);
    res->message = Dup(r.message);
    res->form_id = Dup(r.form_id);
    res->state = Dup(r.state ? commcare::FormStateName(*r.state) : "");
    res->body = Dup(r.body);
    if (r.http_status < 300) return Status::Ok();
    StatusCode code = StatusCode::kInvalidArgument;
    if (r.http_status == 413) code = StatusCode::kResourceExhausted;
    if (r.http_status == 401) code = StatusCode::kUnauthenticated;
    if (r.http_status == 403) code = StatusCode::kPermissionDenied;
    if (r.http_status == 503) code = StatusCode::kUnavailable;
    // A 5xx that stored an error record was the input's fault (invalid XML, a form that could
    // not be processed): CommCare answers 500 there, the library says InvalidArgument.
    const bool input_error = r.state && (*r.state == commcare::FormState::kSubmissionErrorLog ||
                                         *r.state == commcare::FormState::kError);
    if (r.http_status >= 500 && r.http_status != 503 && !input_error) code = StatusCode::kInternal;
    return Status(code, r.message.empty() ? r.nature : r.message);
  });
}

void cc_submit_result_free(cc_submit_result* r) {
  if (!r) return;
  ::free(r->nature);
  ::free(r->message);
  ::free(r->form_id);
  ::free(r->state);
  ::free(r->body);
  ::free(r);
}

int cc_engine_get_case(char** out, cc_engine* engine, const char* domain, const char* case_id) {
  return DocCall(
      out, engine, domain, case_id, "case_id",
      [](commcare::Engine* e, const std::string& d, const std::string& id) -> Result<std::string> {
        CC_ASSIGN_OR_RETURN(auto c, e->GetCase(d, id));
        return commcare::CaseToJson(c);
      });
}

int cc_engine_list_cases(char** out, cc_engine* engine, const char* filter_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    json::object f;
    CC_RETURN_IF_ERROR(JsonArg(filter_json, "filter_json", &f));
    Reader r{f, "filter_json"};
    CC_RETURN_IF_ERROR(r.Only(
        {"domain", "case_type", "owner_id", "closed", "include_deleted", "limit", "offset"}));
    commcare::storage::CaseFilter filter;
    CC_RETURN_IF_ERROR(r.Str("domain", &filter.domain));
    if (filter.domain.empty())
      return Status::InvalidArgument("filter_json: \"domain\" is required");
    CC_RETURN_IF_ERROR(r.Str("case_type", &filter.type));
    CC_RETURN_IF_ERROR(r.Str("owner_id", &filter.owner_id));
    if (f.contains("closed")) {
      bool c = false;
      CC_RETURN_IF_ERROR(r.Bool("closed", &c));
      filter.closed = c;
    }
    CC_RETURN_IF_ERROR(r.Bool("include_deleted", &filter.include_deleted));
    int64_t limit = 1000, offset = 0;
    CC_RETURN_IF_ERROR(r.Int("limit", &limit, 0, int64_t{1} << 40));
    CC_RETURN_IF_ERROR(r.Int("offset", &offset, 0, int64_t{1} << 40));
    std::string s = "[";
    int64_t seen = 0, taken = 0;
    CC_RETURN_IF_ERROR(use.engine->ListCases(filter, [&](const commcare::CaseRecord& c) {
      if (taken >= limit) return false;
      if (seen++ < offset) return true;
      if (taken++) s += ',';
      s += commcare::CaseToJson(c);
      return taken < limit;
    }));
    s += ']';
    return Out(out, s);
  });
}

int cc_engine_case_history(char** out, cc_engine* engine, const char* domain, const char* case_id) {
  return DocCall(
      out, engine, domain, case_id, "case_id",
      [](commcare::Engine* e, const std::string& d, const std::string& id) -> Result<std::string> {
        CC_ASSIGN_OR_RETURN(auto txs, e->CaseHistory(d, id));
        return JsonArray(txs, commcare::CaseTransactionToJson);
      });
}

int cc_engine_get_ledger(char** out, cc_engine* engine, const char* domain, const char* case_id) {
  return DocCall(
      out, engine, domain, case_id, "case_id",
      [](commcare::Engine* e, const std::string& d, const std::string& id) -> Result<std::string> {
        CC_ASSIGN_OR_RETURN(auto values, e->GetLedger(d, id));
        return commcare::LedgerToJson(values);
      });
}

int cc_engine_get_form(char** out, cc_engine* engine, const char* domain, const char* form_id) {
  return DocCall(
      out, engine, domain, form_id, "form_id",
      [](commcare::Engine* e, const std::string& d, const std::string& id) -> Result<std::string> {
        CC_ASSIGN_OR_RETURN(auto f, e->GetForm(d, id));
        return commcare::FormToJson(f);
      });
}

int cc_engine_get_attachment(void** out, size_t* out_len, cc_engine* engine, const char* domain,
                             const char* form_id, const char* name) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    CC_RETURN_IF_ERROR(NeedOut(out_len));
    *out_len = 0;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    std::string d, id, n;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(form_id, "form_id", &id));
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_ASSIGN_OR_RETURN(auto bytes, use.engine->GetFormAttachment(d, id, n));
    *out = Dup(bytes);
    *out_len = bytes.size();
    return Status::Ok();
  });
}

int cc_engine_archive_form(cc_engine* engine, const char* domain, const char* form_id) {
  return DocCall<false>(
      nullptr, engine, domain, form_id, "form_id",
      [](commcare::Engine* e, const std::string& d, const std::string& id) -> Result<std::string> {
        CC_RETURN_IF_ERROR(e->ArchiveForm(d, id));
        return std::string();
      });
}

int cc_engine_unarchive_form(cc_engine* engine, const char* domain, const char* form_id) {
  return DocCall<false>(
      nullptr, engine, domain, form_id, "form_id",
      [](commcare::Engine* e, const std::string& d, const std::string& id) -> Result<std::string> {
        CC_RETURN_IF_ERROR(e->UnarchiveForm(d, id));
        return std::string();
      });
}

int cc_engine_relay(cc_engine* engine) {
  return Fence([&]() -> Status {
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    return use.engine->RelayChanges();
  });
}

int cc_engine_topics(char** out, cc_engine* engine) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    auto* log = use.engine->Changes();
    if (!log) return Out(out, "[]");
    CC_ASSIGN_OR_RETURN(auto topics, log->Topics());
    json::array a;
    for (const auto& t : topics) {
      CC_ASSIGN_OR_RETURN(int n, log->Partitions(t));
      json::array parts;
      for (int p = 0; p < n; ++p) {
        CC_ASSIGN_OR_RETURN(int64_t start, log->StartOffset(t, p));
        CC_ASSIGN_OR_RETURN(int64_t end, log->EndOffset(t, p));
        parts.push_back(json::object{{"partition", p}, {"start", start}, {"end", end}});
      }
      a.push_back(json::object{{"topic", t}, {"partitions", std::move(parts)}});
    }
    return Out(out, json::serialize(a));
  });
}

int cc_engine_read_changes(char** out, cc_engine* engine, const char* topic, int partition,
                           int64_t from, size_t max) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    std::string t;
    CC_RETURN_IF_ERROR(Arg(topic, "topic", &t));
    if (partition < 0) return Status::InvalidArgument("partition is negative");
    auto* log = use.engine->Changes();
    if (!log) return Status::NotFound(fmt::format("no topic {}: the change log is empty", t));
    CC_ASSIGN_OR_RETURN(auto records, log->Read(t, partition, from < 0 ? 0 : from, max));
    return Out(out, JsonArray(records, ChangeRecordJson));
  });
}

namespace {

Status RestoreImpl(cc_engine* engine, const char* request_json, char** out_result,
                   const std::function<int(std::string_view)>& write) {
  Use use;
  CC_RETURN_IF_ERROR(Open(engine, &use));
  json::object q;
  CC_RETURN_IF_ERROR(JsonArg(request_json, "request_json", &q));
  Reader r{q, "request_json"};
  CC_RETURN_IF_ERROR(r.Only({"domain", "username", "since", "state", "version", "items",
                             "device_id", "app_id", "overwrite_cache"}));
  std::string domain, username;
  CC_RETURN_IF_ERROR(r.Str("domain", &domain));
  CC_RETURN_IF_ERROR(r.Str("username", &username));
  if (domain.empty()) return Status::InvalidArgument("request_json: \"domain\" is required");
  if (username.empty()) return Status::InvalidArgument("request_json: \"username\" is required");
  commcare::meta::MetaStore* meta;
  CC_RETURN_IF_ERROR(engine->Meta(&meta));
  commcare::Sync* sync;
  CC_RETURN_IF_ERROR(engine->Syncer(&sync));
  auto user = meta->GetUser(username);
  if (!user.ok() || !user->InDomain(domain) || !user->is_active)
    return Status::NotFound(fmt::format("no active user {} in domain {}", username, domain));
  CC_ASSIGN_OR_RETURN(auto req, commcare::meta::MakeRestoreRequest(meta, *user, domain));
  CC_RETURN_IF_ERROR(r.Str("since", &req.since));
  CC_RETURN_IF_ERROR(r.Str("state", &req.state));
  CC_RETURN_IF_ERROR(r.Str("version", &req.version));
  CC_RETURN_IF_ERROR(r.Bool("items", &req.items));
  CC_RETURN_IF_ERROR(r.Str("device_id", &req.device_id));
  CC_RETURN_IF_ERROR(r.Str("app_id", &req.app_id));
  CC_RETURN_IF_ERROR(r.Bool("overwrite_cache", &req.overwrite_cache));
  bool stopped = false;
  auto res = sync->Restore(req, [&](int status, std::string_view chunk) -> Status {
    if (status != 200) return Status::Ok();  // the error payload: reported as a code instead
    if (write(chunk) != 0) {
      stopped = true;
      return Status::Aborted("the write callback stopped the restore");
    }
    return Status::Ok();
  });
  if (!res.ok()) return res.status();
  if (res->http_status == 412) return Status::FailedPrecondition(res->message);
  if (res->http_status != 200) return Status::InvalidArgument(res->message);
  if (out_result)
    *out_result = Dup(json::serialize(json::object{{"sync_id", res->sync_id},
                                                   {"cases", res->cases},
                                                   {"ledgers", res->ledgers},
                                                   {"footprint", res->footprint}}));
  return Status::Ok();
}

}  // namespace

int cc_engine_restore(char** out_result, cc_engine* engine, const char* request_json,
                      cc_write_fn write, void* payload) {
  return Fence([&]() -> Status {
    if (out_result) *out_result = nullptr;
    if (!write) return Status::InvalidArgument("write is NULL");
    return RestoreImpl(engine, request_json, out_result, [&](std::string_view chunk) {
      return write(chunk.data(), chunk.size(), payload);
    });
  });
}

int cc_engine_restore_buffer(char** out, size_t* out_len, cc_engine* engine,
                             const char* request_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    CC_RETURN_IF_ERROR(NeedOut(out_len));
    *out_len = 0;
    std::string buf;
    CC_RETURN_IF_ERROR(RestoreImpl(engine, request_json, nullptr, [&](std::string_view chunk) {
      buf.append(chunk);
      return 0;
    }));
    *out = Dup(buf);
    *out_len = buf.size();
    return Status::Ok();
  });
}

int cc_engine_create_domain(char** out, cc_engine* engine, const char* domain_json) {
  return MetaCall<false>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(domain_json, "domain_json", &o));
    Reader r{o, "domain_json"};
    CC_RETURN_IF_ERROR(r.Only({"name", "secure_submissions"}));
    commcare::meta::Domain d;
    CC_RETURN_IF_ERROR(r.Str("name", &d.name));
    CC_RETURN_IF_ERROR(r.Bool("secure_submissions", &d.secure_submissions));
    if (d.name.empty()) return Status::InvalidArgument("domain_json: \"name\" is required");
    if (meta->GetDomain(d.name).ok())
      return Status::AlreadyExists(fmt::format("domain {} exists", d.name));
    CC_ASSIGN_OR_RETURN(auto stored, meta->PutDomain(d));
    return json::serialize(DomainJson(stored));
  });
}

int cc_engine_list_domains(char** out, cc_engine* engine) {
  return MetaCall<true>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto ds, meta->ListDomains());
    json::array a;
    for (const auto& d : ds) a.push_back(DomainJson(d));
    return json::serialize(a);
  });
}

int cc_engine_put_user(char** out, cc_engine* engine, const char* user_json, const char* password) {
  return MetaCall<false>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(user_json, "user_json", &o));
    std::string pw;
    CC_RETURN_IF_ERROR(Arg(password, "password", &pw, false));
    Reader r{o, "user_json"};
    std::string username, domain;
    CC_RETURN_IF_ERROR(r.Str("username", &username));
    if (username.empty()) return Status::InvalidArgument("user_json: \"username\" is required");
    commcare::meta::User u;
    auto old = meta->GetUser(username);
    if (old.ok()) {
      u = *old;
      int64_t rev = -1;
      CC_RETURN_IF_ERROR(r.Int("_rev", &rev, 0, int64_t{1} << 62));
      if (rev < 0)
        return Status::InvalidArgument(
            fmt::format("user_json: user {} exists; \"_rev\" (the revision read) is required to "
                        "update it",
                        username));
      u.rev = rev;
    } else {
      u.username = username;
    }
    CC_RETURN_IF_ERROR(r.StrList("domains", &u.domains));
    CC_RETURN_IF_ERROR(r.Bool("is_superuser", &u.is_superuser));
    if (u.domains.empty() && !u.is_superuser)
      return Status::InvalidArgument("user_json: \"domains\" must name at least one domain");
    domain = u.domains.empty() ? "" : u.domains.front();
    if (!old.ok())  // a new user's default grants, in each of its domains
      for (const auto& d : u.domains)
        u.permissions[d] = {std::string(commcare::meta::kEditData),
                            std::string(commcare::meta::kMobileEndpoints)};
    json::object rest = o;
    rest.erase("domains");
    rest.erase("is_superuser");
    std::string field_pw;
    CC_RETURN_IF_ERROR(commcare::meta::ApplyUserFields(rest, domain, &u, &field_pw));
    if (!field_pw.empty() && pw.empty()) pw = field_pw;
    if (!old.ok() && pw.empty())
      return Status::InvalidArgument("a password is required to create a user");
    CC_ASSIGN_OR_RETURN(auto stored, meta->PutUser(u, pw));
    return json::serialize(commcare::meta::UserJson(stored));
  });
}

int cc_engine_get_user(char** out, cc_engine* engine, const char* username) {
  return MetaCall<true>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    std::string name;
    CC_RETURN_IF_ERROR(Arg(username, "username", &name));
    CC_ASSIGN_OR_RETURN(auto u, meta->GetUser(name));
    return json::serialize(commcare::meta::UserJson(u));
  });
}

int cc_engine_list_users(char** out, cc_engine* engine, const char* domain) {
  return MetaCall<true>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    std::string d;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_ASSIGN_OR_RETURN(auto us, meta->ListUsers(d));
    json::array a;
    for (const auto& u : us) a.push_back(commcare::meta::UserJson(u));
    return json::serialize(a);
  });
}

int cc_engine_authenticate(char** out, cc_engine* engine, const char* username,
                           const char* password) {
  return MetaCall<false>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    std::string name, pw;
    CC_RETURN_IF_ERROR(Arg(username, "username", &name));
    CC_RETURN_IF_ERROR(Arg(password, "password", &pw));
    CC_ASSIGN_OR_RETURN(auto u, meta->Authenticate(name, pw));
    return json::serialize(commcare::meta::UserJson(u));
  });
}

// ---- pillows ------------------------------------------------------------------------------

int cc_pillows_open(cc_pillows** out, cc_engine* engine, const char* options_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(options_json, "options_json", &o, false));
    Reader r{o, "options_json"};
    CC_RETURN_IF_ERROR(r.Only({"dir", "builtin", "only", "num_processes", "process_num",
                               "inspect_only", "consumer_group"}));
    commcare::PillowHostOptions po;
    CC_RETURN_IF_ERROR(r.Str("dir", &po.dir));
    CC_RETURN_IF_ERROR(r.Bool("builtin", &po.builtin));
    CC_RETURN_IF_ERROR(r.StrList("only", &po.only));
    CC_RETURN_IF_ERROR(r.Int("num_processes", &po.num_processes, 1, 1024));
    CC_RETURN_IF_ERROR(r.Int("process_num", &po.process_num, 0, 1023));
    CC_RETURN_IF_ERROR(r.Bool("inspect_only", &po.inspect_only));
    CC_RETURN_IF_ERROR(r.Str("consumer_group", &po.consumer_group));
    auto h = std::make_unique<cc_pillows>();
    h->owner = engine;
    CC_ASSIGN_OR_RETURN(auto host, engine->host->OpenPillows(po));
    h->host = std::move(host);
    *out = h.release();
    return Status::Ok();
  });
}

void cc_pillows_free(cc_pillows* p) {
  if (!p) return;
  try {
    p->host.reset();  // an in-memory engine's temp dir goes with it
  } catch (...) {
  }
  delete p;
}

int cc_pillows_add(cc_pillows* p, const char* config_json, cc_change_fn fn, void* payload) {
  return Fence([&]() -> Status {
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    if (!fn) return Status::InvalidArgument("fn is NULL");
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(config_json, "config_json", &o));
    Reader r{o, "config_json"};
    CC_RETURN_IF_ERROR(r.Only({"name", "topics", "chunk_size", "max_wait_ms", "checkpoint_every",
                               "max_attempts", "retry_delay_ms"}));
    commcare::PillowConfig c;
    CC_RETURN_IF_ERROR(r.Str("name", &c.name));
    if (c.name.empty()) return Status::InvalidArgument("config_json: \"name\" is required");
    CC_RETURN_IF_ERROR(r.StrList("topics", &c.topics));
    if (c.topics.empty()) return Status::InvalidArgument("config_json: \"topics\" is required");
    CC_RETURN_IF_ERROR(r.Int("chunk_size", &c.chunk_size, 1, 100000));
    CC_RETURN_IF_ERROR(r.Int("max_wait_ms", &c.max_wait_ms, 0, 3600000));
    CC_RETURN_IF_ERROR(r.Int("checkpoint_every", &c.checkpoint_every, 1, int64_t{1} << 40));
    CC_RETURN_IF_ERROR(r.Int("max_attempts", &c.max_attempts, 1, 1000));
    int64_t delay_ms = c.retry_delay_us / 1000;
    CC_RETURN_IF_ERROR(r.Int("retry_delay_ms", &delay_ms, 0, int64_t{1} << 40));
    c.retry_delay_us = delay_ms * 1000;
    return p->host->AddPillow(c, std::make_shared<CProcessor>(fn, payload));
  });
}

int cc_pillows_run_until_caught_up(int64_t* out_processed, cc_pillows* p) {
  return Fence([&]() -> Status {
    if (out_processed) *out_processed = 0;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    if (!p->owner->host->read_only()) CC_RETURN_IF_ERROR(use.engine->RelayChanges());
    CC_ASSIGN_OR_RETURN(int64_t n, p->host->RunUntilCaughtUp());
    if (out_processed) *out_processed = n;
    return Status::Ok();
  });
}

int cc_pillows_run(cc_pillows* p) {
  return Fence([&]() -> Status {
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    Status s = p->host->Run(p->stop);
    p->stop = false;
    return s;
  });
}

int cc_pillows_stop(cc_pillows* p) {
  return Fence([&]() -> Status {
    if (!p) return Status::InvalidArgument("pillows is NULL");
    p->stop = true;
    return Status::Ok();
  });
}

int cc_pillows_status(char** out, cc_pillows* p) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    CC_ASSIGN_OR_RETURN(auto statuses, p->host->GetStatus());
    return Out(out, JsonArray(statuses, commcare::PillowStatusToJson));
  });
}

int cc_pillows_retries(char** out, cc_pillows* p, const char* pillow) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    std::string name;
    CC_RETURN_IF_ERROR(Arg(pillow, "pillow", &name));
    CC_ASSIGN_OR_RETURN(auto entries, p->host->Retries(name));
    return Out(out, JsonArray(entries, commcare::RetryEntryToJson));
  });
}

int cc_pillows_requeue(int64_t* out_count, cc_pillows* p, const char* pillow, const char* doc_id,
                       int include_dead) {
  return Fence([&]() -> Status {
    if (out_count) *out_count = 0;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    std::string name, doc;
    CC_RETURN_IF_ERROR(Arg(pillow, "pillow", &name));
    CC_RETURN_IF_ERROR(Arg(doc_id, "doc_id", &doc, false));
    CC_ASSIGN_OR_RETURN(int64_t n, p->host->Requeue(name, doc, include_dead != 0));
    if (out_count) *out_count = n;
    return Status::Ok();
  });
}

int cc_pillows_search(char** out, cc_pillows* p, const char* query_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(query_json, "query_json", &o));
    Reader r{o, "query_json"};
    CC_RETURN_IF_ERROR(r.Only({"domain", "case_type", "owner_id", "closed", "case_name",
                               "external_id", "properties", "ranges", "text", "limit", "cursor"}));
    commcare::CaseSearchQuery q;
    CC_RETURN_IF_ERROR(r.Str("domain", &q.domain));
    if (q.domain.empty()) return Status::InvalidArgument("query_json: \"domain\" is required");
    CC_RETURN_IF_ERROR(r.Str("case_type", &q.case_type));
    CC_RETURN_IF_ERROR(r.Str("owner_id", &q.owner_id));
    if (o.contains("closed") && !o.at("closed").is_null()) {
      bool c = false;
      CC_RETURN_IF_ERROR(r.Bool("closed", &c));
      q.closed = c;
    }
    CC_RETURN_IF_ERROR(r.Str("case_name", &q.case_name));
    CC_RETURN_IF_ERROR(r.Str("external_id", &q.external_id));
    CC_RETURN_IF_ERROR(r.Str("text", &q.text));
    CC_RETURN_IF_ERROR(r.Str("cursor", &q.cursor));
    CC_RETURN_IF_ERROR(r.Int("limit", &q.limit, 1, 5000));
    if (auto* props = o.if_contains("properties")) {
      if (!props->is_object())
        return Status::InvalidArgument("query_json: \"properties\" must be an object");
      for (const auto& kv : props->get_object()) {
        if (!kv.value().is_string())
          return Status::InvalidArgument(
              fmt::format("query_json: properties.{} must be a string", kv.key()));
        q.equals.emplace_back(std::string(kv.key()), std::string(kv.value().get_string()));
      }
    }
    if (auto* ranges = o.if_contains("ranges")) {
      if (!ranges->is_array())
        return Status::InvalidArgument("query_json: \"ranges\" must be a list");
      for (const auto& x : ranges->get_array()) {
        if (!x.is_object())
          return Status::InvalidArgument(
              "query_json: each range must be {\"property\", \"op\", \"value\"}");
        Reader rr{x.get_object(), "query_json range"};
        CC_RETURN_IF_ERROR(rr.Only({"property", "op", "value"}));
        commcare::CaseSearchQuery::Range range;
        CC_RETURN_IF_ERROR(rr.Str("property", &range.property));
        CC_RETURN_IF_ERROR(rr.Str("op", &range.op));
        CC_RETURN_IF_ERROR(rr.Str("value", &range.value));
        q.ranges.push_back(std::move(range));
      }
    }
    CC_ASSIGN_OR_RETURN(auto page, commcare::SearchCases(p->host->Store(), q));
    return Out(out, "{\"cases\":" + JsonArray(page.cases, Verbatim) + ",\"next_cursor\":" +
                        json::serialize(json::string(page.next_cursor)) + "}");
  });
}

int cc_pillows_list_forms(char** out, cc_pillows* p, const char* query_json) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(query_json, "query_json", &o));
    Reader r{o, "query_json"};
    CC_RETURN_IF_ERROR(r.Only({"domain", "xmlns", "app_id", "user_id", "received_on_start",
                               "received_on_end", "include_archived", "limit", "offset"}));
    commcare::FormListQuery q;
    CC_RETURN_IF_ERROR(r.Str("domain", &q.domain));
    if (q.domain.empty()) return Status::InvalidArgument("query_json: \"domain\" is required");
    CC_RETURN_IF_ERROR(r.Str("xmlns", &q.xmlns));
    CC_RETURN_IF_ERROR(r.Str("app_id", &q.app_id));
    CC_RETURN_IF_ERROR(r.Str("user_id", &q.user_id));
    for (auto [key, dst] : {std::pair{"received_on_start", &q.received_from},
                            std::pair{"received_on_end", &q.received_to}}) {
      std::string t;
      CC_RETURN_IF_ERROR(r.Str(key, &t));
      if (!t.empty() && !commcare::util::ParseIsoTime(t, dst))
        return Status::InvalidArgument(
            fmt::format("query_json: \"{}\" is not an ISO time: {}", key, t));
    }
    CC_RETURN_IF_ERROR(r.Bool("include_archived", &q.include_archived));
    CC_RETURN_IF_ERROR(r.Int("limit", &q.limit, 1, 1000));
    CC_RETURN_IF_ERROR(r.Int("offset", &q.offset, 0, int64_t{1} << 40));
    CC_ASSIGN_OR_RETURN(auto page, commcare::ListForms(p->host->Store(), q));
    return Out(out, "{\"forms\":" + JsonArray(page.forms, Verbatim) +
                        fmt::format(",\"total_count\":{}}}", page.total_count));
  });
}

int cc_pillows_ucr_load(int64_t* out_rows, cc_pillows* p, const char* config_json) {
  return Fence([&]() -> Status {
    if (out_rows) *out_rows = 0;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    std::string cfg;
    CC_RETURN_IF_ERROR(Arg(config_json, "config_json", &cfg));
    CC_ASSIGN_OR_RETURN(int64_t n, p->host->UcrLoad(cfg));
    if (out_rows) *out_rows = n;
    return Status::Ok();
  });
}

int cc_pillows_ucr_rows(char** out, cc_pillows* p, const char* domain, const char* table_id,
                        size_t limit, size_t offset) {
  return Fence([&]() -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(p, &use));
    std::string d, t;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(table_id, "table_id", &t));
    CC_ASSIGN_OR_RETURN(auto rows, commcare::UcrRows(p->host->Store(), d, t, limit, offset));
    return Out(out, JsonArray(rows, Verbatim));
  });
}

}  // extern "C"
