// The C ABI (include/commcare/c.h): the pillow host, its processors, case search, the forms
// list and UCR. Helpers and handles: c_api_internal.h.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <memory>
#include <string>
#include <utility>

#include "c_api_internal.h"
#include "commcare/c.h"
#include "commcare/engine.h"
#include "commcare/pillows.h"
#include "util/time.h"

namespace json = boost::json;
using commcare::Result;
using commcare::Status;
using commcare::StatusCode;
using namespace commcare::capi;  // the shared helpers (c_api_internal.h)

namespace {

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

}  // namespace

extern "C" {

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
