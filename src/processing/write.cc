// The submit path, step 3 (commit): blobs put and journaled with the rows, the write set
// committed atomically across databases (an intent when it spans several), and recovery of
// both after a crash.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <set>
#include <string>

#include "processing/engine_impl.h"
#include "util/codec.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::processing {

namespace json = boost::json;

Status EngineImpl::PutBlobs(FormRecord* form, std::string_view xml,
                            const std::vector<xform::MultipartPart>& parts, Plan* plan, int home) {
  const std::string prefix = fmt::format("form/{}/", util::NewUuidHex());
  Attachment x{"form.xml", "text/xml", static_cast<int64_t>(xml.size()), form->md5, ""};
  CC_ASSIGN_OR_RETURN(x.blob_key, blobs_->Put(prefix + "form.xml", xml, false));
  if (journal_blobs_)
    plan->For(home).ops.emplace_back(storage::StageBlob{x.blob_key, std::string(xml)});
  form->attachments.push_back(std::move(x));
  int n = 0;
  for (const auto& p : parts) {
    Attachment a{p.name, p.content_type.empty() ? "application/octet-stream" : p.content_type,
                 static_cast<int64_t>(p.data.size()), util::Md5Hex(p.data), ""};
    CC_ASSIGN_OR_RETURN(a.blob_key, blobs_->Put(fmt::format("{}a{}", prefix, n++), p.data, false));
    if (journal_blobs_)
      plan->For(home).ops.emplace_back(storage::StageBlob{a.blob_key, std::string(p.data)});
    form->attachments.push_back(std::move(a));
  }
  return Status::Ok();
}

// ---- the blob journal ----
// A form's blobs are put without a sync and a copy of each is committed with the form's rows,
// so one flush (the rows') makes a submission durable. Every 20 ms the flusher syncs the blob
// store once and drops the copies it covers; after a crash, RecoverBlobs rewrites any blob the
// blob store lost from its copy. No row ever points at a blob that cannot be read back.

Status EngineImpl::FlushBlobs() {
  std::vector<std::pair<int, int64_t>> todo;
  for (size_t i = 0; i < dbs_.size(); ++i) {
    CC_ASSIGN_OR_RETURN(int64_t max, dbs_[i]->MaxStagedBlobSeq());
    if (max > released_[i]) todo.emplace_back(static_cast<int>(i), max);
  }
  if (todo.empty()) return Status::Ok();
  CC_RETURN_IF_ERROR(blobs_->Sync());  // covers every blob journaled up to each max
  for (auto [db, max] : todo) {
    storage::WriteBatch b;
    b.ops.emplace_back(storage::ReleaseBlobs{max});
    CC_RETURN_IF_ERROR(committers_[db]->Commit(&b));
    released_[db] = max;
  }
  return Status::Ok();
}

void EngineImpl::FlushLoop() {
  log::FailureStreak failures("blob-flush");
  std::unique_lock l(flush_mu_);
  while (!stop_flusher_) {
    flush_cv_.wait_for(l, std::chrono::milliseconds(std::max(1, opts_.blob_flush_interval_ms)));
    if (stop_flusher_) break;
    l.unlock();
    // A failure leaves the copies journaled with the rows (nothing is lost); retried next round.
    if (Status s = FlushBlobs(); !s.ok())
      failures.Failed(s, "syncing the blob store", "blob copies stay journaled; retrying");
    else
      failures.Succeeded();
    l.lock();
  }
}

Status EngineImpl::RecoverBlobs() {
  for (size_t i = 0; i < dbs_.size(); ++i) {
    int64_t after = 0;
    while (true) {
      CC_ASSIGN_OR_RETURN(auto staged, dbs_[i]->ReadStagedBlobs(after, 256));
      if (staged.empty()) break;
      for (const auto& sb : staged) {
        auto have = blobs_->Get(sb.key);
        if (!have.ok() || *have != sb.data) CC_RETURN_IF_ERROR(blobs_->Restore(sb.key, sb.data));
        after = sb.seq;
      }
    }
  }
  return FlushBlobs();
}

// ---- cross-database commits ----

