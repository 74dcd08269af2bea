// UCR expressions over lists and the later additions to HQ's factory: coalesce,
// concatenate_strings, filter_items, map_items, reduce_items, sort_items, flatten, add_hours,
// utcnow, indexed_case (HQ's macro over related_doc), get_case_forms and get_subcases; the
// Directory's get_case_sharing_groups, get_reporting_groups, ancestor_location,
// location_type_name and location_parent_id; the door to evaluator and jsonpath.
#include <fmt/format.h>

#include <algorithm>

#include "commcare/storage/primary_store.h"
#include "pillows/ucr_internal.h"
#include "util/time.h"

namespace commcare::pillows::ucr::internal {
namespace {

// list_specs.py _evaluate_items_expression: anything but a list is no items.
Result<json::array> Items(const Expr& e, const json::value& item, EvalContext& ctx) {
  CC_ASSIGN_OR_RETURN(json::value v, e.Eval(item, ctx));
  if (!v.is_array()) return json::array();
  return std::move(v.get_array());
}

// specs.py CoalesceExpressionSpec: the default when the value is None or ''.
struct Coalesce : Expr {
  std::unique_ptr<Expr> expr, dflt;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value v, expr->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value d, dflt->Eval(item, ctx));
    if (v.is_null() || (v.is_string() && v.get_string().empty())) return d;
    return v;
  }
};
// ConcatenateStrings: the separator between the values that are true in Python.
struct Concatenate : Expr {
  std::vector<std::unique_ptr<Expr>> exprs;
  std::string separator;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    std::string out;
    bool first = true;
    for (const auto& e : exprs) {
      CC_ASSIGN_OR_RETURN(json::value v, e->Eval(item, ctx));
      if (!Truthy(v)) continue;
      if (!first) out += separator;
      out += AsString(v);
      first = false;
    }
    return json::value(out);
  }
};
struct FilterItems : Expr {
  std::unique_ptr<Expr> items;
  std::unique_ptr<Filter> filter;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::array xs, Items(*items, item, ctx));
    json::array out;
    for (auto& x : xs) {
      CC_ASSIGN_OR_RETURN(bool keep, filter->Test(x, ctx));
      if (keep) out.push_back(std::move(x));
    }
    return json::value(std::move(out));
  }
};
struct MapItems : Expr {
  std::unique_ptr<Expr> items, map;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::array xs, Items(*items, item, ctx));
    json::array out;
    for (const auto& x : xs) {
      CC_ASSIGN_OR_RETURN(json::value v, map->Eval(x, ctx));
      out.push_back(std::move(v));
    }
    return json::value(std::move(out));
  }
};

// utils.py aggregate_items: sum and min/max give None where Python raises TypeError.
json::value Aggregate(const json::array& xs, const std::string& fn) {
  if (fn == "count") return json::value(static_cast<int64_t>(xs.size()));
  if (fn == "first_item") return xs.empty() ? json::value() : xs.front();
  if (fn == "last_item") return xs.empty() ? json::value() : xs.back();
  if (fn == "join") {
    std::string out;
    for (const auto& x : xs) out += AsString(x);
    return json::value(out);
  }
  if (fn == "sum") {
    bool all_int = true;
    int64_t isum = 0;
    double dsum = 0;
    for (const auto& x : xs) {
      if (!x.is_number() && !x.is_bool()) return json::value();
      double d;
      AsNumber(x, &d);
      dsum += d;
      if (x.is_double())
        all_int = false;
      else
        isum += x.is_bool() ? x.get_bool() : x.to_number<int64_t>();
    }
    return all_int ? json::value(isum) : json::value(dsum);
  }
  if (xs.empty()) return json::value();  // min, max
  const json::value* best = &xs.front();
  for (const auto& x : xs) {
    auto c = Compare(x, *best);
    if (!c) return json::value();
    if ((fn == "min" && *c < 0) || (fn == "max" && *c > 0)) best = &x;
  }
  return *best;
}

