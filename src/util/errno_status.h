// A Status from the current errno: out of space is ResourceExhausted, anything else Unavailable.
#pragma once

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "commcare/status.h"

namespace commcare::util {

inline Status ErrnoStatus(const std::string& what) {
  const int e = errno;
  std::string m = fmt::format("{}: {}", what, std::strerror(e));
  if (e == ENOSPC || e == EDQUOT) return Status::ResourceExhausted(m);
  return Status::Unavailable(m);
}

}  // namespace commcare::util
