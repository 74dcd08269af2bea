// The C ABI (include/commcare/c.h) over the C++ library: handles, JSON in and out, error codes.
// Every entry point is fenced: no exception leaves, failures become -code + cc_error_last().
// This file: errors, arguments and results (c_api_internal.h), version, logger, engine open and
// close. c_api_engine.cc, c_api_admin.cc and c_api_pillows.cc hold the rest of the ABI.
#include <fmt/format.h>
#include <stdlib.h>

#include <boost/json.hpp>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "c_api_internal.h"
#include "commcare/c.h"
#include "commcare/engine.h"
#include "commcare/host.h"
#include "commcare/log.h"

namespace json = boost::json;
using commcare::Result;
using commcare::Status;
using commcare::StatusCode;
using commcare::capi::Fence;
using commcare::capi::JsonArg;
using commcare::capi::NeedOut;
using commcare::capi::Reader;
using commcare::capi::SetError;
using commcare::capi::t_error;

namespace commcare::capi {

// ---- errors -------------------------------------------------------------------------------

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

// ---- arguments ----------------------------------------------------------------------------

namespace {

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

}  // namespace

// A required (or optional: NULL -> "") UTF-8 string argument.
Status Arg(const char* p, const char* what, std::string* out, bool required) {
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
Status JsonArg(const char* p, const char* what, json::object* out, bool required) {
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

// ---- handles in use -----------------------------------------------------------------------

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

}  // namespace commcare::capi

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

}  // extern "C"
