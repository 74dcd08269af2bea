// The ChangeLog on Kafka (librdkafka): the production change feed.
//
// - Append is one Kafka transaction (idempotent, acks=all): the records, each sent to the
//   partition KafkaPartition(key, n) computes (the Java client's murmur2, as the embedded logs
//   use), and, with a producer mark, a record keyed by the producer in the marks topic. The
//   mark therefore commits with its records or not at all, and a relay that restarts never
//   appends twice. The mark is sent only once the brokers have acknowledged every record
//   before it, so it never reaches the log ahead of them even where uncommitted records are
//   readable (librdkafka's mock cluster before 2.15: docs/reliability.md, "Crash campaign").
// - Readers use read_committed and explicit partition assignment (CommCare's worker rule, or
//   a consumer group's, JoinGroup); offsets skip the transaction markers Kafka writes, so they
//   increase but are not dense.
// - Retention is the broker's (topic retention.ms / retention.bytes): ApplyRetention drops
//   nothing.
#include <fmt/format.h>
#include <librdkafka/rdkafka.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "commcare/storage/change_log.h"
#include "storage/backends.h"
#include "util/time.h"

namespace commcare::storage {
namespace {

constexpr const char* kMarksTopic = "__commcare_producer_marks";

using Clock = std::chrono::steady_clock;

// A producer given up (its transaction could not be aborted) drops what it still holds before
// it goes: records queued while the brokers were down must not be sent once they are back, as
// a new producer sends the batch again (a consumer's purge is a no-op).
struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const {
    if (!rk) return;
    rd_kafka_purge(
        rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING);
    rd_kafka_destroy(rk);
  }
};
using KafkaHandle = std::unique_ptr<rd_kafka_t, KafkaDeleter>;

Status Fail(std::string_view what, rd_kafka_resp_err_t err) {
  return Status::Unavailable(fmt::format("kafka: {}: {}", what, rd_kafka_err2str(err)));
}

Status FailError(std::string_view what, rd_kafka_error_t* e) {
  Status s = Status::Unavailable(fmt::format("kafka: {}: {}", what, rd_kafka_error_string(e)));
  rd_kafka_error_destroy(e);
  return s;
}

// One command to kafka_mock_broker's control port; its reply line.
Result<std::string> Control(const std::string& addr, const std::string& line) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos)
    return Status::InvalidArgument(fmt::format("topic_control {} is not host:port", addr));
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(addr.substr(0, colon).c_str(), addr.substr(colon + 1).c_str(), &hints, &res))
    return Status::Unavailable(fmt::format("kafka: cannot resolve {}", addr));
  int fd = ::socket(res->ai_family, res->ai_socktype, 0);
  bool ok = fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0;
  freeaddrinfo(res);
  std::string out;
  if (ok) {
    std::string msg = line + "\n";
    ok = ::write(fd, msg.data(), msg.size()) == static_cast<ssize_t>(msg.size());
    char buf[256];
    ssize_t n;
    while (ok && (n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  if (fd >= 0) ::close(fd);
  if (!ok) return Status::Unavailable(fmt::format("kafka: the topic control at {} is down", addr));
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

class KafkaGroupMember final : public GroupMember {
 public:
  explicit KafkaGroupMember(std::string prefix) : prefix_(std::move(prefix)) {}
  ~KafkaGroupMember() override {
    if (rk) rd_kafka_consumer_close(rk.get());  // leaves the group: a last revocation
  }

  Result<std::vector<std::pair<std::string, int>>> Assignment() override {
    while (rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 0)) {
      const rd_kafka_resp_err_t err = m->err;
      rd_kafka_message_destroy(m);  // a record fetched before its pause, or an event
      if (err && err != RD_KAFKA_RESP_ERR__PARTITION_EOF &&
          rd_kafka_fatal_error(rk.get(), nullptr, 0))
        return Fail("consumer group", err);
    }
    return std::vector<std::pair<std::string, int>>(owned_.begin(), owned_.end());
  }

  // librdkafka's rebalance callback (in Assignment's poll): takes the partitions that are
  // given, paused, and gives back those taken away.
  static void Rebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                        rd_kafka_topic_partition_list_t* parts, void* opaque) {
    auto* self = static_cast<KafkaGroupMember*>(opaque);
    const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE";
    rd_kafka_error_t* e = nullptr;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      if (cooperative)
        e = rd_kafka_incremental_assign(rk, parts);
      else
        rd_kafka_assign(rk, parts);
      rd_kafka_pause_partitions(rk, parts);
      for (int i = 0; i < parts->cnt; ++i) self->owned_.insert(self->Local(parts->elems[i]));
    } else {  // revoked, lost, or an error: give them back
      for (int i = 0; i < parts->cnt; ++i) self->owned_.erase(self->Local(parts->elems[i]));
      if (cooperative && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        e = rd_kafka_incremental_unassign(rk, parts);
      } else {
        rd_kafka_assign(rk, nullptr);
        self->owned_.clear();
      }
    }
    if (e) rd_kafka_error_destroy(e);
  }

  KafkaHandle rk;

 private:
  std::pair<std::string, int> Local(const rd_kafka_topic_partition_t& p) const {
    std::string_view t = p.topic;
    if (t.starts_with(prefix_)) t.remove_prefix(prefix_.size());
    return {std::string(t), p.partition};
  }

  std::string prefix_;
  std::set<std::pair<std::string, int>> owned_;
};

