// Exports: CommCare HQ's case and form exports (corehq/apps/export) as CSV or XLSX files,
// streamed from the engine so memory does not grow with the number of rows. docs/exports.md
// describes the definitions, the columns and which of HQ's rules are followed.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare {

class Engine;
class TaskQueue;
namespace storage {
class BlobStore;
}

// One selected column: a path ("name", "prop", "form.group.q2") and its header (path if "").
// With split, a multi-select becomes one column per option ("<label> | <option>": 1 or "")
// plus "<label> | extra" for values not listed, as HQ's SplitExportColumn.
struct ExportColumn {
  std::string path;
  std::string label;
  std::vector<std::string> split;
};

// What to export and how. Read from and written to JSON (docs/exports.md has the fields).
struct ExportDefinition {
  enum class Kind { kCase, kForm };
  enum class Format { kCsv, kXlsx, kHtml, kJson };
  Kind kind = Kind::kCase;
  std::string name;            // a label (the file's sheet names use the table names)
  std::string domain;          // required
  std::string case_type;       // cases: "" = every type
  std::string xmlns;           // forms: required
  std::string owner_id;        // cases: "" = any owner
  std::string user_id;         // forms: "" = any user
  std::optional<bool> closed;  // cases: unset = open and closed
  int64_t modified_from = 0, modified_to = 0;  // cases, µs: [from, to), 0 = open
  int64_t received_from = 0, received_to = 0;  // forms, µs: [from, to), 0 = open
  std::vector<ExportColumn> columns;           // empty: system columns + every property / question
  Format format = Format::kCsv;
  int64_t expiry_seconds = 7 * 24 * 3600;  // how long export.run keeps the file ("expiry_seconds")
  // A saved definition's daily schedule ("schedule": {"cron", "time_zone"}); cron "" = none.
  std::string cron;
  std::string time_zone = "UTC";

  // Parses a definition; InvalidArgument names an unknown or bad field.
  static Result<ExportDefinition> FromJson(std::string_view json);
  std::string ToJson() const;
  // Checks required fields and that filters match the kind; InvalidArgument names the field.
  Status Validate() const;
};

// What an export wrote.
struct ExportResult {
  std::string file;                 // the output path
  int64_t rows = 0;                 // rows of every table
  std::vector<std::string> tables;  // table names, main table first
};

// Progress callback: rows done of total (total is an estimate: main rows); return false to
// stop (the export fails with Aborted).
using ExportProgress = std::function<bool(int64_t done, int64_t total)>;

// Runs an export into out_path (replaced atomically). CSV with one table writes one .csv;
// with several tables out_path is a .zip of one CSV per table. XLSX has one sheet per table;
// HTML and JSON are one document holding every table, as HQ's.
// InvalidArgument for a bad definition or a column that does not exist.
Result<ExportResult> RunExport(Engine* engine, const ExportDefinition& def,
                               const std::string& out_path, const ExportProgress& progress = {});

// The file name extension of a definition's output: "csv", "xlsx", "html" or "json" (a CSV
// export of several
// tables is written as .zip instead; RunExport's file tells).
std::string ExportExtension(const ExportDefinition& def);

// Saved definitions, kept under <data_dir>/exports/saved/<domain>/<name>.json.
Status SaveExportDefinition(const std::string& data_dir, const ExportDefinition& def);
Result<ExportDefinition> LoadExportDefinition(const std::string& data_dir, std::string_view domain,
                                              std::string_view name);
Result<std::vector<std::string>> ListExportDefinitions(const std::string& data_dir,
                                                       std::string_view domain);
Status DeleteExportDefinition(const std::string& data_dir, std::string_view domain,
                              std::string_view name);  // NotFound when there is none

// Deletes files in <data_dir>/exports (export.run's temp files; not its subdirectories) older
// than max_age; returns how many.
Result<int64_t> PruneExportFiles(const std::string& data_dir, std::chrono::seconds max_age);

// Saved exports with their schedules (a daily saved export is a task-queue Schedule named
// SavedExportScheduleName that enqueues export.run {"saved": NAME} in the domain).
std::string SavedExportScheduleName(std::string_view domain, std::string_view name);
// Saves def (SaveExportDefinition) and puts its schedule when it has a cron line, else deletes
// any schedule it had. InvalidArgument names a bad field.
Status PutSavedExport(const std::string& data_dir, TaskQueue* tasks, const ExportDefinition& def);
// Deletes a saved definition, its schedule and its latest-file pointer in blobs (when given);
// NotFound when there is no such definition.
Status DeleteSavedExport(const std::string& data_dir, TaskQueue* tasks, storage::BlobStore* blobs,
                         std::string_view domain, std::string_view name);

// An export file kept in the blob store.
struct StoredExport {
  int64_t task_id = 0;
  std::string key;         // exports/<domain>/<task id>.<csv|zip|xlsx>
  std::string file_name;   // <task id>.<ext>, the download's name
  int64_t size = 0;        // bytes
  int64_t expires_at = 0;  // µs since the epoch; after it the file is gone (410)
  std::string ToJson() const;
  static Result<StoredExport> FromJson(std::string_view json);  // InvalidArgument if malformed
};

// Where export files are kept for a data directory: the deployment's S3 bucket when its blobs
// are on S3, else a file BlobStore in <data_dir>/exports/files. Opened once per process and
// data directory, then shared (thread-safe).
Result<std::shared_ptr<storage::BlobStore>> ExportBlobStore(const std::string& data_dir);
// export.run's last step: stores the finished file local_path (then removes it) as
// exports/<domain>/<task_id>.<ext>, expiring def.expiry_seconds after now (µs); when
// saved_name is not "", records it as that saved export's latest file.
Result<StoredExport> StoreExportFile(storage::BlobStore* blobs, const ExportDefinition& def,
                                     int64_t task_id, const std::string& local_path, int64_t now,
                                     std::string_view saved_name = {});
// The latest stored file of a saved export; NotFound when it has not run successfully.
Result<StoredExport> LatestSavedExport(storage::BlobStore* blobs, std::string_view domain,
                                       std::string_view name);
// Copies the file of export.run task task_id in domain to out_path (replaced atomically), read
// in 1 MiB ranges. NotFound: no such export task in the domain, or its file expired or is gone;
// FailedPrecondition: the task has not succeeded (its state is named).
Result<StoredExport> FetchExportFile(TaskQueue* tasks, storage::BlobStore* blobs,
                                     std::string_view domain, int64_t task_id,
                                     const std::string& out_path, int64_t now);
// Deletes the files of succeeded export.run tasks that expired by now (µs) or finished before
// finished_before (µs; 0 = none; their tasks are about to be pruned), found from the tasks'
// results; returns how many were deleted.
Result<int64_t> PruneExpiredExports(TaskQueue* tasks, storage::BlobStore* blobs, int64_t now,
                                    int64_t finished_before = 0);

}  // namespace commcare
