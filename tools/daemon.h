// imgfs — the commands whose work goes on in a daemon (`mount`, `layer-store`): detaching it
// and waiting until it serves.
//
// RunDetached forks the daemon (its own session, logs to syslog) and waits for one status
// line on a pipe: "OK" once the daemon serves (the command then exits 0 while the daemon
// goes on, or first runs its continuation) or "ERR <message>" (the command fails with it).
// The daemon side writes that line with ReportStatus, and on readiness points its stdio at
// /dev/null (DetachStdio), so whoever waits for the command's output sees its end as soon as
// the mount is ready.
//
// Thread-safety: RunDetached forks: call it from a single-threaded command.
#ifndef IMGFS_TOOLS_DAEMON_H_
#define IMGFS_TOOLS_DAEMON_H_

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "base/status.h"
#include "fs/fuse/takeover.h"
#include "tools/cli.h"

namespace imgfs::tools {

struct DetachOptions {
  // The child stays in the command's session, in a process group of its own (a terminal's ^C
  // reaches only the command, which passes it on), and keeps logging to stderr: `-f` when
  // the command itself has more to do once the daemon serves (ready below).
  bool foreground = false;
  // Runs in the command once the daemon reported "OK" (`daemon` is its pid, a child of the
  // command); its return is the command's exit status. Unset: kExitOk.
  std::function<int(pid_t daemon)> ready;
};

// Runs `serve(status_fd)` in a detached daemon; its return value is the daemon's exit status.
// Returns the command's exit status: options.ready's (or kExitOk) when the daemon reported
// "OK", else Fail with its "ERR" message or, when it exited without a word, "`what`: the
// daemon exited before it was ready" (with the signal that ended it).
int RunDetached(const std::string& what, const std::function<int(int status_fd)>& serve,
                const DetachOptions& options = {});

// The exit status of child `pid` once it ends (kExitError when it died by a signal).
int WaitExitStatus(pid_t pid);

// Writes `line` and a newline to `fd` (nothing when fd < 0, a foreground run).
void ReportStatus(int fd, const std::string& line);

// Points stdin, stdout and stderr at /dev/null.
void DetachStdio();

// Sends the log lines of this process to syslog (a daemon's; RunDetached's child does it, and
// a daemon started as a new program by its keeper).
void LogToSyslog();

// The JSON configuration a keeper hands each daemon it starts (KeeperOptions::daemon_config):
// the global options (credentials included: never on a command line) and this process's log
// level, with the keys of the command's request (`request`, an object) beside them.
// InvalidArgument, naming the option, when a string in it is not valid UTF-8 (a path may be
// any bytes; JSON text holds UTF-8 only).
Result<std::string> EncodeDaemonConfig(const GlobalOptions& global, nlohmann::json request);

// What EncodeDaemonConfig refuses, without encoding: for a command to fail on a path that is
// not UTF-8 before it makes anything.
Status CheckDaemonConfig(const GlobalOptions& global, const nlohmann::json& request);

// The inverse of EncodeDaemonConfig: sets *global and the log level (ignored when out of
// range), then runs `decode_request` over the object for the request's keys. Corrupt when the
// text is no JSON object or a key is missing or of another type (`decode_request` may let
// nlohmann::json's exceptions out: they become Corrupt here); never throws.
[[nodiscard]] Status DecodeDaemonConfig(
    const std::string& text, GlobalOptions* global,
    const std::function<Status(const nlohmann::json& config)>& decode_request);

// `imgfs CMD --kept-daemon FD`, a daemon its keeper started as a new program (fs/fuse/takeover.h):
// FD is its channel to the keeper (made close-on-exec here), on which the keeper's start record
// comes first. On failure the error went to the keeper ("ERR …") and to stderr, and
// *exit_code is the command's status.
struct KeptDaemon {
  int channel = -1;
  fs::DaemonStart start;
};
std::optional<KeptDaemon> ReceiveKeptDaemon(const CommandContext& ctx, const std::string& fd_text,
                                            int* exit_code);

// A daemon that fails before it serves: "ERR <st>" to its keeper on `channel`, the command's
// failure status (st on stderr).
int FailToKeeper(int channel, const Status& st);

}  // namespace imgfs::tools

#endif  // IMGFS_TOOLS_DAEMON_H_
