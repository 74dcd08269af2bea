// Logging: the library reports what goes wrong in the background (the relay, the blob flusher,
// change retention, pillow retries, the meta store's relay) through one process-wide Logger, once
// per failure, saying what happens next ("retrying in 200 ms", "dead-lettered", "giving up").
#pragma once

#include <cstdio>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace commcare {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// One key/value of a log record ("component": "relay", "next": "retry in 200 ms").
struct LogField {
  std::string_view key;
  std::string value;
};

// Receives log records. Log may be called from any thread, concurrently.
class Logger {
 public:
  virtual ~Logger() = default;
  virtual void Log(LogLevel level, std::string_view message, std::span<const LogField> fields) = 0;
};

// Replaces the process-wide logger (nullptr: the default, text lines on stderr from kInfo up).
void SetLogger(std::shared_ptr<Logger> logger);
// The current logger (never nullptr).
std::shared_ptr<Logger> GetLogger();
// Text lines on out: "2026-12-05T15:10:42.123Z warning relay: message key=value ...".
std::shared_ptr<Logger> NewTextLogger(std::FILE* out, LogLevel min_level = LogLevel::kInfo);
// One JSON object per line on out: {"time": ..., "level": ..., "message": ..., key: value, ...}.
std::shared_ptr<Logger> NewJsonLinesLogger(std::FILE* out, LogLevel min_level = LogLevel::kInfo);
// Logs a record through the current logger.
void Log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {});
// "debug", "info", "warning", "error".
std::string_view LogLevelName(LogLevel level);

}  // namespace commcare
