// The library's own task types, registered on every worker pool a Host makes (internal).
#pragma once

namespace commcare {
class Host;
class TaskWorkers;
}  // namespace commcare

namespace commcare::host {

// commcare.noop (returns its payload: benchmarks, smoke tests), commcare.prune_tasks (deletes
// finished tasks older than payload "days", default 30), and the export and report types.
void RegisterTaskTypes(Host* host, TaskWorkers* workers);

}  // namespace commcare::host
