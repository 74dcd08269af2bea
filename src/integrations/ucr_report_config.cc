#include "integrations/ucr_report_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <set>

#include "integrations/reports.h"

namespace commcare::reports {
namespace {

namespace json = boost::json;

std::string_view Key(const json::key_value_pair& kv) {
  return std::string_view(kv.key().data(), kv.key().size());
}

Status Only(const json::object& o, std::initializer_list<std::string_view> keys,
            const std::string& where) {
  for (const auto& kv : o)
    if (std::find(keys.begin(), keys.end(), Key(kv)) == keys.end())
      return Status::InvalidArgument(fmt::format("{}{}: unknown key", where, Key(kv)));
  return Status::Ok();
}

Status Str(const json::object& o, const char* k, std::string* out, bool required,
           const std::string& where) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null())
    return required ? Status::InvalidArgument(fmt::format("{}{}: is required", where, k))
                    : Status::Ok();
  if (!v->is_string())
    return Status::InvalidArgument(fmt::format("{}{}: must be a string", where, k));
  *out = std::string(v->get_string());
  return Status::Ok();
}

// The items of a list at k, each an object (absent: none).
Result<std::vector<const json::object*>> Objects(const json::object& o, const char* k) {
  std::vector<const json::object*> out;
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null()) return out;
  if (!v->is_array()) return Status::InvalidArgument(fmt::format("{}: must be a list", k));
  for (const auto& x : v->get_array()) {
    if (!x.is_object())
      return Status::InvalidArgument(fmt::format("{}[{}]: must be an object", k, out.size()));
    out.push_back(&x.get_object());
  }
  return out;
}

Result<UcrReportColumn> ParseColumn(const json::object& o, const std::string& at) {
  CC_RETURN_IF_ERROR(Only(o,
                          {"type", "column_id", "field", "aggregation", "display", "description",
                           "format", "sortable", "max_expansion", "calculate_total", "visible"},
                          at));
  UcrReportColumn c;
  CC_RETURN_IF_ERROR(Str(o, "type", &c.type, false, at));
  if (c.type != "field" && c.type != "expanded")
    return Status::InvalidArgument(
        fmt::format("{}type: '{}' must be field or expanded", at, c.type));
  CC_RETURN_IF_ERROR(Str(o, "field", &c.field, true, at));
  CC_RETURN_IF_ERROR(Str(o, "column_id", &c.column_id, false, at));
  if (c.column_id.empty()) c.column_id = c.field;
  CC_RETURN_IF_ERROR(Str(o, "display", &c.display, false, at));
  CC_RETURN_IF_ERROR(Str(o, "aggregation", &c.aggregation, c.type == "field", at));
  static const std::set<std::string> kAggs = {"simple", "sum", "count", "count_unique",
                                              "avg",    "min", "max"};
  if (c.type == "field" && !kAggs.count(c.aggregation))
    return Status::InvalidArgument(
        fmt::format("{}aggregation: '{}' must be simple, sum, count, count_unique, avg, min or max",
                    at, c.aggregation));
  if (const json::value* m = o.if_contains("max_expansion")) {
    if (!m->is_int64() || m->get_int64() < 1 || m->get_int64() > 1000)
      return Status::InvalidArgument(at + "max_expansion: must be a whole number 1..1000");
    c.max_expansion = static_cast<int>(m->get_int64());
  }
  return c;
}

Result<UcrReportFilter> ParseFilter(const json::object& o, const std::string& at) {
  CC_RETURN_IF_ERROR(Only(o,
                          {"type", "slug", "field", "display", "datatype", "required", "show_all",
                           "choices", "compare_as_string"},
                          at));
  UcrReportFilter f;
  CC_RETURN_IF_ERROR(Str(o, "type", &f.type, true, at));
  if (f.type != "date" && f.type != "choice_list" && f.type != "numeric")
    return Status::InvalidArgument(
        fmt::format("{}type: '{}' must be date, choice_list or numeric", at, f.type));
  CC_RETURN_IF_ERROR(Str(o, "field", &f.field, true, at));
  CC_RETURN_IF_ERROR(Str(o, "slug", &f.slug, false, at));
  if (f.slug.empty()) f.slug = f.field;
  CC_RETURN_IF_ERROR(Str(o, "display", &f.display, false, at));
  return f;
}

