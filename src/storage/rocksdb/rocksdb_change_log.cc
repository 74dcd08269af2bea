// The embedded ChangeLog on RocksDB: one ordered keyspace holding every topic's partitions.
//
// Keys:  't' topic                                   -> partition count (decimal)
//        'r' topic '\0' partition(u32 BE) offset(u64 BE) -> timestamp(u64 BE) keylen(u32 BE) key
//        value 'm' producer                                -> mark (decimal) 'l' topic '\0'
//        partition(u32 BE)            -> first retained offset (decimal)
// Big-endian numbers keep a partition's records in offset order, so a read is one seek and a
// scan, and retention is one DeleteRange per partition.
#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <stdlib.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "commcare/storage/change_log.h"
#include "storage/change_log_internal.h"
#include "util/durable_file.h"
#include "util/time.h"

namespace commcare::storage {
namespace {

void PutBE(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetBE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string PartitionPrefix(std::string_view topic, int partition) {
  std::string k = "r";
  k += topic;
  k.push_back('\0');
  PutBE(&k, static_cast<uint32_t>(partition), 4);
  return k;
}
std::string RecordKey(std::string_view topic, int partition, int64_t offset) {
  std::string k = PartitionPrefix(topic, partition);
  PutBE(&k, static_cast<uint64_t>(offset), 8);
  return k;
}

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return Status::DataLoss(fmt::format("{}: {}", what, s.ToString()));
  if (s.IsNotFound()) return Status::NotFound(fmt::format("{}: {}", what, s.ToString()));
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos)
    return Status::FailedPrecondition(fmt::format(
        "{}: the change log is open in another writing process ({})", what, s.ToString()));
  return Status::Unavailable(fmt::format("{}: {}", what, s.ToString()));
}

class RocksDbChangeLog final : public ChangeLog {
 public:
  RocksDbChangeLog(std::string path, ChangeLogOptions o) : path_(std::move(path)), opts_(o) {}
  ~RocksDbChangeLog() override {
    db_.reset();
    if (!secondary_dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(secondary_dir_, ec);
    }
  }

  Status Open() {
    rocksdb::Options o;
    o.create_if_missing = !opts_.read_only;
    o.max_background_jobs = 2;
    o.write_buffer_size = 32 << 20;
    o.keep_log_file_num = 3;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s;
    if (opts_.read_only) {
      if (!std::filesystem::exists(path_ + "/CURRENT"))
        return Status::NotFound(fmt::format("no change log at {}", path_));
      char tmpl[] = "/tmp/commcare-changes-XXXXXX";
      if (!::mkdtemp(tmpl)) return Status::Unavailable("cannot create a temp dir for the reader");
      secondary_dir_ = tmpl;
      o.max_open_files = -1;  // a secondary instance requires it
      s = rocksdb::DB::OpenAsSecondary(o, path_, secondary_dir_, &db);
    } else {
      s = rocksdb::DB::Open(o, path_, &db);
    }
    CC_RETURN_IF_ERROR(FromRocks(s, fmt::format("opening the change log {}", path_)));
    // RocksDB syncs the files and names inside its directory, not the directory's own name,
    // which a writer may just have created: without this a power cut could drop the whole log
    // (found by tests/campaigns/powercut.py).
    if (!opts_.read_only) {
      if (Status ds = util::SyncDirectory(util::ParentDirectory(path_)); !ds.ok()) {
        delete db;
        return ds;
      }
    }
    db_.reset(db);
    std::lock_guard l(mu_);
    return LoadLocked();
  }

  Status CreateTopic(std::string_view topic, int partitions) override {
    if (opts_.read_only) return ReadOnly();
    std::lock_guard l(mu_);
    return CreateLocked(topic, partitions, nullptr);
  }
  Result<int> Partitions(std::string_view topic) override {
    std::lock_guard l(mu_);
    CatchUpLocked();
    auto it = topics_.find(std::string(topic));
    if (it == topics_.end()) return Status::NotFound(fmt::format("no topic '{}'", topic));
    return static_cast<int>(it->second.size());
  }
  Result<std::vector<std::string>> Topics() override {
    std::lock_guard l(mu_);
    CatchUpLocked();
    std::vector<std::string> out;
    for (const auto& [t, _] : topics_) out.push_back(t);
    return out;
  }

