// Reminders (integrations/reminders/alert.h): the definition, the due times of a case's
// messages, placeholders, and one look for due messages, each logged and queued once.
#include "integrations/reminders/alert.h"

#include <date/date.h>
#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <map>

#include "commcare/engine.h"
#include "commcare/log.h"
#include "commcare/tasks.h"
#include "meta/meta_store.h"
#include "tasks/queue.h"
#include "util/sql_db.h"
#include "util/time.h"

namespace commcare::reminders {

namespace json = boost::json;

namespace {

Status Bad(const std::string& field, std::string_view why) {
  return Status::InvalidArgument(fmt::format("{}: {}", field, why));
}

Result<int64_t> Int(const json::object& o, const std::string& at, const char* k, int64_t def,
                    int64_t min) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null()) return def;
  if (!v->is_int64() || v->get_int64() < min)
    return Bad(at + k, fmt::format("must be a whole number >= {}", min));
  return v->get_int64();
}

Status Str(const json::object& o, const std::string& at, const char* k, std::string* out,
           bool required = false) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null() || (v->is_string() && v->get_string().empty()))
    return required ? Bad(at + k, "is required") : Status::Ok();
  if (!v->is_string()) return Bad(at + k, "must be a string");
  *out = std::string(v->get_string());
  return Status::Ok();
}

Status ParseStart(const json::object& o, Alert* a) {
  const json::value* s = o.if_contains("start");
  if (!s || !s->is_object())
    return Bad("start", "is required ({\"property\", \"offset_days\", \"time\"})");
  const auto& so = s->get_object();
  for (const auto& kv : so) {
    std::string_view k(kv.key().data(), kv.key().size());
    if (k != "property" && k != "offset_days" && k != "time")
      return Bad("start." + std::string(k), "unknown field");
  }
  CC_RETURN_IF_ERROR(Str(so, "start.", "property", &a->start_property, true));
  CC_ASSIGN_OR_RETURN(a->offset_days, Int(so, "start.", "offset_days", 0, -36500));
  std::string t = "09:00";
  CC_RETURN_IF_ERROR(Str(so, "start.", "time", &t));
  int h = -1, m = -1;
  if (t.size() != 5 || t[2] != ':' || sscanf(t.c_str(), "%2d:%2d", &h, &m) != 2 || h < 0 ||
      h > 23 || m < 0 || m > 59)
    return Bad("start.time", "must be HH:MM");
  a->minute_of_day = h * 60 + m;
  return Status::Ok();
}

Status ParseRest(const json::object& o, Alert* a) {
  if (const json::value* r = o.if_contains("repeat"); r && !r->is_null()) {
    if (!r->is_object()) return Bad("repeat", "must be an object");
    CC_ASSIGN_OR_RETURN(a->every_days, Int(r->get_object(), "repeat.", "every_days", 0, 1));
    CC_ASSIGN_OR_RETURN(int64_t n, Int(r->get_object(), "repeat.", "occurrences", 1, 1));
    if (n > 1000) return Bad("repeat.occurrences", "must be at most 1000");
    a->occurrences = static_cast<int>(n);
    if (a->occurrences > 1 && a->every_days < 1) return Bad("repeat.every_days", "is required");
  }
  std::string channel = "email";
  CC_RETURN_IF_ERROR(Str(o, "", "channel", &channel));
  if (channel != "email" && channel != "sms") return Bad("channel", "must be email or sms");
  a->sms = channel == "sms";
  CC_RETURN_IF_ERROR(Str(o, "", "recipient", &a->recipient));
  CC_RETURN_IF_ERROR(Str(o, "", "message", &a->message, true));
  CC_RETURN_IF_ERROR(Str(o, "", "subject", &a->subject));
  if (a->subject.empty()) a->subject = "Reminder: " + a->name;
  if (a->sms) {
    const json::value* g = o.if_contains("gateway");
    if (!g) return Bad("gateway", "is required for sms");
    CC_ASSIGN_OR_RETURN(a->gateway, ParseGateway(*g, "gateway."));
  }
  CC_RETURN_IF_ERROR(Str(o, "", "check", &a->check));
  CC_RETURN_IF_ERROR(Str(o, "", "time_zone", &a->time_zone));
  if (Status s = CheckSchedule(a->check, "UTC"); !s.ok()) return Bad("check", s.message());
  if (Status s = CheckSchedule(a->check, a->time_zone); !s.ok())
    return Bad("time_zone", s.message());
  return Status::Ok();
}

