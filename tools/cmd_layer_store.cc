// imgfs — `imgfs layer-store DIR`: serves containers/storage's Additional Layer Store at DIR
// (fs/layer_store/layer_store.h, fs/fuse/layer_store_ops.h). Like `imgfs mount`, it returns
// once the mount answers and keeps serving in the background (logs to syslog); `-f` serves
// in the foreground with logs on stderr. `imgfs umount DIR` (or umount) ends it.
#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "cache/store.h"
#include "fs/fuse/layer_store_ops.h"
#include "fs/fuse/mount_access.h"
#include "fs/layer_store/layer_store.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kLayerStoreUsage =
    "Usage: imgfs layer-store [OPTIONS] DIR\n\n"
    "Serve an Additional Layer Store at DIR for podman and CRI-O (containers/storage):\n"
    "eStargz and zstd:chunked layers of registry images are read lazily, so containers\n"
    "start without pulling. In storage.conf:\n"
    "  [storage.options]\n"
    "  additionallayerstores = [\"DIR:ref\"]\n"
    "Image manifests and configs are recorded in the imgfs store (--root); chunks go to its\n"
    "chunk cache. Returns once DIR is mounted; `imgfs umount DIR` stops it.";

void Report(int fd, const std::string& message) {
  if (fd < 0) return;
  const std::string line = message + "\n";
  ssize_t ignored = write(fd, line.data(), line.size());
  (void)ignored;
}

int Serve(const CommandContext& ctx, const std::string& dir, const ParsedArgs& args,
          int status_fd) {
  auto fail = [&](const Status& st) {
    Report(status_fd, "ERR " + st.ToString());
    if (status_fd < 0) Fail(st);
    return kExitError;
  };
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return fail(store.error().WithContext("opening the image store " + ctx.global.root));
  }
  fs::LayerStoreOptions options;
  options.store = store->get();
  options.insecure_registries = ctx.global.insecure_registries;
  options.ca_files = ctx.global.ca_certs;
  options.creds = ctx.global.creds;
  if (args.Has("fetch-timeout")) {
    try {
      options.fetch_timeout_seconds = std::stod(args.Get("fetch-timeout"));
    } catch (const std::exception&) {
      return fail(Status::InvalidArgument("--fetch-timeout needs a number of seconds"));
    }
  }
  fs::LayerStore layer_store(options);
  fs::LayerStoreSessionOptions session_options;
  session_options.debug = args.Has("debug");
  const bool foreground = status_fd < 0;
  session_options.on_ready = [status_fd, foreground] {
    if (!foreground) {
      const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        close(devnull);
      }
    }
    Report(status_fd, "OK");
    if (status_fd >= 0) close(status_fd);
  };
  Result<std::unique_ptr<fs::LayerStoreSession>> session =
      fs::LayerStoreSession::Mount(&layer_store, dir, session_options);
  if (!session.has_value()) return fail(session.error());
  IMGFS_LOG(kInfo) << "serving the layer store at " << dir;
  Status run = (*session)->Run();
  session->reset();
  if (!run.ok()) {
    IMGFS_LOG(kError) << run.ToString();
    return kExitError;
  }
  return kExitOk;
}

}  // namespace

int RunLayerStore(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"foreground", 'f', false, "", "serve in the foreground, logs on stderr"},
      {"fetch-timeout", 0, true, "SECONDS", "a read waits at most this long for the registry"},
      {"debug", 'd', false, "", "libfuse debug output (implies -f)"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kLayerStoreUsage, specs, &args, &code)) return code;
  if (args.positional().size() != 1) {
    return UsageError(ctx.name, "\"layer-store\" requires exactly 1 argument");
  }
  std::string dir = args.positional()[0];
  if (dir.front() != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof(cwd)) == nullptr) return Fail(Status::FromErrno(errno, "getcwd"));
    dir = std::string(cwd) + "/" + dir;
  }
  if (Status access = fs::CheckMountAccess({"allow_other"}); !access.ok()) {
    return Fail(access.WithContext("cannot mount at " + dir));
  }
  if (args.Has("foreground") || args.Has("debug")) return Serve(ctx, dir, args, -1);

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
    setsid();
    openlog("imgfs", LOG_PID, LOG_DAEMON);
    SetLogSink([](LogLevel level, std::string_view message) {
      const int prio = level == LogLevel::kError     ? LOG_ERR
                       : level == LogLevel::kWarning ? LOG_WARNING
                       : level == LogLevel::kInfo    ? LOG_INFO
                                                     : LOG_DEBUG;
      syslog(prio, "%.*s", static_cast<int>(message.size()), message.data());
    });
    _exit(Serve(ctx, dir, args, write_end.Release()));
  }
  write_end.Close();
  std::string reply;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(read_end.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
    if (reply.find('\n') != std::string::npos) break;
  }
  if (reply.rfind("OK", 0) == 0) return kExitOk;
  if (reply.rfind("ERR ", 0) == 0) {
    std::string message = reply.substr(4);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return Fail(message);
  }
  return Fail("the layer store daemon exited before the mount was ready");
}

}  // namespace imgfs::tools
