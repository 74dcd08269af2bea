// UCR: compiling data source configs, evaluating them, and the ucr pillow.
#include "pillows/ucr.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <unordered_map>

#include "util/codec.h"
#include "util/hash.h"
#include "util/read_pool.h"
#include "util/sqlite_conn.h"
#include "util/time.h"
#include "xform/xml2json.h"

namespace commcare::pillows::ucr {
namespace {

using util::Bind;
using util::Col;

constexpr int kMaxDepth = 32;

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

// ---- the compiler ----

struct Compiler {
  DataSource* ds;
  std::set<std::string> expr_refs, filter_refs;  // named references to check at the end
};

Status Bad(const std::string& path, const std::string& what) {
  return Status::InvalidArgument(fmt::format("{}: {}", path, what));
}

Result<std::unique_ptr<Expr>> CompileExpr(const json::value& v, const std::string& path,
                                          Compiler& c);
Result<std::unique_ptr<Filter>> CompileFilter(const json::value& v, const std::string& path,
                                              Compiler& c);

// Required sub-expression / filter helpers.
Result<std::unique_ptr<Expr>> SubExpr(const json::object& o, const char* key,
                                      const std::string& path, Compiler& c, bool required = true) {
  const json::value* v = o.if_contains(key);
  if (!v) {
    if (!required) return std::unique_ptr<Expr>();
    return Bad(path + "." + key, "is required");
  }
  return CompileExpr(*v, path + "." + key, c);
}

// Expressions.
struct Constant : Expr {
  json::value v;
  Result<json::value> Eval(const json::value&, EvalContext&) const override { return v; }
};
struct Identity : Expr {
  Result<json::value> Eval(const json::value& item, EvalContext&) const override { return item; }
};
struct Property : Expr {
  std::vector<std::string> path;
  std::string datatype;
  Result<json::value> Eval(const json::value& item, EvalContext&) const override {
    const json::value* cur = &item;
    for (const auto& k : path) {
      cur = &Get(*cur, k);
      if (cur->is_null()) break;
    }
    return Coerce(*cur, datatype);
  }
};
struct Conditional : Expr {
  std::unique_ptr<Filter> test;
  std::unique_ptr<Expr> if_true, if_false;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(bool t, test->Test(item, ctx));
    const Expr* e = t ? if_true.get() : if_false.get();
    if (!e) return json::value(nullptr);
    return e->Eval(item, ctx);
  }
};
struct Switch : Expr {
  std::unique_ptr<Expr> on, dflt;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> cases;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value key, on->Eval(item, ctx));
    std::string k = AsString(key);
    for (const auto& [v, e] : cases)
      if (v == k) return e->Eval(item, ctx);
    if (!dflt) return json::value(nullptr);
    return dflt->Eval(item, ctx);
  }
};
struct ArrayIndex : Expr {
  std::unique_ptr<Expr> array, index;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value a, array->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value i, index->Eval(item, ctx));
    double d;
    if (!a.is_array() || !AsNumber(i, &d)) return json::value(nullptr);
    auto n = static_cast<int64_t>(a.get_array().size());
    auto k = static_cast<int64_t>(d);
    if (k < 0) k += n;  // Python indexing
    if (k < 0 || k >= n) return json::value(nullptr);
    return a.get_array()[static_cast<size_t>(k)];
  }
};
struct SplitString : Expr {
  std::unique_ptr<Expr> str, index;
  std::string delimiter;  // "" = any whitespace
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value s, str->Eval(item, ctx));
    if (!s.is_string()) return json::value(nullptr);
    std::string_view text = s.get_string();
    json::array parts;
    if (delimiter.empty()) {
      size_t i = 0;
      while (i < text.size()) {
        while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
        size_t j = i;
        while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
        if (j > i) parts.emplace_back(text.substr(i, j - i));
        i = j;
      }
    } else {
      size_t i = 0;
      while (true) {
        size_t j = text.find(delimiter, i);
        parts.emplace_back(text.substr(i, j == std::string_view::npos ? j : j - i));
        if (j == std::string_view::npos) break;
        i = j + delimiter.size();
      }
    }
    if (!index) return json::value(std::move(parts));
    CC_ASSIGN_OR_RETURN(json::value iv, index->Eval(item, ctx));
    double d;
    if (!AsNumber(iv, &d)) return json::value(nullptr);
    auto n = static_cast<int64_t>(parts.size());
    auto k = static_cast<int64_t>(d);
    if (k < 0) k += n;
    if (k < 0 || k >= n) return json::value(nullptr);
    return parts[static_cast<size_t>(k)];
  }
};
struct Iterator : Expr {
  std::vector<std::unique_ptr<Expr>> exprs;
  std::unique_ptr<Filter> test;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    json::array out;
    for (const auto& e : exprs) {
      CC_ASSIGN_OR_RETURN(json::value v, e->Eval(item, ctx));
      if (test) {
        CC_ASSIGN_OR_RETURN(bool keep, test->Test(v, ctx));
        if (!keep) continue;
      }
      out.push_back(std::move(v));
    }
    return json::value(std::move(out));
  }
};
struct RootDoc : Expr {
  std::unique_ptr<Expr> expr;
  Result<json::value> Eval(const json::value&, EvalContext& ctx) const override {
    return expr->Eval(*ctx.root, ctx);
  }
};
struct Nested : Expr {
  std::unique_ptr<Expr> arg, value;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value a, arg->Eval(item, ctx));
    return value->Eval(a, ctx);
  }
};
struct Dict : Expr {
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> props;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    json::object o;
    for (const auto& [k, e] : props) {
      CC_ASSIGN_OR_RETURN(json::value v, e->Eval(item, ctx));
      o[k] = std::move(v);
    }
    return json::value(std::move(o));
  }
};
struct RelatedDoc : Expr {
  std::string doc_type;
  std::unique_ptr<Expr> id, value;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value idv, id->Eval(item, ctx));
    if (!idv.is_string() || idv.get_string().empty() || !ctx.engine) return json::value(nullptr);
    if (ctx.depth >= kMaxDepth) return Status::FailedPrecondition("related_doc nested too deep");
    json::value doc;
    std::string_view doc_id = idv.get_string();
    if (doc_type == "CommCareCase") {
      auto c = ctx.engine->GetCase(ctx.domain, doc_id);
      if (!c.ok())
        return c.status().IsNotFound() ? Result<json::value>(json::value(nullptr))
                                       : Result<json::value>(c.status());
      doc = CaseDocument(*c);
    } else {
      auto f = ctx.engine->GetForm(ctx.domain, doc_id);
      if (!f.ok())
        return f.status().IsNotFound() ? Result<json::value>(json::value(nullptr))
                                       : Result<json::value>(f.status());
      CC_ASSIGN_OR_RETURN(std::string xml, ctx.engine->GetFormXml(ctx.domain, doc_id));
      CC_ASSIGN_OR_RETURN(json::object fd, FormDocument(*f, xml));
      doc = std::move(fd);
    }
    EvalContext sub = ctx;
    sub.root = &doc;
    ++sub.depth;
    return value->Eval(doc, sub);
  }
};
struct AddDays : Expr {
  std::unique_ptr<Expr> date, count;
  bool months = false;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value dv, date->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value cv, count->Eval(item, ctx));
    int64_t days;
    double n;
    if (!AsDays(dv, &days) || !AsNumber(cv, &n)) return json::value(nullptr);
    if (!months) return json::value(DateOf(days + static_cast<int64_t>(n)));
    std::string d = DateOf(days);  // relativedelta: the same day, clamped to the month's end
    int y = std::stoi(d.substr(0, 4)), m = std::stoi(d.substr(5, 2)), day = std::stoi(d.substr(8));
    int64_t total = static_cast<int64_t>(y) * 12 + (m - 1) + static_cast<int64_t>(n);
    y = static_cast<int>(total / 12);
    m = static_cast<int>(total % 12) + 1;
    return json::value(fmt::format("{:04}-{:02}-{:02}", y, m, std::min(day, DaysInMonth(y, m))));
  }
};
struct DiffDays : Expr {
  std::unique_ptr<Expr> from, to;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value a, from->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value b, to->Eval(item, ctx));
    int64_t x, y;
    if (!AsDays(a, &x) || !AsDays(b, &y)) return json::value(nullptr);
    return json::value(y - x);
  }
};
struct MonthEdge : Expr {
  std::unique_ptr<Expr> date;
  bool end = false;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value dv, date->Eval(item, ctx));
    int64_t days;
    if (!AsDays(dv, &days)) return json::value(nullptr);
    std::string d = DateOf(days);
    if (!end) return json::value(d.substr(0, 8) + "01");
    int y = std::stoi(d.substr(0, 4)), m = std::stoi(d.substr(5, 2));
    return json::value(fmt::format("{}{:02}", d.substr(0, 8), DaysInMonth(y, m)));
  }
};
struct NamedExpr : Expr {
  std::string name;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    auto it = ctx.source->named_expressions.find(name);
    if (it == ctx.source->named_expressions.end())
      return Status::NotFound("no named expression " + name);
    if (ctx.depth >= kMaxDepth)
      return Status::FailedPrecondition("named expression '" + name + "' refers to itself");
    ++ctx.depth;
    auto r = it->second->Eval(item, ctx);
    --ctx.depth;
    return r;
  }
};
struct IterationNumber : Expr {
  Result<json::value> Eval(const json::value&, EvalContext& ctx) const override {
    return json::value(ctx.iteration);
  }
};