std::string_view Field(const CaseRecord& c, std::string_view name) {
  if (name == "case_name" || name == "name") return c.name;
  if (name == "owner_id") return c.owner_id;
  if (name == "external_id") return c.external_id;
  if (name == "case_id") return c.case_id;
  if (name == "case_type") return c.type;
  auto it = c.properties.find(std::string(name));
  return it == c.properties.end() ? std::string_view() : std::string_view(it->second);
}

}  // namespace

std::string FillPlaceholders(std::string_view text, const CaseRecord& c);

namespace {

// The address or number a message of this case goes to ("" : none).
std::string Recipient(const Alert& a, const CaseRecord& c,
                      const std::map<std::string, meta::User>& users) {
  if (a.recipient != "owner") return FillPlaceholders(a.recipient, c);  // "{phone}" works too
  auto it = users.find(c.owner_id);
  if (it == users.end()) return "";
  const char* key = a.sms ? "phone_number" : "email";
  const json::value* v = it->second.user_data.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : "";
}

TaskSpec SendTask(const Alert& a, const std::string& to, const std::string& subject,
                  const std::string& text) {
  TaskSpec t;
  t.domain = a.domain;
  t.queue = "default";
  if (a.sms) {
    t.type = "sms.send";
    t.payload = json::serialize(
        json::object{{"to", to}, {"message", text}, {"gateway", GatewayJson(a.gateway)}});
  } else {
    t.type = "email.send";
    t.payload = json::serialize(
        json::object{{"to", json::array{json::value(to)}}, {"subject", subject}, {"text", text}});
  }
  return t;
}

const char* kSqliteSchema = R"(
CREATE TABLE IF NOT EXISTS reminder_messages (
  domain TEXT NOT NULL, alert TEXT NOT NULL, case_id TEXT NOT NULL, occurrence INTEGER NOT NULL,
  due_at INTEGER NOT NULL, queued_at INTEGER NOT NULL, channel TEXT NOT NULL,
  recipient TEXT NOT NULL, message TEXT NOT NULL, task_id INTEGER, outcome TEXT,
  PRIMARY KEY (domain, alert, case_id, occurrence));
CREATE INDEX IF NOT EXISTS reminder_messages_queued ON reminder_messages (domain, queued_at))";
const char* kPostgresSchema = R"(
CREATE TABLE IF NOT EXISTS reminder_messages (
  domain TEXT NOT NULL, alert TEXT NOT NULL, case_id TEXT NOT NULL, occurrence BIGINT NOT NULL,
  due_at BIGINT NOT NULL, queued_at BIGINT NOT NULL, channel TEXT NOT NULL,
  recipient TEXT NOT NULL, message TEXT NOT NULL, task_id BIGINT, outcome TEXT,
  PRIMARY KEY (domain, alert, case_id, occurrence));
CREATE INDEX IF NOT EXISTS reminder_messages_queued ON reminder_messages (domain, queued_at))";

// Logs message k of case c and queues its task in one transaction on the queue's database (so
// neither happens without the other); false when it was logged before.
Result<bool> LogAndQueue(util::SqlDb* db, TaskQueue* q, const Alert& a, const CaseRecord& c, int k,
                         int64_t due, const std::string& to, const std::string& text,
                         const std::string& skipped, int64_t now) {
  const std::string& case_id = c.case_id;
  bool fresh = false;
  CC_RETURN_IF_ERROR(db->Transaction("logging a reminder", 0, [&]() -> Status {
    CC_ASSIGN_OR_RETURN(
        util::SqlRows r,
        db->Run("logging a reminder",
                "INSERT INTO reminder_messages (domain, alert, case_id, occurrence, due_at, "
                "queued_at, channel, recipient, message, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?) ON CONFLICT DO NOTHING",
                {a.domain, a.name, case_id, int64_t(k), due, now, a.sms ? "sms" : "email", to, text,
                 skipped.empty() ? util::SqlParam(nullptr) : util::SqlParam(skipped)}));
    fresh = r.changed > 0;
    if (!fresh || !skipped.empty()) return Status::Ok();
    TaskSpec t = SendTask(a, to, FillPlaceholders(a.subject, c), text);
    t.unique_key = fmt::format("reminder:{}:{}:{}:{}", a.domain, a.name, case_id, k);
    // q null: db is the queue's database and the task commits with the row; else (a queue in
    // memory) it is queued inside the row's transaction, just before the commit.
    CC_ASSIGN_OR_RETURN(int64_t id, q ? q->Enqueue(t) : tasks::SqlTaskQueue::EnqueueIn(db, t));
    return db
        ->Run("logging a reminder",
              "UPDATE reminder_messages SET task_id = ? WHERE domain = ? AND alert = ? AND "
              "case_id = ? AND occurrence = ?",
              {id, a.domain, a.name, case_id, int64_t(k)})
        .status();
  }));
  return fresh;
}

}  // namespace

