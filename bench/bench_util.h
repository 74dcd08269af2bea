// Shared pieces of the benchmark programs: the synthetic form, clocks, /proc figures.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// A /proc/self/status figure in KB (VmRSS, RssAnon: heap and stacks, RssFile: mapped files).
inline long StatusKb(const char* key, const std::string& pid = "self") {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':')
      return std::stol(line.substr(n + 1));
  return -1;
}

// Bytes this process has written through write(2)-family calls so far.
inline long long WrittenBytes() {
  std::ifstream in("/proc/self/io");
  std::string k;
  long long v;
  while (in >> k >> v)
    if (k == "wchar:") return v;
  return -1;
}

// Form i: creates case i/2's case on even i... every case is created once and updated once.
// extra: more XML inside the case's update block.
inline std::string MakeForm(long i, long ncases, const std::string& extra = "") {
  long c = i % ncases;
  bool create = i < ncases;
  std::string props;
  for (int p = 0; p < 20; ++p)
    props += fmt::format("<prop_{0}>value {0} of form {1} with some padding text</prop_{0}>", p, i);
  props += extra;
  std::string filler(900, 'x');
  return fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://openrosa.org/formdesigner/bench" xmlns:jrm="http://dev.commcarehq.org/jr/xforms" uiVersion="1" version="12" name="Visit">)"
      R"(<question1>yes</question1><question2>{4}</question2><group><q3>12</q3><q4>2020-05-01</q4></group><notes>{5}</notes>)"
      R"(<n0:case xmlns:n0="http://commcarehq.org/case/transaction/v2" case_id="bench-case-{0}" date_modified="2020-05-01T10:00:00.000Z" user_id="bench-user">)"
      R"({1}<n0:update>{2}</n0:update></n0:case>)"
      R"(<n1:meta xmlns:n1="http://openrosa.org/jr/xforms"><n1:deviceID>bench-device</n1:deviceID><n1:timeStart>2020-05-01T09:55:00.000Z</n1:timeStart>)"
      R"(<n1:timeEnd>2020-05-01T10:00:00.000Z</n1:timeEnd><n1:username>bench</n1:username><n1:userID>bench-user</n1:userID>)"
      R"(<n1:instanceID>bench-form-{3}</n1:instanceID><n2:appVersion xmlns:n2="http://commcarehq.org/xforms">CommCare 2.53</n2:appVersion></n1:meta></data>)",
      c,
      create ? "<n0:create><n0:case_type>patient</n0:case_type><n0:case_name>Patient</"
               "n0:case_name><n0:owner_id>bench-user</n0:owner_id></n0:create>"
             : "",
      props, i, i % 7, filler);
}

}  // namespace bench
