// Host: the one way a process assembles a deployment: the engine on a data directory (set up
// from a Deployment on first use), and on demand the MetaStore (domains, users), Sync (restore)
// and pillow hosts. The C ABI, the `commcare` tool, the reference server and the benchmarks
// open their stores through it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "commcare/deployment.h"
#include "commcare/engine.h"
#include "commcare/status.h"

namespace commcare {

namespace meta {
class MetaStore;  // src/meta/meta_store.h: users, domains, groups, locations, apps
}
class Sync;
class PillowHost;
struct PillowHostOptions;
class TaskQueue;
class TaskWorkers;
struct TaskWorkersOptions;

// What a Host opens.
struct HostOptions {
  EngineOptions engine;  // data_dir (or in_memory), read_only, durability, limits
  // The deployment this directory is for. When the directory has no commcare.json it is set up
  // from it (create_dirs); when it has one, the two must agree (FailedPrecondition names the
  // first section that differs). Unset: the directory must be set up already.
  std::optional<Deployment> deployment;
  // Open read-only when another process holds the writer's lock (the CLI beside a server).
  bool reader_if_locked = false;
  std::string restore_cache_dir;  // Sync's cache of slow first restores ("": none)
  // Reads a host file: a Deployment's JSON plus "data_dir", this process's own directory
  // (its lock, pillow state, sync logs). data_dir, when given, overrides the file's.
  static Result<HostOptions> FromHostFile(const std::string& path, const std::string& data_dir);
};

// An open deployment in this process. Thread-safe; the lazily opened parts live as long as it.
class Host {
 public:
  static Result<std::unique_ptr<Host>> Open(HostOptions options);
  ~Host();  // defined where Lazy is complete
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  Engine* engine() const { return engine_.get(); }
  const HostOptions& options() const { return options_; }
  bool read_only() const { return engine_->Options().read_only; }
  // The MetaStore, opened on first use; a writer's relays its changes to the change log.
  Result<meta::MetaStore*> Meta();
  // Sync (restores, sync logs), opened on first use.
  Result<Sync*> Syncer();
  // Where the pillows keep their state: a directory or "postgres:<conninfo>" ("" in memory).
  std::string PillowStore() const;
  // The deployment's base_url ("" in memory or when unset): absolute URLs made away from a
  // request start with it.
  std::string BaseUrl() const;
  // A pillow host on this engine; options.dir "" = PillowStore() (in memory: a temp dir).
  Result<std::unique_ptr<PillowHost>> OpenPillows(const PillowHostOptions& options) const;
  // The task queue (commcare.json's "tasks": PostgreSQL, else <data>/tasks.db), opened on first
  // use; readers of the data directory may use it too.
  Result<TaskQueue*> Tasks();
  // A worker pool on Tasks() with the library's task types registered (commcare.noop,
  // commcare.prune_tasks, ...); the caller registers its own before Start.
  Result<std::unique_ptr<TaskWorkers>> NewTaskWorkers(const TaskWorkersOptions& options);
  // Closes sync, meta and the engine, in that order (also done by the destructor).
  void Close();

 private:
  explicit Host(HostOptions o);
  HostOptions options_;
  std::unique_ptr<Engine> engine_;
  struct Lazy;
  std::unique_ptr<Lazy> lazy_;
};

}  // namespace commcare
