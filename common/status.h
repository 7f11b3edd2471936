// Control-path results: Status and Result<T>, built by static create()
// factories so that no half-built object exists. The data path never uses
// these; it returns counts or -errno.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace amber {

// Append-only. The numeric values equal grpc::StatusCode so the control
// plane maps one onto the other with a cast.
enum class ErrorCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

std::string_view error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool is_ok() const { return code_ == ErrorCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "invalid argument: delay: must not be negative (-3 ns)"
  std::string to_string() const;

  // Prefixes the message with context, keeping the code: used as errors
  // travel up ("links.conf:12: " + "delay: must not be negative").
  Status with_context(std::string_view context) const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string message) {
  return {ErrorCode::kInvalidArgument, std::move(message)};
}
inline Status failed_precondition(std::string message) {
  return {ErrorCode::kFailedPrecondition, std::move(message)};
}
inline Status not_found(std::string message) {
  return {ErrorCode::kNotFound, std::move(message)};
}
inline Status permission_denied(std::string message) {
  return {ErrorCode::kPermissionDenied, std::move(message)};
}
inline Status resource_exhausted(std::string message) {
  return {ErrorCode::kResourceExhausted, std::move(message)};
}
inline Status internal_error(std::string message) {
  return {ErrorCode::kInternal, std::move(message)};
}
inline Status unavailable(std::string message) {
  return {ErrorCode::kUnavailable, std::move(message)};
}
inline Status data_loss(std::string message) {
  return {ErrorCode::kDataLoss, std::move(message)};
}
inline Status deadline_exceeded(std::string message) {
  return {ErrorCode::kDeadlineExceeded, std::move(message)};
}
inline Status out_of_range(std::string message) {
  return {ErrorCode::kOutOfRange, std::move(message)};
}

// A value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : state_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(state_).is_ok() && "a Result needs a value or an error");
  }

  bool is_ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return is_ok(); }

  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<Status>(state_);
  }
  T& value() & {
    assert(is_ok());
    return std::get<T>(state_);
  }
  const T& value() const& {
    assert(is_ok());
    return std::get<T>(state_);
  }
  T&& value() && {
    assert(is_ok());
    return std::get<T>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace amber

// Returns early from a function returning Status or Result<T>.
#define AMBER_RETURN_IF_ERROR(expr)                   \
  do {                                                \
    ::amber::Status amber_status_ = (expr);           \
    if (!amber_status_.is_ok()) return amber_status_; \
  } while (0)
