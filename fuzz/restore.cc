// Fuzz target: restore parameters and sync tokens. The input's first line is a restore's query
// string, then a line "@@", then JSON as an asynchronous restore task carries its parameters.
// Parameters read from the request must survive the JSON round trip; the `since` token is
// looked up in a sync log store (SQLite in memory) holding a full log and a log stored as a
// difference from it, then stored with the device_id's words as case ids and read back.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "fuzz/fuzz_util.h"
#include "http/server.h"
#include "meta/restore_params.h"
#include "server/request_parse.h"
#include "sync/sync_internal.h"

namespace {

using commcare::meta::RestoreParams;

bool Same(const RestoreParams& a, const RestoreParams& b) {
  return a.username == b.username && a.hide_password == b.hide_password && a.since == b.since &&
         a.version == b.version && a.state == b.state && a.device_id == b.device_id &&
         a.app_id == b.app_id && a.url_base == b.url_base && a.items == b.items &&
         a.overwrite_cache == b.overwrite_cache && a.skip_fixtures == b.skip_fixtures;
}

void RoundTrip(const RestoreParams& p) {
  auto back = RestoreParams::FromJson(p.ToJson());
  FUZZ_CHECK(back.ok() && Same(p, *back));
}

std::vector<std::string> Words(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    auto sp = s.find(' ');
    if (sp != 0) out.emplace_back(s.substr(0, sp));
    if (sp == std::string_view::npos) break;
    s.remove_prefix(sp + 1);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// A store with "full" (four cases) and "diff" (stored against it); remade now and then so that
// the logs the target stores do not pile up.
commcare::sync_internal::SyncLogStore* Store() {
  using commcare::sync_internal::SyncLogStore;
  static std::unique_ptr<SyncLogStore> store;
  static int uses = 0;
  if (!store || ++uses % 2000 == 0) {
    store = std::make_unique<SyncLogStore>();
    FUZZ_CHECK(store->Open("").ok());
    commcare::SyncLogInfo full;
    full.sync_id = "full";
    full.domain = "fuzz";
    full.user_id = "u1";
    full.case_ids = {"a", "b", "c", "d", "e", "f", "g", "h"};
    FUZZ_CHECK(store->Put(full, nullptr).ok());
    auto base = store->Get("full");
    FUZZ_CHECK(base.ok());
    commcare::SyncLogInfo diff = full;
    diff.sync_id = "diff";
    diff.previous_id = "full";
    diff.case_ids = {"a", "b", "c", "d", "e", "f", "g", "i"};
    FUZZ_CHECK(store->Put(diff, &*base).ok());
  }
  return store.get();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace commcare;
  auto [query, body] = fuzz::SplitParts(fuzz::AsText(data, size));
  http::Request r;
  r.method = "GET";
  http::SetTarget(&r, "/a/fuzz/phone/restore/?" + std::string(query));
  http::AddHeader(&r, "Host", "example.org");
  auto p = server::RestoreParamsFromRequest(r, "app1");
  if (p.ok()) {
    p->username = "u1";
    RoundTrip(*p);
  } else {
    FUZZ_CHECK(p.status().IsInvalidArgument());
  }
  auto j = RestoreParams::FromJson(body);
  if (j.ok()) RoundTrip(*j);

  if (!p.ok()) return 0;
  auto* store = Store();
  auto got = store->Get(p->since);
  FUZZ_CHECK(got.ok() == store->Usable(p->since, "fuzz/u1") || !got.ok());
  if (p->since.empty() || p->since == "full" || p->since == "diff") return 0;
  SyncLogInfo log;
  log.sync_id = p->since;
  log.domain = "fuzz";
  log.user_id = "u1";
  log.previous_id = got.ok() ? p->since : "full";
  log.device_id = p->device_id;
  log.case_ids = Words(p->device_id);
  auto base = store->Get("full");
  FUZZ_CHECK(base.ok());
  FUZZ_CHECK(store->Put(log, &*base).ok());
  auto back = store->Get(p->since);
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(back->info.case_ids == log.case_ids);
  return 0;
}
