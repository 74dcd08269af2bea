// Host: a data directory (or memory) opened as one deployment: the engine at once, the
// MetaStore and Sync on first use, pillow hosts on request.
#include "commcare/host.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "commcare/pillows.h"
#include "commcare/sync.h"
#include "commcare/tasks.h"
#include "host/task_types.h"
#include "host/ucr_directory.h"
#include "integrations/forwarding/forwarding.h"
#include "meta/meta_store.h"

namespace commcare {

namespace json = boost::json;

struct Host::Lazy {
  std::mutex mu;
  std::unique_ptr<meta::MetaStore> meta;
  std::unique_ptr<Sync> sync;
  std::unique_ptr<TaskQueue> tasks;
  std::optional<Deployment> deployment;  // the directory's, unset in memory
};

Result<HostOptions> HostOptions::FromHostFile(const std::string& path,
                                              const std::string& data_dir) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("--config: cannot read {}", path));
  std::stringstream text;
  text << in.rdbuf();
  HostOptions o;
  std::string dir;
  CC_ASSIGN_OR_RETURN(o.deployment, Deployment::FromJson(text.str(), "--config " + path, &dir));
  o.engine.data_dir = data_dir.empty() ? dir : data_dir;
  if (o.engine.data_dir.empty())
    return Status::InvalidArgument(
        fmt::format("--config {}: give --data DIR or \"data_dir\" in the file", path));
  return o;
}

namespace {

// The directory's deployment against the one the host asked for: the first section that differs
// (one either of them leaves out, such as "meta", differs too).
Status SameDeployment(const Deployment& have, const Deployment& want, const std::string& dir) {
  const json::object h = json::parse(have.ToJson()).as_object();
  const json::object w = json::parse(want.ToJson()).as_object();
  auto differs = [&](std::string_view key) {
    return Status::FailedPrecondition(
        fmt::format("{} was set up with another \"{}\" than this host's (use a new data "
                    "directory for a new deployment)",
                    dir, key));
  };
  for (const auto& [key, value] : w) {
    const json::value* got = h.if_contains(key);
    if (!got || *got != value) return differs(key);
  }
  for (const auto& [key, value] : h)
    if (!w.contains(key)) return differs(key);
  return Status::Ok();
}

}  // namespace

Host::Host(HostOptions o) : options_(std::move(o)), lazy_(std::make_unique<Lazy>()) {}

Result<std::unique_ptr<Host>> Host::Open(HostOptions o) {
  auto host = std::unique_ptr<Host>(new Host(std::move(o)));
  HostOptions& opts = host->options_;
  const std::string& dir = opts.engine.data_dir;
  if (!opts.engine.in_memory) {
    if (dir.empty()) return Status::InvalidArgument("--data DIR is required");
    auto have = Deployment::Load(dir);
    if (have.status().IsNotFound() && opts.deployment) {
      // Processes starting on a fresh directory together: one sets it up, the others find it
      // set up (and must match it).
      Status made = Engine::Create(dir, *opts.deployment);
      if (made.code() == StatusCode::kAlreadyExists)
        have = Deployment::Load(dir);
      else if (made.ok())
        have = *opts.deployment;
      else
        return made;
    }
    if (!have.ok()) return have.status();
    if (opts.deployment) CC_RETURN_IF_ERROR(SameDeployment(*have, *opts.deployment, dir));
    host->lazy_->deployment = std::move(*have);
  }
  auto engine = Engine::Open(opts.engine);
  if (!engine.ok() && opts.reader_if_locked && !opts.engine.read_only &&
      engine.status().code() == StatusCode::kFailedPrecondition) {
    EngineOptions reader = opts.engine;
    reader.read_only = true;
    engine = Engine::Open(reader);
  }
  if (!engine.ok()) return engine.status();
  host->engine_ = std::move(engine).value();
  return host;
}

Host::~Host() { Close(); }

