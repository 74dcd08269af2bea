// The reference server's authentication: the gate before a body is read, Basic, Digest
// (nonces, counts) and ApiKey credentials, failed-login throttling, rate limits and the
// slots that cap long-polls and streams. App's members; the routes are in app.cc.
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "server/app.h"
#include "server/request_parse.h"
#include "server/responses.h"
#include "util/hash.h"
#include "util/secret.h"
#include "util/time.h"

namespace commcare::server {
namespace {

using http::Request;
using http::Response;

std::string RandomHex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    throw std::runtime_error("no randomness for the Digest nonce secret");
  return util::HexEncode(raw.data(), raw.size());
}

constexpr int64_t kNonceLifetime = 300;  // seconds a Digest nonce is good for
constexpr size_t kMaxNonces = 100'000;   // nonces whose counts are remembered at once

}  // namespace

App::App(Engine* engine, meta::MetaStore* meta, std::string pillows_dir)
    : engine_(engine),
      meta_(meta),
      pillows_dir_(std::move(pillows_dir)),
      secret_(RandomHex(32)),
      opaque_(RandomHex(16)) {}

std::string App::Nonce() const {
  std::string ts = fmt::format("{:x}", util::NowMicros() / 1'000'000);
  return ts + "." + meta::Sha256Hex(secret_ + ":" + ts).substr(0, 32);
}

bool App::NonceValid(std::string_view nonce, bool* stale) const {
  *stale = false;
  auto dot = nonce.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > 15) return false;
  std::string ts(nonce.substr(0, dot));
  if (ts.find_first_not_of("0123456789abcdef") != std::string::npos) return false;
  const std::string mac = meta::Sha256Hex(secret_ + ":" + ts).substr(0, 32);
  if (!util::SameSecret(nonce.substr(dot + 1), mac)) return false;
  const int64_t t = std::strtoll(ts.c_str(), nullptr, 16);
  const int64_t now = util::NowMicros() / 1'000'000;
  if (t > now + 5) return false;  // never issued: no nonce is dated in the future
  if (now - t > kNonceLifetime) {
    *stale = true;
    return false;
  }
  return true;
}

bool App::FreshNonceCount(const std::string& nonce, uint64_t nc) {
  const int64_t now = util::NowMicros() / 1'000'000;
  std::lock_guard l(nonce_mu_);
  if (nonce_counts_.size() >= kMaxNonces)
    std::erase_if(nonce_counts_,
                  [&](const auto& kv) { return now - kv.second.second > kNonceLifetime; });
  auto it = nonce_counts_.find(nonce);
  if (it == nonce_counts_.end()) {
    if (nonce_counts_.size() >= kMaxNonces) return false;  // full: the client gets a new nonce
    nonce_counts_.emplace(nonce, std::pair{nc, now});
    return true;
  }
  if (nc <= it->second.first) return false;
  it->second.first = nc;
  return true;
}

Response App::Unauthorized(const Status& why) const {
  if (why.code() == StatusCode::kResourceExhausted) {
    auto at = why.message().rfind("retry in ");
    double wait = at == std::string::npos ? 1 : std::atof(why.message().c_str() + at + 9);
    Response r = Error(429, why.message());
    r.headers.emplace_back("Retry-After",
                           std::to_string(std::max<int64_t>(1, static_cast<int64_t>(wait))));
    return r;
  }
  // The user store failing (its database down) is not the client's fault: 503, not 401, so a
  // phone does not ask its worker for the password again.
  if (why.code() != StatusCode::kUnauthenticated) return Error(StatusFor(why), why.message());
  Response r = Error(401, why.message());
  const bool stale = why.message().rfind("stale", 0) == 0;
  const std::string nonce = Nonce();
  for (const char* algorithm : {"SHA-256", "MD5"})
    r.headers.emplace_back(
        "WWW-Authenticate",
        fmt::format(R"(Digest realm="{}", qop="auth", algorithm={}, nonce="{}", opaque="{}"{})",
                    meta::kDigestRealm, algorithm, nonce, opaque_, stale ? ", stale=true" : ""));
  r.headers.emplace_back("WWW-Authenticate",
                         fmt::format(R"(Basic realm="{}")", meta::kDigestRealm));
  r.headers.emplace_back("WWW-Authenticate", "ApiKey");
  return r;
}

