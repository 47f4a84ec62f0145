// imgfs — `imgfs layer-store DIR`: serves containers/storage's Additional Layer Store at DIR
// (fs/layer_store/layer_store.h, fs/fuse/layer_store_ops.h). Like `imgfs mount`, it returns
// once the mount answers and keeps serving in the background (logs to syslog); `-f` serves
// in the foreground with logs on stderr. `imgfs umount DIR` (or umount) ends it.
//
// In the background the command becomes the keeper of the mount (fs/fuse/takeover.h), as
// `imgfs mount` does: a daemon that dies is replaced, and the new one answers what the kernel
// holds — directory numbers from a journal the keeper holds (a memfd every daemon inherits,
// its number in the daemon's configuration), references from their leases in the store, which
// name the keeper. Each daemon is the binary run again (`imgfs layer-store --kept-daemon FD`,
// hidden), so `imgfs mount --restart DIR` upgrades a layer store as it does a mount: it finds
// the keeper by its record (fs/fuse/keeper_record.h).
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/status.h"
#include "base/strings.h"
#include "base/unique_fd.h"
#include "cache/store.h"
#include "fs/fuse/keeper_record.h"
#include "fs/fuse/layer_store_ops.h"
#include "fs/fuse/mount_access.h"
#include "fs/fuse/takeover.h"
#include "fs/layer_store/auth_helper.h"
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
    "chunk cache. Returns once DIR is mounted; `imgfs umount DIR` stops it, and\n"
    "`imgfs mount --restart DIR` replaces its daemon by one of the imgfs installed now.\n\n"
    "imgfs layer-store --auth-helper [DIR] is containers' additional-layer-store-auth-helper\n"
    "(registries.conf; through a script running it, as the helper gets no arguments): it\n"
    "reads the credentials containers/image writes on stdin and hands them to the layer\n"
    "stores of the store (or the one at DIR), each for its registry host only.";

// The hidden argument of a daemon a keeper started: `imgfs layer-store --kept-daemon FD`.
constexpr std::string_view kKeptDaemonFlag = "--kept-daemon";

// What a layer store daemon serves: the command line's, or a kept daemon's configuration.
struct LayerStoreRequest {
  std::string dir;                   // absolute
  double fetch_timeout_seconds = 0;  // 0: the default
  bool debug = false;
  int journal_fd = -1;  // a kept daemon's: the keeper's journal of directory numbers
};

// The request part of a kept daemon's configuration (daemon.h: EncodeDaemonConfig).
nlohmann::json RequestJson(const LayerStoreRequest& req) {
  nlohmann::json j;
  j["dir"] = req.dir;
  j["fetch_timeout_seconds"] = req.fetch_timeout_seconds;
  j["debug"] = req.debug;
  j["journal_fd"] = req.journal_fd;
  return j;
}

Status DecodeConfig(const std::string& text, GlobalOptions* global, LayerStoreRequest* req) {
  return DecodeDaemonConfig(text, global, [req](const nlohmann::json& j) {
    req->dir = j.at("dir").get<std::string>();
    req->fetch_timeout_seconds = j.at("fetch_timeout_seconds").get<double>();
    req->debug = j.at("debug").get<bool>();
    req->journal_fd = j.at("journal_fd").get<int>();
    return Status::Ok();
  });
}

// The daemon (or foreground) side. `status_fd` gets "OK" once the mount answers, or
// "ERR <message>". A kept layer store: `keeper_channel` is the channel to the keeper (then
// `status_fd` too), req.journal_fd the keeper's journal of directory numbers, and `handover`
// is set for a daemon that takes the live mount over. Returns the process exit status.
int Serve(const CommandContext& ctx, const LayerStoreRequest& req, int status_fd,
          int keeper_channel = -1, const fs::Handover* handover = nullptr) {
  const std::string& dir = req.dir;
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
  // A kept layer store's references live as long as its keeper, across its daemons.
  if (keeper_channel >= 0) options.reference_owner = getppid();
  if (req.fetch_timeout_seconds > 0) options.fetch_timeout_seconds = req.fetch_timeout_seconds;
  fs::LayerStore layer_store(options);
  if (handover != nullptr) {
    Result<size_t> recovered = layer_store.RecoverReferences();
    if (!recovered.has_value()) return fail(recovered.error().WithContext("taking over " + dir));
    IMGFS_LOG(kInfo) << "layer store: taking over " << dir << " with " << *recovered
                     << " references";
  }
  // containers/image's credentials (fs/layer_store/auth_helper.h).
  Result<std::unique_ptr<fs::CredentialListener>> credentials =
      fs::CredentialListener::Start(fs::CredentialSocketPath(**store, dir),
                                    [&layer_store](const std::vector<fs::HelperCredential>& creds) {
                                      for (const fs::HelperCredential& c : creds) {
                                        layer_store.SetRegistryCredential(c.host, c.credential);
                                      }
                                    });
  if (!credentials.has_value()) {
    IMGFS_LOG(kWarning) << "layer store: no credential socket (the auth helper cannot reach it): "
                        << credentials.error().ToString();
  }
  fs::LayerStoreSessionOptions session_options;
  session_options.debug = req.debug;
  session_options.journal_fd = req.journal_fd;
  session_options.handover = handover;
  if (keeper_channel >= 0 && handover == nullptr) {
    session_options.on_connection = [keeper_channel](int fuse_fd, std::string_view init) {
      Status sent = fs::SendConnection(keeper_channel, fuse_fd, init);
      if (!sent.ok()) {
        IMGFS_LOG(kError) << "the layer store will not outlive this daemon: " << sent.ToString();
      }
    };
  }
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

// `imgfs layer-store --kept-daemon FD`: a daemon its keeper started (fs/fuse/takeover.h).
int RunKeptDaemon(CommandContext& ctx, const std::string& fd_text) {
  int code = kExitError;
  std::optional<KeptDaemon> kept = ReceiveKeptDaemon(ctx, fd_text, &code);
  if (!kept.has_value()) return code;
  const int channel = kept->channel;
  LayerStoreRequest req;
  Status st = DecodeConfig(kept->start.config, &ctx.global, &req);
  // The journal: inherited from the keeper, a regular file (memfd), not passed on further.
  struct stat journal {};
  if (st.ok() && (req.journal_fd < 3 || req.journal_fd == channel ||
                  ::fstat(req.journal_fd, &journal) != 0 || !S_ISREG(journal.st_mode))) {
    st = Status::Corrupt("a daemon configuration names no journal");
  }
  if (!st.ok()) return FailToKeeper(channel, st);
  ::fcntl(req.journal_fd, F_SETFD, FD_CLOEXEC);
  LogToSyslog();
  return Serve(ctx, req, channel, channel, kept->start.takeover ? &kept->start.handover : nullptr);
}

// `--auth-helper`: the credentials on stdin to the running layer stores.
int RunAuthHelper(const CommandContext& ctx, const ParsedArgs& args) {
  if (args.positional().size() > 1) {
    return UsageError(ctx.name, "\"layer-store --auth-helper\" takes at most 1 argument");
  }
  std::string input;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail(Status::FromErrno(errno, "reading stdin"));
    if (n == 0) break;
    input.append(buf, static_cast<size_t>(n));
    if (input.size() > fs::kMaxAuthHelperInputBytes) {
      return Fail(Status::InvalidArgument("the credentials on stdin are too large"));
    }
  }
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) return Fail(store.error());
  const std::string dir = args.positional().empty() ? std::string() : args.positional()[0];
  Result<size_t> sent = fs::SendToLayerStores(**store, input, dir);
  if (!sent.has_value()) return Fail(sent.error());
  return kExitOk;
}

}  // namespace

