#include "processing/commit.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace commcare::processing {

Status GroupCommitter::Commit(storage::WriteBatch* batch) {
  store_->Prepare(batch);
  Writer w;
  w.batch = batch;
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(&w);
  while (!w.done && (queue_.empty() || &w != queue_.front())) w.cv.wait(lock);
  if (w.done) return w.status;

  // Leader: take the whole queue (up to max_group_) as one group.
  std::vector<Writer*> group;
  for (Writer* x : queue_) {
    if (group.size() >= max_group_) break;
    group.push_back(x);
  }
  lock.unlock();

  std::vector<Status> results;
  auto t1 = std::chrono::steady_clock::now();
  std::vector<storage::WriteBatch*> batches;
  batches.reserve(group.size());
  for (Writer* x : group) batches.push_back(x->batch);
  Status st = store_->CommitGroup(batches, &results);
  commit_us_ +=
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t1)
          .count();

  lock.lock();
  ++commits_;
  batches_ += group.size();
  for (size_t i = 0; i < group.size(); ++i) queue_.pop_front();
  const uint64_t my_commit = ++committed_;
  // Hand leadership on before flushing: the next group commits while this one syncs.
  if (!queue_.empty()) queue_.front()->cv.notify_one();
  // Coalesced flushes: one Sync at a time, each covering every commit made before it began.
  while (st.ok() && flushed_ < my_commit) {
    if (flushing_) {
      flush_cv_.wait(lock);
      continue;
    }
    flushing_ = true;
    const uint64_t target = committed_;
    lock.unlock();
    auto t2 = std::chrono::steady_clock::now();
    Status fs = store_->Sync();
    lock.lock();
    flush_us_ +=
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t2)
            .count();
    ++flushes_;
    flushing_ = false;
    if (fs.ok())
      flushed_ = std::max(flushed_, target);
    else
      st = fs;
    flush_cv_.notify_all();
  }
  for (size_t i = 0; i < group.size(); ++i) {
    Writer* x = group[i];
    x->status = st.ok() ? results[i] : st;
    x->done = true;
    if (x != &w) x->cv.notify_one();
  }
  return w.status;
}

GroupCommitter::~GroupCommitter() {
  if (std::getenv("COMMCARE_TRACE_COMMITS") && commits_)
    std::fprintf(stderr,
                 "group commit: %llu commits, %.1f batches/commit, commit %.0f us per group; "
                 "%llu flushes of %.0f us\n",
                 (unsigned long long)commits_.load(), double(batches_.load()) / commits_.load(),
                 double(commit_us_) / commits_.load(), (unsigned long long)flushes_,
                 flushes_ ? double(flush_us_) / flushes_ : 0.0);
}

void LockTable::Lock(const std::vector<std::string>& keys) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] {
    for (const auto& k : keys)
      if (held_.count(k)) return false;
    return true;
  });
  for (const auto& k : keys) held_.insert(k);
}

void LockTable::Unlock(const std::vector<std::string>& keys) {
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& k : keys) held_.erase(k);
  }
  cv_.notify_all();
}

}  // namespace commcare::processing
