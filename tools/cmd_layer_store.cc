// imgfs — `imgfs layer-store DIR`: serves containers/storage's Additional Layer Store at DIR
// (fs/layer_store/layer_store.h, fs/fuse/layer_store_ops.h). Like `imgfs mount`, it returns
// once the mount answers and keeps serving in the background (logs to syslog); `-f` serves
// in the foreground with logs on stderr. `imgfs umount DIR` (or umount) ends it.
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/status.h"
#include "cache/store.h"
#include "fs/fuse/layer_store_ops.h"
#include "fs/fuse/mount_access.h"
#include "fs/layer_store/layer_store.h"
#include "tools/cli.h"
#include "tools/daemon.h"

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

int Serve(const CommandContext& ctx, const std::string& dir, const ParsedArgs& args,
          int status_fd) {
  auto fail = [&](const Status& st) {
    ReportStatus(status_fd, "ERR " + st.ToString());
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
  options.mountpoint = dir;
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
    if (!foreground) DetachStdio();  // logs go to syslog from now on
    ReportStatus(status_fd, "OK");
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

  return RunDetached("serving the layer store at " + dir, [&ctx, &dir, &args](int status_fd) {
    return Serve(ctx, dir, args, status_fd);
  });
}

}  // namespace imgfs::tools
