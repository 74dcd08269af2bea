// The process-wide logger and the two loggers the library ships (text and JSON lines).
#include "commcare/log.h"

#include <fmt/format.h>

#include <atomic>
#include <boost/json.hpp>
#include <mutex>

#include "util/time.h"

namespace commcare {
namespace {

std::string Now() { return util::FormatIsoTime(util::NowMicros()); }

// Writes one formatted line per record at or above a level, under a lock (whole lines).
class LineLogger : public Logger {
 public:
  LineLogger(std::FILE* out, LogLevel min) : out_(out), min_(min) {}
  void Log(LogLevel level, std::string_view message, std::span<const LogField> fields) override {
    if (level < min_) return;
    const std::string line = Format(level, message, fields) + "\n";
    std::lock_guard l(mu_);
    std::fwrite(line.data(), 1, line.size(), out_);
    std::fflush(out_);
  }

 protected:
  virtual std::string Format(LogLevel level, std::string_view message,
                             std::span<const LogField> fields) = 0;

 private:
  std::FILE* out_;
  LogLevel min_;
  std::mutex mu_;
};

class TextLogger final : public LineLogger {
 public:
  using LineLogger::LineLogger;
  std::string Format(LogLevel level, std::string_view message,
                     std::span<const LogField> fields) override {
    std::string line = fmt::format("{} {} {}", Now(), LogLevelName(level), message);
    for (const auto& f : fields) {
      const bool quote = f.value.find_first_of(" \"=") != std::string::npos || f.value.empty();
      line +=
          quote ? fmt::format(" {}=\"{}\"", f.key, f.value) : fmt::format(" {}={}", f.key, f.value);
    }
    return line;
  }
};

class JsonLinesLogger final : public LineLogger {
 public:
  using LineLogger::LineLogger;
  std::string Format(LogLevel level, std::string_view message,
                     std::span<const LogField> fields) override {
    boost::json::object o{{"time", Now()}, {"level", LogLevelName(level)}, {"message", message}};
    for (const auto& f : fields) o[f.key] = f.value;
    return boost::json::serialize(o);
  }
};

struct Current {
  std::mutex mu;
  std::shared_ptr<Logger> logger;
};
Current& TheLogger() {
  static Current* c = new Current{{}, NewTextLogger(stderr)};  // never destroyed: threads log late
  return *c;
}

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::shared_ptr<Logger> NewTextLogger(std::FILE* out, LogLevel min_level) {
  return std::make_shared<TextLogger>(out, min_level);
}

std::shared_ptr<Logger> NewJsonLinesLogger(std::FILE* out, LogLevel min_level) {
  return std::make_shared<JsonLinesLogger>(out, min_level);
}

void SetLogger(std::shared_ptr<Logger> logger) {
  if (!logger) logger = NewTextLogger(stderr);
  std::lock_guard l(TheLogger().mu);
  TheLogger().logger = std::move(logger);
}

std::shared_ptr<Logger> GetLogger() {
  std::lock_guard l(TheLogger().mu);
  return TheLogger().logger;
}

void Log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
  GetLogger()->Log(level, message, std::span<const LogField>(fields.begin(), fields.size()));
}

}  // namespace commcare