std::string TypeOf(const json::object& o, const std::string& path, Status* err) {
  const json::value* t = o.if_contains("type");
  if (!t || !t->is_string()) {
    *err = Bad(path + ".type", "is required (a string)");
    return {};
  }
  return std::string(t->get_string());
}

Result<std::vector<std::string>> StringList(const json::object& o, const char* key,
                                            const std::string& path, bool required) {
  std::vector<std::string> out;
  const json::value* v = o.if_contains(key);
  if (!v) {
    if (required) return Bad(path + "." + key, "is required");
    return out;
  }
  if (!v->is_array()) return Bad(path + "." + key, "must be a list");
  size_t i = 0;
  for (const auto& x : v->get_array()) {
    if (!x.is_string() && !x.is_number())
      return Bad(fmt::format("{}.{}[{}]", path, key, i), "must be a string");
    out.push_back(AsString(x));
    ++i;
  }
  return out;
}

const std::set<std::string> kDatatypes = {"string", "integer",  "small_integer", "decimal",
                                          "date",   "datetime", "boolean",       "array"};

Result<std::string> Datatype(const json::object& o, const std::string& path, bool required) {
  const json::value* v = o.if_contains("datatype");
  if (!v) {
    if (required) return Bad(path + ".datatype", "is required");
    return std::string();
  }
  if (!v->is_string() || !kDatatypes.count(std::string(v->get_string())))
    return Bad(path + ".datatype",
               "must be one of string, integer, small_integer, decimal, date, datetime, "
               "boolean, array");
  return std::string(v->get_string());
}

// property_name / property_path getter from an object that has one of them.
Result<std::unique_ptr<Expr>> PropertyGetter(const json::object& o, const std::string& path) {
  auto p = std::make_unique<Property>();
  if (const json::value* n = o.if_contains("property_name")) {
    if (!n->is_string() || n->get_string().empty())
      return Bad(path + ".property_name", "must be a non-empty string");
    p->path = {std::string(n->get_string())};
  } else if (o.contains("property_path")) {
    CC_ASSIGN_OR_RETURN(p->path, StringList(o, "property_path", path, true));
    if (p->path.empty()) return Bad(path + ".property_path", "must not be empty");
  } else {
    return Bad(path, "needs property_name or property_path");
  }
  CC_ASSIGN_OR_RETURN(p->datatype, Datatype(o, path, false));
  return std::unique_ptr<Expr>(std::move(p));
}

