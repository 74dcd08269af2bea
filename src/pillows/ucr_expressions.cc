// UCR expressions: the expression types, how each evaluates, and their compiler.
#include <fmt/format.h>

#include <algorithm>

#include "pillows/ucr_internal.h"

namespace commcare::pillows::ucr::internal {
namespace {

bool IsPyInt(const json::value& v) { return v.is_int64() || v.is_uint64() || v.is_bool(); }
int64_t PyInt(const json::value& v) { return v.is_bool() ? v.get_bool() : v.to_number<int64_t>(); }

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
// specs.py PropertyNameGetterSpec with an expression for property_name (HQ's DefaultProperty):
// item.get(<the expression's value>), so only a string names a property.
struct PropertyByExpr : Expr {
  std::unique_ptr<Expr> name;
  std::string datatype;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value n, name->Eval(item, ctx));
    return Coerce(n.is_string() ? Get(item, n.get_string()) : json::value(), datatype);
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
    // specs.py SwitchExpressionSpec: `switch_value == c` with string keys, so 1 is not "1".
    if (key.is_string())
      for (const auto& [v, e] : cases)
        if (v == key.get_string()) return e->Eval(item, ctx);
    if (!dflt) return json::value(nullptr);
    return dflt->Eval(item, ctx);
  }
};
struct ArrayIndex : Expr {
  std::unique_ptr<Expr> array, index;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value a, array->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value i, index->Eval(item, ctx));
    // specs.py ArrayIndexExpressionSpec: None unless the index is a Python int.
    if (!a.is_array() || !IsPyInt(i)) return json::value(nullptr);
    auto n = static_cast<int64_t>(a.get_array().size());
    int64_t k = PyInt(i);
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
    if (!IsPyInt(iv)) return json::value(nullptr);  // as array_index
    auto n = static_cast<int64_t>(parts.size());
    int64_t k = PyInt(iv);
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
    } else if (doc_type != "XFormInstance") {  // a user, group or location (the Directory)
      if (!ctx.directory) return json::value(nullptr);
      auto d = ctx.directory->Get(ctx.domain, doc_type, doc_id);
      if (!d.ok())
        return d.status().IsNotFound() ? Result<json::value>(json::value(nullptr))
                                       : Result<json::value>(d.status());
      doc = std::move(*d);
    } else {
      auto f = ctx.engine->GetForm(ctx.domain, doc_id);
      if (!f.ok())
        return f.status().IsNotFound() ? Result<json::value>(json::value(nullptr))
                                       : Result<json::value>(f.status());
      CC_ASSIGN_OR_RETURN(std::string xml, ctx.engine->GetFormXml(ctx.domain, doc_id));
      CC_ASSIGN_OR_RETURN(json::object fd, FormDocument(*f, xml));
      doc = std::move(fd);
    }
    EvalContext sub = ctx;  // specs.py: a new EvaluationContext(doc, 0)
    sub.root = &doc;
    sub.iteration = 0;
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

}  // namespace

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
    const json::value* x = o.if_contains("constant");
    if (!x) return Bad(path + ".constant", "is required");  // specs.py ConstantGetterSpec.wrap
    k->v = *x;
    return std::unique_ptr<Expr>(std::move(k));
  }
  if (type == "identity") return std::unique_ptr<Expr>(std::make_unique<Identity>());
  if (const json::value* n = o.if_contains("property_name");
      type == "property_name" && n && n->is_object()) {
    auto e = std::make_unique<PropertyByExpr>();
    CC_ASSIGN_OR_RETURN(e->name, CompileExpr(*n, path + ".property_name", c));
    CC_ASSIGN_OR_RETURN(e->datatype, Datatype(o, path, false));
    return std::unique_ptr<Expr>(std::move(e));
  }
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
    static const char* kTypes[] = {"CommCareCase", "XFormInstance", "CommCareUser", "Group",
                                   "Location"};
    if (std::find(std::begin(kTypes), std::end(kTypes), e->doc_type) == std::end(kTypes))
      return Bad(path + ".related_doc_type",
                 "must be CommCareCase, XFormInstance, CommCareUser, Group or Location");
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
  if (type == "ethiopian_date_to_gregorian_date" || type == "gregorian_date_to_ethiopian_date")
    return CompileEthiopianDate(type, o, path, c);
  if (type == "base_iteration_number")
    return std::unique_ptr<Expr>(std::make_unique<IterationNumber>());
  CC_ASSIGN_OR_RETURN(auto more, CompileItemsExpr(type, o, path, c));
  if (more) return more;
  return Bad(path + ".type", fmt::format("unknown expression type '{}'", type));
}

}  // namespace commcare::pillows::ucr::internal