Result<Alert> ParseAlert(std::string_view json_text) {
  boost::system::error_code ec;
  json::value v = json::parse(json_text, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("an alert must be a JSON object");
  const json::object& o = v.get_object();
  static const char* kKnown[] = {
      "name",    "domain",    "case_type", "criteria", "criteria_operator", "start", "repeat",
      "channel", "recipient", "subject",   "message",  "gateway",           "check", "time_zone"};
  json::object rule;
  for (const auto& kv : o) {
    std::string_view k(kv.key().data(), kv.key().size());
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown))
      return Bad(std::string(k), "unknown field");
    if (k == "name" || k == "domain" || k == "case_type" || k == "criteria" ||
        k == "criteria_operator" || k == "time_zone")
      rule[kv.key()] = kv.value();
  }
  rule["actions"] = json::object{{"close_case", true}};  // unused: the rule only matches
  Alert a;
  CC_ASSIGN_OR_RETURN(a.match, rules::ParseRule(json::serialize(rule)));
  a.name = a.match.name;
  a.domain = a.match.domain;
  // The REST API serves the message log at .../alerts/messages/: no alert may hide behind it.
  if (a.name == "messages") return Bad("name", "'messages' is reserved for the message log");
  CC_RETURN_IF_ERROR(ParseStart(o, &a));
  CC_RETURN_IF_ERROR(ParseRest(o, &a));
  a.json = json::serialize(v);
  return a;
}

std::optional<int64_t> DueAt(const Alert& a, std::string_view start_value, int k) {
  auto day = rules::DayOf(start_value);
  if (!day) return std::nullopt;
  const int64_t d = *day + a.offset_days + int64_t(k) * a.every_days;
  try {
    const date::time_zone* tz = date::locate_zone(a.time_zone);
    date::local_time<std::chrono::minutes> lt{date::local_days{date::days{d}}.time_since_epoch() +
                                              std::chrono::minutes(a.minute_of_day)};
    auto sys = tz->to_sys(lt, date::choose::earliest);
    return std::chrono::duration_cast<std::chrono::microseconds>(sys.time_since_epoch()).count();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string FillPlaceholders(std::string_view text, const CaseRecord& c) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    size_t open = text.find('{', i), close;
    if (open == std::string_view::npos ||
        (close = text.find('}', open)) == std::string_view::npos) {
      out += text.substr(i);
      break;
    }
    out += text.substr(i, open - i);
    out += Field(c, text.substr(open + 1, close - open - 1));
    i = close + 1;
  }
  return out;
}

std::string TickSummary::ToJson(std::string_view domain, std::string_view alert) const {
  return json::serialize(json::object{{"alert", alert},
                                      {"domain", domain},
                                      {"scanned", scanned},
                                      {"matched", matched},
                                      {"queued", queued},
                                      {"skipped", skipped}});
}

Status MigrateLog(util::SqlDb* db) {
  return db->Migrate("reminders", 1, kSqliteSchema, kPostgresSchema);
}

Result<TickSummary> RunAlert(Engine* engine, util::SqlDb* db, TaskQueue* q, meta::MetaStore* meta,
                             const Alert& a, int64_t now) {
  CC_RETURN_IF_ERROR(MigrateLog(db));
  std::map<std::string, meta::User> users;
  if (meta && a.recipient == "owner") {
    CC_ASSIGN_OR_RETURN(auto list, meta->ListUsers(a.domain));
    for (auto& u : list) users.emplace(u.user_id, std::move(u));
  }
  CC_ASSIGN_OR_RETURN(int64_t today, rules::LocalDay(now, a.time_zone));
  TickSummary sum;
  std::vector<CaseRecord> matched;
  storage::CaseFilter f;
  f.domain = a.domain;
  f.type = a.match.case_type;
  f.closed = false;  // a closed case's schedule stops
  CC_RETURN_IF_ERROR(engine->ListCases(f, [&](const CaseRecord& c) {
    ++sum.scanned;
    if (rules::Matches(a.match, c, nullptr, now, today)) matched.push_back(c);
    return true;
  }));
  sum.matched = static_cast<int64_t>(matched.size());
  constexpr int64_t kStale = 86'400'000'000LL;  // a message due over a day ago is not sent
  for (const CaseRecord& c : matched) {
    const std::string_view start = Field(c, a.start_property);
    for (int k = 0; k < a.occurrences; ++k) {
      auto due = DueAt(a, start, k);
      if (!due || *due > now) break;
      const std::string to = Recipient(a, c, users);
      const std::string text = FillPlaceholders(a.message, c);
      std::string skipped = *due < now - kStale ? "skipped: due over a day ago"
                            : to.empty()        ? "skipped: no recipient"
                                                : "";
      CC_ASSIGN_OR_RETURN(bool fresh, LogAndQueue(db, q, a, c, k, *due, to, text, skipped, now));
      if (fresh) ++(skipped.empty() ? sum.queued : sum.skipped);
      if (fresh && skipped.starts_with("skipped: no"))
        Log(LogLevel::kWarning,
            fmt::format("reminder {}: case {} has no recipient", a.name, c.case_id),
            {{"component", "reminders"},
             {"domain", a.domain},
             {"next", "the message is logged as skipped and not sent"}});
    }
  }
  return sum;
}

