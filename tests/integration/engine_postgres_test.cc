// The engine on PostgreSQL databases (built with COMMCARE_WITH_POSTGRES; runs against the test
// server, and beside Kafka when that is built too).
#include <commcare/pillows.h>
#include <fmt/format.h>

#include <atomic>
#include <boost/json.hpp>
#include <functional>
#include <map>
#include <thread>

#include "../private_postgres.h"
#include "engine_helpers.h"
#include "util/codec.h"

using namespace commcare;
using namespace cctest;

namespace {

// The init options of server k (its own data directory under base) on two shared databases.
InitOptions ServerOnTwoDatabases(const std::string& base, int k,
                                 const std::vector<std::string>& dsns) {
  InitOptions io;
  io.data_dir = fmt::format("{}/server{}", base, k);
  io.shards = 16;
  io.databases = 2;
  io.primary =
      fmt::format(R"({{"kind": "postgres", "databases": ["{}", "{}"]}})", dsns[0], dsns[1]);
  return io;
}

}  // namespace

TEST_CASE("Postgres: the engine on two PostgreSQL databases, across a reopen") {
  const std::vector<std::string> dsns = cctest::NewPostgresDatabases(2);
  if (dsns.empty()) return;
  std::string dir = cctest::TempDir("pg");
  InitOptions io;
  io.data_dir = dir;
  io.shards = 16;
  io.databases = 2;
  io.primary =
      fmt::format(R"({{"kind": "postgres", "databases": ["{}", "{}"]}})", dsns[0], dsns[1]);
  auto st = Engine::Init(io);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  InitOptions bad = io;
  bad.data_dir = dir + "-bad";
  bad.primary = fmt::format(R"({{"kind": "postgres", "databases": ["{}"]}})", dsns[0]);
  CHECK(Engine::Init(bad).message().find("1 connection strings for 2 databases") !=
        std::string::npos);
  EngineOptions eo;
  eo.data_dir = dir;
  {
    auto e = Engine::Open(eo);
    REQUIRE_MESSAGE(e.ok(), e.status().ToString());
    for (int i = 0; i < 20; ++i)
      REQUIRE(Submit(e->get(), CaseForm(fmt::format("pf{}", i), fmt::format("pc{}", i),
                                        "<create><case_type>t</case_type><owner_id>o</owner_id>"
                                        "</create><update><n>1</n></update>"))
                  .http_status == 201);
    // Updates: each goes to its case's database, whichever database holds the form.
    for (int i = 0; i < 20; ++i)
      REQUIRE(Submit(e->get(), CaseForm(fmt::format("pu{}", i), fmt::format("pc{}", i),
                                        "<update><n>2</n></update>", "u1", "2020-01-02T00:00:00Z"))
                  .http_status == 201);
    REQUIRE((*e)->ArchiveForm("demo", "pu3").ok());
    auto check = (*e)->Check();
    REQUIRE_MESSAGE(check.ok(), check.status().ToString());
    CHECK(check->problems.empty());
    CHECK(check->forms == 40);
    CHECK(check->cases == 20);
  }
  auto e = Engine::Open(eo);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  CHECK((*e)->GetCase("demo", "pc5")->properties.at("n") == "2");
  CHECK((*e)->GetCase("demo", "pc3")->properties.at("n") == "1");  // its update is archived
  CHECK((*e)->GetForm("demo", "pu3")->state == FormState::kArchived);
  int n = 0;
  storage::CaseFilter f;
  f.domain = "demo";
  REQUIRE((*e)->ListCases(f, [&](const CaseRecord&) { return ++n > 0; }).ok());
  CHECK(n == 20);
  REQUIRE((*e)->RelayChanges().ok());
  CHECK((*e)->Database(0)->ReadOutbox(0, 100)->empty());
}

