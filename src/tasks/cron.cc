// Cron lines (Vixie syntax) and their next firing in an IANA time zone, DST-correct: a local
// time that does not exist (the spring-forward gap) fires when the gap ends; one that occurs
// twice (the fall-back hour) fires once, at its first occurrence.
#include <date/tz.h>
#include <fmt/format.h>

#include <array>
#include <bitset>
#include <cctype>
#include <charconv>
#include <chrono>
#include <string>
#include <vector>

#include "commcare/tasks.h"

namespace commcare {
namespace {

using namespace std::chrono;

struct Field {
  const char* name;
  int lo, hi;
  std::array<const char*, 13> names;  // "jan".. or "sun".. (index = value), nullptr-terminated
};
constexpr Field kFields[5] = {
    {"minute", 0, 59, {}},
    {"hour", 0, 23, {}},
    {"day of month", 1, 31, {}},
    {"month",
     1,
     12,
     {nullptr, "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
    {"day of week", 0, 7, {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
};

struct Cron {
  std::bitset<60> minute;
  std::bitset<24> hour;
  std::bitset<32> dom;
  std::bitset<13> month;
  std::bitset<8> dow;
  bool dom_any = false, dow_any = false;

  bool DayMatches(const date::year_month_day& ymd) const {
    if (!month[unsigned(ymd.month())]) return false;
    bool d = dom[unsigned(ymd.day())];
    bool w = dow[date::weekday(ymd).c_encoding()];
    if (dom_any && dow_any) return true;
    if (dom_any) return w;
    if (dow_any) return d;
    return d || w;  // both restricted: either (Vixie)
  }
};

Result<int> ParseValue(std::string_view s, const Field& f, int index) {
  std::string lower;
  for (char c : s) lower += char(std::tolower(static_cast<unsigned char>(c)));
  for (size_t i = 0; i < f.names.size(); ++i)
    if (f.names[i] && lower == f.names[i]) return int(i);
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty())
    return Status::InvalidArgument(
        fmt::format("cron field {} ({}): \"{}\" is not a number", index + 1, f.name, s));
  if (v < f.lo || v > f.hi)
    return Status::InvalidArgument(fmt::format("cron field {} ({}): {} is out of range {}-{}",
                                               index + 1, f.name, v, f.lo, f.hi));
  return v;
}

// Sets bits[lo..hi] for one comma-separated field; *any when it is "*".
template <size_t N>
Status ParseField(std::string_view text, int index, std::bitset<N>* bits, bool* any) {
  const Field& f = kFields[index];
  *any = text == "*" || text == "?";
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view item =
        text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    int step = 1;
    if (auto slash = item.find('/'); slash != item.npos) {
      auto st = item.substr(slash + 1);
      auto [p, ec] = std::from_chars(st.data(), st.data() + st.size(), step);
      if (ec != std::errc() || p != st.data() + st.size() || step < 1 || step > f.hi)
        return Status::InvalidArgument(
            fmt::format("cron field {} ({}): bad step \"{}\"", index + 1, f.name, st));
      item = item.substr(0, slash);
      if (item != "*") *any = false;
    }
    int lo = f.lo, hi = f.hi;
    if (item.empty())
      return Status::InvalidArgument(fmt::format("cron field {} ({}): empty", index + 1, f.name));
    if (item != "*" && item != "?") {
      auto dash = item.find('-');
      CC_ASSIGN_OR_RETURN(lo, ParseValue(item.substr(0, dash), f, index));
      hi = lo;
      if (dash != item.npos) {
        CC_ASSIGN_OR_RETURN(hi, ParseValue(item.substr(dash + 1), f, index));
      } else if (step > 1) {
        hi = f.hi;  // "5/15": from 5 on
      }
      if (hi < lo)
        return Status::InvalidArgument(
            fmt::format("cron field {} ({}): range {} is backwards", index + 1, f.name, item));
    }
    for (int v = lo; v <= hi; v += step) bits->set(size_t(v));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return Status::Ok();
}

Result<Cron> ParseCron(std::string_view line) {
  static const std::pair<const char*, const char*> kMacros[] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"}};
  std::string text(line);
  if (!text.empty() && text[0] == '@') {
    bool found = false;
    for (auto [m, e] : kMacros)
      if (text == m) text = e, found = true;
    if (!found)
      return Status::InvalidArgument(fmt::format(
          "cron: unknown \"{}\" (use @yearly, @monthly, @weekly, @daily or @hourly)", line));
  }
  std::vector<std::string_view> parts;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t b = rest.find_first_not_of(" \t");
    if (b == rest.npos) break;
    rest = rest.substr(b);
    size_t e = rest.find_first_of(" \t");
    parts.push_back(rest.substr(0, e));
    rest = e == rest.npos ? std::string_view() : rest.substr(e);
  }
  if (parts.size() != 5)
    return Status::InvalidArgument(fmt::format(
        "cron: \"{}\" has {} fields; expected 5 (minute hour day-of-month month day-of-week)", line,
        parts.size()));
  Cron c;
  bool any = false;
  CC_RETURN_IF_ERROR(ParseField(parts[0], 0, &c.minute, &any));
  CC_RETURN_IF_ERROR(ParseField(parts[1], 1, &c.hour, &any));
  CC_RETURN_IF_ERROR(ParseField(parts[2], 2, &c.dom, &c.dom_any));
  CC_RETURN_IF_ERROR(ParseField(parts[3], 3, &c.month, &any));
  CC_RETURN_IF_ERROR(ParseField(parts[4], 4, &c.dow, &c.dow_any));
  if (c.dow[7]) c.dow.set(0);  // 7 is Sunday too
  return c;
}

Result<const date::time_zone*> Zone(std::string_view name) {
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    return Status::InvalidArgument(
        fmt::format("unknown time zone \"{}\" (an IANA name such as Africa/Nairobi)", name));
  }
}

// The instant a local time names: its first occurrence, or the end of the gap it falls in.
sys_seconds ToSys(const date::time_zone* tz, date::local_seconds lt) {
  auto info = tz->get_info(lt);
  switch (info.result) {
    case date::local_info::unique:
    case date::local_info::ambiguous:
      return sys_seconds{lt.time_since_epoch() - info.first.offset};
    default:
      return info.first.end;  // nonexistent: when the clocks have jumped
  }
}

}  // namespace

Status CheckSchedule(std::string_view cron, std::string_view time_zone) {
  CC_RETURN_IF_ERROR(ParseCron(cron).status());
  CC_RETURN_IF_ERROR(Zone(time_zone).status());
  return NextCronTime(cron, time_zone, 0).status();
}

Result<int64_t> NextCronTime(std::string_view line, std::string_view time_zone, int64_t after) {
  CC_ASSIGN_OR_RETURN(Cron c, ParseCron(line));
  CC_ASSIGN_OR_RETURN(const date::time_zone* tz, Zone(time_zone));
  const sys_seconds after_s = floor<seconds>(sys_time<microseconds>(microseconds(after)));
  const auto start = tz->to_local(floor<minutes>(after_s) + minutes(1));
  auto day = floor<date::days>(start);
  for (int i = 0; i < 366 * 8; ++i, day += date::days(1)) {  // 8 years: 29 February on a Monday
    date::year_month_day ymd(day);
    if (!c.DayMatches(ymd)) continue;
    for (int h = 0; h < 24; ++h) {
      if (!c.hour[size_t(h)]) continue;
      for (int m = 0; m < 60; ++m) {
        if (!c.minute[size_t(m)]) continue;
        date::local_seconds lt = day + hours(h) + minutes(m);
        if (lt < start) continue;
        sys_seconds s = ToSys(tz, lt);
        if (s > after_s) return int64_t(duration_cast<microseconds>(s.time_since_epoch()).count());
      }
    }
  }
  return Status::InvalidArgument(fmt::format("cron: \"{}\" never fires", line));
}

}  // namespace commcare