// A cell as text: strings as they are, whole numbers without a fraction, null as "".
std::string Text(const json::value& v) {
  if (v.is_string()) return std::string(v.get_string());
  if (v.is_null()) return "";
  if (v.is_double()) {
    const double d = v.get_double();
    if (std::floor(d) == d && std::fabs(d) < 1e15) return fmt::format("{}", int64_t(d));
    return fmt::format("{}", d);
  }
  return json::serialize(v);
}

bool Number(const json::value& v, double* out) {
  if (v.is_int64() || v.is_uint64() || v.is_double()) return *out = v.to_number<double>(), true;
  if (!v.is_string() || v.get_string().empty()) return false;
  const std::string s(v.get_string());
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return *end == '\0';
}

// Nulls first, then numbers by value, then other values by their text.
bool Less(const json::value& a, const json::value& b) {
  if (a.is_null() || b.is_null()) return a.is_null() && !b.is_null();
  double x = 0, y = 0;
  const bool nx = (a.is_number()) && Number(a, &x), ny = (b.is_number()) && Number(b, &y);
  if (nx && ny) return x < y;
  if (nx != ny) return nx;
  return Text(a) < Text(b);
}

json::value Cell(const json::object& row, const std::string& field) {
  const json::value* v = row.if_contains(field);
  return v ? *v : json::value(nullptr);
}

json::value Aggregate(const std::string& agg, const std::vector<const json::object*>& rows,
                      const std::string& field) {
  if (agg == "simple") return rows.empty() ? json::value(nullptr) : Cell(*rows[0], field);
  std::vector<json::value> vals;
  for (const auto* r : rows)
    if (json::value v = Cell(*r, field); !v.is_null()) vals.push_back(std::move(v));
  if (agg == "count") return static_cast<int64_t>(vals.size());
  if (agg == "count_unique") {
    std::set<std::string> seen;
    for (const auto& v : vals) seen.insert(Text(v));
    return static_cast<int64_t>(seen.size());
  }
  if (agg == "min" || agg == "max") {
    if (vals.empty()) return nullptr;
    auto it = agg == "min" ? std::min_element(vals.begin(), vals.end(), Less)
                           : std::max_element(vals.begin(), vals.end(), Less);
    return *it;
  }
  double sum = 0, x = 0;
  int64_t n = 0;
  bool whole = true;
  for (const auto& v : vals)
    if (Number(v, &x)) sum += x, ++n, whole = whole && !v.is_double() && !v.is_string();
  if (n == 0) return nullptr;
  if (agg == "avg") return sum / double(n);
  return whole ? json::value(static_cast<int64_t>(sum)) : json::value(sum);
}

// Whether row passes filter f given the request's values; InvalidArgument for a bad value.
Result<bool> Passes(const UcrReportFilter& f, const json::object& row,
                    const std::multimap<std::string, std::string>& params) {
  auto one = [&](const std::string& k) {
    auto it = params.find(k);
    return it == params.end() ? std::string() : it->second;
  };
  const json::value v = Cell(row, f.field);
  if (f.type == "date") {
    const std::string start = one(f.slug + "-start"), end = one(f.slug + "-end");
    if (start.empty() && end.empty()) return true;
    const std::string d = Text(v).substr(0, 10);
    return !d.empty() && (start.empty() || d >= start) && (end.empty() || d <= end);
  }
  if (f.type == "choice_list") {
    auto [b, e] = params.equal_range(f.slug);
    if (b == e) return true;
    for (auto it = b; it != e; ++it)
      if (it->second == "_all" || it->second == Text(v)) return true;
    return false;
  }
  const std::string op = one(f.slug + "-operator"), operand = one(f.slug + "-operand");
  if (op.empty() && operand.empty()) return true;
  double want = 0, got = 0;
  if (!Number(json::value(operand), &want))
    return Status::InvalidArgument(
        fmt::format("{}-operand: '{}' is not a number", f.slug, operand));
  if (!Number(v, &got)) return false;
  if (op == "=") return got == want;
  if (op == "!=") return got != want;
  if (op == "<") return got < want;
  if (op == "<=") return got <= want;
  if (op == ">") return got > want;
  if (op == ">=") return got >= want;
  return Status::InvalidArgument(
      fmt::format("{}-operator: '{}' must be =, !=, <, <=, > or >=", f.slug, op));
}

