// The engine: opening its stores (from the Deployment), reads, the consistency check, Init
// and Open. The submit path is beside it, a file per step: receive.cc (parse) -> plan.cc (case
// and ledger logic) -> write.cc (blobs, commits across databases, recovery) -> outbox.cc
// (change records, the relay); archive.cc re-derives cases when a form is archived.
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
#include "storage/backends.h"
#include "util/codec.h"
#include "util/durable_file.h"
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

// Whether this libcommcare was built with every backend d asks for: FailedPrecondition naming
// the CMake option and the deployment's section otherwise (src/storage/backends.h).
Status BackendsBuilt(const Deployment& d) {
  auto need = [](Status built, std::string_view section) {
    if (built.ok()) return built;
    return Status::FailedPrecondition(
        fmt::format("{}, which the deployment's \"{}\" needs", built.message(), section));
  };
  if (!d.primary.empty()) CC_RETURN_IF_ERROR(need(storage::PostgresBuilt(), "primary"));
  if (!d.meta.empty()) CC_RETURN_IF_ERROR(need(storage::PostgresBuilt(), "meta"));
  if (!d.pillows.empty()) CC_RETURN_IF_ERROR(need(storage::PostgresBuilt(), "pillows"));
  if (d.kafka) CC_RETURN_IF_ERROR(need(storage::KafkaBuilt(), "change_log"));
  if (d.blobs == Deployment::Blobs::kS3) CC_RETURN_IF_ERROR(need(storage::S3Built(), "blob_store"));
  return Status::Ok();
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
    CC_RETURN_IF_ERROR(BackendsBuilt(d));
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
    CC_ASSIGN_OR_RETURN(blobs_, d.blobs == Blobs::kS3 ? storage::OpenS3BlobStore(d.s3)
                                : d.blobs == Blobs::kPack
                                    ? storage::OpenPackBlobStore(dir + "/blobs", opts_.read_only)
                                    : storage::OpenFsBlobStore(dir + "/blobs", opts_.read_only));
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

Status EngineImpl::ListCaseDocuments(const storage::CaseFilter& filter,
                                     const std::function<bool(std::string_view)>& fn) {
  bool go_on = true;
  for (auto& db : dbs_) {
    CC_RETURN_IF_ERROR(db->ScanCaseDocs(filter, [&](std::string_view d) { return go_on = fn(d); }));
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
  if (o.data_dir.empty()) return Status::InvalidArgument("--data is required");
  CC_ASSIGN_OR_RETURN(const Deployment d, DeploymentOf(o));
  return Create(o.data_dir, d);
}

Status Engine::Create(const std::string& data_dir, const Deployment& d) {
  namespace fs = std::filesystem;
  if (data_dir.empty()) return Status::InvalidArgument("--data is required");
  CC_RETURN_IF_ERROR(processing::BackendsBuilt(d));
  std::error_code ec;
  fs::create_directories(data_dir + "/db", ec);
  if (ec) return Status::Unavailable(fmt::format("cannot create {}: {}", data_dir, ec.message()));
  // One process sets a directory up at a time (several may start on a fresh one together): the
  // others wait on the directory's lock, then find it set up. Closing the descriptor unlocks.
  const int dir_fd = ::open(data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Status::Unavailable("cannot open " + data_dir);
  struct Unlock {
    int fd;
    ~Unlock() { ::close(fd); }
  } unlock{dir_fd};
  if (::flock(dir_fd, LOCK_EX) != 0) return Status::Unavailable("cannot lock " + data_dir);
  if (fs::exists(data_dir + "/commcare.json", ec))
    return Status::AlreadyExists(fmt::format("{} is already initialised", data_dir));
  // The directory holds password equivalents (Digest HA1s) and health data: its owner only.
  fs::permissions(data_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  if (ec)
    return Status::Unavailable(
        fmt::format("cannot make {} private (mode 0700): {}", data_dir, ec.message()));
  fs::create_directories(data_dir + "/blobs", ec);
  // Create the databases now so that read-only tools can open them at once (PostgreSQL: apply
  // the schema, which also proves the connection strings).
  for (int i = 0; i < d.databases; ++i) {
    auto db = d.primary.empty() ? storage::OpenSqlitePrimaryStore(
                                      fmt::format("{}/db/p{}.sqlite", data_dir, i), true, false)
                                : storage::OpenPostgresPrimaryStore(d.primary[i]);
    if (!db.ok()) return db.status();
  }
  // The names just created are made durable before commcare.json says the directory is set
  // up (a power cut must not leave a commcare.json whose databases' names were lost).
  for (const char* sub : {"/db", "/blobs"}) CC_RETURN_IF_ERROR(util::SyncDirectory(data_dir + sub));
  // Last: a directory with a commcare.json is ready for any process to open, and one whose
  // databases could not be created is not left half set up. Save syncs data_dir; its own name
  // lives in its parent.
  CC_RETURN_IF_ERROR(d.Save(data_dir));
  return util::SyncDirectory(util::ParentDirectory(data_dir));
}

Result<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  auto e = std::make_unique<processing::EngineImpl>(options);
  CC_RETURN_IF_ERROR(e->OpenStores());
  return std::unique_ptr<Engine>(std::move(e));
}

}  // namespace commcare
