// The plain Request a handler sees, made from what the HTTP parser read: the target split into
// a decoded path and query, header names in lower case. Kept apart from server.cc (Beast and
// sockets) so that the fuzz targets (fuzz/) and tests drive it without a connection.
#include <cctype>

#include "http/server.h"

namespace commcare::http {

const std::string* Request::Header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

std::string Request::Param(std::string_view name, std::string_view def) const {
  auto it = query.find(std::string(name));
  return it == query.end() ? std::string(def) : it->second;
}

std::string UrlDecode(std::string_view s, bool form) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
      i += 2;
    } else if (form && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

namespace {

// s with each byte that does not begin a well-formed UTF-8 sequence (RFC 3629: no overlong
// forms, no surrogates, nothing past U+10FFFF) replaced by U+FFFD, as Django decodes a query
// string (errors="replace"): parameters stay text that JSON can carry and read back.
std::string ValidUtf8(std::string s) {
  auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    if (i >= s.size()) return false;
    const auto c = static_cast<unsigned char>(s[i]);
    return c >= lo && c <= hi;
  };
  std::string out;
  size_t i = 0;
  bool changed = false;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    if (c < 0x80) {
      n = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = cont(i + 1) ? 2 : 0;
    } else if (c >= 0xE0 && c <= 0xEF) {
      const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
      n = cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
    } else if (c >= 0xF0 && c <= 0xF4) {
      const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
      n = cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    }
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      changed = true;
      ++i;
    } else {
      out.append(s, i, n);
      i += n;
    }
  }
  return changed ? out : s;
}

}  // namespace

void SetTarget(Request* req, std::string_view target) {
  req->target = std::string(target);
  req->query.clear();
  auto q = target.find('?');
  req->path = UrlDecode(target.substr(0, q), false);
  if (q == std::string_view::npos) return;
  std::string_view qs = target.substr(q + 1);
  while (!qs.empty()) {
    auto amp = qs.find('&');
    std::string_view kv = qs.substr(0, amp);
    auto eq = kv.find('=');
    if (!kv.empty())
      req->query.emplace(
          ValidUtf8(UrlDecode(kv.substr(0, eq), true)),
          eq == std::string_view::npos ? "" : ValidUtf8(UrlDecode(kv.substr(eq + 1), true)));
    if (amp == std::string_view::npos) break;
    qs.remove_prefix(amp + 1);
  }
}

void AddHeader(Request* req, std::string_view name, std::string_view value) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  req->headers.emplace_back(std::move(lower), std::string(value));
}

}  // namespace commcare::http