Status CheckParams(const UcrReportConfiguration& c,
                   const std::multimap<std::string, std::string>& params,
                   const std::vector<std::string>& ignore) {
  std::set<std::string> known(ignore.begin(), ignore.end());
  for (const auto& f : c.filters) {
    if (f.type == "date") known.insert({f.slug + "-start", f.slug + "-end"});
    if (f.type == "choice_list") known.insert(f.slug);
    if (f.type == "numeric") known.insert({f.slug + "-operator", f.slug + "-operand"});
  }
  for (const auto& [k, v] : params)
    if (!known.count(k))
      return Status::InvalidArgument(fmt::format("'{}' is not a filter of this report", k));
  for (const auto& f : c.filters)
    for (const char* side : {"-start", "-end"})
      if (auto it = params.find(f.slug + side); f.type == "date" && it != params.end()) {
        const std::string& d = it->second;
        if (d.size() != 10 || d[4] != '-' || d[7] != '-' ||
            std::count_if(d.begin(), d.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) != 8)
          return Status::InvalidArgument(
              fmt::format("{}{}: '{}' is not a date (YYYY-MM-DD)", f.slug, side, d));
      }
  return Status::Ok();
}

}  // namespace

Result<UcrReportConfiguration> UcrReportConfiguration::FromJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return Status::InvalidArgument("report configuration: not a JSON object");
  const auto& o = v.get_object();
  CC_RETURN_IF_ERROR(Only(o,
                          {"config_id", "title", "description", "aggregation_columns", "filters",
                           "columns", "sort_expression", "domain", "_id", "doc_type", "visible",
                           "report_meta", "configured_charts"},
                          ""));
  UcrReportConfiguration c;
  CC_RETURN_IF_ERROR(Str(o, "config_id", &c.config_id, true, ""));
  CC_RETURN_IF_ERROR(Str(o, "title", &c.title, false, ""));
  CC_RETURN_IF_ERROR(Str(o, "description", &c.description, false, ""));
  if (const json::value* a = o.if_contains("aggregation_columns")) {
    if (!a->is_array()) return Status::InvalidArgument("aggregation_columns: must be a list");
    for (const auto& x : a->get_array()) {
      if (!x.is_string())
        return Status::InvalidArgument("aggregation_columns: must hold column names");
      c.aggregation_columns.emplace_back(x.get_string());
    }
  }
  CC_ASSIGN_OR_RETURN(auto cols, Objects(o, "columns"));
  if (cols.empty()) return Status::InvalidArgument("columns: at least one is required");
  std::set<std::string> ids;
  for (size_t i = 0; i < cols.size(); ++i) {
    CC_ASSIGN_OR_RETURN(auto col, ParseColumn(*cols[i], fmt::format("columns[{}].", i)));
    if (!ids.insert(col.column_id).second)
      return Status::InvalidArgument(
          fmt::format("columns[{}].column_id: '{}' is used twice", i, col.column_id));
    c.columns.push_back(std::move(col));
  }
  CC_ASSIGN_OR_RETURN(auto filters, Objects(o, "filters"));
  for (size_t i = 0; i < filters.size(); ++i) {
    CC_ASSIGN_OR_RETURN(auto f, ParseFilter(*filters[i], fmt::format("filters[{}].", i)));
    c.filters.push_back(std::move(f));
  }
  CC_ASSIGN_OR_RETURN(auto sort, Objects(o, "sort_expression"));
  for (size_t i = 0; i < sort.size(); ++i) {
    const std::string at = fmt::format("sort_expression[{}].", i);
    CC_RETURN_IF_ERROR(Only(*sort[i], {"field", "order"}, at));
    std::string field, order = "ASC";
    CC_RETURN_IF_ERROR(Str(*sort[i], "field", &field, true, at));
    CC_RETURN_IF_ERROR(Str(*sort[i], "order", &order, false, at));
    if (order != "ASC" && order != "DESC")
      return Status::InvalidArgument(at + "order: must be ASC or DESC");
    c.sort.emplace_back(field, order == "DESC");
  }
  return c;
}

