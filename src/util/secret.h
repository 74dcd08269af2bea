// Comparing secrets without telling an attacker, by the time taken, how much of a guess was right.
#pragma once

#include <openssl/crypto.h>

#include <string_view>

namespace commcare::util {

// Whether two secrets (hashes, tokens, MACs) are equal, in a time that depends on their
// lengths only, never on where they differ (CRYPTO_memcmp).
inline bool SameSecret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace commcare::util
