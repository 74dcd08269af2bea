// Engine: receives form submissions and processes them synchronously and atomically.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/records.h"
#include "commcare/status.h"
#include "commcare/storage/change_log.h"
#include "commcare/storage/primary_store.h"

namespace commcare {

struct Deployment;  // commcare/deployment.h

// Creating a data directory (`commcare init`).
struct InitOptions {
  std::string data_dir;
  int shards = 1024;  // logical shards, a power of two, fixed for the life of the data
  int databases = 1;  // physical SQLite files the shards are spread over (contiguous ranges)
  // "pack": append-only volumes; "files": one file per blob; or an S3 bucket as a JSON object:
  // {"kind": "s3", "endpoint": "https://...", "bucket": B, "region": R, "prefix": P,
  //  "path_style": bool, "access_key"/"secret_key" ("" = $AWS_ACCESS_KEY_ID/...), "ca_file",
  //  "timeout_ms", "max_attempts"}.
  std::string blob_store = "pack";
  // The primary store ("" = SQLite files in <data>/db): PostgreSQL as a JSON object,
  // {"kind": "postgres", "databases": ["host=... dbname=shard0", ...]}, one libpq connection
  // string per database of the shard map (databases above).
  std::string primary;
  // The change log, as a JSON object ("" = the embedded RocksDB log in <data>/changes):
  // {"kind": "kafka", "bootstrap_servers": "h:p,...", "topic_prefix": P, "transactional_id":
  //  ID, "partitions": N, "replication_factor": R, "timeout_ms": T, "topic_control": "h:p"}.
  std::string change_log;
  // Where the servers keep users, domains and sync logs ("" = SQLite files in <data>): one
  // PostgreSQL database shared by every process of a deployment, as a JSON object,
  // {"kind": "postgres", "database": "host=... dbname=..."}.
  std::string meta;
  // Where the pillows keep checkpoints, retries and the secondary stores (case search, form
  // read copy, UCR tables) ("" = SQLite files in <data>/pillows): a PostgreSQL database every
  // pillow process and server shares, {"kind": "postgres", "database": "..."}.
  std::string pillows;
};

// Opening an engine.
struct EngineOptions {
  std::string data_dir;    // an initialised data directory; empty with in_memory=true
  bool in_memory = false;  // memory stores only (tests, experiments); shards/databases below apply
  int memory_shards = 16;
  int memory_databases = 1;
  bool read_only = false;            // no writes, no lock: may run beside the writing process
  bool durable = true;               // fsync each (group) commit
  bool strict_case_updates = false;  // reject updates of unknown cases (mobile parser behaviour)
  size_t max_xml_bytes = 10 * 1024 * 1024;          // HQ's MAX_UPLOAD_SIZE
  size_t max_attachment_bytes = 100 * 1024 * 1024;  // per attachment
  size_t max_body_bytes = 150 * 1024 * 1024;        // a whole request body
  int blob_flush_interval_ms = 20;  // how often blobs are synced and their journal copies dropped
  bool relay = true;               // a writer moves outbox rows to the change log in the background
  int relay_batch_window_ms = 10;  // while busy, the relay gathers rows this long per round
  int change_retention_hours = 28 * 24;  // the relay drops older change records hourly (0: keep)
};

// One submission as a host received it (the HTTP receiver, the CLI, the API).
struct SubmitRequest {
  std::string domain;
  std::string user_id;           // the authenticated user, if any (auth_context)
  std::string body;              // raw XML, or a multipart/form-data body
  std::string content_type;      // the request's Content-Type ("" = raw XML)
  std::string openrosa_version;  // X-OpenRosa-Version ("" = absent)
  std::string last_sync_token;   // X-CommCareHQ-LastSyncToken
  std::string app_id;
  std::string build_id;
  std::string submit_ip;
  int64_t received_on = 0;  // X-Submit-Time override; 0 = now
  int64_t date_header = 0;  // parsed Date header, 0 = absent
};

// The answer for the device: an OpenRosa response plus what happened.
struct SubmitResponse {
  int http_status = 201;
  std::string nature;   // submit_success, submit_error, processing_failure, ...
  std::string message;  // the OpenRosa message text
  std::string form_id;  // the stored record's id ("" if nothing was stored)
  std::optional<FormState> state;
  std::string body;          // the OpenRosa XML response
  std::string content_type;  // "text/xml; charset=utf-8"
};

// What `Check` found.
struct CheckReport {
  int64_t forms = 0;
  int64_t cases = 0;
  int64_t outbox_rows = 0;     // changes not yet relayed
  int64_t logged_changes = 0;  // records in the change log
  int64_t pending_intents = 0;
  std::vector<std::string> problems;  // empty when the store is consistent
};

// Counters since the engine opened.
struct EngineStats {
  int64_t commit_groups = 0;      // group commits (one transaction and one flush each)
  int64_t committed_batches = 0;  // write batches in them (mean group size: batches / groups)
};

// The engine. Thread safety: every method may be called from any number of threads.
class Engine {
 public:
  virtual ~Engine() = default;

