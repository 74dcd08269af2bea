#include "util/time.h"

#include <doctest/doctest.h>

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
