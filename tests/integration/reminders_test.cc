// Reminders (conditional alerts): the definition refused naming the field, due times relative
// to a case date in a time zone, placeholders, and a check that queues each due message once,
// stops for a closed or no longer matching case, and logs everything.
#include "commcare/reminders.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <atomic>
#include <boost/json.hpp>
#include <mutex>
#include <thread>
#include <vector>

#include "commcare/deployment.h"
#include "commcare/host.h"
#include "commcare/tasks.h"
#include "engine_helpers.h"
#include "integrations/reminders/alert.h"
#include "util/sql_db.h"
#include "util/time.h"

using namespace commcare;
using namespace cctest;
using namespace commcare::reminders;
namespace json = boost::json;

namespace {

int64_t Iso(const char* s) {
  int64_t t = 0;
  REQUIRE(util::ParseIsoTime(s, &t));
  return t;
}

const char* kAlert = R"({"name": "anc", "domain": "demo", "case_type": "pregnancy",
  "criteria": [{"property_name": "risk", "match_type": "EQUAL", "property_value": "high"}],
  "start": {"property": "edd", "offset_days": -3, "time": "09:00"},
  "repeat": {"every_days": 2, "occurrences": 3},
  "recipient": "nurse@example.org", "subject": "Visit {case_name}",
  "message": "Hello {case_name}, your visit is due ({edd}).", "time_zone": "Africa/Nairobi"})";

void MakeCase(Engine* e, const std::string& id, const std::string& props) {
  auto r = Submit(e, CaseForm("f-" + id, id,
                              fmt::format("<create><case_type>pregnancy</case_type><case_name>{}"
                                          "</case_name><owner_id>u1</owner_id></create><update>{}"
                                          "</update>",
                                          id, props)));
  REQUIRE_MESSAGE(r.http_status == 201, r.message);
}

}  // namespace

