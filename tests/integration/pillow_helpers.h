// Helpers shared by the pillow tests (pillow_test.cc, and pillow_kafka_test.cc on Kafka).
#pragma once

#include <commcare/pillows.h>
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "commcare/storage/change_log.h"
#include "engine_helpers.h"

namespace cctest {

// Every record of a topic, partition by partition.
inline std::vector<commcare::storage::ChangeRecord> AllRecords(commcare::storage::ChangeLog* log,
                                                               const std::string& topic) {
  std::vector<commcare::storage::ChangeRecord> out;
  auto parts = log->Partitions(topic);
  if (!parts.ok()) return out;
  for (int p = 0; p < *parts; ++p) {
    auto recs = log->Read(topic, p, 0, 1000000);
    REQUIRE(recs.ok());
    for (auto& r : *recs) out.push_back(std::move(r));
  }
  return out;
}

// A pillow host on e whose databases are in dir (worker k of n).
inline std::unique_ptr<commcare::PillowHost> OpenHost(commcare::Engine* e, const std::string& dir,
                                                      int n = 1, int k = 0, bool builtin = true) {
  commcare::PillowHostOptions o;
  o.dir = dir;
  o.num_processes = n;
  o.process_num = k;
  o.builtin = builtin;
  auto h = commcare::PillowHost::Open(e, o);
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  return std::move(h).value();
}

// Form f-<i> creating patient case c-<i>, owned by owner.
inline std::string Patient(int i, const std::string& owner, int age,
                           const std::string& extra = "") {
  return CaseForm(
      fmt::format("f-{}", i), fmt::format("c-{}", i),
      fmt::format("<create><case_type>patient</case_type><case_name>Name {}</case_name>"
                  "<owner_id>{}</owner_id></create><update><age>{}</age><village>v{}</village>"
                  "<visit_date>2020-01-{:02}</visit_date>{}</update>",
                  i, owner, age, i % 3, 1 + i % 28, extra));
}

// Runs the query with both plans (property index lists, and per-case checks in page order)
// and checks they agree.
inline commcare::CaseSearchPage Search(const std::string& dir, commcare::CaseSearchQuery q) {
  auto r = commcare::SearchCases(dir, q);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  q.scan_above = 0;
  auto scanned = commcare::SearchCases(dir, q);
  REQUIRE_MESSAGE(scanned.ok(), scanned.status().ToString());
  CHECK(scanned->cases == r->cases);
  CHECK(scanned->next_cursor == r->next_cursor);
  CHECK(scanned->total == r->total);
  return *r;
}

}  // namespace cctest
