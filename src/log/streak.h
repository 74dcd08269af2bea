// A background loop's failures, logged once per streak: the first failure with what happens
// next, then one line when the loop recovers (not one line per retry).
#pragma once

#include <cstdint>
#include <string>

#include "commcare/log.h"
#include "commcare/status.h"

namespace commcare::log {

class FailureStreak {
 public:
  // component names the loop in every record ("relay", "blob-flush", ...).
  explicit FailureStreak(std::string component) : component_(std::move(component)) {}

  // Records a failure of what (e.g. "relaying changes"); logs the first of a streak, with next
  // (e.g. "retrying every 200 ms").
  void Failed(const Status& s, std::string_view what, std::string_view next) {
    if (failures_++ > 0) return;
    commcare::Log(LogLevel::kError, std::string(what) + " failed: " + s.ToString(),
                  {{"component", component_}, {"next", std::string(next)}});
  }
  // Records a success; logs the end of a streak.
  void Succeeded() {
    if (failures_ == 0) return;
    commcare::Log(LogLevel::kInfo, "recovered",
                  {{"component", component_}, {"failures", std::to_string(failures_)}});
    failures_ = 0;
  }

 private:
  std::string component_;
  int64_t failures_ = 0;
};

}  // namespace commcare::log
