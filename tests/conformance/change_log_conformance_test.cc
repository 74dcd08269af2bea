// The conformance suite every ChangeLog implementation runs, and Kafka partitioner vectors.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "../test_util.h"
#include "commcare/storage/change_log.h"
#include "conformance_helpers.h"

using namespace commcare;
using namespace commcare::storage;
using cctest::KafkaForTests;
using cctest::Messages;

namespace {

struct LogFactory {
  const char* name;
  // Opens (or, with the same dir, reopens) a log; dir is ignored by the memory log.
  std::function<std::unique_ptr<ChangeLog>(const std::string& dir, const ChangeLogOptions&)> open;
  bool persistent;
  bool dense = true;           // offsets without gaps (Kafka's skip transaction markers)
  bool own_retention = false;  // retention is the server's (Kafka), not ApplyRetention's
};

std::vector<LogFactory> Factories() {
  std::vector<LogFactory> out = {
      {"memory",
       [](const std::string&, const ChangeLogOptions& o) { return NewMemoryChangeLog(o); }, false},
      {"rocksdb",
       [](const std::string& dir, const ChangeLogOptions& o) {
         auto r = OpenRocksDbChangeLog(dir, o);
         REQUIRE_MESSAGE(r.ok(), r.status().ToString());
         return std::move(r).value();
       },
       true},
  };
  if (KafkaForTests("probe"))
    out.push_back({"kafka",
                   [](const std::string& dir, const ChangeLogOptions& lo) {
                     auto o = *KafkaForTests(dir);
                     o.default_partitions = lo.default_partitions;
                     auto r = OpenKafkaChangeLog(o);
                     REQUIRE_MESSAGE(r.ok(), r.status().ToString());
                     return std::move(r).value();
                   },
                   true, false, true});
  return out;
}

}  // namespace

TEST_CASE("Kafka murmur2 matches the Java client's vectors") {
  // Values of org.apache.kafka.common.utils.Utils.murmur2 for these UTF-8 strings.
  CHECK(KafkaMurmur2("1") == -1993445489);
  CHECK(KafkaMurmur2("12") == 126087238);
  CHECK(KafkaMurmur2("123") == -267702483);
  CHECK(KafkaMurmur2("1234") == -1614185708);
  CHECK(KafkaMurmur2("12345") == -1188365604);
  // Partition = toPositive(hash) % n.
  CHECK(KafkaPartition("1", 8) == static_cast<int>((-1993445489 & 0x7fffffff) % 8));
  CHECK(KafkaPartition("12345", 96) == static_cast<int>((-1188365604 & 0x7fffffff) % 96));
  for (int n : {1, 3, 8, 32})
    for (int i = 0; i < 100; ++i) {
      int p = KafkaPartition(fmt::format("doc-{}", i), n);
      CHECK(p >= 0);
      CHECK(p < n);
    }
}

TEST_CASE("ChangeLog: topics, partitions and ordered offsets per partition") {
  for (const auto& f : Factories()) {
    CAPTURE(f.name);
    std::string dir = cctest::FreshTempDir("cc-log", f.name);
    auto log = f.open(dir, {});
    REQUIRE(log->CreateTopic("case-sql", 4).ok());
    CHECK(log->CreateTopic("case-sql", 4).ok());
    CHECK(log->CreateTopic("case-sql", 5).code() == StatusCode::kFailedPrecondition);
    CHECK(log->CreateTopic("bad", 0).code() == StatusCode::kInvalidArgument);
    CHECK(*log->Partitions("case-sql") == 4);
    CHECK(log->Partitions("nope").status().code() == StatusCode::kNotFound);
    CHECK(log->Read("case-sql", 4, 0, 10).status().code() == StatusCode::kNotFound);

    auto msgs = Messages("case-sql", 200, "c");
    REQUIRE(log->Append(msgs).ok());
    // An unknown topic is created with the default partition count (8).
    REQUIRE(log->Append(Messages("form-sql", 10, "f")).ok());
    CHECK(*log->Partitions("form-sql") == 8);
    CHECK(*log->Topics() == std::vector<std::string>{"case-sql", "form-sql"});

    int64_t total = 0;
    for (int p = 0; p < 4; ++p) {
      auto recs = log->Read("case-sql", p, 0, 1000);
      REQUIRE(recs.ok());
      int64_t expect = 0;
      for (const auto& r : *recs) {
        if (f.dense)
          CHECK(r.offset == expect);
        else
          CHECK(r.offset >= expect);
        expect = r.offset + 1;
        CHECK(r.partition == p);
        CHECK(KafkaPartition(r.key, 4) == p);
        CHECK(r.timestamp > 0);
      }
      if (f.dense)
        CHECK(*log->EndOffset("case-sql", p) == static_cast<int64_t>(recs->size()));
      else
        CHECK(*log->EndOffset("case-sql", p) >= expect);
      CHECK(*log->StartOffset("case-sql", p) == 0);
      total += static_cast<int64_t>(recs->size());
      // Reading from an offset and with a max.
      if (recs->size() > 3) {
        auto tail = log->Read("case-sql", p, (*recs)[2].offset, 1);
        REQUIRE(tail->size() == 1);
        CHECK((*tail)[0].offset == (*recs)[2].offset);
        CHECK((*tail)[0].key == (*recs)[2].key);
        CHECK((*tail)[0].value == (*recs)[2].value);
      }
    }
    CHECK(total == 200);
    // The records of one key keep their append order.
    REQUIRE(log->Append(
                   std::vector<ChangeMessage>{{"case-sql", "same", "1"}, {"case-sql", "same", "2"}})
                .ok());
    int p = KafkaPartition("same", 4);
    auto recs = *log->Read("case-sql", p, 0, 1000);
    REQUIRE(recs.size() >= 2);
    CHECK(recs[recs.size() - 2].value == "1");
    CHECK(recs.back().value == "2");
  }
}

