// UCR's Ethiopian calendar: the expressions and custom transforms
// ethiopian_date_to_gregorian_date and gregorian_date_to_ethiopian_date
// (userreports/expressions/date_specs.py, transforms/custom/date.py). HQ converts with Dimagi's
// ethiopian-date-converter 0.1.5 (a port of Ealet 2.0); this follows its arithmetic exactly,
// quirks included (no range checks: an overflowing day rolls into the next month), so that a
// report gives the dates HQ's does. Anything that does not convert is "", as HQ's.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <optional>

#include "pillows/ucr_internal.h"

namespace commcare::pillows::ucr::internal {
namespace {

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
int64_t FloorMod(int64_t a, int64_t b) { return a - FloorDiv(a, b) * b; }
bool GregorianLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// _start_day_of_ethiopian.
int64_t StartDay(int64_t y) {
  int64_t n = FloorDiv(y, 100) - FloorDiv(y, 400) - 4;
  if (FloorMod(y - 1, 4) == 3) ++n;
  return n;
}

struct Ymd {
  int64_t y, m, d;
};

// date.py split_date_string: "Y-M-D", each part an int as Python's int() reads it (spaces
// around it allowed). A date-time is read by its date (HQ formats a date object first).
std::optional<Ymd> Split(const json::value& v) {
  if (!v.is_string()) return std::nullopt;
  std::string_view s = v.get_string();
  if (s.size() > 10 && s[4] == '-' && s[7] == '-' && s[10] == 'T') s = s.substr(0, 10);
  if (std::count(s.begin(), s.end(), '-') != 2) return std::nullopt;  // Python: not 3 values
  int64_t part[3];
  for (int i = 0; i < 3; ++i) {
    size_t dash = i < 2 ? s.find('-') : s.size();
    if (dash == std::string_view::npos) return std::nullopt;
    std::string_view p = s.substr(0, dash);
    s = i < 2 ? s.substr(dash + 1) : std::string_view();
    while (!p.empty() && std::isspace(static_cast<unsigned char>(p.front()))) p.remove_prefix(1);
    while (!p.empty() && std::isspace(static_cast<unsigned char>(p.back()))) p.remove_suffix(1);
    if (!p.empty() && p.front() == '+') p.remove_prefix(1);
    if (p.empty() || p.size() > 9 || p.front() == '-') return std::nullopt;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), part[i]);
    if (ec != std::errc() || end != p.data() + p.size()) return std::nullopt;
  }
  // The converter refuses a zero anywhere ("Malformed input can't be converted.").
  if (part[0] == 0 || part[1] == 0 || part[2] == 0) return std::nullopt;
  return Ymd{part[0], part[1], part[2]};
}

// EthiopianDateConverter.to_gregorian.
std::optional<Ymd> ToGregorian(Ymd e) {
  const int64_t nyd = StartDay(e.y);
  int64_t gy = e.y + 7;
  std::array<int64_t, 14> gm = {0, 30, 31, 30, 31, 31, 28, 31, 30, 31, 30, 31, 31, 30};
  if (GregorianLeap(gy + 1)) gm[6] = 29;
  int64_t until = (e.m - 1) * 30 + e.d;
  if (until <= 37 && e.y <= 1575) {
    until += 28;
    gm[0] = 31;
  } else {
    until += nyd - 1;
  }
  if (e.y == 4) until += 1;  // the library's `y - 1 % 4 == 3`, which is y - 1 == 3
  size_t idx = 0;
  int64_t gd = 0;
  for (; idx < gm.size(); ++idx) {
    if (until <= gm[idx]) {
      gd = until;
      break;
    }
    until -= gm[idx];
  }
  if (idx == gm.size()) return std::nullopt;  // the library's unbound local
  if (idx > 4) ++gy;
  static constexpr int64_t kMonth[14] = {8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  if (gy < 1 || gy > 9999 || gd < 1) return std::nullopt;  // what Python's date() refuses
  return Ymd{gy, kMonth[idx], gd};
}

// EthiopianDateConverter.to_ethiopian.
std::optional<Ymd> ToEthiopian(Ymd g) {
  if (g.m == 10 && g.d >= 5 && g.d <= 14 && g.y == 1582) return std::nullopt;
  if (g.m > 13) return std::nullopt;  // the library indexes its 13-entry month table: IndexError
  std::array<int64_t, 13> gm = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (GregorianLeap(g.y)) gm[2] = 29;
  std::array<int64_t, 15> em = {0, 30, 30, 30, 30, 30, 30, 30, 30, 30, 5, 30, 30, 30, 30};
  int64_t ey = g.y - 8;
  em[10] = FloorMod(ey, 4) == 3 ? 6 : 5;
  const int64_t nyd = StartDay(g.y - 8);
  int64_t until = g.d;
  for (int64_t i = 1; i < g.m; ++i) until += gm[static_cast<size_t>(i)];
  int64_t tahissas = FloorMod(ey, 4) == 0 ? 26 : 25;
  if (g.y < 1582 || (until <= 277 && g.y == 1582)) {
    em[1] = 0;
    em[2] = tahissas;
  } else {
    tahissas = nyd - 3;
    em[1] = tahissas;
  }
  size_t k = 1;
  int64_t ed = 0;
  for (; k < em.size(); ++k) {
    if (until <= em[k]) {
      ed = (k == 1 || em[k] == 0) ? until + (30 - tahissas) : until;
      break;
    }
    until -= em[k];
  }
  if (k == em.size()) return std::nullopt;
  if (k > 10) ++ey;
  static constexpr int64_t kMonth[15] = {0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 1, 2, 3, 4};
  return Ymd{ey, kMonth[k], ed};
}

struct EthiopianDate : Expr {
  std::unique_ptr<Expr> date;
  bool to_gregorian = true;
  Result<json::value> Eval(const json::value& item, EvalContext& ctx) const override {
    CC_ASSIGN_OR_RETURN(json::value v, date->Eval(item, ctx));
    return to_gregorian ? EthiopianToGregorian(v) : GregorianToEthiopian(v);
  }
};

}  // namespace

json::value EthiopianToGregorian(const json::value& v) {
  auto e = Split(v);
  auto g = e ? ToGregorian(*e) : std::nullopt;
  if (!g) return json::value("");
  return json::value(fmt::format("{:04}-{:02}-{:02}", g->y, g->m, g->d));
}

json::value GregorianToEthiopian(const json::value& v) {
  auto g = Split(v);
  auto e = g ? ToEthiopian(*g) : std::nullopt;
  if (!e) return json::value("");
  return json::value(fmt::format("{}-{:02}-{:02}", e->y, e->m, e->d));
}

Result<std::unique_ptr<Expr>> CompileEthiopianDate(const std::string& type, const json::object& o,
                                                   const std::string& path, Compiler& c) {
  auto e = std::make_unique<EthiopianDate>();
  e->to_gregorian = type == "ethiopian_date_to_gregorian_date";
  CC_ASSIGN_OR_RETURN(e->date, SubExpr(o, "date_expression", path, c));
  return std::unique_ptr<Expr>(std::move(e));
}

}  // namespace commcare::pillows::ucr::internal