Result<std::unique_ptr<Expr>> CompileExpr(const json::value& v, const std::string& path,
                                          Compiler& c) {
  if (!v.is_object()) {  // a literal stands for a constant
    auto k = std::make_unique<Constant>();
    k->v = v;
    return std::unique_ptr<Expr>(std::move(k));
  }
  const json::object& o = v.get_object();
  Status err;
  std::string type = TypeOf(o, path, &err);
  CC_RETURN_IF_ERROR(err);
  if (type == "constant") {
    auto k = std::make_unique<Constant>();
    if (const json::value* x = o.if_contains("constant")) k->v = *x;
    return std::unique_ptr<Expr>(std::move(k));
  }
  if (type == "identity") return std::unique_ptr<Expr>(std::make_unique<Identity>());
  if (type == "property_name" || type == "property_path") return PropertyGetter(o, path);
  if (type == "conditional") {
    auto e = std::make_unique<Conditional>();
    const json::value* t = o.if_contains("test");
    if (!t) return Bad(path + ".test", "is required");
    CC_ASSIGN_OR_RETURN(e->test, CompileFilter(*t, path + ".test", c));
    CC_ASSIGN_OR_RETURN(e->if_true, SubExpr(o, "expression_if_true", path, c, false));
    CC_ASSIGN_OR_RETURN(e->if_false, SubExpr(o, "expression_if_false", path, c, false));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "switch") {
    auto e = std::make_unique<Switch>();
    CC_ASSIGN_OR_RETURN(e->on, SubExpr(o, "switch_on", path, c));
    const json::value* cases = o.if_contains("cases");
    if (!cases || !cases->is_object()) return Bad(path + ".cases", "must be an object");
    for (const auto& kv : cases->get_object()) {
      CC_ASSIGN_OR_RETURN(
          auto x,
          CompileExpr(kv.value(), fmt::format("{}.cases.{}", path, std::string(kv.key())), c));
      e->cases.emplace_back(std::string(kv.key()), std::move(x));
    }
    CC_ASSIGN_OR_RETURN(e->dflt, SubExpr(o, "default", path, c, false));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "array_index") {
    auto e = std::make_unique<ArrayIndex>();
    CC_ASSIGN_OR_RETURN(e->array, SubExpr(o, "array_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->index, SubExpr(o, "index_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "split_string") {
    auto e = std::make_unique<SplitString>();
    CC_ASSIGN_OR_RETURN(e->str, SubExpr(o, "string_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->index, SubExpr(o, "index_expression", path, c, false));
    if (const json::value* d = o.if_contains("delimiter")) {
      if (!d->is_string() && !d->is_null()) return Bad(path + ".delimiter", "must be a string");
      if (d->is_string()) e->delimiter = std::string(d->get_string());
    }
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "iterator") {
    auto e = std::make_unique<Iterator>();
    const json::value* xs = o.if_contains("expressions");
    if (!xs || !xs->is_array()) return Bad(path + ".expressions", "must be a list");
    size_t i = 0;
    for (const auto& x : xs->get_array()) {
      CC_ASSIGN_OR_RETURN(auto ce, CompileExpr(x, fmt::format("{}.expressions[{}]", path, i++), c));
      e->exprs.push_back(std::move(ce));
    }
    if (const json::value* t = o.if_contains("test")) {
      CC_ASSIGN_OR_RETURN(e->test, CompileFilter(*t, path + ".test", c));
    }
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "root_doc") {
    auto e = std::make_unique<RootDoc>();
    CC_ASSIGN_OR_RETURN(e->expr, SubExpr(o, "expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "nested") {
    auto e = std::make_unique<Nested>();
    CC_ASSIGN_OR_RETURN(e->arg, SubExpr(o, "argument_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->value, SubExpr(o, "value_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "dict") {
    auto e = std::make_unique<Dict>();
    const json::value* ps = o.if_contains("properties");
    if (!ps || !ps->is_object()) return Bad(path + ".properties", "must be an object");
    for (const auto& kv : ps->get_object()) {
      CC_ASSIGN_OR_RETURN(
          auto x,
          CompileExpr(kv.value(), fmt::format("{}.properties.{}", path, std::string(kv.key())), c));
      e->props.emplace_back(std::string(kv.key()), std::move(x));
    }
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "related_doc") {
    auto e = std::make_unique<RelatedDoc>();
    const json::value* t = o.if_contains("related_doc_type");
    if (!t || !t->is_string()) return Bad(path + ".related_doc_type", "is required");
    e->doc_type = std::string(t->get_string());
    if (e->doc_type != "CommCareCase" && e->doc_type != "XFormInstance")
      return Bad(path + ".related_doc_type", "must be CommCareCase or XFormInstance");
    CC_ASSIGN_OR_RETURN(e->id, SubExpr(o, "doc_id_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->value, SubExpr(o, "value_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "add_days" || type == "add_months") {
    auto e = std::make_unique<AddDays>();
    e->months = type == "add_months";
    CC_ASSIGN_OR_RETURN(e->date, SubExpr(o, "date_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->count,
                        SubExpr(o, e->months ? "months_expression" : "count_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "diff_days") {
    auto e = std::make_unique<DiffDays>();
    CC_ASSIGN_OR_RETURN(e->from, SubExpr(o, "from_date_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->to, SubExpr(o, "to_date_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "month_start_date" || type == "month_end_date") {
    auto e = std::make_unique<MonthEdge>();
    e->end = type == "month_end_date";
    CC_ASSIGN_OR_RETURN(e->date, SubExpr(o, "date_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "named") {
    const json::value* n = o.if_contains("name");
    if (!n || !n->is_string()) return Bad(path + ".name", "is required");
    auto e = std::make_unique<NamedExpr>();
    e->name = std::string(n->get_string());
    c.expr_refs.insert(e->name + "\x01" + path + ".name");
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "base_iteration_number")
    return std::unique_ptr<Expr>(std::make_unique<IterationNumber>());
  return Bad(path + ".type", fmt::format("unknown expression type '{}'", type));
}

// Filters.
struct BoolExpr : Filter {
  std::unique_ptr<Expr> expr;
  std::string op;
  json::value value;
  Result<bool> Test(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value v, expr->Eval(item, ctx));
    if (op == "eq") return Equal(v, value);
    if (op == "not_eq") return !Equal(v, value);
    if (op == "in" || op == "in_multi") {
      const json::array& opts = value.get_array();
      auto in = [&](const json::value& x) {
        for (const auto& o : opts)
          if (Equal(x, o)) return true;
        return false;
      };
      if (op == "in") return in(v);
      if (!v.is_string()) return in(v);
      std::string_view s = v.get_string();
      size_t i = 0;
      while (i < s.size()) {
        size_t j = s.find(' ', i);
        if (j == std::string_view::npos) j = s.size();
        if (j > i && in(json::value(s.substr(i, j - i)))) return true;
        i = j + 1;
      }
      return false;
    }
    auto cmp = Compare(v, value);
    if (!cmp) return false;
    if (op == "lt") return *cmp < 0;
    if (op == "lte") return *cmp <= 0;
    if (op == "gt") return *cmp > 0;
    return *cmp >= 0;  // gte
  }
};
struct AndOr : Filter {
  bool is_and = true;
  std::vector<std::unique_ptr<Filter>> filters;
  Result<bool> Test(const json::value& item, EvalContext& ctx) const override {
    for (const auto& f : filters) {
      CC_ASSIGN_OR_RETURN(bool t, f->Test(item, ctx));
      if (t != is_and) return t;
    }
    return is_and;
  }
};
struct Not : Filter {
  std::unique_ptr<Filter> f;
  Result<bool> Test(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(bool t, f->Test(item, ctx));
    return !t;
  }
};
struct NamedFilter : Filter {
  std::string name;
  Result<bool> Test(const json::value& item, EvalContext& ctx) const override {
    auto it = ctx.source->named_filters.find(name);
    if (it == ctx.source->named_filters.end()) return Status::NotFound("no named filter " + name);
    if (ctx.depth >= kMaxDepth)
      return Status::FailedPrecondition("named filter '" + name + "' refers to itself");
    ++ctx.depth;
    auto r = it->second->Test(item, ctx);
    --ctx.depth;
    return r;
  }
};

const std::set<std::string> kOperators = {"eq", "not_eq", "in", "in_multi",
                                          "lt", "lte",    "gt", "gte"};

Result<std::unique_ptr<Filter>> CompileFilter(const json::value& v, const std::string& path,
                                              Compiler& c) {
  if (!v.is_object()) return Bad(path, "a filter must be an object");
  const json::object& o = v.get_object();
  Status err;
  std::string type = TypeOf(o, path, &err);
  CC_RETURN_IF_ERROR(err);
  if (type == "boolean_expression" || type == "property_match") {
    auto f = std::make_unique<BoolExpr>();
    if (type == "property_match") {
      CC_ASSIGN_OR_RETURN(f->expr, PropertyGetter(o, path));
      f->op = "eq";
    } else {
      CC_ASSIGN_OR_RETURN(f->expr, SubExpr(o, "expression", path, c));
      const json::value* op = o.if_contains("operator");
      if (!op || !op->is_string() || !kOperators.count(std::string(op->get_string())))
        return Bad(path + ".operator", "must be one of eq, not_eq, in, in_multi, lt, lte, gt, gte");
      f->op = std::string(op->get_string());
    }
    const json::value* pv = o.if_contains("property_value");
    if (!pv) return Bad(path + ".property_value", "is required");
    f->value = *pv;
    if ((f->op == "in" || f->op == "in_multi") && !pv->is_array())
      return Bad(path + ".property_value", "must be a list for operator " + f->op);
    return std::unique_ptr<Filter>(std::move(f));
  }
  if (type == "and" || type == "or") {
    auto f = std::make_unique<AndOr>();
    f->is_and = type == "and";
    const json::value* fs = o.if_contains("filters");
    if (!fs || !fs->is_array()) return Bad(path + ".filters", "must be a list");
    size_t i = 0;
    for (const auto& x : fs->get_array()) {
      CC_ASSIGN_OR_RETURN(auto cf, CompileFilter(x, fmt::format("{}.filters[{}]", path, i++), c));
      f->filters.push_back(std::move(cf));
    }
    return std::unique_ptr<Filter>(std::move(f));
  }
  if (type == "not") {
    auto f = std::make_unique<Not>();
    const json::value* x = o.if_contains("filter");
    if (!x) return Bad(path + ".filter", "is required");
    CC_ASSIGN_OR_RETURN(f->f, CompileFilter(*x, path + ".filter", c));
    return std::unique_ptr<Filter>(std::move(f));
  }
  if (type == "named") {
    const json::value* n = o.if_contains("name");
    if (!n || !n->is_string()) return Bad(path + ".name", "is required");
    auto f = std::make_unique<NamedFilter>();
    f->name = std::string(n->get_string());
    c.filter_refs.insert(f->name + "\x01" + path + ".name");
    return std::unique_ptr<Filter>(std::move(f));
  }
  return Bad(path + ".type", fmt::format("unknown filter type '{}'", type));
}

bool ValidColumnId(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') return false;
  return true;
}

// A derived column id (choice or product appended): characters a column id cannot hold as '_'.
std::string Derived(const std::string& base, const std::string& suffix) {
  std::string id = base + "_" + suffix;
  for (char& ch : id)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') ch = '_';
  return id.substr(0, 63);
}

std::string Quote(const std::string& id) {
  std::string q = "\"";
  for (char ch : id) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

std::string SqlType(const std::string& datatype, bool postgres) {
  if (datatype == "integer" || datatype == "small_integer" || datatype == "boolean")
    return postgres ? "BIGINT" : "INTEGER";
  if (datatype == "decimal") return postgres ? "DOUBLE PRECISION" : "REAL";
  return "TEXT";
}

}  // namespace

namespace {

// The name tables had before TableName: "ucr_<domain>_<table_id>", '_' for anything else
// than a letter or digit (not one source's alone).
std::string LegacyTableName(std::string_view domain, std::string_view table_id) {
  std::string name = "ucr_" + std::string(domain) + "_" + std::string(table_id);
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') ch = '_';
  return name;
}

Result<bool> TableExists(SqlDb& db, const std::string& name) {
  const util::SqlParam p[] = {name};
  CC_ASSIGN_OR_RETURN(
      auto r, db.Query("looking for a UCR table",
                       db.postgres() ? "SELECT 1 FROM pg_tables WHERE schemaname=current_schema() "
                                       "AND tablename=?"
                                     : "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                       p));
  return !r.empty();
}

}  // namespace

// "ucr_<domain>_<table_id>_<hash>": the readable parts cut to fit PostgreSQL's 63-character
// names, the hash (of both, unaltered) keeping the name one data source's alone: without it
// (doma-pat, list) and (doma, pat_list) shared a table, and so each other's rows.
std::string DataSource::TableName() const {
  auto part = [](std::string_view s, size_t n) {
    std::string out(s.substr(0, n));
    for (char& ch : out)
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return out;
  };
  std::string key = domain;
  key.push_back('\0');
  key += table_id;
  return "ucr_" + part(domain, 20) + "_" + part(table_id, 20) + "_" +
         util::Sha256Hex(key).substr(0, 12);
}

Result<std::unique_ptr<DataSource>> Compile(std::string_view config_json) {
  boost::system::error_code ec;
  json::value v = json::parse(config_json, ec);
  if (ec)
    return Status::InvalidArgument(fmt::format("data source config is not JSON: {}", ec.message()));
  if (!v.is_object()) return Status::InvalidArgument("data source config must be a JSON object");
  const json::object& o = v.get_object();
  auto ds = std::make_unique<DataSource>();
  ds->config = std::string(config_json);
  Compiler c{ds.get(), {}, {}};
  auto str = [&](const char* key, bool required, std::string* out) -> Status {
    const json::value* x = o.if_contains(key);
    if (!x) return required ? Bad(key, "is required") : Status::Ok();
    if (!x->is_string()) return Bad(key, "must be a string");
    *out = std::string(x->get_string());
    if (required && out->empty()) return Bad(key, "must not be empty");
    return Status::Ok();
  };
  CC_RETURN_IF_ERROR(str("domain", true, &ds->domain));
  CC_RETURN_IF_ERROR(str("table_id", true, &ds->table_id));
  CC_RETURN_IF_ERROR(str("referenced_doc_type", true, &ds->referenced_doc_type));
  CC_RETURN_IF_ERROR(str("display_name", false, &ds->display_name));
  if (ds->referenced_doc_type != "CommCareCase" && ds->referenced_doc_type != "XFormInstance")
    return Bad("referenced_doc_type", "must be CommCareCase or XFormInstance");
  if (const json::value* ne = o.if_contains("named_expressions")) {
    if (!ne->is_object()) return Bad("named_expressions", "must be an object");
    for (const auto& kv : ne->get_object()) {
      std::string name(kv.key());
      CC_ASSIGN_OR_RETURN(ds->named_expressions[name],
                          CompileExpr(kv.value(), "named_expressions." + name, c));
    }
  }
  if (const json::value* nf = o.if_contains("named_filters")) {
    if (!nf->is_object()) return Bad("named_filters", "must be an object");
    for (const auto& kv : nf->get_object()) {
      std::string name(kv.key());
      CC_ASSIGN_OR_RETURN(ds->named_filters[name],
                          CompileFilter(kv.value(), "named_filters." + name, c));
    }
  }
  if (const json::value* f = o.if_contains("configured_filter"); f && !f->is_null()) {
    CC_ASSIGN_OR_RETURN(ds->filter, CompileFilter(*f, "configured_filter", c));
  }
  if (const json::value* b = o.if_contains("base_item_expression");
      b && !(b->is_object() && b->get_object().empty()) && !b->is_null()) {
    CC_ASSIGN_OR_RETURN(ds->base_item, CompileExpr(*b, "base_item_expression", c));
  }
  const json::value* inds = o.if_contains("configured_indicators");
  if (!inds || !inds->is_array()) return Bad("configured_indicators", "must be a list");
  std::set<std::string> seen = {"doc_id", "inserted_at", "repeat_iteration"};
  auto add_column = [&](const std::string& id, const std::string& datatype, bool nullable,
                        const std::string& path) -> Status {
    if (!ValidColumnId(id))
      return Bad(path, fmt::format("column id '{}' must be 1-63 letters, digits or _", id));
    if (!seen.insert(id).second) return Bad(path, fmt::format("column '{}' is defined twice", id));
    ds->columns.push_back({id, datatype, nullable});
    return Status::Ok();
  };
  size_t i = 0;
  for (const auto& x : inds->get_array()) {
    std::string path = fmt::format("configured_indicators[{}]", i++);
    if (!x.is_object()) return Bad(path, "an indicator must be an object");
    const json::object& io = x.get_object();
    Status err;
    Indicator ind;
    ind.kind = TypeOf(io, path, &err);
    CC_RETURN_IF_ERROR(err);
    const json::value* cid = io.if_contains("column_id");
    if (!cid || !cid->is_string()) return Bad(path + ".column_id", "is required");
    ind.column_id = std::string(cid->get_string());
    if (!ValidColumnId(ind.column_id))
      return Bad(path + ".column_id",
                 fmt::format("column id '{}' must be 1-63 letters, digits or _", ind.column_id));
    if (ind.kind == "boolean") {
      const json::value* f = io.if_contains("filter");
      if (!f) return Bad(path + ".filter", "is required");
      CC_ASSIGN_OR_RETURN(ind.filter, CompileFilter(*f, path + ".filter", c));
      ind.datatype = "boolean";
      CC_RETURN_IF_ERROR(add_column(ind.column_id, "boolean", false, path + ".column_id"));
    } else if (ind.kind == "expression") {
      CC_ASSIGN_OR_RETURN(ind.datatype, Datatype(io, path, true));
      CC_ASSIGN_OR_RETURN(ind.expr, SubExpr(io, "expression", path, c));
      const json::value* nl = io.if_contains("is_nullable");
      bool nullable = !nl || !nl->is_bool() || nl->get_bool();
      CC_RETURN_IF_ERROR(add_column(ind.column_id, ind.datatype, nullable, path + ".column_id"));
    } else if (ind.kind == "raw") {
      CC_ASSIGN_OR_RETURN(ind.datatype, Datatype(io, path, false));
      if (ind.datatype.empty()) ind.datatype = "string";
      CC_ASSIGN_OR_RETURN(ind.expr, PropertyGetter(io, path));
      CC_RETURN_IF_ERROR(add_column(ind.column_id, ind.datatype, true, path + ".column_id"));
    } else if (ind.kind == "choice_list") {
      CC_ASSIGN_OR_RETURN(ind.choices, StringList(io, "choices", path, true));
      if (io.contains("expression")) {
        CC_ASSIGN_OR_RETURN(ind.expr, SubExpr(io, "expression", path, c));
      } else {
        CC_ASSIGN_OR_RETURN(ind.expr, PropertyGetter(io, path));
      }
      const json::value* ss = io.if_contains("select_style");
      ind.multiple = ss && ss->is_string() && ss->get_string() == "multiple";
      for (const auto& ch : ind.choices)
        CC_RETURN_IF_ERROR(
            add_column(Derived(ind.column_id, ch), "boolean", false, path + ".choices"));
    } else if (ind.kind == "ledger_balances") {
      const json::value* sec = io.if_contains("ledger_section");
      if (!sec || !sec->is_string()) return Bad(path + ".ledger_section", "is required");
      ind.ledger_section = std::string(sec->get_string());
      CC_ASSIGN_OR_RETURN(ind.choices, StringList(io, "product_codes", path, true));
      CC_ASSIGN_OR_RETURN(ind.expr, SubExpr(io, "case_id_expression", path, c));
      for (const auto& code : ind.choices)
        CC_RETURN_IF_ERROR(
            add_column(Derived(ind.column_id, code), "integer", false, path + ".product_codes"));
    } else {
      return Bad(path + ".type", fmt::format("unknown indicator type '{}'", ind.kind));
    }
    ds->indicators.push_back(std::move(ind));
  }
  const std::string table = Quote(ds->TableName());
  ds->delete_sql = "DELETE FROM " + table + " WHERE doc_id=?";
  ds->insert_sql = "INSERT INTO " + table + " VALUES(?,?";
  for (size_t k = 0; k < ds->columns.size() + (ds->base_item ? 1 : 0); ++k) ds->insert_sql += ",?";
  ds->insert_sql += ")";
  for (const auto& ref : c.expr_refs) {
    auto sep = ref.find('\x01');
    if (!ds->named_expressions.count(ref.substr(0, sep)))
      return Bad(ref.substr(sep + 1), fmt::format("no named expression '{}'", ref.substr(0, sep)));
  }
  for (const auto& ref : c.filter_refs) {
    auto sep = ref.find('\x01');
    if (!ds->named_filters.count(ref.substr(0, sep)))
      return Bad(ref.substr(sep + 1), fmt::format("no named filter '{}'", ref.substr(0, sep)));
  }
  return ds;
}

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

// ---- the pillow ----

namespace {

constexpr const char* kSqliteSchema = R"(
CREATE TABLE IF NOT EXISTS ucr_sources(
  domain TEXT NOT NULL, table_id TEXT NOT NULL, config TEXT NOT NULL, version INTEGER NOT NULL,
  PRIMARY KEY(domain, table_id)) WITHOUT ROWID;
)";
constexpr const char* kPostgresSchema = R"(
CREATE TABLE IF NOT EXISTS ucr_sources(
  domain TEXT COLLATE "C" NOT NULL, table_id TEXT COLLATE "C" NOT NULL, config TEXT NOT NULL,
  version BIGINT NOT NULL, PRIMARY KEY(domain, table_id));
)";

class Ucr final : public UcrProcessor {
 public:
  bool WritesSql() const override { return true; }
  Status Setup(SqlDb& db) override {
    CC_RETURN_IF_ERROR(
        db.Exec("creating the data source table", db.postgres() ? kPostgresSchema : kSqliteSchema));
    return Reload(db, true);
  }
  Status Reset(SqlDb& db) override {
    CC_RETURN_IF_ERROR(Reload(db, false));
    for (const auto& [key, ds] : sources_)
      CC_RETURN_IF_ERROR(db.Exec("emptying a UCR table", "DELETE FROM " + Quote(ds->TableName())));
    return Status::Ok();
  }

  bool Wants(SqlDb& db, const std::string& topic) override {
    if (!Reload(db, false).ok()) return true;  // unsure: read it
    const char* kind = topic == "case-sql" ? "CommCareCase" : "XFormInstance";
    for (const auto& [key, ds] : sources_)
      if (ds->referenced_doc_type == kind) return true;
    return false;
  }

  Status ProcessBatch(SqlDb& db, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    CC_RETURN_IF_ERROR(Reload(db, false));
    if (sources_.empty()) return Status::Ok();
    // Cases some data source wants, read ahead in parallel.
    std::vector<const Change*> wanted;
    std::vector<size_t> where(changes.size(), SIZE_MAX);
    for (size_t i = 0; i < changes.size(); ++i)
      if (IsCase(changes[i]->meta) && HasSources(changes[i]->meta.domain, "CommCareCase")) {
        where[i] = wanted.size();
        wanted.push_back(changes[i]);
      }
    auto fetched = FetchCases(engine, wanted);
    for (size_t i = 0; i < changes.size(); ++i) {
      Status s = ProcessOne(db, engine, changes[i]->meta,
                            where[i] == SIZE_MAX ? nullptr : &fetched[where[i]]);
      if (s.code() == StatusCode::kInternal || s.code() == StatusCode::kUnavailable)
        return s;  // a store error fails the batch
      if (!s.ok()) failed->emplace_back(i, s.ToString());
    }
    return Status::Ok();
  }

  Result<int64_t> Load(SqlDb& db, Engine& engine, std::string_view config_json) override {
    CC_ASSIGN_OR_RETURN(auto ds, Compile(config_json));
    CC_RETURN_IF_ERROR(Reload(db, false));
    CC_RETURN_IF_ERROR(
        db.Run("storing a data source",
               "INSERT INTO ucr_sources(domain, table_id, config, version) VALUES(?, ?, ?, "
               "(SELECT COALESCE(MAX(version), 0) + 1 FROM ucr_sources)) ON CONFLICT(domain, "
               "table_id) DO UPDATE SET config=excluded.config, version=excluded.version",
               {ds->domain, ds->table_id, ds->config})
            .status());
    CC_RETURN_IF_ERROR(CreateTable(db, *ds, /*drop=*/true));
    std::string domain = ds->domain, table = ds->table_id;
    sources_[{domain, table}] = std::move(ds);
    return Rebuild(db, engine, domain, table);
  }

  Result<int64_t> Rebuild(SqlDb& db, Engine& engine, std::string_view domain,
                          std::string_view table_id) override {
    CC_RETURN_IF_ERROR(Reload(db, false));
    auto it = sources_.find({std::string(domain), std::string(table_id)});
    if (it == sources_.end())
      return Status::NotFound(fmt::format("no UCR data source {} in domain {}", table_id, domain));
    const DataSource& ds = *it->second;
    CC_RETURN_IF_ERROR(db.Exec("emptying a UCR table", "DELETE FROM " + Quote(ds.TableName())));
    int64_t rows = 0;
    Status inner;
    auto write = [&](const json::value& doc) {
      auto r = ds.Rows(doc, &engine);
      if (!r.ok()) return true;  // a document that fails evaluation gets no rows
      auto st = Insert(db, ds, *r);
      if (!st.ok()) {
        inner = st;
        return false;
      }
      rows += static_cast<int64_t>(r->size());
      return true;
    };
    if (ds.referenced_doc_type == "CommCareCase") {
      storage::CaseFilter f;
      f.domain = ds.domain;
      CC_RETURN_IF_ERROR(engine.ListCases(
          f, [&](const CaseRecord& c) { return write(json::value(CaseDocument(c))); }));
    } else {
      for (int d = 0; d < engine.NumDatabases() && inner.ok(); ++d)
        CC_RETURN_IF_ERROR(engine.Database(d)->ScanForms([&](const FormRecord& f) {
          if (f.domain != ds.domain) return true;
          auto xml = engine.GetFormXml(f.domain, f.form_id);
          if (!xml.ok()) return true;
          auto doc = FormDocument(f, *xml);
          if (!doc.ok()) return true;
          return write(json::value(std::move(*doc)));
        }));
    }
    CC_RETURN_IF_ERROR(inner);
    return rows;
  }

 private:
  using Key = std::pair<std::string, std::string>;

  // Re-reads the data sources when another process (or Load) changed them.
  Status Reload(SqlDb& db, bool force) {
    CC_ASSIGN_OR_RETURN(auto v, db.Run("reading data source versions",
                                       "SELECT COALESCE(MAX(version), 0), COUNT(*) FROM "
                                       "ucr_sources"));
    const int64_t version = v.Int(0, 0), count = v.Int(0, 1);
    if (!force && version == version_ && count == count_) return Status::Ok();
    std::map<Key, std::unique_ptr<DataSource>> fresh;
    CC_ASSIGN_OR_RETURN(auto all, db.Run("reading data sources",
                                         "SELECT domain, table_id, config FROM ucr_sources"));
    std::map<std::string, int> legacy_users;  // legacy table name -> sources it stood for
    if (force)
      for (size_t r = 0; r < all.size(); ++r)
        ++legacy_users[LegacyTableName(all.Str(r, 0), all.Str(r, 1))];
    for (size_t r = 0; r < all.size(); ++r) {
      auto ds = Compile(all.Str(r, 2));
      if (!ds.ok())
        return Status::DataLoss(fmt::format("stored data source {}/{} no longer compiles: {}",
                                            all.Str(r, 0), all.Str(r, 1), ds.status().message()));
      // At set-up, a table made under the old name (before names were one source's alone) is
      // renamed, unless two sources shared it: its rows are mixed, so the new table starts
      // empty and the rebuild command is logged.
      if (force) CC_RETURN_IF_ERROR(AdoptLegacyTable(db, **ds, legacy_users));
      CC_RETURN_IF_ERROR(CreateTable(db, **ds, false));
      fresh[{std::string(all.Str(r, 0)), std::string(all.Str(r, 1))}] = std::move(*ds);
    }
    sources_ = std::move(fresh);
    version_ = version;
    count_ = count;
    return Status::Ok();
  }

  Status AdoptLegacyTable(SqlDb& db, const DataSource& ds,
                          const std::map<std::string, int>& legacy_users) {
    const std::string legacy = LegacyTableName(ds.domain, ds.table_id);
    CC_ASSIGN_OR_RETURN(bool has_new, TableExists(db, ds.TableName()));
    CC_ASSIGN_OR_RETURN(bool has_old, TableExists(db, legacy));
    if (has_new || !has_old) return Status::Ok();
    if (legacy_users.at(legacy) > 1) {
      fmt::print(stderr,
                 "ucr: data source {}/{} shared its old table {} with another source; its new "
                 "table starts empty: run `commcare ucr rebuild --domain {} --table {}`\n",
                 ds.domain, ds.table_id, legacy, ds.domain, ds.table_id);
      return Status::Ok();
    }
    CC_RETURN_IF_ERROR(db.Exec("renaming a UCR table", "ALTER TABLE " + Quote(legacy) +
                                                           " RENAME TO " + Quote(ds.TableName())));
    return db.Exec("dropping an old UCR index", "DROP INDEX IF EXISTS " + Quote(legacy + "_doc"));
  }

  // On PostgreSQL a last column, ucr_row, numbers the rows (SQLite's rowid) for UcrRows.
  Status CreateTable(SqlDb& db, const DataSource& ds, bool drop) {
    const std::string t = Quote(ds.TableName());
    if (drop) CC_RETURN_IF_ERROR(db.Exec("dropping a UCR table", "DROP TABLE IF EXISTS " + t));
    std::string sql =
        "CREATE TABLE IF NOT EXISTS " + t + "(doc_id TEXT NOT NULL, inserted_at TEXT NOT NULL";
    if (ds.base_item) sql += ", repeat_iteration INTEGER NOT NULL";
    for (const auto& c : ds.columns)
      sql += ", " + Quote(c.id) + " " + SqlType(c.datatype, db.postgres()) +
             (c.nullable ? "" : " NOT NULL");
    if (db.postgres()) sql += ", ucr_row BIGSERIAL";
    sql += ")";
    CC_RETURN_IF_ERROR(db.Exec("creating a UCR table", sql));
    return db.Exec(
        "creating a UCR index",
        "CREATE INDEX IF NOT EXISTS " + Quote(ds.TableName() + "_doc") + " ON " + t + "(doc_id)");
  }

  Status DeleteRows(SqlDb& db, const DataSource& ds, std::string_view doc_id) {
    const util::SqlParam id[] = {doc_id};
    return db.Query("deleting UCR rows", ds.delete_sql, id).status();
  }

  Status Insert(SqlDb& db, const DataSource& ds,
                const std::vector<std::vector<json::value>>& rows) {
    std::vector<std::string> hold;
    std::vector<util::SqlParam> params;
    for (const auto& row : rows) {
      hold.clear();
      hold.reserve(row.size());
      params.clear();
      for (const json::value& v : row) {
        if (v.is_null())
          params.emplace_back(nullptr);
        else if (v.is_int64())
          params.emplace_back(v.get_int64());
        else if (v.is_uint64())
          params.emplace_back(static_cast<int64_t>(v.get_uint64()));
        else if (v.is_double())
          params.emplace_back(v.get_double());
        else if (v.is_bool())
          params.emplace_back(int64_t{v.get_bool() ? 1 : 0});
        else
          params.emplace_back(hold.emplace_back(AsString(v)));
      }
      auto r = db.Query("inserting UCR rows", ds.insert_sql, params);
      if (!r.ok()) {
        if (r.status().code() == StatusCode::kUnavailable) return r.status();
        return Status::InvalidArgument(
            fmt::format("a row of data source {} does not fit its table: {}", ds.table_id,
                        r.status().message()));
      }
    }
    return Status::Ok();
  }

  static bool IsCase(const ChangeMeta& m) {
    return m.topic == "case-sql" || m.data_source_name == "case-sql";
  }
  bool HasSources(const std::string& domain, const char* kind) const {
    for (auto it = sources_.lower_bound({domain, ""});
         it != sources_.end() && it->first.first == domain; ++it)
      if (it->second->referenced_doc_type == kind) return true;
    return false;
  }

  // fetched: the case read ahead (case changes only), or nullptr to read it here.
  Status ProcessOne(SqlDb& db, Engine& engine, const ChangeMeta& m, Result<CaseRecord>* fetched) {
    const bool is_case = IsCase(m);
    const char* kind = is_case ? "CommCareCase" : "XFormInstance";
    std::vector<const DataSource*> targets;
    for (const auto& [key, ds] : sources_)
      if (key.first == m.domain && ds->referenced_doc_type == kind) targets.push_back(ds.get());
    if (targets.empty()) return Status::Ok();
    json::value doc;
    bool found = false;
    if (is_case) {
      Result<CaseRecord> c =
          fetched ? std::move(*fetched) : engine.GetCase(m.domain, m.document_id);
      if (!c.ok() && !c.status().IsNotFound()) return c.status();
      if (c.ok()) {
        doc = CaseDocument(*c);
        found = true;
      }
    } else {
      auto f = engine.GetForm(m.domain, m.document_id);
      if (!f.ok() && !f.status().IsNotFound()) return f.status();
      if (f.ok()) {
        CC_ASSIGN_OR_RETURN(std::string xml, engine.GetFormXml(m.domain, m.document_id));
        auto fd = FormDocument(*f, xml);
        if (!fd.ok()) return fd.status();
        doc = std::move(*fd);
        found = true;
      }
    }
    Status first_error;
    for (const DataSource* ds : targets) {
      CC_RETURN_IF_ERROR(DeleteRows(db, *ds, m.document_id));  // delete-and-reinsert
      if (!found) continue;
      auto rows = ds->Rows(doc, &engine);
      if (!rows.ok()) {  // its rows stay deleted; the change is retried
        if (first_error.ok())
          first_error = Status::InvalidArgument(
              fmt::format("data source {}: {}", ds->table_id, rows.status().message()));
        continue;
      }
      Status st = Insert(db, *ds, *rows);
      if (!st.ok() && first_error.ok()) first_error = st;
    }
    return first_error;
  }

  std::map<Key, std::unique_ptr<DataSource>> sources_;
  int64_t version_ = -1, count_ = -1;
};

}  // namespace

std::unique_ptr<UcrProcessor> NewUcrProcessor() { return std::make_unique<Ucr>(); }

}  // namespace commcare::pillows::ucr

namespace commcare {

Result<std::vector<std::string>> UcrRows(const std::string& pillows_dir, std::string_view domain,
                                         std::string_view table_id, size_t limit, size_t offset) {
  namespace json = boost::json;
  CC_ASSIGN_OR_RETURN(auto db, pillows::OpenStore(pillows_dir, "ucr", {}, "ucr_sources"));
  const util::SqlParam key[] = {domain, table_id};
  CC_ASSIGN_OR_RETURN(auto known,
                      db.Query("reading data sources",
                               "SELECT 1 FROM ucr_sources WHERE domain=? AND table_id=?", key));
  if (known.empty())
    return Status::NotFound(fmt::format("no UCR data source {} in domain {}", table_id, domain));
  pillows::ucr::DataSource ds;
  ds.domain = std::string(domain);
  ds.table_id = std::string(table_id);
  std::vector<std::string> out;
  if (db.pg) {  // the row as JSON, in column order, without the row number
    CC_ASSIGN_OR_RETURN(
        auto rows,
        db.Query("reading UCR rows",
                 fmt::format("SELECT CAST(row_to_json(t) AS TEXT) FROM \"{}\" t ORDER BY ucr_row "
                             "LIMIT {} OFFSET {}",
                             ds.TableName(), limit, offset),
                 {}));
    for (size_t r = 0; r < rows.size(); ++r) {
      json::value v = json::parse(rows.Str(r, 0));
      v.as_object().erase("ucr_row");
      out.push_back(json::serialize(v));
    }
    return out;
  }
  util::Conn& conn = **db.sqlite;
  std::string sql = fmt::format("SELECT * FROM \"{}\" ORDER BY rowid LIMIT {} OFFSET {}",
                                ds.TableName(), limit, offset);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(conn.db(), sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return conn.Err("reading UCR rows");
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    json::object o;
    for (int i = 0; i < sqlite3_column_count(s); ++i) {
      const char* name = sqlite3_column_name(s, i);
      switch (sqlite3_column_type(s, i)) {
        case SQLITE_INTEGER:
          o[name] = sqlite3_column_int64(s, i);
          break;
        case SQLITE_FLOAT:
          o[name] = sqlite3_column_double(s, i);
          break;
        case SQLITE_NULL:
          o[name] = nullptr;
          break;
        default:
          o[name] = util::Col(s, i);
      }
    }
    out.push_back(json::serialize(o));
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE) return Status::Internal("reading UCR rows failed");
  return out;
}

}  // namespace commcare
