// Pillows following a Kafka change log: lag 0 past transaction markers, consumer groups
// (built with COMMCARE_WITH_KAFKA; runs against the test cluster).
#include <commcare/pillows.h>
#include <fmt/ranges.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "engine_helpers.h"
#include "pillow_helpers.h"

using namespace commcare;
using cctest::AllRecords;
using cctest::OpenHost;
using cctest::Patient;
using cctest::Search;
using cctest::Submit;

namespace {

// Initialises a new data directory (in io) whose change log is the test Kafka cluster, with
// topics of its own and the partition count given (extra: more change_log keys); false when
// there is no cluster outside CI.
bool KafkaDataDir(const char* tag, int partitions, const char* extra, InitOptions* io) {
  const std::string boot = cctest::TestServer("COMMCARE_TEST_KAFKA");
  if (boot.empty()) return false;
  io->data_dir = cctest::TempDir(tag);
  io->shards = 16;
  const char* control = std::getenv("COMMCARE_TEST_KAFKA_CONTROL");
  io->change_log = fmt::format(
      R"({{"kind": "kafka", "bootstrap_servers": "{}", "topic_control": "{}",
          "topic_prefix": "t{:x}.", "partitions": {}{}}})",
      boot, control ? control : "", std::hash<std::string>{}(io->data_dir), partitions, extra);
  auto st = Engine::Init(*io);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  return true;
}

}  // namespace

TEST_CASE("Kafka: the engine relays to a Kafka change log and pillows follow it to lag 0") {
  InitOptions io;
  if (!KafkaDataDir("kafka", 4, "", &io)) return;
  const std::string dir = io.data_dir;
  InitOptions bad = io;
  bad.data_dir = dir + "-bad";
  bad.change_log = R"({"kind": "kafka"})";
  CHECK(Engine::Init(bad).message().find("bootstrap_servers") != std::string::npos);
  EngineOptions eo;
  eo.data_dir = dir;
  eo.relay = false;
  auto e = Engine::Open(eo);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  for (int i = 0; i < 30; ++i)
    REQUIRE(Submit(e->get(), Patient(i, "kafka-owner", 30 + i)).http_status == 201);
  REQUIRE((*e)->RelayChanges().ok());
  CHECK(*(*e)->Changes()->Partitions("case-sql") == 4);
  CHECK(AllRecords((*e)->Changes(), "case-sql").size() == 30);
  {  // a read-only engine reads the same log without fencing the writer's producer
    EngineOptions ro = eo;
    ro.read_only = true;
    auto r = Engine::Open(ro);
    REQUIRE_MESSAGE(r.ok(), r.status().ToString());
    CHECK(AllRecords((*r)->Changes(), "form-sql").size() == 30);
    CHECK((*r)->Changes()->Append(std::vector<storage::ChangeMessage>{{"x", "k", "v"}}).code() ==
          StatusCode::kFailedPrecondition);
  }
  std::string pdir = dir + "/pillows";
  auto host = OpenHost(e->get(), pdir);
  auto n = host->RunUntilCaughtUp();
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
  CaseSearchQuery q;
  q.domain = "demo";
  q.owner_id = "kafka-owner";
  q.limit = 100;
  CHECK(Search(pdir, q).cases.size() == 30);
  // Kafka's offsets skip transaction markers; the pillows still reach lag 0.
  auto status = host->GetStatus();
  REQUIRE(status.ok());
  for (const auto& ps : *status)
    for (const auto& part : ps.partitions) {
      CAPTURE(ps.name);
      CAPTURE(part.topic);
      CHECK(part.lag == 0);
    }
  // A second relay after a restart appends nothing twice (the mark is in Kafka).
  e->reset();
  auto again = Engine::Open(eo);
  REQUIRE_MESSAGE(again.ok(), again.status().ToString());
  REQUIRE((*again)->RelayChanges().ok());
  CHECK(AllRecords((*again)->Changes(), "case-sql").size() == 30);
}

