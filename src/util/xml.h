// Escaping text for XML element content and attribute values (internal).
#pragma once

#include <string>
#include <string_view>

namespace commcare::util {

// Appends s to out with &, <, > and " escaped.
inline void AppendXmlEscaped(std::string* out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&':
        *out += "&amp;";
        break;
      case '<':
        *out += "&lt;";
        break;
      case '>':
        *out += "&gt;";
        break;
      case '"':
        *out += "&quot;";
        break;
      default:
        out->push_back(c);
    }
  }
}

inline std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendXmlEscaped(&out, s);
  return out;
}

}  // namespace commcare::util