// Fault injection for the crash tests: COMMCARE_TEST_CRASH_AFTER_INTENT=N kills the process
// (SIGKILL, as kill -9 would) right after the Nth cross-database intent is durable.
// Fault injection for the crash tests: SIGKILL at the n-th pass of a point, n from env var.
void MaybeCrashForTest(const char* var) {
  const char* v = std::getenv(var);
  if (!v) return;
  static std::mutex mu;
  static std::map<std::string, long> seen;
  std::lock_guard l(mu);
  if (++seen[var] >= std::atol(v)) ::kill(::getpid(), SIGKILL);
}

Result<EngineImpl::StoreLocks> EngineImpl::LockAcross(const std::vector<std::string>& case_keys,
                                                      int home, bool optimistic) {
  StoreLocks l;
  l.home = home;
  std::map<int, std::vector<std::string>> by_db;  // ordered: databases are locked in order
  for (const auto& k : case_keys)
    by_db[map_.DatabaseFor(std::string_view(k).substr(k.find(':') + 1))].push_back(k);
  if (by_db.empty()) return l;
  if (optimistic && by_db.size() == 1 && by_db.begin()->first == home) {
    l.in_commit = case_keys;
    return l;
  }
  for (const auto& [db, keys] : by_db) {
    CC_ASSIGN_OR_RETURN(auto h, dbs_[db]->LockKeys(keys));
    if (h) l.held.push_back(std::move(h));
  }
  return l;
}

Status EngineImpl::CommitPlan(Plan* plan, int home_db) {
  Status s = CommitPlanImpl(plan, home_db);
  if (s.ok()) KickRelay();
  return s;
}

Status EngineImpl::CommitPlanImpl(Plan* plan, int home_db) {
  if (plan->batches.empty()) return Status::Ok();
  if (plan->batches.size() == 1) {
    auto& [db, batch] = *plan->batches.begin();
    return committers_[db]->Commit(&batch);
  }
  // Several databases: write the intent (the other databases' batches) with the home batch,
  // then apply each other batch at most once (its applied marker), then drop the intent.
  const std::string intent_id = util::NewUuidHex();
  json::array parts;
  for (auto& [db, batch] : plan->batches) {
    if (db == home_db) continue;
    batch.applied_marker = intent_id;
    parts.push_back(json::object{{"db", db}, {"batch", codec::EncodeBatch(batch)}});
  }
  storage::WriteBatch& home = plan->For(home_db);
  home.ops.emplace_back(storage::PutIntent{intent_id, json::serialize(parts)});
  CC_RETURN_IF_ERROR(committers_[home_db]->Commit(&home));
  MaybeCrashForTest("COMMCARE_TEST_CRASH_AFTER_INTENT");
  for (auto& [db, batch] : plan->batches) {
    if (db == home_db) continue;
    Status s = committers_[db]->Commit(&batch);
    if (!s.ok())
      return Status::Unavailable(fmt::format(
          "committed in database {} but not yet in {} ({}); it is rolled forward on restart",
          home_db, db, s.ToString()));
  }
  storage::WriteBatch done;
  done.ops.emplace_back(storage::DeleteIntent{intent_id});
  return committers_[home_db]->Commit(&done);
}

namespace {

// The case lock keys ("case:<id>") of the rows an intent's batch writes.
void CaseKeysOf(const storage::WriteBatch& b, std::set<std::string>* keys) {
  for (const auto& op : b.ops) {
    if (const auto* o = std::get_if<storage::PutCase>(&op))
      keys->insert("case:" + o->record.case_id);
    if (const auto* o = std::get_if<storage::PutCaseTransaction>(&op))
      keys->insert("case:" + o->tx.case_id);
    if (const auto* o = std::get_if<storage::PutLedgerValue>(&op))
      keys->insert("case:" + o->value.case_id);
    if (const auto* o = std::get_if<storage::ReplaceLedgerTransactions>(&op))
      keys->insert("case:" + o->case_id);
  }
}

}  // namespace

