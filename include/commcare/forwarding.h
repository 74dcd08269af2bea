// Data forwarding (CommCare HQ's repeaters): per-domain forwarders that send forms or cases to
// an HTTP(S) URL. A pillow on the change log makes one repeat record per (forwarder, document)
// in the transaction of its checkpoint; tasks deliver them with HQ's retry schedule and record
// every attempt. docs/forwarding.md has the whole contract.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commcare/status.h"

namespace commcare {

class TaskQueue;

// Where to send what, and how. JSON form (FromJson/ToJson): the field names below.
struct Forwarder {
  std::string id;                   // assigned by Add (32 hex digits)
  std::string domain;               // the project whose documents it forwards
  std::string name;                 // a label
  std::string kind = "form";        // "form" or "case"
  std::string format = "form_xml";  // form_xml | form_json (forms); case_xml | case_json (cases)
  std::string url;                  // http:// or https://
  std::string auth;                 // "" (none), "basic", "digest" or "bearer"
  std::string username, password;   // basic and digest
  std::string token;                // bearer
  std::vector<std::pair<std::string, std::string>> headers;  // sent with every request
  std::vector<std::string> xmlns;                            // forms: only these xmlns (empty: all)
  bool include_case_blocks = true;      // forms: false drops the <case> blocks from the payload
  bool include_app_id_param = true;     // forms: ?app_id=<the form's app> appended (HQ default)
  std::vector<std::string> case_types;  // cases: only these types (empty: all)
  std::vector<std::string> events;      // cases: of "create", "update", "close" (empty: all)
  int max_attempts = 3;                 // failed tries before a record is cancelled (HQ: 3)
  int timeout_ms = 60000;               // per request
  bool paused = false;
  int64_t created_at = 0;  // µs since the epoch

  // Parses and checks a forwarder; InvalidArgument names the bad field.
  static Result<Forwarder> FromJson(std::string_view json);
  // JSON; passwords and tokens are shown as "***" unless with_secrets.
  std::string ToJson(bool with_secrets = false) const;
};

// A repeat record's states: HQ's numbers (corehq/motech/repeaters/const.py).
enum class RecordState : int {
  kPending = 1,
  kFailed = 2,  // will be tried again at next_check
  kSucceeded = 4,
  kCancelled = 8,        // max attempts used, the forwarder deleted, or cancelled by hand
  kEmpty = 16,           // the document is gone: nothing to send (counts as a success)
  kInvalidPayload = 32,  // the payload could not be built (cancelled)
};
std::string_view RecordStateName(RecordState s);  // "pending", "failed", ...
std::optional<RecordState> ParseRecordState(std::string_view name);

// One delivery attempt.
struct ForwardAttempt {
  int64_t at = 0;  // when it started, µs since the epoch
  RecordState state = RecordState::kFailed;
  int http_status = 0;  // 0: no answer (refused, timeout, unresolvable)
  std::string message;  // the response's first 1,000 bytes, or the error
  int64_t duration_us = 0;
};

// One document to forward to one forwarder.
struct RepeatRecord {
  int64_t id = 0;
  std::string forwarder_id;
  std::string domain;
  std::string doc_id;
  std::string doc_type;  // "form" or "case"
  std::string event;     // cases: create | update | close
  RecordState state = RecordState::kPending;
  int attempts = 0;          // attempts made (all of them)
  int tries = 0;             // failed tries counted towards max_attempts (0 after a resend)
  int64_t created_at = 0;    // µs since the epoch
  int64_t next_check = 0;    // when it is due
  int64_t last_checked = 0;  // the last attempt (0: none)
  std::vector<ForwardAttempt> attempt_log;  // filled by ForwardingStore::Record only
  std::string ToJson() const;
};

// Which records Records returns, newest first.
struct RecordFilter {
  std::string domain;        // required
  std::string forwarder_id;  // "" any
  std::optional<RecordState> state;
  int64_t before_id = 0;  // paging: ids below this (0: from the newest)
  int limit = 100;        // 1..1000
};

// Forwarders and their records, in a deployment's pillow store. Thread-safe; several
// processes may share it. Changes that need delivery enqueue a task when a queue is given.
class ForwardingStore {
 public:
  virtual ~ForwardingStore() = default;
  // Opens the store in pillow_store (a directory, or "postgres:<conninfo>": Host::PillowStore());
  // tasks (may be null) is where resend and resume enqueue delivery.
  static Result<std::unique_ptr<ForwardingStore>> Open(const std::string& pillow_store,
                                                       TaskQueue* tasks);

  // Stores a new forwarder (id assigned); InvalidArgument names a bad field.
  virtual Result<Forwarder> Add(const Forwarder& f) = 0;
  virtual Result<std::vector<Forwarder>> List(std::string_view domain) = 0;
  virtual Result<Forwarder> Get(std::string_view domain, std::string_view id) = 0;  // NotFound
  // Pauses (records wait, pending) or resumes (delivery starts again) a forwarder.
  virtual Status SetPaused(std::string_view domain, std::string_view id, bool paused) = 0;
  // Deletes a forwarder; its unfinished records are cancelled.
  virtual Status Delete(std::string_view domain, std::string_view id) = 0;

  virtual Result<std::vector<RepeatRecord>> Records(const RecordFilter& filter) = 0;
  // One record with its attempts; NotFound if absent or in another domain.
  virtual Result<RepeatRecord> Record(std::string_view domain, int64_t id) = 0;
  // Sends a finished or waiting record again now (its tries reset); NotFound as Record.
  virtual Status Resend(std::string_view domain, int64_t id) = 0;
  // Sends every failed and cancelled record of a domain (one forwarder's: forwarder_id) again;
  // returns how many.
  virtual Result<int64_t> ResendFailed(std::string_view domain, std::string_view forwarder_id) = 0;
  // Records per state of a domain: {"pending": n, ...} JSON.
  virtual Result<std::string> Counts(std::string_view domain) = 0;
};

}  // namespace commcare
