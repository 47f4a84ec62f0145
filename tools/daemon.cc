// imgfs — detached daemons of the CLI (see daemon.h).
#include "tools/daemon.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <iostream>
#include <map>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "base/unique_fd.h"
#include "tools/cli.h"

namespace imgfs::tools {

void ReportStatus(int fd, const std::string& line) {
  if (fd < 0) return;
  const std::string text = line + "\n";
  ssize_t ignored = write(fd, text.data(), text.size());
  (void)ignored;
}

void DetachStdio() {
  const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) return;
  dup2(devnull, STDIN_FILENO);
  dup2(devnull, STDOUT_FILENO);
  dup2(devnull, STDERR_FILENO);
  close(devnull);
}

void LogToSyslog() {
  openlog("imgfs", LOG_PID, LOG_DAEMON);
  SetLogSink([](LogLevel level, std::string_view message) {
    const int prio = level == LogLevel::kError     ? LOG_ERR
                     : level == LogLevel::kWarning ? LOG_WARNING
                     : level == LogLevel::kInfo    ? LOG_INFO
                                                   : LOG_DEBUG;
    syslog(prio, "%.*s", static_cast<int>(message.size()), message.data());
  });
}

namespace {

// Reads the one status line a daemon reports on `fd` ("OK" or "ERR <message>"; "" when it
// ended without a word), without its newline.
std::string ReadStatusLine(int fd) {
  std::string reply;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
    if (reply.find('\n') != std::string::npos) break;
  }
  while (!reply.empty() && reply.back() == '\n') reply.pop_back();
  return reply;
}

int WaitStatus(pid_t pid) {
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return wstatus;
}

}  // namespace

int WaitExitStatus(pid_t pid) {
  const int wstatus = WaitStatus(pid);
  return wstatus >= 0 && WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : kExitError;
}

int RunDetached(const std::string& what, const std::function<int(int status_fd)>& serve,
                const DetachOptions& options) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Fail(Status::FromErrno(errno, "pipe"));
  UniqueFd read_end(fds[0]);
  UniqueFd write_end(fds[1]);
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = fork();
  if (pid < 0) return Fail(Status::FromErrno(errno, "fork"));
  if (pid == 0) {
    read_end.Close();
    if (options.foreground) {
      setpgid(0, 0);
    } else {
      setsid();
      LogToSyslog();
    }
    _exit(serve(write_end.Release()));
  }
  write_end.Close();
  const std::string reply = ReadStatusLine(read_end.get());
  if (reply == "OK") return options.ready ? options.ready(pid) : kExitOk;
  const int wstatus = WaitStatus(pid);
  if (reply.rfind("ERR ", 0) == 0) return Fail(reply.substr(4));
  return Fail(what + ": the daemon exited before it was ready" +
              (wstatus >= 0 && WIFSIGNALED(wstatus)
                   ? " (signal " + std::to_string(WTERMSIG(wstatus)) + ")"
                   : ""));
}

namespace {

// What the user calls a configuration key, for the message about a value that is not UTF-8.
std::string KeyForMessage(const std::string& key) {
  static const std::map<std::string, std::string> kNames = {
      {"dir", "the mountpoint"},
      {"overlay_dir", "the mountpoint"},
      {"upper", "--upper"},
      {"root", "--root"},
      {"creds", "--creds"},
      {"ca_certs", "--ca-cert"},
      {"mount_options", "-o"},
      {"insecure_registries", "--insecure-registry"},
      {"image", "the image reference"}};
  auto it = kNames.find(key);
  return it != kNames.end() ? it->second : key;
}

// InvalidArgument naming the first string of `j` (an object of strings, arrays of strings
// and scalars) that JSON cannot hold.
Status CheckUtf8(const nlohmann::json& j) {
  for (const auto& [key, value] : j.items()) {
    std::vector<const nlohmann::json*> strings;
    if (value.is_string()) strings.push_back(&value);
    if (value.is_array()) {
      for (const nlohmann::json& v : value) {
        if (v.is_string()) strings.push_back(&v);
      }
    }
    for (const nlohmann::json* v : strings) {
      const std::string& text = v->get_ref<const std::string&>();
      if (IsValidUtf8(text)) continue;
      // A credential is never shown, not even in an error.
      return Status::InvalidArgument(
          KeyForMessage(key) + (key == "creds" ? "" : " " + QuoteForMessage(text)) +
          " is not valid UTF-8: imgfs hands it to its daemon as JSON text, which holds UTF-8 "
          "only");
    }
  }
  return Status::Ok();
}

// The global options a daemon is handed.
nlohmann::json GlobalPart(const GlobalOptions& global) {
  nlohmann::json j;
  j["root"] = global.root;
  j["insecure_registries"] = global.insecure_registries;
  j["ca_certs"] = global.ca_certs;
  j["creds"] = global.creds;
  return j;
}

}  // namespace

Status CheckDaemonConfig(const GlobalOptions& global, const nlohmann::json& request) {
  IMGFS_RETURN_IF_ERROR(CheckUtf8(request));
  return CheckUtf8(GlobalPart(global));
}

Result<std::string> EncodeDaemonConfig(const GlobalOptions& global, nlohmann::json request) {
  IMGFS_RETURN_IF_ERROR(CheckDaemonConfig(global, request));
  request.update(GlobalPart(global));
  request["log_level"] = static_cast<int>(GetLogLevel());
  return request.dump();
}

Status DecodeDaemonConfig(
    const std::string& text, GlobalOptions* global,
    const std::function<Status(const nlohmann::json& config)>& decode_request) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corrupt("a daemon configuration");
  try {
    global->root = j.at("root").get<std::string>();
    global->insecure_registries = j.at("insecure_registries").get<std::vector<std::string>>();
    global->ca_certs = j.at("ca_certs").get<std::vector<std::string>>();
    global->creds = j.at("creds").get<std::string>();
    const int level = j.at("log_level").get<int>();
    if (level >= static_cast<int>(LogLevel::kDebug) &&
        level <= static_cast<int>(LogLevel::kError)) {
      SetLogLevel(static_cast<LogLevel>(level));
    }
    return decode_request(j);
  } catch (const nlohmann::json::exception& e) {
    return Status::Corrupt(std::string("a daemon configuration: ") + e.what());
  }
}

std::optional<KeptDaemon> ReceiveKeptDaemon(const CommandContext& ctx, const std::string& fd_text,
                                            int* exit_code) {
  int channel = -1;
  auto [end, ec] = std::from_chars(fd_text.data(), fd_text.data() + fd_text.size(), channel);
  if (ec != std::errc() || end != fd_text.data() + fd_text.size() || channel < 3) {
    *exit_code = UsageError(ctx.name, "--kept-daemon is for imgfs itself");
    return std::nullopt;
  }
  fcntl(channel, F_SETFD, FD_CLOEXEC);
  Result<fs::DaemonStart> start = fs::ReceiveStart(channel);
  if (!start.has_value()) {
    *exit_code = FailToKeeper(channel, start.error());
    return std::nullopt;
  }
  return KeptDaemon{channel, std::move(start).value()};
}

int FailToKeeper(int channel, const Status& st) {
  Status sent = fs::SendMessage(channel, "ERR " + st.ToString());
  (void)sent;
  return Fail(st);
}

}  // namespace imgfs::tools
