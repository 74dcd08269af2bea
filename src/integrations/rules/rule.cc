// A case update rule: parsing (every field checked, unknown ones refused), the criteria and the
// effect of the actions on one case. The match types and their meaning follow HQ's
// corehq/apps/data_interfaces/models.py (docs/rules.md).
#include "integrations/rules/rule.h"

#include <date/date.h>
#include <date/tz.h>
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <charconv>
#include <set>

#include "pillows/ucr.h"

namespace commcare::rules {

namespace json = boost::json;

// The day number of a date property ("2024-05-01" or an ISO date-time's date part).
std::optional<int64_t> DayOf(std::string_view v) {
  auto num = [](std::string_view s, int64_t* out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && p == s.data() + s.size();
  };
  if (v.size() < 10 || v[4] != '-' || v[7] != '-') return std::nullopt;
  int64_t y, m, d;
  if (!num(v.substr(0, 4), &y) || !num(v.substr(5, 2), &m) || !num(v.substr(8, 2), &d))
    return std::nullopt;
  date::year_month_day ymd{date::year(int(y)), date::month(unsigned(m)), date::day(unsigned(d))};
  if (!ymd.ok()) return std::nullopt;
  return date::sys_days(ymd).time_since_epoch().count();
}

namespace {

using Match = Criterion::Match;

const std::map<std::string_view, Match>& MatchTypes() {
  static const std::map<std::string_view, Match> m = {
      {"EQUAL", Match::kEqual},           {"NOT_EQUAL", Match::kNotEqual},
      {"HAS_VALUE", Match::kHasValue},    {"HAS_NO_VALUE", Match::kHasNoValue},
      {"REGEX", Match::kRegex},           {"DAYS", Match::kDays},
      {"DAYS_BEFORE", Match::kDaysBefore}};
  return m;
}

Status Bad(const std::string& field, std::string_view why) {
  return Status::InvalidArgument(fmt::format("{}: {}", field, why));
}

Status OnlyKeys(const json::object& o, const std::string& at,
                std::initializer_list<std::string_view> keys) {
  for (const auto& kv : o) {
    const std::string_view k(kv.key().data(), kv.key().size());
    if (std::find(keys.begin(), keys.end(), k) == keys.end())
      return Bad(at + std::string(k), "unknown field");
  }
  return Status::Ok();
}

// A string field (required or not); a number is taken as its text (HQ keeps values as text).
Status Str(const json::object& o, const std::string& at, const char* k, std::string* out,
           bool required) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null()) return required ? Bad(at + k, "is required") : Status::Ok();
  if (v->is_string()) {
    *out = std::string(v->get_string());
  } else if (v->is_int64()) {
    *out = std::to_string(v->get_int64());
  } else {
    return Bad(at + k, "must be a string");
  }
  if (required && out->empty()) return Bad(at + k, "is required");
  return Status::Ok();
}

Status Bool(const json::object& o, const std::string& at, const char* k, bool* out) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null()) return Status::Ok();
  if (!v->is_bool()) return Bad(at + k, "must be true or false");
  *out = v->get_bool();
  return Status::Ok();
}