Result<std::vector<std::pair<int, storage::WriteBatch>>> EngineImpl::DecodeIntent(
    const storage::Intent& in) const {
  auto parts = codec::ParseJson(in.payload);
  if (!parts.ok() || !parts->is_array())
    return Status::DataLoss(fmt::format("intent {} has a corrupt payload", in.intent_id));
  std::vector<std::pair<int, storage::WriteBatch>> out;
  for (const auto& p : parts->get_array()) {
    if (!p.is_object()) return Status::DataLoss("intent part is not an object");
    int db = static_cast<int>(codec::GetInt(p.get_object(), "db"));
    if (db < 0 || db >= static_cast<int>(dbs_.size()))
      return Status::DataLoss(fmt::format("intent {} names database {}", in.intent_id, db));
    storage::WriteBatch b;
    CC_RETURN_IF_ERROR(codec::DecodeBatch(codec::GetStr(p.get_object(), "batch"), &b));
    b.applied_marker = in.intent_id;
    out.emplace_back(db, std::move(b));
  }
  return out;
}

// Rolls each pending intent forward. Another process writing the same store (PostgreSQL) may
// be committing an intent right now: its case locks are taken first, so recovery waits for a
// live writer to finish and then finds the intent gone; a dead writer's locks went with its
// connections.
Status EngineImpl::RecoverIntents() {
  for (size_t home = 0; home < dbs_.size(); ++home) {
    CC_ASSIGN_OR_RETURN(auto intents, dbs_[home]->PendingIntents());
    for (const auto& in : intents) {
      CC_ASSIGN_OR_RETURN(auto parts, DecodeIntent(in));
      std::set<std::string> keys;
      for (const auto& [db, b] : parts) CaseKeysOf(b, &keys);
      CC_ASSIGN_OR_RETURN(auto held,
                          LockAcross({keys.begin(), keys.end()}, static_cast<int>(home), false));
      CC_ASSIGN_OR_RETURN(auto still, dbs_[home]->PendingIntents());
      if (std::none_of(still.begin(), still.end(),
                       [&](const storage::Intent& i) { return i.intent_id == in.intent_id; }))
        continue;  // its writer finished it while recovery waited for the locks
      for (auto& [db, b] : parts) {
        std::vector<Status> results;
        storage::WriteBatch* arr[] = {&b};
        CC_RETURN_IF_ERROR(dbs_[db]->CommitGroup(arr, &results));
        if (!results[0].ok())
          return Status::DataLoss(fmt::format("rolling intent {} forward into database {}: {}",
                                              in.intent_id, db, results[0].ToString()));
      }
      storage::WriteBatch done;
      done.ops.emplace_back(storage::DeleteIntent{in.intent_id});
      std::vector<Status> results;
      storage::WriteBatch* arr[] = {&done};
      CC_RETURN_IF_ERROR(dbs_[home]->CommitGroup(arr, &results));
    }
  }
  return PruneSpentMarkers();
}

// A marker may go once its intent is deleted (nothing replays it again). The markers are read
// before the intents: a marker written after that read is not in the list, so one whose intent
// is still being committed by another process (written after our read of the intents) stays.
Status EngineImpl::PruneSpentMarkers() {
  std::vector<std::vector<std::string>> markers;
  for (auto& db : dbs_) {
    CC_ASSIGN_OR_RETURN(auto m, db->AppliedMarkers());
    markers.push_back(std::move(m));
  }
  std::set<std::string> pending;
  for (auto& db : dbs_) {
    CC_ASSIGN_OR_RETURN(auto intents, db->PendingIntents());
    for (auto& i : intents) pending.insert(std::move(i.intent_id));
  }
  // An intent's delete is seen once its group is applied, which may be before that group is
  // flushed: flush, so that no marker goes while a crash could still bring its intent back.
  for (auto& db : dbs_) CC_RETURN_IF_ERROR(db->Sync());
  for (size_t i = 0; i < dbs_.size(); ++i) {
    std::erase_if(markers[i], [&](const std::string& m) { return pending.count(m) > 0; });
    constexpr size_t kChunk = 5000;
    for (size_t at = 0; at < markers[i].size(); at += kChunk)
      CC_RETURN_IF_ERROR(dbs_[i]->DeleteAppliedMarkers(
          std::span<const std::string>(markers[i])
              .subspan(at, std::min(kChunk, markers[i].size() - at))));
  }
  return Status::Ok();
}

std::string EngineImpl::NewIdInDatabase(int db) const {
  while (true) {
    std::string id = util::NewUuidHex();
    if (map_.DatabaseFor(id) == db) return id;
  }
}

}  // namespace commcare::processing
