// Time: now, and CommCare's lenient ISO-8601 parsing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace commcare::util {

// Microseconds since the Unix epoch, UTC.
int64_t NowMicros();
// Parses "2011-12-27", "2016-03-02T10:21:48.715+01", "...Z", "...-05:00", "... 13:42:50" etc.
// A date alone is midnight UTC; no zone means UTC. False if it is not a date.
bool ParseIsoTime(std::string_view s, int64_t* micros);
// "2016-03-02T09:21:48.715000Z"; "" for 0.
std::string FormatIsoTime(int64_t micros);
// Parses an RFC 1123 HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT").
bool ParseHttpDate(std::string_view s, int64_t* micros);

}  // namespace commcare::util
