// Compiling a UCR data source config: the shared checks, indicators, columns, statements.
#include <fmt/format.h>

#include <set>

#include "pillows/ucr_internal.h"
#include "util/hash.h"

namespace commcare::pillows::ucr {
namespace internal {

std::string Quote(const std::string& id) {
  std::string q = "\"";
  for (char ch : id) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

}  // namespace internal

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

namespace internal {

// ---- the compiler ----

Status Bad(const std::string& path, const std::string& what) {
  return Status::InvalidArgument(fmt::format("{}: {}", path, what));
}

// Required sub-expression / filter helpers.
Result<std::unique_ptr<Expr>> SubExpr(const json::object& o, const char* key,
                                      const std::string& path, Compiler& c, bool required) {
  const json::value* v = o.if_contains(key);
  if (!v) {
    if (!required) return std::unique_ptr<Expr>();
    return Bad(path + "." + key, "is required");
  }
  return CompileExpr(*v, path + "." + key, c);
}

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

}  // namespace internal

namespace {

using internal::Bad;
using internal::CompileExpr;
using internal::CompileFilter;
using internal::Compiler;
using internal::CompileTransform;
using internal::Datatype;
using internal::PropertyGetter;
using internal::Quote;
using internal::StringList;
using internal::SubExpr;
using internal::TypeOf;

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

// The count indicator's filter.
struct Always : Filter {
  Result<bool> Test(const json::value&, EvalContext&) const override { return true; }
};
// An expression with an indicator transform applied to its value.
struct Transformed : Expr {
  std::unique_ptr<Expr> expr;
  internal::Transform fn;
  Transformed(std::unique_ptr<Expr> e, internal::Transform f)
      : expr(std::move(e)), fn(std::move(f)) {}
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value v, expr->Eval(item, ctx));
    return fn(v, ctx);
  }
};

}  // namespace

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
  if (ds->referenced_doc_type != "CommCareCase" && ds->referenced_doc_type != "XFormInstance" &&
      ds->referenced_doc_type != "CommCareUser" && ds->referenced_doc_type != "Location")
    return Bad("referenced_doc_type",
               "must be CommCareCase, XFormInstance, CommCareUser or Location");
  // A case's xform_ids cost a history read per case: only for a config that names them.
  ds->needs_xform_ids = ds->referenced_doc_type == "CommCareCase" &&
                        config_json.find("xform_ids") != std::string_view::npos;
  // models.py validations: a document failing one is kept out of the table (InvalidUCRData).
  // Not evaluated here, so a data source that has some is refused rather than given rows HQ
  // would not have.
  if (const json::value* va = o.if_contains("validations");
      va && !(va->is_array() && va->get_array().empty()))
    return Bad("validations", "are not supported (HQ keeps failing documents out of the table)");
  // models.py is_deactivated: a deactivated data source stops being updated.
  if (const json::value* d = o.if_contains("is_deactivated")) {
    if (!d->is_bool()) return Bad("is_deactivated", "must be true or false");
    ds->deactivated = d->get_bool();
  }
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
  // models.py _get_filter: an empty configured_filter ({} is falsy) is no filter.
  if (const json::value* f = o.if_contains("configured_filter");
      f && !f->is_null() && !(f->is_object() && f->get_object().empty())) {
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
    if (ind.kind == "boolean" || ind.kind == "small_boolean") {
      ind.kind = "boolean";
      const json::value* f = io.if_contains("filter");
      if (!f) return Bad(path + ".filter", "is required");
      CC_ASSIGN_OR_RETURN(ind.filter, CompileFilter(*f, path + ".filter", c));
      ind.datatype = "boolean";
      CC_RETURN_IF_ERROR(add_column(ind.column_id, "boolean", false, path + ".column_id"));
    } else if (ind.kind == "count") {  // indicators/factory.py: a boolean that is always true
      ind.kind = "boolean";
      ind.filter = std::make_unique<Always>();
      ind.datatype = "boolean";
      CC_RETURN_IF_ERROR(add_column(ind.column_id, "boolean", false, path + ".column_id"));
    } else if (ind.kind == "expression") {
      CC_ASSIGN_OR_RETURN(ind.datatype, Datatype(io, path, true));
      CC_ASSIGN_OR_RETURN(ind.expr, SubExpr(io, "expression", path, c));
      // indicators/specs.py ExpressionIndicatorSpec.parsed_expression: the transform applies
      // to the expression's value, before the datatype.
      if (const json::value* t = io.if_contains("transform")) {
        CC_ASSIGN_OR_RETURN(auto fn, CompileTransform(*t, path + ".transform"));
        if (fn) ind.expr = std::make_unique<Transformed>(std::move(ind.expr), std::move(fn));
      }
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
    } else if (ind.kind == "ledger_balances" || ind.kind == "due_list_date") {
      // indicators/__init__.py DueListDateIndicator: ledger_balances' spec, date columns.
      ind.due_list = ind.kind == "due_list_date";
      ind.kind = "ledger_balances";
      const json::value* sec = io.if_contains("ledger_section");
      if (!sec || !sec->is_string()) return Bad(path + ".ledger_section", "is required");
      ind.ledger_section = std::string(sec->get_string());
      CC_ASSIGN_OR_RETURN(ind.choices, StringList(io, "product_codes", path, true));
      CC_ASSIGN_OR_RETURN(ind.expr, SubExpr(io, "case_id_expression", path, c));
      for (const auto& code : ind.choices)
        CC_RETURN_IF_ERROR(add_column(Derived(ind.column_id, code),
                                      ind.due_list ? "date" : "integer", false,
                                      path + ".product_codes"));
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

DocFilter::DocFilter() = default;
DocFilter::~DocFilter() = default;

Result<std::unique_ptr<DocFilter>> DocFilter::Compile(const json::value& spec,
                                                      const std::string& where) {
  std::unique_ptr<DocFilter> f(new DocFilter());
  f->scope_ = std::make_unique<DataSource>();
  Compiler c{f->scope_.get(), {}, {}};
  CC_ASSIGN_OR_RETURN(f->filter_, CompileFilter(spec, where, c));
  if (!c.expr_refs.empty() || !c.filter_refs.empty()) {
    const std::string& ref = !c.expr_refs.empty() ? *c.expr_refs.begin() : *c.filter_refs.begin();
    return Bad(ref.substr(ref.find('\x01') + 1),
               "a named expression or filter needs a data source; write it out here");
  }
  return f;
}

Result<bool> DocFilter::Test(const json::value& doc, Engine* engine,
                             std::string_view domain) const {
  EvalContext ctx;
  ctx.root = &doc;
  ctx.engine = engine;
  ctx.domain = std::string(domain);
  ctx.source = scope_.get();
  return filter_->Test(doc, ctx);
}

}  // namespace commcare::pillows::ucr
