// A pillow's failing changes, logged once per streak (internal to src/pillows): what a batch did
// to the retry queue, and the log records it leads to.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "commcare/log.h"
#include "commcare/pillows.h"

namespace commcare::pillows {

// The retry queue's key of a corrupt change record (dead-lettered at once, never requeued).
constexpr std::string_view kCorruptPrefix = "corrupt:";

// What a batch (or one retried change) did to the retry queue, logged once it has committed:
// the first change of each kind, and how many there were.
struct BatchOutcome {
  int64_t succeeded = 0;
  int64_t retried = 0;  // queued for another attempt
  int64_t dead = 0;     // dead-lettered
  std::optional<RetryEntry> first_retried, first_dead;

  void Add(RetryEntry e) {
    auto& first = e.dead ? first_dead : first_retried;
    ++(e.dead ? dead : retried);
    if (!first) first = std::move(e);
  }
};

// A pillow's failing changes, logged once per streak rather than once per change: the first
// change sent to the retry queue (a warning, with its next attempt) and the first one
// dead-lettered (an error); when a batch or a retry next processes without a failure, the end
// of the streak at info with how many failed. Not thread-safe (the pillow's lock).
class ChangeFailures {
 public:
  explicit ChangeFailures(std::string pillow) : pillow_(std::move(pillow)) {}

  void Report(const BatchOutcome& o, int max_attempts);

 private:
  void Log(LogLevel level, const std::string& message, const RetryEntry& e,
           const std::string& attempt, const std::string& next);
  void Recovered();

  std::string pillow_;
  int64_t failures_ = 0, dead_ = 0;  // in the current streak: failed attempts, dead letters
};

}  // namespace commcare::pillows
