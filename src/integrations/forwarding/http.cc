// POSTs a payload with libcurl: basic, digest or bearer auth, custom headers, a timeout, no
// redirects followed (a 301 is a failure to fix at the forwarder, as in HQ's attempt log).
#include <curl/curl.h>
#include <fmt/format.h>

#include <chrono>
#include <mutex>

#include "integrations/forwarding/forwarding.h"

namespace commcare::forwarding {

namespace {

constexpr size_t kExcerpt = 1000;

size_t Collect(char* data, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  const size_t len = size * n;
  if (s->size() < kExcerpt) s->append(data, std::min(len, kExcerpt - s->size()));
  return len;
}

}  // namespace

HttpSender::HttpSender() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  curl_ = curl_easy_init();
}

HttpSender::~HttpSender() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

HttpResult HttpSender::Post(const Forwarder& f, const Payload& p) {
  HttpResult out;
  CURL* c = static_cast<CURL*>(curl_);
  if (!c) {
    out.excerpt = "libcurl could not start";
    return out;
  }
  curl_easy_reset(c);
  const std::string url = f.url + p.url_suffix;
  std::string body;
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, ("Content-Type: " + p.content_type).c_str());
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  for (const auto& [k, v] : p.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
  for (const auto& [k, v] : f.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
  if (f.auth == "bearer")
    headers = curl_slist_append(headers, ("Authorization: Bearer " + f.token).c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, p.body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(p.body.size()));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "commcare-forwarding/1");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(f.timeout_ms));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::min(f.timeout_ms, 10000)));
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  if (f.auth == "basic" || f.auth == "digest") {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, f.auth == "basic" ? CURLAUTH_BASIC : CURLAUTH_DIGEST);
    curl_easy_setopt(c, CURLOPT_USERNAME, f.username.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, f.password.c_str());
  }
  const auto t0 = std::chrono::steady_clock::now();
  CURLcode rc = curl_easy_perform(c);
  out.duration_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  curl_slist_free_all(headers);
  if (rc != CURLE_OK) {
    out.excerpt = fmt::format("{} ({})", curl_easy_strerror(rc), url);
    return out;
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  out.status = static_cast<int>(status);
  out.excerpt = std::move(body);
  if (status >= 300 && status < 400) {
    char* location = nullptr;
    curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location);
    out.excerpt = fmt::format("redirected to {} (not followed: update the forwarder's URL)",
                              location ? location : "?");
  }
  return out;
}

}  // namespace commcare::forwarding
