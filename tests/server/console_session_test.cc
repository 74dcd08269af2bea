// Console sessions in the MetaStore: random ids stored hashed, shared by every store opened on
// the same database (several servers), ended by sign-out, expiry or the user's deactivation.
#include <doctest/doctest.h>

#include "meta/meta_store.h"
#include "meta_store_helpers.h"

using cctest::Fixture;
using cctest::Open;
using commcare::meta::Session;

TEST_CASE("console sessions: a session is seen by another store on the same database") {
  for (bool postgres : {false, true}) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    Session s;
    auto id = f.m->CreateSession("w", 3600, &s);
    REQUIRE_MESSAGE(id.ok(), id.status().ToString());
    CHECK(id->size() == 64);
    CHECK(s.csrf_token.size() == 64);
    CHECK(s.csrf_token != *id);
    auto other = Open(f.where);  // a second server's store
    auto got = other->GetSession(*id);
    REQUIRE(got.ok());
    CHECK(got->username == "w");
    CHECK(got->csrf_token == s.csrf_token);
    CHECK(got->expires == s.created + 3600);
    // Another id, a malformed one, a prefix: no session.
    auto id2 = f.m->CreateSession("w", 3600, nullptr);
    REQUIRE(id2.ok());
    CHECK(*id2 != *id);
    CHECK(other->GetSession(std::string(64, '0')).status().code() ==
          commcare::StatusCode::kUnauthenticated);
    CHECK(!other->GetSession("' OR 1=1 --").ok());
    CHECK(!other->GetSession(id->substr(0, 32)).ok());
    // Sign-out on one server ends it on the other.
    REQUIRE(other->DeleteSession(*id).ok());
    CHECK(!f.m->GetSession(*id).ok());
    CHECK(f.m->GetSession(*id2).ok());
  }
}

TEST_CASE("console sessions: expired sessions are refused, unknown users get none") {
  Fixture f(false);
  auto id = f.m->CreateSession("w", 0, nullptr);
  REQUIRE(id.ok());
  CHECK(f.m->GetSession(*id).status().code() == commcare::StatusCode::kUnauthenticated);
  CHECK(f.m->CreateSession("nobody", 60, nullptr).status().IsNotFound());
  auto u = f.worker;
  u.is_active = false;
  REQUIRE(f.m->PutUser(u).ok());
  CHECK(!f.m->CreateSession("w", 60, nullptr).ok());
}
