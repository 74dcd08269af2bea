// Helpers shared by the sync tests (sync_test.cc, and sync_postgres_test.cc on PostgreSQL).
#pragma once

#include <commcare/sync.h>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <string>
#include <string_view>

#include "engine_helpers.h"

namespace cctest {

// Submits one case block (create with owner/type, or any actions) as user u1.
inline void Case(commcare::Engine* e, const std::string& id, const std::string& actions,
                 const std::string& token = "") {
  static int form_n = 0;
  commcare::SubmitRequest r;
  r.domain = "demo";
  r.body = CaseForm(fmt::format("form-{}", ++form_n), id, actions);
  r.last_sync_token = token;
  auto resp = e->Submit(r);
  REQUIRE_MESSAGE(resp.http_status == 201, resp.message);
}

// A create block owned by owner, of type, with an index block after it.
inline std::string Create(const std::string& owner, const std::string& type = "t",
                          const std::string& index = "") {
  return fmt::format(
      "<create><case_type>{}</case_type><case_name>n</case_name><owner_id>{}</owner_id></create>"
      "<update><p>v</p></update>{}",
      type, owner, index);
}

// A first-sync request of user u1 in demo, owning only u1's cases.
inline commcare::RestoreRequest U1Request() {
  commcare::RestoreRequest r;
  r.domain = "demo";
  r.user.username = "u1";
  r.user.user_id = "u1";
  r.user.owner_ids = {"u1"};
  return r;
}

// A restore through s, its payload in *payload.
inline commcare::RestoreResult RestoreInto(commcare::Sync* s, const commcare::RestoreRequest& r,
                                           std::string* payload) {
  payload->clear();
  auto res = s->Restore(r, [&](int, std::string_view c) {
    payload->append(c);
    return commcare::Status::Ok();
  });
  REQUIRE_MESSAGE(res.ok(), res.status().ToString());
  return *res;
}

}  // namespace cctest
