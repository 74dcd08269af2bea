// A background loop's failures, logged once per streak: the first failure with what happens
// next, then one line when the loop recovers (not one line per retry).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commcare/log.h"
#include "commcare/status.h"

namespace commcare::log {

// Not thread-safe: one per loop, used by the thread that drives it.
class FailureStreak {
 public:
  // component names the loop in every record ("relay", "blob-flush", "pillow", ...); context
  // adds fields to every record (e.g. {"pillow", "case-search"}); level is the first failure's.
  explicit FailureStreak(std::string component,
                         std::vector<std::pair<std::string, std::string>> context = {},
                         LogLevel level = LogLevel::kError)
      : component_(std::move(component)), context_(std::move(context)), level_(level) {}

  // Records a failure of what (e.g. "relaying changes"); logs the first of a streak, with
  // fields (after the context) and next (e.g. "retrying every 200 ms"). True if it logged.
  bool Failed(const Status& s, std::string_view what, std::string_view next,
              std::initializer_list<LogField> fields = {}) {
    if (failures_++ > 0) return false;
    what_ = std::string(what);
    std::vector<LogField> all = Context();
    all.insert(all.end(), fields.begin(), fields.end());
    all.push_back({"next", std::string(next)});
    GetLogger()->Log(level_, what_ + " failed: " + s.ToString(), all);
    return true;
  }
  // Records a success; logs the end of a streak at info ("recovered", with the number of
  // failures and what failed first). True if it logged.
  bool Succeeded() {
    if (failures_ == 0) return false;
    std::vector<LogField> all = Context();
    all.push_back({"failed", what_});
    all.push_back({"failures", std::to_string(failures_)});
    GetLogger()->Log(LogLevel::kInfo, "recovered", all);
    failures_ = 0;
    return true;
  }
  // Failures in the current streak (0: none).
  int64_t failures() const { return failures_; }

 private:
  std::vector<LogField> Context() const {
    std::vector<LogField> out = {{"component", component_}};
    for (const auto& [k, v] : context_) out.push_back({k, v});
    return out;
  }

  std::string component_;
  std::vector<std::pair<std::string, std::string>> context_;
  LogLevel level_;
  std::string what_;  // what the streak's first failure was doing
  int64_t failures_ = 0;
};

}  // namespace commcare::log
