// Background failures reach the Logger once per streak, with what happens next: a pillow's
// failing changes (retry queue, dead letters) and its recovery.
#include <commcare/log.h>
#include <commcare/pillows.h>

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "engine_helpers.h"

using namespace commcare;
using cctest::CaseForm;
using cctest::OpenMemory;
using cctest::Submit;

namespace {

struct Record {
  LogLevel level;
  std::string message;
  std::map<std::string, std::string> fields;
};

// Keeps every record; installed for the test's scope, the default logger restored after.
class CapturingLogger : public Logger {
 public:
  void Log(LogLevel level, std::string_view message, std::span<const LogField> fields) override {
    Record r{level, std::string(message), {}};
    for (const auto& f : fields) r.fields[std::string(f.key)] = f.value;
    std::lock_guard l(mu_);
    records_.push_back(std::move(r));
  }
  // The records whose component is component.
  std::vector<Record> Of(const std::string& component) {
    std::lock_guard l(mu_);
    std::vector<Record> out;
    for (const auto& r : records_)
      if (auto it = r.fields.find("component"); it != r.fields.end() && it->second == component)
        out.push_back(r);
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<Record> records_;
};

struct InstallLogger {
  explicit InstallLogger(std::shared_ptr<Logger> l) { SetLogger(std::move(l)); }
  ~InstallLogger() { SetLogger(nullptr); }
};

int Count(const std::vector<Record>& rs, LogLevel level) {
  int n = 0;
  for (const auto& r : rs) n += r.level == level;
  return n;
}

const Record& Only(const std::vector<Record>& rs, LogLevel level) {
  for (const auto& r : rs)
    if (r.level == level) return r;
  FAIL("no record at level " << LogLevelName(level));
  return rs.front();
}

// A processor that fails for chosen documents.
struct Failing : ChangeProcessor {
  std::mutex mu;
  std::set<std::string> fail;
  Status Process(Engine&, const Change& c) override {
    std::lock_guard l(mu);
    if (fail.count(c.meta.document_id))
      return Status::Unavailable("the index is down for " + c.meta.document_id);
    return Status::Ok();
  }
  void Fail(std::set<std::string> ids) {
    std::lock_guard l(mu);
    fail = std::move(ids);
  }
};

std::string NewCase(const std::string& id) {
  return CaseForm("form-" + id, id,
                  "<create><case_type>t</case_type><case_name>n</case_name>"
                  "<owner_id>u1</owner_id></create>");
}

}  // namespace

TEST_CASE("Log: a pillow's failing changes are logged once per streak, then its recovery") {
  auto logger = std::make_shared<CapturingLogger>();
  InstallLogger installed(logger);
  auto e = OpenMemory();
  PillowHostOptions o;
  o.dir = cctest::TempDir("log");
  o.builtin = false;
  auto opened = PillowHost::Open(e.get(), o);
  REQUIRE_MESSAGE(opened.ok(), opened.status().ToString());
  auto& h = *opened;
  auto proc = std::make_shared<Failing>();
  const std::set<std::string> failing = {"c-1", "c-2", "c-3"};
  proc->Fail(failing);
  PillowConfig cfg;
  cfg.name = "flaky";
  cfg.topics = {"case-sql"};
  cfg.max_attempts = 2;
  cfg.retry_delay_us = 1'000'000;  // the second attempt is due 1 s after the first
  REQUIRE(h->AddPillow(cfg, proc).ok());
  for (const char* id : {"c-0", "c-1", "c-2", "c-3"})
    REQUIRE(Submit(e.get(), NewCase(id)).http_status == 201);
  REQUIRE(e->RelayChanges().ok());

  // Three changes fail: one warning, naming the first of them and its next attempt.
  REQUIRE(h->RunUntilCaughtUp().ok());
  auto rs = logger->Of("pillow");
  REQUIRE(rs.size() == 1);
  const Record& w = Only(rs, LogLevel::kWarning);
  CHECK(w.message.find("the index is down") != std::string::npos);
  CHECK(w.fields.at("pillow") == "flaky");
  CHECK(w.fields.at("topic") == "case-sql");
  CHECK(w.fields.at("attempt") == "1 of 2");
  const std::string doc = w.fields.at("doc_id");
  CHECK(failing.count(doc) == 1);
  auto queued = h->Retries("flaky");
  REQUIRE(queued.ok());
  REQUIRE(queued->size() == 3);
  for (const auto& r : *queued) {
    if (r.doc_id != doc) continue;
    CHECK(w.fields.at("partition") == std::to_string(r.partition));
    CHECK(w.fields.at("offset") == std::to_string(r.offset));
    CHECK(w.fields.at("next") == "retry at " + FormatTime(r.next_attempt));
  }

  // Their second attempts fail too: all three dead-lettered, one error.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int dead = 0;
  while (dead < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(h->RunUntilCaughtUp().ok());
    dead = 0;
    for (const auto& r : *h->Retries("flaky")) dead += r.dead;
  }
  REQUIRE(dead == 3);
  rs = logger->Of("pillow");
  CHECK(Count(rs, LogLevel::kWarning) == 1);
  REQUIRE(Count(rs, LogLevel::kError) == 1);
  const Record& d = Only(rs, LogLevel::kError);
  CHECK(d.fields.at("pillow") == "flaky");
  CHECK(failing.count(d.fields.at("doc_id")) == 1);
  CHECK(d.fields.at("attempt") == "2 of 2");
  CHECK(d.fields.at("next").starts_with("dead-lettered"));
  CHECK(d.fields.count("topic") == 1);
  CHECK(d.fields.count("partition") == 1);
  CHECK(d.fields.count("offset") == 1);

  // Fixed: the next batch processes cleanly and ends the streak with one info record.
  proc->Fail({});
  REQUIRE(Submit(e.get(), NewCase("c-4")).http_status == 201);
  REQUIRE(e->RelayChanges().ok());
  REQUIRE(h->RunUntilCaughtUp().ok());
  rs = logger->Of("pillow");
  REQUIRE(rs.size() == 3);
  CHECK(Count(rs, LogLevel::kWarning) == 1);
  CHECK(Count(rs, LogLevel::kError) == 1);
  const Record& ok = Only(rs, LogLevel::kInfo);
  CHECK(ok.fields.at("pillow") == "flaky");
  CHECK(ok.fields.at("failures") == "6");  // three first attempts, three last ones
  CHECK(ok.fields.at("dead_lettered") == "3");
  // Later batches log nothing more; a new failure starts a new streak.
  REQUIRE(Submit(e.get(), NewCase("c-5")).http_status == 201);
  proc->Fail({"c-6"});
  REQUIRE(Submit(e.get(), NewCase("c-6")).http_status == 201);
  REQUIRE(e->RelayChanges().ok());
  REQUIRE(h->RunUntilCaughtUp().ok());
  rs = logger->Of("pillow");
  CHECK(rs.size() == 4);
  CHECK(Count(rs, LogLevel::kWarning) == 2);
  CHECK(rs.back().fields.at("doc_id") == "c-6");
}
