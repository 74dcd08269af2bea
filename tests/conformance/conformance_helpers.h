// Helpers the conformance suites share with the backend-specific tests beside them.
#pragma once

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "../test_util.h"
#include "commcare/storage/blob_store.h"
#include "commcare/storage/change_log.h"

namespace cctest {

// The Kafka cluster the suites run against: kafka_mock_broker's addresses in
// COMMCARE_TEST_KAFKA and COMMCARE_TEST_KAFKA_CONTROL (.ci/run and scripts/test-servers start
// it). Under CI=true a missing cluster fails the run instead of skipping Kafka.
inline std::optional<commcare::storage::KafkaChangeLogOptions> KafkaForTests(
    const std::string& dir) {
  const std::string boot = TestServer("COMMCARE_TEST_KAFKA");
  if (boot.empty()) return std::nullopt;
  commcare::storage::KafkaChangeLogOptions o;
  o.bootstrap_servers = boot;
  if (const char* c = std::getenv("COMMCARE_TEST_KAFKA_CONTROL")) o.topic_control = c;
  // A fresh namespace per directory, so every test starts from an empty log (and a reopen of
  // the same directory finds its topics again).
  o.topic_prefix = fmt::format("t{:x}.", std::hash<std::string>{}(dir));
  o.transactional_id = o.topic_prefix + "relay";
  o.timeout_ms = 15000;
  o.session_timeout_ms = 4000;  // a member that vanished holds up a rebalance this long
  return o;
}

// The S3 server the suites run against: COMMCARE_TEST_S3 is its endpoint (s3rver with a bucket
// "blobs" and its default keys S3RVER/S3RVER, started by scripts/with-test-servers). Under
// CI=true a missing server fails the run instead of skipping S3.
inline std::optional<commcare::storage::S3Options> S3ForTests() {
  const std::string ep = TestServer("COMMCARE_TEST_S3");
  if (ep.empty()) return std::nullopt;
  commcare::storage::S3Options o;
  o.endpoint = ep;
  o.bucket = "blobs";
  o.access_key = "S3RVER";
  o.secret_key = "S3RVER";
  static int n = 0;
  o.prefix = fmt::format("t{}-{}-{}/", ::getpid(), n++, std::rand());  // a fresh namespace
  return o;
}

// n change messages on topic, keyed prefix0, prefix1, ...
inline std::vector<commcare::storage::ChangeMessage> Messages(const std::string& topic, int n,
                                                              const std::string& prefix) {
  std::vector<commcare::storage::ChangeMessage> out;
  for (int i = 0; i < n; ++i)
    out.push_back({topic, fmt::format("{}{}", prefix, i), fmt::format("{{\"n\":{}}}", i)});
  return out;
}

}  // namespace cctest