class KafkaChangeLog final : public ChangeLog {
 public:
  explicit KafkaChangeLog(KafkaChangeLogOptions o) : o_(std::move(o)) {}

  Status Open() {
    if (o_.bootstrap_servers.empty())
      return Status::InvalidArgument("kafka: bootstrap_servers is required");
    if (o_.default_partitions <= 0)
      return Status::InvalidArgument("kafka: default_partitions must be positive");
    CC_ASSIGN_OR_RETURN(consumer_, NewHandle(RD_KAFKA_CONSUMER));
    if (o_.read_only) return RefreshMetadata();
    // The producer is made at the first append or fence: opening one would fence the process
    // that is relaying now (one transactional id per deployment).
    return CreateTopic(kMarksTopic, 1, /*internal=*/true);
  }

  ~KafkaChangeLog() override = default;

  Status CreateTopic(std::string_view topic, int partitions) override {
    if (o_.read_only) return Status::FailedPrecondition("kafka: this change log is read-only");
    return CreateTopic(topic, partitions, false);
  }

  Result<int> Partitions(std::string_view topic) override {
    {
      std::lock_guard l(meta_mu_);
      if (auto it = partitions_.find(std::string(topic)); it != partitions_.end())
        return it->second;
    }
    CC_RETURN_IF_ERROR(RefreshMetadata());
    std::lock_guard l(meta_mu_);
    if (auto it = partitions_.find(std::string(topic)); it != partitions_.end()) return it->second;
    return Status::NotFound(fmt::format("no topic {}", topic));
  }

  Result<std::vector<std::string>> Topics() override {
    CC_RETURN_IF_ERROR(RefreshMetadata());
    std::lock_guard l(meta_mu_);
    std::vector<std::string> out;
    for (const auto& [t, n] : partitions_)
      if (t != kMarksTopic) out.push_back(t);
    return out;  // std::map: sorted
  }

  // A new producer under the transactional id: init_transactions aborts what another holder
  // of the id left open and fences it from committing again.
  Status FenceOtherWriters() override {
    if (o_.read_only) return Status::FailedPrecondition("kafka: this change log is read-only");
    std::lock_guard l(producer_mu_);
    producers_[o_.transactional_id].reset();
    return NewProducer(o_.transactional_id);
  }

