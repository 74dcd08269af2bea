// Pillows: change processors that follow the change log and keep secondary stores up to date.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/engine.h"
#include "commcare/records.h"
#include "commcare/status.h"

namespace commcare {

// One change as a processor sees it: where it is in the log and CommCare's ChangeMeta.
struct Change {
  std::string topic;
  int partition = 0;
  int64_t offset = 0;
  int64_t timestamp = 0;  // when it was appended to the log, µs since the epoch
  ChangeMeta meta;
};

// A user-defined processor. Changes arrive de-duplicated by document id within a batch; the
// processor re-reads the current document from the engine (notice-then-reread), so seeing a
// change twice is harmless. A non-ok status or an exception sends the change to the retry queue.
class ChangeProcessor {
 public:
  virtual ~ChangeProcessor() = default;
  virtual Status Process(Engine& engine, const Change& change) = 0;
};

// A pillow's settings.
struct PillowConfig {
  std::string name;                      // unique; names its database <dir>/<name>.sqlite
  std::vector<std::string> topics;       // e.g. {"case-sql"}
  size_t chunk_size = 500;               // changes per batch
  int max_wait_ms = 100;                 // a partial batch is processed after this long
  int64_t checkpoint_every = 1000;       // checkpoint after this many changes ...
  int checkpoint_seconds = 10;           // ... or this long (SQL sinks: with every batch)
  int max_attempts = 3;                  // failed attempts before a change is dead-lettered
  int64_t retry_delay_us = 300'000'000;  // CommCare: next = last + 5 min × attempt^factor
  double retry_backoff_factor = 2.0;
};

// Which pillows a host runs and which share of their partitions.
struct PillowHostOptions {
  // Where the pillow databases live: a directory of SQLite files, or "postgres:<libpq connection
  // string>" (each pillow's tables in schema commcare_pillow_<name>, shared by every worker).
  // "" = PillowStoreAt(data_dir) (in memory engines: a fresh temp dir).
  std::string dir;
  std::vector<std::string> only;  // run only these pillows ("" = all)
  bool builtin = true;            // add case-search, read-copy and ucr
  int num_processes = 1;          // worker k of n owns every n-th (topic, partition), from k
  int process_num = 0;
  // Non-empty: partitions are assigned by the change log's consumer group "<name>.<pillow>"
  // instead (Kafka, cooperative rebalancing; num_processes and process_num are not used).
  // Members share the pillow databases (one dir): a partition's new owner continues from the
  // checkpoint its old owner wrote with every batch before letting the partition go.
  std::string consumer_group;
  bool inspect_only = false;  // status, retries, requeue beside running workers: no worker lock,
                              // no processing
};

// Progress of one pillow on one partition.
struct PartitionStatus {
  std::string topic;
  int partition = 0;
  int64_t checkpoint = 0;  // next offset to process
  int64_t end_offset = 0;  // the log's next offset
  int64_t lag = 0;         // end_offset - checkpoint
  double lag_seconds = 0;  // now - append time of the oldest unprocessed change
};

// A pillow's status (this worker's partitions).
struct PillowStatus {
  std::string name;
  std::vector<PartitionStatus> partitions;
  int64_t retries = 0;       // changes waiting for another attempt
  int64_t dead_letters = 0;  // changes past max_attempts
};

// A pillow's status as JSON: {"pillow", "lag", "lag_seconds" (the worst partition's),
// "retries", "dead_letters", "partitions": [{"topic", "partition", "checkpoint", "end_offset",
// "lag", "lag_seconds"}]}.
std::string PillowStatusToJson(const PillowStatus& status);

// An entry of a pillow's retry queue.
struct RetryEntry {
  std::string doc_id;
  std::string topic;
  int partition = 0;
  int64_t offset = 0;
  int attempts = 0;
  int64_t next_attempt = 0;  // µs since the epoch
  std::string error;
  bool dead = false;
};

// A retry-queue entry as JSON: {"doc_id", "topic", "partition", "offset", "attempts",
// "next_attempt" (ISO time), "error", "dead"}.
std::string RetryEntryToJson(const RetryEntry& entry);

// Runs pillows over an engine's change log. Thread safety: one thread drives Run or
// RunUntilCaughtUp; status, retries and queries may be called from others.
class PillowHost {
 public:
  virtual ~PillowHost() = default;

  // Opens the pillows' databases and takes the lock on this worker's partition set
  // (FailedPrecondition if another worker holds the same (n, k)).
  static Result<std::unique_ptr<PillowHost>> Open(Engine* engine, const PillowHostOptions& options);

  // Adds a pillow with a user-defined processor (before Run).
  virtual Status AddPillow(const PillowConfig& config,
                           std::shared_ptr<ChangeProcessor> processor) = 0;
  // Names of the pillows this host runs.
  virtual std::vector<std::string> Pillows() const = 0;
  // Where the pillow databases are: a directory or "postgres:<conninfo>" (SearchCases, UcrRows).
  virtual const std::string& Store() const = 0;

  // Processes every change in the log now and every due retry; returns how many changes
  // were processed. (Tests, benchmarks, one-shot catch-up.)
  virtual Result<int64_t> RunUntilCaughtUp() = 0;
  // Runs until stop is set, then finishes the batch in hand and checkpoints.
  virtual Status Run(const std::atomic<bool>& stop) = 0;

