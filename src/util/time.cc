#include "util/time.h"

#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace commcare::util {
namespace {

// Days from 1970-01-01 to y-m-d (proleptic Gregorian), Howard Hinnant's algorithm.
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t yy = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp + (mp < 10 ? 3 : -9);
  *y = static_cast<int>(yy + (*m <= 2));
}

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool ParseIsoTime(std::string_view s, int64_t* micros) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  int y, mo, d;
  if (!Digits(s, 0, 4, &y) || s.size() < 10 || s[4] != '-' || !Digits(s, 5, 2, &mo) ||
      s[7] != '-' || !Digits(s, 8, 2, &d))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return false;
  int64_t secs = DaysFromCivil(y, mo, d) * 86400;
  int64_t frac = 0;
  size_t p = 10;
  if (p < s.size() && (s[p] == 'T' || s[p] == ' ')) {
    int h, mi, sec = 0;
    if (!Digits(s, p + 1, 2, &h) || p + 3 >= s.size() || s[p + 3] != ':' ||
        !Digits(s, p + 4, 2, &mi))
      return false;
    if (h > 24 || mi > 59) return false;
    p += 6;
    if (p < s.size() && s[p] == ':') {
      if (!Digits(s, p + 1, 2, &sec) || sec > 60) return false;
      p += 3;
      if (p < s.size() && (s[p] == '.' || s[p] == ',')) {
        ++p;
        int64_t scale = 100000;
        size_t start = p;
        while (p < s.size() && std::isdigit(static_cast<unsigned char>(s[p]))) {
          if (scale > 0) frac += (s[p] - '0') * scale;
          scale /= 10;
          ++p;
        }
        if (p == start) return false;
      }
    }
    secs += h * 3600 + mi * 60 + sec;
    // Zone: Z, +HH, +HHMM, +HH:MM.
    if (p < s.size()) {
      if (s[p] == 'Z' || s[p] == 'z') {
        ++p;
      } else if (s[p] == '+' || s[p] == '-') {
        int sign = s[p] == '+' ? 1 : -1, zh, zm = 0;
        if (!Digits(s, p + 1, 2, &zh)) return false;
        p += 3;
        if (p < s.size() && s[p] == ':') ++p;
        if (p < s.size()) {
          if (!Digits(s, p, 2, &zm)) return false;
          p += 2;
        }
        if (zh > 14 || zm > 59) return false;  // real offsets run from -12:00 to +14:00
        secs -= sign * (zh * 3600 + zm * 60);
      }
    }
  }
  if (p != s.size()) return false;
  *micros = secs * 1000000 + frac;
  return true;
}

std::string FormatIsoTime(int64_t micros) {
  if (micros == 0) return "";
  int64_t secs = micros / 1000000, us = micros % 1000000;
  if (us < 0) {
    us += 1000000;
    secs -= 1;
  }
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    days -= 1;
  }
  int y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  if (y < 0 || y > 9999) {  // outside what four digits hold: printf's rendering
    char buf[48];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%06dZ", y, m, d,
                  static_cast<int>(rem / 3600), static_cast<int>(rem / 60 % 60),
                  static_cast<int>(rem % 60), static_cast<int>(us));
    return buf;
  }
  // By hand: this runs twice per case of a restore, where snprintf cost ~4% of the time.
  std::string out = "0000-00-00T00:00:00.000000Z";
  auto put = [&out](size_t at, int64_t v, int digits) {
    for (int i = digits - 1; i >= 0; --i, v /= 10)
      out[at + static_cast<size_t>(i)] = static_cast<char>('0' + v % 10);
  };
  put(0, y, 4);
  put(5, m, 2);
  put(8, d, 2);
  put(11, rem / 3600, 2);
  put(14, rem / 60 % 60, 2);
  put(17, rem % 60, 2);
  put(20, us, 6);
  return out;
}

bool ParseHttpDate(std::string_view s, int64_t* micros) {
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char mon[4] = {};
  int d, y, h, mi, sec;
  std::string str(s);
  const char* comma = std::strchr(str.c_str(), ',');
  const char* p = comma ? comma + 1 : str.c_str();
  if (std::sscanf(p, " %d %3s %d %d:%d:%d", &d, mon, &y, &h, &mi, &sec) != 6) return false;
  for (int i = 0; i < 12; ++i) {
    if (std::strcmp(mon, kMonths[i]) == 0) {
      *micros = (DaysFromCivil(y, i + 1, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000000;
      return true;
    }
  }
  return false;
}

}  // namespace commcare::util
