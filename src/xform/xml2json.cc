#include "xform/xml2json.h"

#include <expat.h>
#include <fmt/format.h>

#include <string>
#include <vector>

#include "util/time.h"

namespace commcare::xform {
namespace {

namespace json = boost::json;
constexpr char kSep = '\x01';

struct Frame {
  std::string name;
  std::string ns;
  json::object obj;
  std::string text;
};

struct State {
  XML_Parser parser = nullptr;
  std::vector<Frame> stack;
  json::object root;
  bool done = false;
  std::string error;
  void Fail(std::string e) {
    if (error.empty()) error = std::move(e);
    XML_StopParser(parser, XML_FALSE);
  }
};

void Split(const char* qname, std::string* ns, std::string* local) {
  std::string_view q(qname);
  auto p = q.find(kSep);
  if (p == std::string_view::npos) {
    ns->clear();
    *local = std::string(q);
  } else {
    *ns = std::string(q.substr(0, p));
    *local = std::string(q.substr(p + 1));
  }
}

bool Blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

void XMLCALL OnStart(void* ud, const XML_Char* name, const XML_Char** atts) {
  auto* st = static_cast<State*>(ud);
  if (st->stack.size() >= 256) return st->Fail("form XML nested deeper than 256 elements");
  Frame f;
  Split(name, &f.ns, &f.name);
  const std::string& parent_ns = st->stack.empty() ? std::string() : st->stack.back().ns;
  if (!f.ns.empty() && (st->stack.empty() || f.ns != parent_ns)) f.obj["@xmlns"] = f.ns;
  for (int i = 0; atts[i]; i += 2) {
    std::string ans, alocal;
    Split(atts[i], &ans, &alocal);
    f.obj["@" + alocal] = atts[i + 1];
  }
  if (st->stack.empty()) f.obj["#type"] = f.name;
  st->stack.push_back(std::move(f));
}

void XMLCALL OnText(void* ud, const XML_Char* s, int len) {
  auto* st = static_cast<State*>(ud);
  if (!st->stack.empty()) st->stack.back().text.append(s, static_cast<size_t>(len));
}

void XMLCALL OnEnd(void* ud, const XML_Char*) {
  auto* st = static_cast<State*>(ud);
  Frame f = std::move(st->stack.back());
  st->stack.pop_back();
  if (st->stack.empty()) {
    if (!Blank(f.text)) f.obj["#text"] = f.text;
    st->root = std::move(f.obj);
    st->done = true;
    return;
  }
  json::value v;
  if (f.obj.empty()) {
    v = json::string(f.text);
  } else {
    if (!Blank(f.text)) f.obj["#text"] = f.text;
    v = std::move(f.obj);
  }
  json::object& parent = st->stack.back().obj;
  auto it = parent.find(f.name);
  if (it == parent.end()) {
    parent.emplace(f.name, std::move(v));
  } else if (it->value().is_array()) {  // element values are never arrays: a repeat
    it->value().get_array().push_back(std::move(v));
  } else {
    json::array arr;
    arr.push_back(std::move(it->value()));
    arr.push_back(std::move(v));
    it->value() = std::move(arr);
  }
}

void XMLCALL OnDoctype(void* ud, const XML_Char*, const XML_Char*, const XML_Char*, int) {
  static_cast<State*>(ud)->Fail("DOCTYPE declarations are not allowed");
}

}  // namespace

Result<json::object> FormXmlToJson(std::string_view xml) {
  State st;
  st.parser = XML_ParserCreateNS(nullptr, kSep);
  XML_SetUserData(st.parser, &st);
  XML_SetElementHandler(st.parser, OnStart, OnEnd);
  XML_SetCharacterDataHandler(st.parser, OnText);
  XML_SetStartDoctypeDeclHandler(st.parser, OnDoctype);
  bool ok =
      XML_Parse(st.parser, xml.data(), static_cast<int>(xml.size()), XML_TRUE) == XML_STATUS_OK;
  std::string err =
      ok ? std::string()
         : fmt::format("form XML is malformed at line {}: {}", XML_GetCurrentLineNumber(st.parser),
                       XML_ErrorString(XML_GetErrorCode(st.parser)));
  XML_ParserFree(st.parser);
  if (!st.error.empty()) return Status::InvalidArgument(st.error);
  if (!ok) return Status::InvalidArgument(err);
  if (!st.done) return Status::InvalidArgument("form XML has no root element");
  return std::move(st.root);
}

namespace {

// jsonobject's re_loose_datetime in its dashed form: a date, a time to the minute at least and
// a zone (Z or +hh[[:]mm]), as HQ requires before it converts.
bool IsZonedDatetime(std::string_view s) {
  auto digits = [&](size_t at, size_t n) {
    if (at + n > s.size()) return false;
    for (size_t k = at; k < at + n; ++k)
      if (!std::isdigit(static_cast<unsigned char>(s[k]))) return false;
    return true;
  };
  if (s.size() < 17 || !digits(0, 4) || s[4] != '-' || !digits(5, 2) || s[7] != '-' ||
      !digits(8, 2) || (s[10] != 'T' && s[10] != ' ') || !digits(11, 2) || s[13] != ':' ||
      !digits(14, 2))
    return false;
  size_t i = 16;
  if (i < s.size() && s[i] == ':') {
    if (!digits(i + 1, 2)) return false;
    i += 3;
    if (i < s.size() && s[i] == '.') {
      size_t b = ++i;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
      if (i - b < 3 || i - b > 6) return false;
    }
  }
  std::string_view zone = s.substr(i);
  if (zone == "Z" || zone == "z") return true;
  if (zone.size() < 3 || (zone[0] != '+' && zone[0] != '-') || !digits(i + 1, 2)) return false;
  zone.remove_prefix(3);
  if (!zone.empty() && zone[0] == ':') zone.remove_prefix(1);
  return zone.empty() || (zone.size() == 2 && digits(s.size() - 2, 2));
}

}  // namespace

void AdjustDatetimes(boost::json::value& v) {
  if (v.is_string()) {
    int64_t us;
    if (IsZonedDatetime(v.get_string()) && util::ParseIsoTime(v.get_string(), &us) && us != 0)
      v = util::FormatIsoTime(us);
  } else if (v.is_object()) {
    for (auto& kv : v.get_object()) AdjustDatetimes(kv.value());
  } else if (v.is_array()) {
    for (auto& x : v.get_array()) AdjustDatetimes(x);
  }
}

}  // namespace commcare::xform
