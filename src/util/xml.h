// Escaping text for XML element content and attribute values (internal).
#pragma once

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

inline std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendXmlEscaped(&out, s);
  return out;
}

}  // namespace commcare::util
