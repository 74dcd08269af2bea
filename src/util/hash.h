// Hashes and ids: SipHash-2-4 (CommCare's shard hash), MD5 digests, random uuid hex ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace commcare::util {

// SipHash-2-4 of data with a 16-byte key.
uint64_t SipHash24(const uint8_t key[16], std::string_view data);
// CommCare's shard hash: SipHash-2-4 with a zero key over the UTF-8 bytes, low 32 bits.
uint32_t ShardHash(std::string_view id);
// Lower-case hex of n bytes.
std::string HexEncode(const void* data, size_t n);
// Lower-case hex MD5 of data.
std::string Md5Hex(std::string_view data);
// Lower-case hex SHA-256 of data.
std::string Sha256Hex(std::string_view data);
// 16 raw MD5 bytes of data.
void Md5Raw(std::string_view data, uint8_t out[16]);
// CRC-32C (Castagnoli) of data, continuing from crc (0 to start); SSE4.2 where available.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);
// A random 32-hex-digit id (uuid4().hex).
std::string NewUuidHex();

}  // namespace commcare::util
