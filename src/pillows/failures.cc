// A pillow's failing changes, logged once per streak (failures.h).
#include "pillows/failures.h"

#include <fmt/format.h>

#include "commcare/log.h"

namespace commcare::pillows {

void ChangeFailures::Report(const BatchOutcome& o, int max_attempts) {
  if (o.retried == 0 && o.dead == 0) {
    if (o.succeeded > 0) Recovered();
    return;
  }
  if (o.first_retried && failures_ == dead_) {  // the streak's first one queued for a retry
    const RetryEntry& e = *o.first_retried;
    Log(LogLevel::kWarning, fmt::format("pillow {}: a change failed: {}", pillow_, e.error), e,
        fmt::format("{} of {}", e.attempts, max_attempts),
        fmt::format("retry at {}", FormatTime(e.next_attempt)));
  }
  if (o.first_dead && dead_ == 0) {
    const RetryEntry& e = *o.first_dead;
    if (e.doc_id.starts_with(kCorruptPrefix))
      Log(LogLevel::kError, fmt::format("pillow {}: {}", pillow_, e.error), e, "-",
          "dead-lettered (a corrupt record is never retried)");
    else
      Log(LogLevel::kError,
          fmt::format("pillow {}: a change failed for the last time: {}", pillow_, e.error), e,
          fmt::format("{} of {}", e.attempts, max_attempts),
          fmt::format("dead-lettered; `commcare pillows requeue --pillow {} --doc {} --dead` "
                      "retries it",
                      pillow_, e.doc_id));
  }
  failures_ += o.retried + o.dead;
  dead_ += o.dead;
}

void ChangeFailures::Log(LogLevel level, const std::string& message, const RetryEntry& e,
                         const std::string& attempt, const std::string& next) {
  commcare::Log(level, message,
                {{"component", "pillow"},
                 {"pillow", pillow_},
                 {"topic", e.topic},
                 {"partition", std::to_string(e.partition)},
                 {"offset", std::to_string(e.offset)},
                 {"doc_id", e.doc_id},
                 {"attempt", attempt},
                 {"next", next}});
}
void ChangeFailures::Recovered() {
  if (failures_ == 0) return;
  commcare::Log(LogLevel::kInfo, fmt::format("pillow {}: changes process again", pillow_),
                {{"component", "pillow"},
                 {"pillow", pillow_},
                 {"failures", std::to_string(failures_)},
                 {"dead_lettered", std::to_string(dead_)}});
  failures_ = dead_ = 0;
}

}  // namespace commcare::pillows
