// A streamed answer's bytes between the worker thread that makes them and the connection that
// sends them: in memory up to a limit, then in an unlinked temporary file. The maker never
// waits for a slow client, so a client that does not read holds no thread. Not thread-safe:
// its owner guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "commcare/status.h"

namespace commcare::http {

class Spool {
 public:
  explicit Spool(size_t memory_limit = size_t{1} << 20) : memory_limit_(memory_limit) {}
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Appends bytes after those appended before; Unavailable if the temporary file fails.
  Status Append(std::string_view bytes);
  // Takes up to max of the oldest bytes not yet taken ("" when none wait).
  Result<std::string> Take(size_t max);
  // Bytes appended and not yet taken.
  uint64_t Waiting() const { return memory_bytes_ + (file_end_ - file_read_); }

 private:
  size_t memory_limit_;
  std::deque<std::string> memory_;  // in order, before anything in the file
  uint64_t memory_bytes_ = 0;
  int fd_ = -1;  // once open, every later append goes here (order is kept)
  uint64_t file_end_ = 0, file_read_ = 0;
};

}  // namespace commcare::http