Result<UcrReportData> RunUcrReport(const UcrReportConfiguration& c,
                                   const std::vector<std::string>& rows,
                                   const std::multimap<std::string, std::string>& params,
                                   const std::vector<std::string>& ignore) {
  CC_RETURN_IF_ERROR(CheckParams(c, params, ignore));
  std::vector<json::object> kept;
  for (const auto& text : rows) {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object()) return Status::DataLoss("a UCR row is not a JSON object");
    bool pass = true;
    for (const auto& f : c.filters) {
      CC_ASSIGN_OR_RETURN(pass, Passes(f, v.get_object(), params));
      if (!pass) break;
    }
    if (pass) kept.push_back(std::move(v.get_object()));
  }
  // Groups: one per distinct aggregation_columns values, or one per row.
  const auto& agg = c.aggregation_columns;
  const bool grouped = !agg.empty() && !(agg.size() == 1 && agg[0] == "doc_id");
  struct Group {
    std::vector<json::value> key;
    std::vector<const json::object*> rows;
  };
  std::vector<Group> groups;
  std::map<std::string, size_t> index;
  for (const auto& row : kept) {
    Group g;
    for (const auto& a : agg) g.key.push_back(Cell(row, a));
    size_t at = groups.size();
    if (grouped) at = index.emplace(json::serialize(json::value_from(g.key)), at).first->second;
    if (at == groups.size()) groups.push_back(std::move(g));
    groups[at].rows.push_back(&row);
  }
  if (grouped)  // HQ orders by the aggregation columns
    std::stable_sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) {
      return std::lexicographical_compare(a.key.begin(), a.key.end(), b.key.begin(), b.key.end(),
                                          Less);
    });
  UcrReportData out;
  // Expanded columns: one per distinct value of the field (sorted), at most max_expansion.
  std::vector<std::vector<std::string>> expansions(c.columns.size());
  for (size_t i = 0; i < c.columns.size(); ++i) {
    const auto& col = c.columns[i];
    const std::string header = col.display.empty() ? col.column_id : col.display;
    if (col.type == "field") {
      out.columns.push_back({col.column_id, header});
      continue;
    }
    std::set<std::string> values;
    for (const auto& row : kept)
      if (json::value v = Cell(row, col.field); !v.is_null()) values.insert(Text(v));
    for (const auto& v : values) {
      if (expansions[i].size() == static_cast<size_t>(col.max_expansion)) break;
      out.columns.push_back(
          {fmt::format("{}-{}", col.column_id, expansions[i].size()), header + "-" + v});
      expansions[i].push_back(v);
    }
  }
  for (const auto& g : groups) {
    json::object row;
    for (size_t i = 0; i < c.columns.size(); ++i) {
      const auto& col = c.columns[i];
      if (col.type == "field") {
        row[col.column_id] =
            grouped ? Aggregate(col.aggregation, g.rows, col.field) : Cell(*g.rows[0], col.field);
        continue;
      }
      for (size_t e = 0; e < expansions[i].size(); ++e) {
        int64_t n = 0;
        for (const auto* r : g.rows) n += Text(Cell(*r, col.field)) == expansions[i][e];
        row[fmt::format("{}-{}", col.column_id, e)] = n;
      }
    }
    out.rows.push_back(std::move(row));
  }
  for (const auto& [field, desc] : c.sort)
    if (std::none_of(out.columns.begin(), out.columns.end(),
                     [&](const auto& col) { return col.slug == field; }))
      return Status::InvalidArgument(
          fmt::format("sort_expression: '{}' is not a column of the report", field));
  if (!c.sort.empty())
    std::stable_sort(out.rows.begin(), out.rows.end(), [&](const auto& a, const auto& b) {
      for (const auto& [field, desc] : c.sort) {
        const json::value x = Cell(a, field), y = Cell(b, field);
        if (Less(x, y)) return !desc;
        if (Less(y, x)) return desc;
      }
      return false;
    });
  return out;
}

std::string UcrReportData::ToJson(size_t offset, size_t limit, const std::string& link) const {
  json::array cols, data;
  for (const auto& c : columns)
    cols.push_back(json::object{{"slug", c.slug}, {"header", c.header}});
  for (size_t i = offset; i < rows.size() && i < offset + limit; ++i) data.push_back(rows[i]);
  const bool more = offset + limit < rows.size();
  return json::serialize(json::object{
      {"columns", cols},
      {"data", data},
      {"total_records", rows.size()},
      {"next_page", more ? fmt::format("{}offset={}&limit={}", link, offset + limit, limit) : ""}});
}

std::string UcrReportData::ToCsv() const {
  std::string out;
  auto line = [&](auto&& cell, size_t n) {
    for (size_t i = 0; i < n; ++i) out += (i ? "," : "") + CsvField(cell(i));
    out += "\r\n";
  };
  line([&](size_t i) { return columns[i].header; }, columns.size());
  for (const auto& r : rows)
    line([&](size_t i) { return Text(Cell(r, columns[i].slug)); }, columns.size());
  return out;
}

}  // namespace commcare::reports
