// What the UCR files share (internal to src/pillows): value helpers, compiler checks, Quote.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "pillows/ucr.h"

namespace commcare::pillows::ucr::internal {

constexpr int kMaxDepth = 32;

// Values (ucr_eval.cc).
std::string AsString(const json::value& v);
bool AsNumber(const json::value& v, double* out);
bool AsDays(const json::value& v, int64_t* days);
int DaysInMonth(int y, int m);
std::string DateOf(int64_t days);
// Python's == (no coercion across types: "21" != 21).
bool Equal(const json::value& a, const json::value& b);
// Python 3's ordering; nullopt where Python raises TypeError (None, or str against a number).
std::optional<int> Compare(const json::value& a, const json::value& b);
// Python's truth value (None, False, 0, "", [] and {} are false).
bool Truthy(const json::value& v);
json::value Coerce(const json::value& v, const std::string& datatype);
const json::value& Get(const json::value& item, std::string_view key);

// The compiler (ucr_config.cc; CompileExpr and PropertyGetter in ucr_expressions.cc,
// CompileFilter in ucr_filters.cc).
struct Compiler {
  DataSource* ds;
  std::set<std::string> expr_refs, filter_refs;  // named references to check at the end
};

Status Bad(const std::string& path, const std::string& what);

Result<std::unique_ptr<Expr>> CompileExpr(const json::value& v, const std::string& path,
                                          Compiler& c);
Result<std::unique_ptr<Filter>> CompileFilter(const json::value& v, const std::string& path,
                                              Compiler& c);

// The list and later expression types (ucr_expressions_items.cc); null for another type.
Result<std::unique_ptr<Expr>> CompileItemsExpr(const std::string& type, const json::object& o,
                                               const std::string& path, Compiler& c);

// The evaluator expression (ucr_evaluator.cc).
Result<std::unique_ptr<Expr>> CompileEvaluator(const json::object& o, const std::string& path,
                                               Compiler& c);

// The Ethiopian calendar (ucr_ethiopian.cc): the two expressions, and the conversions the
// custom transforms of the same names share ("" for what does not convert, as HQ's).
Result<std::unique_ptr<Expr>> CompileEthiopianDate(const std::string& type, const json::object& o,
                                                   const std::string& path, Compiler& c);
json::value EthiopianToGregorian(const json::value& v);  // "2009-09-11" -> "2017-05-19"
json::value GregorianToEthiopian(const json::value& v);  // "2017-05-19" -> "2009-09-11"

// The jsonpath expression (ucr_jsonpath.cc).
Result<std::unique_ptr<Expr>> CompileJsonPath(const json::object& o, const std::string& path);

Result<std::unique_ptr<Expr>> SubExpr(const json::object& o, const char* key,
                                      const std::string& path, Compiler& c, bool required = true);
std::string TypeOf(const json::object& o, const std::string& path, Status* err);
Result<std::vector<std::string>> StringList(const json::object& o, const char* key,
                                            const std::string& path, bool required);
Result<std::string> Datatype(const json::object& o, const std::string& path, bool required);
Result<std::unique_ptr<Expr>> PropertyGetter(const json::object& o, const std::string& path);

// An indicator transform (ucr_transforms.cc): an empty function for {} (no transform). The
// context is for the transforms that look a user or an owner up (its Directory).
using Transform = std::function<json::value(const json::value&, EvalContext&)>;
Result<Transform> CompileTransform(const json::value& v, const std::string& path);

// SQL (ucr.cc).
std::string Quote(const std::string& id);

}  // namespace commcare::pillows::ucr::internal
