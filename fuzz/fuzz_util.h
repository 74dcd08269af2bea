// Helpers the fuzz targets share: splitting one input into the parts a target needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

namespace commcare::fuzz {

// The input as text.
inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Splits at the first "\n@@\n": (before, after); (all, "") without one. Seeds and regression
// inputs stay readable text with the separator on its own line.
inline std::pair<std::string_view, std::string_view> SplitParts(std::string_view in) {
  constexpr std::string_view kSep = "\n@@\n";
  auto at = in.find(kSep);
  if (at == std::string_view::npos) return {in, {}};
  return {in.substr(0, at), in.substr(at + kSep.size())};
}

// Aborts (a finding) when an invariant a target checks does not hold.
#define FUZZ_CHECK(cond)                                                                      \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (0)

}  // namespace commcare::fuzz
