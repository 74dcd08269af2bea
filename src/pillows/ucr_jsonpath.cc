// The UCR `jsonpath` expression (specs.py JsonpathExpressionSpec over jsonpath_ng): the common
// subset of JSONPath, parsed when the config loads: an optional `$`, `.name`, `['name']`,
// `[n]` (negative from the end), `[*]` / `.*`, and `..name` (at any depth). No match gives null,
// one match its value, several a list.
#include <fmt/format.h>

#include "pillows/ucr_internal.h"

namespace commcare::pillows::ucr::internal {
namespace {

struct Step {
  enum Kind { kField, kIndex, kWild, kDeep } kind;
  std::string name;   // kField, kDeep
  int64_t index = 0;  // kIndex
};

bool IsNameChar(char ch) {
  return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '@' || ch == '#' ||
         ch == '-';
}

Result<std::vector<Step>> ParsePath(std::string_view s) {
  std::vector<Step> steps;
  size_t i = 0;
  auto err = [&](const std::string& what) {
    return Status::InvalidArgument(fmt::format("{} at offset {}", what, i));
  };
  auto name = [&]() {
    size_t b = i;
    while (i < s.size() && IsNameChar(s[i])) ++i;
    return std::string(s.substr(b, i - b));
  };
  if (i < s.size() && s[i] == '$') ++i;
  bool need_sep = i > 0;
  while (i < s.size()) {
    if (s.substr(i, 2) == "..") {
      i += 2;
      std::string n = name();
      if (n.empty()) return err("expected a name after '..'");
      steps.push_back({Step::kDeep, n});
    } else if (s[i] == '.' || !need_sep) {
      if (s[i] == '.') ++i;
      if (i < s.size() && s[i] == '*') {
        ++i;
        steps.push_back({Step::kWild, {}});
        need_sep = true;
        continue;
      }
      std::string n = name();
      if (n.empty()) return err("expected a name");
      steps.push_back({Step::kField, n});
    } else if (s[i] == '[') {
      size_t close = s.find(']', i);
      if (close == std::string_view::npos) return err("expected ']'");
      std::string_view in = s.substr(i + 1, close - i - 1);
      if (in == "*") {
        steps.push_back({Step::kWild, {}});
      } else if (in.size() >= 2 && (in.front() == '\'' || in.front() == '"') &&
                 in.back() == in.front()) {
        steps.push_back({Step::kField, std::string(in.substr(1, in.size() - 2))});
      } else {
        try {
          size_t used = 0;
          int64_t k = std::stoll(std::string(in), &used);
          if (used != in.size()) return err("unsupported subscript");
          steps.push_back({Step::kIndex, {}, k});
        } catch (const std::exception&) {
          return err("unsupported subscript (filters and slices are not supported)");
        }
      }
      i = close + 1;
    } else {
      return err(fmt::format("unexpected '{}'", s[i]));
    }
    need_sep = true;
  }
  return steps;
}

void Deep(const json::value& v, const std::string& n, std::vector<const json::value*>* out) {
  if (v.is_object()) {
    for (const auto& kv : v.get_object()) {
      if (kv.key() == n) out->push_back(&kv.value());
      Deep(kv.value(), n, out);
    }
  } else if (v.is_array()) {
    for (const auto& x : v.get_array()) Deep(x, n, out);
  }
}

struct JsonPath : Expr {
  std::vector<Step> steps;
  std::string datatype;
  Result<json::value> Eval(const json::value& item, EvalContext&) const override {
    std::vector<const json::value*> cur = {&item}, next;
    for (const auto& st : steps) {
      next.clear();
      for (const json::value* v : cur) {
        if (st.kind == Step::kField && v->is_object()) {
          if (const json::value* x = v->get_object().if_contains(st.name)) next.push_back(x);
        } else if (st.kind == Step::kIndex && v->is_array()) {
          auto n = static_cast<int64_t>(v->get_array().size());
          int64_t k = st.index < 0 ? st.index + n : st.index;
          if (k >= 0 && k < n) next.push_back(&v->get_array()[static_cast<size_t>(k)]);
        } else if (st.kind == Step::kWild) {
          if (v->is_array())
            for (const auto& x : v->get_array()) next.push_back(&x);
          else if (v->is_object())
            for (const auto& kv : v->get_object()) next.push_back(&kv.value());
        } else if (st.kind == Step::kDeep) {
          Deep(*v, st.name, &next);
        }
      }
      cur.swap(next);
    }
    if (cur.empty()) return json::value();
    if (cur.size() == 1) return Coerce(*cur[0], datatype);
    json::array out;
    for (const json::value* v : cur) out.push_back(Coerce(*v, datatype));
    return json::value(std::move(out));
  }
};

}  // namespace

Result<std::unique_ptr<Expr>> CompileJsonPath(const json::object& o, const std::string& path) {
  const json::value* p = o.if_contains("jsonpath");
  if (!p || !p->is_string() || p->get_string().empty())
    return Bad(path + ".jsonpath", "is required (a string)");
  auto steps = ParsePath(p->get_string());
  if (!steps.ok()) return Bad(path + ".jsonpath", steps.status().message());
  auto e = std::make_unique<JsonPath>();
  e->steps = std::move(steps).value();
  CC_ASSIGN_OR_RETURN(e->datatype, Datatype(o, path, false));
  return std::unique_ptr<Expr>(std::move(e));
}

}  // namespace commcare::pillows::ucr::internal
