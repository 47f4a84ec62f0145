// imgfs — logging.
//
// One process-wide logger writing single lines to stderr (or to a function set with
// SetLogSink, e.g. syslog for a daemonized mount). Messages below the threshold (default
// kWarning; `IMGFS_LOG=debug|info|warning|error` or SetLogLevel) are dropped before
// formatting. Never log secrets: credentials and tokens are redacted by their owners.
//
// Usage: IMGFS_LOG(kInfo) << "pulled " << ref;
//
// Thread-safety: every function may be called from any thread.
#ifndef IMGFS_BASE_LOG_H_
#define IMGFS_BASE_LOG_H_

#include <functional>
#include <sstream>
#include <string>
#include <string_view>

namespace imgfs {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Parses "debug", "info", "warning"/"warn", "error"; returns false on anything else.
bool ParseLogLevel(std::string_view text, LogLevel* level);
// Replaces the sink (nullptr restores stderr). The sink gets the level and the bare message.
void SetLogSink(std::function<void(LogLevel, std::string_view)> sink);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, std::string_view message);

namespace internal {
class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  ~LogMessage() { LogLine(level_, stream_.str()); }
  std::ostringstream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};
// Turns the stream expression into void so both branches of ?: have the same type.
struct LogVoidify {
  void operator&(std::ostream&) {}
};
}  // namespace internal

}  // namespace imgfs

// Safe inside an unbraced if/else: the whole statement is one expression.
#define IMGFS_LOG(severity)                         \
  !::imgfs::LogEnabled(::imgfs::LogLevel::severity) \
      ? (void)0                                     \
      : ::imgfs::internal::LogVoidify() &           \
            ::imgfs::internal::LogMessage(::imgfs::LogLevel::severity).stream()

#endif  // IMGFS_BASE_LOG_H_
