// imgfs — Status and Result<T>: the error vocabulary of every module.
//
// A Status is a code plus a human-readable message; an OK Status carries no message and costs
// nothing. Result<T> holds either a T or a non-OK Status. The member names follow
// std::expected (has_value(), value(), error()) so a move to C++23 is mechanical.
//
// Codes (choose the most specific one; kUnavailable means a retry may succeed):
//   kNotFound          a named thing (tag, blob, path, image) does not exist
//   kInvalidArgument   the caller's input is malformed (reference, flag, option)
//   kCorrupt           data read from elsewhere is malformed or fails verification
//   kUnavailable       transient: network, timeout, 5xx, 429; retrying may succeed
//   kPermissionDenied  unauthorized / forbidden / EACCES
//   kUnsupported       valid but not supported (schema 1 manifests, unknown media type)
//   kNoSpace           a disk or cache is full
//   kIo                a local I/O error
//   kInternal          a bug or an unexpected state
//
// Thread-safety: values; safe to copy between threads.
#ifndef IMGFS_BASE_STATUS_H_
#define IMGFS_BASE_STATUS_H_

#include <cassert>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace imgfs {

enum class StatusCode {
  kOk,
  kNotFound,
  kInvalidArgument,
  kCorrupt,
  kUnavailable,
  kPermissionDenied,
  kUnsupported,
  kNoSpace,
  kIo,
  kInternal,
};

// Returns a short lower-case name of `code` ("not found", "corrupt", ...).
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status Corrupt(std::string msg) { return {StatusCode::kCorrupt, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status PermissionDenied(std::string msg) {
    return {StatusCode::kPermissionDenied, std::move(msg)};
  }
  static Status Unsupported(std::string msg) { return {StatusCode::kUnsupported, std::move(msg)}; }
  static Status NoSpace(std::string msg) { return {StatusCode::kNoSpace, std::move(msg)}; }
  static Status Io(std::string msg) { return {StatusCode::kIo, std::move(msg)}; }
  // Io error from an errno value: "<what>: <strerror(err)>".
  static Status FromErrno(int err, std::string_view what);
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "OK" or the message (which already names what failed).
  std::string ToString() const;

  // Returns a copy whose message is "<context>: <message>"; OK stays OK.
  Status WithContext(std::string_view context) const;

  bool operator==(const Status& other) const = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds a T or a non-OK Status. Constructing a Result from an OK Status is a bug (aborts in
// debug builds, and is turned into kInternal otherwise).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok());
    if (std::get<Status>(v_).ok()) v_ = Status::Internal("Result constructed from OK status");
  }

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  bool ok() const { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The error; OK when the Result holds a value.
  Status error() const { return has_value() ? Status() : std::get<1>(v_); }
  // Same as error(), for call sites that read better with status().
  Status status() const { return error(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace imgfs

#define IMGFS_CONCAT_INNER_(a, b) a##b
#define IMGFS_CONCAT_(a, b) IMGFS_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function if `expr` (a Status) is not OK.
#define IMGFS_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::imgfs::Status imgfs_status_ = (expr);        \
    if (!imgfs_status_.ok()) return imgfs_status_; \
  } while (0)

// `lhs = *expr` if `expr` (a Result) holds a value, else returns its Status.
#define IMGFS_ASSIGN_OR_RETURN(lhs, expr) \
  IMGFS_ASSIGN_OR_RETURN_IMPL_(IMGFS_CONCAT_(imgfs_result_, __LINE__), lhs, expr)
#define IMGFS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.has_value()) return tmp.error();          \
  lhs = std::move(tmp).value()

#endif  // IMGFS_BASE_STATUS_H_