namespace {

// Records which member processed each change of form-sql, by (partition, offset).
struct Tally : ChangeProcessor {
  std::mutex* mu;
  std::map<std::pair<int, int64_t>, std::vector<int>>* seen;
  int member;
  Tally(std::mutex* m, std::map<std::pair<int, int64_t>, std::vector<int>>* s, int k)
      : mu(m), seen(s), member(k) {}
  Status Process(Engine&, const Change& c) override {
    std::lock_guard l(*mu);
    (*seen)[{c.partition, c.offset}].push_back(member);
    return Status::Ok();
  }
};

}  // namespace

TEST_CASE(
    "Kafka: pillows in a consumer group share the partitions, and one joining takes some "
    "over with no change processed twice or missed") {
  InitOptions io;
  if (!KafkaDataDir("kafka-group", 8, R"(, "session_timeout_ms": 4000)", &io)) return;
  const std::string dir = io.data_dir;
  EngineOptions eo;
  eo.data_dir = dir;
  eo.relay = false;
  auto e = Engine::Open(eo);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  int forms = 0;
  auto submit = [&](int n) {
    for (int i = 0; i < n; ++i, ++forms)
      REQUIRE(Submit(e->get(), Patient(forms, "grp", 30)).http_status == 201);
    REQUIRE((*e)->RelayChanges().ok());
  };
  submit(40);

  std::mutex mu;
  std::map<std::pair<int, int64_t>, std::vector<int>> seen;
  std::vector<std::set<int>> owned(2);  // each member's partitions, as its status shows them
  std::atomic<bool> stop{false};
  auto member = [&](int k) {
    PillowHostOptions o;
    o.dir = dir + "/pillows";  // shared: checkpoints move with the partitions
    o.builtin = false;
    o.consumer_group = "tally";
    auto h = PillowHost::Open(e->get(), o);
    REQUIRE_MESSAGE(h.ok(), h.status().ToString());
    PillowConfig c;
    c.name = "tally";
    c.topics = {"form-sql"};
    c.chunk_size = 7;  // many batches, so partitions move between them
    REQUIRE((*h)->AddPillow(c, std::make_shared<Tally>(&mu, &seen, k)).ok());
    while (!stop.load()) {
      auto n = (*h)->RunUntilCaughtUp();
      REQUIRE_MESSAGE(n.ok(), n.status().ToString());
      auto st = (*h)->GetStatus();
      REQUIRE(st.ok());
      std::set<int> mine;
      for (const auto& part : (*st)[0].partitions) mine.insert(part.partition);
      {
        std::lock_guard l(mu);
        owned[static_cast<size_t>(k)] = mine;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  auto wait_for = [&](const std::function<bool()>& done, const char* what) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard l(mu);
        if (done()) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::lock_guard l(mu);
    FAIL("timed out waiting: " << std::string(what) << " (member 0 owns "
                               << fmt::format("{}", fmt::join(owned[0], ",")) << ", member 1 "
                               << fmt::format("{}", fmt::join(owned[1], ",")) << "; " << seen.size()
                               << " of " << forms << " changes processed)");
  };
  const auto all = AllRecords((*e)->Changes(), "form-sql");
  std::thread a(member, 0);
  wait_for([&] { return owned[0].size() == 8 && seen.size() == all.size(); },
           "the first member to own all 8 partitions and process every change");
  // A second member joins while changes keep coming: it takes some partitions over.
  std::thread b(member, 1);
  for (int round = 0; round < 10; ++round) {
    submit(6);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  wait_for(
      [&] {
        std::set<int> both;
        for (const auto& o : owned) both.insert(o.begin(), o.end());
        return !owned[0].empty() && !owned[1].empty() && both.size() == 8 &&
               owned[0].size() + owned[1].size() == 8 && seen.size() == static_cast<size_t>(forms);
      },
      "the partitions to be shared and every change processed");
  submit(20);
  wait_for([&] { return seen.size() == static_cast<size_t>(forms); }, "the last changes");
  stop = true;
  a.join();
  b.join();
  std::lock_guard l(mu);
  CHECK(seen.size() == static_cast<size_t>(forms));
  std::set<int> by;
  size_t twice = 0;
  for (const auto& [at, members] : seen) {
    twice += members.size() > 1;
    for (int m : members) by.insert(m);
  }
  CHECK(twice == 0);
  CHECK(by == std::set<int>{0, 1});  // both processed changes
  for (int p : owned[0]) CHECK_FALSE(owned[1].count(p));
}