  Status Append(std::span<const ChangeMessage> messages, const ProducerMark* mark) override {
    if (o_.read_only) return Status::FailedPrecondition("kafka: this change log is read-only");
    std::map<std::string, int> counts;
    for (const auto& m : messages) {
      if (counts.count(m.topic)) continue;
      auto n = Partitions(m.topic);
      if (!n.ok() && n.status().IsNotFound()) {
        CC_RETURN_IF_ERROR(CreateTopic(m.topic, o_.default_partitions));
        n = Partitions(m.topic);
      }
      if (!n.ok()) return n.status();
      counts[m.topic] = *n;
    }
    std::lock_guard l(producer_mu_);
    const std::string txid = TransactionalIdFor(mark);
    KafkaHandle& producer = producers_[txid];
    if (!producer) CC_RETURN_IF_ERROR(NewProducer(txid));
    rd_kafka_t* rk = producer.get();
    if (auto* e = rd_kafka_begin_transaction(rk)) {
      producer.reset();  // not in a state to begin: a new producer next time
      return FailError("begin", e);
    }
    rd_kafka_poll(rk, 0);  // delivery reports of an earlier transaction's purged records
    const int64_t failed_before = delivery_failures_;
    Status s;
    for (const auto& m : messages) {
      s = Produce(rk, m.topic, KafkaPartition(m.key, counts[m.topic]), m.key, m.value);
      if (!s.ok()) break;
    }
    if (s.ok() && mark) s = AwaitDelivery(rk, failed_before);
    if (s.ok() && mark)
      s = Produce(rk, kMarksTopic, 0, mark->producer, std::to_string(mark->value));
    if (s.ok()) {
      if (auto* e = rd_kafka_commit_transaction(rk, o_.timeout_ms)) s = FailError("commit", e);
    }
    if (!s.ok()) {
      if (auto* e = rd_kafka_abort_transaction(rk, o_.timeout_ms)) {
        // The abort itself failed (brokers unreachable): start over with a new producer,
        // whose init_transactions fences this one and aborts what it left open.
        rd_kafka_error_destroy(e);
        producer.reset();
      }
      return Recover(s, &producer);
    }
    {
      std::lock_guard w(wait_mu_);
      ++appends_;
    }
    wait_cv_.notify_all();
    return Status::Ok();
  }

  Result<int64_t> GetProducerMark(std::string_view producer) override {
    if (!Partitions(kMarksTopic).ok()) return int64_t{0};  // no writer has run yet
    CC_ASSIGN_OR_RETURN(int64_t lo, StartOffset(kMarksTopic, 0));
    CC_ASSIGN_OR_RETURN(int64_t hi, EndOffset(kMarksTopic, 0));
    // The newest mark of this producer: read back from the end, a window at a time.
    constexpr int64_t kWindow = 512;
    while (hi > lo) {
      int64_t from = std::max(lo, hi - kWindow);
      CC_ASSIGN_OR_RETURN(auto recs,
                          ReadRaw(kMarksTopic, 0, from, static_cast<size_t>(hi - from), hi));
      for (auto it = recs.rbegin(); it != recs.rend(); ++it)
        if (it->key == producer) return std::stoll(it->value);
      hi = from;
    }
    return int64_t{0};
  }

  Result<std::vector<ChangeRecord>> Read(std::string_view topic, int partition, int64_t from,
                                         size_t max) override {
    CC_ASSIGN_OR_RETURN(int n, Partitions(topic));
    if (partition < 0 || partition >= n)
      return Status::NotFound(fmt::format("topic {} has no partition {}", topic, partition));
    CC_ASSIGN_OR_RETURN(int64_t hi, EndOffset(topic, partition));
    return ReadRaw(topic, partition, from, max, hi);
  }

  Result<int64_t> EndOffset(std::string_view topic, int partition) override {
    return ListOffset(topic, partition, RD_KAFKA_OFFSET_END);
  }

  Result<int64_t> StartOffset(std::string_view topic, int partition) override {
    return ListOffset(topic, partition, RD_KAFKA_OFFSET_BEGINNING);
  }

  Result<int64_t> ApplyRetention(const RetentionPolicy&) override { return int64_t{0}; }

  uint64_t WaitForAppend(uint64_t seen, std::chrono::milliseconds timeout) override {
    std::unique_lock l(wait_mu_);
    wait_cv_.wait_for(l, timeout, [&] { return appends_ != seen; });
    return appends_;
  }

