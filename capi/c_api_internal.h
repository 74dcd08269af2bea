// What the C ABI's files share (internal to capi/): the handles, the error fence, argument and
// result helpers. c_api.cc: errors, version, logger, engine open/close (and the helpers below);
// c_api_engine.cc: submissions, cases, forms, the change log, restore; c_api_admin.cc: domains
// and users; c_api_pillows.cc: the pillow host, case search, forms list, UCR; c_api_tasks.cc:
// the task queue and worker pools; c_api_exports.cc: exports and scheduled reports.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <boost/json.hpp>
#include <initializer_list>
#include <memory>
#include <new>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/c.h"
#include "commcare/engine.h"
#include "commcare/host.h"
#include "commcare/pillows.h"
#include "commcare/status.h"
#include "commcare/sync.h"
#include "meta/meta_store.h"

// ---- handles ------------------------------------------------------------------------------

struct cc_engine {
  std::shared_mutex mu;  // calls hold it shared; close holds it exclusively
  std::unique_ptr<commcare::Host> host;

  commcare::Status Meta(commcare::meta::MetaStore** out) {
    CC_ASSIGN_OR_RETURN(*out, host->Meta());
    return commcare::Status::Ok();
  }
  commcare::Status Syncer(commcare::Sync** out) {
    CC_ASSIGN_OR_RETURN(*out, host->Syncer());
    return commcare::Status::Ok();
  }
};

struct cc_pillows {
  cc_engine* owner = nullptr;
  std::unique_ptr<commcare::PillowHost> host;
  std::atomic<bool> stop{false};
};

namespace commcare::capi {

namespace json = boost::json;

// ---- errors (c_api.cc) ---------------------------------------------------------------------

struct LastError {
  std::string message = "no error";
  cc_error e{CC_OK, nullptr};
};
// This thread's last error, as cc_error_last() hands it out.
extern thread_local LastError t_error;

// Sets this thread's last error; returns code.
int SetError(int code, std::string message);
// Sets the last error from s (CC_OK when ok); returns 0 or -code.
int Report(const Status& s);
// The StatusCode of a negative return code (kInternal for one that is not a code).
StatusCode CodeOf(int rc);

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

// ---- arguments (c_api.cc) ------------------------------------------------------------------

// A required (or optional: NULL -> "") UTF-8 string argument.
Status Arg(const char* p, const char* what, std::string* out, bool required = true);

// A JSON object argument (NULL -> {} when optional).
Status JsonArg(const char* p, const char* what, json::object* out, bool required = true);

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

// ---- results (c_api.cc) --------------------------------------------------------------------

// A malloc'd copy of s, NUL-terminated (for cc_free); throws std::bad_alloc.
char* Dup(std::string_view s);
// *out = Dup(s) when out is not NULL.
Status Out(char** out, std::string_view s);
// InvalidArgument when the out-param is NULL.
Status NeedOut(const void* out);
// Text that is JSON already.
const std::string& Verbatim(const std::string& s);

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

// ---- handles in use (c_api.cc) -------------------------------------------------------------

// Holds an open engine's lock for one call.
struct Use {
  std::shared_lock<std::shared_mutex> lock;
  commcare::Engine* engine = nullptr;
};
// Opens e (or p's engine, and p) for one call: FailedPrecondition once closed.
Status Open(cc_engine* e, Use* use);
Status Open(cc_pillows* p, Use* use);

}  // namespace commcare::capi