int RunLayerStore(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"foreground", 'f', false, "", "serve in the foreground, logs on stderr"},
      {"fetch-timeout", 0, true, "SECONDS", "a read waits at most this long for the registry"},
      {"debug", 'd', false, "", "libfuse debug output (implies -f)"},
      {"auth-helper", 0, false, "", "hand the credentials on stdin to running layer stores"},
  };
  if (ctx.args.size() == 2 && ctx.args[0] == kKeptDaemonFlag) {
    return RunKeptDaemon(ctx, ctx.args[1]);
  }
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kLayerStoreUsage, specs, &args, &code)) return code;
  if (args.Has("auth-helper")) return RunAuthHelper(ctx, args);
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
  LayerStoreRequest req;
  req.dir = dir;
  req.debug = args.Has("debug");
  if (args.Has("fetch-timeout")) {
    try {
      req.fetch_timeout_seconds = std::stod(args.Get("fetch-timeout"));
    } catch (const std::exception&) {
      return UsageError(ctx.name, "--fetch-timeout needs a number of seconds");
    }
  }
  // A path the daemons cannot be told about (not UTF-8) fails before anything is made.
  if (Status utf8 = CheckDaemonConfig(ctx.global, RequestJson(req)); !utf8.ok()) return Fail(utf8);
  if (args.Has("foreground") || args.Has("debug")) return Serve(ctx, req, -1);
  char binary[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", binary, sizeof(binary) - 1);
  if (n <= 0) return Fail(Status::FromErrno(errno, "reading /proc/self/exe"));
  binary[n] = '\0';

  return RunDetached("serving the layer store at " + dir, [&ctx, &req, &binary](int status_fd) {
    // This process becomes the keeper; the journal lives (and dies) with it. Every daemon
    // inherits it (not close-on-exec), its number in the daemon's configuration.
    UniqueFd journal(memfd_create("imgfs-layer-store-journal", 0));
    if (!journal.IsValid()) {
      Status st = Status::FromErrno(errno, "creating the layer store journal");
      ReportStatus(status_fd, "ERR " + st.ToString());
      return kExitError;
    }
    req.journal_fd = journal.get();
    fs::KeeperOptions keeper;
    keeper.status_fd = status_fd;
    keeper.mountpoint = req.dir;
    Result<std::string> daemon_config = EncodeDaemonConfig(ctx.global, RequestJson(req));
    if (!daemon_config.has_value()) {  // checked above; the journal's number changes nothing
      ReportStatus(status_fd, "ERR " + daemon_config.error().ToString());
      return kExitError;
    }
    keeper.daemon_config = std::move(daemon_config).value();
    keeper.daemon_argv = [path = std::string(binary), root = ctx.global.root](int channel) {
      return std::vector<std::string>{path,
                                      "--root",
                                      root,
                                      "layer-store",
                                      std::string(kKeptDaemonFlag),
                                      std::to_string(channel)};
    };
    // Where `imgfs mount --restart DIR` finds this keeper (the layer store has no mount lease).
    Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
    if (store.has_value()) {
      Status made = MakeDirs((*store)->Subdir("layer-stores"), 0700);
      Status recorded = made.ok() ? fs::WriteKeeperRecord(**store, req.dir) : made;
      if (!recorded.ok()) {
        IMGFS_LOG(kWarning) << "`imgfs mount --restart " << req.dir
                            << "` will not find this layer store: " << recorded.ToString();
      }
    }
    const int status = fs::RunKeeper(keeper);
    if (store.has_value()) fs::RemoveKeeperRecord(**store, req.dir);
    return status;
  });
}

}  // namespace imgfs::tools
