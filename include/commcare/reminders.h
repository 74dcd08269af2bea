// Reminders (CommCare HQ's conditional alerts, docs/rules.md "Reminders"): a case type and a
// rule's criteria start a schedule for each matching open case — messages at a time relative
// to a date property of the case, repeated every N days up to M times, stopped when the case
// no longer matches or closes — by email (email.send) or SMS (sms.send, a generic HTTP
// gateway) to the case owner (user data "email" / "phone_number") or a fixed recipient. A saved
// alert is a task-queue schedule "alert:<domain>:<name>" running "reminder.check" with the
// alert's JSON; every message is logged in the task queue's database.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare {

class Host;

// Checks an alert definition; InvalidArgument names the bad field.
Status ValidateAlert(std::string_view alert_json);

// Adds or replaces a saved alert; returns {"schedule", "alert", "next_run_at", "last_run_at",
// "enabled"}. Nothing is stored for a bad alert.
Result<std::string> SaveAlert(Host* host, std::string_view alert_json);

// The saved alerts of a domain ("": every domain's), as SaveAlert returns them.
Result<std::vector<std::string>> ListAlerts(Host* host, std::string_view domain);

// Deletes a saved alert (its logged messages stay); NotFound when there is none.
Status DeleteAlert(Host* host, std::string_view domain, std::string_view name);

// Looks for the saved alert's due messages now (what each scheduled check does) and queues
// them; returns {"alert", "domain", "scanned", "matched", "queued", "skipped"}.
Result<std::string> CheckAlertNow(Host* host, std::string_view domain, std::string_view name);

// One saved alert, as SaveAlert returns it; NotFound names the alert when there is none.
Result<std::string> GetAlert(Host* host, std::string_view domain, std::string_view name);

// Queues a reminder.check task for a saved alert now (what its schedule queues), for a worker
// pool; returns the task id. NotFound when there is no such alert.
Result<int64_t> CheckAlertLater(Host* host, std::string_view domain, std::string_view name);

// Which messages of the log to read, newest first: a domain's, optionally only one alert's, one
// case's or one outcome's (a task state, or "skipped" for every skipped message), a page.
struct ReminderMessageQuery {
  std::string domain;
  std::string alert, case_id, outcome;  // "": any
  int64_t limit = 100;                  // at least 1
  int64_t offset = 0;                   // messages of the filtered log passed over first
};

// The message log: {"alert", "case_id", "occurrence", "due_at", "queued_at", "channel",
// "recipient", "message", "task_id", "outcome"} (outcome: the send task's state, or "skipped:
// <why>"). InvalidArgument for an unknown outcome or a limit below 1.
Result<std::vector<std::string>> ListReminderMessages(Host* host,
                                                      const ReminderMessageQuery& query);

}  // namespace commcare
