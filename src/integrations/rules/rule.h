// A case update rule's definition and its evaluation on one case: the criteria (HQ's
// MatchPropertyDefinition match types, the server-modified boundary, open/closed) and the
// effect its actions would have (HQ's UpdateCaseDefinition). Pure logic: no engine, no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/records.h"
#include "commcare/rules.h"
#include "commcare/status.h"
#include "commcare/tasks.h"

namespace commcare {
class Engine;
namespace pillows::ucr {
class DocFilter;
}
}  // namespace commcare

namespace commcare::rules {

// One criterion. property_name may be "parent/<prop>" (the case's parent's property).
// closed_parent is HQ's ClosedParentDefinition instead: the case's "parent" (child index) is
// closed. location_id is HQ's LocationFilterDefinition instead: the case's owner is that
// location (or, with include_child_locations, one under it), or a user whose primary location
// is. ucr_filter is HQ's UCRFilterDefinition instead: a UCR filter passes on the case's JSON.
struct Criterion {
  enum class Match { kEqual, kNotEqual, kHasValue, kHasNoValue, kRegex, kDays, kDaysBefore };
  bool closed_parent = false;
  std::string location_id;
  bool include_child_locations = true;  // HQ's default
  std::shared_ptr<const pillows::ucr::DocFilter> ucr_filter;
  std::string property_name;
  Match match = Match::kEqual;
  std::string value;                  // EQUAL, NOT_EQUAL, REGEX
  int64_t days = 0;                   // DAYS, DAYS_BEFORE
  std::shared_ptr<std::regex> regex;  // REGEX, compiled once
};

// One property to set. name may be "parent/<prop>"; so may a CASE_PROPERTY value.
struct Update {
  std::string name;
  bool from_property = false;  // value_type CASE_PROPERTY: value names a property
  std::string value;
};

// HQ's CaseDeduplicationActionDefinition: cases of the rule's type (and criteria) whose listed
// properties match are duplicates of each other; the rule's updates go to each of them.
struct Deduplicate {
  bool any = false;  // match_type ANY: one equal property suffices (default ALL: every one)
  std::vector<std::string> properties;
  bool include_closed = false;
};

struct Rule {
  std::string name, domain, case_type;
  bool any = false;  // criteria_operator ANY (default ALL)
  std::vector<Criterion> criteria;
  std::optional<int64_t> modified_days;  // server_modified_boundary
  enum class CaseStatus { kOpen, kClosed, kAny } case_status = CaseStatus::kOpen;
  std::vector<Update> updates;
  bool close_case = false;
  std::optional<Deduplicate> deduplicate;
  std::string cron = "0 0 * * *", time_zone = "UTC";  // the daily run
  bool run_on_change = false;
  bool active = true;
  std::string json;  // the definition as saved (normalised)

  bool NeedsParent() const;
  bool NeedsLocations() const;
};

// Parses and checks a definition; InvalidArgument names the field.
Result<Rule> ParseRule(std::string_view json_text);

// What a rule's actions would do to one case; empty when nothing would change.
struct Effect {
  std::string case_id;
  std::map<std::string, std::string> update;
  bool close = false;
  std::string parent_id;
  std::map<std::string, std::string> parent_update;
  std::vector<std::string> duplicates;  // a deduplicate rule: the case's duplicates
  bool Empty() const { return update.empty() && !close && parent_update.empty(); }
  std::string ToJson(std::string_view form_id) const;
};

// The day number (days since 1970-01-01) of a date property ("2024-05-01", or an ISO
// date-time's date part); nullopt for anything else.
std::optional<int64_t> DayOf(std::string_view value);

// The day number (days since 1970-01-01) of a µs time in a time zone.
Result<int64_t> LocalDay(int64_t micros, const std::string& time_zone);

// Whether the case meets the rule (type, status, deleted, criteria, boundary). parent may be
// null (no parent, or not needed); so may locations when the rule has no location criterion.
// today: LocalDay(now) in the rule's zone. engine: what a UCR criterion's related_doc reads.
bool Matches(const Rule& r, const CaseRecord& c, const CaseRecord* parent, int64_t now,
             int64_t today, const RuleLocations* locations = nullptr, Engine* engine = nullptr);

// The values a deduplicate rule compares, one per listed property ("" when blank); nullopt when
// every one is blank (HQ: such a case has no duplicates).
std::optional<std::vector<std::string>> DedupValues(const Rule& r, const CaseRecord& c);

// The effect of the rule's actions on a matching case.
Effect PlanEffect(const Rule& r, const CaseRecord& c, const CaseRecord* parent);

std::string ScheduleName(std::string_view domain, std::string_view name);
// The schedule that saves a rule (its task: rule.run with the rule's JSON).
Schedule ToSchedule(const Rule& r);

}  // namespace commcare::rules