TEST_CASE("ChangeLog: producer marks commit with their records and survive a reopen") {
  for (const auto& f : Factories()) {
    CAPTURE(f.name);
    std::string dir = cctest::FreshTempDir("cc-log", f.name);
    {
      auto log = f.open(dir, {});
      CHECK(*log->GetProducerMark("relay-0") == 0);
      ProducerMark m{"relay-0", 41};
      REQUIRE(log->Append(Messages("form-sql", 5, "f"), &m).ok());
      CHECK(*log->GetProducerMark("relay-0") == 41);
      CHECK(*log->GetProducerMark("relay-1") == 0);
      if (!f.persistent) continue;
    }
    auto log = f.open(dir, {});
    CHECK(*log->GetProducerMark("relay-0") == 41);
    auto count = [&] {
      int64_t n = 0;
      for (int p = 0; p < 8; ++p)
        n += static_cast<int64_t>(log->Read("form-sql", p, 0, 100)->size());
      return n;
    };
    CHECK(count() == 5);
    // New records continue the offsets; a later mark replaces the earlier one.
    ProducerMark m2{"relay-0", 97};
    REQUIRE(log->Append(Messages("form-sql", 5, "f"), &m2).ok());
    CHECK(count() == 10);
    CHECK(*log->GetProducerMark("relay-0") == 97);
  }
}

TEST_CASE("ChangeLog: retention by size and age drops the oldest and never reuses offsets") {
  for (const auto& f : Factories()) {
    CAPTURE(f.name);
    std::string dir = cctest::FreshTempDir("cc-log", f.name);
    auto log = f.open(dir, {});
    REQUIRE(log->CreateTopic("t", 1).ok());
    REQUIRE(log->Append(Messages("t", 100, "k")).ok());
    if (f.own_retention) {  // the broker's topic configuration keeps or drops records
      RetentionPolicy all;
      all.max_age_us = 1;
      CHECK(*log->ApplyRetention(all) == 0);
      CHECK(log->Read("t", 0, 0, 1000)->size() == 100);
      continue;
    }
    RetentionPolicy keep_some;
    keep_some.max_bytes = 2000;
    auto dropped = log->ApplyRetention(keep_some);
    REQUIRE(dropped.ok());
    CHECK(*dropped > 0);
    CHECK(*dropped < 100);
    CHECK(*log->StartOffset("t", 0) == *dropped);
    CHECK(*log->EndOffset("t", 0) == 100);
    auto recs = *log->Read("t", 0, 0, 1000);  // from before the start: the earliest retained
    REQUIRE(!recs.empty());
    CHECK(recs.front().offset == *dropped);
    CHECK(recs.size() == static_cast<size_t>(100 - *dropped));

    // Age: everything is older than 1 µs after a short sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    RetentionPolicy by_age;
    by_age.max_age_us = 1000;
    CHECK(*log->ApplyRetention(by_age) == 100 - *dropped);
    CHECK(*log->StartOffset("t", 0) == 100);
    CHECK(*log->EndOffset("t", 0) == 100);
    CHECK(log->Read("t", 0, 0, 10)->empty());
    if (f.persistent) {
      log.reset();
      log = f.open(dir, {});
      CHECK(*log->StartOffset("t", 0) == 100);
      CHECK(*log->EndOffset("t", 0) == 100);
    }
    REQUIRE(log->Append(Messages("t", 1, "k")).ok());
    CHECK(log->Read("t", 0, 0, 10)->front().offset == 100);
  }
}

