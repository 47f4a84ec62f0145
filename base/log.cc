// imgfs — logging.
#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace imgfs {
namespace {

LogLevel InitialLevel() {
  LogLevel level = LogLevel::kWarning;
  const char* env = std::getenv("IMGFS_LOG");  // NOLINT(concurrency-mt-unsafe): read once
  if (env != nullptr) ParseLogLevel(env, &level);
  return level;
}

std::atomic<int>& Level() {
  static std::atomic<int> level{static_cast<int>(InitialLevel())};
  return level;
}

std::mutex& SinkMutex() {
  static std::mutex mu;
  return mu;
}

std::function<void(LogLevel, std::string_view)>& Sink() {
  static std::function<void(LogLevel, std::string_view)> sink;
  return sink;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void SetLogLevel(LogLevel level) { Level().store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(Level().load()); }

bool ParseLogLevel(std::string_view text, LogLevel* level) {
  if (text == "debug") {
    *level = LogLevel::kDebug;
  } else if (text == "info") {
    *level = LogLevel::kInfo;
  } else if (text == "warning" || text == "warn") {
    *level = LogLevel::kWarning;
  } else if (text == "error") {
    *level = LogLevel::kError;
  } else {
    return false;
  }
  return true;
}

void SetLogSink(std::function<void(LogLevel, std::string_view)> sink) {
  std::scoped_lock lock(SinkMutex());
  Sink() = std::move(sink);
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= Level().load(); }

void LogLine(LogLevel level, std::string_view message) {
  std::scoped_lock lock(SinkMutex());
  if (Sink()) {
    Sink()(level, message);
    return;
  }
  std::string line = "imgfs[";
  line += std::to_string(::getpid());
  line += "] ";
  line += LevelName(level);
  line += ": ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace imgfs
