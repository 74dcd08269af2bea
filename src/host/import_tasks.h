// The case import and bulk edit task types (import_tasks.cc), registered with the library's.
#pragma once

namespace commcare {
class Host;
class TaskWorkers;
}  // namespace commcare

namespace commcare::host {

// import.cases: payload is CaseImportOptions JSON plus "upload" (the file's blob key);
// import.bulk_edit: payload is BulkEditOptions JSON. docs/import.md.
void RegisterImportTaskTypes(Host* host, TaskWorkers* workers);

}  // namespace commcare::host
