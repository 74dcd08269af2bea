// UCR filters: the filter types, how each tests an item, and their compiler.
#include <fmt/format.h>

#include <set>

#include "pillows/ucr_internal.h"

namespace commcare::pillows::ucr::internal {
namespace {

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

}  // namespace commcare::pillows::ucr::internal