bool ParseInt(std::string_view s, int64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

// "prop" or "parent/prop"; nothing deeper.
Status CheckPropertyName(const std::string& field, const std::string& name) {
  std::string_view p = name;
  if (p.starts_with("parent/")) p.remove_prefix(7);
  if (p.empty() || p.find('/') != std::string_view::npos)
    return Bad(field, fmt::format("\"{}\" is not a property name (or parent/<name>)", name));
  return Status::Ok();
}

Status ParseCriterion(const json::value& v, const std::string& at, Criterion* c) {
  if (!v.is_object()) return Bad(at.substr(0, at.size() - 1), "must be an object");
  const auto& o = v.get_object();
  if (o.contains("closed_parent")) {  // HQ's ClosedParentDefinition (identifier parent, child)
    CC_RETURN_IF_ERROR(OnlyKeys(o, at, {"closed_parent"}));
    CC_RETURN_IF_ERROR(Bool(o, at, "closed_parent", &c->closed_parent));
    if (!c->closed_parent) return Bad(at + "closed_parent", "must be true (or left out)");
    return Status::Ok();
  }
  if (o.contains("configured_filter")) {  // HQ's UCRFilterDefinition
    CC_RETURN_IF_ERROR(OnlyKeys(o, at, {"configured_filter"}));
    CC_ASSIGN_OR_RETURN(c->ucr_filter, pillows::ucr::DocFilter::Compile(o.at("configured_filter"),
                                                                        at + "configured_filter"));
    return Status::Ok();
  }
  if (o.contains("location_id")) {  // HQ's LocationFilterDefinition
    CC_RETURN_IF_ERROR(OnlyKeys(o, at, {"location_id", "include_child_locations"}));
    CC_RETURN_IF_ERROR(Str(o, at, "location_id", &c->location_id, true));
    if (c->location_id.empty()) return Bad(at + "location_id", "must name a location");
    if (o.contains("include_child_locations"))
      CC_RETURN_IF_ERROR(Bool(o, at, "include_child_locations", &c->include_child_locations));
    return Status::Ok();
  }
  CC_RETURN_IF_ERROR(OnlyKeys(o, at, {"property_name", "property_value", "match_type"}));
  std::string type;
  CC_RETURN_IF_ERROR(Str(o, at, "property_name", &c->property_name, true));
  CC_RETURN_IF_ERROR(CheckPropertyName(at + "property_name", c->property_name));
  CC_RETURN_IF_ERROR(Str(o, at, "match_type", &type, true));
  auto it = MatchTypes().find(type);
  if (it == MatchTypes().end())
    return Bad(at + "match_type",
               fmt::format("unknown match type \"{}\" (EQUAL, NOT_EQUAL, HAS_VALUE, HAS_NO_VALUE, "
                           "REGEX, DAYS, DAYS_BEFORE)",
                           type));
  c->match = it->second;
  CC_RETURN_IF_ERROR(Str(o, at, "property_value", &c->value, false));
  switch (c->match) {
    case Match::kDays:
    case Match::kDaysBefore:
      if (!ParseInt(c->value, &c->days))
        return Bad(at + "property_value", "must be a whole number of days");
      break;
    case Match::kRegex:
      try {
        c->regex = std::make_shared<std::regex>(c->value, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        return Bad(at + "property_value", fmt::format("bad regex \"{}\": {}", c->value, e.what()));
      }
      break;
    case Match::kEqual:
    case Match::kNotEqual:
      if (!o.contains("property_value")) return Bad(at + "property_value", "is required");
      break;
    default:
      break;
  }
  return Status::Ok();
}

Status ParseUpdate(const json::value& v, const std::string& at, Update* u) {
  if (!v.is_object()) return Bad(at.substr(0, at.size() - 1), "must be an object");
  const auto& o = v.get_object();
  CC_RETURN_IF_ERROR(OnlyKeys(o, at, {"name", "value_type", "value"}));
  CC_RETURN_IF_ERROR(Str(o, at, "name", &u->name, true));
  CC_RETURN_IF_ERROR(CheckPropertyName(at + "name", u->name));
  static const std::set<std::string_view> kFixed = {
      "case_id", "case_type", "closed", "date_opened", "modified_on", "server_modified_on"};
  std::string_view bare = std::string_view(u->name).substr(u->name.starts_with("parent/") ? 7 : 0);
  if (kFixed.count(bare)) return Bad(at + "name", fmt::format("\"{}\" cannot be set", bare));
  std::string type = "EXACT";
  CC_RETURN_IF_ERROR(Str(o, at, "value_type", &type, false));
  if (type != "EXACT" && type != "CASE_PROPERTY")
    return Bad(at + "value_type", fmt::format("\"{}\" is not EXACT or CASE_PROPERTY", type));
  u->from_property = type == "CASE_PROPERTY";
  CC_RETURN_IF_ERROR(Str(o, at, "value", &u->value, u->from_property));
  if (u->from_property) CC_RETURN_IF_ERROR(CheckPropertyName(at + "value", u->value));
  return Status::Ok();
}

// actions.deduplicate: HQ's CaseDeduplicationActionDefinition fields.
Status ParseDeduplicate(const json::value& v, Rule* r) {
  const std::string at = "actions.deduplicate.";
  if (!v.is_object()) return Bad("actions.deduplicate", "must be an object");
  const auto& o = v.get_object();
  CC_RETURN_IF_ERROR(OnlyKeys(o, at, {"match_type", "case_properties", "include_closed"}));
  Deduplicate d;
  std::string match = "ALL";
  CC_RETURN_IF_ERROR(Str(o, at, "match_type", &match, false));
  if (match != "ALL" && match != "ANY") return Bad(at + "match_type", "must be ALL or ANY");
  d.any = match == "ANY";
  CC_RETURN_IF_ERROR(Bool(o, at, "include_closed", &d.include_closed));
  const json::value* p = o.if_contains("case_properties");
  if (!p || !p->is_array() || p->get_array().empty())
    return Bad(at + "case_properties", "is required (a list of property names)");
  for (const auto& x : p->get_array()) {
    if (!x.is_string() || x.get_string().empty())
      return Bad(at + "case_properties", "must hold property names");
    std::string name(x.get_string());
    if (name.starts_with("parent/"))
      return Bad(at + "case_properties", "names the case's own properties");
    if (std::find(d.properties.begin(), d.properties.end(), name) != d.properties.end())
      return Bad(at + "case_properties", fmt::format("\"{}\" is listed twice", name));
    d.properties.push_back(std::move(name));
  }
  r->deduplicate = std::move(d);
  return Status::Ok();
}

Status ParseActions(const json::object& o, Rule* r) {
  const json::value* a = o.if_contains("actions");
  if (!a || !a->is_object()) return Bad("actions", "is required (an object)");
  const auto& ao = a->get_object();
  CC_RETURN_IF_ERROR(OnlyKeys(ao, "actions.", {"update", "close_case", "deduplicate"}));
  CC_RETURN_IF_ERROR(Bool(ao, "actions.", "close_case", &r->close_case));
  if (const json::value* d = ao.if_contains("deduplicate"); d && !d->is_null())
    CC_RETURN_IF_ERROR(ParseDeduplicate(*d, r));
  if (const json::value* u = ao.if_contains("update"); u && !u->is_null()) {
    if (!u->is_array()) return Bad("actions.update", "must be a list");
    for (size_t i = 0; i < u->get_array().size(); ++i) {
      Update up;
      CC_RETURN_IF_ERROR(
          ParseUpdate(u->get_array()[i], fmt::format("actions.update[{}].", i), &up));
      r->updates.push_back(std::move(up));
    }
  }
  if (r->updates.empty() && !r->close_case)
    return Bad("actions", "needs \"update\" or \"close_case\"");
  if (r->deduplicate) {
    if (r->close_case)
      return Bad("actions.close_case",
                 "a deduplicate rule updates its duplicates, not closes them");
    for (const auto& u : r->updates) {
      const auto& props = r->deduplicate->properties;
      if (std::find(props.begin(), props.end(), u.name) != props.end())
        return Bad("actions.update",
                   fmt::format("\"{}\" is a property the duplicates are matched on", u.name));
    }
  }
  return Status::Ok();
}

Status ParseRuleFields(const json::object& o, Rule* r) {
  CC_RETURN_IF_ERROR(OnlyKeys(
      o, "",
      {"name", "domain", "case_type", "criteria_operator", "criteria", "server_modified_boundary",
       "case_status", "actions", "schedule", "time_zone", "run_on_change", "active"}));
  CC_RETURN_IF_ERROR(Str(o, "", "name", &r->name, true));
  for (char ch : r->name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
      return Bad("name", "use letters, digits, '-', '_' and '.'");
  CC_RETURN_IF_ERROR(Str(o, "", "domain", &r->domain, true));
  CC_RETURN_IF_ERROR(Str(o, "", "case_type", &r->case_type, true));
  std::string op = "ALL", status = "open";
  CC_RETURN_IF_ERROR(Str(o, "", "criteria_operator", &op, false));
  if (op != "ALL" && op != "ANY") return Bad("criteria_operator", "must be ALL or ANY");
  r->any = op == "ANY";
  CC_RETURN_IF_ERROR(Str(o, "", "case_status", &status, false));
  if (status == "open")
    r->case_status = Rule::CaseStatus::kOpen;
  else if (status == "closed")
    r->case_status = Rule::CaseStatus::kClosed;
  else if (status == "any")
    r->case_status = Rule::CaseStatus::kAny;
  else
    return Bad("case_status", "must be open, closed or any");
  if (const json::value* b = o.if_contains("server_modified_boundary"); b && !b->is_null()) {
    if (!b->is_int64() || b->get_int64() < 0)
      return Bad("server_modified_boundary", "must be a whole number of days (>= 0) or null");
    r->modified_days = b->get_int64();
  }
  CC_RETURN_IF_ERROR(Str(o, "", "schedule", &r->cron, false));
  CC_RETURN_IF_ERROR(Str(o, "", "time_zone", &r->time_zone, false));
  if (Status s = CheckSchedule(r->cron, "UTC"); !s.ok()) return Bad("schedule", s.message());
  if (Status s = CheckSchedule(r->cron, r->time_zone); !s.ok())
    return Bad("time_zone", s.message());
  CC_RETURN_IF_ERROR(Bool(o, "", "run_on_change", &r->run_on_change));
  CC_RETURN_IF_ERROR(Bool(o, "", "active", &r->active));
  return Status::Ok();
}

// A case field or dynamic property by name ("" when absent).
std::string_view Prop(const CaseRecord& c, std::string_view name) {
  if (name == "case_name" || name == "name") return c.name;
  if (name == "owner_id") return c.owner_id;
  if (name == "external_id") return c.external_id;
  if (name == "case_type" || name == "type") return c.type;
  if (name == "case_id") return c.case_id;
  auto it = c.properties.find(std::string(name));
  return it == c.properties.end() ? std::string_view() : std::string_view(it->second);
}

// A property of the case or ("parent/x") of its parent; nullopt: no parent to read.
std::optional<std::string_view> Lookup(const CaseRecord& c, const CaseRecord* parent,
                                       std::string_view name) {
  if (name.starts_with("parent/")) {
    if (!parent) return std::nullopt;
    return Prop(*parent, name.substr(7));
  }
  return Prop(c, name);
}

// Whether location is the criterion's location or, with include_child_locations, under it
// (SQLLocation.descendants_include_location: itself included).
bool InLocation(const Criterion& k, const std::string& location, const RuleLocations& locs) {
  if (!k.include_child_locations) return location == k.location_id;
  if (!locs.parent_of.count(k.location_id)) return false;  // HQ: no such location, no match
  std::string at = location;
  for (size_t hops = 0; !at.empty() && hops <= locs.parent_of.size(); ++hops) {
    if (at == k.location_id) return true;
    auto it = locs.parent_of.find(at);
    if (it == locs.parent_of.end()) return false;  // not a location of this domain
    at = it->second;
  }
  return false;
}

// LocationFilterDefinition.matches: the owner is the location, or a user whose primary
// location is.
bool CheckLocation(const Criterion& k, const CaseRecord& c, const RuleLocations* locs) {
  if (c.owner_id.empty() || !locs) return false;
  if (InLocation(k, c.owner_id, *locs)) return true;
  auto u = locs->user_location.find(c.owner_id);
  return u != locs->user_location.end() && !u->second.empty() && InLocation(k, u->second, *locs);
}

// UCRFilterDefinition.matches: the filter on case.to_json(). A filter that cannot be evaluated
// on this case (a type error HQ would raise) does not match.
bool CheckUcr(const Criterion& k, const CaseRecord& c, Engine* engine) {
  const json::value doc(pillows::ucr::CaseDocument(c));
  auto pass = k.ucr_filter->Test(doc, engine, c.domain);
  return pass.ok() && *pass;
}

bool CheckCriterion(const Criterion& k, const CaseRecord& c, const CaseRecord* parent,
                    int64_t today, const RuleLocations* locs, Engine* engine) {
  if (k.closed_parent) return parent && parent->closed;  // ClosedParentDefinition.matches
  if (!k.location_id.empty()) return CheckLocation(k, c, locs);
  if (k.ucr_filter) return CheckUcr(k, c, engine);
  auto v = Lookup(c, parent, k.property_name);
  if (!v) return false;  // a parent/ criterion on a case without a parent
  switch (k.match) {
    case Match::kEqual:
      return *v == k.value;
    case Match::kNotEqual:
      return *v != k.value;
    case Match::kHasValue:
      return !v->empty();
    case Match::kHasNoValue:
      return v->empty();
    case Match::kRegex:
      return !v->empty() && std::regex_search(v->begin(), v->end(), *k.regex);
    case Match::kDays:
    case Match::kDaysBefore: {
      auto day = DayOf(*v);
      if (!day) return false;
      return k.match == Match::kDays ? today >= *day + k.days : today < *day + k.days;
    }
  }
  return false;
}

}  // namespace

bool Rule::NeedsParent() const {
  for (const auto& c : criteria)
    if (c.closed_parent || c.property_name.starts_with("parent/")) return true;
  for (const auto& u : updates)
    if (u.name.starts_with("parent/") || (u.from_property && u.value.starts_with("parent/")))
      return true;
  return false;
}

bool Rule::NeedsLocations() const {
  for (const auto& c : criteria)
    if (!c.location_id.empty()) return true;
  return false;
}

Result<Rule> ParseRule(std::string_view json_text) {
  boost::system::error_code ec;
  json::value v = json::parse(json_text, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("a rule must be a JSON object");
  const json::object& o = v.get_object();
  Rule r;
  CC_RETURN_IF_ERROR(ParseRuleFields(o, &r));
  if (const json::value* c = o.if_contains("criteria"); c && !c->is_null()) {
    if (!c->is_array()) return Bad("criteria", "must be a list");
    for (size_t i = 0; i < c->get_array().size(); ++i) {
      Criterion k;
      CC_RETURN_IF_ERROR(ParseCriterion(c->get_array()[i], fmt::format("criteria[{}].", i), &k));
      r.criteria.push_back(std::move(k));
    }
  }
  CC_RETURN_IF_ERROR(ParseActions(o, &r));
  if (r.deduplicate) {  // HQ: include_closed says which cases are compared
    if (o.contains("case_status"))
      return Bad("case_status", "a deduplicate rule takes actions.deduplicate.include_closed");
    r.case_status =
        r.deduplicate->include_closed ? Rule::CaseStatus::kAny : Rule::CaseStatus::kOpen;
  }
  r.json = json::serialize(v);
  return r;
}

Result<int64_t> LocalDay(int64_t micros, const std::string& time_zone) {
  try {
    const date::time_zone* tz = date::locate_zone(time_zone);
    auto t = date::sys_time<std::chrono::microseconds>(std::chrono::microseconds(micros));
    auto local = tz->to_local(t);
    return date::floor<date::days>(local).time_since_epoch().count();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(fmt::format("time_zone: {}", e.what()));
  }
}

bool Matches(const Rule& r, const CaseRecord& c, const CaseRecord* parent, int64_t now,
             int64_t today, const RuleLocations* locations, Engine* engine) {
  if (c.deleted || c.type != r.case_type || c.domain != r.domain) return false;
  if (r.case_status == Rule::CaseStatus::kOpen && c.closed) return false;
  if (r.case_status == Rule::CaseStatus::kClosed && !c.closed) return false;
  // HQ: the server-modified boundary is one more result, combined by the criteria operator.
  std::vector<bool> results;
  results.reserve(r.criteria.size() + 1);
  if (r.modified_days)
    results.push_back(c.server_modified_on < now - *r.modified_days * 86'400'000'000LL);
  for (const auto& k : r.criteria)
    results.push_back(CheckCriterion(k, c, parent, today, locations, engine));
  if (results.empty()) return true;
  if (r.any) return std::find(results.begin(), results.end(), true) != results.end();
  return std::find(results.begin(), results.end(), false) == results.end();
}

std::optional<std::vector<std::string>> DedupValues(const Rule& r, const CaseRecord& c) {
  std::vector<std::string> out;
  bool any = false;
  for (const auto& p : r.deduplicate->properties) {
    out.emplace_back(Prop(c, p));
    any = any || !out.back().empty();
  }
  if (!any) return std::nullopt;
  return out;
}

Effect PlanEffect(const Rule& r, const CaseRecord& c, const CaseRecord* parent) {
  Effect e;
  e.case_id = c.case_id;
  for (const auto& u : r.updates) {
    std::string value = u.value;
    if (u.from_property) {
      auto v = Lookup(c, parent, u.value);
      if (!v) continue;  // the source is the parent's and there is none
      value = std::string(*v);
    }
    if (u.name.starts_with("parent/")) {
      if (!parent) continue;  // HQ: nothing to update
      std::string_view name = std::string_view(u.name).substr(7);
      if (Prop(*parent, name) != value) e.parent_update[std::string(name)] = value;
    } else if (Prop(c, u.name) != value) {
      e.update[u.name] = value;
    }
  }
  if (!e.parent_update.empty()) e.parent_id = parent->case_id;
  e.close = r.close_case && !c.closed;
  return e;
}

std::string Effect::ToJson(std::string_view form_id) const {
  json::object u, pu;
  for (const auto& [k, v] : update) u[k] = v;
  for (const auto& [k, v] : parent_update) pu[k] = v;
  json::object o{{"case_id", case_id}, {"update", std::move(u)}, {"close", close}};
  if (!duplicates.empty()) {
    json::array d;
    for (const auto& id : duplicates) d.emplace_back(id);
    o["duplicates"] = std::move(d);
  }
  if (!parent_id.empty()) {
    o["parent_id"] = parent_id;
    o["parent_update"] = std::move(pu);
  }
  if (!form_id.empty()) o["form_id"] = form_id;
  return json::serialize(o);
}

std::string ScheduleName(std::string_view domain, std::string_view name) {
  return fmt::format("rule:{}:{}", domain, name);
}

Schedule ToSchedule(const Rule& r) {
  Schedule s;
  s.name = ScheduleName(r.domain, r.name);
  s.cron = r.cron;
  s.time_zone = r.time_zone;
  s.task.type = "rule.run";
  s.task.payload = r.json;
  s.task.domain = r.domain;
  s.task.queue = "default";
  s.missed = Schedule::Missed::kOnce;
  s.enabled = r.active;
  return s;
}

}  // namespace commcare::rules
