// The Kafka change log beyond the conformance suite: an independent client reads what it
// produces, broker faults, fencing (built with COMMCARE_WITH_KAFKA).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "../test_util.h"
#include "commcare/storage/change_log.h"
#include "conformance_helpers.h"

using namespace commcare;
using namespace commcare::storage;
using cctest::KafkaForTests;
using cctest::Messages;

namespace {

// A private kafka_mock_broker (from this test's bin directory), for tests that take brokers
// down: the shared cluster stays up for the tests running beside them.
struct PrivateKafka {
  pid_t pid = -1;
  std::string bootstrap, control;
  // Points options at this cluster, with a short timeout (brokers go down in these tests).
  void Point(KafkaChangeLogOptions* o) const {
    o->bootstrap_servers = bootstrap;
    o->topic_control = control;
    o->timeout_ms = 3000;
  }
  PrivateKafka() {
    std::string exe =
        (std::filesystem::canonical("/proc/self/exe").parent_path() / "kafka_mock_broker").string();
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::execl(exe.c_str(), exe.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    std::string line;
    char ch;
    while (::read(fds[0], &ch, 1) == 1 && ch != '\n') line += ch;
    ::close(fds[0]);
    auto b = line.find("bootstrap="), c = line.find(" control=");
    REQUIRE_MESSAGE(b != std::string::npos, "kafka_mock_broker did not start: " << line);
    bootstrap = line.substr(b + 10, c - b - 10);
    control = line.substr(c + 9);
  }
  ~PrivateKafka() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// A command to a kafka_mock_broker's control port (fault injection), through bash's /dev/tcp.
std::string MockControl(const std::string& addr, const std::string& cmd) {
  auto colon = addr.rfind(':');
  std::string sh = fmt::format("bash -c 'exec 3<>/dev/tcp/{}/{}; echo \"{}\" >&3; cat <&3'",
                               addr.substr(0, colon), addr.substr(colon + 1), cmd);
  std::string out;
  FILE* p = ::popen(sh.c_str(), "r");
  REQUIRE(p);
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

}  // namespace

TEST_CASE("Kafka ChangeLog: kcat reads what we produce, in the partitions we chose") {
  std::string dir = cctest::FreshTempDir("cc-log", "kcat");
  auto o = KafkaForTests(dir);
  if (!o) return;  // no cluster outside CI (KafkaForTests fails under CI=true)
  auto log = OpenKafkaChangeLog(*o);
  REQUIRE_MESSAGE(log.ok(), log.status().ToString());
  REQUIRE((*log)->CreateTopic("case-sql", 4).ok());
  REQUIRE((*log)->Append(Messages("case-sql", 40, "doc-")).ok());
  for (int p = 0; p < 4; ++p) {
    std::string cmd = fmt::format(
        "kcat -C -b {} -t {}case-sql -p {} -o beginning -e -q -X isolation.level=read_committed "
        "-f '%k=%s|'",
        o->bootstrap_servers, o->topic_prefix, p);
    FILE* pipe = ::popen(cmd.c_str(), "r");
    REQUIRE(pipe);
    std::string got;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) got.append(buf, n);
    REQUIRE(::pclose(pipe) == 0);
    std::string want;
    for (const auto& r : *(*log)->Read("case-sql", p, 0, 100)) {
      CHECK(KafkaPartition(r.key, 4) == p);
      want += r.key + "=" + r.value + "|";
    }
    CAPTURE(p);
    CHECK(got == want);
  }
}

TEST_CASE("Kafka ChangeLog: broker errors and a broker down lose and duplicate nothing") {
  std::string dir = cctest::FreshTempDir("cc-log", "faults");
  auto o = KafkaForTests(dir);
  if (!o) return;
  PrivateKafka kafka;
  kafka.Point(&*o);
  auto opened = OpenKafkaChangeLog(*o);
  REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
  auto& log = *opened;
  REQUIRE(log->CreateTopic("f", 2).ok());
  // Retriable produce errors (NOT_LEADER_FOR_PARTITION): the idempotent producer retries.
  CHECK(MockControl(kafka.control, "errors 5 6") == "ok\n");
  ProducerMark m1{"relay-f", 10};
  REQUIRE(log->Append(Messages("f", 30, "a"), &m1).ok());
  // Every broker down: the append fails within the timeout and leaves no trace.
  for (int b = 1; b <= 3; ++b)
    CHECK(MockControl(kafka.control, fmt::format("down {}", b)) == "ok\n");
  ProducerMark m2{"relay-f", 20};
  Status down = log->Append(Messages("f", 30, "b"), &m2);
  CHECK(!down.ok());
  for (int b = 1; b <= 3; ++b) CHECK(MockControl(kafka.control, fmt::format("up {}", b)) == "ok\n");
  // The relay retries the same batch until it lands (a new producer if the old one is fatal).
  Status s;
  for (int i = 0; i < 10; ++i) {
    s = log->Append(Messages("f", 30, "b"), &m2);
    if (s.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  CHECK(*log->GetProducerMark("relay-f") == 20);
  std::map<std::string, int> seen;
  for (int p = 0; p < 2; ++p)
    for (const auto& r : *log->Read("f", p, 0, 1000)) seen[r.key]++;
  CHECK(seen.size() == 60);
  for (const auto& [k, n] : seen) {
    CAPTURE(k);
    CHECK(n == 1);
  }
}

TEST_CASE("Kafka ChangeLog: a relay takes over with its marks, beside a writer with its own") {
  // Two processes' logs on one transactional id. (librdkafka's mock cluster does not fence an
  // older producer epoch — a fenced producer still commits there, tried — so what fencing
  // protects against cannot be shown here; the takeover's steps and the producers per
  // transactional id can.)
  std::string dir = cctest::FreshTempDir("cc-log", "fence");
  auto o = KafkaForTests(dir);
  if (!o) return;  // no cluster outside CI (KafkaForTests fails under CI=true)
  auto a = OpenKafkaChangeLog(*o);
  auto b = OpenKafkaChangeLog(*o);
  REQUIRE_MESSAGE(a.ok(), a.status().ToString());
  REQUIRE_MESSAGE(b.ok(), b.status().ToString());
  ProducerMark relay{"relay-db0", 1}, meta_a{"relay-meta-a", 1}, meta_b{"relay-meta-b", 1};
  // a relays and writes marks of its own under a second transactional id, interleaved.
  REQUIRE((*a)->Append(Messages("case-sql", 3, "a-"), &relay).ok());
  REQUIRE((*a)->Append(Messages("domain", 1, "ma-"), &meta_a).ok());
  REQUIRE((*b)->Append(Messages("domain", 2, "mb-"), &meta_b).ok());
  relay.value = 2;
  REQUIRE((*a)->Append(Messages("case-sql", 3, "a2-"), &relay).ok());
  // b takes the relay over: a new producer under the relay's id, then the marks.
  REQUIRE((*b)->FenceOtherWriters().ok());
  CHECK(*(*b)->GetProducerMark("relay-db0") == 2);
  relay.value = 3;
  REQUIRE((*b)->Append(Messages("case-sql", 3, "b-"), &relay).ok());
  CHECK(*(*a)->GetProducerMark("relay-db0") == 3);
  CHECK(*(*a)->GetProducerMark("relay-meta-a") == 1);
  CHECK(*(*a)->GetProducerMark("relay-meta-b") == 1);
  size_t cases = 0, domains = 0;
  for (int p = 0; p < *(*b)->Partitions("case-sql"); ++p)
    cases += (*b)->Read("case-sql", p, 0, 100)->size();
  for (int p = 0; p < *(*b)->Partitions("domain"); ++p)
    domains += (*b)->Read("domain", p, 0, 100)->size();
  CHECK(cases == 9);
  CHECK(domains == 3);
}

TEST_CASE("Kafka ChangeLog: a mark never reaches the log before its records") {
  // librdkafka's mock cluster before 2.15 shows every record as soon as it is produced,
  // committed or not (docs/reliability.md, "Crash campaign"). A mark that got there ahead of
  // its records would be read by the next relay, which would dequeue records that are not in
  // the log. Here the records' partition leader is down while the mark's and the transaction
  // coordinator are up: the append must fail without its mark showing.
  std::string dir = cctest::FreshTempDir("cc-log", "mark-order");
  auto o = KafkaForTests(dir);
  if (!o) return;
  PrivateKafka kafka;
  kafka.Point(&*o);
  auto control = [&](const std::string& cmd) {
    CAPTURE(cmd);
    CHECK(MockControl(kafka.control, cmd) == "ok\n");
  };
  // The leaders are placed before the log opens: a client that learns of a move only when
  // the old leader is down may wait for it (rd_kafka_query_watermark_offsets did, past its
  // timeout).
  const std::string marks = o->topic_prefix + "__commcare_producer_marks";
  control(fmt::format("create {} 1", marks));
  control(fmt::format("create {}f 1", o->topic_prefix));
  control(fmt::format("leader {} 0 1", marks));
  control(fmt::format("leader {}f 0 2", o->topic_prefix));
  control(fmt::format("coordinator transaction {}.relay-f 1", o->transactional_id));
  auto opened = OpenKafkaChangeLog(*o);
  REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
  auto& log = *opened;
  REQUIRE(log->CreateTopic("f", 1).ok());
  auto mark_of = [&]() -> int64_t {
    auto v = log->GetProducerMark("relay-f");
    REQUIRE_MESSAGE(v.ok(), v.status().ToString());
    return *v;
  };
  ProducerMark m{"relay-f", 1};
  REQUIRE(log->Append(Messages("f", 3, "a"), &m).ok());
  REQUIRE(mark_of() == 1);
  control("down 2");
  m.value = 2;
  CHECK(!log->Append(Messages("f", 3, "b"), &m).ok());
  CHECK(mark_of() == 1);
  control("up 2");
  Status s;
  for (int i = 0; i < 10; ++i) {  // the relay appends the same batch again until it lands
    s = log->Append(Messages("f", 3, "b"), &m);
    if (s.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  CHECK(mark_of() == 2);
  std::map<std::string, int> seen;
  auto read = log->Read("f", 0, 0, 100);
  REQUIRE_MESSAGE(read.ok(), read.status().ToString());
  for (const auto& r : *read) seen[r.key]++;
  CHECK(seen.size() == 6);
  for (const auto& [k, n] : seen) {
    CAPTURE(k);
    CHECK(n == 1);
  }
}

TEST_CASE("Kafka ChangeLog: an offset query keeps to its timeout while the leader is down") {
  // rd_kafka_query_watermark_offsets (librdkafka before 2.3.0, #2588) waited for ever for a
  // partition whose leader was down; a pillow's lag report and the readiness check waited with
  // it. The offsets now come from rd_kafka_offsets_for_times, which keeps to its timeout.
  std::string dir = cctest::FreshTempDir("cc-log", "offset-timeout");
  auto o = KafkaForTests(dir);
  if (!o) return;
  PrivateKafka kafka;
  kafka.Point(&*o);
  o->timeout_ms = 2000;
  auto control = [&](const std::string& cmd) {
    CAPTURE(cmd);
    CHECK(MockControl(kafka.control, cmd) == "ok\n");
  };
  control(fmt::format("create {}g 1", o->topic_prefix));
  control(fmt::format("leader {}g 0 2", o->topic_prefix));
  auto opened = OpenKafkaChangeLog(*o);
  REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
  auto& log = *opened;
  REQUIRE(log->CreateTopic("g", 1).ok());
  REQUIRE(log->Append(Messages("g", 3, "a")).ok());
  auto end = log->EndOffset("g", 0);
  REQUIRE_MESSAGE(end.ok(), end.status().ToString());
  CHECK(*end == 3);
  CHECK(*log->StartOffset("g", 0) == 0);
  control("down 2");
  const auto t0 = std::chrono::steady_clock::now();
  auto down = log->EndOffset("g", 0);
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(!down.ok());
  CHECK(waited < std::chrono::seconds(6));  // the 2 s timeout (leader lookup, then the query)
  control("up 2");
  Result<int64_t> back = Status::Unavailable("not asked yet");
  for (int i = 0; i < 20 && !back.ok(); ++i) {
    back = log->EndOffset("g", 0);
    if (!back.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  REQUIRE_MESSAGE(back.ok(), back.status().ToString());
  CHECK(*back == 3);
}