struct ReduceItems : Expr {
  std::unique_ptr<Expr> items;
  std::string fn;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value v, items->Eval(item, ctx));
    if (!v.is_array()) return json::value();
    return Aggregate(v.get_array(), fn);
  }
};
// list_specs.py SortItemsExpressionSpec: key (value is not None, value), nulls first (last with
// DESC), stable; a TypeError between keys gives [].
struct SortItems : Expr {
  std::unique_ptr<Expr> items, key;
  bool desc = false;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::array xs, Items(*items, item, ctx));
    std::vector<std::pair<json::value, size_t>> keys;
    for (size_t i = 0; i < xs.size(); ++i) {
      CC_ASSIGN_OR_RETURN(json::value k, key->Eval(xs[i], ctx));
      keys.emplace_back(std::move(k), i);
    }
    bool type_error = false;
    auto less = [&](const json::value& a, const json::value& b) {
      if (a.is_null() || b.is_null()) return a.is_null() && !b.is_null();
      auto c = Compare(a, b);
      if (!c) type_error = true;
      return c && *c < 0;
    };
    std::stable_sort(keys.begin(), keys.end(), [&](const auto& a, const auto& b) {
      return desc ? less(b.first, a.first) : less(a.first, b.first);
    });
    if (type_error) return json::value(json::array());
    json::array out;
    for (const auto& k : keys) out.push_back(xs[k.second]);
    return json::value(std::move(out));
  }
};
// list_specs.py FlattenExpressionSpec: one level; [] unless every item is a list.
struct Flatten : Expr {
  std::unique_ptr<Expr> items;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::array xs, Items(*items, item, ctx));
    json::array out;
    for (const auto& x : xs) {
      if (!x.is_array()) return json::value(json::array());
      for (const auto& y : x.get_array()) out.push_back(y);
    }
    return json::value(std::move(out));
  }
};
// date_specs.py AddHoursExpressionSpec: a datetime plus int(count) hours, as UTC ISO text.
struct AddHours : Expr {
  std::unique_ptr<Expr> date, count;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value dv, date->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value cv, count->Eval(item, ctx));
    int64_t us;
    double n;
    if (!dv.is_string() || !util::ParseIsoTime(dv.get_string(), &us) || !AsNumber(cv, &n))
      return json::value();
    return json::value(util::FormatIsoTime(us + static_cast<int64_t>(n) * 3'600'000'000));
  }
};
struct UtcNow : Expr {
  Result<json::value> Eval(const json::value&, EvalContext&) const override {
    return json::value(util::FormatIsoTime(util::NowMicros()));
  }
};

// specs.py SubcasesExpressionSpec (get_subcases): the case documents of every case with an
// index (child or extension) to the case, as CommCareCase.objects.get_reverse_indexed_cases
// reads them: deleted cases left out, closed ones kept. An index lives in its own case's
// database, so every database is asked; each case once, by case id within a database.
struct Subcases : Expr {
  std::unique_ptr<Expr> case_id;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value idv, case_id->Eval(item, ctx));
    json::array out;
    if (!idv.is_string() || idv.get_string().empty() || !ctx.engine) return json::value(out);
    const std::string id(idv.get_string());
    std::vector<std::string> seen;
    for (int d = 0; d < ctx.engine->NumDatabases(); ++d) {
      CC_ASSIGN_OR_RETURN(auto edges,
                          ctx.engine->Database(d)->IndicesPointingAt(std::span(&id, 1)));
      for (const auto& e : edges) {
        if (std::find(seen.begin(), seen.end(), e.case_id) != seen.end()) continue;
        seen.push_back(e.case_id);
        auto c = ctx.engine->GetCase(ctx.domain, e.case_id);
        if (!c.ok()) {
          if (c.status().IsNotFound()) continue;
          return c.status();
        }
        if (!c->deleted) out.push_back(CaseDocument(*c));
      }
    }
    return json::value(std::move(out));
  }
};

