#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commcare/deployment.h"
#include "processing/engine_impl.h"
#include "util/codec.h"
#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare {

std::string_view FormStateName(FormState s) {
  switch (s) {
    case FormState::kNormal:
      return "normal";
    case FormState::kArchived:
      return "archived";
    case FormState::kDeprecated:
      return "deprecated";
    case FormState::kDuplicate:
      return "duplicate";
    case FormState::kError:
      return "error";
    case FormState::kSubmissionErrorLog:
      return "submission_error_log";
  }
  return "unknown";
}

namespace processing {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using util::XmlEscape;

constexpr const char* kSuccessText = "   \xe2\x88\x9a   ";  // "   √   "

SubmitResponse Respond(int code, std::string nature, std::string message, std::string form_id = "",
                       std::optional<FormState> state = std::nullopt) {
  SubmitResponse r;
  r.http_status = code;
  r.nature = std::move(nature);
  r.message = std::move(message);
  r.form_id = std::move(form_id);
  r.state = state;
  r.content_type = "text/xml; charset=utf-8";
  r.body = fmt::format(
      "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"><message nature=\"{}\">{}"
      "</message></OpenRosaResponse>",
      r.nature, XmlEscape(r.message));
  return r;
}

bool IsV3(const SubmitRequest& r) { return r.openrosa_version == "3.0"; }

std::string FormDocType(FormState s) {
  switch (s) {
    case FormState::kNormal:
      return "XFormInstance";
    case FormState::kArchived:
      return "XFormArchived";
    case FormState::kDeprecated:
      return "XFormDeprecated";
    case FormState::kDuplicate:
      return "XFormDuplicate";
    case FormState::kError:
      return "XFormError";
    case FormState::kSubmissionErrorLog:
      return "SubmissionErrorLog";
  }
  return "XFormInstance";
}

const std::set<std::string>& AllowedExtensions() {
  static const std::set<std::string> k = {"jpg", "jpeg", "png",   "pdf",  "3ga", "mp3",  "wav",
                                          "amr", "qcp",  "ogg",   "3gpp", "3gp", "3gp2", "3g2",
                                          "mp4", "mpg4", "mpeg4", "m4v",  "mpg", "mpeg"};
  return k;
}

bool AttachmentAllowed(const xform::MultipartPart& p) {
  std::string name = p.filename.empty() ? p.name : p.filename;
  auto dot = name.rfind('.');
  if (dot != std::string::npos) {
    std::string ext = name.substr(dot + 1);
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (AllowedExtensions().count(ext)) return true;
  }
  std::string ct = p.content_type;
  std::transform(ct.begin(), ct.end(), ct.begin(), [](unsigned char c) { return std::tolower(c); });
  ct = ct.substr(0, ct.find(';'));
  return ct.rfind("audio/", 0) == 0 || ct.rfind("image/", 0) == 0 || ct.rfind("video/", 0) == 0 ||
         ct == "application/octet-stream" || ct == "application/pdf";
}

bool ValidDomain(std::string_view d) {
  if (d.empty() || d.size() > 255) return false;
  for (char c : d)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

std::map<std::string, const Attachment*> AttachmentMap(const FormRecord& f) {
  std::map<std::string, const Attachment*> m;
  for (const auto& a : f.attachments) m[a.name] = &a;
  return m;
}

FormContext ContextOf(const FormRecord& f) {
  return FormContext{f.form_id, f.domain, f.xmlns, f.user_id, f.received_on};
}

}  // namespace

int ShardMap::ShardOf(std::string_view id) const {
  return static_cast<int>(util::ShardHash(id) & static_cast<uint32_t>(shards - 1));
}

EngineImpl::~EngineImpl() {
  if (relayer_.joinable()) {
    {
      std::lock_guard l(relay_wait_mu_);
      stop_relay_ = true;
    }
    relay_cv_.notify_all();
    relayer_.join();
    (void)RelayChanges();  // drain: whatever was committed reaches the log before we close
  }
  if (flusher_.joinable()) {
    {
      std::lock_guard l(flush_mu_);
      stop_flusher_ = true;
    }
    flush_cv_.notify_all();
    flusher_.join();
    (void)FlushBlobs();
  }
  committers_.clear();
  dbs_.clear();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Status EngineImpl::OpenStores() {
  if (opts_.in_memory) {
    map_.shards = opts_.memory_shards;
    map_.databases = opts_.memory_databases;
    for (int i = 0; i < map_.databases; ++i) dbs_.push_back(storage::NewMemoryPrimaryStore());
    blobs_ = storage::NewMemoryBlobStore();
    log_ = storage::NewMemoryChangeLog();
  } else {
    const std::string& dir = opts_.data_dir;
    CC_ASSIGN_OR_RETURN(const Deployment d, Deployment::Load(dir));
    map_.shards = d.shards;
    map_.databases = d.databases;
    if (!opts_.read_only) {
      std::string lock_path = dir + "/LOCK";
      lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (lock_fd_ < 0) return Status::Unavailable("cannot open " + lock_path);
      if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = {};
        ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
        std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "unknown";
        holder.erase(std::remove(holder.begin(), holder.end(), '\n'), holder.end());
        return Status::FailedPrecondition(fmt::format(
            "data directory {} is locked by another writing process (pid {})", dir, holder));
      }
      std::string pid = std::to_string(::getpid()) + "\n";
      if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0)
        return Status::Unavailable("cannot write " + lock_path);
    }
    const std::vector<std::string>& pg = d.primary;  // PostgreSQL, one per database
    for (int i = 0; i < map_.databases; ++i) {
      CC_ASSIGN_OR_RETURN(auto db, pg.empty() ? storage::OpenSqlitePrimaryStore(
                                                    fmt::format("{}/db/p{}.sqlite", dir, i),
                                                    opts_.durable, opts_.read_only)
                                              : storage::OpenPostgresPrimaryStore(pg[i]));
      dbs_.push_back(std::move(db));
    }
    using Blobs = Deployment::Blobs;
    CC_ASSIGN_OR_RETURN(blobs_, d.blobs == Blobs::kS3     ? storage::OpenS3BlobStore(d.s3)
                                : d.blobs == Blobs::kPack ? storage::OpenPackBlobStore(
                                                                dir + "/blobs", opts_.read_only)
                                                          : storage::OpenFsBlobStore(
                                                                dir + "/blobs", opts_.read_only));
    storage::ChangeLogOptions lo;
    lo.read_only = opts_.read_only;
    lo.durable = opts_.durable;
    Result<std::unique_ptr<storage::ChangeLog>> log = Status::NotFound("no change log");
    if (d.kafka) {
      storage::KafkaChangeLogOptions ko = *d.kafka;
      // Every process relaying one primary store shares one transactional id (derived from
      // the store's identity), so a process taking the relay over fences the one before.
      if (ko.transactional_id.empty()) {
        const std::string store_id = pg.empty() ? dir : fmt::format("{}", fmt::join(pg, "\n"));
        ko.transactional_id = "commcare-relay-" + util::Md5Hex(store_id).substr(0, 12);
      }
      ko.read_only = opts_.read_only;
      log = storage::OpenKafkaChangeLog(ko);
      if (!log.ok()) return log.status();
    } else {
      log = storage::OpenRocksDbChangeLog(dir + "/changes", lo);
    }
    if (log.ok()) {
      log_ = std::move(log).value();
    } else if (!(opts_.read_only && log.status().IsNotFound())) {
      return log.status();
    }
  }
  for (auto& db : dbs_) committers_.push_back(std::make_unique<GroupCommitter>(db.get()));
  released_.assign(dbs_.size(), 0);
  relayed_.assign(dbs_.size(), -1);
  if (!opts_.read_only) {
    CC_RETURN_IF_ERROR(RecoverIntents());
    CC_RETURN_IF_ERROR(RecoverBlobs());
    if (opts_.relay) {
      // Drain what a previous run left, unless another process relays this store.
      if (Status s = RelayChanges(); !s.ok() && s.code() != StatusCode::kFailedPrecondition)
        return s;
      relayer_ = std::thread([this] { RelayLoop(); });
    }
    // A blob store whose puts are durable (S3) needs no copy of each blob kept with the rows.
    journal_blobs_ = opts_.durable && !opts_.in_memory && !blobs_->PutsAreDurable();
    if (journal_blobs_) flusher_ = std::thread([this] { FlushLoop(); });
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
  std::unique_lock l(flush_mu_);
  while (!stop_flusher_) {
    flush_cv_.wait_for(l, std::chrono::milliseconds(std::max(1, opts_.blob_flush_interval_ms)));
    if (stop_flusher_) break;
    l.unlock();
    (void)FlushBlobs();  // a failure leaves the copies journaled; the next round retries
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
static void MaybeCrashForTest(const char* var) {
  const char* v = std::getenv(var);
  if (!v) return;
  static std::mutex mu;
  static std::map<std::string, long> seen;
  std::lock_guard l(mu);
  if (++seen[var] >= std::atol(v)) ::kill(::getpid(), SIGKILL);
}

// ---- the relay ----
// Outbox rows are read, made durable (a Sync after the read covers every row it saw), appended
// to the change log together with the relay's mark (the last seq appended) and then deleted.
// After a crash between the append and the delete, the mark says which rows are in the log
// already, so none is appended twice and a document's changes keep their order.
// Several processes may write one store (PostgreSQL): one of them relays, the holder of the
// store's relay lease; a process taking the lease over fences the previous holder out of the
// change log before it reads the marks.

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

Status EngineImpl::LeadRelay(bool* leading) {
  auto held = dbs_[0]->HoldRelayLease();
  if (!held.ok()) {  // the lease may be lost: fence and read the marks again when it is back
    relay_leader_ = *leading = false;
    return held.status();
  }
  *leading = *held;
  if (*leading && !relay_leader_) {
    CC_RETURN_IF_ERROR(log_->FenceOtherWriters());
    relayed_.assign(dbs_.size(), -1);  // the marks are read again
  }
  relay_leader_ = *leading;
  return Status::Ok();
}

Status EngineImpl::RelayChanges() {
  if (!log_ || opts_.read_only) return Status::Ok();
  std::lock_guard l(relay_mu_);
  bool leading = false;
  CC_RETURN_IF_ERROR(LeadRelay(&leading));
  if (!leading)
    return Status::FailedPrecondition("another process holds the relay lease of this store");
  for (int i = 0; i < static_cast<int>(dbs_.size()); ++i) {
    CC_RETURN_IF_ERROR(dbs_[i]->Flush());  // everything committed so far becomes relayable
    int64_t moved = 0;
    do {
      CC_RETURN_IF_ERROR(RelayDatabase(i, &moved));
    } while (moved > 0);
  }
  return Status::Ok();
}

Status EngineImpl::RelayDatabase(int db, int64_t* moved) {
  *moved = 0;
  const std::string producer = fmt::format("{}{}", storage::kRelayMarkPrefix, db);
  if (relayed_[db] < 0) {
    CC_ASSIGN_OR_RETURN(int64_t mark, log_->GetProducerMark(producer));
    relayed_[db] = mark;
    if (mark > 0) {  // rows a crashed process appended but did not delete
      storage::WriteBatch b;
      b.ops.emplace_back(storage::DeleteOutbox{mark});
      CC_RETURN_IF_ERROR(committers_[db]->Commit(&b));
    }
  }
  // Up to 20,000 rows per append: a Kafka transaction costs ~50 ms however small it is
  // (5,000-row batches relayed 41k rows/s to the mock cluster, 20,000-row ones 65k/s).
  constexpr size_t kRelayBatch = 20000;
  CC_ASSIGN_OR_RETURN(auto rows, dbs_[db]->ReadOutbox(relayed_[db], kRelayBatch));
  if (rows.empty()) return Status::Ok();
  CC_RETURN_IF_ERROR(dbs_[db]->Sync());
  std::vector<storage::ChangeMessage> msgs;
  msgs.reserve(rows.size());
  for (const auto& r : rows)
    msgs.push_back({r.meta.topic, r.meta.document_id, ChangeMetaToJson(r.meta)});
  storage::ProducerMark mark{producer, rows.back().seq};
  CC_RETURN_IF_ERROR(log_->Append(msgs, &mark));
  MaybeCrashForTest("COMMCARE_TEST_CRASH_AFTER_RELAY_APPEND");
  relayed_[db] = rows.back().seq;
  storage::WriteBatch b;
  b.ops.emplace_back(storage::DeleteOutbox{rows.back().seq});
  CC_RETURN_IF_ERROR(committers_[db]->Commit(&b));
  *moved = static_cast<int64_t>(rows.size());
  return Status::Ok();
}

void EngineImpl::RelayLoop() {
  const auto window = std::chrono::milliseconds(std::max(1, opts_.relay_batch_window_ms));
  bool busy = false;
  auto next_retention = std::chrono::steady_clock::now();
  std::unique_lock l(relay_wait_mu_);
  while (!stop_relay_) {
    if (busy) {
      relay_cv_.wait_for(l, window, [&] { return stop_relay_; });
    } else {
      relay_idle_.store(true);
      relay_cv_.wait_for(l, std::chrono::milliseconds(200), [&] { return stop_relay_; });
      relay_idle_.store(false);
    }
    if (stop_relay_) break;
    l.unlock();
    int64_t total = 0;
    {
      std::lock_guard rl(relay_mu_);
      bool leading = false;
      if (LeadRelay(&leading).ok() && leading)  // else another process relays (or retry)
        for (int i = 0; i < static_cast<int>(dbs_.size()); ++i) {
          int64_t moved = 0;
          if (!RelayDatabase(i, &moved).ok()) break;  // retried next round
          total += moved;
        }
    }
    busy = total > 0;
    if (opts_.change_retention_hours > 0 && std::chrono::steady_clock::now() >= next_retention) {
      storage::RetentionPolicy keep;
      keep.max_age_us = int64_t{opts_.change_retention_hours} * 3'600'000'000;
      (void)log_->ApplyRetention(keep);  // a failure is retried in an hour
      next_retention = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    l.lock();
  }
}

// Wakes an idle relay after a commit (a busy one is already on its way round).
void EngineImpl::KickRelay() {
  if (relay_idle_.load(std::memory_order_relaxed)) relay_cv_.notify_one();
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

Status EngineImpl::RecoverIntents() {
  for (size_t home = 0; home < dbs_.size(); ++home) {
    CC_ASSIGN_OR_RETURN(auto intents, dbs_[home]->PendingIntents());
    for (const auto& in : intents) {
      auto parts = codec::ParseJson(in.payload);
      if (!parts.ok() || !parts->is_array())
        return Status::DataLoss(fmt::format("intent {} has a corrupt payload", in.intent_id));
      for (const auto& p : parts->get_array()) {
        if (!p.is_object()) return Status::DataLoss("intent part is not an object");
        int db = static_cast<int>(codec::GetInt(p.get_object(), "db"));
        if (db < 0 || db >= static_cast<int>(dbs_.size()))
          return Status::DataLoss(fmt::format("intent {} names database {}", in.intent_id, db));
        storage::WriteBatch b;
        CC_RETURN_IF_ERROR(codec::DecodeBatch(codec::GetStr(p.get_object(), "batch"), &b));
        b.applied_marker = in.intent_id;
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
  for (auto& db : dbs_) CC_RETURN_IF_ERROR(db->PruneAppliedMarkers({}));
  return Status::Ok();
}

std::string EngineImpl::NewIdInDatabase(int db) const {
  while (true) {
    std::string id = util::NewUuidHex();
    if (map_.DatabaseFor(id) == db) return id;
  }
}

// ---- change records ----

void EngineImpl::AddFormChange(Plan* plan, int db, const FormRecord& f, int64_t now) {
  ChangeMeta m;
  m.topic = "form-sql";
  m.document_id = f.form_id;
  m.data_source_name = "form-sql";
  m.document_type = FormDocType(f.state);
  m.document_subtype = f.xmlns;
  m.domain = f.domain;
  m.publish_timestamp = now;
  plan->For(db).ops.emplace_back(storage::AddOutbox{std::move(m)});
}

void EngineImpl::AddCaseChange(Plan* plan, int db, const CaseRecord& c, const std::string& form_id,
                               int64_t now) {
  ChangeMeta m;
  m.topic = "case-sql";
  m.document_id = c.case_id;
  m.data_source_name = "case-sql";
  m.document_type = c.deleted ? "CommCareCase-Deleted" : "CommCareCase";
  m.document_subtype = c.type;
  m.domain = c.domain;
  m.is_deletion = c.deleted;
  m.publish_timestamp = now;
  m.associated_document_id = form_id;
  plan->For(db).ops.emplace_back(storage::AddOutbox{std::move(m)});
}

// ---- submission ----

SubmitResponse EngineImpl::Submit(const SubmitRequest& req) {
  try {
    return SubmitImpl(req);
  } catch (const std::exception& e) {
    return Respond(
        500, "submit_error",
        fmt::format("There was an error processing the form: internal error: {}", e.what()));
  }
}

SubmitResponse EngineImpl::SubmitImpl(const SubmitRequest& req) {
  if (opts_.read_only)
    return Respond(503, "submit_error", "This engine is open read-only and cannot accept forms");
  const std::string& v = req.openrosa_version;
  if (!(v.empty() || v == "1.0" || v == "2.0" || v == "2.1" || v == "3.0"))
    return Respond(
        400, "submit_error",
        fmt::format("Unsupported X-OpenRosa-Version '{}' (supported: 1.0, 2.0, 2.1, 3.0)", v));
  if (!ValidDomain(req.domain))
    return Respond(400, "submit_error", fmt::format("Invalid domain name '{}'", req.domain));
  if (req.body.size() > opts_.max_body_bytes)
    return Respond(413, "submit_error",
                   fmt::format("Request body is {} bytes, over the limit of {} bytes",
                               req.body.size(), opts_.max_body_bytes));

  std::string_view xml = req.body;
  std::vector<xform::MultipartPart> attachments;
  std::string boundary = xform::MultipartBoundary(req.content_type);
  if (!boundary.empty()) {
    std::vector<xform::MultipartPart> parts;
    Status s = xform::ParseMultipart(req.body, boundary, &parts);
    if (!s.ok()) return Respond(400, "submit_error", "Invalid multipart body: " + s.message());
    const xform::MultipartPart* xml_part = nullptr;
    for (const auto& p : parts) {
      if (!p.has_filename)
        return Respond(400, "submit_error",
                       fmt::format("Unexpected non-file field '{}' in the multipart body", p.name));
      if (p.name == "xml_submission_file")
        xml_part = &p;
      else
        attachments.push_back(p);
    }
    if (!xml_part || xml_part->data.empty())
      return Respond(400, "submit_error",
                     "No XML submission found: the multipart body has no non-empty "
                     "'xml_submission_file' part");
    std::string fname = xml_part->filename;
    std::transform(fname.begin(), fname.end(), fname.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (fname.size() < 4 || fname.compare(fname.size() - 4, 4, ".xml") != 0)
      return Respond(
          422, "processing_failure",
          fmt::format("The xml_submission_file part's filename '{}' does not end in .xml",
                      xml_part->filename));
    xml = xml_part->data;
    for (const auto& a : attachments) {
      if (a.data.size() > opts_.max_attachment_bytes)
        return Respond(413, "submit_error",
                       fmt::format("Attachment '{}' is {} bytes, over the limit of {} bytes",
                                   a.name, a.data.size(), opts_.max_attachment_bytes));
      if (!AttachmentAllowed(a))
        return Respond(
            422, "processing_failure",
            fmt::format("Attachment '{}' has an unsupported file type ('{}', {})", a.name,
                        a.filename, a.content_type.empty() ? "no content type" : a.content_type));
    }
  } else if (xml.empty()) {
    return Respond(400, "submit_error", "The request body is empty: no XML submission found");
  }
  if (xml.size() > opts_.max_xml_bytes)
    return Respond(413, "submit_error",
                   fmt::format("Form XML is {} bytes, over the limit of {} bytes", xml.size(),
                               opts_.max_xml_bytes));

  const int64_t received_on = req.received_on ? req.received_on : util::NowMicros();
  xform::ParsedForm pf;
  Status ps = xform::ParseForm(xml, xform::ParseLimits{}, &pf);
  if (!ps.ok()) return SaveErrorLog(req, xml, ps.message(), received_on);
  if (pf.xmlns.empty())
    return SaveErrorLog(req, xml, "Form is missing a required field: XMLNS", received_on);

  for (int attempt = 0;; ++attempt) {
    auto r = ProcessForm(req, xml, pf, attachments, received_on, attempt > 0);
    if (r.ok()) return std::move(r).value();
    if (r.status().IsAborted() && attempt < 5) continue;  // lost a race: reload and redo
    return Respond(r.status().code() == StatusCode::kUnavailable ? 503 : 500, "submit_error",
                   "There was an error processing the form: " + r.status().message());
  }
}

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

SubmitResponse EngineImpl::SaveErrorLog(const SubmitRequest& req, std::string_view xml,
                                        const std::string& problem, int64_t received_on) {
  FormRecord f;
  f.form_id = util::NewUuidHex();
  f.domain = req.domain;
  f.state = FormState::kSubmissionErrorLog;
  f.problem = problem;
  f.md5 = util::Md5Hex(xml);
  f.received_on = received_on;
  f.server_modified_on = util::NowMicros();
  f.user_id = req.user_id;
  f.openrosa_version = req.openrosa_version;
  f.submit_ip = req.submit_ip;
  f.last_sync_token = req.last_sync_token;
  const std::string message = "There was an error processing the form: " + problem;
  Plan plan;
  int db = map_.DatabaseFor(f.form_id);
  Status s = PutBlobs(&f, xml, {}, &plan, db);
  if (s.ok()) {
    plan.For(db).ops.emplace_back(storage::PutForm{f});
    AddFormChange(&plan, db, f, f.server_modified_on);
    s = CommitPlan(&plan, db);
  }
  if (!s.ok())
    return Respond(500, "submit_error",
                   message + " (and the error log was not saved: " + s.message() + ")");
  return Respond(500, "submit_error", message, f.form_id, f.state);
}

Result<xform::ParsedForm> EngineImpl::LoadParsed(const FormRecord& f) {
  for (const auto& a : f.attachments) {
    if (a.name != "form.xml") continue;
    CC_ASSIGN_OR_RETURN(std::string xml, blobs_->Get(a.blob_key));
    xform::ParsedForm pf;
    CC_RETURN_IF_ERROR(xform::ParseForm(xml, xform::ParseLimits{}, &pf));
    return pf;
  }
  return Status::NotFound(fmt::format("form '{}' has no form.xml", f.form_id));
}

Result<CaseRecord> EngineImpl::Replay(const std::string& case_id, const std::string& domain,
                                      std::vector<CaseTransaction> txs,
                                      const std::string& override_form_id,
                                      const xform::ParsedForm* override_pf,
                                      const FormContext& override_ctx,
                                      const std::map<std::string, const Attachment*>& override_atts,
                                      bool* live) {
  std::stable_sort(txs.begin(), txs.end(),
                   [](const auto& a, const auto& b) { return a.server_date < b.server_date; });
  CaseRecord c;
  *live = false;
  for (const auto& t : txs) {
    if (t.form_id.empty() || t.revoked) continue;
    const xform::ParsedForm* pf = nullptr;
    xform::ParsedForm loaded;
    FormContext ctx;
    std::map<std::string, const Attachment*> atts;
    FormRecord form;
    if (t.form_id == override_form_id) {
      if (!override_pf) continue;
      pf = override_pf;
      ctx = override_ctx;
      atts = override_atts;
    } else {
      CC_ASSIGN_OR_RETURN(auto f, dbs_[map_.DatabaseFor(t.form_id)]->GetForm(t.form_id));
      if (!f || f->state != FormState::kNormal) continue;
      form = std::move(*f);
      auto p = LoadParsed(form);
      if (!p.ok()) continue;
      loaded = std::move(p).value();
      pf = &loaded;
      ctx = ContextOf(form);
      atts = AttachmentMap(form);
    }
    for (const auto& g : GroupCaseBlocks(*pf)) {
      if (g.case_id != case_id) continue;
      CaseRecord next = c;
      int type;
      CaseError err;
      if (ApplyBlocks(g, ctx, atts, &next, &type, &err)) {
        c = std::move(next);
        *live = true;
      }
    }
  }
  if (c.case_id.empty()) {
    c.case_id = case_id;
    c.domain = domain;
  }
  return c;
}

Status EngineImpl::UpdateLedger(const std::string& case_id, const std::string& domain,
                                const std::string& form_id, std::vector<LedgerTransaction> form_txs,
                                Plan* plan, int64_t now) {
  int db = map_.DatabaseFor(case_id);
  CC_ASSIGN_OR_RETURN(auto all, dbs_[db]->GetLedgerTransactions(case_id));
  std::erase_if(all, [&](const LedgerTransaction& t) { return t.form_id == form_id; });
  for (const auto& t : form_txs) all.push_back(t);
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return std::tie(a.report_date, a.server_date, a.seq) <
           std::tie(b.report_date, b.server_date, b.seq);
  });
  std::map<std::string, LedgerValue> values;
  CC_ASSIGN_OR_RETURN(auto old_values, dbs_[db]->GetLedgerValues(case_id));
  ReplayLedger(&all, &values, domain);
  std::vector<LedgerTransaction> mine;
  for (const auto& t : all)
    if (t.form_id == form_id) mine.push_back(t);
  auto& batch = plan->For(db);
  batch.ops.emplace_back(storage::ReplaceLedgerTransactions{form_id, case_id, std::move(mine)});
  // Entries that no transaction sets any more go back to zero.
  for (const auto& ov : old_values) {
    std::string key = LedgerKey(ov.case_id, ov.section_id, ov.entry_id);
    if (!values.count(key)) {
      LedgerValue z = ov;
      z.balance = 0;
      values[key] = z;
    }
  }
  for (const auto& [key, v] : values) {
    bool changed = true;
    for (const auto& ov : old_values)
      if (LedgerKey(ov.case_id, ov.section_id, ov.entry_id) == key)
        changed = ov.balance != v.balance || ov.last_modified_form_id != v.last_modified_form_id;
    if (!changed) continue;
    batch.ops.emplace_back(storage::PutLedgerValue{v});
    ChangeMeta m;
    m.topic = "ledger";
    m.document_id = key;
    m.data_source_name = "ledger-v2";
    m.document_type = "ledger";
    m.document_subtype = v.section_id;
    m.domain = domain;
    m.publish_timestamp = now;
    m.associated_document_id = form_id;
    batch.ops.emplace_back(storage::AddOutbox{std::move(m)});
  }
  return Status::Ok();
}

Result<SubmitResponse> EngineImpl::ProcessForm(const SubmitRequest& req, std::string_view xml,
                                               const xform::ParsedForm& pf,
                                               const std::vector<xform::MultipartPart>& parts,
                                               int64_t received_on, bool retry) {
  const int64_t now = util::NowMicros();
  FormRecord form;
  form.form_id = pf.meta.instance_id.empty() ? util::NewUuidHex() : pf.meta.instance_id;
  form.domain = req.domain;
  form.xmlns = pf.xmlns;
  form.user_id = pf.meta.user_id;
  form.username = pf.meta.username;
  form.device_id = pf.meta.device_id;
  form.app_version = pf.meta.app_version;
  form.app_id = req.app_id;
  form.build_id = req.build_id;
  form.md5 = util::Md5Hex(xml);
  form.last_sync_token = req.last_sync_token;
  form.submit_ip = req.submit_ip;
  form.openrosa_version = req.openrosa_version;
  form.received_on = received_on;
  form.server_modified_on = now;
  form.date_header = req.date_header;
  util::ParseIsoTime(pf.meta.time_start, &form.time_start);
  util::ParseIsoTime(pf.meta.time_end, &form.time_end);

  LockSet form_lock(&locks_, {"form:" + form.form_id});
  int home = map_.DatabaseFor(form.form_id);
  CC_ASSIGN_OR_RETURN(auto existing, dbs_[home]->GetForm(form.form_id));

  enum class Mode { kNew, kDuplicate, kEdit, kReplaceError } mode = Mode::kNew;
  if (existing) {
    if (existing->domain != form.domain || existing->xmlns != form.xmlns) {
      form.form_id = NewIdInDatabase(home);  // an id clash: a new form under a new id
    } else if (existing->md5 == form.md5) {
      mode = existing->state == FormState::kError ? Mode::kReplaceError : Mode::kDuplicate;
    } else {
      mode = existing->state == FormState::kError ? Mode::kReplaceError : Mode::kEdit;
    }
  }

  Plan plan;
  if (mode == Mode::kDuplicate) {
    form.orig_id = form.form_id;
    form.form_id = NewIdInDatabase(home);
    form.state = FormState::kDuplicate;
    form.problem = fmt::format("Form is a duplicate of another! ({})", form.orig_id);
    CC_RETURN_IF_ERROR(PutBlobs(&form, xml, parts, &plan, home));
    plan.For(home).ops.emplace_back(storage::PutForm{form});
    AddFormChange(&plan, home, form, now);
    CC_RETURN_IF_ERROR(CommitPlan(&plan, home));
    if (IsV3(req)) return Respond(201, "submit_success", kSuccessText, form.form_id, form.state);
    return Respond(201, "submit_error", form.problem, form.form_id, form.state);
  }

  CC_RETURN_IF_ERROR(PutBlobs(&form, xml, parts, &plan, home));
  const auto attachments = AttachmentMap(form);

  // The previous version: deprecated (edit) or moved aside (replacing an error).
  std::optional<FormRecord> moved;
  std::set<std::string> old_case_ids, old_ledger_cases;
  if (mode == Mode::kEdit || mode == Mode::kReplaceError) {
    moved = *existing;
    moved->form_id = NewIdInDatabase(home);
    moved->orig_id = existing->form_id;
    moved->server_modified_on = now;
    if (mode == Mode::kEdit) {
      moved->state = FormState::kDeprecated;
      form.received_on = existing->received_on;
      form.deprecated_form_id = moved->form_id;
      form.edited_on = now;
      auto old_pf = LoadParsed(*existing);
      if (old_pf.ok()) {
        for (const auto& b : old_pf->cases) old_case_ids.insert(b.case_id);
        std::vector<LedgerChange> lc;
        CaseError e;
        if (ExtractLedgerChanges(*old_pf, existing->received_on, &lc, &e))
          for (const auto& ch : lc) old_ledger_cases.insert(ch.case_id);
      }
    }
  }

  FormContext ctx{form.form_id, form.domain, form.xmlns, form.user_id, form.received_on};
  std::vector<CaseBlocks> groups;
  if (!pf.device_report) groups = GroupCaseBlocks(pf);
  std::vector<LedgerChange> ledger_changes;
  std::optional<CaseError> error;
  for (const auto& g : groups) {
    CaseError e;
    if (!ValidateBlocks(g, &e)) {
      error = e;
      break;
    }
  }
  if (!error && !pf.device_report) {
    CaseError e;
    if (!ExtractLedgerChanges(pf, form.received_on, &ledger_changes, &e)) error = e;
  }

  // Lock every case this form (and its previous version) touches.
  std::set<std::string> case_ids = old_case_ids;
  std::set<std::string> ledger_cases = old_ledger_cases;
  if (!error) {
    for (const auto& g : groups) case_ids.insert(g.case_id);
    for (const auto& ch : ledger_changes) ledger_cases.insert(ch.case_id);
  }
  std::vector<std::string> lock_keys;
  for (const auto& id : case_ids) lock_keys.push_back("case:" + id);
  for (const auto& id : ledger_cases) lock_keys.push_back("case:" + id);
  LockSet case_locks(&locks_, lock_keys);
  CC_ASSIGN_OR_RETURN(auto store_locks, LockAcross(lock_keys, home, !retry));  // other processes

  // Compute the new state of every touched case.
  struct Touched {
    CaseRecord record;
    int64_t expected_rev = 0;
    int tx_type = 0;
    bool in_form = false;
  };
  std::map<std::string, Touched> touched;
  if (!error) {
    for (const auto& g : groups) {
      int db = map_.DatabaseFor(g.case_id);
      CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(g.case_id));
      Touched t;
      t.in_form = true;
      if (cur) {
        if (cur->domain != form.domain) {
          error = CaseError{"IllegalCaseId", fmt::format("Bad case id '{}'", g.case_id)};
          break;
        }
        if (cur->deleted && mode != Mode::kEdit) {
          error = CaseError{"IllegalCaseId", fmt::format("Case '{}' is deleted", g.case_id)};
          break;
        }
        t.expected_rev = cur->rev;
        t.record = std::move(*cur);
      } else if (opts_.strict_case_updates && !g.blocks.front()->has_create) {
        error = CaseError{
            "IllegalCaseId",
            fmt::format("Case '{}' does not exist and the form does not create it", g.case_id)};
        break;
      }
      if (mode == Mode::kEdit) {
        touched[g.case_id] = std::move(t);
        continue;  // rebuilt from transactions below
      }
      CaseError e;
      if (!ApplyBlocks(g, ctx, attachments, &t.record, &t.tx_type, &e) ||
          !ValidateCaseValues(t.record, &e)) {
        error = e;
        break;
      }
      touched[g.case_id] = std::move(t);
    }
  }

  // An edit re-derives every case either version touched from its transactions.
  const bool rebuild = mode == Mode::kEdit;
  if (rebuild) {
    for (const auto& id : case_ids) {
      int db = map_.DatabaseFor(id);
      CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(id));
      CC_ASSIGN_OR_RETURN(auto txs, dbs_[db]->GetCaseTransactions(id));
      bool has_tx = std::any_of(txs.begin(), txs.end(),
                                [&](const auto& t) { return t.form_id == form.form_id; });
      if (!has_tx) {
        CaseTransaction nt;
        nt.case_id = id;
        nt.form_id = form.form_id;
        nt.server_date = form.received_on;
        txs.push_back(nt);
      }
      bool live = false;
      CC_ASSIGN_OR_RETURN(CaseRecord rec, Replay(id, form.domain, txs, form.form_id,
                                                 error ? nullptr : &pf, ctx, attachments, &live));
      Touched& t = touched[id];
      t.expected_rev = cur ? cur->rev : 0;
      if (cur && cur->domain != form.domain) {
        error = CaseError{"IllegalCaseId", fmt::format("Bad case id '{}'", id)};
        break;
      }
      t.record = std::move(rec);
      t.record.deleted = !live;
      t.in_form = false;
      for (const auto& g : groups)
        if (g.case_id == id && !error) {
          t.in_form = true;
          CaseRecord scratch;
          CaseError e;
          ApplyBlocks(g, ctx, attachments, &scratch, &t.tx_type, &e);
        }
      CaseError e;
      if (!error && !ValidateCaseValues(t.record, &e)) error = e;
    }
  }

  // Every live index must point at an existing case of the domain.
  if (!error) {
    for (const auto& [id, t] : touched) {
      if (t.record.deleted) continue;
      for (const auto& idx : t.record.indices) {
        auto it = touched.find(idx.referenced_id);
        bool ok = false;
        if (it != touched.end()) {
          ok = !it->second.record.deleted;
        } else {
          CC_ASSIGN_OR_RETURN(
              auto target, dbs_[map_.DatabaseFor(idx.referenced_id)]->GetCase(idx.referenced_id));
          ok = target && target->domain == form.domain && !target->deleted;
        }
        if (!ok) {
          error = CaseError{
              "InvalidCaseIndex",
              fmt::format("Case '{}' references non-existent case '{}'", id, idx.referenced_id)};
          break;
        }
      }
      if (error) break;
    }
  }
  // Ledger cases must exist (or be created by this form).
  if (!error) {
    for (const auto& id : ledger_cases) {
      if (touched.count(id)) continue;
      CC_ASSIGN_OR_RETURN(auto c, dbs_[map_.DatabaseFor(id)]->GetCase(id));
      if (!c || c->domain != form.domain) {
        if (old_ledger_cases.count(id)) continue;
        error = CaseError{"IllegalCaseId", fmt::format("Ledger case '{}' does not exist", id)};
        break;
      }
    }
  }

  // ---- write ----
  if (error) {
    form.state = FormState::kError;
    form.problem = error->Text();
  }
  if (moved) {
    plan.For(home).ops.emplace_back(storage::PutForm{*moved});
    AddFormChange(&plan, home, *moved, now);
  }
  // A new form must still be new at commit: another process may have received it meanwhile.
  plan.For(home).ops.emplace_back(storage::PutForm{form, mode == Mode::kNew});
  AddFormChange(&plan, home, form, now);

  const bool apply_cases = !error || rebuild;
  if (apply_cases) {
    const int64_t server_date = rebuild ? form.edited_on : form.received_on;
    for (auto& [id, t] : touched) {
      if (error && !rebuild) break;
      int db = map_.DatabaseFor(id);
      auto& batch = plan.For(db);
      t.record.rev = t.expected_rev + 1;
      t.record.server_modified_on = server_date;
      if (ledger_cases.count(id)) t.tx_type |= kTxLedger;
      if (t.in_form || !rebuild) {
        CaseTransaction tx;
        tx.case_id = id;
        tx.form_id = form.form_id;
        tx.server_date = form.received_on;
        tx.client_date = t.record.modified_on;
        tx.type = t.tx_type ? t.tx_type : kTxForm;
        tx.revoked = error.has_value();
        tx.sync_log_id = form.last_sync_token;
        tx.xmlns = form.xmlns;
        // A brand-new form has no transaction on any case yet: insert without looking.
        batch.ops.emplace_back(storage::PutCaseTransaction{tx, mode != Mode::kNew});
      }
      if (rebuild) {
        CaseTransaction rtx;
        rtx.case_id = id;
        rtx.server_date = form.edited_on;
        rtx.type = kTxRebuildWithReason | kTxFormEdit;
        rtx.reason = "form edited";
        rtx.xmlns = form.xmlns;
        batch.ops.emplace_back(storage::PutCaseTransaction{rtx});
      }
      batch.ops.emplace_back(storage::PutCase{t.record, t.expected_rev});
      AddCaseChange(&plan, db, t.record, form.form_id, now);
    }
    // Ledger-only cases get a FORM|LEDGER transaction.
    if (!error) {
      for (const auto& id : ledger_cases) {
        if (touched.count(id)) continue;
        CaseTransaction tx;
        tx.case_id = id;
        tx.form_id = form.form_id;
        tx.server_date = form.received_on;
        tx.type = kTxForm | kTxLedger;
        tx.sync_log_id = form.last_sync_token;
        tx.xmlns = form.xmlns;
        plan.For(map_.DatabaseFor(id)).ops.emplace_back(storage::PutCaseTransaction{tx});
      }
    }
    for (const auto& id : ledger_cases) {
      auto txs = error ? std::vector<LedgerTransaction>{}
                       : LedgerTransactionsFor(ledger_changes, id, form.form_id, form.received_on);
      CC_RETURN_IF_ERROR(UpdateLedger(id, form.domain, form.form_id, std::move(txs), &plan, now));
    }
  }

  store_locks.Attach(&plan);
  CC_RETURN_IF_ERROR(CommitPlan(&plan, home));

  if (error) {
    if (IsV3(req))
      return Respond(422, "processing_failure", form.problem, form.form_id, form.state);
    return Respond(201, "submit_error", form.problem, form.form_id, form.state);
  }
  return Respond(201, "submit_success", kSuccessText, form.form_id, form.state);
}

// ---- archive / rebuild ----

Status EngineImpl::SetArchived(std::string_view domain, std::string_view form_id, bool archived) {
  if (opts_.read_only) return Status::FailedPrecondition("the engine is open read-only");
  const int64_t now = util::NowMicros();
  LockSet form_lock(&locks_, {"form:" + std::string(form_id)});
  int home = map_.DatabaseFor(form_id);
  CC_ASSIGN_OR_RETURN(auto f, dbs_[home]->GetForm(form_id));
  if (!f || f->domain != domain)
    return Status::NotFound(fmt::format("form '{}' not found in domain '{}'", form_id, domain));
  FormState want_from = archived ? FormState::kNormal : FormState::kArchived;
  if (f->state != want_from)
    return Status::FailedPrecondition(fmt::format(
        "form '{}' is {}, not {}", form_id, FormStateName(f->state), FormStateName(want_from)));
  CC_ASSIGN_OR_RETURN(auto pf, LoadParsed(*f));
  std::set<std::string> case_ids;
  for (const auto& b : pf.cases) case_ids.insert(b.case_id);
  std::vector<LedgerChange> changes;
  CaseError e;
  ExtractLedgerChanges(pf, f->received_on, &changes, &e);
  std::set<std::string> ledger_cases;
  for (const auto& ch : changes) ledger_cases.insert(ch.case_id);
  std::vector<std::string> keys;
  for (const auto& id : case_ids) keys.push_back("case:" + id);
  for (const auto& id : ledger_cases) keys.push_back("case:" + id);
  LockSet case_locks(&locks_, keys);
  CC_ASSIGN_OR_RETURN(auto store_locks, LockAcross(keys, home, false));  // other processes

  f->state = archived ? FormState::kArchived : FormState::kNormal;
  f->server_modified_on = now;
  Plan plan;
  plan.For(home).ops.emplace_back(storage::PutForm{*f});
  AddFormChange(&plan, home, *f, now);
  const FormContext ctx = ContextOf(*f);
  const auto atts = AttachmentMap(*f);
  for (const auto& id : case_ids) {
    int db = map_.DatabaseFor(id);
    CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(id));
    if (!cur || cur->domain != domain) continue;
    CC_ASSIGN_OR_RETURN(auto txs, dbs_[db]->GetCaseTransactions(id));
    auto& batch = plan.For(db);
    for (auto& t : txs)
      if (t.form_id == f->form_id) {
        t.revoked = archived;
        batch.ops.emplace_back(storage::PutCaseTransaction{t});
      }
    bool live;
    CC_ASSIGN_OR_RETURN(CaseRecord rec, Replay(id, std::string(domain), txs, f->form_id,
                                               archived ? nullptr : &pf, ctx, atts, &live));
    rec.deleted = !live;
    rec.rev = cur->rev + 1;
    rec.server_modified_on = now;
    CaseTransaction rtx;
    rtx.case_id = id;
    rtx.server_date = now;
    rtx.type = kTxRebuildWithReason | (archived ? kTxFormArchived : kTxFormReprocess);
    rtx.reason = archived ? "form archived" : "form unarchived";
    batch.ops.emplace_back(storage::PutCaseTransaction{rtx});
    batch.ops.emplace_back(storage::PutCase{rec, cur->rev});
    AddCaseChange(&plan, db, rec, f->form_id, now);
  }
  for (const auto& id : ledger_cases) {
    auto txs = archived ? std::vector<LedgerTransaction>{}
                        : LedgerTransactionsFor(changes, id, f->form_id, f->received_on);
    CC_RETURN_IF_ERROR(
        UpdateLedger(id, std::string(domain), f->form_id, std::move(txs), &plan, now));
  }
  store_locks.Attach(&plan);
  return CommitPlan(&plan, home);
}

Status EngineImpl::ArchiveForm(std::string_view domain, std::string_view form_id) {
  return SetArchived(domain, form_id, true);
}
Status EngineImpl::UnarchiveForm(std::string_view domain, std::string_view form_id) {
  return SetArchived(domain, form_id, false);
}

Status EngineImpl::RebuildCase(std::string_view domain, std::string_view case_id) {
  if (opts_.read_only) return Status::FailedPrecondition("the engine is open read-only");
  const int64_t now = util::NowMicros();
  const std::vector<std::string> keys = {"case:" + std::string(case_id)};
  LockSet lock(&locks_, keys);
  int db = map_.DatabaseFor(case_id);
  CC_ASSIGN_OR_RETURN(auto store_locks, LockAcross(keys, db, false));  // other processes
  CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(case_id));
  if (!cur || cur->domain != domain)
    return Status::NotFound(fmt::format("case '{}' not found in domain '{}'", case_id, domain));
  CC_ASSIGN_OR_RETURN(auto txs, dbs_[db]->GetCaseTransactions(case_id));
  bool live;
  CC_ASSIGN_OR_RETURN(CaseRecord rec, Replay(std::string(case_id), std::string(domain), txs, "",
                                             nullptr, FormContext{}, {}, &live));
  rec.deleted = !live;
  rec.rev = cur->rev + 1;
  rec.server_modified_on = now;
  Plan plan;
  CaseTransaction rtx;
  rtx.case_id = std::string(case_id);
  rtx.server_date = now;
  rtx.type = kTxRebuildWithReason | kTxUserRequested;
  rtx.reason = "user requested rebuild";
  plan.For(db).ops.emplace_back(storage::PutCaseTransaction{rtx});
  plan.For(db).ops.emplace_back(storage::PutCase{rec, cur->rev});
  AddCaseChange(&plan, db, rec, "", now);
  store_locks.Attach(&plan);
  return CommitPlan(&plan, db);
}

// ---- reads ----

Result<FormRecord> EngineImpl::GetForm(std::string_view domain, std::string_view form_id) {
  CC_ASSIGN_OR_RETURN(auto f, dbs_[map_.DatabaseFor(form_id)]->GetForm(form_id));
  if (!f || f->domain != domain)
    return Status::NotFound(fmt::format("form '{}' not found in domain '{}'", form_id, domain));
  return std::move(*f);
}

Result<std::string> EngineImpl::GetFormXml(std::string_view domain, std::string_view form_id) {
  return GetFormAttachment(domain, form_id, "form.xml");
}

Result<std::string> EngineImpl::GetFormAttachment(std::string_view domain, std::string_view form_id,
                                                  std::string_view name) {
  CC_ASSIGN_OR_RETURN(FormRecord f, GetForm(domain, form_id));
  for (const auto& a : f.attachments)
    if (a.name == name) return blobs_->Get(a.blob_key);
  return Status::NotFound(fmt::format("form '{}' has no attachment '{}'", form_id, name));
}

Result<CaseRecord> EngineImpl::GetCase(std::string_view domain, std::string_view case_id) {
  CC_ASSIGN_OR_RETURN(auto c, dbs_[map_.DatabaseFor(case_id)]->GetCase(case_id));
  if (!c || c->domain != domain)
    return Status::NotFound(fmt::format("case '{}' not found in domain '{}'", case_id, domain));
  return std::move(*c);
}

Status EngineImpl::ListCases(const storage::CaseFilter& filter,
                             const std::function<bool(const CaseRecord&)>& fn) {
  bool go_on = true;
  for (auto& db : dbs_) {
    CC_RETURN_IF_ERROR(db->ScanCases(filter, [&](const CaseRecord& c) { return go_on = fn(c); }));
    if (!go_on) break;
  }
  return Status::Ok();
}

Result<std::vector<CaseTransaction>> EngineImpl::CaseHistory(std::string_view domain,
                                                             std::string_view case_id) {
  CC_ASSIGN_OR_RETURN(CaseRecord c, GetCase(domain, case_id));
  return dbs_[map_.DatabaseFor(case_id)]->GetCaseTransactions(case_id);
}

Result<std::vector<LedgerValue>> EngineImpl::GetLedger(std::string_view domain,
                                                       std::string_view case_id) {
  CC_ASSIGN_OR_RETURN(CaseRecord c, GetCase(domain, case_id));
  return dbs_[map_.DatabaseFor(case_id)]->GetLedgerValues(case_id);
}

Result<CheckReport> EngineImpl::Check() {
  CheckReport r;
  if (!opts_.read_only)
    for (auto& db : dbs_) CC_RETURN_IF_ERROR(db->Flush());
  std::set<std::string> changed_docs;
  for (auto& db : dbs_) {
    int64_t after = 0;
    while (true) {
      CC_ASSIGN_OR_RETURN(auto rows, db->ReadOutbox(after, 10000));
      if (rows.empty()) break;
      for (const auto& row : rows) changed_docs.insert(row.meta.document_id);
      r.outbox_rows += static_cast<int64_t>(rows.size());
      after = rows.back().seq;
    }
    CC_ASSIGN_OR_RETURN(auto intents, db->PendingIntents());
    r.pending_intents += static_cast<int64_t>(intents.size());
  }
  // Relayed changes are in the change log; a topic whose old records retention dropped
  // cannot vouch for old documents, so its documents are not checked.
  std::set<std::string> unchecked_topics;
  if (log_) {
    CC_ASSIGN_OR_RETURN(auto topics, log_->Topics());
    for (const auto& t : topics) {
      CC_ASSIGN_OR_RETURN(int parts, log_->Partitions(t));
      for (int p = 0; p < parts; ++p) {
        CC_ASSIGN_OR_RETURN(int64_t start, log_->StartOffset(t, p));
        if (start > 0) unchecked_topics.insert(t);
        for (int64_t from = start;;) {
          CC_ASSIGN_OR_RETURN(auto recs, log_->Read(t, p, from, 10000));
          if (recs.empty()) break;
          for (const auto& rec : recs) changed_docs.insert(rec.key);
          r.logged_changes += static_cast<int64_t>(recs.size());
          from = recs.back().offset + 1;
        }
      }
    }
  }
  for (size_t i = 0; i < dbs_.size(); ++i) {
    Status inner;
    CC_RETURN_IF_ERROR(dbs_[i]->ScanForms([&](const FormRecord& f) {
      ++r.forms;
      if (map_.DatabaseFor(f.form_id) != static_cast<int>(i))
        r.problems.push_back(
            fmt::format("form {} is in database {}, not its shard's", f.form_id, i));
      bool has_xml = false;
      for (const auto& a : f.attachments) {
        has_xml |= a.name == "form.xml";
        auto e = blobs_->Exists(a.blob_key);
        if (!e.ok() || !*e)
          r.problems.push_back(fmt::format("form {}: blob {} of attachment {} is missing",
                                           f.form_id, a.blob_key, a.name));
      }
      if (!has_xml) r.problems.push_back(fmt::format("form {} has no form.xml", f.form_id));
      if (!changed_docs.count(f.form_id) && !unchecked_topics.count("form-sql"))
        r.problems.push_back(fmt::format("form {} has no change record", f.form_id));
      return true;
    }));
    storage::CaseFilter all;
    all.include_deleted = true;
    CC_RETURN_IF_ERROR(dbs_[i]->ScanCases(all, [&](const CaseRecord& c) {
      ++r.cases;
      if (!changed_docs.count(c.case_id) && !unchecked_topics.count("case-sql"))
        r.problems.push_back(fmt::format("case {} has no change record", c.case_id));
      return true;
    }));
  }
  if (r.pending_intents)
    r.problems.push_back(fmt::format("{} cross-database intent(s) are pending", r.pending_intents));
  return r;
}

}  // namespace processing

// ---- Engine statics ----

// InitOptions as the JSON of commcare.json, so that Deployment checks it (names a bad key).
static Result<Deployment> DeploymentOf(const InitOptions& o) {
  boost::json::object top{{"shards", o.shards}, {"databases", o.databases}};
  if (!o.blob_store.empty() && o.blob_store.front() == '{') {
    auto b = codec::ParseJson(o.blob_store);
    if (!b.ok()) return Status::InvalidArgument("blob_store must be a JSON object");
    top["blob_store"] = std::move(*b);
  } else {
    top["blob_store"] = o.blob_store;
  }
  for (auto [key, text] : {std::pair<const char*, const std::string*>{"primary", &o.primary},
                           {"change_log", &o.change_log},
                           {"meta", &o.meta},
                           {"pillows", &o.pillows}}) {
    if (text->empty()) continue;
    auto v = codec::ParseJson(*text);
    if (!v.ok()) return Status::InvalidArgument(fmt::format("{} must be a JSON object", key));
    top[key] = std::move(*v);
  }
  return Deployment::FromJson(boost::json::serialize(top), "init");
}

Status Engine::Init(const InitOptions& o) {
  namespace fs = std::filesystem;
  if (o.data_dir.empty()) return Status::InvalidArgument("--data is required");
  CC_ASSIGN_OR_RETURN(const Deployment d, DeploymentOf(o));
  std::error_code ec;
  if (fs::exists(o.data_dir + "/commcare.json", ec))
    return Status::AlreadyExists(fmt::format("{} is already initialised", o.data_dir));
  fs::create_directories(o.data_dir + "/db", ec);
  if (ec) return Status::Unavailable(fmt::format("cannot create {}: {}", o.data_dir, ec.message()));
  // The directory holds password equivalents (Digest HA1s) and health data: its owner only.
  fs::permissions(o.data_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec)
    return Status::Unavailable(
        fmt::format("cannot make {} private (mode 0700): {}", o.data_dir, ec.message()));
  fs::create_directories(o.data_dir + "/blobs", ec);
  CC_RETURN_IF_ERROR(d.Save(o.data_dir));
  // Create the databases now so that read-only tools can open them at once (PostgreSQL: apply
  // the schema, which also proves the connection strings).
  for (int i = 0; i < d.databases; ++i) {
    auto db = d.primary.empty() ? storage::OpenSqlitePrimaryStore(
                                      fmt::format("{}/db/p{}.sqlite", o.data_dir, i), true, false)
                                : storage::OpenPostgresPrimaryStore(d.primary[i]);
    if (!db.ok()) return db.status();
  }
  return Status::Ok();
}

Result<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  auto e = std::make_unique<processing::EngineImpl>(options);
  CC_RETURN_IF_ERROR(e->OpenStores());
  return std::unique_ptr<Engine>(std::move(e));
}

}  // namespace commcare
