// UCR evaluation: value conversion and comparison, case and form documents, a doc's rows.
#include <fmt/format.h>

#include <charconv>
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
  return util::FormatIsoTime(days * 86'400'000'000).substr(0, 10);
}

// Loose equality: numbers (or numeric strings beside numbers) numerically, else as values.
bool Equal(const json::value& a, const json::value& b) {
  if (a.is_null() || b.is_null()) return a.is_null() && b.is_null();
  double x, y;
  bool an = a.is_number() || a.is_bool(), bn = b.is_number() || b.is_bool();
  if ((an || bn) && AsNumber(a, &x) && AsNumber(b, &y)) return x == y;
  if (a.is_string() && b.is_string()) return a.get_string() == b.get_string();
  return a == b;
}
// Ordering: numeric if both are numbers, else text; nullopt if either is null.
std::optional<int> Compare(const json::value& a, const json::value& b) {
  if (a.is_null() || b.is_null()) return std::nullopt;
  double x, y;
  if (AsNumber(a, &x) && AsNumber(b, &y)) return x < y ? -1 : x > y ? 1 : 0;
  std::string s = AsString(a), t = AsString(b);
  return s < t ? -1 : s > t ? 1 : 0;
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
using internal::Coerce;
using internal::Get;

Result<std::vector<std::vector<json::value>>> DataSource::Rows(const json::value& doc,
                                                               Engine* engine) const {
  std::vector<std::vector<json::value>> rows;
  EvalContext ctx;
  ctx.root = &doc;
  ctx.engine = engine;
  ctx.domain = domain;
  ctx.source = this;
  if (AsString(Get(doc, "domain")) != domain ||
      AsString(Get(doc, "doc_type")) != referenced_doc_type)
    return rows;
  if (filter) {
    CC_ASSIGN_OR_RETURN(bool pass, filter->Test(doc, ctx));
    if (!pass) return rows;
  }
  std::vector<json::value> items;
  if (base_item) {
    CC_ASSIGN_OR_RETURN(json::value b, base_item->Eval(doc, ctx));
    if (b.is_array())
      for (auto& x : b.get_array()) items.push_back(std::move(x));
    else if (!b.is_null())
      items.push_back(std::move(b));
  } else {
    items.push_back(doc);
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
        for (const auto& code : ind.choices) row.push_back(json::value(bal[code]));
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
  o["indices"] = codec::EncodeIndices(c.indices);
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
  o["received_on"] = util::FormatIsoTime(f.received_on);
  o["form"] = std::move(form);
  return o;
}

}  // namespace commcare::pillows::ucr
