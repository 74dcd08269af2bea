// The library's own task types, registered on every worker pool a Host makes (internal).
#pragma once

#include <string>

#include "commcare/status.h"

namespace commcare {
class Host;
class TaskWorkers;
class TaskContext;
}  // namespace commcare

namespace commcare::host {

// commcare.noop (returns its payload: benchmarks, smoke tests), commcare.prune_tasks (deletes
// finished tasks older than payload "days", default 30), and the export and report types.
void RegisterTaskTypes(Host* host, TaskWorkers* workers);

// restore.async: runs the restore its payload (meta::RestoreParams) asks for into
// <data_dir>/restore-async/<task id>.xml; returns {"status", "file", "bytes", "restore_id",
// "cases"}.
Result<std::string> RunAsyncRestore(Host* host, TaskContext& c);

// Test-only: holds the calling task for the milliseconds the environment variable env names
// (none: no hold), or until the task is cancelled, so that tests see a task still under way.
void HoldForTest(const char* env, TaskContext& c);

}  // namespace commcare::host
