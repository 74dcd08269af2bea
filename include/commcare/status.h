// Status and Result<T>: how every libcommcare call reports success or failure.
// No exception crosses a public header; errors are values.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace commcare {

// Error codes. The numbers are frozen: the C ABI returns their negatives.
enum class StatusCode : int {
  kOk = 0,
  kNotFound = 1,
  kAlreadyExists = 2,
  kInvalidArgument = 3,
  kFailedPrecondition = 4,
  kAborted = 5,      // a conflict; retrying the whole operation may succeed
  kUnavailable = 6,  // a backend is down or busy; retryable
  kDataLoss = 7,
  kUnimplemented = 8,
  kInternal = 9,
  kResourceExhausted = 10,  // a size or rate limit was exceeded
  kPermissionDenied = 11,
  kUnauthenticated = 12,
};

// The outcome of an operation: Ok, or a code with a message that names the problem.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
  static Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status PermissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }
  static Status Unauthenticated(std::string m) {
    return {StatusCode::kUnauthenticated, std::move(m)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  bool IsNotFound() const { return code_ == StatusCode::kNotFound; }
  bool IsAborted() const { return code_ == StatusCode::kAborted; }
  bool IsInvalidArgument() const { return code_ == StatusCode::kInvalidArgument; }

  // "NotFound: case 'x' does not exist" (or "OK").
  std::string ToString() const;
  // The code's name, e.g. "NotFound".
  static std::string_view CodeName(StatusCode code);

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or an error Status, like absl::StatusOr.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be Ok
  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace commcare

#define CC_CONCAT_INNER_(a, b) a##b
#define CC_CONCAT_(a, b) CC_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` is not ok.
#define CC_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::commcare::Status cc_status_ = (expr);  \
    if (!cc_status_.ok()) return cc_status_; \
  } while (0)

// `CC_ASSIGN_OR_RETURN(auto x, Call());` binds the value or returns the error.
#define CC_ASSIGN_OR_RETURN(lhs, expr) \
  CC_ASSIGN_OR_RETURN_IMPL_(CC_CONCAT_(cc_r_, __LINE__), lhs, expr)
#define CC_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
