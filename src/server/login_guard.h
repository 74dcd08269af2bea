// Throttles failed logins before any password is checked: per username, a lockout after
// repeated failures that doubles with each further one (HQ locks accounts out the same way);
// per client address, a cap on failures a minute. Memory is bounded (usernames are hashed,
// the tables capped), so names tried by an attacker leave little behind.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace commcare::server {

struct LoginLimits {
  int failures_before_lockout = 5;  // consecutive failures of a username before it locks
  int lockout_seconds = 60;         // the first lockout; each further failure doubles it
  int max_lockout_seconds = 900;
  int failures_per_address = 50;  // failures a minute from one address before it waits
};

class LoginGuard {
 public:
  explicit LoginGuard(LoginLimits limits = {}) : limits_(limits) {}
  void SetLimits(const LoginLimits& limits) { limits_ = limits; }
  // Seconds the login of username from address must wait (0: check the credentials).
  double Wait(std::string_view username, std::string_view address);
  // A wrong credential of username from address.
  void Failed(std::string_view username, std::string_view address);
  // A right one: the username's failures are forgotten.
  void Succeeded(std::string_view username);

 private:
  using Clock = std::chrono::steady_clock;
  struct User {
    int failures = 0;
    int lockouts = 0;
    Clock::time_point locked_until{}, last{};
  };
  struct Address {
    Clock::time_point window{};
    int failures = 0;
  };
  static std::string Key(std::string_view username);
  // Drops entries with nothing to remember (mu_ held), when a table is full.
  void Prune(Clock::time_point now);

  LoginLimits limits_;
  std::mutex mu_;
  std::unordered_map<std::string, User> users_;
  std::unordered_map<std::string, Address> addresses_;
};

}  // namespace commcare::server
