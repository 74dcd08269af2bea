// ChangeLog: the partitioned change feed (Kafka's role): topics of partitions of ordered records.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commcare/status.h"

namespace commcare::storage {

// A record to append: its topic, key (the document id, which picks the partition) and value
// (CommCare's ChangeMeta JSON).
struct ChangeMessage {
  std::string topic;
  std::string key;
  std::string value;
};

// A stored record; offsets increase per (topic, partition) from 0 (dense in the embedded logs;
// Kafka's skip its transaction markers).
struct ChangeRecord {
  std::string topic;
  int partition = 0;
  int64_t offset = 0;
  int64_t timestamp = 0;  // append time, µs since the epoch
  std::string key;
  std::string value;
};

// Retention, applied per partition by ApplyRetention: 0 means no limit.
struct RetentionPolicy {
  int64_t max_age_us = 0;  // drop records appended longer ago than this
  int64_t max_bytes = 0;   // drop the oldest records while a partition holds more than this
};

// A producer's progress mark, written atomically with the records of an Append (the relay
// records the last outbox sequence number it appended, so a restart never appends twice).
struct ProducerMark {
  std::string producer;
  int64_t value = 0;
};
// The engine relay's marks are named kRelayMarkPrefix + the database number.
inline constexpr std::string_view kRelayMarkPrefix = "relay-db";

// Kafka's Java client murmur2 hash of key (seed 0x9747b28c), as a signed 32-bit value.
int32_t KafkaMurmur2(std::string_view key);
// Kafka's default partition for a keyed record: (murmur2(key) & 0x7fffffff) % partitions.
int KafkaPartition(std::string_view key, int partitions);

// A member of a consumer group: the partitions the group's coordinator gives it, balanced over
// the members; a rebalance takes away only the partitions that move (cooperative). Reading
// stays with ChangeLog::Read, and offsets with the reader's own checkpoints. One thread.
class GroupMember {
 public:
  virtual ~GroupMember() = default;  // leaves the group (its partitions go to the others)
  // Serves the group protocol (call it at least every few minutes) and returns the (topic,
  // partition)s assigned now, sorted. A partition taken away is no longer listed when this
  // returns, and is given to another member only after that.
  virtual Result<std::vector<std::pair<std::string, int>>> Assignment() = 0;
};

// Thread safety: every method may be called from any thread.
class ChangeLog {
 public:
  virtual ~ChangeLog() = default;
  ChangeLog() = default;
  ChangeLog(const ChangeLog&) = delete;
  ChangeLog& operator=(const ChangeLog&) = delete;

  // Creates a topic with a fixed partition count; Ok if it exists with that count,
  // FailedPrecondition if it exists with another.
  virtual Status CreateTopic(std::string_view topic, int partitions) = 0;
  // The topic's partition count; NotFound if there is no such topic.
  virtual Result<int> Partitions(std::string_view topic) = 0;
  // Every topic, sorted.
  virtual Result<std::vector<std::string>> Topics() = 0;

  // Appends the records (an unknown topic is created with the default partition count) and,
  // if mark is given, sets that producer's mark, all atomically; durable on return.
  virtual Status Append(std::span<const ChangeMessage> messages,
                        const ProducerMark* mark = nullptr) = 0;
  // A producer's last mark (0 if it has none).
  virtual Result<int64_t> GetProducerMark(std::string_view producer) = 0;
  // Called by a process about to append as a producer that another process may have been
  // (a relay taking over): after it, the other's unfinished or later appends cannot commit,
  // so the marks read next are final. Logs only one process can write to need nothing.
  virtual Status FenceOtherWriters() { return Status::Ok(); }

  // Up to max records of one partition with offset >= from, in offset order (starting at the
  // earliest retained record if from is older). NotFound for an unknown topic or partition.
  virtual Result<std::vector<ChangeRecord>> Read(std::string_view topic, int partition,
                                                 int64_t from, size_t max) = 0;
  // The offset the next record of the partition will get (Kafka's high watermark).
  virtual Result<int64_t> EndOffset(std::string_view topic, int partition) = 0;
  // The earliest retained offset (== EndOffset when the partition is empty).
  virtual Result<int64_t> StartOffset(std::string_view topic, int partition) = 0;

  // Drops records the policy no longer keeps; returns how many were dropped.
  virtual Result<int64_t> ApplyRetention(const RetentionPolicy& policy) = 0;

  // Blocks until an Append made after `seen` was returned by this call (or timeout) and
  // returns the current append counter; pass 0 at first. Readers in another process just
  // wait out the timeout.
  virtual uint64_t WaitForAppend(uint64_t seen, std::chrono::milliseconds timeout) = 0;

  // Joins the consumer group named group for topics. Unimplemented on logs without groups
  // (the embedded ones: one process reads them).
  virtual Result<std::unique_ptr<GroupMember>> JoinGroup(std::string_view /*group*/,
                                                         std::span<const std::string> /*topics*/) {
    return Status::Unimplemented("consumer groups need a Kafka change log");
  }
};

// Options for the embedded change logs.
struct ChangeLogOptions {
  int default_partitions = 8;  // partitions of topics created implicitly by Append
  bool read_only = false;      // RocksDB: a secondary instance that follows the writer
  bool durable = true;         // RocksDB: sync the write-ahead log on every Append
};

// Options for the Kafka ChangeLog.
struct KafkaChangeLogOptions {
  std::string bootstrap_servers;  // "host:port,..."
  std::string topic_prefix;       // prepended to every topic ("" = none): several logs, one cluster
  // The engine relay's transactional id, one per deployment (a relay taking over fences the
  // one before); appends marked by another producer (a MetaStore's) use "<id>.<producer>".
  std::string transactional_id = "commcare-relay";
  std::string client_id = "commcare";
  int default_partitions = 8;  // partitions of topics created implicitly by Append
  int replication_factor = 1;  // of topics this log creates
  int timeout_ms = 10000;      // per broker operation
  // A consumer group member that stops heartbeating leaves the group after this long (and a
  // rebalance waits for members that joined and vanished as long).
  int session_timeout_ms = 45000;
  bool read_only = false;  // no producer (Append fails): readers never fence the writer
  // host:port of kafka_mock_broker's control port, which creates topics there (librdkafka's
  // mock cluster has no CreateTopics API); "" = Kafka's Admin API.
  std::string topic_control;
};

// An in-memory ChangeLog (tests, in-memory engines).
std::unique_ptr<ChangeLog> NewMemoryChangeLog(const ChangeLogOptions& options = {});
// The embedded ChangeLog on RocksDB in directory path (created if missing unless read_only).
Result<std::unique_ptr<ChangeLog>> OpenRocksDbChangeLog(const std::string& path,
                                                        const ChangeLogOptions& options = {});
// The ChangeLog on a Kafka cluster (librdkafka). Each Append is one transaction (idempotent,
// acks=all) that carries the producer mark too; reads are read_committed, so offsets increase
// but skip Kafka's transaction markers. Retention is the broker's: ApplyRetention drops nothing.
// Unavailable when the cluster cannot be reached within timeout_ms.
Result<std::unique_ptr<ChangeLog>> OpenKafkaChangeLog(const KafkaChangeLogOptions& options);

}  // namespace commcare::storage