Result<meta::User> App::AuthenticateDigest(const Request& r, std::map<std::string, std::string> p) {
  for (const char* k : {"username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce"})
    if (!p.count(k))
      return Status::Unauthenticated(
          fmt::format("Digest credentials lack '{}' (qop=auth with nc and cnonce is required)", k));
  if (p["realm"] != meta::kDigestRealm)
    return Status::Unauthenticated(fmt::format("Digest realm must be '{}'", meta::kDigestRealm));
  std::string algorithm = p.count("algorithm") ? p["algorithm"] : "MD5";
  for (char& c : algorithm) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (algorithm != "MD5" && algorithm != "SHA-256")
    return Status::Unauthenticated("Digest algorithm must be MD5 or SHA-256");
  if (p["qop"] != "auth") return Status::Unauthenticated("Digest qop must be 'auth'");
  if (p["uri"] != r.target) return Status::Unauthenticated("Digest uri does not match the request");
  bool stale;
  if (!NonceValid(p["nonce"], &stale))
    return Status::Unauthenticated(stale ? "stale nonce: retry with the new one"
                                         : "Digest nonce was not issued by this server");
  const std::string& nc_text = p["nc"];
  if (nc_text.size() != 8 ||
      nc_text.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    return Status::Unauthenticated("Digest nc must be 8 hex digits");
  auto user = meta_->GetUser(p["username"]);
  if (!user.ok() && !user.status().IsNotFound()) return user.status();
  if (!user.ok() || !user->is_active)
    return Status::Unauthenticated("wrong username or password, or the user is inactive");
  auto H = [&](const std::string& s) {
    return algorithm == "MD5" ? util::Md5Hex(s) : meta::Sha256Hex(s);
  };
  const std::string& ha1 = algorithm == "MD5" ? user->digest_md5 : user->digest_sha256;
  if (ha1.empty())
    return Status::Unauthenticated("this user has no Digest credentials (set the password again)");
  const std::string ha2 = H(r.method + ":" + p["uri"]);
  const std::string expected =
      H(fmt::format("{}:{}:{}:{}:{}:{}", ha1, p["nonce"], nc_text, p["cnonce"], p["qop"], ha2));
  std::string got = p["response"];
  for (char& c : got) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!util::SameSecret(got, expected))
    return Status::Unauthenticated("wrong username or password");
  // A header seen before (same nonce, no higher count) is a replay: the client is told to
  // take a fresh nonce, as a client that lost count would be.
  if (!FreshNonceCount(p["nonce"], std::strtoull(nc_text.c_str(), nullptr, 16)))
    return Status::Unauthenticated("stale nonce: this nonce count was used before");
  return user;
}

double App::Throttle(const std::string& user, const std::string& domain) {
  if (user_rate_ <= 0 && domain_rate_ <= 0) return 0;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard l(buckets_mu_);
  double wait = 0;
  std::vector<Bucket*> take;
  for (auto [key, rate] :
       {std::pair<std::string, double>{"u:" + user, user_rate_}, {"d:" + domain, domain_rate_}}) {
    if (rate <= 0) continue;
    Bucket& b = buckets_[key];
    if (b.fresh) {
      b.tokens = 2 * rate;
      b.fresh = false;
    } else {
      b.tokens =
          std::min(2 * rate, b.tokens + rate * std::chrono::duration<double>(now - b.last).count());
    }
    b.last = now;
    if (b.tokens < 1) wait = std::max(wait, (1 - b.tokens) / rate);
    take.push_back(&b);
  }
  if (wait > 0) return wait;  // nothing taken: the request is refused
  for (Bucket* b : take) b->tokens -= 1;
  return 0;
}

