// UCR filters: the filter types, how each tests an item, and their compiler.
#include <fmt/format.h>

#include <regex>
#include <set>

#include "pillows/ucr_internal.h"

namespace commcare::pillows::ucr::internal {
namespace {

// Python's str.split(' '): empty pieces kept ("a  b" -> "a", "", "b").
std::vector<std::string_view> SplitOnSpace(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (true) {
    size_t j = s.find(' ', i);
    out.push_back(s.substr(i, j == std::string_view::npos ? j : j - i));
    if (j == std::string_view::npos) return out;
    i = j + 1;
  }
}

// `reference in (input or '').split(' ')` (operators.py in_multiselect); a non-string input
// other than a false one makes HQ raise, which here is false.
bool InMulti(const json::value& input, const json::value& reference) {
  if (!reference.is_string()) return false;
  if (!Truthy(input)) return reference.get_string().empty();
  if (!input.is_string()) return false;
  for (auto piece : SplitOnSpace(input.get_string()))
    if (piece == std::string_view(reference.get_string())) return true;
  return false;
}

// `input in reference` (operators.py in_): list items by ==, a substring of a string, a key of
// a dict; anything else is Python's TypeError, so false.
bool In(const json::value& input, const json::value& reference) {
  if (reference.is_array()) {
    for (const auto& x : reference.get_array())
      if (Equal(input, x)) return true;
    return false;
  }
  if (reference.is_string())
    return input.is_string() &&
           std::string_view(reference.get_string()).find(std::string_view(input.get_string())) !=
               std::string_view::npos;
  if (reference.is_object())
    return input.is_string() && reference.get_object().contains(input.get_string());
  return false;
}

Result<std::shared_ptr<const std::regex>> CompileRegex(const json::value& v) {
  if (!v.is_string()) return std::shared_ptr<const std::regex>();
  try {
    return std::make_shared<const std::regex>(std::string(v.get_string()), std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return Status::InvalidArgument(fmt::format("invalid regular expression \"{}\": {}",
                                               std::string(v.get_string()), e.what()));
  }
}

// boolean_expression / property_match: operators.py's OPERATORS, each wrapped as get_operator
// does (a TypeError is false).
struct BoolExpr : Filter {
  std::unique_ptr<Expr> expr, reference;  // reference: null when property_value is a constant
  json::value constant;
  std::string op;
  std::shared_ptr<const std::regex> regex;  // a constant regex, compiled once
  Result<bool> Test(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value v, expr->Eval(item, ctx));
    json::value evaluated;  // a constant reference is used in place, not copied per item
    if (reference) {
      CC_ASSIGN_OR_RETURN(evaluated, reference->Eval(item, ctx));
    }
    const json::value& ref = reference ? evaluated : constant;
    if (op == "eq") return Equal(v, ref);
    if (op == "not_eq") return !Equal(v, ref);
    if (op == "in") return In(v, ref);
    if (op == "in_multi") return InMulti(v, ref);
    if (op == "any_in_multi") {
      if (!ref.is_array()) return false;
      for (const auto& r : ref.get_array())
        if (InMulti(v, r)) return true;
      return false;
    }
    if (op == "regex") {
      std::shared_ptr<const std::regex> re = regex;
      if (!re) {
        auto compiled = CompileRegex(ref);
        if (!compiled.ok()) return false;
        re = *compiled;
      }
      if (!re || !v.is_string()) return false;
      std::string_view s = v.get_string();
      return std::regex_search(s.begin(), s.end(), *re);
    }
    if (op == "gt" || op == "gte") {  // operators.py greater_than: str > int is True
      bool vi = v.is_int64() || v.is_uint64() || v.is_bool();
      bool ri = ref.is_int64() || ref.is_uint64() || ref.is_bool();
      if (v.is_string() && ri) return true;
      if (vi && ref.is_string()) return false;
    }
    auto cmp = Compare(v, ref);
    if (!cmp) return false;  // Python's TypeError
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

const std::set<std::string> kOperators = {"eq", "not_eq", "in", "in_multi", "any_in_multi",
                                          "lt", "lte",    "gt", "gte",      "regex"};

}  // namespace

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
        return Bad(
            path + ".operator",
            "must be one of eq, not_eq, in, in_multi, any_in_multi, lt, lte, gt, gte, regex");
      f->op = std::string(op->get_string());
    }
    const json::value* pv = o.if_contains("property_value");
    if (!pv) return Bad(path + ".property_value", "is required");
    // filters/factory.py: the reference is an expression (a literal is a constant).
    if (pv->is_object()) {
      CC_ASSIGN_OR_RETURN(f->reference, CompileExpr(*pv, path + ".property_value", c));
    } else {  // a constant: check what HQ would only find out per document
      f->constant = *pv;
      if (f->op == "in" && !pv->is_array() && !pv->is_string())
        return Bad(path + ".property_value", "must be a list for operator in");
      if (f->op == "in_multi" && pv->is_array())
        return Bad(path + ".property_value",
                   "in_multi takes one value (HQ tests `value in input.split(' ')`); for a list "
                   "use any_in_multi");
      if (f->op == "any_in_multi" && !pv->is_array())
        return Bad(path + ".property_value", "must be a list for operator any_in_multi");
      if (f->op == "regex") {
        auto re = CompileRegex(*pv);
        if (!re.ok()) return Bad(path + ".property_value", std::string(re.status().message()));
        f->regex = *re;
      }
    }
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

}  // namespace commcare::pillows::ucr::internal