TEST_CASE("Postgres: a restart mid-load fails submissions cleanly with 503, then they succeed") {
  if (cctest::TestServer("COMMCARE_TEST_PG").empty()) return;
  cctest::PrivatePostgres pg;
  std::string dir = cctest::TempDir("pgrestart");
  InitOptions io;
  io.data_dir = dir;
  io.shards = 16;
  io.primary =
      fmt::format(R"({{"kind": "postgres", "databases": ["{} dbname=postgres"]}})", pg.dsn);
  auto st = Engine::Init(io);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  EngineOptions eo;
  eo.data_dir = dir;
  auto e = Engine::Open(eo);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  auto form = [](int i) {
    return CaseForm(fmt::format("rf{}", i), fmt::format("rc{}", i),
                    "<create><case_type>t</case_type></create>");
  };
  for (int i = 0; i < 5; ++i) REQUIRE(Submit(e->get(), form(i)).http_status == 201);
  pg.Stop();
  auto down = Submit(e->get(), form(5));
  CHECK(down.http_status == 503);
  CHECK(down.message.find("postgres") != std::string::npos);
  pg.Start();
  SubmitResponse up;
  for (int attempt = 0; attempt < 20; ++attempt) {  // the pool reconnects on the next request
    up = Submit(e->get(), form(5));
    if (up.http_status == 201) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(up.http_status == 201);
  CHECK(up.state == FormState::kNormal);  // not a duplicate: nothing of the failed try was kept
  auto check = (*e)->Check();
  REQUIRE_MESSAGE(check.ok(), check.status().ToString());
  CHECK(check->problems.empty());
  CHECK(check->forms == 6);
  CHECK(check->cases == 6);
}

TEST_CASE("Postgres: two engines on one store lose no update and relay each change once") {
  // Two processes' worth of engines (own data directories) on the same two databases and one
  // Kafka log, both relaying: concurrent updates of the same cases, one new form sent to both.
  const std::vector<std::string> dsns = cctest::NewPostgresDatabases(2);
  const std::string boot = cctest::TestServer("COMMCARE_TEST_KAFKA");
  if (boot.empty() || dsns.empty()) return;
  const char* control = std::getenv("COMMCARE_TEST_KAFKA_CONTROL");
  const std::string base = cctest::TempDir("pgtwo");
  std::unique_ptr<Engine> engines[2];
  for (int k = 0; k < 2; ++k) {
    InitOptions io = ServerOnTwoDatabases(base, k, dsns);
    io.change_log = fmt::format(
        R"({{"kind": "kafka", "bootstrap_servers": "{}", "topic_control": "{}",
            "topic_prefix": "two{:x}.", "partitions": 8}})",
        boot, control ? control : "", std::hash<std::string>{}(base));
    auto st = Engine::Init(io);  // the second applies the schema again: a no-op
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    EngineOptions eo;
    eo.data_dir = io.data_dir;
    auto e = Engine::Open(eo);
    REQUIRE_MESSAGE(e.ok(), e.status().ToString());
    engines[k] = std::move(e).value();
  }
  constexpr int kThreads = 4, kForms = 25, kCases = 5;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kForms; ++i) {
        std::string blocks;
        for (int c = 0; c < kCases; ++c)
          blocks += fmt::format(
              R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="shared-{}" date_modified="2020-01-01T00:00:00Z" user_id="u1"><update><f{}_{}>1</f{}_{}></update></case>)",
              c, t, i, t, i);
        std::string xml = CaseForm(fmt::format("two-{}-{}", t, i), "own-" + std::to_string(t),
                                   "<update><n>1</n></update>");
        xml.insert(xml.find("</data>"), blocks);
        auto r = Submit(engines[t % 2].get(), xml);
        if (r.http_status != 201 && failures++ == 0) MESSAGE(r.http_status << " " << r.message);
        // And a form living in shared-0's own database that updates only it (its locks are
        // taken inside the commit, against the other forms' session locks).
        std::string id;
        for (int n = 0;
             id.empty() || engines[0]->DatabaseFor(id) != engines[0]->DatabaseFor("shared-0"); ++n)
          id = fmt::format("one-{}-{}-{}", t, i, n);
        auto one = Submit(engines[t % 2].get(),
                          CaseForm(id, "shared-0",
                                   fmt::format("<update><s{}_{}>1</s{}_{}></update>", t, i, t, i)));
        if (one.http_status != 201 && failures++ == 0)
          MESSAGE(one.http_status << " " << one.message);
      }
    });
  // One new form reaches both servers at once: one stores it, the other a duplicate of it.
  const std::string twin = CaseForm("twin", "twin-case", "<update><n>1</n></update>");
  std::thread a([&] { CHECK(Submit(engines[0].get(), twin).http_status == 201); });
  std::thread b([&] { CHECK(Submit(engines[1].get(), twin).http_status == 201); });
  for (auto& t : ts) t.join();
  a.join();
  b.join();
  CHECK(failures == 0);
  // Every update of every thread is on its case: f<t>_<i> on each shared case, s<t>_<i> (the
  // single-database forms) on shared-0.
  auto updates_on = [&](int c, const char* prefix) {
    auto got = engines[c % 2]->GetCase("demo", fmt::format("shared-{}", c));
    REQUIRE(got.ok());
    int n = 0;
    for (int t = 0; t < kThreads; ++t)
      for (int i = 0; i < kForms; ++i)
        n += static_cast<int>(got->properties.count(fmt::format("{}{}_{}", prefix, t, i)));
    return n;
  };
  for (int c = 0; c < kCases; ++c) CHECK(updates_on(c, "f") == kThreads * kForms);
  CHECK(updates_on(0, "s") == kThreads * kForms);
  auto original = engines[1]->GetForm("demo", "twin");
  REQUIRE(original.ok());
  CHECK(original->state == FormState::kNormal);
  // Both relay loops run; the lease lets one relay. Wait for the outboxes to empty.
  int64_t left = -1;
  for (int i = 0; i < 300 && left != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = 0;
    for (int d = 0; d < 2; ++d)
      left += static_cast<int64_t>(engines[0]->Database(d)->ReadOutbox(0, 100000)->size());
  }
  REQUIRE(left == 0);
  // Each change exactly once: a form record per form (the twin's duplicate has its own id),
  // a case record per case per form that touched it.
  std::map<std::string, int> per_doc;
  int forms = 0, cases = 0;
  for (const char* topic : {"form-sql", "case-sql"}) {
    auto parts = engines[0]->Changes()->Partitions(topic);
    REQUIRE(parts.ok());
    for (int p = 0; p < *parts; ++p) {
      auto recs = engines[0]->Changes()->Read(topic, p, 0, 1000000);
      REQUIRE(recs.ok());
      for (const auto& r : *recs) {
        ++per_doc[r.key];
        ++(std::string_view(topic) == "form-sql" ? forms : cases);
      }
    }
  }
  CHECK(forms == 2 * kThreads * kForms + 2);
  CHECK(cases == kThreads * kForms * (kCases + 2) + 1);  // + the twin's case
  for (int c = 0; c < kCases; ++c)
    CHECK(per_doc[fmt::format("shared-{}", c)] == (c == 0 ? 2 : 1) * kThreads * kForms);
  CHECK(per_doc["twin"] == 1);
  // The relaying engine goes (its lease with it); the other takes the relay over, fences the
  // old producer, reads the marks, and appends only what is new.
  auto lead0 = engines[0]->Database(0)->HoldRelayLease();
  REQUIRE(lead0.ok());
  const int leader = *lead0 ? 0 : 1, other = 1 - leader;
  CHECK_FALSE(*engines[other]->Database(0)->HoldRelayLease());  // one holder at a time
  engines[leader].reset();
  for (int i = 0; i < 10; ++i)
    REQUIRE(Submit(engines[other].get(),
                   CaseForm(fmt::format("after-{}", i), "shared-0",
                            fmt::format("<update><after_{}>1</after_{}></update>", i, i)))
                .http_status == 201);
  int64_t after_left = -1, after_forms = 0;
  for (int i = 0; i < 300 && (after_left != 0 || after_forms != forms + 10); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after_left = 0;
    for (int d = 0; d < 2; ++d)
      after_left +=
          static_cast<int64_t>(engines[other]->Database(d)->ReadOutbox(0, 100000)->size());
    after_forms = 0;
    auto parts = engines[other]->Changes()->Partitions("form-sql");
    REQUIRE(parts.ok());
    for (int p = 0; p < *parts; ++p)
      after_forms +=
          static_cast<int64_t>(engines[other]->Changes()->Read("form-sql", p, 0, 1000000)->size());
  }
  CHECK(after_left == 0);
  CHECK(after_forms == forms + 10);  // the ten new forms, nothing appended twice
}