  Status Append(std::span<const ChangeMessage> messages, const ProducerMark* mark) override {
    if (opts_.read_only) return ReadOnly();
    for (const auto& m : messages)
      if (m.topic.empty() || m.topic.find('\0') != std::string::npos)
        return Status::InvalidArgument("a change record needs a topic name without NUL bytes");
    {
      std::lock_guard l(mu_);
      rocksdb::WriteBatch wb;
      std::map<std::string, std::vector<Part>> created;  // topics this batch creates
      std::map<std::pair<std::string, int>, int64_t> next;
      const int64_t now = util::NowMicros();
      std::string value;
      for (const auto& m : messages) {
        auto it = topics_.find(m.topic);
        std::vector<Part>* parts;
        if (it != topics_.end()) {
          parts = &it->second;
        } else {
          auto c = created.find(m.topic);
          if (c == created.end()) {
            CC_RETURN_IF_ERROR(CreateLocked(m.topic, opts_.default_partitions, &wb));
            c = created.emplace(m.topic, std::vector<Part>(opts_.default_partitions)).first;
          }
          parts = &c->second;
        }
        const int p = KafkaPartition(m.key, static_cast<int>(parts->size()));
        auto [n, fresh] = next.try_emplace({m.topic, p}, (*parts)[p].end);
        value.clear();
        PutBE(&value, static_cast<uint64_t>(now), 8);
        PutBE(&value, static_cast<uint32_t>(m.key.size()), 4);
        value += m.key;
        value += m.value;
        wb.Put(RecordKey(m.topic, p, n->second++), value);
      }
      if (mark) wb.Put("m" + mark->producer, std::to_string(mark->value));
      rocksdb::WriteOptions wo;
      wo.sync = opts_.durable;
      CC_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &wb), "appending to the change log"));
      for (auto& [t, parts] : created) topics_[t] = std::move(parts);
      for (const auto& [tp, end] : next) topics_[tp.first][tp.second].end = end;
      ++appends_;
    }
    cv_.notify_all();
    return Status::Ok();
  }

  Result<int64_t> GetProducerMark(std::string_view producer) override {
    std::lock_guard l(mu_);
    CatchUpLocked();
    std::string v;
    auto s = db_->Get(rocksdb::ReadOptions(), "m" + std::string(producer), &v);
    if (s.IsNotFound()) return 0;
    CC_RETURN_IF_ERROR(FromRocks(s, "reading a producer mark"));
    return std::stoll(v);
  }

  Result<std::vector<ChangeRecord>> Read(std::string_view topic, int partition, int64_t from,
                                         size_t max) override {
    {
      std::lock_guard l(mu_);
      CatchUpLocked();
      CC_RETURN_IF_ERROR(Find(topic, partition).status());
    }
    std::vector<ChangeRecord> out;
    const std::string prefix = PartitionPrefix(topic, partition);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(RecordKey(topic, partition, std::max<int64_t>(from, 0)));
         it->Valid() && it->key().starts_with(prefix) && out.size() < max; it->Next()) {
      rocksdb::Slice k = it->key(), v = it->value();
      if (k.size() != prefix.size() + 8 || v.size() < 12)
        return Status::DataLoss(
            fmt::format("a malformed change record in {}/{}", topic, partition));
      ChangeRecord r;
      r.topic = std::string(topic);
      r.partition = partition;
      r.offset = static_cast<int64_t>(GetBE(k.data() + prefix.size(), 8));
      r.timestamp = static_cast<int64_t>(GetBE(v.data(), 8));
      const size_t klen = GetBE(v.data() + 8, 4);
      if (v.size() < 12 + klen)
        return Status::DataLoss(
            fmt::format("a malformed change record in {}/{}", topic, partition));
      r.key.assign(v.data() + 12, klen);
      r.value.assign(v.data() + 12 + klen, v.size() - 12 - klen);
      out.push_back(std::move(r));
    }
    CC_RETURN_IF_ERROR(FromRocks(it->status(), "reading the change log"));
    return out;
  }

  Result<int64_t> EndOffset(std::string_view topic, int partition) override {
    std::lock_guard l(mu_);
    CatchUpLocked();
    CC_ASSIGN_OR_RETURN(Part * p, Find(topic, partition));
    return p->end;
  }
  Result<int64_t> StartOffset(std::string_view topic, int partition) override {
    std::lock_guard l(mu_);
    CatchUpLocked();
    CC_ASSIGN_OR_RETURN(Part * p, Find(topic, partition));
    return p->start;
  }

  Result<int64_t> ApplyRetention(const RetentionPolicy& policy) override {
    if (opts_.read_only) return ReadOnly();
    if (!policy.max_age_us && !policy.max_bytes) return 0;
    std::lock_guard l(mu_);
    const int64_t cutoff = policy.max_age_us ? util::NowMicros() - policy.max_age_us : 0;
    int64_t dropped = 0;
    for (auto& [topic, parts] : topics_)
      for (int p = 0; p < static_cast<int>(parts.size()); ++p) {
        Part& part = parts[p];
        if (part.start >= part.end) continue;
        // Sizes and timestamps of the partition's records, oldest first.
        std::vector<std::pair<int64_t, int64_t>> recs;  // (timestamp, bytes)
        int64_t total = 0;
        const std::string prefix = PartitionPrefix(topic, p);
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
        for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
          int64_t bytes = static_cast<int64_t>(it->key().size() + it->value().size());
          recs.emplace_back(static_cast<int64_t>(GetBE(it->value().data(), 8)), bytes);
          total += bytes;
          if (!policy.max_bytes && recs.back().first >= cutoff) break;  // age alone: stop early
        }
        CC_RETURN_IF_ERROR(FromRocks(it->status(), "scanning for retention"));
        size_t drop = 0;
        while (drop < recs.size() && ((cutoff && recs[drop].first < cutoff) ||
                                      (policy.max_bytes && total > policy.max_bytes))) {
          total -= recs[drop].second;
          ++drop;
        }
        if (!drop) continue;
        const int64_t new_start = part.start + static_cast<int64_t>(drop);
        rocksdb::WriteBatch wb;
        wb.DeleteRange(RecordKey(topic, p, part.start), RecordKey(topic, p, new_start));
        // Offsets are never reused, even once a partition is emptied.
        wb.Put("l" + PartitionPrefix(topic, p).substr(1), std::to_string(new_start));
        rocksdb::WriteOptions wo;
        wo.sync = opts_.durable;
        CC_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &wb), "applying retention"));
        part.start = new_start;
        dropped += static_cast<int64_t>(drop);
      }
    return dropped;
  }

  uint64_t WaitForAppend(uint64_t seen, std::chrono::milliseconds timeout) override {
    std::unique_lock l(mu_);
    if (opts_.read_only) {
      l.unlock();
      std::this_thread::sleep_for(timeout);
      l.lock();
      return ++appends_;  // a reader cannot tell: always report "maybe"
    }
    cv_.wait_for(l, timeout, [&] { return appends_ > seen; });
    return appends_;
  }

 private:
  struct Part {
    int64_t start = 0;  // first retained offset
    int64_t end = 0;    // next offset to assign
  };
  static Status ReadOnly() {
    return Status::FailedPrecondition("the change log is open read-only");
  }

  Status CreateLocked(std::string_view topic, int partitions, rocksdb::WriteBatch* into) {
    auto it = topics_.find(std::string(topic));
    bool exists;
    CC_RETURN_IF_ERROR(CheckCreateTopic(
        topic, partitions, it == topics_.end() ? 0 : static_cast<int>(it->second.size()), &exists));
    if (exists) return Status::Ok();
    const std::string key = "t" + std::string(topic), val = std::to_string(partitions);
    if (into) {
      into->Put(key, val);  // committed with the batch's records
      return Status::Ok();
    }
    rocksdb::WriteOptions wo;
    wo.sync = opts_.durable;
    CC_RETURN_IF_ERROR(FromRocks(db_->Put(wo, key, val), "creating a topic"));
    topics_[std::string(topic)].resize(static_cast<size_t>(partitions));
    return Status::Ok();
  }

  // Reads topics and each partition's first and next offsets from the database.
  Status LoadLocked() {
    std::map<std::string, std::vector<Part>> topics;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek("t"); it->Valid() && it->key().starts_with("t"); it->Next()) {
      int n = std::atoi(it->value().ToString().c_str());
      if (n <= 0) return Status::DataLoss("the change log holds a malformed topic entry");
      topics[it->key().ToString().substr(1)].resize(static_cast<size_t>(n));
    }
    for (auto& [topic, parts] : topics)
      for (int p = 0; p < static_cast<int>(parts.size()); ++p) {
        const std::string prefix = PartitionPrefix(topic, p);
        std::string low;
        if (db_->Get(rocksdb::ReadOptions(), "l" + prefix.substr(1), &low).ok())
          parts[p].start = parts[p].end = std::atoll(low.c_str());
        it->Seek(prefix);
        if (!it->Valid() || !it->key().starts_with(prefix)) continue;
        parts[p].start = static_cast<int64_t>(GetBE(it->key().data() + prefix.size(), 8));
        std::string upper = prefix;
        PutBE(&upper, ~0ull, 8);
        it->SeekForPrev(upper);
        parts[p].end = static_cast<int64_t>(GetBE(it->key().data() + prefix.size(), 8)) + 1;
      }
    CC_RETURN_IF_ERROR(FromRocks(it->status(), "loading the change log"));
    topics_ = std::move(topics);
    return Status::Ok();
  }

  // A secondary instance follows the writer (at most every 20 ms).
  void CatchUpLocked() {
    if (!opts_.read_only) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_catch_up_ < std::chrono::milliseconds(20)) return;
    last_catch_up_ = now;
    if (db_->TryCatchUpWithPrimary().ok()) (void)LoadLocked();
  }

  Result<Part*> Find(std::string_view topic, int partition) {
    auto it = topics_.find(std::string(topic));
    if (it == topics_.end()) return Status::NotFound(fmt::format("no topic '{}'", topic));
    if (partition < 0 || partition >= static_cast<int>(it->second.size()))
      return Status::NotFound(fmt::format("topic '{}' has no partition {}", topic, partition));
    return &it->second[static_cast<size_t>(partition)];
  }

  std::string path_;
  ChangeLogOptions opts_;
  std::string secondary_dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<Part>> topics_;
  uint64_t appends_ = 0;
  std::chrono::steady_clock::time_point last_catch_up_{};
};

}  // namespace

Result<std::unique_ptr<ChangeLog>> OpenRocksDbChangeLog(const std::string& path,
                                                        const ChangeLogOptions& options) {
  auto log = std::make_unique<RocksDbChangeLog>(path, options);
  CC_RETURN_IF_ERROR(log->Open());
  return std::unique_ptr<ChangeLog>(std::move(log));
}

}  // namespace commcare::storage
