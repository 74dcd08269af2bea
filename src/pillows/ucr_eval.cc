// UCR evaluation: value conversion and comparison, case and form documents, a doc's rows.
#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "pillows/ucr_internal.h"
#include "util/codec.h"
#include "util/time.h"
#include "xform/xml2json.h"

namespace commcare::pillows::ucr {
namespace internal {

// ---- values ----

std::string AsString(const json::value& v) {
  if (v.is_string()) return std::string(v.get_string());
  if (v.is_int64()) return std::to_string(v.get_int64());
  if (v.is_uint64()) return std::to_string(v.get_uint64());
  if (v.is_double()) {
    double d = v.get_double();
    if (d == std::floor(d) && std::fabs(d) < 1e15) return std::to_string(static_cast<int64_t>(d));
    return fmt::format("{}", d);
  }
  if (v.is_bool()) return v.get_bool() ? "True" : "False";  // Python's str(bool)
  if (v.is_null()) return "";
  return json::serialize(v);
}

bool AsNumber(const json::value& v, double* out) {
  if (v.is_int64()) return *out = static_cast<double>(v.get_int64()), true;
  if (v.is_uint64()) return *out = static_cast<double>(v.get_uint64()), true;
  if (v.is_double()) return *out = v.get_double(), true;
  if (v.is_bool()) return *out = v.get_bool() ? 1 : 0, true;
  if (!v.is_string()) return false;
  std::string_view s = v.get_string();
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (s.empty() || s.size() > 64) return false;
  if (s.front() == '+') s.remove_prefix(1);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && std::isfinite(*out);
}

// Days since the epoch of a date or date-time value.
bool AsDays(const json::value& v, int64_t* days) {
  if (!v.is_string()) return false;
  int64_t us;
  if (!util::ParseIsoTime(v.get_string(), &us)) return false;
  *days = us >= 0 ? us / 86'400'000'000 : -((-us + 86'399'999'999) / 86'400'000'000);
  return true;
}
int DaysInMonth(int y, int m) {
  static const int kLen[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return kLen[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
}
std::string DateOf(int64_t days) {
  // Not through FormatIsoTime, whose 0 is "no time": day 0 is 1970-01-01.
  const std::chrono::year_month_day d{std::chrono::sys_days{std::chrono::days{days}}};
  return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(d.year()),
                     static_cast<unsigned>(d.month()), static_cast<unsigned>(d.day()));
}

namespace {
bool IsNumeric(const json::value& v) { return v.is_number() || v.is_bool(); }
double Num(const json::value& v) {
  double d = 0;
  AsNumber(v, &d);
  return d;
}
}  // namespace

// Python's ==: numbers (bool among them) by value, strings by text, lists and dicts item by
// item, None only to None; nothing across types (so "21" != 21).
bool Equal(const json::value& a, const json::value& b) {
  if (IsNumeric(a) && IsNumeric(b)) return Num(a) == Num(b);
  if (a.kind() != b.kind()) return false;
  if (a.is_array()) {
    const auto &x = a.get_array(), &y = b.get_array();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!Equal(x[i], y[i])) return false;
    return true;
  }
  if (a.is_object()) {
    const auto &x = a.get_object(), &y = b.get_object();
    if (x.size() != y.size()) return false;
    for (const auto& kv : x) {
      const json::value* w = y.if_contains(kv.key());
      if (!w || !Equal(kv.value(), *w)) return false;
    }
    return true;
  }
  return a == b;  // strings, null
}
// Python 3's ordering: numbers with numbers, strings with strings (by code point, which UTF-8
// byte order keeps), lists item by item; nullopt where Python raises TypeError (None, mixed).
std::optional<int> Compare(const json::value& a, const json::value& b) {
  if (IsNumeric(a) && IsNumeric(b)) {
    double x = Num(a), y = Num(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = std::string_view(a.get_string()).compare(std::string_view(b.get_string()));
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_array() && b.is_array()) {
    const auto &x = a.get_array(), &y = b.get_array();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (Equal(x[i], y[i])) continue;
      return Compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  return std::nullopt;
}

bool Truthy(const json::value& v) {
  if (v.is_null()) return false;
  if (IsNumeric(v)) return Num(v) != 0;
  if (v.is_string()) return !v.get_string().empty();
  if (v.is_array()) return !v.get_array().empty();
  return !v.get_object().empty();
}

// A value as a column of the given datatype (null when it does not convert).
json::value Coerce(const json::value& v, const std::string& datatype) {
  if (v.is_null() || datatype.empty()) return v;
  double d;
  int64_t days, us;
  if (datatype == "string") return json::value(AsString(v));
  if (datatype == "integer" || datatype == "small_integer") {
    if (AsNumber(v, &d)) return json::value(static_cast<int64_t>(d));
    return nullptr;
  }
  if (datatype == "decimal") return AsNumber(v, &d) ? json::value(d) : json::value(nullptr);
  if (datatype == "boolean") {
    if (v.is_bool()) return json::value(v.get_bool() ? 1 : 0);
    if (AsNumber(v, &d)) return json::value(d != 0 ? 1 : 0);
    std::string s = AsString(v);
    if (s == "true" || s == "True") return json::value(1);
    if (s == "false" || s == "False") return json::value(0);
    return nullptr;
  }
  if (datatype == "date")
    return AsDays(v, &days) ? json::value(DateOf(days)) : json::value(nullptr);
  if (datatype == "datetime") {
    if (v.is_string() && util::ParseIsoTime(v.get_string(), &us))
      return json::value(util::FormatIsoTime(us));
    return nullptr;
  }
  if (datatype == "array") return json::value(v.is_array() ? json::serialize(v) : AsString(v));
  return v;
}

const json::value& Get(const json::value& item, std::string_view key) {
  static const json::value kNull;
  if (!item.is_object()) return kNull;
  const json::value* p = item.get_object().if_contains(key);
  return p ? *p : kNull;
}

}  // namespace internal

using internal::AsString;

namespace {
// CommCareCase.xform_ids: the forms in the case's history, in order, each once, but for those
// whose transactions are revoked (an archived form: HQ's xform_ids skips revoked transactions,
// as forwarding's case_json does).
Result<json::value> XformIds(Engine& engine, const std::string& domain, const json::value& doc) {
  json::array ids;
  auto history = engine.CaseHistory(domain, AsString(internal::Get(doc, "_id")));
  if (!history.ok()) {
    if (history.status().IsNotFound()) return json::value(std::move(ids));
    return history.status();
  }
  std::set<std::string> seen;
  for (const auto& t : *history)
    if (!t.form_id.empty() && !t.revoked && seen.insert(t.form_id).second)
      ids.emplace_back(t.form_id);
  return json::value(std::move(ids));
}
}  // namespace

using internal::Coerce;
using internal::Get;

Result<std::vector<std::vector<json::value>>> DataSource::Rows(const json::value& doc,
                                                               Engine* engine,
                                                               Directory* directory) const {
  std::vector<std::vector<json::value>> rows;
  EvalContext ctx;
  ctx.root = &doc;
  ctx.engine = engine;
  ctx.directory = directory;
  ctx.domain = domain;
  ctx.source = this;
  if (deactivated || AsString(Get(doc, "domain")) != domain ||
      AsString(Get(doc, "doc_type")) != referenced_doc_type)
    return rows;
  json::value with_ids;  // the case with HQ's xform_ids, for a config that reads them
  if (needs_xform_ids && engine && doc.is_object() && !doc.get_object().contains("xform_ids")) {
    with_ids = doc;
    CC_ASSIGN_OR_RETURN(with_ids.as_object()["xform_ids"], XformIds(*engine, domain, doc));
    ctx.root = &with_ids;
  }
  const json::value& doc_in = *ctx.root;
  if (filter) {
    CC_ASSIGN_OR_RETURN(bool pass, filter->Test(doc_in, ctx));
    if (!pass) return rows;
  }
  std::vector<json::value> items;
  if (base_item) {
    CC_ASSIGN_OR_RETURN(json::value b, base_item->Eval(doc_in, ctx));
    if (b.is_array())
      for (auto& x : b.get_array()) items.push_back(std::move(x));
    else if (!b.is_null())
      items.push_back(std::move(b));
  } else {
    items.push_back(doc_in);
  }
  const std::string now = util::FormatIsoTime(util::NowMicros());
  for (size_t it = 0; it < items.size(); ++it) {
    ctx.iteration = static_cast<int64_t>(it);
    std::vector<json::value> row;
    row.push_back(Get(doc, "_id"));
    row.push_back(json::value(now));
    if (base_item) row.push_back(json::value(static_cast<int64_t>(it)));
    for (const auto& ind : indicators) {
      if (ind.kind == "boolean") {
        CC_ASSIGN_OR_RETURN(bool t, ind.filter->Test(items[it], ctx));
        row.push_back(json::value(t ? 1 : 0));
      } else if (ind.kind == "expression" || ind.kind == "raw") {
        CC_ASSIGN_OR_RETURN(json::value v, ind.expr->Eval(items[it], ctx));
        row.push_back(Coerce(v, ind.datatype));
      } else if (ind.kind == "choice_list") {
        CC_ASSIGN_OR_RETURN(json::value v, ind.expr->Eval(items[it], ctx));
        std::set<std::string> picked;
        std::string s = AsString(v);
        if (ind.multiple) {
          size_t a = 0;
          while (a <= s.size()) {
            size_t b = s.find(' ', a);
            if (b == std::string::npos) b = s.size();
            if (b > a) picked.insert(s.substr(a, b - a));
            a = b + 1;
          }
        } else {
          picked.insert(s);
        }
        for (const auto& ch : ind.choices) row.push_back(json::value(picked.count(ch) ? 1 : 0));
      } else {  // ledger_balances
        CC_ASSIGN_OR_RETURN(json::value id, ind.expr->Eval(items[it], ctx));
        std::map<std::string, int64_t> bal;
        if (id.is_string() && engine) {
          auto vals = engine->GetLedger(domain, id.get_string());
          if (vals.ok())
            for (const auto& lv : *vals)
              if (lv.section_id == ind.ledger_section)
                bal[lv.entry_id] = static_cast<int64_t>(lv.balance);
        }
        for (const auto& code : ind.choices) {
          const int64_t v = bal[code];
          // Python's date + timedelta raises OverflowError outside years 1 to 9999.
          if (ind.due_list && (v < -719'162 || v > 2'932'896))
            return Status::InvalidArgument(
                fmt::format("due_list_date {}: a balance of {} days is past the year 9999 or "
                            "before the year 1",
                            ind.column_id, v));
          row.push_back(ind.due_list ? json::value(internal::DateOf(v)) : json::value(v));
        }
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

json::object CaseDocument(const CaseRecord& c) {
  json::object o;
  for (const auto& [k, v] : c.properties) o[k] = v;  // fixed fields below win on a clash
  auto t = [](int64_t us) { return us ? json::value(util::FormatIsoTime(us)) : json::value(); };
  o["_id"] = c.case_id;
  o["case_id"] = c.case_id;
  o["doc_type"] = c.deleted ? "CommCareCase-Deleted" : "CommCareCase";
  o["domain"] = c.domain;
  o["type"] = c.type;
  o["name"] = c.name;
  o["owner_id"] = c.owner_id;
  o["user_id"] = c.modified_by;
  o["opened_by"] = c.opened_by;
  o["closed_by"] = c.closed_by;
  o["external_id"] = c.external_id;
  o["location_id"] = c.location_id;
  o["closed"] = c.closed;
  o["opened_on"] = t(c.opened_on);
  o["modified_on"] = t(c.modified_on);
  o["server_modified_on"] = t(c.server_modified_on);
  o["closed_on"] = t(c.closed_on);
  o["modified_by"] = c.modified_by;
  o["deleted"] = c.deleted;
  // serializers.py CommCareCaseIndexSQLSerializer: each index also names its own case.
  json::array indices = codec::EncodeIndices(c.indices);
  for (auto& i : indices) i.as_object()["case_id"] = c.case_id;
  o["indices"] = std::move(indices);
  return o;
}

Result<json::object> FormDocument(const FormRecord& f, std::string_view xml) {
  CC_ASSIGN_OR_RETURN(json::object form, xform::FormXmlToJson(xml));
  json::object o;
  o["_id"] = f.form_id;
  const char* doc_type = "XFormInstance";
  switch (f.state) {
    case FormState::kNormal:
      break;
    case FormState::kArchived:
      doc_type = "XFormArchived";
      break;
    case FormState::kDeprecated:
      doc_type = "XFormDeprecated";
      break;
    case FormState::kDuplicate:
      doc_type = "XFormDuplicate";
      break;
    case FormState::kError:
      doc_type = "XFormError";
      break;
    default:
      doc_type = "XFormInstance-Other";
  }
  o["doc_type"] = doc_type;
  o["domain"] = f.domain;
  o["xmlns"] = f.xmlns;
  o["app_id"] = f.app_id;
  o["user_id"] = f.user_id;
  auto t = [](int64_t us) { return us ? json::value(util::FormatIsoTime(us)) : json::value(); };
  o["received_on"] = t(f.received_on);
  o["server_modified_on"] = t(f.server_modified_on ? f.server_modified_on : f.received_on);
  o["edited_on"] = t(f.edited_on);
  o["build_id"] = f.build_id;
  o["orig_id"] = f.orig_id.empty() ? json::value() : json::value(f.orig_id);
  o["deprecated_form_id"] =
      f.deprecated_form_id.empty() ? json::value() : json::value(f.deprecated_form_id);
  o["problem"] = f.problem.empty() ? json::value() : json::value(f.problem);
  o["last_sync_token"] = f.last_sync_token.empty() ? json::value() : json::value(f.last_sync_token);
  json::value form_value(std::move(form));
  xform::AdjustDatetimes(form_value);  // HQ stores the form JSON with UTC date-times
  o["form"] = std::move(form_value);
  return o;
}

}  // namespace commcare::pillows::ucr