TEST_CASE("Reminders: bad alerts are refused naming the field") {
  json::value base = json::parse(kAlert);
  struct Bad {
    const char* key;
    json::value value;
    std::string field;
  } bad[] = {
      {"start", json::parse(R"({"property": "edd", "time": "9am"})"), "start.time"},
      {"start", json::parse(R"({"offset_days": 1})"), "start.property"},
      {"repeat", json::parse(R"({"occurrences": 3})"), "repeat.every_days"},
      {"channel", "pigeon", "channel"},
      {"channel", "sms", "gateway"},
      {"gateway", json::parse(R"({"url": "ftp://x"})"), "gateway.url"},
      {"criteria",
       json::parse(R"([{"property_name": "r", "match_type": "REGEX", "property_value": "("}])"),
       "criteria[0].property_value"},
      {"check", "every minute", "check"},
      {"volume", 11, "volume"},
  };
  for (const auto& b : bad) {
    json::value v = base;
    v.get_object()[b.key] = b.value;
    if (std::string(b.key) == "gateway") v.get_object()["channel"] = "sms";
    CAPTURE(json::serialize(v));
    auto a = ParseAlert(json::serialize(v));
    REQUIRE(a.status().IsInvalidArgument());
    CHECK_MESSAGE(a.status().message().rfind(b.field + ":", 0) == 0, a.status().message());
  }
  CHECK(ParseAlert(kAlert).ok());
}

TEST_CASE("Reminders: due times follow the case date in the alert's time zone") {
  auto a = ParseAlert(kAlert);
  REQUIRE(a.ok());
  // 3 days before 2024-06-10 at 09:00 in Nairobi (UTC+3), then every 2 days.
  CHECK(util::FormatIsoTime(*DueAt(*a, "2024-06-10", 0)) == "2024-06-07T06:00:00.000000Z");
  CHECK(util::FormatIsoTime(*DueAt(*a, "2024-06-10T23:00:00Z", 1)) ==
        "2024-06-09T06:00:00.000000Z");
  CHECK(!DueAt(*a, "soon", 0));
  CaseRecord c;
  c.name = "Ann";
  c.properties["edd"] = "2024-06-10";
  CHECK(FillPlaceholders("Hello {case_name}, due {edd}{missing}.", c) ==
        "Hello Ann, due 2024-06-10.");
}

TEST_CASE("Reminders: a check queues each due message once and stops for closed cases") {
  auto e = OpenMemory();
  auto q = OpenTaskQueue("");
  REQUIRE(q.ok());
  auto db = util::SqlDb::Open("", "commcare_tasks");
  REQUIRE(db.ok());
  auto a = ParseAlert(kAlert);
  REQUIRE(a.ok());
  MakeCase(e.get(), "p1", "<risk>high</risk><edd>2024-06-10</edd>");
  MakeCase(e.get(), "p2", "<risk>low</risk><edd>2024-06-10</edd>");   // does not match
  MakeCase(e.get(), "p3", "<risk>high</risk><edd>2024-07-30</edd>");  // not due yet
  // 3 days before the edd at 09:00 Nairobi is 2024-06-07T06:00Z; then every 2 days.
  const int64_t first = Iso("2024-06-07T12:00:00Z"), second = Iso("2024-06-09T12:00:00Z");
  auto s = RunAlert(e.get(), db->get(), q->get(), nullptr, *a, first);
  REQUIRE_MESSAGE(s.ok(), s.status().ToString());
  CHECK(s->matched == 2);
  CHECK(s->queued == 1);
  // Again: nothing new.
  CHECK(RunAlert(e.get(), db->get(), q->get(), nullptr, *a, first)->queued == 0);
  CHECK(RunAlert(e.get(), db->get(), q->get(), nullptr, *a, second)->queued == 1);
  auto tasks = (*q)->List({.type = "email.send"});
  REQUIRE(tasks.ok());
  REQUIRE(tasks->size() == 2);
  auto payload = json::parse(tasks->front().spec.payload);
  CHECK(payload.at("to").at(0).as_string() == "nurse@example.org");
  CHECK(payload.at("subject").as_string() == "Visit p1");
  CHECK(payload.at("text").as_string() == "Hello p1, your visit is due (2024-06-10).");
  // Closed before the third message: the schedule stops.
  REQUIRE(Submit(e.get(), CaseForm("close-p1", "p1", "<close/>")).http_status == 201);
  CHECK(RunAlert(e.get(), db->get(), q->get(), nullptr, *a, Iso("2024-06-11T07:00:00Z"))->queued ==
        0);
  auto log = ListMessages(db->get(), q->get(), {.domain = "demo", .limit = 10});
  REQUIRE(log.ok());
  REQUIRE(log->size() == 2);
  auto row = json::parse(log->front());
  CHECK(row.at("occurrence").as_int64() == 1);
  CHECK(row.at("alert").as_string() == "anc");
  CHECK(row.at("case_id").as_string() == "p1");
  CHECK(row.at("recipient").as_string() == "nurse@example.org");
  CHECK(row.at("outcome").as_string() == "queued");
  // A message due over a day ago is logged as skipped, not sent.
  MakeCase(e.get(), "p4", "<risk>high</risk><edd>2024-05-01</edd>");
  auto late = RunAlert(e.get(), db->get(), q->get(), nullptr, *a, second);
  CHECK(late->queued == 0);
  CHECK(late->skipped == 3);
  CHECK((*q)->List({.type = "email.send"})->size() == 2);
  // The log's filters and pages.
  auto count = [&](ReminderMessageQuery m) {
    m.domain = "demo";
    auto rows = ListMessages(db->get(), q->get(), m);
    REQUIRE_MESSAGE(rows.ok(), rows.status().ToString());
    return rows->size();
  };
  CHECK(count({.outcome = "skipped"}) == 3);
  CHECK(count({.outcome = "queued"}) == 2);
  CHECK(count({.outcome = "queued", .offset = 1}) == 1);
  CHECK(count({.case_id = "p1"}) == 2);
  CHECK(count({.case_id = "p4", .limit = 2}) == 2);
  CHECK(count({.case_id = "p4", .limit = 2, .offset = 2}) == 1);
  CHECK(count({.alert = "other"}) == 0);
  auto page = ListMessages(db->get(), q->get(), {.domain = "demo", .limit = 1, .offset = 4});
  auto all = ListMessages(db->get(), q->get(), {.domain = "demo"});
  REQUIRE((page.ok() && all.ok() && page->size() == 1 && all->size() == 5));
  CHECK(page->front() == all->back());
  auto bad = ListMessages(db->get(), q->get(), {.domain = "demo", .outcome = "sent"});
  CHECK(bad.status().IsInvalidArgument());
  CHECK(bad.status().message().find("outcome: unknown outcome 'sent'") != std::string::npos);
}

// The log's one connection per directory is shared by the workers' checks and the console's
// reads: at the same moment, from several threads, every call succeeds and nothing is lost
// (a check and a log read racing on it once left tasks.db failing with "disk I/O error").
TEST_CASE("Reminders: checks and log reads from several threads share the log safely") {
  const std::string dir = TempDir("reminders-threads");
  HostOptions o;
  o.engine.data_dir = dir;
  Deployment d;
  d.shards = 16;
  o.deployment = d;
  auto h = Host::Open(o);
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  Host* host = h->get();
  std::string alert = kAlert;
  alert.replace(alert.find("\"name\""), 0, R"("check": "0 6 * * *", )");
  REQUIRE_MESSAGE(SaveAlert(host, alert).ok(), SaveAlert(host, alert).status().ToString());
  for (int i = 0; i < 20; ++i)
    MakeCase(host->engine(), "t" + std::to_string(i), "<risk>high</risk><edd>2020-01-10</edd>");
  std::atomic<int> failures{0};
  std::string first_failure;
  std::mutex fm;
  auto fail = [&](const Status& s) {
    std::lock_guard l(fm);
    if (failures++ == 0) first_failure = s.ToString();
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 30; ++i)
        if (auto r = CheckAlertNow(host, "demo", "anc"); !r.ok()) fail(r.status());
    });
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i)
        if (auto r = ListReminderMessages(host, {.domain = "demo", .limit = 50}); !r.ok())
          fail(r.status());
    });
  for (auto& t : threads) t.join();
  CHECK_MESSAGE(failures == 0, first_failure);
  // Every case's past messages are logged (as skipped: due over a day ago), once each.
  auto log = ListReminderMessages(host, {.domain = "demo", .limit = 1000});
  REQUIRE(log.ok());
  CHECK(log->size() == 60);  // 20 cases x 3 occurrences
}