namespace {

// The row's outcome: its own ("skipped: why"), else its send task's state.
std::string Outcome(const util::SqlRows& r, size_t i, TaskQueue* q) {
  std::string outcome(r.Str(i, 9));
  const int64_t task = r.Int(i, 8);
  if (outcome.empty() && task && q) {
    auto t = q->Get(task);
    outcome = t.ok() ? std::string(TaskStateName(t->state)) : "task pruned";
  }
  return outcome;
}

std::string MessageJson(const util::SqlRows& r, size_t i, const std::string& outcome) {
  return json::serialize(json::object{{"alert", std::string(r.Str(i, 0))},
                                      {"case_id", std::string(r.Str(i, 1))},
                                      {"occurrence", r.Int(i, 2)},
                                      {"due_at", util::FormatIsoTime(r.Int(i, 3))},
                                      {"queued_at", util::FormatIsoTime(r.Int(i, 4))},
                                      {"channel", std::string(r.Str(i, 5))},
                                      {"recipient", std::string(r.Str(i, 6))},
                                      {"message", std::string(r.Str(i, 7))},
                                      {"task_id", r.Int(i, 8)},
                                      {"outcome", outcome}});
}

}  // namespace

Status CheckOutcomeFilter(std::string_view outcome) {
  if (outcome.empty() || outcome == "skipped" || outcome == "task pruned" ||
      ParseTaskState(outcome))
    return Status::Ok();
  return Status::InvalidArgument(
      fmt::format("outcome: unknown outcome '{}' (queued, running, retrying, succeeded, dead, "
                  "cancelled or skipped)",
                  outcome));
}

Result<std::vector<std::string>> ListMessages(util::SqlDb* db, TaskQueue* q,
                                              const ReminderMessageQuery& m) {
  CC_RETURN_IF_ERROR(CheckOutcomeFilter(m.outcome));
  if (m.limit < 1 || m.offset < 0)
    return Status::InvalidArgument("limit: must be at least 1 (and offset at least 0)");
  // An outcome filter is judged row by row (a task's state is the queue's): read in batches.
  const int64_t batch = m.outcome.empty() ? m.limit : 500;
  int64_t at = m.outcome.empty() ? m.offset : 0, to_skip = m.outcome.empty() ? 0 : m.offset;
  std::vector<std::string> out;
  while (static_cast<int64_t>(out.size()) < m.limit) {
    CC_ASSIGN_OR_RETURN(
        util::SqlRows r,
        db->Run("reading the reminder log",
                "SELECT alert, case_id, occurrence, due_at, queued_at, channel, recipient, "
                "message, COALESCE(task_id, 0), COALESCE(outcome, '') FROM reminder_messages "
                "WHERE domain = ? AND (? = '' OR alert = ?) AND (? = '' OR case_id = ?) "
                "ORDER BY queued_at DESC, alert, case_id, occurrence LIMIT ? OFFSET ?",
                {m.domain, m.alert, m.alert, m.case_id, m.case_id, batch, at}));
    for (size_t i = 0; i < r.size() && static_cast<int64_t>(out.size()) < m.limit; ++i) {
      const std::string outcome = Outcome(r, i, q);
      const bool skipped = m.outcome == "skipped" && outcome.starts_with("skipped");
      if (!m.outcome.empty() && outcome != m.outcome && !skipped) continue;
      if (to_skip > 0 && to_skip--) continue;
      out.push_back(MessageJson(r, i, outcome));
    }
    if (static_cast<int64_t>(r.size()) < batch) break;
    at += batch;
  }
  return out;
}

}  // namespace commcare::reminders
