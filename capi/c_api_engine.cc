// The C ABI (include/commcare/c.h): submissions, cases, forms, ledgers, the change log and
// restore. Helpers and handles: c_api_internal.h.
#include <fmt/format.h>
#include <stdlib.h>

#include <boost/json.hpp>
#include <cctype>
#include <functional>
#include <string>
#include <string_view>

#include "c_api_internal.h"
#include "commcare/c.h"
#include "commcare/engine.h"
#include "commcare/sync.h"
#include "meta/meta_store.h"
#include "util/time.h"

namespace json = boost::json;
using commcare::Result;
using commcare::Status;
using commcare::StatusCode;
using namespace commcare::capi;  // the shared helpers (c_api_internal.h)

namespace {

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

}  // namespace

extern "C" {

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
  commcare::meta::MetaStore* meta = nullptr;
  CC_RETURN_IF_ERROR(engine->Meta(&meta));
  commcare::Sync* sync = nullptr;
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

}  // extern "C"