TEST_CASE(
    "init refuses a meta or pillows setting that is not a PostgreSQL database, naming the key") {
  for (std::string key : {"meta", "pillows"}) {
    CAPTURE(key);
    auto init = [&](const char* value) {
      InitOptions o;
      o.data_dir = cctest::TempDir("badmeta");
      (key == "meta" ? o.meta : o.pillows) = value;
      return Engine::Init(o);
    };
    CHECK(init(R"({"kind": "mysql", "database": "x"})").message().find(key + ".kind") !=
          std::string::npos);
    CHECK(init(R"({"kind": "postgres"})").message().find(key + ".database") != std::string::npos);
    CHECK(init(R"({"kind": "postgres", "database": "x", "colour": 1})").message().find("colour") !=
          std::string::npos);
    CHECK(init("[1]").message().find(key + " must be a JSON object") != std::string::npos);
    CHECK(init(R"({"kind": "postgres", "database": "dbname=m"})").ok());
  }
  // A data directory whose commcare.json names a pillows database: its pillows live there.
  InitOptions o;
  o.data_dir = cctest::TempDir("pillowsat");
  CHECK(PillowStoreAt(o.data_dir) == o.data_dir + "/pillows");
  o.pillows = R"({"kind": "postgres", "database": "host=h dbname=p"})";
  REQUIRE(Engine::Init(o).ok());
  CHECK(PillowStoreAt(o.data_dir) == "postgres:host=h dbname=p");
}