std::optional<meta::User> App::Admit(const Request& r, const std::string& domain,
                                     std::string_view permission, Response* deny) {
  auto user = Authenticate(r);
  if (!user.ok()) {
    *deny = Unauthorized(user.status());
    return std::nullopt;
  }
  if (double wait = Throttle(user->username, domain); wait > 0) {
    *deny = TooManyRequests(wait, "rate limit");
    return std::nullopt;
  }
  if (!user->InDomain(domain)) {
    *deny = Error(403, fmt::format("user {} is not a member of domain {}", user->username, domain));
    return std::nullopt;
  }
  if (!permission.empty() && !user->Can(domain, permission)) {
    *deny =
        Error(403, fmt::format("user {} may not use the API of domain {}", user->username, domain));
    return std::nullopt;
  }
  return std::move(*user);
}

std::optional<Response> App::Gate(Request& head) {
  if (!head.Header("authorization")) {
    const std::string* len = head.Header("content-length");
    const bool body = head.Header("transfer-encoding") || (len && *len != "0");
    // The console's sign-in form: a small body, checked by its route.
    if (head.path == kConsoleLoginPath && len && len->size() <= 4) return std::nullopt;
    if (!SessionCookie(head).empty()) {
      auto user = SessionUser(head);
      if (user.ok()) {
        head.user = user->username;
        head.principal = std::make_shared<const meta::User>(std::move(*user));
        return std::nullopt;
      }
      if (body) return Unauthorized(user.status());
    }
    if (!body) return std::nullopt;  // the route answers (health, pre-flight, or a challenge)
    return Unauthorized(Status::Unauthenticated(
        "authentication required (Digest, Basic or ApiKey) before a request body is sent"));
  }
  auto user = CheckCredentials(head);
  if (!user.ok()) return Unauthorized(user.status());
  head.user = user->username;
  head.principal = std::make_shared<const meta::User>(std::move(*user));
  return std::nullopt;
}

Result<meta::User> App::Authenticate(const Request& r) {
  if (r.principal) return *std::static_pointer_cast<const meta::User>(r.principal);
  return CheckCredentials(r);
}

Result<meta::User> App::CheckCredentials(const Request& r) {
  const std::string* auth = r.Header("authorization");
  if (!auth && !SessionCookie(r).empty()) return SessionUser(r);
  if (!auth) return Status::Unauthenticated("authentication required (Digest, Basic or ApiKey)");
  Credentials c = ParseAuthorization(*auth);
  const std::string& scheme = c.scheme;
  const std::string& claimed = c.claimed;
  const std::string& secret = c.secret;
  std::map<std::string, std::string>& digest = c.digest;
  const Status& malformed = c.malformed;
  // Failed logins of this username or from this address wait before any check (a locked-out
  // guess costs no PBKDF2).
  if (double wait = login_guard_.Wait(claimed, r.remote); wait > 0)
    return Status::ResourceExhausted(
        fmt::format("too many failed logins for this user or from this address: retry in {} s",
                    static_cast<int64_t>(std::ceil(wait))));
  Result<meta::User> user = !malformed.ok()      ? Result<meta::User>(malformed)
                            : scheme == "basic"  ? meta_->Authenticate(claimed, secret)
                            : scheme == "apikey" ? meta_->AuthenticateApiKey(claimed, secret)
                                                 : AuthenticateDigest(r, std::move(digest));
  if (user.ok()) {
    login_guard_.Succeeded(claimed);
  } else if (user.status().code() == StatusCode::kUnauthenticated &&
             user.status().message().rfind("stale", 0) != 0) {
    login_guard_.Failed(claimed, r.remote);
  }
  return user;
}

std::shared_ptr<void> App::TakeSlot(SlotTable* t, const std::string& user, int per_user,
                                    int total) {
  std::lock_guard l(t->mu);
  int& mine = t->by_user[user];
  if (mine >= per_user || t->total >= total) {
    if (mine == 0) t->by_user.erase(user);
    return nullptr;
  }
  ++mine;
  ++t->total;
  return std::shared_ptr<void>(static_cast<void*>(t), [t, user](void*) {
    std::lock_guard l(t->mu);
    if (--t->by_user[user] == 0) t->by_user.erase(user);
    --t->total;
  });
}

}  // namespace commcare::server
