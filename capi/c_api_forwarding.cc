// The C ABI's data forwarding: forwarders added, listed, paused, resumed and deleted, repeat
// records listed, read with their attempts and resent — as JSON through
// include/commcare/forwarding.h (docs/forwarding.md). Delivery runs in worker pools
// (cc_workers_open registers forward.deliver) next to a pillow host (cc_pillows_open).
#include "c_api_internal.h"
#include "commcare/forwarding.h"
#include "commcare/tasks.h"

using namespace commcare;
using namespace commcare::capi;

namespace {

// Opens the engine for one call and its forwarding store, then runs fn(store).
template <typename F>
int StoreCall(cc_engine* e, F&& fn) {
  return Fence([&]() -> Status {
    Use use;
    CC_RETURN_IF_ERROR(Open(e, &use));
    CC_ASSIGN_OR_RETURN(TaskQueue * q, e->host->Tasks());
    CC_ASSIGN_OR_RETURN(auto store, ForwardingStore::Open(e->host->PillowStore(), q));
    return fn(store.get());
  });
}

}  // namespace

extern "C" {

int cc_forwarder_add(char** out, cc_engine* e, const char* forwarder_json) {
  if (out) *out = nullptr;
  return StoreCall(e, [&](ForwardingStore* s) -> Status {
    std::string text;
    CC_RETURN_IF_ERROR(Arg(forwarder_json, "forwarder_json", &text));
    CC_ASSIGN_OR_RETURN(Forwarder f, Forwarder::FromJson(text));
    CC_ASSIGN_OR_RETURN(f, s->Add(f));
    return Out(out, f.ToJson());
  });
}

int cc_forwarder_list(char** out, cc_engine* e, const char* domain) {
  if (out) *out = nullptr;
  return StoreCall(e, [&](ForwardingStore* s) -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    std::string d;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_ASSIGN_OR_RETURN(auto all, s->List(d));
    return Out(out, JsonArray(all, [](const Forwarder& f) { return f.ToJson(); }));
  });
}

int cc_forwarder_set_paused(cc_engine* e, const char* domain, const char* id, int paused) {
  return StoreCall(e, [&](ForwardingStore* s) -> Status {
    std::string d, i;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(id, "id", &i));
    return s->SetPaused(d, i, paused != 0);
  });
}

int cc_forwarder_delete(cc_engine* e, const char* domain, const char* id) {
  return StoreCall(e, [&](ForwardingStore* s) -> Status {
    std::string d, i;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(id, "id", &i));
    return s->Delete(d, i);
  });
}

int cc_forward_records(char** out, cc_engine* e, const char* domain, const char* filter_json) {
  if (out) *out = nullptr;
  return StoreCall(e, [&](ForwardingStore* s) -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    RecordFilter q;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &q.domain));
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(filter_json, "filter_json", &o, false));
    Reader r{o, "filter_json"};
    CC_RETURN_IF_ERROR(r.Only({"forwarder", "state", "limit", "before"}));
    CC_RETURN_IF_ERROR(r.Str("forwarder", &q.forwarder_id));
    std::string state;
    CC_RETURN_IF_ERROR(r.Str("state", &state));
    if (!state.empty()) {
      q.state = ParseRecordState(state);
      if (!q.state) return Status::InvalidArgument("filter_json: unknown \"state\" " + state);
    }
    CC_RETURN_IF_ERROR(r.Int("limit", &q.limit, 1, 1000));
    CC_RETURN_IF_ERROR(r.Int("before", &q.before_id, 0, INT64_MAX));
    CC_ASSIGN_OR_RETURN(auto all, s->Records(q));
    return Out(out, JsonArray(all, [](const RepeatRecord& x) { return x.ToJson(); }));
  });
}

int cc_forward_record(char** out, cc_engine* e, const char* domain, int64_t id) {
  if (out) *out = nullptr;
  return StoreCall(e, [&](ForwardingStore* s) -> Status {
    CC_RETURN_IF_ERROR(NeedOut(out));
    std::string d;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_ASSIGN_OR_RETURN(RepeatRecord r, s->Record(d, id));
    return Out(out, r.ToJson());
  });
}

int cc_forward_resend(int64_t* out_count, cc_engine* e, const char* domain, int64_t record_id,
                      const char* forwarder_id) {
  if (out_count) *out_count = 0;
  return StoreCall(e, [&](ForwardingStore* s) -> Status {
    std::string d, f;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_RETURN_IF_ERROR(Arg(forwarder_id, "forwarder_id", &f, false));
    int64_t n = 1;
    if (record_id > 0) {
      CC_RETURN_IF_ERROR(s->Resend(d, record_id));
    } else {
      CC_ASSIGN_OR_RETURN(n, s->ResendFailed(d, f));
    }
    if (out_count) *out_count = n;
    return Status::Ok();
  });
}

}  // extern "C"
