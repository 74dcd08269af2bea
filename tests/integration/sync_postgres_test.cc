// Sync logs shared by servers on PostgreSQL (built with COMMCARE_WITH_POSTGRES; runs against the
// test server).
#include <commcare/sync.h>

#include "engine_helpers.h"
#include "sync_helpers.h"

using namespace commcare;
using cctest::Case;
using cctest::Create;
using cctest::OpenMemory;
using cctest::RestoreInto;
using cctest::U1Request;

TEST_CASE("Postgres: servers sharing sync logs take each other's tokens and cache invalidations") {
  const auto dsns = cctest::NewPostgresDatabases(1);
  if (dsns.empty()) return;
  auto e = OpenMemory();
  auto a = Sync::Open(e.get(), "postgres:" + dsns[0], cctest::FreshTempDir("cc-sync", "a"));
  auto b = Sync::Open(e.get(), "postgres:" + dsns[0], cctest::FreshTempDir("cc-sync", "b"));
  REQUIRE_MESSAGE(a.ok(), a.status().ToString());
  REQUIRE_MESSAGE(b.ok(), b.status().ToString());
  Case(e.get(), "a1", Create("u1"));
  RestoreRequest r = U1Request();
  r.force_cache = true;
  auto run = [&](Sync* s, std::string* payload) { return RestoreInto(s, r, payload); };
  std::string p;
  auto first = run(a->get(), &p);
  REQUIRE(first.http_status == 200);
  CHECK(run(a->get(), &p).from_cache);
  // The phone's next sync lands on the other server, with the first one's token.
  Case(e.get(), "a2", Create("u1"), "other-token");
  r.since = first.sync_id;
  auto next = run(b->get(), &p);
  CHECK(next.http_status == 200);
  CHECK(next.cases == 1);
  CHECK(p.find("case_id=\"a2\"") != std::string::npos);
  CHECK((*a)->GetSyncLog(next.sync_id).ok());
  // The user submits through b: a's cached first sync is stale at once.
  r.since.clear();
  (*b)->InvalidateCache("demo", "u1");
  auto fresh = run(a->get(), &p);
  CHECK_FALSE(fresh.from_cache);
  CHECK(fresh.cases == 2);
  CHECK(run(a->get(), &p).from_cache);
}
