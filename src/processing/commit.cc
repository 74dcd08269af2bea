#include "processing/commit.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace commcare::processing {

Status GroupCommitter::Commit(storage::WriteBatch* batch, bool sync_blobs) {
  Writer w{batch, sync_blobs};
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(&w);
  while (!w.done && &w != queue_.front()) w.cv.wait(lock);
  if (w.done) return w.status;

  // Leader: take the whole queue (up to max_group_) as one group.
  std::vector<Writer*> group;
  bool need_sync = false;
  for (Writer* x : queue_) {
    if (group.size() >= max_group_) break;
    group.push_back(x);
    need_sync |= x->sync_blobs;
  }
  lock.unlock();

  Status st;
  std::vector<Status> results;
  auto t0 = std::chrono::steady_clock::now();
  if (need_sync && blobs_) st = blobs_->Sync();
  auto t1 = std::chrono::steady_clock::now();
  sync_us_ += std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count();
  if (st.ok()) {
    std::vector<storage::WriteBatch*> batches;
    batches.reserve(group.size());
    for (Writer* x : group) batches.push_back(x->batch);
    st = store_->CommitGroup(batches, &results);
  }
  commit_us_ += std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t1).count();

  lock.lock();
  ++commits_;
  batches_ += group.size();
  for (size_t i = 0; i < group.size(); ++i) {
    Writer* x = queue_.front();
    queue_.pop_front();
    x->status = st.ok() ? results[i] : st;
    x->done = true;
    if (x != &w) x->cv.notify_one();
  }
  if (!queue_.empty()) queue_.front()->cv.notify_one();
  return w.status;
}

GroupCommitter::~GroupCommitter() {
  if (std::getenv("COMMCARE_TRACE_COMMITS") && commits_)
    std::fprintf(stderr, "group commit: %llu commits, %.1f batches/commit, sync %.0f us, commit %.0f us per group\n",
                 (unsigned long long)commits_, double(batches_) / commits_, double(sync_us_) / commits_,
                 double(commit_us_) / commits_);
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