  // Checkpoints, lag and queue counts of each pillow (this worker's partitions).
  virtual Result<std::vector<PillowStatus>> GetStatus() = 0;
  // The retry queue (and dead letters) of a pillow.
  virtual Result<std::vector<RetryEntry>> Retries(std::string_view pillow) = 0;
  // Makes queued changes due now with attempts reset (doc_id "" = all; dead letters too when
  // include_dead); returns how many.
  virtual Result<int64_t> Requeue(std::string_view pillow, std::string_view doc_id,
                                  bool include_dead) = 0;
  // Finds documents missing from (or stale in) a pillow's store and appends their changes to
  // the log again; returns how many. Unimplemented for pillows that cannot tell.
  virtual Result<int64_t> Reconcile(std::string_view pillow) = 0;
  // Drops a pillow's store contents and checkpoints, so it rebuilds from the log's start.
  virtual Status Reset(std::string_view pillow) = 0;

  // UCR (the ucr pillow): stores a data source config (CommCare's DataSourceConfiguration
  // JSON), (re)creates its table and fills it from the primary store; returns the row count.
  // InvalidArgument names the offending path of a bad config.
  virtual Result<int64_t> UcrLoad(std::string_view config_json) = 0;
  // Empties a data source's table and fills it again from the primary store.
  virtual Result<int64_t> UcrRebuild(std::string_view domain, std::string_view table_id) = 0;
};

// A form list over the read-copy pillow's store (CommCare HQ's Form API v0.5 filters,
// corehq/apps/api/es.py xform_param_consumers).
struct FormListQuery {
  std::string domain;  // required
  std::string xmlns;
  std::string app_id;
  std::string user_id;
  // Time ranges in µs, both ends inclusive (HQ's DateRangeParams: gte/lte); 0 = open.
  int64_t received_from = 0;
  int64_t received_to = 0;
  int64_t server_modified_from = 0;
  int64_t server_modified_to = 0;
  int64_t indexed_from = 0;
  int64_t indexed_to = 0;
  bool include_archived = false;
  std::string app_version;  // form.meta.appVersion equals this ("" = any)
  // Only these forms (HQ's case_id filter: the forms that touched a case); nullopt = any.
  std::optional<std::vector<std::string>> form_ids;
  // received_on, server_modified_on or indexed_on, "-" first for descending; "" = HQ's
  // default, newest received first.
  std::string order_by;
  size_t limit = 20;  // 1..1000
  size_t offset = 0;
};
struct FormListPage {
  std::vector<std::string> forms;  // FormToApiJson objects, in the query's order
  int64_t total_count = 0;
};
// Where a data directory's pillow databases live (PillowHostOptions::dir): "postgres:<conninfo>"
// when its commcare.json names a "pillows" database, else <data_dir>/pillows.
std::string PillowStoreAt(const std::string& data_dir);

// The readers below take a PillowHostOptions::dir (a directory or "postgres:<conninfo>").

// Lists forms from the read-copy pillow's database.
Result<FormListPage> ListForms(const std::string& pillows_dir, const FormListQuery& query);

// Rows of a UCR data source's table (from the ucr pillow's database) as JSON objects.
Result<std::vector<std::string>> UcrRows(const std::string& pillows_dir, std::string_view domain,
                                         std::string_view table_id, size_t limit = 1000,
                                         size_t offset = 0);

// A Case API v2 style search over the case-search pillow's index.
struct CaseSearchQuery {
  std::string domain;                                       // required
  std::string case_type;                                    // "" = any
  std::string owner_id;                                     // "" = any
  std::optional<bool> closed;                               // unset = both
  std::string case_name;                                    // exact
  std::string external_id;                                  // exact
  std::vector<std::pair<std::string, std::string>> equals;  // properties.<p>=value
  struct Range {
    std::string property;  // a case property, or date_opened/last_modified/indexed_on/...
    std::string op;        // gt, gte, lt, lte
    std::string value;     // a number, or a date/time (compared as ISO text)
  };
  std::vector<Range> ranges;
  std::string text;  // full text over name and property values: the user's words, all
                     // required, case-insensitive; punctuation separates words and is never
                     // query syntax, except "a phrase" and a trailing '*' (prefix)
                     // (docs/rest-api.md). No words (e.g. "\"") = no text condition.
  // Further conditions, each a field and its values: a case matches when the field equals any
  // of the values (CommCare HQ ORs a repeated parameter) and every such condition holds.
  // field: case_type, owner_id, case_name, external_id, properties.<p> (the value "" also
  // matches a case without the property) or indices.<identifier> (cases whose index of that
  // name points at the value: the value's children). InvalidArgument names another field.
  std::vector<std::pair<std::string, std::vector<std::string>>> any_of;
  bool count = false;  // also count every match, ignoring the cursor (CaseSearchPage::total)
  size_t limit = 20;   // 1..5000
  std::string cursor;  // from a previous page's next_cursor
  // Plan tuning: a property condition matching at least this many cases is checked per case
  // in page order instead of listed from the property index and sorted (0: always per case).
  // kAutoScan: sqrt(23 x cases in the index), where sorting the list starts to cost more than
  // walking to the first page of evenly spread matches.
  static constexpr size_t kAutoScan = static_cast<size_t>(-1);
  size_t scan_above = kAutoScan;
};

// One page of results: Case API v2 JSON objects and the cursor of the next page ("" = last).
struct CaseSearchPage {
  std::vector<std::string> cases;
  std::string next_cursor;
  int64_t total = -1;  // every match, with CaseSearchQuery::count; else -1
};

// Searches the case-search pillow's index (scan_above applies to SQLite; PostgreSQL plans alone).
Result<CaseSearchPage> SearchCases(const std::string& pillows_dir, const CaseSearchQuery& query);

}  // namespace commcare
