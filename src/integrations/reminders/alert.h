// Reminders (HQ's conditional alerts): a case type and a rule's criteria start a schedule per
// matching open case — send at a time relative to a date property of the case, repeat every N
// days up to M times, stop when the case no longer matches or closes — with a message whose
// {property} placeholders are filled from the case, to the case owner's email or phone (user
// data "email" / "phone_number") or a fixed recipient, by email (the email.send task) or SMS
// (sms.send through an HTTP gateway). Every message is logged. docs/rules.md, "Reminders".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/records.h"
#include "commcare/reminders.h"
#include "commcare/status.h"
#include "integrations/reminders/sms.h"
#include "integrations/rules/rule.h"

namespace commcare {
class Engine;
class TaskQueue;
namespace meta {
class MetaStore;
}
namespace util {
class SqlDb;
}
}  // namespace commcare

namespace commcare::reminders {

struct Alert {
  std::string name, domain;
  rules::Rule match;                   // case_type, criteria, criteria_operator (open cases)
  std::string start_property;          // a date property: the schedule's day 0
  int64_t offset_days = 0;             // the first send: day 0 + offset (e.g. -3)
  int minute_of_day = 9 * 60;          // at this local time ("09:00")
  int64_t every_days = 0;              // then every N days ...
  int occurrences = 1;                 // ... M sends in all
  bool sms = false;                    // else email
  std::string recipient = "owner";     // "owner", or an address / a number
  std::string subject, message;        // with {property} placeholders
  SmsGateway gateway;                  // sms
  std::string check = "*/15 * * * *";  // how often due messages are looked for
  std::string time_zone = "UTC";
  std::string json;
};

// Parses and checks a definition; InvalidArgument names the field.
Result<Alert> ParseAlert(std::string_view json_text);

// When the k-th message (0-based) of a case whose start property is start_value is due (µs since
// the epoch); nullopt when the value is not a date.
std::optional<int64_t> DueAt(const Alert& a, std::string_view start_value, int k);

// The text with each {name} replaced by the case's property (or field) of that name ("" when
// it has none).
std::string FillPlaceholders(std::string_view text, const CaseRecord& c);

// What one look for due messages did.
struct TickSummary {
  int64_t scanned = 0, matched = 0, queued = 0, skipped = 0;  // skipped: no recipient, stale
  std::string ToJson(std::string_view domain, std::string_view alert) const;
};

// Looks for due messages of the alert at `now` and queues each once (email.send or sms.send),
// logged in db's reminder_messages in the same transaction: a message already logged is never
// queued again; one due more than a day ago, or without a recipient, is logged as skipped. q
// null: db is the task queue's database (the task commits with its row); else tasks go to q.
// meta resolves owners (may be null: fixed recipients only).
Result<TickSummary> RunAlert(Engine* engine, util::SqlDb* db, TaskQueue* q, meta::MetaStore* meta,
                             const Alert& a, int64_t now);

// InvalidArgument naming an outcome filter that no row can have.
Status CheckOutcomeFilter(std::string_view outcome);

// The message log table (created if missing; OpenLog and RunAlert do it), and the rows a query
// asks for, as JSON objects {"alert", "case_id", "occurrence", "due_at", "queued_at",
// "channel", "recipient", "message", "task_id", "outcome"} (outcome: the send task's state, or
// "skipped: why").
Status MigrateLog(util::SqlDb* db);
Result<std::vector<std::string>> ListMessages(util::SqlDb* db, TaskQueue* q,
                                              const ReminderMessageQuery& query);

}  // namespace commcare::reminders
