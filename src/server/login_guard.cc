#include "server/login_guard.h"

#include <algorithm>
#include <functional>
#include <vector>

#include "meta/meta_store.h"

namespace commcare::server {

namespace {
constexpr size_t kMaxEntries = 100'000;
constexpr auto kWindow = std::chrono::minutes(1);
constexpr auto kForget = std::chrono::minutes(30);  // failures older than this are forgiven
}  // namespace

std::string LoginGuard::Key(std::string_view username) {
  return meta::Sha256Hex(username).substr(0, 32);
}

double LoginGuard::Wait(std::string_view username, std::string_view address) {
  const auto now = Clock::now();
  std::lock_guard l(mu_);
  double wait = 0;
  if (auto a = addresses_.find(std::string(address)); a != addresses_.end()) {
    if (now - a->second.window < kWindow && a->second.failures >= limits_.failures_per_address)
      wait = std::chrono::duration<double>(a->second.window + kWindow - now).count();
  }
  if (auto u = users_.find(Key(username)); u != users_.end() && u->second.locked_until > now)
    wait = std::max(wait, std::chrono::duration<double>(u->second.locked_until - now).count());
  return wait;
}

void LoginGuard::Failed(std::string_view username, std::string_view address) {
  const auto now = Clock::now();
  std::lock_guard l(mu_);
  if (users_.size() >= kMaxEntries || addresses_.size() >= kMaxEntries) Prune(now);
  Address& a = addresses_[std::string(address)];
  if (now - a.window >= kWindow) {
    a.window = now;
    a.failures = 0;
  }
  ++a.failures;
  User& u = users_[Key(username)];
  if (now - u.last > kForget) u = User{};
  u.last = now;
  if (++u.failures < limits_.failures_before_lockout) return;
  const int64_t secs = std::min<int64_t>(
      limits_.max_lockout_seconds, int64_t{limits_.lockout_seconds} << std::min(u.lockouts, 20));
  u.locked_until = now + std::chrono::seconds(secs);
  ++u.lockouts;
}

void LoginGuard::Succeeded(std::string_view username) {
  std::lock_guard l(mu_);
  users_.erase(Key(username));
}

void LoginGuard::Prune(Clock::time_point now) {
  std::erase_if(users_, [&](const auto& kv) {
    return kv.second.locked_until <= now && now - kv.second.last > kWindow;
  });
  std::erase_if(addresses_, [&](const auto& kv) { return now - kv.second.window >= kWindow; });
  // Still full (an attack from many addresses): forget the oldest half rather than grow.
  if (users_.size() >= kMaxEntries) {
    std::vector<Clock::time_point> lasts;
    for (const auto& kv : users_) lasts.push_back(kv.second.last);
    std::nth_element(lasts.begin(), lasts.begin() + lasts.size() / 2, lasts.end());
    const auto cut = lasts[lasts.size() / 2];
    std::erase_if(users_, [&](const auto& kv) { return kv.second.last < cut; });
  }
  if (addresses_.size() >= kMaxEntries) addresses_.clear();
}

}  // namespace commcare::server
