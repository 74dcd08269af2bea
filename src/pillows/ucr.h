// User Configurable Reports: data sources compiled from CommCare's JSON config and evaluated
// against case and form documents into the rows of one SQL table per data source.
#pragma once

#include <boost/json.hpp>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/engine.h"
#include "pillows/processor.h"

namespace commcare::pillows::ucr {

namespace json = boost::json;

struct DataSource;

// A domain's users, groups and locations as HQ's documents (CommCareUser, Group, Location), for
// related_doc, get_case_sharing_groups, get_reporting_groups and ancestor_location. The host
// backs it with the MetaStore; without one those expressions find nothing.
class Directory {
 public:
  virtual ~Directory() = default;
  // The document of doc_type with the id in the domain; NotFound when there is none.
  virtual Result<json::object> Get(std::string_view domain, std::string_view doc_type,
                                   std::string_view id) = 0;
  // A user's case-sharing (else reporting) groups as Group documents; none for an unknown user.
  virtual Result<json::array> Groups(std::string_view domain, std::string_view user_id,
                                     bool case_sharing) = 0;
  // The ids of the domain's documents of doc_type (CommCareUser: mobile workers; Location),
  // for a data source on them to be rebuilt. None by default.
  virtual Result<std::vector<std::string>> Ids(std::string_view /*domain*/,
                                               std::string_view /*doc_type*/) {
    return std::vector<std::string>();
  }
  // A change says a user of the domain changed: an id not yet known is looked up at once,
  // not after the cache's usual wait.
  virtual void Forget(std::string_view /*domain*/) {}
};

// What an expression or filter sees besides its item.
struct EvalContext {
  const json::value* root = nullptr;  // the document
  Engine* engine = nullptr;           // related_doc, ledger_balances
  Directory* directory = nullptr;     // users, groups and locations
  std::string domain;
  int64_t iteration = 0;  // base_item_expression's repeat iteration
  const DataSource* source = nullptr;
  int depth = 0;  // nesting of named and related lookups (cycles stop at a limit)
};

class Expr {
 public:
  virtual ~Expr() = default;
  virtual Result<json::value> Eval(const json::value& item, EvalContext& ctx) const = 0;
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual Result<bool> Test(const json::value& item, EvalContext& ctx) const = 0;
};

struct Column {
  std::string id;
  std::string datatype;  // string, integer, small_integer, decimal, date, datetime, boolean, array
  bool nullable = true;
};

struct Indicator {
  std::string kind;  // boolean, expression, choice_list, ledger_balances, raw
  std::string column_id;
  std::string datatype;
  std::unique_ptr<Expr> expr;        // expression, raw, choice_list, ledger_balances (case id)
  std::unique_ptr<Filter> filter;    // boolean
  std::vector<std::string> choices;  // choice_list choices, ledger_balances product codes
  bool multiple = false;             // choice_list select_style "multiple"
  std::string ledger_section;
  bool due_list = false;  // due_list_date: each balance as 1970-01-01 plus that many days
};

struct DataSource {
  std::string domain, table_id, display_name, referenced_doc_type;
  std::string config;  // the JSON it was compiled from
  std::unique_ptr<Filter> filter;
  std::unique_ptr<Expr> base_item;
  std::map<std::string, std::unique_ptr<Expr>> named_expressions;
  std::map<std::string, std::unique_ptr<Filter>> named_filters;
  std::vector<Indicator> indicators;
  std::vector<Column> columns;         // the indicators' columns (after doc_id, inserted_at and,
                                       // with a base item, repeat_iteration)
  std::string delete_sql, insert_sql;  // the statements the pillow runs per document
  bool needs_xform_ids = false;  // the config reads a case's xform_ids (read from its history)
  bool deactivated = false;      // is_deactivated: no rows are written
  // "ucr_<domain>_<table_id>" with anything but [A-Za-z0-9_] as '_'.
  std::string TableName() const;
  // Rows for a document: none if the filter rejects it; with a base item, one per item.
  Result<std::vector<std::vector<json::value>>> Rows(const json::value& doc, Engine* engine,
                                                     Directory* directory = nullptr) const;
};

// Compiles a data source config; InvalidArgument names the offending path, e.g.
// "configured_indicators[3].expression.type: unknown expression type 'foo'".
Result<std::unique_ptr<DataSource>> Compile(std::string_view config_json);

// A UCR filter compiled on its own (a case rule's UCRFilterDefinition), tested against
// documents of a domain. No named expressions or filters (there is no data source to hold
// them).
class DocFilter {
 public:
  // InvalidArgument names the path under where ("criteria[0].configured_filter.type: ...").
  static Result<std::unique_ptr<DocFilter>> Compile(const json::value& spec,
                                                    const std::string& where);
  ~DocFilter();
  // Whether doc passes; engine serves related_doc and friends (may be null).
  Result<bool> Test(const json::value& doc, Engine* engine, std::string_view domain) const;

 private:
  DocFilter();
  std::unique_ptr<DataSource> scope_;  // what the compiler and the evaluator refer to
  std::unique_ptr<Filter> filter_;
};

// The UCR document of a case (CommCare's CommCareCase JSON: fields, properties at top level).
json::object CaseDocument(const CaseRecord& c);
// The UCR document of a form (XFormInstance JSON with the form's data under "form").
Result<json::object> FormDocument(const FormRecord& f, std::string_view xml);

// The ucr pillow's processor, with the data-source management the host exposes.
class UcrProcessor : public Processor {
 public:
  // Stores (or replaces) a data source, (re)creates its table and fills it from the primary
  // store; returns the number of rows.
  virtual Result<int64_t> Load(SqlDb& db, Engine& engine, std::string_view config_json) = 0;
  // Empties a data source's table and fills it from the primary store.
  virtual Result<int64_t> Rebuild(SqlDb& db, Engine& engine, std::string_view domain,
                                  std::string_view table_id) = 0;
  // Where users, groups and locations are read from (none until set).
  virtual void SetDirectory(std::shared_ptr<Directory> directory) = 0;
};
std::unique_ptr<UcrProcessor> NewUcrProcessor();
// Gives the ucr pillow of a host from PillowHost::Open its Directory (the host's MetaStore);
// before any change is processed.
Status SetDirectory(PillowHost* host, std::shared_ptr<Directory> directory);

}  // namespace commcare::pillows::ucr
