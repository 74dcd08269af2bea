// Kafka's default partitioner (murmur2 of the key) and the in-memory ChangeLog.
#include "commcare/storage/change_log.h"

#include <fmt/format.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>

#include "storage/change_log_internal.h"
#include "util/time.h"

namespace commcare::storage {

int32_t KafkaMurmur2(std::string_view key) {
  // Kafka's org.apache.kafka.common.utils.Utils.murmur2, in unsigned arithmetic.
  const uint32_t m = 0x5bd1e995;
  const int r = 24;
  const auto* data = reinterpret_cast<const unsigned char*>(key.data());
  const size_t length = key.size();
  uint32_t h = 0x9747b28c ^ static_cast<uint32_t>(length);
  const size_t whole = length / 4;
  for (size_t i = 0; i < whole; ++i) {
    const unsigned char* p = data + i * 4;
    uint32_t k = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  const unsigned char* tail = data + whole * 4;
  switch (length % 4) {
    case 3:
      h ^= static_cast<uint32_t>(tail[2]) << 16;
      [[fallthrough]];
    case 2:
      h ^= static_cast<uint32_t>(tail[1]) << 8;
      [[fallthrough]];
    case 1:
      h ^= tail[0];
      h *= m;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return static_cast<int32_t>(h);
}

Status CheckCreateTopic(std::string_view topic, int partitions, int current, bool* exists) {
  *exists = false;
  if (topic.empty() || topic.find('\0') != std::string_view::npos)
    return Status::InvalidArgument("a topic needs a name without NUL bytes");
  if (partitions <= 0 || partitions > 4096)
    return Status::InvalidArgument(
        fmt::format("partitions must be between 1 and 4096 (got {})", partitions));
  if (current == 0) return Status::Ok();
  if (current != partitions)
    return Status::FailedPrecondition(
        fmt::format("topic '{}' exists with {} partitions, not {}", topic, current, partitions));
  *exists = true;
  return Status::Ok();
}

int KafkaPartition(std::string_view key, int partitions) {
  return static_cast<int>((static_cast<uint32_t>(KafkaMurmur2(key)) & 0x7fffffff) %
                          static_cast<uint32_t>(partitions));
}

namespace {

class MemoryChangeLog final : public ChangeLog {
 public:
  explicit MemoryChangeLog(ChangeLogOptions o) : opts_(o) {}

  Status CreateTopic(std::string_view topic, int partitions) override {
    std::lock_guard l(mu_);
    return CreateLocked(topic, partitions);
  }
  Result<int> Partitions(std::string_view topic) override {
    std::lock_guard l(mu_);
    auto it = topics_.find(std::string(topic));
    if (it == topics_.end()) return Status::NotFound(fmt::format("no topic '{}'", topic));
    return static_cast<int>(it->second.size());
  }
  Result<std::vector<std::string>> Topics() override {
    std::lock_guard l(mu_);
    std::vector<std::string> out;
    for (const auto& [t, _] : topics_) out.push_back(t);
    return out;
  }

  Status Append(std::span<const ChangeMessage> messages, const ProducerMark* mark) override {
    {
      std::lock_guard l(mu_);
      for (const auto& m : messages)
        if (m.topic.empty()) return Status::InvalidArgument("a change record needs a topic");
      int64_t now = util::NowMicros();
      for (const auto& m : messages) {
        if (!topics_.count(m.topic))
          CC_RETURN_IF_ERROR(CreateLocked(m.topic, opts_.default_partitions));
        auto& parts = topics_[m.topic];
        int p = KafkaPartition(m.key, static_cast<int>(parts.size()));
        Part& part = parts[p];
        part.records.push_back(ChangeRecord{m.topic, p,
                                            part.start + static_cast<int64_t>(part.records.size()),
                                            now, m.key, m.value});
        part.bytes += Size(part.records.back());
      }
      if (mark) marks_[mark->producer] = mark->value;
      ++appends_;
    }
    cv_.notify_all();
    return Status::Ok();
  }
  Result<int64_t> GetProducerMark(std::string_view producer) override {
    std::lock_guard l(mu_);
    auto it = marks_.find(std::string(producer));
    return it == marks_.end() ? 0 : it->second;
  }

  Result<std::vector<ChangeRecord>> Read(std::string_view topic, int partition, int64_t from,
                                         size_t max) override {
    std::lock_guard l(mu_);
    CC_ASSIGN_OR_RETURN(Part * part, Find(topic, partition));
    std::vector<ChangeRecord> out;
    int64_t i = std::max<int64_t>(from, part->start) - part->start;
    for (; i < static_cast<int64_t>(part->records.size()) && out.size() < max; ++i)
      out.push_back(part->records[static_cast<size_t>(i)]);
    return out;
  }
  Result<int64_t> EndOffset(std::string_view topic, int partition) override {
    std::lock_guard l(mu_);
    CC_ASSIGN_OR_RETURN(Part * part, Find(topic, partition));
    return part->start + static_cast<int64_t>(part->records.size());
  }
  Result<int64_t> StartOffset(std::string_view topic, int partition) override {
    std::lock_guard l(mu_);
    CC_ASSIGN_OR_RETURN(Part * part, Find(topic, partition));
    return part->start;
  }

  Result<int64_t> ApplyRetention(const RetentionPolicy& policy) override {
    std::lock_guard l(mu_);
    int64_t dropped = 0, cutoff = policy.max_age_us ? util::NowMicros() - policy.max_age_us : 0;
    for (auto& [_, parts] : topics_)
      for (auto& part : parts)
        while (!part.records.empty() && ((cutoff && part.records.front().timestamp < cutoff) ||
                                         (policy.max_bytes && part.bytes > policy.max_bytes))) {
          part.bytes -= Size(part.records.front());
          part.records.pop_front();
          ++part.start;
          ++dropped;
        }
    return dropped;
  }

  uint64_t WaitForAppend(uint64_t seen, std::chrono::milliseconds timeout) override {
    std::unique_lock l(mu_);
    cv_.wait_for(l, timeout, [&] { return appends_ > seen; });
    return appends_;
  }

 private:
  struct Part {
    std::deque<ChangeRecord> records;
    int64_t start = 0;
    int64_t bytes = 0;
  };
  static int64_t Size(const ChangeRecord& r) {
    return static_cast<int64_t>(r.key.size() + r.value.size() + 16);
  }
  Status CreateLocked(std::string_view topic, int partitions) {
    auto it = topics_.find(std::string(topic));
    bool exists;
    CC_RETURN_IF_ERROR(CheckCreateTopic(
        topic, partitions, it == topics_.end() ? 0 : static_cast<int>(it->second.size()), &exists));
    if (exists) return Status::Ok();
    topics_[std::string(topic)].resize(static_cast<size_t>(partitions));
    return Status::Ok();
  }
  Result<Part*> Find(std::string_view topic, int partition) {
    auto it = topics_.find(std::string(topic));
    if (it == topics_.end()) return Status::NotFound(fmt::format("no topic '{}'", topic));
    if (partition < 0 || partition >= static_cast<int>(it->second.size()))
      return Status::NotFound(fmt::format("topic '{}' has no partition {}", topic, partition));
    return &it->second[static_cast<size_t>(partition)];
  }

  ChangeLogOptions opts_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<Part>> topics_;
  std::map<std::string, int64_t> marks_;
  uint64_t appends_ = 0;
};

}  // namespace

std::unique_ptr<ChangeLog> NewMemoryChangeLog(const ChangeLogOptions& options) {
  return std::make_unique<MemoryChangeLog>(options);
}

}  // namespace commcare::storage
