// UCR indicator transforms (transforms/specs.py): translation, multiple_value_string_translation,
// number_format, date_format and the custom month_display, days_elapsed_from_date, user_display,
// user_without_domain_display, owner_display, short_decimal_display and the Ethiopian dates.
#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <ctime>

#include "pillows/ucr_internal.h"
#include "util/time.h"

namespace commcare::pillows::ucr::internal {
namespace {

// util.py localize: a plain display as is; of a {language: text} map the pillow has no request
// language, so English, else the first.
json::value Localize(const json::value& display) {
  if (!display.is_object()) return display;
  const auto& o = display.get_object();
  if (const json::value* en = o.if_contains("en")) return *en;
  return o.empty() ? json::value() : o.begin()->value();
}

json::value Translate(const json::object& table, const json::value& v) {
  if (!v.is_string()) return v;
  const json::value* t = table.if_contains(v.get_string());
  return t ? Localize(*t) : v;
}

// Python's str.format with one number ("{0:.2f}", "{:d}"); fmt shares the mini-language. A value
// that is not a number, or a format fmt refuses, leaves the value as it was (HQ's except).
json::value NumberFormat(const std::string& format, const json::value& v) {
  double d;
  if (!(v.is_number() || v.is_string()) || !AsNumber(v, &d)) return v;
  try {
    if (v.is_int64() || (v.is_string() && d == static_cast<double>(static_cast<int64_t>(d)) &&
                         v.get_string().find('.') == std::string::npos))
      return json::value(fmt::format(fmt::runtime(format), static_cast<int64_t>(d)));
    return json::value(fmt::format(fmt::runtime(format), d));
  } catch (const fmt::format_error&) {
    return v;
  }
}

// value.strftime(format) for a date or date-time; anything else is kept.
json::value DateFormat(const std::string& format, const json::value& v) {
  int64_t us;
  if (!v.is_string() || !util::ParseIsoTime(v.get_string(), &us)) return v;
  std::time_t secs =
      static_cast<std::time_t>(us >= 0 ? us / 1'000'000 : (us - 999'999) / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[256];
  size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
  if (n == 0 && !format.empty()) return v;
  return json::value(std::string(buf, n));
}

// transforms/custom/date.py get_month_display: 1..12 as the month's English name.
json::value MonthDisplay(const json::value& v) {
  static const char* kMonths[] = {"January",   "February", "March",    "April",
                                  "May",       "June",     "July",     "August",
                                  "September", "October",  "November", "December"};
  double d;
  if (!AsNumber(v, &d) || d < 1 || d > 12 || d != static_cast<int>(d)) return v;
  return json::value(kMonths[static_cast<int>(d) - 1]);
}

// days_elapsed_from_date: whole days from the date to today (UTC).
json::value DaysElapsed(const json::value& v) {
  int64_t days;
  if (!AsDays(v, &days)) return v;
  return json::value(util::NowMicros() / 86'400'000'000 - days);
}

// transforms/custom/numeric.py get_short_decimal_display: a whole number as an integer, else
// Python's round(x, 2) (correctly rounded, half to even on the binary value, as printf's %.2f);
// what is not a number (a string too: Python's '5' % 1 raises) is kept.
json::value ShortDecimal(const json::value& v) {
  double d;
  if (v.is_bool()) return json::value(v.get_bool() ? 1 : 0);
  if (!v.is_number() || !AsNumber(v, &d) || !std::isfinite(d)) return v;
  if (v.is_int64() || v.is_uint64()) return v;
  if (d == std::floor(d) && std::fabs(d) < 9.2e18) return json::value(static_cast<int64_t>(d));
  return json::value(std::strtod(fmt::format("{:.2f}", d).c_str(), nullptr));
}

template <typename F>
Transform Pure(F f) {
  return [f](const json::value& x, EvalContext&) { return f(x); };
}

// users/util.py raw_username: the username without "@<domain>.commcarehq.org".
std::string RawUsername(std::string_view u) {
  const auto at = u.find('@');
  return std::string(
      at != std::string_view::npos && u.ends_with(".commcarehq.org") ? u.substr(0, at) : u);
}

// users/util.py cached_user_id_to_username (user_display) and cached_owner_id_to_display
// (owner_display: get_wrapped_owner tries a user, then a group, then a location): null for an
// empty or unknown id.
Transform Display(bool owner) {
  return [owner](const json::value& x, EvalContext& ctx) -> json::value {
    if (!x.is_string() || x.get_string().empty() || !ctx.directory) return nullptr;
    auto u = ctx.directory->Get(ctx.domain, "CommCareUser", x.get_string());
    if (u.ok()) {
      const json::value* name = u->if_contains("username");
      return name && name->is_string() ? json::value(RawUsername(name->get_string())) : nullptr;
    }
    if (!owner) return nullptr;
    for (const char* type : {"Group", "Location"})
      if (auto d = ctx.directory->Get(ctx.domain, type, x.get_string()); d.ok()) {
        const json::value* name = d->if_contains("name");
        return name ? *name : json::value();
      }
    return nullptr;
  };
}

}  // namespace

Result<Transform> CompileTransform(const json::value& v, const std::string& path) {
  if (!v.is_object()) return Bad(path, "a transform must be an object");
  const json::object& o = v.get_object();
  if (o.empty()) return Transform();  // {} is HQ's "no transform"
  Status err;
  std::string type = TypeOf(o, path, &err);
  CC_RETURN_IF_ERROR(err);
  auto str = [&](const char* key) -> Result<std::string> {
    const json::value* x = o.if_contains(key);
    if (!x || !x->is_string()) return Bad(path + "." + key, "is required (a string)");
    return std::string(x->get_string());
  };
  if (type == "translation" || type == "multiple_value_string_translation") {
    const json::value* t = o.if_contains("translations");
    json::object table = t && t->is_object() ? t->get_object() : json::object();
    if (t && !t->is_object()) return Bad(path + ".translations", "must be an object");
    if (const json::value* m = o.if_contains("mobile_or_web"); m && *m == "mobile")
      return Pure([](const json::value& x) { return x; });  // translated on the phone
    if (type == "translation")
      return Pure([table](const json::value& x) { return Translate(table, x); });
    CC_ASSIGN_OR_RETURN(std::string delim, str("delimiter"));
    if (delim.empty()) return Bad(path + ".delimiter", "must not be empty");
    return Pure([table, delim](const json::value& x) {
      if (!x.is_string()) return x;
      std::string_view s = x.get_string();
      std::string out;
      size_t i = 0;
      while (true) {
        size_t j = s.find(delim, i);
        std::string_view piece = s.substr(i, j == std::string_view::npos ? j : j - i);
        out += AsString(Translate(table, json::value(piece)));
        if (j == std::string_view::npos) break;
        out += delim;
        i = j + delim.size();
      }
      return json::value(out);
    });
  }
  if (type == "number_format") {
    CC_ASSIGN_OR_RETURN(std::string f, str("format_string"));
    return Pure([f](const json::value& x) { return NumberFormat(f, x); });
  }
  if (type == "date_format") {
    CC_ASSIGN_OR_RETURN(std::string f, str("format"));
    return Pure([f](const json::value& x) { return DateFormat(f, x); });
  }
  if (type == "custom") {
    CC_ASSIGN_OR_RETURN(std::string ct, str("custom_type"));
    if (ct == "month_display") return Pure(MonthDisplay);
    if (ct == "days_elapsed_from_date") return Pure(DaysElapsed);
    if (ct == "user_display" || ct == "user_without_domain_display") return Display(false);
    if (ct == "owner_display") return Display(true);
    if (ct == "short_decimal_display") return Pure(ShortDecimal);
    if (ct == "ethiopian_date_to_gregorian_date") return Pure(EthiopianToGregorian);
    if (ct == "gregorian_date_to_ethiopian_date") return Pure(GregorianToEthiopian);
    return Bad(path + ".custom_type",
               fmt::format("custom transform '{}' is not supported (month_display, "
                           "days_elapsed_from_date, user_display, user_without_domain_display, "
                           "owner_display, short_decimal_display, "
                           "ethiopian_date_to_gregorian_date and "
                           "gregorian_date_to_ethiopian_date are)",
                           ct));
  }
  return Bad(path + ".type", fmt::format("unknown transform type '{}'", type));
}

}  // namespace commcare::pillows::ucr::internal