// specs.py FormsExpressionSpec (get_case_forms): the form documents of the forms in the case's
// history, in order, each once; only those whose xmlns is listed when xmlns is given. No case
// id, or a case that does not exist: no forms.
struct CaseForms : Expr {
  std::unique_ptr<Expr> case_id;
  std::vector<std::string> xmlns;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value idv, case_id->Eval(item, ctx));
    json::array out;
    if (!idv.is_string() || idv.get_string().empty() || !ctx.engine) return json::value(out);
    auto history = ctx.engine->CaseHistory(ctx.domain, idv.get_string());
    if (!history.ok())
      return history.status().IsNotFound() ? Result<json::value>(json::value(out))
                                           : Result<json::value>(history.status());
    std::vector<std::string> seen;
    for (const auto& t : *history) {
      if (t.form_id.empty() || std::find(seen.begin(), seen.end(), t.form_id) != seen.end())
        continue;
      seen.push_back(t.form_id);
      auto f = ctx.engine->GetForm(ctx.domain, t.form_id);
      if (!f.ok()) {
        if (f.status().IsNotFound()) continue;
        return f.status();
      }
      if (!xmlns.empty() && std::find(xmlns.begin(), xmlns.end(), f->xmlns) == xmlns.end())
        continue;
      CC_ASSIGN_OR_RETURN(std::string xml, ctx.engine->GetFormXml(ctx.domain, t.form_id));
      CC_ASSIGN_OR_RETURN(json::object doc, FormDocument(*f, xml));
      out.push_back(std::move(doc));
    }
    return json::value(std::move(out));
  }
};

// specs.py _GroupsExpressionSpec (get_case_sharing_groups, get_reporting_groups): the Group
// documents of the user's case-sharing or reporting groups; none without a user id, or for a
// user who is not a mobile worker of the domain.
struct UserGroups : Expr {
  std::unique_ptr<Expr> user_id;
  bool case_sharing = true;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value idv, user_id->Eval(item, ctx));
    if (!Truthy(idv) || !idv.is_string() || !ctx.directory) return json::value(json::array());
    CC_ASSIGN_OR_RETURN(json::array groups,
                        ctx.directory->Groups(ctx.domain, idv.get_string(), case_sharing));
    return json::value(std::move(groups));
  }
};

// The Location document with the id, or null (NotFound and no Directory alike).
Result<json::value> LocationDoc(const json::value& id, EvalContext& ctx) {
  if (!id.is_string() || id.get_string().empty() || !ctx.directory) return json::value(nullptr);
  auto d = ctx.directory->Get(ctx.domain, "Location", id.get_string());
  if (!d.ok())
    return d.status().IsNotFound() ? Result<json::value>(json::value(nullptr))
                                   : Result<json::value>(d.status());
  return json::value(std::move(*d));
}

// corehq/apps/locations/ucr_expressions.py AncestorLocationExpression: the nearest ancestor
// (not the location itself) whose location type is location_type, as to_json without lineage,
// or its location_property; null when there is none.
struct AncestorLocation : Expr {
  std::unique_ptr<Expr> location_id, location_type;
  std::string property;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value id, location_id->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value type, location_type->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value loc, LocationDoc(id, ctx));
    for (int up = 0; loc.is_object() && up < 1000; ++up) {  // a cycle in bad data ends here
      CC_ASSIGN_OR_RETURN(loc, LocationDoc(Get(loc, "parent_location_id"), ctx));
      if (!loc.is_object() || !Equal(Get(loc, "location_type"), type)) continue;
      loc.get_object().erase("lineage");
      if (property.empty()) return loc;
      return Get(loc, property);
    }
    return json::value(nullptr);
  }
};

// ucr_expressions.py LocationTypeSpec (location_type_name): the location's type name.
struct LocationTypeName : Expr {
  std::unique_ptr<Expr> location_id;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value id, location_id->Eval(item, ctx));
    CC_ASSIGN_OR_RETURN(json::value loc, LocationDoc(id, ctx));
    return loc.is_object() ? Get(loc, "location_type") : json::value(nullptr);
  }
};