  // A subscribed consumer (group "<topic_prefix><group>", cooperative-sticky) that never
  // fetches: its partitions are paused as they are assigned, since reading goes through Read.
  Result<std::unique_ptr<GroupMember>> JoinGroup(std::string_view group,
                                                 std::span<const std::string> topics) override {
    if (group.empty()) return Status::InvalidArgument("kafka: a consumer group needs a name");
    if (topics.empty()) return Status::InvalidArgument("kafka: a consumer group needs topics");
    auto m = std::make_unique<KafkaGroupMember>(o_.topic_prefix);
    CC_ASSIGN_OR_RETURN(
        m->rk, NewHandle(RD_KAFKA_CONSUMER, "", o_.topic_prefix + std::string(group),
                         [&](rd_kafka_conf_t* conf) {
                           rd_kafka_conf_set_opaque(conf, m.get());
                           rd_kafka_conf_set_rebalance_cb(conf, &KafkaGroupMember::Rebalance);
                         }));
    rd_kafka_poll_set_consumer(m->rk.get());
    rd_kafka_topic_partition_list_t* sub =
        rd_kafka_topic_partition_list_new(static_cast<int>(topics.size()));
    for (const auto& t : topics)
      rd_kafka_topic_partition_list_add(sub, (o_.topic_prefix + t).c_str(), RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(m->rk.get(), sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) return Fail("subscribing", err);
    return std::unique_ptr<GroupMember>(std::move(m));
  }

 private:
  // The engine's relay (marks kRelayMarkPrefix + N, or no mark) appends under the configured id,
  // one per deployment, so a relay taking over fences the one before. A writer with marks of its
  // own (a MetaStore's "relay-meta-<id>") gets an id of its own, "<id>.<producer>": it fences
  // only its own earlier incarnations, never the engine's relay.
  std::string TransactionalIdFor(const ProducerMark* mark) const {
    if (!mark || mark->producer.starts_with(kRelayMarkPrefix)) return o_.transactional_id;
    return o_.transactional_id + "." + mark->producer;
  }

  // A client handle; a consumer with group_id set is a consumer-group member (setup adds its
  // callbacks to the configuration).
  Result<KafkaHandle> NewHandle(rd_kafka_type_t type, const std::string& transactional_id = "",
                                const std::string& group_id = "",
                                const std::function<void(rd_kafka_conf_t*)>& setup = nullptr) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char err[512];
    auto set = [&](const char* k, const std::string& v) -> Status {
      if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
        return Status::InvalidArgument(fmt::format("kafka: {}={}: {}", k, v, err));
      return Status::Ok();
    };
    Status s = set("bootstrap.servers", o_.bootstrap_servers);
    if (s.ok()) s = set("client.id", o_.client_id);
    if (s.ok()) s = set("log_level", "3");
    if (s.ok() && type == RD_KAFKA_PRODUCER) {
      s = set("transactional.id", transactional_id);
      if (s.ok()) s = set("enable.idempotence", "true");
      if (s.ok()) s = set("acks", "all");
      if (s.ok()) s = set("linger.ms", "2");
      if (s.ok()) s = set("queue.buffering.max.messages", "1000000");
      if (s.ok()) s = set("transaction.timeout.ms", std::to_string(std::max(o_.timeout_ms, 1000)));
      if (s.ok()) s = set("message.timeout.ms", std::to_string(std::max(o_.timeout_ms, 1000)));
    }
    if (s.ok() && type == RD_KAFKA_CONSUMER) {
      s = set("group.id", group_id.empty() ? o_.client_id + "-reader" : group_id);
      if (s.ok() && !group_id.empty())
        s = set("partition.assignment.strategy", "cooperative-sticky");
      if (s.ok() && !group_id.empty())
        s = set("session.timeout.ms", std::to_string(o_.session_timeout_ms));
      if (s.ok() && !group_id.empty())
        s = set("heartbeat.interval.ms", std::to_string(std::max(100, o_.session_timeout_ms / 4)));
      if (s.ok()) s = set("enable.auto.commit", "false");
      if (s.ok()) s = set("enable.auto.offset.store", "false");
      if (s.ok()) s = set("isolation.level", "read_committed");
      if (s.ok()) s = set("enable.partition.eof", "true");
      if (s.ok()) s = set("auto.offset.reset", "earliest");
      if (s.ok()) s = set("fetch.wait.max.ms", "10");
    }
    if (!s.ok()) {
      rd_kafka_conf_destroy(conf);
      return s;
    }
    if (setup) setup(conf);
    rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);  // owns conf on success
    if (!rk) {
      rd_kafka_conf_destroy(conf);
      return Status::InvalidArgument(fmt::format("kafka: {}", err));
    }
    return KafkaHandle(rk);
  }

  // One record into the open transaction (waits while librdkafka's queue is full).
  Status Produce(rd_kafka_t* rk, const std::string& topic, int partition, std::string_view key,
                 std::string_view value) {
    const std::string full = o_.topic_prefix + topic;
    while (true) {
      rd_kafka_resp_err_t err =
          rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(full.c_str()), RD_KAFKA_V_PARTITION(partition),
                            RD_KAFKA_V_KEY(key.data(), key.size()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return Status::Ok();
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return Fail("produce", err);
      rd_kafka_poll(rk, 10);
    }
  }

  // Waits until the brokers have acknowledged every record produced so far; an error if one
  // failed (delivery_failures_ grew past failed_before) or the wait timed out.
  Status AwaitDelivery(rd_kafka_t* rk, int64_t failed_before) {
    if (rd_kafka_resp_err_t err = rd_kafka_flush(rk, o_.timeout_ms))
      return Fail("delivering the records before their mark", err);
    if (int64_t failed = delivery_failures_ - failed_before; failed > 0)
      return Status::Unavailable(
          fmt::format("kafka: {} records were not delivered; their mark is not sent", failed));
    return Status::Ok();
  }

  // librdkafka's delivery report (served in the appending thread's poll, flush, commit or
  // abort): counts the records the brokers did not take.
  static void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    if (m->err) ++static_cast<KafkaChangeLog*>(opaque)->delivery_failures_;
  }

  Status NewProducer(const std::string& transactional_id) {
    CC_ASSIGN_OR_RETURN(
        auto p, NewHandle(RD_KAFKA_PRODUCER, transactional_id, "", [this](rd_kafka_conf_t* conf) {
          rd_kafka_conf_set_opaque(conf, this);
          rd_kafka_conf_set_dr_msg_cb(conf, &OnDelivery);
        }));
    if (auto* e = rd_kafka_init_transactions(p.get(), o_.timeout_ms))
      return FailError("init_transactions", e);
    producers_[transactional_id] = std::move(p);
    return Status::Ok();
  }

  // After a failed transaction: a fatal producer state means a new producer (fencing the old
  // one); the failure is reported either way and the caller retries the whole Append.
  static Status Recover(Status s, KafkaHandle* producer) {
    if (*producer) {
      char buf[256];
      if (rd_kafka_fatal_error(producer->get(), buf, sizeof buf) != RD_KAFKA_RESP_ERR_NO_ERROR)
        producer->reset();
    }
    return s;
  }

  Status CreateTopic(std::string_view topic, int partitions, bool internal) {
    if (partitions <= 0)
      return Status::InvalidArgument(fmt::format("topic {}: partitions must be positive", topic));
    if (topic.empty() || (!internal && topic == kMarksTopic))
      return Status::InvalidArgument(fmt::format("invalid topic name '{}'", topic));
    auto have = Partitions(topic);
    if (have.ok()) {
      if (*have == partitions) return Status::Ok();
      return Status::FailedPrecondition(
          fmt::format("topic {} exists with {} partitions, not {}", topic, *have, partitions));
    }
    if (!have.status().IsNotFound()) return have.status();
    const std::string full = o_.topic_prefix + std::string(topic);
    if (!o_.topic_control.empty()) {
      CC_ASSIGN_OR_RETURN(std::string reply,
                          Control(o_.topic_control, fmt::format("create {} {}", full, partitions)));
      if (reply != "ok")
        return Status::Unavailable(fmt::format("kafka: creating topic {}: {}", full, reply));
    } else {
      CC_RETURN_IF_ERROR(AdminCreate(full, partitions));
    }
    // Wait until the metadata shows it.
    auto deadline = Clock::now() + std::chrono::milliseconds(o_.timeout_ms);
    while (true) {
      CC_RETURN_IF_ERROR(RefreshMetadata());
      {
        std::lock_guard l(meta_mu_);
        if (partitions_.count(std::string(topic))) return Status::Ok();
      }
      if (Clock::now() > deadline)
        return Status::Unavailable(fmt::format("kafka: topic {} did not appear", full));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  Status AdminCreate(const std::string& full, int partitions) {
    char err[512];
    rd_kafka_NewTopic_t* nt =
        rd_kafka_NewTopic_new(full.c_str(), partitions, o_.replication_factor, err, sizeof err);
    if (!nt) return Status::InvalidArgument(fmt::format("kafka: topic {}: {}", full, err));
    rd_kafka_t* rk = consumer_.get();
    rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t* ao = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(ao, o_.timeout_ms, err, sizeof err);
    rd_kafka_CreateTopics(rk, &nt, 1, ao, q);
    rd_kafka_event_t* ev = rd_kafka_queue_poll(q, o_.timeout_ms + 1000);
    Status s;
    if (!ev) {
      s = Status::Unavailable(fmt::format("kafka: creating topic {} timed out", full));
    } else if (rd_kafka_event_error(ev)) {
      s = Fail(fmt::format("creating topic {}", full), rd_kafka_event_error(ev));
    } else if (const auto* res = rd_kafka_event_CreateTopics_result(ev)) {
      size_t n = 0;
      const rd_kafka_topic_result_t** tr = rd_kafka_CreateTopics_result_topics(res, &n);
      if (n == 1 && rd_kafka_topic_result_error(tr[0]) &&
          rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        s = Fail(fmt::format("creating topic {}", full), rd_kafka_topic_result_error(tr[0]));
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(ao);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    return s;
  }

  // Every topic (never auto-creates): the partition counts of those under the prefix.
  Status RefreshMetadata() {
    const struct rd_kafka_metadata* md = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(consumer_.get(), 1, nullptr, &md, o_.timeout_ms);
    if (err) return Fail("metadata", err);
    std::map<std::string, int> found;
    for (int i = 0; i < md->topic_cnt; ++i) {
      std::string_view name = md->topics[i].topic;
      if (md->topics[i].err || name.substr(0, o_.topic_prefix.size()) != o_.topic_prefix) continue;
      found[std::string(name.substr(o_.topic_prefix.size()))] = md->topics[i].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    std::lock_guard l(meta_mu_);
    partitions_ = std::move(found);
    return Status::Ok();
  }

  // A partition's end (RD_KAFKA_OFFSET_END) or start (RD_KAFKA_OFFSET_BEGINNING) offset, asked of
  // its leader as a ListOffsets of timestamp -1 or -2. rd_kafka_offsets_for_times keeps to its
  // timeout; rd_kafka_query_watermark_offsets in librdkafka before 2.3.0 (Debian 12 has 2.0.2)
  // waits for ever when the partition's leader is down (librdkafka #2588, fixed by #4460), which
  // held a pillow's lag report and the server's readiness check with it.
  Result<int64_t> ListOffset(std::string_view topic, int partition, int64_t which) {
    CC_ASSIGN_OR_RETURN(int n, Partitions(topic));
    if (partition < 0 || partition >= n)
      return Status::NotFound(fmt::format("topic {} has no partition {}", topic, partition));
    const std::string full = o_.topic_prefix + std::string(topic);
    // A leader that has just moved or come back answers with a transient error: asked again
    // until the timeout, as the watermark query waited for its answer.
    const auto deadline = Clock::now() + std::chrono::milliseconds(o_.timeout_ms);
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      rd_kafka_topic_partition_list_t* tpl = rd_kafka_topic_partition_list_new(1);
      rd_kafka_topic_partition_list_add(tpl, full.c_str(), partition)->offset = which;
      rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(
          consumer_.get(), tpl, static_cast<int>(std::max<int64_t>(1, left.count())));
      if (!err) err = tpl->elems[0].err;
      const int64_t offset = tpl->elems[0].offset;
      rd_kafka_topic_partition_list_destroy(tpl);
      if (!err) return offset < 0 ? int64_t{0} : offset;  // < 0: nothing written yet
      if (err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
          Clock::now() + std::chrono::milliseconds(100) >= deadline)
        return Fail(fmt::format("offsets of {}/{}", full, partition), err);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  // Records of [from, hi) (up to max), by assigning the partition to the reader.
  Result<std::vector<ChangeRecord>> ReadRaw(std::string_view topic, int partition, int64_t from,
                                            size_t max, int64_t hi) {
    std::vector<ChangeRecord> out;
    if (from >= hi || max == 0) return out;
    const std::string full = o_.topic_prefix + std::string(topic);
    std::lock_guard l(consumer_mu_);
    rd_kafka_t* rk = consumer_.get();
    rd_kafka_topic_partition_list_t* tpl = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(tpl, full.c_str(), partition)->offset =
        from < 0 ? RD_KAFKA_OFFSET_BEGINNING : from;
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, tpl);
    rd_kafka_topic_partition_list_destroy(tpl);
    if (err) return Fail("assign", err);
    Status s;
    int64_t want_next = from < 0 ? 0 : from;
    auto deadline = Clock::now() + std::chrono::milliseconds(o_.timeout_ms);
    while (out.size() < max) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
      if (!m) {
        if (Clock::now() > deadline) {
          s = Status::Unavailable(fmt::format("kafka: reading {}/{} timed out", full, partition));
          break;
        }
        continue;
      }
      // A message or event of an earlier assignment may still be queued: only this
      // partition's, at or after the position we want, count.
      if (m->rkt && (m->partition != partition || full != rd_kafka_topic_name(m->rkt) ||
                     (m->offset < want_next && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF))) {
        rd_kafka_message_destroy(m);
        continue;
      }
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        const bool ours = m->offset >= want_next;
        rd_kafka_message_destroy(m);
        if (ours) break;
        continue;
      }
      if (m->err) {
        s = Fail(fmt::format("reading {}/{}", full, partition), m->err);
        rd_kafka_message_destroy(m);
        break;
      }
      ChangeRecord r;
      r.topic = std::string(topic);
      r.partition = partition;
      r.offset = m->offset;
      rd_kafka_timestamp_type_t tt;
      int64_t ms = rd_kafka_message_timestamp(m, &tt);
      r.timestamp = ms > 0 ? ms * 1000 : util::NowMicros();
      if (m->key) r.key.assign(static_cast<const char*>(m->key), m->key_len);
      if (m->payload) r.value.assign(static_cast<const char*>(m->payload), m->len);
      rd_kafka_message_destroy(m);
      const bool last = r.offset + 1 >= hi;
      want_next = r.offset + 1;
      out.push_back(std::move(r));
      if (last) break;
    }
    rd_kafka_assign(rk, nullptr);
    if (!s.ok()) return s;
    return out;
  }

  KafkaChangeLogOptions o_;
  KafkaHandle consumer_;  // metadata, offsets, admin and reads (one partition at a time)
  std::mutex consumer_mu_;
  // Records the brokers did not take, across the producers (OnDelivery; under producer_mu_).
  // Declared before producers_: their last delivery reports may come as they are destroyed.
  int64_t delivery_failures_ = 0;
  // Transactional producers by transactional id (see TransactionalIdFor); one transaction at
  // a time across them.
  std::map<std::string, KafkaHandle> producers_;
  std::mutex producer_mu_;
  std::mutex meta_mu_;
  std::map<std::string, int> partitions_;  // topic (without the prefix) -> partitions
  std::mutex wait_mu_;
  std::condition_variable wait_cv_;
  uint64_t appends_ = 0;
};

}  // namespace

Status KafkaBuilt() { return Status::Ok(); }

Result<std::unique_ptr<ChangeLog>> OpenKafkaChangeLog(const KafkaChangeLogOptions& options) {
  auto log = std::make_unique<KafkaChangeLog>(options);
  CC_RETURN_IF_ERROR(log->Open());
  return std::unique_ptr<ChangeLog>(std::move(log));
}

}  // namespace commcare::storage
