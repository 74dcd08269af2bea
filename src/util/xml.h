// Escaping text for XML element content and attribute values, and checking names (internal).
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace commcare::util {

// Appends s to out with &, <, > and " escaped (runs without them are appended whole).
inline void AppendXmlEscaped(std::string* out, std::string_view s) {
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char* rep;
    switch (s[i]) {
      case '&':
        rep = "&amp;";
        break;
      case '<':
        rep = "&lt;";
        break;
      case '>':
        rep = "&gt;";
        break;
      case '"':
        rep = "&quot;";
        break;
      default:
        continue;
    }
    out->append(s.data() + start, i - start);
    *out += rep;
    start = i + 1;
  }
  out->append(s.data() + start, s.size() - start);
}

// Appends <name>text</name> with text escaped (name is written as it is: check it first).
inline void AppendXmlElement(std::string* out, std::string_view name, std::string_view text) {
  *out += '<';
  *out += name;
  *out += '>';
  AppendXmlEscaped(out, text);
  *out += "</";
  *out += name;
  *out += '>';
}

// Appends ` name="value"` with value escaped.
inline void AppendXmlAttr(std::string* out, std::string_view name, std::string_view value) {
  *out += ' ';
  *out += name;
  *out += "=\"";
  AppendXmlEscaped(out, value);
  *out += '"';
}

inline std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendXmlEscaped(&out, s);
  return out;
}

// Whether s can name a case property or index written as an element: a letter or _ first, then
// letters, digits, _, - or ., at most 255 bytes (the names the Case API and importer accept).
inline bool IsCasePropertyName(std::string_view s) {
  auto alpha = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; };
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (s.empty() || s.size() > 255 || !(alpha(s[0]) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '-' || c == '.'; });
}

// Whether s can name an element or attribute a phone's parser takes: a letter or _ first, then
// letters, digits, _, - or ., not starting with "xml" (HQ: fixtures/utils.py
// is_identifier_invalid; ASCII only, stricter than XML 1.0).
inline bool IsXmlName(std::string_view s) {
  auto start = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; };
  if (s.empty() || s.starts_with("xml") || !start(s[0])) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return start(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

}  // namespace commcare::util
