// Mobile sync: which cases a phone gets (CommCare's livequery rules, from its own examples),
// incremental sync across ownership changes, the phone's own submissions not echoed back,
// token and state errors, and a phone-side replay of the payload equal to the footprint.
#include <commcare/sync.h>

#include <map>
#include <regex>
#include <set>

#include "engine_helpers.h"
#include "sync_helpers.h"

using namespace commcare;
using cctest::Case;
using cctest::CaseForm;
using cctest::Create;
using cctest::OpenMemory;
using cctest::RestoreInto;
using cctest::U1Request;

namespace {

std::string Ext(const std::string& host) {
  return fmt::format("<index><host case_type=\"t\" relationship=\"extension\">{}</host></index>",
                     host);
}
std::string Child(const std::string& parent) {
  return fmt::format("<index><parent case_type=\"t\">{}</parent></index>", parent);
}

// What a phone does with a payload: every case block is kept (closed ones as closed), a bare
// close of a case it lacks is ignored; then cases outside the new footprint are purged.
struct Phone {
  std::map<std::string, bool> cases;  // id -> closed
  std::string token;
  struct Block {
    std::string id;
    bool create = false, close = false;
  };
  static std::vector<Block> Blocks(const std::string& payload) {
    std::vector<Block> out;
    std::regex re("<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"([^\"]+)\"");
    for (auto it = std::sregex_iterator(payload.begin(), payload.end(), re);
         it != std::sregex_iterator(); ++it) {
      size_t start = static_cast<size_t>(it->position());
      size_t end = payload.find("</case>", start);
      std::string block = payload.substr(start, end - start);
      out.push_back({(*it)[1], block.find("<create>") != std::string::npos,
                     block.find("<close/>") != std::string::npos});
    }
    return out;
  }
  void Apply(const std::string& payload) {
    for (const auto& b : Blocks(payload)) cases[b.id] = b.close;
    std::smatch m;
    REQUIRE(std::regex_search(payload, m, std::regex("<restore_id>([0-9a-f]+)</restore_id>")));
    token = m[1];
  }
  std::set<std::string> Ids() const {
    std::set<std::string> out;
    for (const auto& [id, closed] : cases) out.insert(id);
    return out;
  }
};

struct Fixture {
  std::unique_ptr<Engine> e = OpenMemory(2);
  std::unique_ptr<Sync> sync;
  RestoreUser user;
  explicit Fixture(const std::string& synclogs = "") {
    auto s = Sync::Open(e.get(), synclogs);
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    sync = std::move(s).value();
    user.username = "u1";
    user.user_id = "u1";
    user.password_hash = "pbkdf2_sha256$1$x$y";
    user.owner_ids = {"u1"};
  }
  // A restore; its payload in *payload.
  RestoreResult Restore(const std::string& since, std::string* payload,
                        const std::string& state = "", const std::string& version = "2.0") {
    RestoreRequest r;
    r.domain = "demo";
    r.user = user;
    r.since = since;
    r.state = state;
    r.version = version;
    r.items = true;
    payload->clear();
    int status = 0;
    auto res = sync->Restore(r, [&](int st, std::string_view chunk) {
      CHECK((status == 0 || status == st));
      status = st;
      payload->append(chunk);
      return Status::Ok();
    });
    REQUIRE_MESSAGE(res.ok(), res.status().ToString());
    CHECK(status == res->http_status);
    REQUIRE_MESSAGE(res.ok(), res.status().ToString());
    return *res;
  }
  // The ids a first sync sends.
  std::set<std::string> Live() {
    std::string p;
    auto r = Restore("", &p);
    REQUIRE(r.http_status == 200);
    std::set<std::string> ids;
    for (const auto& b : Phone::Blocks(p)) ids.insert(b.id);
    auto log = sync->GetSyncLog(r.sync_id);
    REQUIRE(log.ok());
    CHECK(std::set<std::string>(log->case_ids.begin(), log->case_ids.end()) == ids);
    CHECK(log->state_hash == CaseStateHash(log->case_ids));
    return ids;
  }
};

using Ids = std::set<std::string>;

}  // namespace

TEST_CASE("livequery: owned open cases and the index rules of CommCare's examples") {
  SUBCASE("owned, open and closed, and other owners") {
    Fixture f;
    Case(f.e.get(), "mine", Create("u1"));
    Case(f.e.get(), "closed", Create("u1") + "<close/>");
    Case(f.e.get(), "theirs", Create("u2"));
    CHECK(f.Live() == Ids{"mine"});
  }
  SUBCASE("a <-ext- d(owned), a <-ext- b  >>  a b d") {
    Fixture f;
    Case(f.e.get(), "a", Create("u2"));
    Case(f.e.get(), "d", Create("u1", "t", Ext("a")));
    Case(f.e.get(), "b", Create("u2", "t", Ext("a")));
    CHECK(f.Live() == Ids{"a", "b", "d"});
  }
  SUBCASE("e(owned) -ext-> a(closed), e -ext-> b  >>  a b e") {
    Fixture f;
    Case(f.e.get(), "a", Create("u2") + "<close/>");
    Case(f.e.get(), "b", Create("u2"));
    Case(f.e.get(), "e",
         Create("u1") +
             "<index><h1 case_type=\"t\" relationship=\"extension\">a</h1><h2 case_type=\"t\" "
             "relationship=\"extension\">b</h2></index>");
    CHECK(f.Live() == Ids{"a", "b", "e"});
  }
  SUBCASE("b(closed) <-child- a(owned), b <-ext- c  >>  a b c") {
    Fixture f;
    Case(f.e.get(), "b", Create("u2") + "<close/>");
    Case(f.e.get(), "a", Create("u1", "t", Child("b")));
    Case(f.e.get(), "c", Create("u2", "t", Ext("b")));
    CHECK(f.Live() == Ids{"a", "b", "c"});
  }
  SUBCASE("a(closed) <-ext- d(owned)  >>  nothing") {
    Fixture f;
    Case(f.e.get(), "a", Create("u2") + "<close/>");
    Case(f.e.get(), "d", Create("u1", "t", Ext("a")));
    CHECK(f.Live().empty());
  }
  SUBCASE("a <-ext- b <-ext- c(owned)  >>  a b c; with a closed  >>  nothing") {
    for (bool closed : {false, true}) {
      Fixture f;
      Case(f.e.get(), "a", Create("u2") + (closed ? "<close/>" : ""));
      Case(f.e.get(), "b", Create("u2", "t", Ext("a")));
      Case(f.e.get(), "c", Create("u1", "t", Ext("b")));
      Case(f.e.get(), "d", Create("u2", "t", Child("c")));  // a child never becomes live
      CHECK(f.Live() == (closed ? Ids{} : Ids{"a", "b", "c"}));
    }
  }
  SUBCASE("parent chains: grandparents of an owned case are live, closed or not") {
    Fixture f;
    Case(f.e.get(), "gp", Create("u2") + "<close/>");
    Case(f.e.get(), "p", Create("u2", "t", Child("gp")));
    Case(f.e.get(), "kid", Create("u1", "t", Child("p")));
    Case(f.e.get(), "sibling", Create("u2", "t", Child("p")));
    CHECK(f.Live() == Ids{"gp", "p", "kid"});
  }
}

TEST_CASE("the payload: registration, case blocks, indices, ledgers, items, versions") {
  Fixture f;
  f.user.user_data = {{"district", "north & south"}};
  f.user.date_joined = 1577934245000000;  // 2020-01-02T03:04:05Z: HQ's <date> is date_joined's
  Case(f.e.get(), "p", Create("u1", "mother"));
  Case(f.e.get(), "c", Create("u1", "child", Child("p")) + "<update><weight>3.1</weight></update>");
  SubmitRequest r;
  r.domain = "demo";
  r.body = CaseForm("ledger-form", "p", "<update><q>1</q></update>");
  r.body.insert(r.body.find("</data>"),
                "<balance xmlns=\"http://commcarehq.org/ledger/v1\" entity-id=\"p\" "
                "section-id=\"stock\" date=\"2020-01-01\"><entry id=\"pills\" quantity=\"12\"/>"
                "</balance>");
  REQUIRE(f.e->Submit(r).http_status == 201);
  std::string p;
  auto res = f.Restore("", &p);
  CHECK(res.http_status == 200);
  CHECK(res.cases == 2);
  CHECK(res.ledgers == 1);
  // HQ counts the message, Sync, Registration, each balance block and each case.
  CHECK(p.find("<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\" items=\"6\">") == 0);
  CHECK(
      p.find(
          "<message nature=\"ota_restore_success\">Successfully restored account u1!</message>") !=
      std::string::npos);
  CHECK(p.find("<Sync xmlns=\"http://commcarehq.org/sync\"><restore_id>" + res.sync_id +
               "</restore_id></Sync>") != std::string::npos);
  CHECK(p.find("<uuid>u1</uuid><date>2020-01-02</date>") != std::string::npos);
  CHECK(p.find("<data key=\"district\">north &amp; south</data>") != std::string::npos);
  CHECK(p.find("<create><case_type>child</case_type><case_name>n</case_name><owner_id>u1</owner_id>"
               "</create>") != std::string::npos);
  CHECK(p.find("<index><parent case_type=\"t\">p</parent></index>") != std::string::npos);
  CHECK(p.find("<weight>3.1</weight>") != std::string::npos);
  CHECK(p.find("<ns0:balance xmlns:ns0=\"http://commcarehq.org/ledger/v1\"") != std::string::npos);
  CHECK(p.find("entity-id=\"p\" section-id=\"stock\"><ns0:entry id=\"pills\" quantity=\"12\"/>") !=
        std::string::npos);
  CHECK(p.find("</OpenRosaResponse>") == p.size() - 19);
  // Version 1.0 writes v1 case blocks.
  f.Restore("", &p, "", "1.0");
  CHECK(p.find("<case><case_id>c</case_id>") != std::string::npos);
  CHECK(p.find("<case_type_id>child</case_type_id>") != std::string::npos);
}

TEST_CASE("a payload of many batches has every case once, in order, with its balances") {
  // 2,600 cases (batches of 1,000 are formatted two at a time on two threads), every 7th with
  // a stock balance, every 10th a child of the case before it, across two databases.
  Fixture f;
  constexpr int kCases = 2600;
  for (int form = 0; form < kCases / 20; ++form) {
    std::string blocks, balances;
    for (int c = form * 20; c < form * 20 + 20; ++c) {
      const std::string id = fmt::format("case-{:04}", c);
      blocks += fmt::format(
          R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{}" date_modified="2020-01-01T00:00:00Z" user_id="u1">{}</case>)",
          id, Create("u1", "t", c % 10 == 9 ? Child(fmt::format("case-{:04}", c - 1)) : ""));
      if (c % 7 == 0)
        balances += fmt::format(
            R"(<balance xmlns="http://commcarehq.org/ledger/v1" entity-id="{}" section-id="stock" date="2020-01-01"><entry id="pills" quantity="{}"/></balance>)",
            id, c);
    }
    SubmitRequest r;
    r.domain = "demo";
    r.body = CaseForm(fmt::format("many-{}", form), "unused", Create("u1"));
    r.body.insert(r.body.find("</data>"), blocks + balances);
    REQUIRE(f.e->Submit(r).http_status == 201);
  }
  std::string p;
  auto res = f.Restore("", &p);
  REQUIRE(res.http_status == 200);
  CHECK(res.cases == kCases + 1);
  CHECK(res.ledgers == (kCases + 6) / 7);
  std::vector<std::string> sent;
  for (const auto& b : Phone::Blocks(p)) sent.push_back(b.id);
  std::vector<std::string> want;
  for (int c = 0; c < kCases; ++c) want.push_back(fmt::format("case-{:04}", c));
  want.push_back("unused");
  CHECK(sent == want);  // each once, in id order
  // Each balance comes before its case, in the same batch of the payload.
  std::regex balance_re(
      "entity-id=\"(case-[0-9]+)\" section-id=\"stock\"><ns0:entry "
      "id=\"pills\" quantity=\"([0-9]+)\"/>");
  int balances = 0;
  for (auto it = std::sregex_iterator(p.begin(), p.end(), balance_re); it != std::sregex_iterator();
       ++it, ++balances) {
    const std::string id = (*it)[1];
    CHECK(std::stoi((*it)[2].str()) == std::stoi(id.substr(5)));
    const size_t at = static_cast<size_t>(it->position());
    const size_t block = p.find("case_id=\"" + id + "\"");
    REQUIRE(block != std::string::npos);
    CHECK(at < block);
  }
  CHECK(balances == (kCases + 6) / 7);
  CHECK(p.find("<index><parent case_type=\"t\">case-2598</parent></index>") != std::string::npos);
  auto log = f.sync->GetSyncLog(res.sync_id);
  REQUIRE(log.ok());
  CHECK(log->case_ids == want);
}

TEST_CASE("incremental sync: changes by others, the phone's own forms, ownership and groups") {
  Fixture f;
  Case(f.e.get(), "a", Create("u1"));
  Case(f.e.get(), "b", Create("u1"));
  Case(f.e.get(), "g1", Create("group-1"));
  Phone phone;
  std::string p;
  auto first = f.Restore("", &p);
  phone.Apply(p);
  CHECK(phone.Ids() == Ids{"a", "b"});

  // Nothing changed: nothing sent, the same footprint.
  auto r = f.Restore(phone.token, &p, CaseStateHash({"a", "b"}));
  CHECK(r.http_status == 200);
  CHECK(r.cases == 0);
  CHECK(r.footprint == 2);
  phone.Apply(p);

  // The phone creates and updates cases with its token: none of it comes back, and the
  // phone's state hash (which includes its new case) matches.
  Case(f.e.get(), "new-on-phone", Create("u1"), phone.token);
  Case(f.e.get(), "a", "<update><p>phone</p></update>", phone.token);
  phone.cases["new-on-phone"] = false;
  r = f.Restore(phone.token, &p, CaseStateHash({"a", "b", "new-on-phone"}));
  REQUIRE(r.http_status == 200);
  CHECK(r.cases == 0);
  CHECK(r.footprint == 3);
  phone.Apply(p);

  // Another user changes b, a case is assigned to u1, one of u1's is reassigned away, and u1
  // joins group-1: b is sent without create, the new case and group-1's with create, the
  // reassigned one is sent (so the phone learns it is gone) and leaves the footprint.
  Case(f.e.get(), "b", "<update><p>other</p></update>", "another-token");
  Case(f.e.get(), "assigned", Create("u1"));
  Case(f.e.get(), "a", "<update><owner_id>u9</owner_id></update>", "another-token");
  f.user.owner_ids = {"u1", "group-1"};
  r = f.Restore(phone.token, &p);
  REQUIRE(r.http_status == 200);
  std::map<std::string, bool> creates;
  for (const auto& b : Phone::Blocks(p)) creates[b.id] = b.create;
  CHECK(creates ==
        std::map<std::string, bool>{{"a", false}, {"assigned", true}, {"b", false}, {"g1", true}});
  auto log = f.sync->GetSyncLog(r.sync_id);
  REQUIRE(log.ok());
  CHECK(log->case_ids == std::vector<std::string>{"assigned", "b", "g1", "new-on-phone"});
  CHECK(log->previous_id == phone.token);
  // The phone replays the payload and purges what is no longer its: equal to the footprint.
  phone.Apply(p);
  for (auto it = phone.cases.begin(); it != phone.cases.end();)
    it = std::count(log->case_ids.begin(), log->case_ids.end(), it->first) ? std::next(it)
                                                                           : phone.cases.erase(it);
  CHECK(phone.Ids() == Ids(log->case_ids.begin(), log->case_ids.end()));

  // A case the phone holds is closed by someone else: sent with <close/>, gone from the
  // footprint. Leaving the group takes g1 away from the footprint without sending it.
  Case(f.e.get(), "b", "<close/>", "another-token");
  f.user.owner_ids = {"u1"};
  r = f.Restore(phone.token, &p);
  auto blocks = Phone::Blocks(p);
  REQUIRE(blocks.size() == 1);
  CHECK(blocks[0].id == "b");
  CHECK(blocks[0].close);
  log = f.sync->GetSyncLog(r.sync_id);
  CHECK(log->case_ids == std::vector<std::string>{"assigned", "new-on-phone"});
  (void)first;
}

TEST_CASE("restore errors: unknown, foreign and stale tokens, a state mismatch, a bad version") {
  Fixture f;
  Case(f.e.get(), "a", Create("u1"));
  std::string p;
  auto first = f.Restore("", &p);
  auto r = f.Restore("no-such-token", &p);
  CHECK(r.http_status == 412);
  CHECK(p.find(
            "<message nature=\"ota_restore_error\">Invalid sync token 'no-such-token'</message>") !=
        std::string::npos);
  r = f.Restore(first.sync_id, &p, "ccsh:00000000000000000000000000000000");
  CHECK(r.http_status == 412);
  CHECK(p.find("ota_restore_error") != std::string::npos);
  r = f.Restore(first.sync_id, &p, CaseStateHash({"a"}));
  CHECK(r.http_status == 200);
  r = f.Restore("", &p, "", "4.0");
  CHECK(r.http_status == 400);
  CHECK(r.message.find("version") != std::string::npos);
  f.user.user_id = "someone-else";
  r = f.Restore(first.sync_id, &p);
  CHECK(r.http_status == 412);
  CHECK(r.message.find("another user") != std::string::npos);
  // A writer that fails (the client went away) fails the restore, and no log is kept.
  RestoreRequest req;
  req.domain = "demo";
  req.user = f.user;
  auto failed =
      f.sync->Restore(req, [](int, std::string_view) { return Status::Unavailable("gone"); });
  CHECK_FALSE(failed.ok());
}

// Where sync logs go in the tests that run on both stores: in memory (SQLite), and a new
// PostgreSQL database ("" when there is none outside CI).
std::vector<std::string> SyncLogStores() {
  std::vector<std::string> out = {""};
  for (const auto& dsn : cctest::NewPostgresDatabases(1)) out.push_back("postgres:" + dsn);
  return out;
}

TEST_CASE("sync logs are pruned by age and to the newest two per user, device and app") {
  for (const auto& where : SyncLogStores()) {
    CAPTURE(where);
    Fixture f(where);
    std::string p;
    std::vector<std::string> ids;
    for (int i = 0; i < 4; ++i) ids.push_back(f.Restore("", &p).sync_id);
    auto n = f.sync->Prune(3600LL * 1000000);
    REQUIRE(n.ok());
    CHECK(*n == 2);
    CHECK(f.sync->GetSyncLog(ids[0]).status().IsNotFound());
    CHECK(f.sync->GetSyncLog(ids[3]).ok());
    CHECK(f.sync->GetSyncLog(ids[2]).ok());
    n = f.sync->Prune(0);
    CHECK(*n == 2);
  }
}

TEST_CASE("incremental logs are stored against a full one, pruning keeps what they need") {
  for (const auto& where : SyncLogStores()) {
    CAPTURE(where);
    Fixture f(where);
    for (int i = 0; i < 40; ++i) Case(f.e.get(), fmt::format("c{:02}", i), Create("u1"));
    std::string p;
    auto first = f.Restore("", &p);
    std::vector<std::string> tokens = {first.sync_id};
    for (int i = 0; i < 3; ++i) {
      Case(f.e.get(), fmt::format("c{:02}", i), "<update><p>other</p></update>", "other-token");
      auto r = f.Restore(tokens.back(), &p);
      CHECK(r.cases == 1);  // the changed case only
      CHECK(r.footprint == 40);
      tokens.push_back(r.sync_id);
    }
    Case(f.e.get(), "late", Create("u1"));
    auto r =
        f.Restore(tokens.back(), &p, CaseStateHash(f.sync->GetSyncLog(tokens.back())->case_ids));
    REQUIRE(r.http_status == 200);
    tokens.push_back(r.sync_id);
    auto log = f.sync->GetSyncLog(r.sync_id);
    REQUIRE(log.ok());
    CHECK(log->case_ids.size() == 41);
    CHECK(log->state_hash == CaseStateHash(log->case_ids));
    // Keeps the newest two and the full log they are stored against.
    auto n = f.sync->Prune(3600LL * 1000000);
    REQUIRE(n.ok());
    CHECK(*n == 2);
    CHECK(f.sync->GetSyncLog(tokens[0]).ok());
    CHECK(f.sync->GetSyncLog(tokens[1]).status().IsNotFound());
    CHECK(f.sync->GetSyncLog(tokens[4])->case_ids.size() == 41);
  }
}

TEST_CASE("a change to an indexed case recomputes the graph: a dropped parent leaves") {
  Fixture f;
  Case(f.e.get(), "p", Create("u2"));
  Case(f.e.get(), "k", Create("u1", "t", Child("p")));
  std::string p;
  auto first = f.Restore("", &p);
  CHECK(first.footprint == 2);
  // Another user moves the child to another parent (owned by nobody we know).
  Case(f.e.get(), "q", Create("u3"));
  Case(f.e.get(), "k", "<index><parent case_type=\"t\">q</parent></index>", "other-token");
  auto r = f.Restore(first.sync_id, &p);
  auto log = f.sync->GetSyncLog(r.sync_id);
  CHECK(log->case_ids == std::vector<std::string>{"k", "q"});
  CHECK(log->indexed_case_ids == std::vector<std::string>{"k"});
  std::set<std::string> sent;
  for (const auto& b : Phone::Blocks(p)) sent.insert(b.id);
  CHECK(sent == std::set<std::string>{"k", "q"});
}

TEST_CASE(
    "kept first syncs are answered until the user submits, asks overwrite_cache or the log goes") {
  auto e = OpenMemory();
  auto sync = Sync::Open(e.get(), "", cctest::FreshTempDir("cc-sync", "cache"));
  REQUIRE(sync.ok());
  Case(e.get(), "a", Create("u1"));
  RestoreRequest r = U1Request();
  r.force_cache = true;  // kept however fast (see sync_fidelity_test.cc for the fast ones)
  auto run = [&](std::string* payload) { return RestoreInto(sync->get(), r, payload); };
  std::string p1, p2, p3;
  auto first = run(&p1);
  CHECK_FALSE(first.from_cache);
  auto second = run(&p2);
  CHECK(second.from_cache);
  CHECK(second.sync_id == first.sync_id);
  CHECK(second.cases == 1);
  CHECK(p2 == p1);
  (*sync)->InvalidateCache("demo", "u1");
  auto third = run(&p3);
  CHECK_FALSE(third.from_cache);
  CHECK(third.sync_id != first.sync_id);
  r.overwrite_cache = true;
  CHECK_FALSE(run(&p3).from_cache);
  r.overwrite_cache = false;
  CHECK(run(&p3).from_cache);
  // Another shape of request (items, owner ids) is cached apart; a pruned log is not answered.
  r.items = true;
  CHECK_FALSE(run(&p3).from_cache);
  CHECK(p3.find(" items=\"") != std::string::npos);
  CHECK(run(&p3).from_cache);
  r.user.owner_ids = {"u1", "g"};
  CHECK_FALSE(run(&p3).from_cache);
  REQUIRE((*sync)->Prune(0).ok());
  CHECK_FALSE(run(&p3).from_cache);
}
