// The MetaStore on PostgreSQL: servers sharing one store, the database going away (built with
// COMMCARE_WITH_POSTGRES; runs against the test server).
#include <commcare/storage/change_log.h>
#include <doctest/doctest.h>

#include <thread>

#include "../private_postgres.h"
#include "../test_util.h"
#include "meta/meta_store.h"
#include "meta_store_helpers.h"

using namespace commcare;
using cctest::Changes;
using cctest::Fixture;
using cctest::MakeDoc;
using cctest::Open;
using meta::Doc;
using meta::MetaStore;
using meta::User;

TEST_CASE("Postgres: two servers share one store: logins, revisions and each change relayed once") {
  Fixture f(true);
  if (!f.m) return;
  auto other = Open(f.where);  // a second server process's store
  CHECK(other->RelayProducer() == f.m->RelayProducer());
  REQUIRE(other->Authenticate("w", "pw-w").ok());  // now cached there
  User u = f.m->GetUser("w").value();
  u.is_active = false;
  REQUIRE(f.m->PutUser(u).ok());
  CHECK(other->Authenticate("w", "pw-w").status().code() == StatusCode::kUnauthenticated);
  u = other->GetUser("w").value();
  u.is_active = true;
  User stale = u;
  REQUIRE(other->PutUser(u).ok());
  CHECK(f.m->PutUser(stale).status().code() == StatusCode::kAborted);
  CHECK(f.m->Authenticate("w", "pw-w").ok());

  // Both servers update one group at once (read, change, write; again on a stale revision) and
  // add groups of their own, each relaying into one log.
  auto log = storage::NewMemoryChangeLog();
  REQUIRE(f.m->SetChangeLog(log.get()).ok());
  REQUIRE(other->SetChangeLog(log.get()).ok());
  const size_t users_before = Changes(log.get(), "commcare-user").size();
  auto shared = f.m->PutDoc(MakeDoc("group", "demo", {{"name", "g"}, {"metadata", {{"n", "0"}}}}));
  REQUIRE(shared.ok());
  constexpr int kEach = 15;
  auto work = [&](MetaStore* m, const std::string& tag) {
    for (int i = 0; i < kEach; ++i) {
      for (int attempt = 0;; ++attempt) {
        REQUIRE(attempt < 100);
        Doc g = m->GetDoc("group", "demo", shared->id).value();
        int n = std::stoi(std::string(g.body["metadata"].as_object()["n"].as_string()));
        g.body["metadata"].as_object()["n"] = std::to_string(n + 1);
        auto r = m->PutDoc(g);
        if (r.ok()) break;
        REQUIRE(r.status().code() == StatusCode::kAborted);
      }
      REQUIRE(
          m->PutDoc(MakeDoc("group", "demo", {{"name", tag}}, fmt::format("{}-{}", tag, i))).ok());
    }
  };
  std::thread a(work, f.m.get(), "a"), b(work, other.get(), "b");
  a.join();
  b.join();
  Doc g = f.m->GetDoc("group", "demo", shared->id).value();
  CHECK(g.body["metadata"].as_object()["n"].as_string() == std::to_string(2 * kEach));
  CHECK(g.rev == 2 * kEach + 1);
  REQUIRE(f.m->Relay().ok());
  REQUIRE(other->Relay().ok());
  auto groups = Changes(log.get(), "group");
  std::map<std::string, int> per_id;
  for (const auto& c : groups) ++per_id[c.document_id];
  CHECK(groups.size() == 1 + 2 * kEach + 2 * kEach);  // every write once
  CHECK(per_id[shared->id] == 1 + 2 * kEach);
  CHECK(per_id.size() == 1 + 2 * kEach);
  CHECK(Changes(log.get(), "commcare-user").size() == users_before);
}

TEST_CASE("Postgres: with its database down the store says Unavailable, not a wrong password") {
  if (cctest::TestServer("COMMCARE_TEST_PG").empty()) return;
  cctest::PrivatePostgres pg;
  Fixture f("postgres:" + pg.dsn + " dbname=postgres");
  REQUIRE(f.m->Authenticate("w", "pw-w").ok());  // cached
  pg.Stop();
  // Not even a cached login is answered while the store cannot say whether it still holds.
  CHECK(f.m->Authenticate("w", "pw-w").status().code() == StatusCode::kUnavailable);
  CHECK(f.m->GetUser("w").status().code() == StatusCode::kUnavailable);
  CHECK(f.m->PutDoc(MakeDoc("group", "demo", {{"name", "g"}})).status().code() ==
        StatusCode::kUnavailable);
  pg.Start();
  Result<User> back = Status::Unavailable("");
  for (int i = 0; i < 20 && !back.ok(); ++i) {
    back = f.m->Authenticate("w", "pw-w");
    if (!back.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(back.ok());
  CHECK(f.m->Authenticate("w", "wrong").status().code() == StatusCode::kUnauthenticated);
  CHECK(f.m->ListDocs("group", "demo")->empty());  // the failed write left nothing
}
