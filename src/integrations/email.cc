// SMTP delivery through libcurl, and the MIME message it sends.
#include "commcare/email.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <sstream>

#include "commcare/log.h"
#include "util/hash.h"

namespace commcare {

namespace json = boost::json;

namespace {

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64(std::string_view in, bool wrap) {
  std::string out;
  out.reserve(in.size() * 4 / 3 + in.size() / 38 + 8);
  size_t line = 0;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = uint32_t(uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) n |= uint32_t(uint8_t(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= uint8_t(in[i + 2]);
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += i + 1 < in.size() ? kB64[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kB64[n & 63] : '=';
    if (wrap && (line += 4) >= 76) {
      out += "\r\n";
      line = 0;
    }
  }
  if (wrap && line) out += "\r\n";
  return out;
}

Result<std::string> Unbase64(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == '\r' || c == '\n' || c == ' ') continue;
    const char* p = std::strchr(kB64, c);
    if (!p || !c) return Status::InvalidArgument("not base64");
    acc = (acc << 6) | uint32_t(p - kB64);
    if ((bits += 6) >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

bool Ascii(std::string_view s) {
  for (char c : s)
    if (uint8_t(c) >= 0x80 || c == '\r' || c == '\n') return false;
  return true;
}

// A header value: as is when ASCII, else an RFC 2047 encoded word.
std::string HeaderText(std::string_view s) {
  if (Ascii(s)) return std::string(s);
  return "=?UTF-8?B?" + Base64(s, false) + "?=";
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 3 <= s.size()) {
      out += char(std::strtol(std::string(s.substr(i + 1, 2)).c_str(), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool ValidAddress(std::string_view a) {
  auto at = a.find('@');
  if (at == 0 || at == std::string_view::npos || at + 1 >= a.size()) return false;
  for (char c : a)
    if (c == '<' || c == '>' || c == '\r' || c == '\n' || c == ' ' || c == ',') return false;
  return true;
}

void CurlInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Upload {
  std::string_view data;
  size_t pos = 0;
};
size_t ReadBody(char* buf, size_t size, size_t n, void* p) {
  auto* u = static_cast<Upload*>(p);
  size_t k = std::min(size * n, u->data.size() - u->pos);
  std::memcpy(buf, u->data.data() + u->pos, k);
  u->pos += k;
  return k;
}

}  // namespace

Result<SmtpOptions> SmtpOptions::FromUrl(std::string_view url, std::string_view from) {
  SmtpOptions o;
  std::string_view rest = url;
  if (rest.starts_with("smtp://"))
    rest.remove_prefix(7);
  else
    return Status::InvalidArgument("smtp url: must start with smtp://");
  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view cred = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = cred.find(':');
    o.username = PercentDecode(cred.substr(0, colon));
    if (colon != std::string_view::npos) o.password = PercentDecode(cred.substr(colon + 1));
  }
  if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
    std::string port(rest.substr(colon + 1));
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || p <= 0 || p > 65535)
      return Status::InvalidArgument("smtp url: bad port");
    o.port = int(p);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return Status::InvalidArgument("smtp url: no host");
  o.host = std::string(rest);
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = kv.find('=');
    std::string_view k = kv.substr(0, eq);
    std::string_view v = eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1);
    if (k == "starttls") {
      if (v == "none")
        o.starttls = StartTls::kNone;
      else if (v == "opportunistic")
        o.starttls = StartTls::kOpportunistic;
      else if (v == "required")
        o.starttls = StartTls::kRequired;
      else
        return Status::InvalidArgument("smtp url: starttls must be none|opportunistic|required");
    } else if (k == "timeout_ms") {
      long t = std::strtol(std::string(v).c_str(), nullptr, 10);
      if (t <= 0) return Status::InvalidArgument("smtp url: timeout_ms must be > 0");
      o.timeout = std::chrono::milliseconds(t);
    } else {
      return Status::InvalidArgument(fmt::format("smtp url: unknown parameter '{}'", k));
    }
  }
  o.from = std::string(from);
  if (o.from.empty()) o.from = "commcare@" + o.host;
  if (!ValidAddress(o.from)) return Status::InvalidArgument("smtp from: not an email address");
  return o;
}

Result<SmtpOptions> SmtpOptions::FromEnvironment() {
  const char* url = std::getenv("COMMCARE_SMTP_URL");
  if (!url || !*url) return Status::FailedPrecondition("COMMCARE_SMTP_URL is not set");
  const char* from = std::getenv("COMMCARE_SMTP_FROM");
  return FromUrl(url, from ? from : "");
}

std::string SmtpOptions::Describe() const {
  const char* tls = starttls == StartTls::kNone            ? "none"
                    : starttls == StartTls::kOpportunistic ? "opportunistic"
                                                           : "required";
  return fmt::format("smtp://{}{}{}:{}?starttls={}&timeout_ms={}", username,
                     username.empty() ? "" : (password.empty() ? "@" : ":***@"), host, port, tls,
                     timeout.count());
}

std::string RenderMime(const SmtpOptions& smtp, const EmailMessage& m,
                       std::string_view message_id) {
  const std::string mixed = "=_mixed_" + std::string(message_id.substr(0, 16));
  const std::string alt = "=_alt_" + std::string(message_id.substr(0, 16));
  std::ostringstream o;
  char date[64];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  o << "Date: " << date << "\r\n";
  o << "From: " << smtp.from << "\r\n";
  o << "To: ";
  for (size_t i = 0; i < m.to.size(); ++i) o << (i ? ", " : "") << m.to[i];
  o << "\r\n";
  o << "Subject: " << HeaderText(m.subject) << "\r\n";
  o << "Message-ID: <" << message_id << "@commcare>\r\n";
  o << "MIME-Version: 1.0\r\n";
  o << "Content-Type: multipart/mixed; boundary=\"" << mixed << "\"\r\n\r\n";
  o << "--" << mixed << "\r\n";
  o << "Content-Type: multipart/alternative; boundary=\"" << alt << "\"\r\n\r\n";
  auto part = [&](const char* type, const std::string& body) {
    o << "--" << alt << "\r\n";
    o << "Content-Type: " << type << "; charset=utf-8\r\n";
    o << "Content-Transfer-Encoding: base64\r\n\r\n";
    o << Base64(body, true);
  };
  part("text/plain", m.text);
  if (!m.html.empty()) part("text/html", m.html);
  o << "--" << alt << "--\r\n";
  for (const auto& a : m.attachments) {
    o << "--" << mixed << "\r\n";
    std::string name = HeaderText(a.name);
    for (char& c : name)
      if (c == '"' || c == '\\') c = '_';
    o << "Content-Type: " << a.content_type << "; name=\"" << name << "\"\r\n";
    o << "Content-Disposition: attachment; filename=\"" << name << "\"\r\n";
    o << "Content-Transfer-Encoding: base64\r\n\r\n";
    o << Base64(a.data, true);
  }
  o << "--" << mixed << "--\r\n";
  return o.str();
}

Status SendEmail(const SmtpOptions& smtp, const EmailMessage& m) {
  if (m.to.empty()) return Status::InvalidArgument("to: no recipients");
  for (const auto& to : m.to)
    if (!ValidAddress(to)) return Status::InvalidArgument(fmt::format("to: bad address '{}'", to));
  if (smtp.host.empty()) return Status::InvalidArgument("smtp: no host");
  for (const char* s : {m.subject.c_str()})
    if (std::string_view(s).find_first_of("\r\n") != std::string_view::npos)
      return Status::InvalidArgument("subject: must be one line");
  CurlInit();
  const std::string id = util::NewUuidHex();
  const std::string body = RenderMime(smtp, m, id);
  CURL* c = curl_easy_init();
  if (!c) return Status::Internal("curl_easy_init failed");
  curl_slist* rcpt = nullptr;
  for (const auto& to : m.to) rcpt = curl_slist_append(rcpt, ("<" + to + ">").c_str());
  Upload up{body};
  char err[CURL_ERROR_SIZE] = {0};
  const std::string url = fmt::format("smtp://{}:{}", smtp.host, smtp.port);
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_FROM, ("<" + smtp.from + ">").c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, ReadBody);
  curl_easy_setopt(c, CURLOPT_READDATA, &up);
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, long(smtp.timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, long(smtp.timeout.count()));
  curl_easy_setopt(c, CURLOPT_USE_SSL,
                   smtp.starttls == SmtpOptions::StartTls::kNone       ? CURLUSESSL_NONE
                   : smtp.starttls == SmtpOptions::StartTls::kRequired ? CURLUSESSL_ALL
                                                                       : CURLUSESSL_TRY);
  if (!smtp.username.empty()) {
    curl_easy_setopt(c, CURLOPT_USERNAME, smtp.username.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, smtp.password.c_str());
  }
  CURLcode rc = curl_easy_perform(c);
  long reply = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply);
  curl_slist_free_all(rcpt);
  curl_easy_cleanup(c);
  if (rc == CURLE_OK) return Status::Ok();
  // Messages carry curl's text and the reply code, never the password (curl does not echo it).
  std::string what = fmt::format("smtp {}:{}: {} (reply {})", smtp.host, smtp.port,
                                 err[0] ? err : curl_easy_strerror(rc), reply);
  Status st;
  if (reply >= 500 || rc == CURLE_LOGIN_DENIED || rc == CURLE_USE_SSL_FAILED)
    st = Status::InvalidArgument(what);
  else
    st = Status::Unavailable(what);
  Log(st.IsInvalidArgument() ? LogLevel::kError : LogLevel::kWarning, "email not sent",
      {{"component", "email"}, {"smtp", smtp.Describe()}, {"error", what}});
  return st;
}

Result<EmailMessage> ParseEmailPayload(std::string_view payload) {
  boost::system::error_code ec;
  json::value v = json::parse(payload, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("payload: not a JSON object");
  const auto& o = v.get_object();
  EmailMessage m;
  auto str = [&](const json::object& from, const char* k, std::string* out) -> Status {
    if (const auto* x = from.if_contains(k)) {
      if (!x->is_string()) return Status::InvalidArgument(fmt::format("{}: not a string", k));
      *out = std::string(x->get_string());
    }
    return Status::Ok();
  };
  if (const auto* to = o.if_contains("to")) {
    if (to->is_string())
      m.to.emplace_back(to->get_string());
    else if (to->is_array())
      for (const auto& t : to->get_array()) {
        if (!t.is_string()) return Status::InvalidArgument("to: not a list of strings");
        m.to.emplace_back(t.get_string());
      }
    else
      return Status::InvalidArgument("to: not a list of strings");
  }
  if (m.to.empty()) return Status::InvalidArgument("to: is required");
  CC_RETURN_IF_ERROR(str(o, "subject", &m.subject));
  CC_RETURN_IF_ERROR(str(o, "text", &m.text));
  CC_RETURN_IF_ERROR(str(o, "html", &m.html));
  if (const auto* as = o.if_contains("attachments")) {
    if (!as->is_array()) return Status::InvalidArgument("attachments: not a list");
    size_t i = 0;
    for (const auto& av : as->get_array()) {
      const std::string at = fmt::format("attachments[{}]", i++);
      if (!av.is_object()) return Status::InvalidArgument(at + ": not an object");
      const auto& ao = av.get_object();
      EmailAttachment a;
      std::string path, b64;
      CC_RETURN_IF_ERROR(str(ao, "name", &a.name));
      CC_RETURN_IF_ERROR(str(ao, "content_type", &a.content_type));
      CC_RETURN_IF_ERROR(str(ao, "path", &path));
      CC_RETURN_IF_ERROR(str(ao, "base64", &b64));
      if (a.name.empty()) return Status::InvalidArgument(at + ".name: is required");
      if (!path.empty()) {
        std::ifstream f(path, std::ios::binary);
        if (!f) return Status::InvalidArgument(at + ".path: cannot read " + path);
        a.data.assign(std::istreambuf_iterator<char>(f), {});
      } else {
        auto d = Unbase64(b64);
        if (!d.ok()) return Status::InvalidArgument(at + ".base64: not base64");
        a.data = std::move(*d);
      }
      m.attachments.push_back(std::move(a));
    }
  }
  return m;
}

std::string EncodeBase64(std::string_view data) { return Base64(data, false); }

}  // namespace commcare