TEST_CASE("ChangeLog: WaitForAppend wakes on an append") {
  for (const auto& f : Factories()) {
    CAPTURE(f.name);
    std::string dir = cctest::FreshTempDir("cc-log", f.name);
    auto log = f.open(dir, {});
    uint64_t seen = log->WaitForAppend(0, std::chrono::milliseconds(0));
    std::thread t([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      REQUIRE(log->Append(Messages("t", 1, "k")).ok());
    });
    auto t0 = std::chrono::steady_clock::now();
    uint64_t now = log->WaitForAppend(seen, std::chrono::seconds(10));
    t.join();
    CHECK(now > seen);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  }
}

TEST_CASE("ChangeLog: consumer group members share the partitions on Kafka, the rest refuse") {
  for (const auto& f : Factories()) {
    CAPTURE(f.name);
    const std::string dir = cctest::FreshTempDir("cc-log", "group");
    auto log = f.open(dir, {});
    REQUIRE(log->CreateTopic("t", 4).ok());
    const std::vector<std::string> topics = {"t"};
    auto a = log->JoinGroup("g", topics);
    if (std::string_view(f.name) != "kafka") {
      CHECK(a.status().code() == StatusCode::kUnimplemented);
      continue;
    }
    REQUIRE_MESSAGE(a.ok(), a.status().ToString());
    using Parts = std::vector<std::pair<std::string, int>>;
    const Parts all = {{"t", 0}, {"t", 1}, {"t", 2}, {"t", 3}};
    // Polls the members until done says their assignments are as wanted.
    auto settle = [](std::vector<GroupMember*> members,
                     const std::function<bool(const std::vector<Parts>&)>& done) {
      std::vector<Parts> got(members.size());
      for (int i = 0; i < 600; ++i) {
        for (size_t m = 0; m < members.size(); ++m) {
          auto r = members[m]->Assignment();
          REQUIRE_MESSAGE(r.ok(), r.status().ToString());
          got[m] = *r;
        }
        if (done(got)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      return false;
    };
    CHECK(settle({a->get()}, [&](const auto& g) { return g[0] == all; }));
    auto b = log->JoinGroup("g", topics);
    REQUIRE(b.ok());
    CHECK(settle({a->get(), b->get()}, [&](const auto& g) {
      Parts both = g[0];
      both.insert(both.end(), g[1].begin(), g[1].end());
      std::sort(both.begin(), both.end());
      return !g[0].empty() && !g[1].empty() && both == all;  // disjoint, all owned
    }));
    b->reset();  // leaves the group: its partitions go back to a
    CHECK(settle({a->get()}, [&](const auto& g) { return g[0] == all; }));
    // Another group sees every partition for itself.
    auto other = log->JoinGroup("h", topics);
    REQUIRE(other.ok());
    CHECK(settle({other->get()}, [&](const auto& g) { return g[0] == all; }));
    CHECK(log->JoinGroup("", topics).status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("RocksDB ChangeLog: a second writer is refused, a reader follows the writer") {
  std::string dir = cctest::FreshTempDir("cc-log", "rocks2");
  auto w = OpenRocksDbChangeLog(dir);
  REQUIRE(w.ok());
  auto second = OpenRocksDbChangeLog(dir);
  CHECK(second.status().code() == StatusCode::kFailedPrecondition);
  REQUIRE((*w)->Append(Messages("t", 3, "k")).ok());
  ChangeLogOptions ro;
  ro.read_only = true;
  auto r = OpenRocksDbChangeLog(dir, ro);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  int64_t n = 0;
  for (int p = 0; p < 8; ++p) n += *(*r)->EndOffset("t", p);
  CHECK(n == 3);
  CHECK((*r)->Append(Messages("t", 1, "k")).code() == StatusCode::kFailedPrecondition);
  REQUIRE((*w)->Append(Messages("t", 4, "x")).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // past the reader's catch-up gap
  n = 0;
  for (int p = 0; p < 8; ++p) n += static_cast<int64_t>((*r)->Read("t", p, 0, 100)->size());
  CHECK(n == 7);
  ChangeLogOptions missing;
  missing.read_only = true;
  CHECK(OpenRocksDbChangeLog(dir + "-none", missing).status().code() == StatusCode::kNotFound);
}