  // Creates a data directory; AlreadyExists if it is initialised already.
  static Status Init(const InitOptions& options);
  // The same from a typed Deployment (what Host uses).
  static Status Create(const std::string& data_dir, const Deployment& deployment);
  // Opens an engine; a writer takes the directory's lock (FailedPrecondition names the holder)
  // and rolls pending cross-database intents forward.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& options);

  // Processes a submission and answers only once its rows are durable. Never throws.
  virtual SubmitResponse Submit(const SubmitRequest& request) = 0;

  // The form's metadata; NotFound if absent or in another domain.
  virtual Result<FormRecord> GetForm(std::string_view domain, std::string_view form_id) = 0;
  // The form's raw XML from the blob store.
  virtual Result<std::string> GetFormXml(std::string_view domain, std::string_view form_id) = 0;
  // The bytes of one of the form's attachments ("form.xml" is its XML); NotFound names what
  // is missing.
  virtual Result<std::string> GetFormAttachment(std::string_view domain, std::string_view form_id,
                                                std::string_view name) = 0;
  // Archives a normal form (its case and ledger changes are revoked and the cases rebuilt).
  virtual Status ArchiveForm(std::string_view domain, std::string_view form_id) = 0;
  // Restores an archived form and rebuilds its cases.
  virtual Status UnarchiveForm(std::string_view domain, std::string_view form_id) = 0;

  // The case; NotFound if absent or in another domain.
  virtual Result<CaseRecord> GetCase(std::string_view domain, std::string_view case_id) = 0;
  // Calls fn for each matching case across every database until it returns false.
  virtual Status ListCases(const storage::CaseFilter& filter,
                           const std::function<bool(const CaseRecord&)>& fn) = 0;
  // Like ListCases, with each case's stored JSON document (valid while fn runs): the fields of
  // CaseRecord under the same names, times as µs since the epoch. For fast full scans (exports).
  virtual Status ListCaseDocuments(const storage::CaseFilter& filter,
                                   const std::function<bool(std::string_view doc)>& fn) = 0;
  // The case's transactions in order.
  virtual Result<std::vector<CaseTransaction>> CaseHistory(std::string_view domain,
                                                           std::string_view case_id) = 0;
  // Re-derives the case from its transactions (a user-requested rebuild).
  virtual Status RebuildCase(std::string_view domain, std::string_view case_id) = 0;
  // The case's ledger values.
  virtual Result<std::vector<LedgerValue>> GetLedger(std::string_view domain,
                                                     std::string_view case_id) = 0;

  // Verifies the store: blobs of every form, a change record (outbox or change log) per
  // document, no pending intent.
  virtual Result<CheckReport> Check() = 0;

  // Number of physical databases and their stores (the relay and tools read outboxes).
  virtual int NumDatabases() const = 0;
  virtual storage::PrimaryStore* Database(int index) = 0;
  // The physical database that holds a document id.
  virtual int DatabaseFor(std::string_view doc_id) const = 0;

  // Counters since open (metrics).
  virtual EngineStats Stats() const = 0;

  // The options the engine was opened with.
  virtual const EngineOptions& Options() const = 0;

  // The change log the relay fills (<data>/changes; in memory for in-memory engines). nullptr
  // for a read-only engine on a data directory whose writer has not created it yet.
  virtual storage::ChangeLog* Changes() = 0;
  // Moves every durable outbox row to the change log now, in commit order per database, and
  // deletes the rows it moved (a writer's background relay does this continuously).
  virtual Status RelayChanges() = 0;
};

// CommCare Case API v2 JSON for a case.
std::string CaseToJson(const CaseRecord& c);
// Form metadata JSON (form_id, domain, xmlns, state, user_id, received_on, ...).
std::string FormToJson(const FormRecord& f);
// A form as CommCare HQ's Form API v0.5 serves it (XFormInstanceResource,
// corehq/apps/api/resources/v0_4.py) and its FormRepeater sends it as form_json: id, form (the
// answers as CommCare's form JSON, with @xmlns, @name and meta, zoned date-times in UTC),
// metadata, type, version, uiversion, archived, attachments {name: {content_type, length, url}},
// received_on, server_modified_on, indexed_on, resource_uri, ... Attachment urls are paths
// under /a/{domain}/ (a server makes them absolute). indexed_on: µs, 0 = received_on.
// InvalidArgument: form_xml does not parse. Thread-safe.
Result<std::string> FormToApiJson(const FormRecord& form, std::string_view form_xml,
                                  int64_t indexed_on = 0);
// A case transaction as JSON.
std::string CaseTransactionToJson(const CaseTransaction& t);
// Ledger values as {"section": {"entry": balance}} JSON.
std::string LedgerToJson(const std::vector<LedgerValue>& values);
// CommCare's ChangeMeta JSON, as the change log carries it (plus the extra key "topic").
std::string ChangeMetaToJson(const ChangeMeta& meta);
// Parses ChangeMeta JSON; InvalidArgument names what is wrong (no document_id, a bad time).
Result<ChangeMeta> ChangeMetaFromJson(std::string_view json);
// ISO-8601 UTC with microseconds, "2016-03-02T09:21:48.715000Z"; "" for 0.
std::string FormatTime(int64_t micros);

}  // namespace commcare
