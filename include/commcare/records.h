// The documents libcommcare stores: forms, cases, case transactions, ledgers and change records.
// Plain structs of std types; times are microseconds since the Unix epoch (UTC), 0 = not set.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace commcare {

// A form's state; the numbers are CommCare HQ's XFormInstance states.
enum class FormState : int {
  kNormal = 1,
  kArchived = 2,
  kDeprecated = 4,
  kDuplicate = 8,
  kError = 16,
  kSubmissionErrorLog = 32,
};

// "normal", "archived", "deprecated", "duplicate", "error" or "submission_error_log".
std::string_view FormStateName(FormState state);

// A file stored with a form: the raw XML ("form.xml") or a multipart attachment.
struct Attachment {
  std::string name;          // part name, e.g. "form.xml" or "photo.jpg"
  std::string content_type;  // e.g. "text/xml"
  int64_t length = 0;        // bytes
  std::string md5;           // hex digest of the content
  std::string blob_key;      // key in the BlobStore
};

// One received submission (CommCare's XFormInstance), without its XML (that is in the BlobStore).
struct FormRecord {
  std::string form_id;
  std::string domain;
  std::string xmlns;
  FormState state = FormState::kNormal;
  std::string user_id;
  std::string username;
  std::string device_id;
  std::string app_id;
  std::string build_id;
  std::string app_version;
  std::string orig_id;  // duplicates and deprecated copies: the id they were submitted as
  std::string deprecated_form_id;  // an edited form: the id its previous version moved to
  std::string problem;             // error text for ERROR / duplicate / error-log records
  std::string md5;                 // hex md5 of form.xml
  std::string last_sync_token;
  std::string submit_ip;
  std::string openrosa_version;
  int64_t received_on = 0;
  int64_t server_modified_on = 0;
  int64_t edited_on = 0;
  int64_t time_start = 0;
  int64_t time_end = 0;
  int64_t date_header = 0;
  std::vector<Attachment> attachments;  // "form.xml" first
};

// A reference from one case to another (CommCare's CommCareCaseIndex).
struct CaseIndex {
  std::string identifier;       // e.g. "parent", "host"
  std::string referenced_type;  // case type of the target
  std::string referenced_id;    // target case id
  std::string relationship;     // "child" or "extension"
};

// A file attached to a case by a case block's <attachment> action.
struct CaseAttachment {
  std::string name;      // the attachment's identifier in the case block
  std::string src;       // form attachment name it came from
  std::string from;      // local | remote | inline
  std::string blob_key;  // BlobStore key (empty if the form had no such attachment)
  std::string content_type;
};

// The current state of a case (CommCare's CommCareCase).
struct CaseRecord {
  std::string case_id;
  std::string domain;
  std::string type;
  std::string name;
  std::string owner_id;
  std::string external_id;
  std::string location_id;
  std::string opened_by;
  std::string modified_by;
  std::string closed_by;
  int64_t opened_on = 0;
  int64_t modified_on = 0;         // latest client date_modified
  int64_t server_modified_on = 0;  // when the server last changed it
  int64_t closed_on = 0;
  bool closed = false;
  bool deleted = false;
  std::map<std::string, std::string> properties;  // dynamic case properties (case_json)
  std::vector<CaseIndex> indices;
  std::vector<CaseAttachment> attachments;
  int64_t rev = 0;  // server version, +1 per write; guards against lost updates
};

// Case transaction type bits (CommCare's CaseTransaction.TYPE_*).
enum CaseTransactionType : int {
  kTxForm = 1,
  kTxRebuildWithReason = 2,
  kTxUserRequested = 4,
  kTxUserArchived = 8,
  kTxFormArchived = 16,
  kTxFormEdit = 32,
  kTxLedger = 64,
  kTxCaseCreate = 128,
  kTxCaseClose = 256,
  kTxCaseIndex = 512,
  kTxCaseAttachment = 1024,
  kTxFormReprocess = 2048,
};

// One entry in a case's history: a form that touched it, or a rebuild.
struct CaseTransaction {
  std::string case_id;
  std::string form_id;      // empty for rebuild transactions
  int64_t server_date = 0;  // the form's received_on (or the rebuild time)
  int64_t client_date = 0;  // the case block's date_modified
  int type = 0;             // OR of CaseTransactionType bits
  bool revoked = false;     // the form is archived, deprecated or in error
  std::string sync_log_id;
  std::string xmlns;   // the form's xmlns (details)
  std::string reason;  // rebuild reason
  int64_t seq = 0;     // order of insertion in its case's history
};

// The balance of one product (entry) in one section of a case's ledger.
struct LedgerValue {
  std::string case_id;
  std::string section_id;
  std::string entry_id;
  double balance = 0;
  int64_t last_modified = 0;
  std::string last_modified_form_id;
  std::string domain;
};

// One change of a ledger value made by a form.
struct LedgerTransaction {
  std::string form_id;
  std::string case_id;
  std::string section_id;
  std::string entry_id;
  int64_t server_date = 0;
  int64_t report_date = 0;
  int type = 1;  // 1 balance, 2 transfer
  std::string user_defined_type;
  double delta = 0;
  double updated_balance = 0;
  int64_t seq = 0;  // order within the form
};

// CommCare's ChangeMeta: what changed, without the document body (consumers re-read it).
struct ChangeMeta {
  std::string topic;  // form-sql, case-sql, ledger, ...
  std::string document_id;
  std::string data_source_type = "sql";
  std::string data_source_name;  // form-sql, case-sql, ledger-v2
  std::string document_type;     // XFormInstance, CommCareCase, ledger, ...
  std::string document_subtype;  // xmlns or case type
  std::string domain;
  bool is_deletion = false;
  int64_t publish_timestamp = 0;
  std::string associated_document_id;  // the form that changed a case or ledger
};

// A change record waiting in a physical database's outbox for the relay.
struct OutboxRow {
  int64_t seq = 0;  // commit order within its database
  ChangeMeta meta;
};

}  // namespace commcare
