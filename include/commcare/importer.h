// Case import and bulk case edit: CommCare HQ's case importer (corehq/apps/case_importer) over a
// CSV or XLSX file, and a bulk edit of the cases a Case API filter matches. Both write through
// the engine as system forms (xmlns http://commcarehq.org/case, many case blocks per form), so
// each change is in the cases' history and the change log. Both are idempotent: a form id is
// derived from the import (or edit) id and the chunk, and a chunk whose form is stored already
// is not submitted again. docs/import.md has the whole contract.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare {

class Engine;
class TaskQueue;
namespace meta {
class MetaStore;  // src/meta/meta_store.h: owner_name / owner_id lookups
}

// How to read and apply an import file.
struct CaseImportOptions {
  std::string domain;
  std::string case_type;                       // required
  std::string search_field = "case_id";        // "case_id" or "external_id"
  std::string search_column;                   // the file's column holding it ("": search_field)
  bool create_new = false;                     // create a case when no case matches
  std::map<std::string, std::string> columns;  // file column -> case property ("" ignores it)
  std::string user_id, username;               // the importing user: forms' meta, default owner
  bool dry_run = false;                        // check every row, write nothing
  std::string import_id;    // names the import's forms and new cases ("": from file + options)
  int chunk_size = 100;     // case blocks per form (HQ's CASEBLOCK_CHUNKSIZE)
  std::string result_path;  // "": none; else one JSON line per row (what it did) written here
  int64_t time = 0;         // the case blocks' date_modified, µs since the epoch (0: now)
};

// One problem with one row: which column and why (HQ's error title and description).
struct ImportProblem {
  int64_t row = 0;             // 1-based as in a spreadsheet; the header is row 1
  std::string column;          // "" for the whole row
  std::string title;           // e.g. "Invalid Owner Name"
  std::string reason;          // a sentence
  std::string ToJson() const;  // {"row", "column", "error", "reason"}
};

// What an import did (or, dry, would do), in HQ's result shape plus libcommcare's counts.
struct CaseImportResult {
  std::string import_id;
  bool dry_run = false;
  int64_t rows = 0;  // data rows read (header excluded)
  int64_t created_count = 0, match_count = 0, failed_count = 0;
  int64_t skipped_count = 0;           // no match and create_new off (HQ skips them silently)
  int64_t blank_count = 0;             // blank rows (skipped)
  int64_t num_chunks = 0;              // forms submitted (or already there from an earlier run)
  int64_t chunks_already_applied = 0;  // of those, found stored by an earlier run
  std::string errors_json = "{}";      // HQ's {title: {column: {error, description, rows[]}}}
  std::string result_path;
  std::string ToJson() const;
};

// Called with rows done and the (estimated) total; returning false stops the import (Aborted;
// chunks already submitted stay, a rerun with the same import id completes it).
using ImportProgress = std::function<bool(int64_t done, int64_t total)>;
// Called once per problem row as it is found.
using ImportProblemSink = std::function<void(const ImportProblem&)>;

// Imports the cases of a CSV or XLSX file. A bad header (an empty file, a duplicate or invalid
// column, a reserved name, no search column) is InvalidArgument and nothing is written; a bad row
// is reported and skipped; a chunk the engine cannot store is Unavailable (retryable: a rerun
// with the same import id skips the chunks stored). meta may be nullptr (owner_name and
// owner_id then fail per row). Thread-safe for distinct imports.
Result<CaseImportResult> ImportCases(Engine* engine, meta::MetaStore* meta,
                                     const CaseImportOptions& options, const std::string& path,
                                     const ImportProgress& progress = {},
                                     const ImportProblemSink& problems = {});

// A bulk edit: the cases a Case API filter matches get the same property changes (or close).
struct BulkEditOptions {
  std::string domain;
  // The Case API's list filters as a JSON object: case_type, owner_id, case_name, external_id,
  // closed (true/false), "properties.P": value (equals). At least one is required.
  std::string filter_json = "{}";
  std::map<std::string, std::string> set;  // property -> value ("" clears it)
  bool close = false;
  std::string user_id, username;  // the editing user (forms' meta)
  bool preview = false;           // count the matching cases, write nothing
  std::string edit_id;  // names the edit's forms ("": from the filter, changes and matches)
  int chunk_size = 100;
  int64_t time = 0;  // date_modified of the case blocks (0: now)
};

struct BulkEditResult {
  std::string edit_id;
  bool preview = false;
  int64_t matched = 0, updated = 0, num_chunks = 0, chunks_already_applied = 0;
  std::vector<std::string> sample;  // up to 10 matching case ids
  std::string ToJson() const;
};

// Options as JSON objects (REST bodies, task payloads, the C ABI and Python): the fields above
// under the same names ("columns" and "set" objects of strings, "filter" an object). An unknown
// field or one of the wrong type is InvalidArgument naming it.
Result<CaseImportOptions> CaseImportOptionsFromJson(std::string_view json);
std::string CaseImportOptionsToJson(const CaseImportOptions& options);
Result<BulkEditOptions> BulkEditOptionsFromJson(std::string_view json);
std::string BulkEditOptionsToJson(const BulkEditOptions& options);

// Checks a bulk edit (InvalidArgument names an unknown filter or a bad property name, or no
// change given outside a preview).
Status CheckBulkEdit(const BulkEditOptions& options);
// Runs (or previews) a bulk edit. Matches are taken once, sorted by case id; a rerun after a
// failure skips the forms already stored (matches come from the snapshot in snapshot_path when
// it exists, and are written there first otherwise; "" keeps them in memory only).
Result<BulkEditResult> BulkEditCases(Engine* engine, const BulkEditOptions& options,
                                     const std::string& snapshot_path = "",
                                     const ImportProgress& progress = {});

// Task types "import.cases" and "import.bulk_edit" (run by every Host worker pool).
// EnqueueCaseImport stores the file's bytes in the deployment's export blob store (S3 when the
// blobs are there, so any worker can read it) and enqueues an import of it; EnqueueBulkEdit
// enqueues a bulk edit. Both return the task id; InvalidArgument names a bad option first.
Result<int64_t> EnqueueCaseImport(TaskQueue* tasks, const std::string& data_dir,
                                  const CaseImportOptions& options, std::string_view file_bytes);
Result<int64_t> EnqueueBulkEdit(TaskQueue* tasks, const BulkEditOptions& options);

}  // namespace commcare
