// Group commit and the in-process lock table.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "commcare/storage/primary_store.h"

namespace commcare::processing {

// Concurrent Commit calls on one database share one durable commit (LevelDB's writer queue):
// the first waiting writer becomes the leader, commits every queued batch in one transaction,
// hands leadership on, then flushes (PrimaryStore::Sync) and wakes its group. So one group's
// flush overlaps the next group's commit.
class GroupCommitter {
 public:
  explicit GroupCommitter(storage::PrimaryStore* store, size_t max_group = 512)
      : store_(store), max_group_(max_group) {}
  ~GroupCommitter();

  // Applies the batch durably; returns its own outcome (Aborted if a rev check failed).
  Status Commit(storage::WriteBatch* batch);

  // Sizes of the groups committed so far (for metrics and benchmarks).
  uint64_t commits() const { return commits_.load(std::memory_order_relaxed); }
  uint64_t batches() const { return batches_.load(std::memory_order_relaxed); }

 private:
  struct Writer {
    storage::WriteBatch* batch = nullptr;
    bool done = false;
    Status status;
    std::condition_variable cv;
  };
  storage::PrimaryStore* store_;
  size_t max_group_;
  std::mutex mu_;
  std::deque<Writer*> queue_;
  std::atomic<uint64_t> commits_{0}, batches_{0};  // read by metrics from other threads
  uint64_t commit_us_ = 0, flush_us_ = 0;          // time in row commits and in flushes
  uint64_t committed_ = 0;                         // groups committed so far
  uint64_t flushed_ = 0;                           // groups known durable
  uint64_t flushes_ = 0;
  bool flushing_ = false;
  std::condition_variable flush_cv_;
};

// Named locks taken all at once (so no two lock sets can deadlock).
class LockTable {
 public:
  void Lock(const std::vector<std::string>& keys);
  void Unlock(const std::vector<std::string>& keys);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string, std::less<>> held_;
};

// RAII holder for a LockTable lock set.
class LockSet {
 public:
  LockSet(LockTable* t, std::vector<std::string> keys) : t_(t), keys_(std::move(keys)) {
    t_->Lock(keys_);
  }
  ~LockSet() { t_->Unlock(keys_); }
  LockSet(const LockSet&) = delete;
  LockSet& operator=(const LockSet&) = delete;

 private:
  LockTable* t_;
  std::vector<std::string> keys_;
};

}  // namespace commcare::processing
