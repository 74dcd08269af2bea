#include "util/time.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <ctime>

using namespace commcare::util;

TEST_CASE("ParseIsoTime accepts CommCare's date forms") {
  int64_t t = 0;
  REQUIRE(ParseIsoTime("2011-12-27", &t));
  CHECK(FormatIsoTime(t) == "2011-12-27T00:00:00.000000Z");
  REQUIRE(ParseIsoTime("2016-03-02T10:21:48.715+01", &t));
  CHECK(FormatIsoTime(t) == "2016-03-02T09:21:48.715000Z");
  REQUIRE(ParseIsoTime("2011-12-27T21:07:34.445-05:00", &t));
  CHECK(FormatIsoTime(t) == "2011-12-28T02:07:34.445000Z");
  REQUIRE(ParseIsoTime("2010-06-29T13:42:50.137", &t));
  CHECK(FormatIsoTime(t) == "2010-06-29T13:42:50.137000Z");
  REQUIRE(ParseIsoTime("2011-09-19T22:29:48.096Z", &t));
  CHECK(FormatIsoTime(t) == "2011-09-19T22:29:48.096000Z");
  REQUIRE(ParseIsoTime(" 2020-01-01T00:00:00+0530 ", &t));
  CHECK(FormatIsoTime(t) == "2019-12-31T18:30:00.000000Z");
}

TEST_CASE("ParseIsoTime rejects what is not a date") {
  int64_t t;
  CHECK_FALSE(ParseIsoTime("", &t));
  CHECK_FALSE(ParseIsoTime("11-09-2011", &t));
  CHECK_FALSE(ParseIsoTime("2011-13-01", &t));
  CHECK_FALSE(ParseIsoTime("2011-12-01Tfoo", &t));
  CHECK_FALSE(ParseIsoTime("2011-12-01 garbage", &t));
}

TEST_CASE("ParseHttpDate reads RFC 1123 dates") {
  int64_t t;
  REQUIRE(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT", &t));
  CHECK(FormatIsoTime(t) == "1994-11-06T08:49:37.000000Z");
  CHECK_FALSE(ParseHttpDate("yesterday", &t));
}

TEST_CASE("FormatIsoTime agrees with gmtime over four centuries, before 1970 too") {
  for (int64_t secs = -2208988800; secs < 10413792000; secs += 86400 * 37 + 3671) {
    const int64_t frac = (secs % 1000000 + 1000000) % 1000000;
    const int64_t micros = secs * 1000000 + frac;
    time_t t = static_cast<time_t>(secs);
    struct tm tm {};
    REQUIRE(gmtime_r(&t, &tm));
    char want[64];
    std::snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(frac));
    REQUIRE(FormatIsoTime(micros) == want);
  }
  CHECK(FormatIsoTime(0) == "");
}
