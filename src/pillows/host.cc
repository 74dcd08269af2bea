// The pillow host: reads each pillow's partitions from the change log, batches and
// de-duplicates changes, runs the processor, and stores checkpoints and the retry queue in the
// pillow's database — a SQLite file, or a schema of a PostgreSQL database — in the same
// transaction as the processor's writes.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "commcare/deployment.h"
#include "commcare/log.h"
#include "commcare/pillows.h"
#include "log/streak.h"
#include "pillows/failures.h"
#include "pillows/processor.h"
#include "pillows/ucr.h"
#include "util/hash.h"
#include "util/sql_db.h"
#include "util/time.h"

namespace commcare::pillows {
namespace {

using util::SqlDb;

constexpr int kHostSchemaVersion = 1;
constexpr const char* kSqliteHostSchema = R"(
CREATE TABLE IF NOT EXISTS pillow_checkpoints(
  topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
  updated_at INTEGER NOT NULL, PRIMARY KEY(topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pillow_retries(
  doc_id TEXT PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER NOT NULL,
  "offset" INTEGER NOT NULL, "timestamp" INTEGER NOT NULL, attempts INTEGER NOT NULL,
  next_attempt INTEGER NOT NULL, error TEXT NOT NULL, dead INTEGER NOT NULL,
  change TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pillow_retries_due ON pillow_retries(dead, next_attempt);
)";
constexpr const char* kPostgresHostSchema = R"(
CREATE TABLE IF NOT EXISTS pillow_checkpoints(
  topic TEXT COLLATE "C" NOT NULL, partition INTEGER NOT NULL, "offset" BIGINT NOT NULL,
  updated_at BIGINT NOT NULL, PRIMARY KEY(topic, partition));
CREATE TABLE IF NOT EXISTS pillow_retries(
  doc_id TEXT COLLATE "C" PRIMARY KEY, topic TEXT NOT NULL, partition INTEGER NOT NULL,
  "offset" BIGINT NOT NULL, "timestamp" BIGINT NOT NULL, attempts INTEGER NOT NULL,
  next_attempt BIGINT NOT NULL, error TEXT NOT NULL, dead INTEGER NOT NULL, change TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pillow_retries_due ON pillow_retries(dead, next_attempt);
)";
// Writes a retry entry, replacing the document's earlier one.
constexpr const char* kPutRetry =
    "INSERT INTO pillow_retries(doc_id, topic, partition, \"offset\", \"timestamp\", attempts, "
    "next_attempt, error, dead, change) VALUES(?,?,?,?,?,?,?,?,?,?) ON CONFLICT(doc_id) DO UPDATE "
    "SET topic=excluded.topic, partition=excluded.partition, \"offset\"=excluded.\"offset\", "
    "\"timestamp\"=excluded.\"timestamp\", attempts=excluded.attempts, "
    "next_attempt=excluded.next_attempt, error=excluded.error, dead=excluded.dead, "
    "change=excluded.change";
// Lock keys (PostgreSQL advisory locks) for setup and for data-source changes.
constexpr int64_t kSetupLock = 7234618150;
constexpr int64_t kUcrLock = 7234618151;

using Clock = std::chrono::steady_clock;
using TopicPartition = std::pair<std::string, int>;

// How long Run waits after a failed step (a read, a checkpoint, a batch) before the next.
constexpr int kStepRetryMs = 200;

// What a pillow's step is doing, so that a failure's log record can say where it was.
struct Doing {
  enum Stage { kRead, kCheckpoint, kBatch } stage = kBatch;
  TopicPartition tp;
  int64_t offset = -1;
};

struct Pillow {
  explicit Pillow(const PillowConfig& c)
      : cfg(c),
        change_failures(c.name),
        read_failures("pillow", {{"pillow", c.name}}, LogLevel::kWarning),
        checkpoint_failures("pillow", {{"pillow", c.name}}, LogLevel::kError),
        batch_failures("pillow", {{"pillow", c.name}}, LogLevel::kError),
        retry_failures("pillow", {{"pillow", c.name}}, LogLevel::kError),
        assignment_failures("pillow", {{"pillow", c.name}}, LogLevel::kWarning) {}
  PillowConfig cfg;
  std::unique_ptr<Processor> proc;
  std::unique_ptr<SqlDb> db;
  int lock_fd = -1;
  std::unique_ptr<storage::GroupMember> member;  // with PillowHostOptions::consumer_group
  std::vector<TopicPartition> owned;
  bool all_topics_known = false;
  std::map<TopicPartition, int64_t> next;   // next offset to read
  std::map<TopicPartition, int64_t> saved;  // as checkpointed
  int64_t since_checkpoint = 0;
  Clock::time_point last_checkpoint = Clock::now();
  Clock::time_point last_retry_scan{};
  size_t rotate = 0;
  int64_t queued = -1;  // rows in pillow_retries (-1: unknown)
  // Failures, logged once per streak (under mu, or by the thread driving Run).
  Doing doing;
  ChangeFailures change_failures;
  log::FailureStreak read_failures, checkpoint_failures, batch_failures, retry_failures,
      assignment_failures;
  std::mutex mu;  // the database, the offsets and the failure streaks
  ~Pillow() {
    if (lock_fd >= 0) ::close(lock_fd);
  }
};

class Host final : public PillowHost {
 public:
  Host(Engine* e, PillowHostOptions o) : engine_(e), opts_(std::move(o)) {}

  Status Init() {
    log_ = engine_->Changes();
    if (!log_) return Status::FailedPrecondition("the engine has no change log to follow");
    if (opts_.num_processes < 1 || opts_.process_num < 0 ||
        opts_.process_num >= opts_.num_processes)
      return Status::InvalidArgument(fmt::format("--process-num must be in [0, {}) (got {})",
                                                 opts_.num_processes, opts_.process_num));
    if (opts_.dir.empty()) {
      const auto& eo = engine_->Options();
      if (eo.in_memory || eo.data_dir.empty()) {
        char tmpl[] = "/tmp/commcare-pillows-XXXXXX";
        if (!::mkdtemp(tmpl)) return Status::Unavailable("cannot create a temp dir for pillows");
        opts_.dir = tmpl;
        temp_dir_ = true;
      } else {
        opts_.dir = PillowStoreAt(eo.data_dir);
      }
    }
    pg_ = SqlDb::IsPostgres(opts_.dir);
    if (!pg_) {
      std::error_code ec;
      std::filesystem::create_directories(opts_.dir, ec);
      if (ec)
        return Status::Unavailable(fmt::format("cannot create {}: {}", opts_.dir, ec.message()));
    }
    if (opts_.builtin) {
      PillowConfig cs;
      cs.name = "case-search";
      cs.topics = {"case-sql"};
      CC_RETURN_IF_ERROR(Add(cs, NewCaseSearchProcessor(pg_)));
      PillowConfig rc;
      rc.name = "read-copy";
      rc.topics = {"form-sql"};
      CC_RETURN_IF_ERROR(Add(rc, NewFormReadCopyProcessor()));
      PillowConfig u;
      u.name = "ucr";
      // Users and locations: the meta store's changes (data sources on CommCareUser, Location).
      u.topics = {"case-sql", "form-sql", "commcare-user", "location"};
      auto ucr = ucr::NewUcrProcessor();
      ucr::UcrProcessor* raw = ucr.get();
      CC_RETURN_IF_ERROR(Add(u, std::move(ucr)));
      if (Find("ucr").ok()) ucr_ = raw;  // else `only` left it out and it is gone
    }
    return Status::Ok();
  }

  ~Host() override {
    for (auto& p : pillows_) {
      if (opts_.inspect_only) break;
      std::lock_guard l(p->mu);
      if (Status s = Checkpoint(*p, true); !s.ok())
        Log(LogLevel::kError,
            fmt::format("pillow {}: writing the last checkpoint failed: {}", p->cfg.name,
                        s.ToString()),
            {{"component", "pillow"},
             {"pillow", p->cfg.name},
             {"topic", p->doing.tp.first},
             {"partition", std::to_string(p->doing.tp.second)},
             {"offset", std::to_string(p->doing.offset)},
             {"next", "the next start processes the changes since the last checkpoint again"}});
    }
    pillows_.clear();
    if (temp_dir_) {
      std::error_code ec;
      std::filesystem::remove_all(opts_.dir, ec);
    }
  }

  Status AddPillow(const PillowConfig& config, std::shared_ptr<ChangeProcessor> p) override {
    if (!p) return Status::InvalidArgument("a pillow needs a processor");
    return Add(config, NewUserProcessor(std::move(p)));
  }
  Status AddBuiltin(const PillowConfig& config, std::unique_ptr<Processor> p) {
    return Add(config, std::move(p));
  }
  void SetUcrDirectory(std::shared_ptr<ucr::Directory> d) {
    if (ucr_) ucr_->SetDirectory(std::move(d));
  }

  const std::string& Store() const override { return opts_.dir; }

  std::vector<std::string> Pillows() const override {
    std::vector<std::string> out;
    for (const auto& p : pillows_) out.push_back(p->cfg.name);
    return out;
  }

  Result<int64_t> RunUntilCaughtUp() override {
    if (opts_.inspect_only) return Status::FailedPrecondition("this pillow host is inspect-only");
    int64_t total = 0;
    while (true) {
      int64_t n = 0;
      for (auto& p : pillows_) {
        CC_ASSIGN_OR_RETURN(int64_t k, StepPillow(*p, /*wait_for_full=*/false));
        n += k;
      }
      total += n;
      if (n == 0) break;
    }
    for (auto& p : pillows_) {
      CC_ASSIGN_OR_RETURN(int64_t k, RunDueRetries(*p, /*force_scan=*/true));
      total += k;
      std::lock_guard l(p->mu);
      CC_RETURN_IF_ERROR(Checkpoint(*p, true));
    }
    return total;
  }

  Status Run(const std::atomic<bool>& stop) override {
    if (opts_.inspect_only) return Status::FailedPrecondition("this pillow host is inspect-only");
    uint64_t seen = 0;
    while (!stop.load()) {
      int64_t n = 0;
      bool failed = false;
      for (auto& p : pillows_) {
        if (stop.load()) break;
        auto k = StepPillow(*p, /*wait_for_full=*/true);
        if (!k.ok()) {
          // A log or store error (a broker down, disk full, a locked database): logged once
          // per streak; the step is tried again after a pause.
          StepFailed(*p, k.status());
          failed = true;
          continue;
        }
        StepSucceeded(*p);
        n += *k;
        auto r = RunDueRetries(*p, false);
        std::lock_guard l(p->mu);
        if (!r.ok()) {
          p->retry_failures.Failed(r.status(), "retrying queued changes",
                                   "the changes stay queued; retried with the next scan (1 s)");
        } else {
          p->retry_failures.Succeeded();
          n += *r;
        }
      }
      if (failed) {
        std::this_thread::sleep_for(std::chrono::milliseconds(kStepRetryMs));
        continue;
      }
      if (n == 0) seen = log_->WaitForAppend(seen, std::chrono::milliseconds(WaitMs()));
    }
    for (auto& p : pillows_) {  // the batch in hand is done; keep its offsets
      std::lock_guard l(p->mu);
      CC_RETURN_IF_ERROR(Checkpoint(*p, true));
    }
    return Status::Ok();
  }

  Result<std::vector<PillowStatus>> GetStatus() override {
    std::vector<PillowStatus> out;
    const int64_t now = util::NowMicros();
    for (auto& p : pillows_) {
      std::lock_guard l(p->mu);
      RefreshOwned(*p);
      PillowStatus st;
      st.name = p->cfg.name;
      for (const auto& tp : p->owned) {
        PartitionStatus ps;
        ps.topic = tp.first;
        ps.partition = tp.second;
        CC_ASSIGN_OR_RETURN(ps.end_offset, log_->EndOffset(tp.first, tp.second));
        CC_ASSIGN_OR_RETURN(ps.checkpoint, NextOffset(*p, tp));
        ps.lag = std::max<int64_t>(0, ps.end_offset - ps.checkpoint);
        if (ps.lag > 0) {
          CC_ASSIGN_OR_RETURN(auto recs, log_->Read(tp.first, tp.second, ps.checkpoint, 1));
          if (!recs.empty()) ps.lag_seconds = std::max<double>(0, (now - recs[0].timestamp) / 1e6);
        }
        st.partitions.push_back(std::move(ps));
      }
      CC_ASSIGN_OR_RETURN(auto n,
                          p->db->Run("counting retries",
                                     "SELECT COALESCE(SUM(1-dead),0), COALESCE(SUM(dead),0) "
                                     "FROM pillow_retries"));
      st.retries = n.Int(0, 0);
      st.dead_letters = n.Int(0, 1);
      out.push_back(std::move(st));
    }
    return out;
  }

  Result<std::vector<RetryEntry>> Retries(std::string_view name) override {
    CC_ASSIGN_OR_RETURN(Pillow * p, Find(name));
    std::lock_guard l(p->mu);
    CC_ASSIGN_OR_RETURN(
        auto rows,
        p->db->Run("listing retries",
                   "SELECT doc_id, topic, partition, \"offset\", attempts, next_attempt, error, "
                   "dead FROM pillow_retries ORDER BY dead, next_attempt, doc_id"));
    std::vector<RetryEntry> out;
    for (size_t i = 0; i < rows.size(); ++i) {
      RetryEntry e;
      e.doc_id = std::string(rows.Str(i, 0));
      e.topic = std::string(rows.Str(i, 1));
      e.partition = static_cast<int>(rows.Int(i, 2));
      e.offset = rows.Int(i, 3);
      e.attempts = static_cast<int>(rows.Int(i, 4));
      e.next_attempt = rows.Int(i, 5);
      e.error = std::string(rows.Str(i, 6));
      e.dead = rows.Int(i, 7) != 0;
      out.push_back(std::move(e));
    }
    return out;
  }

  Result<int64_t> Requeue(std::string_view name, std::string_view doc_id,
                          bool include_dead) override {
    CC_ASSIGN_OR_RETURN(Pillow * p, Find(name));
    std::lock_guard l(p->mu);
    const int64_t all = include_dead ? 1 : 0;
    CC_ASSIGN_OR_RETURN(
        auto up, p->db->Run("requeueing",
                            "UPDATE pillow_retries SET attempts=0, next_attempt=0, dead=0 "
                            "WHERE (CAST(? AS TEXT)='' OR doc_id=?) AND (CAST(? AS INTEGER)=1 OR "
                            "dead=0) AND doc_id NOT LIKE 'corrupt:%'",
                            {doc_id, doc_id, all}));
    const int64_t n = up.changed;
    if (!doc_id.empty() && n == 0 && !include_dead) {
      CC_ASSIGN_OR_RETURN(
          auto d, p->db->Run("reading a retry",
                             "SELECT 1 FROM pillow_retries WHERE doc_id=? AND dead=1", {doc_id}));
      if (!d.empty())
        return Status::FailedPrecondition(fmt::format(
            "the change of document {} is dead-lettered; requeue it with dead letters included",
            doc_id));
    }
    if (!doc_id.empty() && n == 0)
      return Status::NotFound(
          fmt::format("pillow {} has no queued change for document {}", name, doc_id));
    return n;
  }

  Result<int64_t> Reconcile(std::string_view name) override {
    CC_ASSIGN_OR_RETURN(Pillow * p, Find(name));
    std::vector<ChangeMeta> missing;
    {
      std::lock_guard l(p->mu);
      CC_ASSIGN_OR_RETURN(missing, p->proc->Missing(*p->db, *engine_));
    }
    std::vector<storage::ChangeMessage> msgs;
    for (const auto& m : missing) msgs.push_back({m.topic, m.document_id, ChangeMetaToJson(m)});
    for (size_t i = 0; i < msgs.size(); i += 1000) {
      std::span<const storage::ChangeMessage> part(msgs.data() + i,
                                                   std::min<size_t>(1000, msgs.size() - i));
      CC_RETURN_IF_ERROR(log_->Append(part));
    }
    return static_cast<int64_t>(msgs.size());
  }

  Status Reset(std::string_view name) override {
    CC_ASSIGN_OR_RETURN(Pillow * p, Find(name));
    std::lock_guard l(p->mu);
    CC_RETURN_IF_ERROR(p->db->Transaction("resetting a pillow", kSetupLock, [&] {
      CC_RETURN_IF_ERROR(p->proc->Reset(*p->db));
      return p->db->Exec("resetting a pillow",
                         "DELETE FROM pillow_checkpoints; DELETE FROM pillow_retries");
    }));
    p->next.clear();
    p->saved.clear();
    p->queued = 0;
    return Status::Ok();
  }

  Result<int64_t> UcrLoad(std::string_view config_json) override {
    return WithUcr([&](SqlDb& db) { return ucr_->Load(db, *engine_, config_json); });
  }
  Result<int64_t> UcrRebuild(std::string_view domain, std::string_view table_id) override {
    return WithUcr([&](SqlDb& db) { return ucr_->Rebuild(db, *engine_, domain, table_id); });
  }

 private:
  template <typename F>
  Result<int64_t> WithUcr(F fn) {
    auto p = Find("ucr");
    if (!p.ok() || !ucr_)
      return Status::FailedPrecondition("the ucr pillow is not run by this host");
    std::lock_guard l((*p)->mu);
    SqlDb& db = *(*p)->db;
    // A data source is configuration, not a copy the pillow can rebuild, yet it lives in the
    // pillow's database, whose commits SQLite does not sync (synchronous=NORMAL): this one is
    // synced, or a power cut could take back a data source whose load was acknowledged (found
    // by the power-cut simulation of a long-lived host; docs/reliability.md).
    if (!db.postgres())
      CC_RETURN_IF_ERROR(db.Exec("syncing a data source", "PRAGMA synchronous=FULL"));
    int64_t out = 0;
    Status st = db.Transaction("changing a data source", kUcrLock, [&] {
      CC_ASSIGN_OR_RETURN(out, fn(db));
      return Status::Ok();
    });
    if (!db.postgres()) {  // the change is committed (or not) by now: a failure here is logged
      Status back = db.Exec("syncing a data source", "PRAGMA synchronous=NORMAL");
      if (!back.ok())
        Log(LogLevel::kWarning, "the ucr pillow's database stays synchronous=FULL",
            {{"component", "pillows"},
             {"error", back.ToString()},
             {"next", "slower pillow commits"}});
    }
    CC_RETURN_IF_ERROR(st);
    return out;
  }

  // Adds a pillow (also AddBuiltinPillow's way in).
  Status Add(const PillowConfig& cfg, std::unique_ptr<Processor> proc) {
    if (cfg.name.empty() || cfg.name.find_first_of("/\\. \"") != std::string::npos)
      return Status::InvalidArgument(fmt::format(
          "pillow name '{}' must be non-empty without '/', '.', '\"' or spaces", cfg.name));
    if (cfg.topics.empty())
      return Status::InvalidArgument(fmt::format("pillow {} has no topics", cfg.name));
    if (cfg.chunk_size == 0 || cfg.max_attempts < 1)
      return Status::InvalidArgument(
          fmt::format("pillow {}: chunk_size and max_attempts must be positive", cfg.name));
    for (const auto& p : pillows_)
      if (p->cfg.name == cfg.name)
        return Status::AlreadyExists(fmt::format("a pillow named {} exists", cfg.name));
    if (!opts_.only.empty() &&
        std::find(opts_.only.begin(), opts_.only.end(), cfg.name) == opts_.only.end())
      return Status::Ok();  // not run by this host
    auto p = std::make_unique<Pillow>(cfg);
    p->proc = std::move(proc);
    if (opts_.inspect_only || !opts_.consumer_group.empty() || pg_) return Finish(std::move(p));
    // One worker per (pillow, n, k): a lock file held while this host lives (on PostgreSQL a
    // session lock, taken in Finish).
    std::string lock_path = fmt::format("{}/{}.worker-{}-of-{}.lock", opts_.dir, cfg.name,
                                        opts_.process_num, opts_.num_processes);
    p->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (p->lock_fd < 0) return Status::Unavailable("cannot open " + lock_path);
    if (::flock(p->lock_fd, LOCK_EX | LOCK_NB) != 0) {
      char buf[32] = {};
      ssize_t n = ::pread(p->lock_fd, buf, sizeof buf - 1, 0);
      std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "unknown";
      holder.erase(std::remove(holder.begin(), holder.end(), '\n'), holder.end());
      return Status::FailedPrecondition(
          fmt::format("pillow {} worker {} of {} is already running (pid {})", cfg.name,
                      opts_.process_num, opts_.num_processes, holder));
    }
    std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(p->lock_fd, 0) != 0 || ::pwrite(p->lock_fd, pid.data(), pid.size(), 0) < 0)
      return Status::Unavailable("cannot write " + lock_path);
    return Finish(std::move(p));
  }

  Status Finish(std::unique_ptr<Pillow> p) {
    const PillowConfig& cfg = p->cfg;
    CC_ASSIGN_OR_RETURN(
        p->db, SqlDb::Open(pg_ ? opts_.dir : fmt::format("{}/{}.sqlite", opts_.dir, cfg.name),
                           PillowSchema(cfg.name), /*durable=*/false));  // rebuilt from the log
    if (pg_ && !opts_.inspect_only && opts_.consumer_group.empty()) {
      const std::string id = fmt::format("pillow-worker\n{}\n{}\n{}", cfg.name, opts_.process_num,
                                         opts_.num_processes);
      static constexpr uint8_t kZero[16] = {};
      CC_ASSIGN_OR_RETURN(bool got,
                          p->db->TryLock(static_cast<int64_t>(util::SipHash24(kZero, id))));
      if (!got)
        return Status::FailedPrecondition(fmt::format(
            "pillow {} worker {} of {} is already running (another session holds its lock)",
            cfg.name, opts_.process_num, opts_.num_processes));
    }
    // The store can be rebuilt from the log, and its checkpoint never runs ahead of it: the
    // checkpoint commits with the rows (NORMAL, WAL: a power cut takes both back together).
    CC_RETURN_IF_ERROR(
        p->db->Migrate("pillow", kHostSchemaVersion, kSqliteHostSchema, kPostgresHostSchema));
    CC_RETURN_IF_ERROR(p->db->Transaction("setting up a pillow", kSetupLock,
                                          [&] { return p->proc->Setup(*p->db); }));
    if (!opts_.consumer_group.empty() && !opts_.inspect_only) {
      RefreshOwned(*p);  // creates missing topics: a member subscribes to existing ones
      CC_ASSIGN_OR_RETURN(p->member,
                          log_->JoinGroup(opts_.consumer_group + "." + cfg.name, cfg.topics));
      p->owned.clear();
    }
    RefreshOwned(*p);
    pillows_.push_back(std::move(p));
    return Status::Ok();
  }

  Result<Pillow*> Find(std::string_view name) {
    for (auto& p : pillows_)
      if (p->cfg.name == name) return p.get();
    return Status::NotFound(fmt::format("no pillow named {} runs here", name));
  }

  int WaitMs() const {
    int ms = 200;
    for (const auto& p : pillows_) ms = std::min(ms, std::max(1, p->cfg.max_wait_ms));
    return ms;
  }

  // CommCare's rule: the sorted (topic, partition) list, every n-th entry from k; or the
  // consumer group's assignment. A partition that comes or goes is read from its checkpoint
  // again, and no longer checkpointed here (its other owner moves it).
  void RefreshOwned(Pillow& p) {
    if (p.member) {
      auto now = p.member->Assignment();
      if (!now.ok()) {
        p.assignment_failures.Failed(now.status(), "reading the consumer group's assignment",
                                     "keeping the partitions it had; asked again with each batch");
        return;
      }
      p.assignment_failures.Succeeded();
      if (*now == p.owned) return;
      std::set<TopicPartition> before(p.owned.begin(), p.owned.end());
      std::set<TopicPartition> after(now->begin(), now->end());
      for (const auto& tp : before)
        if (!after.count(tp)) p.next.erase(tp), p.saved.erase(tp);
      for (const auto& tp : after)
        if (!before.count(tp)) p.next.erase(tp), p.saved.erase(tp);
      p.owned = std::move(*now);
      p.rotate = 0;
      return;
    }
    if (p.all_topics_known) return;
    std::vector<TopicPartition> all;
    bool known = true;
    for (const auto& t : p.cfg.topics) {
      auto n = log_->Partitions(t);
      if (!n.ok() && n.status().IsNotFound()) {
        (void)log_->CreateTopic(t, 8);  // a writer creates it; a reader waits for the writer
        n = log_->Partitions(t);
      }
      if (!n.ok()) {
        known = false;
        continue;
      }
      for (int i = 0; i < *n; ++i) all.emplace_back(t, i);
    }
    std::sort(all.begin(), all.end());
    p.owned.clear();
    for (size_t i = static_cast<size_t>(opts_.process_num); i < all.size();
         i += static_cast<size_t>(opts_.num_processes))
      p.owned.push_back(all[i]);
    p.all_topics_known = known;
  }

  // The next offset of a partition: in memory, else the checkpoint, else the log's start.
  Result<int64_t> NextOffset(Pillow& p, const TopicPartition& tp) {
    auto it = p.next.find(tp);
    if (it != p.next.end()) return it->second;
    CC_ASSIGN_OR_RETURN(auto row, p.db->Run("reading a checkpoint",
                                            "SELECT \"offset\" FROM pillow_checkpoints WHERE "
                                            "topic=? AND partition=?",
                                            {tp.first, int64_t{tp.second}}));
    int64_t off;
    if (!row.empty()) {
      off = row.Int(0, 0);
      p.saved[tp] = off;
    } else {
      CC_ASSIGN_OR_RETURN(off, log_->StartOffset(tp.first, tp.second));  // a new pillow backfills
    }
    CC_ASSIGN_OR_RETURN(int64_t start, log_->StartOffset(tp.first, tp.second));
    off = std::max(off, start);  // retention dropped what the checkpoint points at
    p.next[tp] = off;
    return off;
  }

  Status Checkpoint(Pillow& p, bool force) {
    // In a consumer group every batch is checkpointed: a partition may move after any batch.
    if (!force && !p.proc->WritesSql() && !p.member &&
        p.since_checkpoint < p.cfg.checkpoint_every &&
        Clock::now() - p.last_checkpoint < std::chrono::seconds(p.cfg.checkpoint_seconds))
      return Status::Ok();
    const int64_t now = util::NowMicros();
    for (const auto& [tp, off] : p.next) {
      auto it = p.saved.find(tp);
      if (it != p.saved.end() && it->second == off) continue;
      p.doing = {Doing::kCheckpoint, tp, off};
      CC_RETURN_IF_ERROR(p.db->Run("writing a checkpoint",
                                   "INSERT INTO pillow_checkpoints(topic, partition, \"offset\", "
                                   "updated_at) VALUES(?,?,?,?) ON CONFLICT(topic, partition) DO "
                                   "UPDATE SET \"offset\"=excluded.\"offset\", "
                                   "updated_at=excluded.updated_at",
                                   {tp.first, int64_t{tp.second}, off, now})
                             .status());
      p.saved[tp] = off;
    }
    p.doing = {};
    p.since_checkpoint = 0;
    p.last_checkpoint = Clock::now();
    return Status::Ok();
  }

  // Runs the processor over changes (one transaction is open); exceptions become failures.
  Status Process(Pillow& p, const std::vector<const Change*>& changes, Failures* failed) {
    try {
      return p.proc->ProcessBatch(*p.db, *engine_, changes, failed);
    } catch (const std::exception& e) {
      return Status::Internal(fmt::format("processor threw: {}", e.what()));
    } catch (...) {
      return Status::Internal("processor threw a non-standard exception");
    }
  }

  // Processes changes in the open transaction: the batch at once, or one by one if the batch
  // as a whole fails. Failures go to the retry queue (and into *out); successes clear their
  // queue entries.
  Status ProcessInTxn(Pillow& p, const std::vector<const Change*>& changes, BatchOutcome* out) {
    Failures failed;
    SqlDb& db = *p.db;
    CC_RETURN_IF_ERROR(db.Exec("processing a batch", "SAVEPOINT batch"));
    Status s = Process(p, changes, &failed);
    // On PostgreSQL a failed statement spoils the rest of its transaction: a batch with a
    // failed change is done again a change at a time, and a failed change's writes undone.
    const bool undo_failed = db.postgres() && p.proc->WritesSql();
    if (s.ok() && undo_failed && !failed.empty())
      s = Status::Aborted("a change of the batch failed");
    if (!s.ok()) {
      if (s.code() == StatusCode::kUnavailable) return s;  // the database went away
      CC_RETURN_IF_ERROR(db.Exec("processing a batch", "ROLLBACK TO batch"));
      failed.clear();
      for (size_t i = 0; i < changes.size(); ++i) {
        CC_RETURN_IF_ERROR(db.Exec("processing a change", "SAVEPOINT one"));
        Failures one;
        Status s1 = Process(p, {changes[i]}, &one);
        if (!s1.ok()) {
          if (s1.code() == StatusCode::kUnavailable) return s1;
          CC_RETURN_IF_ERROR(db.Exec("processing a change", "ROLLBACK TO one"));
          failed.emplace_back(i, s1.message());
        } else if (!one.empty()) {
          if (undo_failed) CC_RETURN_IF_ERROR(db.Exec("processing a change", "ROLLBACK TO one"));
          failed.emplace_back(i, one[0].second);
        }
        CC_RETURN_IF_ERROR(db.Exec("processing a change", "RELEASE one"));
      }
    }
    CC_RETURN_IF_ERROR(db.Exec("processing a batch", "RELEASE batch"));
    std::vector<bool> bad(changes.size(), false);
    for (const auto& [i, err] : failed) {
      if (i >= changes.size()) continue;
      bad[i] = true;
      CC_ASSIGN_OR_RETURN(RetryEntry e, QueueRetry(p, *changes[i], err));
      out->Add(std::move(e));
    }
    out->succeeded += std::count(bad.begin(), bad.end(), false);
    if (p.queued != 0) {
      for (size_t i = 0; i < changes.size(); ++i) {
        if (bad[i]) continue;
        CC_ASSIGN_OR_RETURN(auto d,
                            db.Run("clearing a retry", "DELETE FROM pillow_retries WHERE doc_id=?",
                                   {changes[i]->meta.document_id}));
        if (d.changed > 0 && p.queued > 0) --p.queued;
      }
    }
    return Status::Ok();
  }

  int64_t NextAttempt(const Pillow& p, int attempts) const {
    double delay = static_cast<double>(p.cfg.retry_delay_us) *
                   std::pow(static_cast<double>(attempts), p.cfg.retry_backoff_factor);
    return util::NowMicros() + static_cast<int64_t>(delay);
  }

  // Queues a failed change for another attempt, or dead-letters it after max_attempts; the
  // entry as queued.
  Result<RetryEntry> QueueRetry(Pillow& p, const Change& c, const std::string& error) {
    CC_ASSIGN_OR_RETURN(
        auto q, p.db->Run("reading a retry", "SELECT attempts FROM pillow_retries WHERE doc_id=?",
                          {c.meta.document_id}));
    const bool existed = !q.empty();
    const int attempts = existed ? static_cast<int>(q.Int(0, 0)) + 1 : 1;
    const RetryEntry e{c.meta.document_id,
                       c.topic,
                       c.partition,
                       c.offset,
                       attempts,
                       NextAttempt(p, attempts),
                       error,
                       attempts >= p.cfg.max_attempts};
    CC_RETURN_IF_ERROR(p.db->Run("queueing a retry", kPutRetry,
                                 {e.doc_id, e.topic, int64_t{e.partition}, e.offset, c.timestamp,
                                  int64_t{e.attempts}, e.next_attempt, error, int64_t{e.dead},
                                  ChangeMetaToJson(c.meta)})
                           .status());
    if (!existed && p.queued >= 0) ++p.queued;
    return e;
  }

  // A record that is not ChangeMeta JSON: dead-lettered at once with the reason.
  Result<RetryEntry> DeadLetterCorrupt(Pillow& p, const storage::ChangeRecord& r,
                                       const std::string& why) {
    const RetryEntry e{fmt::format("{}{}/{}/{}", kCorruptPrefix, r.topic, r.partition, r.offset),
                       r.topic,
                       r.partition,
                       r.offset,
                       0,
                       0,
                       "corrupt change record: " + why,
                       true};
    CC_RETURN_IF_ERROR(p.db->Run("dead-lettering a corrupt record", kPutRetry,
                                 {e.doc_id, r.topic, int64_t{r.partition}, r.offset, r.timestamp,
                                  int64_t{0}, int64_t{0}, e.error, int64_t{1}, r.value})
                           .status());
    if (p.queued >= 0) ++p.queued;
    return e;
  }

  // Logs a failed step of Run's loop, once per streak of its kind, with what happens next.
  void StepFailed(Pillow& p, const Status& s) {
    std::lock_guard l(p.mu);
    const Doing& at = p.doing;
    const std::string part = std::to_string(at.tp.second), offset = std::to_string(at.offset);
    switch (at.stage) {
      case Doing::kRead:
        p.read_failures.Failed(s, fmt::format("reading {} partition {}", at.tp.first, part),
                               fmt::format("retrying the read in {} ms", kStepRetryMs),
                               {{"topic", at.tp.first}, {"partition", part}, {"offset", offset}});
        break;
      case Doing::kCheckpoint:
        p.checkpoint_failures.Failed(
            s, fmt::format("writing the checkpoint of {} partition {}", at.tp.first, part),
            fmt::format("the batch is rolled back and read again from the last checkpoint in {} ms",
                        kStepRetryMs),
            {{"topic", at.tp.first}, {"partition", part}, {"offset", offset}});
        break;
      case Doing::kBatch:
        p.batch_failures.Failed(
            s, "processing a batch",
            fmt::format("the batch is rolled back and read again from the last checkpoint in {} ms",
                        kStepRetryMs));
        break;
    }
  }

  // Ends the streaks of failed steps (each logs its recovery).
  void StepSucceeded(Pillow& p) {
    std::lock_guard l(p.mu);
    p.read_failures.Succeeded();
    p.checkpoint_failures.Succeeded();
    p.batch_failures.Succeeded();
  }

  // One batch of one pillow; returns the number of changes read (0: nothing to do).
  Result<int64_t> StepPillow(Pillow& p, bool wait_for_full) {
    std::lock_guard l(p.mu);
    RefreshOwned(p);
    if (p.owned.empty()) return 0;
    if (p.queued < 0) {
      auto n = p.db->Run("counting retries", "SELECT COUNT(*) FROM pillow_retries");
      p.queued = n.ok() ? n->Int(0, 0) : 1;
    }
    std::vector<storage::ChangeRecord> recs;
    std::map<TopicPartition, int64_t> read_to;
    const size_t n = p.owned.size();
    std::map<std::string, bool> wanted;
    for (size_t j = 0; j < n && recs.size() < p.cfg.chunk_size; ++j) {
      const auto& tp = p.owned[(p.rotate + j) % n];
      p.doing = {Doing::kRead, tp, -1};
      CC_ASSIGN_OR_RETURN(int64_t from, NextOffset(p, tp));
      p.doing.offset = from;
      auto w = wanted.find(tp.first);
      if (w == wanted.end()) w = wanted.emplace(tp.first, p.proc->Wants(*p.db, tp.first)).first;
      if (!w->second) {  // skip to the end unread; checkpointed with the next write
        CC_ASSIGN_OR_RETURN(int64_t end, log_->EndOffset(tp.first, tp.second));
        p.next[tp] = end;
        continue;
      }
      // The end is read first: when the read comes back short, every offset below it that it
      // did not return is not a record (Kafka's transaction markers), so the position moves
      // past them and the lag can reach 0.
      CC_ASSIGN_OR_RETURN(int64_t end, log_->EndOffset(tp.first, tp.second));
      if (from >= end) continue;
      const size_t want = p.cfg.chunk_size - recs.size();
      CC_ASSIGN_OR_RETURN(auto got, log_->Read(tp.first, tp.second, from, want));
      const int64_t next = got.size() < want
                               ? std::max(end, got.empty() ? from : got.back().offset + 1)
                               : got.back().offset + 1;
      if (got.empty()) {
        p.next[tp] = next;  // only markers: checkpointed with the next write
        continue;
      }
      read_to[tp] = next;
      for (auto& r : got) recs.push_back(std::move(r));
    }
    p.rotate = (p.rotate + 1) % n;
    p.doing = {};
    if (recs.empty()) {
      // Positions moved past changes this pillow skips (a topic it does not want, or only
      // transaction markers) are checkpointed now: with no write to carry them, its lag would
      // otherwise never fall.
      bool moved = false;
      for (const auto& [tp, off] : p.next)
        if (auto it = p.saved.find(tp); it == p.saved.end() || it->second != off) moved = true;
      if (moved)
        CC_RETURN_IF_ERROR(p.db->Transaction("checkpointing skipped changes", 0,
                                             [&] { return Checkpoint(p, true); }));
      return 0;
    }
    if (wait_for_full && recs.size() < p.cfg.chunk_size) {
      int64_t oldest = recs.front().timestamp;
      for (const auto& r : recs) oldest = std::min(oldest, r.timestamp);
      if (util::NowMicros() - oldest < int64_t{p.cfg.max_wait_ms} * 1000) return 0;  // wait
    }

    BatchOutcome outcome;
    Status s = p.db->Transaction("processing a batch", 0, [&]() -> commcare::Status {
      outcome = {};
      std::vector<Change> changes;
      changes.reserve(recs.size());
      for (const auto& r : recs) {
        auto meta = ChangeMetaFromJson(r.value);
        if (!meta.ok()) {
          CC_ASSIGN_OR_RETURN(RetryEntry e, DeadLetterCorrupt(p, r, meta.status().message()));
          outcome.Add(std::move(e));
          continue;
        }
        changes.push_back(Change{r.topic, r.partition, r.offset, r.timestamp, std::move(*meta)});
      }
      // De-duplicate by document id: the last change of a document stands for all of them
      // (the processor re-reads the current document anyway).
      std::unordered_map<std::string_view, size_t> last;
      for (size_t i = 0; i < changes.size(); ++i) last[changes[i].meta.document_id] = i;
      std::vector<const Change*> batch;
      batch.reserve(last.size());
      for (size_t i = 0; i < changes.size(); ++i)
        if (last[changes[i].meta.document_id] == i) batch.push_back(&changes[i]);
      if (!batch.empty()) CC_RETURN_IF_ERROR(ProcessInTxn(p, batch, &outcome));
      auto saved_next = p.next;
      for (const auto& [tp, off] : read_to) p.next[tp] = off;
      p.since_checkpoint += static_cast<int64_t>(recs.size());
      Status cs = Checkpoint(p, false);
      if (!cs.ok()) p.next = std::move(saved_next);
      return cs;
    });
    if (!s.ok()) {
      p.next.clear();  // re-read from the checkpoints
      p.saved.clear();
      p.queued = -1;
      return s;
    }
    p.proc->Committed();
    p.change_failures.Report(outcome, p.cfg.max_attempts);
    return static_cast<int64_t>(recs.size());
  }

  // Retries whose time has come (scanned at most once a second unless forced).
  Result<int64_t> RunDueRetries(Pillow& p, bool force_scan) {
    std::lock_guard l(p.mu);
    if (p.queued == 0) return 0;
    auto now_tp = Clock::now();
    if (!force_scan && now_tp - p.last_retry_scan < std::chrono::seconds(1)) return 0;
    p.last_retry_scan = now_tp;
    const int64_t now = util::NowMicros();
    std::vector<Change> due;
    // Up to a batch of this worker's due retries, a page at a time; another worker's partitions
    // are that worker's to retry (read past here, not counted).
    int64_t after_time = -1;
    std::string after_doc;
    while (due.size() < p.cfg.chunk_size) {
      CC_ASSIGN_OR_RETURN(
          auto page,
          p.db->Run("reading due retries",
                    "SELECT doc_id, topic, partition, \"offset\", \"timestamp\", change, "
                    "next_attempt FROM pillow_retries WHERE dead=0 AND next_attempt<=? AND "
                    "(next_attempt>? OR (next_attempt=? AND doc_id>?)) ORDER BY next_attempt, "
                    "doc_id LIMIT 256",
                    {now, after_time, after_time, after_doc}));
      for (size_t i = 0; i < page.size() && due.size() < p.cfg.chunk_size; ++i) {
        TopicPartition tp(std::string(page.Str(i, 1)), static_cast<int>(page.Int(i, 2)));
        if (!std::binary_search(p.owned.begin(), p.owned.end(), tp)) continue;
        auto meta = ChangeMetaFromJson(page.Str(i, 5));
        if (!meta.ok()) continue;  // only valid changes are queued for retry
        due.push_back(Change{std::move(tp.first), tp.second, page.Int(i, 3), page.Int(i, 4),
                             std::move(*meta)});
      }
      if (page.size() < 256) break;
      after_time = page.Int(page.size() - 1, 6);
      after_doc = std::string(page.Str(page.size() - 1, 0));
    }
    for (const auto& c : due) {
      BatchOutcome outcome;
      Status st = p.db->Transaction("retrying a change", 0, [&] {
        outcome = {};
        return ProcessInTxn(p, {&c}, &outcome);
      });
      if (!st.ok()) {
        p.queued = -1;
        return st;
      }
      p.proc->Committed();
      p.change_failures.Report(outcome, p.cfg.max_attempts);
    }
    return static_cast<int64_t>(due.size());
  }

  Engine* engine_;
  PillowHostOptions opts_;
  storage::ChangeLog* log_ = nullptr;
  bool temp_dir_ = false;
  bool pg_ = false;  // the pillow databases are schemas of a PostgreSQL database (opts_.dir)
  std::vector<std::unique_ptr<Pillow>> pillows_;
  ucr::UcrProcessor* ucr_ = nullptr;  // owned by the ucr pillow, if this host runs it
};

}  // namespace

namespace ucr {
Status SetDirectory(PillowHost* host, std::shared_ptr<Directory> directory) {
  auto* h = dynamic_cast<Host*>(host);
  if (!h) return Status::InvalidArgument("ucr::SetDirectory needs a host from PillowHost::Open");
  h->SetUcrDirectory(std::move(directory));
  return Status::Ok();
}
}  // namespace ucr

Status AddBuiltinPillow(PillowHost* host, const PillowConfig& config,
                        std::unique_ptr<Processor> proc) {
  auto* h = dynamic_cast<Host*>(host);
  if (!h) return Status::InvalidArgument("AddBuiltinPillow needs a host from PillowHost::Open");
  return h->AddBuiltin(config, std::move(proc));
}

}  // namespace commcare::pillows

namespace commcare {

Result<std::unique_ptr<PillowHost>> PillowHost::Open(Engine* engine,
                                                     const PillowHostOptions& options) {
  if (!engine) return Status::InvalidArgument("PillowHost::Open needs an engine");
  auto h = std::make_unique<pillows::Host>(engine, options);
  CC_RETURN_IF_ERROR(h->Init());
  return std::unique_ptr<PillowHost>(std::move(h));
}

}  // namespace commcare
