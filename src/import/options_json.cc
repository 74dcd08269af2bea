// Import and bulk edit options to and from JSON (importer.h).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <set>

#include "commcare/importer.h"

namespace commcare {

namespace json = boost::json;

namespace {

// Reads the fields of an object by name; the first problem is kept.
class Reader {
 public:
  explicit Reader(const json::object& o) : o_(o) {}
  void Str(const char* k, std::string* out) {
    if (const auto* v = Seen(k); v) {
      if (v->is_string())
        *out = std::string(v->get_string());
      else
        Bad(k, "must be a string");
    }
  }
  void Bool(const char* k, bool* out) {
    if (const auto* v = Seen(k); v) {
      if (v->is_bool())
        *out = v->get_bool();
      else
        Bad(k, "must be true or false");
    }
  }
  template <typename I>
  void Int(const char* k, I* out) {
    if (const auto* v = Seen(k); v) {
      if (v->is_int64())
        *out = static_cast<I>(v->get_int64());
      else
        Bad(k, "must be a whole number");
    }
  }
  void Map(const char* k, std::map<std::string, std::string>* out) {
    const auto* v = Seen(k);
    if (!v) return;
    if (!v->is_object()) return Bad(k, "must be an object of strings");
    for (const auto& kv : v->get_object()) {
      if (!kv.value().is_string()) return Bad(k, "must be an object of strings");
      (*out)[std::string(kv.key())] = std::string(kv.value().get_string());
    }
  }
  void Object(const char* k, std::string* out) {
    if (const auto* v = Seen(k); v) {
      if (v->is_object())
        *out = json::serialize(*v);
      else
        Bad(k, "must be an object");
    }
  }
  Status Done() {
    if (!error_.ok()) return error_;
    for (const auto& kv : o_)
      if (!seen_.count(std::string(kv.key())))
        return Status::InvalidArgument(fmt::format("{}: unknown field", std::string(kv.key())));
    return Status::Ok();
  }

 private:
  const json::value* Seen(const char* k) {
    seen_.insert(k);
    const json::value* v = o_.if_contains(k);
    return v && !v->is_null() ? v : nullptr;
  }
  void Bad(const char* k, const char* what) {
    if (error_.ok()) error_ = Status::InvalidArgument(fmt::format("{}: {}", k, what));
  }
  const json::object& o_;
  std::set<std::string> seen_;
  Status error_;
};

Result<json::object> Object(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("options: must be a JSON object");
  return v.get_object();
}

json::object MapJson(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

}  // namespace

Result<CaseImportOptions> CaseImportOptionsFromJson(std::string_view text) {
  CC_ASSIGN_OR_RETURN(json::object o, Object(text));
  CaseImportOptions r;
  Reader rd(o);
  rd.Str("domain", &r.domain);
  rd.Str("case_type", &r.case_type);
  rd.Str("search_field", &r.search_field);
  rd.Str("search_column", &r.search_column);
  rd.Bool("create_new", &r.create_new);
  rd.Map("columns", &r.columns);
  rd.Str("user_id", &r.user_id);
  rd.Str("username", &r.username);
  rd.Bool("dry_run", &r.dry_run);
  rd.Str("import_id", &r.import_id);
  rd.Int("chunk_size", &r.chunk_size);
  rd.Str("result_path", &r.result_path);
  rd.Int("time", &r.time);
  CC_RETURN_IF_ERROR(rd.Done());
  return r;
}

std::string CaseImportOptionsToJson(const CaseImportOptions& o) {
  return json::serialize(json::object{{"domain", o.domain},
                                      {"case_type", o.case_type},
                                      {"search_field", o.search_field},
                                      {"search_column", o.search_column},
                                      {"create_new", o.create_new},
                                      {"columns", MapJson(o.columns)},
                                      {"user_id", o.user_id},
                                      {"username", o.username},
                                      {"dry_run", o.dry_run},
                                      {"import_id", o.import_id},
                                      {"chunk_size", o.chunk_size},
                                      {"result_path", o.result_path},
                                      {"time", o.time}});
}

Result<BulkEditOptions> BulkEditOptionsFromJson(std::string_view text) {
  CC_ASSIGN_OR_RETURN(json::object o, Object(text));
  BulkEditOptions r;
  Reader rd(o);
  rd.Str("domain", &r.domain);
  rd.Object("filter", &r.filter_json);
  rd.Map("set", &r.set);
  rd.Bool("close", &r.close);
  rd.Str("user_id", &r.user_id);
  rd.Str("username", &r.username);
  rd.Bool("preview", &r.preview);
  rd.Str("edit_id", &r.edit_id);
  rd.Int("chunk_size", &r.chunk_size);
  rd.Int("time", &r.time);
  CC_RETURN_IF_ERROR(rd.Done());
  return r;
}

std::string BulkEditOptionsToJson(const BulkEditOptions& o) {
  boost::system::error_code ec;
  json::value filter = json::parse(o.filter_json, ec);
  return json::serialize(json::object{{"domain", o.domain},
                                      {"filter", ec ? json::value(json::object()) : filter},
                                      {"set", MapJson(o.set)},
                                      {"close", o.close},
                                      {"user_id", o.user_id},
                                      {"username", o.username},
                                      {"preview", o.preview},
                                      {"edit_id", o.edit_id},
                                      {"chunk_size", o.chunk_size},
                                      {"time", o.time}});
}

}  // namespace commcare