namespace {

Status CommitOne(storage::PrimaryStore* s, storage::WriteBatch* b) {
  std::vector<Status> results;
  storage::WriteBatch* arr[] = {b};
  CC_RETURN_IF_ERROR(s->CommitGroup(arr, &results));
  return results[0];
}

}  // namespace

TEST_CASE("Postgres: a writer opening beside another's cross-database commit waits for it") {
  // Engine A is between its intent and its other database's batch, holding the case's lock
  // (PrimaryStore::LockKeys, as ProcessForm does). Engine B opens on the same store: it must not
  // roll A's intent forward under A, nor prune the marker A is about to write; B waits for A's
  // locks, finds the intent finished, and A's batch applies exactly once.
  const std::vector<std::string> dsns = cctest::NewPostgresDatabases(2);
  if (dsns.empty()) return;
  const std::string base = cctest::TempDir("pgintent");
  auto open = [&](int k) {
    InitOptions io = ServerOnTwoDatabases(base, k, dsns);
    auto st = Engine::Init(io);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    EngineOptions eo;
    eo.data_dir = io.data_dir;
    return Engine::Open(eo);
  };
  auto a = open(0);
  REQUIRE_MESSAGE(a.ok(), a.status().ToString());
  Engine* ea = a->get();
  std::string id;
  for (int n = 0; id.empty() || ea->DatabaseFor(id) != 1; ++n) id = fmt::format("x{}", n);
  REQUIRE(Submit(ea, CaseForm("make-x", id,
                              "<create><case_type>t</case_type><owner_id>o"
                              "</owner_id></create><update><n>1</n></update>"))
              .http_status == 201);
  auto cur = ea->GetCase("demo", id);
  REQUIRE(cur.ok());
  const std::string key = "case:" + id;
  auto held = ea->Database(1)->LockKeys(std::span<const std::string>(&key, 1));
  REQUIRE(held.ok());
  REQUIRE(*held);
  storage::WriteBatch other;
  CaseRecord next = *cur;
  next.rev = cur->rev + 1;
  next.properties["n"] = "2";
  other.ops.emplace_back(storage::PutCase{next, cur->rev});
  ChangeMeta m;
  m.document_id = id;
  m.domain = "demo";
  other.ops.emplace_back(storage::AddOutbox{m});
  other.applied_marker = "intent-under-a";
  storage::WriteBatch home;
  home.ops.emplace_back(storage::PutIntent{
      other.applied_marker,
      fmt::format(R"([{{"db": 1, "batch": {}}}])",
                  boost::json::serialize(boost::json::value(codec::EncodeBatch(other))))});
  REQUIRE(CommitOne(ea->Database(0), &home).ok());

  std::atomic<bool> opened{false};
  Result<std::unique_ptr<Engine>> b = Status::Internal("not opened");
  std::thread opener([&] {
    b = open(1);
    opened = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  CHECK_FALSE(opened.load());  // waiting for A's lock
  storage::WriteBatch again = other;
  CHECK(CommitOne(ea->Database(1), &again).ok());
  CHECK(again.outbox_seqs.size() == 1);  // A's batch wrote its rows: B had not applied it
  storage::WriteBatch done;
  done.ops.emplace_back(storage::DeleteIntent{other.applied_marker});
  REQUIRE(CommitOne(ea->Database(0), &done).ok());
  held->reset();  // A's commit is over: its locks go
  opener.join();
  REQUIRE_MESSAGE(b.ok(), b.status().ToString());
  auto got = (*b)->GetCase("demo", id);
  REQUIRE(got.ok());
  CHECK(got->rev == cur->rev + 1);
  CHECK(got->properties.at("n") == "2");
  CHECK(ea->Database(0)->PendingIntents()->empty());
  CHECK(ea->Database(1)->AppliedMarkers()->empty());  // spent: pruned by B's open
}