void Host::Close() {
  if (!lazy_) return;
  std::lock_guard l(lazy_->mu);
  lazy_->sync.reset();
  lazy_->meta.reset();
  lazy_->tasks.reset();
  engine_.reset();
}

Result<meta::MetaStore*> Host::Meta() {
  std::lock_guard l(lazy_->mu);
  if (!engine_) return Status::FailedPrecondition("the host is closed");
  if (!lazy_->meta) {
    const auto& d = lazy_->deployment;
    const std::string where =
        d ? d->StoreAt(options_.engine.data_dir, "meta", "meta.sqlite") : ":memory:";
    CC_ASSIGN_OR_RETURN(auto meta, meta::MetaStore::Open(where));
    // A writer relays domain, user, role, group, location and app changes (and what was queued
    // while no writer ran) to the change log.
    if (!read_only() && engine_->Changes())
      CC_RETURN_IF_ERROR(meta->SetChangeLog(engine_->Changes()));
    lazy_->meta = std::move(meta);
  }
  return lazy_->meta.get();
}

Result<Sync*> Host::Syncer() {
  std::lock_guard l(lazy_->mu);
  if (!engine_) return Status::FailedPrecondition("the host is closed");
  if (!lazy_->sync) {
    const auto& d = lazy_->deployment;
    const std::string where =
        d ? d->StoreAt(options_.engine.data_dir, "meta", "synclogs.sqlite") : std::string();
    CC_ASSIGN_OR_RETURN(lazy_->sync, Sync::Open(engine_.get(), where, options_.restore_cache_dir));
  }
  return lazy_->sync.get();
}

Result<TaskQueue*> Host::Tasks() {
  std::lock_guard l(lazy_->mu);
  if (!engine_) return Status::FailedPrecondition("the host is closed");
  if (!lazy_->tasks) {
    const auto& d = lazy_->deployment;
    const std::string where =
        d ? d->StoreAt(options_.engine.data_dir, "tasks", "tasks.db") : std::string();
    CC_ASSIGN_OR_RETURN(lazy_->tasks, OpenTaskQueue(where));
  }
  return lazy_->tasks.get();
}

Result<std::unique_ptr<TaskWorkers>> Host::NewTaskWorkers(const TaskWorkersOptions& options) {
  CC_ASSIGN_OR_RETURN(TaskQueue * q, Tasks());
  auto w = commcare::NewTaskWorkers(q, options);
  host::RegisterTaskTypes(this, w.get());
  return w;
}

std::string Host::BaseUrl() const {  // set at open, never changed: no lock, as PillowStore
  return lazy_->deployment ? lazy_->deployment->base_url : std::string();
}

std::string Host::PillowStore() const {
  const auto& d = lazy_->deployment;
  return d ? d->StoreAt(options_.engine.data_dir, "pillows", "pillows") : std::string();
}

Result<std::unique_ptr<PillowHost>> Host::OpenPillows(const PillowHostOptions& options) const {
  if (!engine_) return Status::FailedPrecondition("the host is closed");
  PillowHostOptions o = options;
  if (o.dir.empty()) o.dir = PillowStore();
  CC_ASSIGN_OR_RETURN(auto h, PillowHost::Open(engine_.get(), o));
  if (o.builtin) {
    // UCR's users, groups and locations (docs/ucr.md) come from the MetaStore.
    CC_ASSIGN_OR_RETURN(meta::MetaStore * meta, const_cast<Host*>(this)->Meta());
    CC_RETURN_IF_ERROR(pillows::ucr::SetDirectory(h.get(), NewMetaDirectory(meta)));
    // Data forwarding (docs/forwarding.md): records, then delivery tasks.
    auto tasks = const_cast<Host*>(this)->Tasks();
    CC_RETURN_IF_ERROR(forwarding::AddForwardingPillow(h.get(), tasks.ok() ? *tasks : nullptr));
  }
  return h;
}

}  // namespace commcare