// extension_expressions.py indexed_case_expression: related_doc(CommCareCase) of the
// referenced_id of the first index of case_expression whose identifier is `index`.
json::value IndexedCaseSpec(const json::object& o) {
  const json::value* index = o.if_contains("index");
  json::value ident = index ? *index : json::value("parent");
  json::value indices = {
      {"type", "nested"},
      {"argument_expression", o.at("case_expression")},
      {"value_expression", {{"type", "property_name"}, {"property_name", "indices"}}}};
  json::value matching = {
      {"type", "filter_items"},
      {"items_expression", indices},
      {"filter_expression",
       {{"type", "boolean_expression"},
        {"operator", "eq"},
        {"property_value", ident},
        {"expression", {{"type", "property_name"}, {"property_name", "identifier"}}}}}};
  json::value id = {
      {"type", "nested"},
      {"argument_expression",
       {{"type", "array_index"}, {"array_expression", matching}, {"index_expression", 0}}},
      {"value_expression", {{"type", "property_name"}, {"property_name", "referenced_id"}}}};
  return {{"type", "related_doc"},
          {"related_doc_type", "CommCareCase"},
          {"doc_id_expression", id},
          {"value_expression", o.at("value_expression")}};
}

}  // namespace

Result<std::unique_ptr<Expr>> CompileItemsExpr(const std::string& type, const json::object& o,
                                               const std::string& path, Compiler& c) {
  if (type == "coalesce") {
    auto e = std::make_unique<Coalesce>();
    CC_ASSIGN_OR_RETURN(e->expr, SubExpr(o, "expression", path, c));
    CC_ASSIGN_OR_RETURN(e->dflt, SubExpr(o, "default_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "concatenate_strings") {
    auto e = std::make_unique<Concatenate>();
    const json::value* xs = o.if_contains("expressions");
    if (!xs || !xs->is_array()) return Bad(path + ".expressions", "must be a list");
    size_t i = 0;
    for (const auto& x : xs->get_array()) {
      CC_ASSIGN_OR_RETURN(auto ce, CompileExpr(x, fmt::format("{}.expressions[{}]", path, i++), c));
      e->exprs.push_back(std::move(ce));
    }
    const json::value* sep = o.if_contains("separator");
    if (!sep || !sep->is_string()) return Bad(path + ".separator", "is required (a string)");
    e->separator = std::string(sep->get_string());
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "filter_items") {
    auto e = std::make_unique<FilterItems>();
    CC_ASSIGN_OR_RETURN(e->items, SubExpr(o, "items_expression", path, c));
    const json::value* f = o.if_contains("filter_expression");
    if (!f) return Bad(path + ".filter_expression", "is required");
    CC_ASSIGN_OR_RETURN(e->filter, CompileFilter(*f, path + ".filter_expression", c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "map_items") {
    auto e = std::make_unique<MapItems>();
    CC_ASSIGN_OR_RETURN(e->items, SubExpr(o, "items_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->map, SubExpr(o, "map_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "reduce_items") {
    auto e = std::make_unique<ReduceItems>();
    CC_ASSIGN_OR_RETURN(e->items, SubExpr(o, "items_expression", path, c));
    const json::value* fn = o.if_contains("aggregation_fn");
    static const char* kFns[] = {"sum", "count", "min", "max", "first_item", "last_item", "join"};
    if (!fn || !fn->is_string() ||
        std::find(std::begin(kFns), std::end(kFns), std::string_view(fn->get_string())) ==
            std::end(kFns))
      return Bad(path + ".aggregation_fn",
                 "must be one of sum, count, min, max, first_item, last_item, join");
    e->fn = std::string(fn->get_string());
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "sort_items") {
    auto e = std::make_unique<SortItems>();
    CC_ASSIGN_OR_RETURN(e->items, SubExpr(o, "items_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->key, SubExpr(o, "sort_expression", path, c));
    if (const json::value* ord = o.if_contains("order")) {
      if (!ord->is_string() || (ord->get_string() != "ASC" && ord->get_string() != "DESC"))
        return Bad(path + ".order", "must be ASC or DESC");
      e->desc = ord->get_string() == "DESC";
    }
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "flatten") {
    auto e = std::make_unique<Flatten>();
    CC_ASSIGN_OR_RETURN(e->items, SubExpr(o, "items_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "add_hours") {
    auto e = std::make_unique<AddHours>();
    CC_ASSIGN_OR_RETURN(e->date, SubExpr(o, "date_expression", path, c));
    CC_ASSIGN_OR_RETURN(e->count, SubExpr(o, "count_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "get_case_forms") {
    auto e = std::make_unique<CaseForms>();
    CC_ASSIGN_OR_RETURN(e->case_id, SubExpr(o, "case_id_expression", path, c));
    if (const json::value* x = o.if_contains("xmlns"); x && !x->is_null()) {
      if (!x->is_array()) return Bad(path + ".xmlns", "must be a list of strings");
      for (const auto& v : x->get_array()) {
        if (!v.is_string()) return Bad(path + ".xmlns", "must be a list of strings");
        e->xmlns.emplace_back(v.get_string());
      }
    }
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "get_subcases") {
    auto e = std::make_unique<Subcases>();
    CC_ASSIGN_OR_RETURN(e->case_id, SubExpr(o, "case_id_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "get_case_sharing_groups" || type == "get_reporting_groups") {
    auto e = std::make_unique<UserGroups>();
    e->case_sharing = type == "get_case_sharing_groups";
    CC_ASSIGN_OR_RETURN(e->user_id, SubExpr(o, "user_id_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "ancestor_location") {
    auto e = std::make_unique<AncestorLocation>();
    CC_ASSIGN_OR_RETURN(e->location_id, SubExpr(o, "location_id", path, c));
    CC_ASSIGN_OR_RETURN(e->location_type, SubExpr(o, "location_type", path, c));
    if (const json::value* p = o.if_contains("location_property"); p && !p->is_null()) {
      if (!p->is_string()) return Bad(path + ".location_property", "must be a string");
      e->property = std::string(p->get_string());
    }
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "location_type_name") {
    auto e = std::make_unique<LocationTypeName>();
    CC_ASSIGN_OR_RETURN(e->location_id, SubExpr(o, "location_id_expression", path, c));
    return std::unique_ptr<Expr>(std::move(e));
  }
  if (type == "location_parent_id") {  // HQ's macro: related_doc(Location).parent_location_id
    const json::value* id = o.if_contains("location_id_expression");
    if (!id) return Bad(path + ".location_id_expression", "is required");
    return CompileExpr(
        json::value{{"type", "related_doc"},
                    {"related_doc_type", "Location"},
                    {"doc_id_expression", *id},
                    {"value_expression",
                     {{"type", "property_name"}, {"property_name", "parent_location_id"}}}},
        path, c);
  }
  if (type == "evaluator") return CompileEvaluator(o, path, c);
  if (type == "jsonpath") return CompileJsonPath(o, path);
  if (type == "utcnow") return std::unique_ptr<Expr>(std::make_unique<UtcNow>());
  if (type == "indexed_case") {
    // Compiled here first so that an error names the spec's own path, not the macro's.
    CC_RETURN_IF_ERROR(SubExpr(o, "case_expression", path, c).status());
    CC_RETURN_IF_ERROR(SubExpr(o, "value_expression", path, c).status());
    if (const json::value* i = o.if_contains("index"); i && !i->is_string())
      return Bad(path + ".index", "must be a string");
    return CompileExpr(IndexedCaseSpec(o), path, c);
  }
  return std::unique_ptr<Expr>();
}

}  // namespace commcare::pillows::ucr::internal
