// imgfs — mount and umount commands.
//
// `imgfs mount IMAGE DIR` forks a daemon that prepares the image (recording it first when the
// store lacks it: lazily, layer data fetched on demand, or whole with --pull), mounts it and
// serves it; the command returns only once the kernel's INIT
// request has been answered (the mount serves requests), or fails with the daemon's error
// message and a non-zero status, leaving nothing mounted. `-f` serves in the foreground with
// logs on stderr. The same code runs for `mount -t fuse.imgfs IMAGE DIR -o OPTS` (mount(8)
// → mount.fuse3 → `imgfs IMAGE DIR -o OPTS`).
//
// `--rw` (or `-o upper=DIR`) mounts copy-on-write: changes go to the upper directory
// `--upper DIR` (created if missing, kept), or else to a fresh
// STORE/containers/mount-<random>/upper that is removed again when the mount ends. The lease
// records the upper directory, so `imgfs commit DIR` finds it by mountpoint. Two drivers:
// `overlay` (root's default; MountOverlayDriver) puts the kernel's overlayfs over a kept
// read-only mount; `fuse` (the default without root) serves imgfs's own copy-on-write
// filesystem (fs/writable/writable_fs.h), kept too: its daemons journal what the kernel holds
// (fs/writable/writable_journal.h) in the work directory, and a takeover daemon restores it.
// A fuse-driver mount's temporary upper is made by the keeper (its owner record: the keeper,
// which lives as long as the mount) and removed by the daemon that ends the mount.
//
// Read-only mounts (with or without -f), fuse-driver writable ones, and the overlay driver's
// lower, are kept
// (fs/fuse/takeover.h): the process of the mount is a keeper holding the FUSE connection, and every
// daemon serving it is this binary run again as `imgfs mount --kept-daemon FD` (hidden: FD is its
// channel to the keeper, on which it gets its configuration, credentials included, and for a
// takeover the connection). The binary run is the one `imgfs mount` ran from, by path, so that a
// daemon started later runs the imgfs installed then. `imgfs mount --restart DIR` asks the keeper
// of DIR for one (kRestartSignal) and waits until it serves. Under systemd (`-f`, NOTIFY_SOCKET)
// the keeper also keeps the connection and what the mount serves in the service manager's fd
// store; the service started again serves that (ServeAsKept), not its own command line.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/mountinfo.h"
#include "base/strings.h"
#include "base/unique_fd.h"
#include "cache/containers.h"
#include "cache/leases.h"
#include "cache/store.h"
#include "fs/fuse/fd_store.h"
#include "fs/fuse/keeper_record.h"
#include "fs/fuse/mount_access.h"
#include "fs/fuse/request_counts.h"
#include "fs/fuse/session.h"
#include "fs/fuse/takeover.h"
#include "fs/mount/mount.h"
#include "fs/mount/mount_services.h"
#include "fs/upper/kernel_overlay.h"
#include "fs/writable/writable_fs.h"
#include "registry/manifest.h"
#include "registry/reference.h"
#include "tools/cli.h"
#include "tools/daemon.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kMountUsage =
    "Usage: imgfs mount [OPTIONS] IMAGE DIR\n"
    "       imgfs mount --restart DIR\n\n"
    "Mount an image at DIR: read-only, or copy-on-write with --rw (changes go to --upper DIR,\n"
    "kept; else to a temporary upper removed at unmount). --rw --driver overlay (the default\n"
    "as root): the kernel's overlayfs over a hidden read-only imgfs mount, at the kernel's\n"
    "speed and kept across daemon deaths; rename(2) of an image directory gives EXDEV (mv\n"
    "copies). --driver fuse (the default without root): imgfs's own copy-on-write filesystem,\n"
    "kept across daemon deaths too.\n"
    "An image the store lacks is mounted lazily: its manifest and config are recorded and\n"
    "every layer that allows it (eStargz, zstd:chunked, a layer with a stored or published\n"
    "imgfs index) is read from the registry on demand; other layers are fetched whole first.\n"
    "--pull (-o pull) fetches every layer into the store before mounting instead.\n"
    "IMAGE is a reference, an image ID, or oci:DIR[:TAG] | oci-archive:FILE | "
    "docker-archive:FILE\n"
    "(local images are copied into the store whole).\n"
    "Mount options (-o, comma-separated): allow_other, dev, suid, debug, pull, lazy (the\n"
    "default), root=STORE, fetch_timeout=SECONDS, prefetch=none|landmarks|all,\n"
    "insecure_skip_toc_verify, upper=DIR (a writable mount), driver=overlay|fuse;\n"
    "mount(8)'s "
    "generic options (defaults, ro, rw, nofail, noauto, _netdev, x-*) are accepted and ignored:\n"
    "`rw` alone keeps the mount read-only (fstab `defaults` implies it); upper=DIR makes it\n"
    "writable.\n"
    "--restart: the daemon of a mount (read-only or writable) is replaced by one of the\n"
    "imgfs installed now, without unmounting (a killed daemon is replaced by itself).\n\n"
    "fstab: 127.0.0.1:5000/demo/app:1.0  /mnt/app  fuse.imgfs  defaults,nofail  0 0";

constexpr std::string_view kUmountUsage =
    "Usage: imgfs umount [OPTIONS] DIR...\n\n"
    "Unmount imgfs mounts and wait for their daemons to exit.";

// Options of mount(8) and fstab that mean nothing here.
bool IgnoredOption(const std::string& o) {
  static const std::set<std::string> opts = {"defaults", "ro",      "auto",     "noauto",  "nofail",
                                             "user",     "nouser",  "users",    "async",   "sync",
                                             "atime",    "noatime", "relatime", "_netdev", "rw"};
  return opts.count(o) > 0 || o.rfind("x-", 0) == 0 || o.rfind("comment=", 0) == 0;
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t comma = s.find(',', start);
    std::string part =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string AbsolutePath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) != nullptr) return buf;
  return path;
}

// What `imgfs mount` was asked for, after option parsing.
struct MountRequest {
  std::string image;
  std::string dir;  // absolute
  std::vector<std::string> mount_options;
  bool debug = false;
  std::optional<registry::Platform> platform;
  bool no_pull = false;
  // Layers the store lacks are read on demand where they can be (the default); false with
  // --pull: every layer is fetched into the store before the mount.
  bool lazy = true;
  double fetch_timeout_seconds = 0;
  fs::PrepareOptions::Prefetch prefetch = fs::PrepareOptions::Prefetch::kLandmarks;
  bool insecure_skip_toc_verify = false;
  bool writable = false;
  std::string upper;  // absolute; "" = a temporary upper in the store
  // A fuse-driver mount's temporary upper: STORE/containers/mount-<random> (holding `upper`),
  // made by the keeper, removed when the mount ends; "" otherwise.
  std::string temp_container;
  // --rw on the kernel's overlayfs (--driver overlay): the daemon serves the image read-only
  // at `dir` (a private lower mountpoint) and its lease names `overlay_dir` (the user's
  // mountpoint) and `upper`; "" otherwise.
  std::string overlay_dir;
  bool foreground = false;  // -f: logs stay on stderr
};

// The hidden argument of a daemon a keeper started: `imgfs mount --kept-daemon FD`.
constexpr std::string_view kKeptDaemonFlag = "--kept-daemon";

std::string PrefetchName(fs::PrepareOptions::Prefetch prefetch) {
  switch (prefetch) {
    case fs::PrepareOptions::Prefetch::kNone:
      return "none";
    case fs::PrepareOptions::Prefetch::kLandmarks:
      return "landmarks";
    case fs::PrepareOptions::Prefetch::kAll:
      return "all";
  }
  return "landmarks";
}

// 16 random hex digits (for the name of a temporary upper directory).
std::string RandomSuffix() {
  unsigned char bytes[8] = {};
  UniqueFd fd(open("/dev/urandom", O_RDONLY | O_CLOEXEC));
  if (!fd.IsValid() || read(fd.get(), bytes, sizeof(bytes)) != sizeof(bytes)) {
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    for (size_t i = 0; i < sizeof(bytes); ++i) {
      bytes[i] = static_cast<unsigned char>((now >> (8 * i)) ^ (getpid() >> i));
    }
  }
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

Result<fs::PrepareOptions::Prefetch> ParsePrefetch(const std::string& text) {
  if (text == "none") return fs::PrepareOptions::Prefetch::kNone;
  if (text == "landmarks") return fs::PrepareOptions::Prefetch::kLandmarks;
  if (text == "all") return fs::PrepareOptions::Prefetch::kAll;
  return Status::InvalidArgument("--prefetch must be none, landmarks or all, not \"" + text + "\"");
}

Result<double> ParseSeconds(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end == nullptr || *end != '\0' || errno != 0 || !(v > 0) || v > 86400) {
    return Status::InvalidArgument(
        "--fetch-timeout must be a number of seconds (0 < N <= 86400), "
        "not \"" +
        text + "\"");
  }
  return v;
}

// The request part of the configuration a keeper hands each daemon it starts (daemon.h:
// EncodeDaemonConfig).
nlohmann::json RequestJson(const MountRequest& req) {
  nlohmann::json j;
  j["image"] = req.image;
  j["dir"] = req.dir;
  j["mount_options"] = req.mount_options;
  j["debug"] = req.debug;
  j["platform"] = req.platform.has_value() ? req.platform->String() : "";
  j["no_pull"] = req.no_pull;
  j["lazy"] = req.lazy;
  j["fetch_timeout_seconds"] = req.fetch_timeout_seconds;
  j["prefetch"] = PrefetchName(req.prefetch);
  j["insecure_skip_toc_verify"] = req.insecure_skip_toc_verify;
  j["foreground"] = req.foreground;
  j["overlay_dir"] = req.overlay_dir;
  j["upper"] = req.upper;
  j["writable"] = req.writable;
  j["temp_container"] = req.temp_container;
  return j;
}

// The inverse of EncodeDaemonConfig(RequestJson): read-only daemons (an overlay-driver --rw mount's
// daemon is one) and fuse-driver writable ones.
Status DecodeConfig(const std::string& text, GlobalOptions* global, MountRequest* req) {
  return DecodeDaemonConfig(text, global, [req](const nlohmann::json& j) -> Status {
    req->image = j.at("image").get<std::string>();
    req->dir = j.at("dir").get<std::string>();
    req->mount_options = j.at("mount_options").get<std::vector<std::string>>();
    req->debug = j.at("debug").get<bool>();
    if (std::string platform = j.at("platform").get<std::string>(); !platform.empty()) {
      IMGFS_ASSIGN_OR_RETURN(req->platform, registry::Platform::Parse(platform));
    }
    req->no_pull = j.at("no_pull").get<bool>();
    req->lazy = j.at("lazy").get<bool>();
    req->fetch_timeout_seconds = j.at("fetch_timeout_seconds").get<double>();
    IMGFS_ASSIGN_OR_RETURN(req->prefetch, ParsePrefetch(j.at("prefetch").get<std::string>()));
    req->insecure_skip_toc_verify = j.at("insecure_skip_toc_verify").get<bool>();
    req->foreground = j.at("foreground").get<bool>();
    // Absent in the configuration of an older keeper (a read-only mount).
    req->overlay_dir = j.value("overlay_dir", std::string());
    req->upper = j.value("upper", std::string());
    req->writable = j.value("writable", false);
    req->temp_container = j.value("temp_container", std::string());
    if (req->writable && (req->upper.empty() || req->upper.front() != '/')) {
      return Status::Corrupt("a daemon configuration: a writable mount without its upper");
    }
    return Status::Ok();
  });
}

// The path of this process's binary, for the keeper to run again later (by path: a newer
// imgfs installed there meanwhile is what runs).
Result<std::string> OwnBinary() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return Status::FromErrno(errno, "reading /proc/self/exe");
  return std::string(buf, static_cast<size_t>(n));
}

// What pins the image a mount shows, for a daemon that takes it over later: the reference
// with the manifest digest (a tag moved since changes nothing), or the manifest digest.
std::string PinnedImage(const fs::PreparedImage& prepared) {
  if (!prepared.reference.empty()) {
    Result<registry::Reference> ref = registry::Reference::Parse(prepared.reference);
    if (ref.has_value()) return ref->WithDigest(prepared.manifest_digest).String();
  }
  return prepared.manifest_digest.String();
}

// `path` made absolute without resolving anything (a store path is compared as written).
std::string AbsoluteLexical(const std::string& path) {
  std::error_code error;
  std::string out = (std::filesystem::current_path(error) / path).lexically_normal();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// What a mount of `req` from the store `root` serves, as a kept mount records it
// (fs/fuse/kept_config.h); `driver` is the writable driver ("" for a read-only mount).
fs::KeptConfig KeptConfigOf(const std::string& root, const MountRequest& req,
                            const std::string& driver) {
  fs::KeptConfig c;
  c.image = req.image;
  c.root = AbsoluteLexical(root);
  c.writable = req.writable;
  c.driver = req.writable ? driver : "";
  c.upper = req.upper;
  c.mount_options = req.mount_options;
  c.lazy = req.lazy;
  c.platform = req.platform.has_value() ? req.platform->String() : "";
  c.fetch_timeout_seconds = req.fetch_timeout_seconds;
  c.prefetch = PrefetchName(req.prefetch);
  c.insecure_skip_toc_verify = req.insecure_skip_toc_verify;
  return c;
}

// A keeper the service manager started again with the state of a kept mount (format 2): the
// mount goes on serving what the state records, never what this command line asks instead
// (the kernel holds node ids, open files and lookup counts of that tree, and a writable
// mount's journal belongs to its upper); one warning names every difference. Sets the store
// (global->root) and the served fields of *req from `kept`; `driver` is the command line's
// writable driver.
Status ServeAsKept(const fs::KeptConfig& kept, const std::string& driver, GlobalOptions* global,
                   MountRequest* req) {
  const std::vector<std::string> differences =
      fs::KeptConfigDifferences(kept, KeptConfigOf(global->root, *req, driver));
  if (!differences.empty()) {
    std::string list;
    for (const std::string& d : differences) list += (list.empty() ? "" : "; ") + d;
    IMGFS_LOG(kWarning) << "the command line differs from the mount at " << req->dir
                        << " that the service manager kept (" << list
                        << "): the kept mount is served as it was; to serve the new "
                           "configuration, run `imgfs umount "
                        << req->dir << "` and mount again";
  }
  global->root = kept.root;
  req->image = kept.image;
  req->writable = kept.writable;
  req->upper = kept.upper;
  req->mount_options = kept.mount_options;
  req->lazy = kept.lazy;
  req->platform.reset();
  if (!kept.platform.empty()) {
    IMGFS_ASSIGN_OR_RETURN(req->platform, registry::Platform::Parse(kept.platform));
  }
  req->fetch_timeout_seconds = kept.fetch_timeout_seconds;
  IMGFS_ASSIGN_OR_RETURN(req->prefetch, ParsePrefetch(kept.prefetch));
  req->insecure_skip_toc_verify = kept.insecure_skip_toc_verify;
  return Status::Ok();
}

// A daemon of an overlay-driver mount that a signal ended (its FUSE mount, detached, is
// alive while the overlay is): unmounts the overlay at `overlay_dir` when it is still the one
// over `lower`, so the mount ends as a read-only one does on SIGTERM. An overlay unmounted
// already (the usual end) or mounted anew by someone else is left alone.
void EndOverlayOver(const std::string& overlay_dir, const std::string& lower) {
  std::optional<MountInfoEntry> last;
  for (MountInfoEntry& e : ReadMountInfo()) {
    if (e.mountpoint == overlay_dir) last = std::move(e);
  }
  if (!last.has_value() || last->fstype != "overlay" ||
      last->super_options.find("lowerdir=" + lower) == std::string::npos) {
    return;
  }
  if (::umount2(overlay_dir.c_str(), MNT_DETACH) != 0) {
    IMGFS_LOG(kWarning) << "unmounting " << overlay_dir << ": " << std::strerror(errno);
  }
}

// The daemons a keeper runs now (its children), but this one.
std::vector<pid_t> OtherDaemonsOfKeeper() {
  const pid_t keeper = getppid();
  std::ifstream in("/proc/" + std::to_string(keeper) + "/task/" + std::to_string(keeper) +
                   "/children");
  std::vector<pid_t> out;
  for (pid_t child = 0; in >> child;) {
    if (child != getpid()) out.push_back(child);
  }
  return out;
}

// A fuse-driver writable mount taken over during `imgfs mount --restart`: the daemon being
// replaced still serves, and two WritableFs must never change one upper at once. Its lock on
// the work directory shows it alive; it is then ended here as a crash would end it (SIGKILL:
// its keeper lets this daemon take the mount over and has the kernel send the requests it had
// not answered again), and this one waits until its descriptors, the lock among them, are gone.
Status EndPreviousWritableDaemon(const std::string& work) {
  UniqueFd fd(open(work.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.IsValid()) return Status::Ok();  // WritableFs::Open says what is wrong with it
  if (flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return Status::Ok();
  for (pid_t other : OtherDaemonsOfKeeper()) {
    IMGFS_LOG(kInfo) << "taking over: ending daemon " << other;
    ::kill(other, SIGKILL);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::Unavailable("the work directory " + work + " stays in use by another process");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Status::Ok();
}

// `--rw --driver fuse` without --upper: the temporary upper STORE/containers/mount-<random>/
// upper, made by the keeper before its first daemon (every daemon of the mount serves it).
Status MakeTemporaryUpper(const CommandContext& ctx, MountRequest* req) {
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) return store.error().WithContext("opening the image store");
  const std::string container = (*store)->Subdir("containers") + "/mount-" + RandomSuffix();
  // The owner record goes in first: `imgfs cache gc` deletes the directory once this process
  // (the keeper) is gone, never while it lives (cache/containers.h). 0700: the upper root gets
  // the image root's mode (0755), so this directory is what keeps other users away from the
  // upper and its copied-up setuid files.
  Status made = MakeDirs(container, 0700);
  if (made.ok()) made = cache::WriteContainerOwner(container);
  if (made.ok()) made = MakeDirs(container + "/upper", 0700);
  if (!made.ok()) {
    RemoveTree(container).ok();
    return made.WithContext("creating the upper directory");
  }
  req->temp_container = container;
  req->upper = container + "/upper";
  return Status::Ok();
}

// The daemon (or foreground) side: prepare, lease, mount, serve. `status_fd` gets "OK" once
// the mount answers, or "ERR <message>". `keeper_channel` (-1: none) is the channel to the
// keeper of a kept mount (fs/fuse/takeover.h; then `status_fd` is that channel too);
// `handover` is set for a daemon that takes a live mount over. Returns the process exit
// status.
int ServeMount(const CommandContext& ctx, const MountRequest& req, int status_fd,
               int keeper_channel = -1, const fs::Handover* handover = nullptr) {
  const std::string image =
      handover != nullptr && !handover->image.empty() ? handover->image : req.image;
  const std::string& dir = req.dir;
  auto fail = [&](const Status& st) {
    ReportStatus(status_fd, "ERR " + st.ToString());
    if (status_fd < 0 || req.foreground) Fail(st);
    return kExitError;
  };
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return fail(store.error().WithContext("opening the image store " + ctx.global.root));
  }
  fs::PrepareOptions prep;
  // A takeover serves what the store has recorded for the mount, never something newer.
  prep.pull_if_missing = !req.no_pull && handover == nullptr;
  prep.lazy = req.lazy;
  prep.fetch_timeout_seconds = req.fetch_timeout_seconds;
  prep.prefetch = req.prefetch;
  prep.insecure_skip_toc_verify = req.insecure_skip_toc_verify;
  prep.pull.insecure_registries = ctx.global.insecure_registries;
  prep.pull.ca_files = ctx.global.ca_certs;
  prep.pull.creds = ctx.global.creds;
  if (req.platform.has_value()) {
    prep.pull.platform = *req.platform;
    prep.pull.platform_explicit = true;
  }
  Result<fs::PreparedImage> prepared = fs::PrepareImage(**store, image, prep);
  if (!prepared.has_value()) return fail(prepared.error().WithContext("mounting " + image));
  if (keeper_channel >= 0) {
    Status sent = fs::SendMessage(keeper_channel, "IMAGE " + PinnedImage(*prepared));
    if (!sent.ok()) return fail(sent);
  }

  // Writable mounts: the upper directory (given, or a temporary one in the store).
  std::unique_ptr<fs::WritableFs> writable;
  std::string temp_container = req.temp_container;  // removed when the mount ends
  // A takeover daemon never removes the mount's temporary upper on a failure: the mount and
  // its upper outlive it (the keeper's end leaves it to `imgfs cache gc`).
  auto drop_temp = [&] {
    if (!temp_container.empty() && handover == nullptr) RemoveTree(temp_container).ok();
  };
  if (req.writable) {
    const bool takeover = handover != nullptr;
    std::string upper = req.upper;
    if (upper.empty()) {
      temp_container = (*store)->Subdir("containers") + "/mount-" + RandomSuffix();
      upper = temp_container + "/upper";
      // The owner record goes in first: `imgfs cache gc` deletes the directory once this
      // process is gone (a killed daemon), never while it lives (cache/containers.h).
      // 0700: the upper root gets the image root's mode (0755), so this directory is what
      // keeps other users away from the upper and its copied-up setuid files.
      Status made = MakeDirs(temp_container, 0700);
      if (made.ok()) made = cache::WriteContainerOwner(temp_container);
      if (made.ok()) made = MakeDirs(upper, 0700);
      if (!made.ok()) {
        RemoveTree(temp_container).ok();
        return fail(made.WithContext("creating the upper directory"));
      }
    } else if (temp_container.empty()) {
      Status made = MakeDirs(upper, 0755);
      if (!made.ok()) return fail(made.WithContext("creating the upper directory " + upper));
    }
    std::string work = fs::WritableFs::DefaultWorkDir(upper);
    if (work.empty()) {
      drop_temp();
      return fail(Status::InvalidArgument(
          "the upper directory " + upper +
          " is the root of a filesystem: use a directory inside it (imgfs keeps a work "
          "directory beside the upper, on the same filesystem)"));
    }
    if (takeover) {
      if (Status ended = EndPreviousWritableDaemon(work); !ended.ok()) return fail(ended);
    }
    Result<std::unique_ptr<fs::WritableFs>> opened =
        fs::WritableFs::Open(prepared->filesystem.get(), upper, work, takeover);
    if (!opened.has_value()) {
      drop_temp();
      return fail(opened.error().WithContext("mounting " + image + " writable"));
    }
    writable = std::move(*opened);
  }
  // At the mount's end, or when this daemon fails before it serves: a takeover daemon that
  // fails leaves the work directory (its journal) and the temporary upper to the mount.
  auto remove_temp = [&](bool ended) {
    if (!ended && handover != nullptr && writable != nullptr) {
      writable.release();  // NOLINT(bugprone-unused-return-value): as if killed
      return;
    }
    writable.reset();  // removes its work directory
    if (!temp_container.empty()) {
      Status st = RemoveTree(temp_container);
      if (!st.ok()) IMGFS_LOG(kWarning) << "removing the temporary upper: " << st.ToString();
    }
  };

  // A kept mount's lease names the keeper: it pins the image across the daemons' deaths, and
  // `imgfs umount` waits for the keeper.
  // The overlay driver's lease names the user's mountpoint and upper, not the private lower.
  const std::string lease_reference = prepared->reference.empty() ? image : prepared->reference;
  const std::string lease_upper = writable != nullptr ? writable->upper_dir() : req.upper;
  const std::string& lease_dir = req.overlay_dir.empty() ? dir : req.overlay_dir;
  Result<cache::Lease> lease =
      keeper_channel >= 0 ? cache::Lease::AcquireFor(**store, getppid(), prepared->manifest_digest,
                                                     lease_dir, lease_reference, lease_upper)
                          : cache::Lease::Acquire(**store, prepared->manifest_digest, lease_dir,
                                                  lease_reference, lease_upper);
  if (!lease.has_value()) {
    remove_temp(false);
    return fail(lease.error().WithContext("mounting " + image));
  }
  if (keeper_channel >= 0) {
    Status sent = fs::SendMessage(keeper_channel, "LEASE " + lease->info().id);
    if (!sent.ok()) return fail(sent);
  }

  fs::SessionOptions options;
  options.fsname = image;
  options.mount_options = req.mount_options;
  options.debug = req.debug;
  options.writable = writable.get();
  options.handover = handover;
  if (keeper_channel >= 0 && handover == nullptr) {
    options.on_connection = [keeper_channel](int fuse_fd, std::string_view init_request) {
      Status sent = fs::SendConnection(keeper_channel, fuse_fd, init_request);
      if (!sent.ok())
        IMGFS_LOG(kError) << "the mount will not outlive this daemon: " << sent.ToString();
    };
  }
  bool foreground = status_fd < 0 || req.foreground;
  options.on_ready = [status_fd, foreground] {
    if (!foreground) DetachStdio();  // logs go to syslog from now on
    ReportStatus(status_fd, "OK");
    if (status_fd >= 0) close(status_fd);
  };
  Result<std::unique_ptr<fs::FuseSession>> session =
      fs::FuseSession::Mount(prepared->filesystem.get(), dir, options);
  if (!session.has_value()) {
    Status released = lease->Release();
    (void)released;
    remove_temp(false);
    return fail(session.error().WithContext("mounting " + image));
  }
  if (handover != nullptr && !handover->lease_id.empty() &&
      handover->lease_id != lease->info().id) {
    // The previous daemon's lease and control socket (killed, it removed neither), once this
    // daemon can serve: a takeover that fails leaves a restarted daemon its lease.
    Status removed = cache::RemoveLease(**store, handover->lease_id);
    if (!removed.ok()) IMGFS_LOG(kWarning) << "removing a lease: " << removed.ToString();
    ::unlink(fs::ControlSocketPath(**store, handover->lease_id).c_str());
  }
  IMGFS_LOG(kInfo) << "serving " << image << " at " << lease_dir;
  fs::MountServicesOptions services_options;
  services_options.store = store->get();
  services_options.filesystem = prepared->filesystem.get();
  services_options.lease_id = lease->info().id;
  services_options.mountpoint = lease_dir;
  services_options.reference = lease->info().reference;
  services_options.tree_stored = prepared->tree_stored;
  const fs::FuseRequestCounts& requests = (*session)->request_counts();
  services_options.fuse_stats = [&requests] {
    fs::FuseSessionStats f;
    f.requests = requests.NonZero();
    f.no_open = requests.no_open();
    f.no_opendir = requests.no_opendir();
    f.largest_read_bytes = requests.largest_read_bytes();
    f.takeovers = requests.takeovers();
    return f;
  };
  Result<std::unique_ptr<fs::MountServices>> services = fs::MountServices::Start(services_options);
  if (!services.has_value()) {
    IMGFS_LOG(kWarning) << "mount services not started: " << services.error().ToString();
  }
  Status run = (*session)->Run();
  if (services.has_value()) services->reset();
  session->reset();
  if (!req.overlay_dir.empty()) EndOverlayOver(req.overlay_dir, dir);
  remove_temp(true);
  Status released = lease->Release();
  if (!released.ok()) IMGFS_LOG(kWarning) << "releasing the lease: " << released.ToString();
  if (!run.ok()) {
    IMGFS_LOG(kError) << run.ToString();
    return kExitError;
  }
  return kExitOk;
}

// A daemon of a keeper: serves the mount `config` (EncodeDaemonConfig of RequestJson) describes,
// reporting on `channel`; a takeover when `handover` is set. The same whether the keeper forked it
// (KeeperOptions::serve) or ran it as a new program (RunKeptDaemon).
int ServeKept(CommandContext& ctx, const std::string& config, int channel,
              const fs::Handover* handover) {
  MountRequest req;
  if (Status st = DecodeConfig(config, &ctx.global, &req); !st.ok()) {
    return FailToKeeper(channel, st);
  }
  if (!req.foreground) LogToSyslog();
  return ServeMount(ctx, req, channel, channel, handover);
}

// `imgfs mount --kept-daemon FD`: a daemon its keeper started (fs/fuse/takeover.h).
int RunKeptDaemon(CommandContext& ctx, const std::string& fd_text) {
  int code = kExitError;
  std::optional<KeptDaemon> kept = ReceiveKeptDaemon(ctx, fd_text, &code);
  if (!kept.has_value()) return code;
  return ServeKept(ctx, kept->start.config, kept->channel,
                   kept->start.takeover ? &kept->start.handover : nullptr);
}

// The pids of the children of `pid` (a keeper's daemons).
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t child = 0; in >> child;) out.push_back(child);
  return out;
}

bool Contains(const std::vector<pid_t>& pids, pid_t pid) {
  return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

// `imgfs mount --restart DIR`: the keeper of DIR starts a daemon from the installed binary;
// returns once that one serves and the old one is gone. A signal, not a request on the
// mount's control socket: the kernel's permission rule for kill(2) is exactly "root or the
// mount's owner" (the keeper runs as the owner), the keeper needs no listening socket, and
// the control socket belongs to the daemon being replaced.
int RestartMount(const CommandContext& ctx, const std::string& dir) {
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) return Fail(store.error());
  Result<std::vector<cache::LeaseInfo>> leases = cache::ListLiveLeases(**store);
  if (!leases.has_value()) return Fail(leases.error());
  std::optional<cache::LeaseInfo> found;
  for (const cache::LeaseInfo& lease : *leases) {
    if (lease.mountpoint == dir) found = lease;
  }
  if (!found.has_value()) {
    // A layer store (`imgfs layer-store DIR`) has no mount lease: its keeper's record.
    if (std::optional<fs::KeeperRecord> record = fs::FindKeeperRecord(**store, dir)) {
      found = cache::LeaseInfo{};
      found->pid = record->pid;
      found->pid_start = record->pid_start;
      found->mountpoint = dir;
    }
  }
  if (!found.has_value())
    return Fail(dir + " is not an imgfs mount of the store " + ctx.global.root);
  const pid_t keeper = found->pid;
  // The daemon serving now: the keeper's one child (two during a takeover: wait for it).
  pid_t old = 0;
  const auto settle = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    if (!cache::ProcessIsAlive(keeper, found->pid_start))
      return Fail("the mount at " + dir + " has ended");
    std::vector<pid_t> children = ChildrenOf(keeper);
    if (children.size() == 1) {
      old = children.front();
      break;
    }
    if (children.empty() && !found->upper.empty()) {
      return Fail("the mount at " + dir +
                  " is a writable mount of an older imgfs, not kept: its daemon cannot be "
                  "replaced (unmount and mount it again)");
    }
    if (std::chrono::steady_clock::now() > settle) {
      return Fail("the mount at " + dir +
                  " has no daemon to replace (mounted by an older imgfs, or no daemon can serve "
                  "it any more: see the system log); unmount and mount it again");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (::kill(keeper, fs::kRestartSignal) != 0) {
    if (errno == EPERM)
      return Fail("only root or the owner of the mount at " + dir + " may restart it");
    return Fail(Status::FromErrno(errno, "asking the keeper of " + dir));
  }
  // Done when the old daemon is gone and a new one serves; failed when the new one ended
  // while the old one goes on.
  pid_t seen = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!cache::ProcessIsAlive(keeper, found->pid_start))
      return Fail("the mount at " + dir + " has ended");
    std::vector<pid_t> children = ChildrenOf(keeper);
    for (pid_t child : children) {
      if (child != old) seen = child;
    }
    if (!Contains(children, old) && !children.empty()) return kExitOk;
    if (seen != 0 && !Contains(children, seen) && Contains(children, old)) {
      return Fail("the new daemon of " + dir + " failed before serving (see the system log); pid " +
                  std::to_string(old) + " goes on serving");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Fail("no new daemon served " + dir + " within 300 s (see the system log)");
}

// The keeper of a mount whose daemons serve `req` read-only. InvalidArgument when a path
// cannot be handed to a daemon (CheckDaemonConfig).
Result<fs::KeeperOptions> KeeperFor(const CommandContext& ctx, const MountRequest& req,
                                    const std::string& binary) {
  fs::KeeperOptions keeper;
  keeper.mountpoint = req.dir;
  keeper.foreground = req.foreground;
  IMGFS_ASSIGN_OR_RETURN(keeper.daemon_config, EncodeDaemonConfig(ctx.global, RequestJson(req)));
  keeper.daemon_argv = [binary, root = ctx.global.root](int channel) {
    return std::vector<std::string>{
        binary, "--root", root, "mount", std::string(kKeptDaemonFlag), std::to_string(channel)};
  };
  // Daemon 1 is forked, without the exec: it serves from the same configuration.
  keeper.serve = [daemon_ctx = ctx, config = keeper.daemon_config](
                     int channel, const fs::Handover* handover) mutable {
    return ServeKept(daemon_ctx, config, channel, handover);
  };
  return keeper;
}

// mount(2) flags of an overlay-driver mount, from the mount options as libfuse reads them
// for a FUSE mount (nodev and nosuid unless `dev`, `suid`).
uint64_t OverlayFlags(const std::vector<std::string>& options) {
  auto has = [&options](const char* o) {
    return std::find(options.begin(), options.end(), o) != options.end();
  };
  uint64_t flags = 0;
  if (!has("dev") || has("nodev")) flags |= MS_NODEV;
  if (!has("suid") || has("nosuid")) flags |= MS_NOSUID;
  if (has("noexec")) flags |= MS_NOEXEC;
  return flags;
}

// `imgfs mount -f --rw --driver overlay` once the overlay is mounted: waits for the keeper
// `daemon` to end (its status is the command's); SIGTERM, SIGINT or SIGHUP unmount the
// overlay, which ends the keeper.
int WaitForegroundOverlay(pid_t daemon, const std::string& dir, const std::string& lower) {
  sigset_t wait_set;
  sigemptyset(&wait_set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&wait_set, sig);
  ::sigprocmask(SIG_BLOCK, &wait_set, nullptr);
  for (;;) {
    int wstatus = 0;
    const pid_t r = ::waitpid(daemon, &wstatus, WNOHANG);
    if (r == daemon) return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : kExitError;
    if (r < 0 && errno != EINTR) return kExitError;
    const int sig = ::sigwaitinfo(&wait_set, nullptr);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) EndOverlayOver(dir, lower);
  }
}

// `imgfs mount --rw --driver overlay`: the image is mounted read-only as a plain `imgfs mount`
// does (a keeper and its daemons: kept across daemon deaths and --restart) at a private lower
// mountpoint STORE/containers/mount-<random>/lower, the kernel's overlayfs over it at DIR, and
// then the lower is detached: overlayfs holds its own clone of the lower mount, so the FUSE
// connection lives exactly as long as the overlay, and unmounting DIR (umount or imgfs umount)
// ends the daemon and the keeper. The overlay is mounted by this process once the FUSE mount
// answers, never by the daemon (the overlay mount looks the root up through it). The keeper
// owns the temporary directory (cache/containers.h) and removes it, the overlay's work
// directory and a temporary upper once the connection has ended, that is after the overlay.
// With -f this process stays until the mount ends, and SIGTERM, SIGINT or SIGHUP unmount it.
int MountOverlayDriver(const CommandContext& ctx, const MountRequest& req,
                       const std::string& binary) {
  std::string containers;
  {
    // Not held open: the keeper forked below never uses the store.
    Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
    if (!store.has_value()) {
      return Fail(store.error().WithContext("opening the image store " + ctx.global.root));
    }
    containers = (*store)->Subdir("containers");
  }
  const std::string temp = containers + "/mount-" + RandomSuffix();
  const std::string lower = temp + "/lower";
  // The owner record first (gc keeps the directory while its owner lives); 0700 keeps other
  // users away from a temporary upper and its copied-up setuid files.
  Status made = MakeDirs(temp, 0700);
  if (made.ok()) made = cache::WriteContainerOwner(temp);
  if (made.ok()) made = MakeDirs(lower, 0700);
  std::string upper = req.upper;
  if (made.ok()) {
    if (upper.empty()) upper = temp + "/upper";
    made = MakeDirs(upper, req.upper.empty() ? 0700 : 0755)
               .WithContext("creating the upper directory " + upper);
  }
  const std::string work = fs::WritableFs::DefaultWorkDir(upper);
  if (made.ok() && work.empty()) {
    made = Status::InvalidArgument(
        "the upper directory " + upper +
        " is the root of a filesystem: use a directory inside it (the overlay's work directory "
        "goes beside the upper, on the same filesystem)");
  }
  if (made.ok()) made = MakeDirs(work, 0700);
  if (!made.ok()) {
    RemoveTree(temp).ok();
    return Fail(made);
  }

  MountRequest daemon_req = req;
  daemon_req.dir = lower;
  daemon_req.overlay_dir = req.dir;
  daemon_req.upper = upper;
  daemon_req.writable = false;
  Result<fs::KeeperOptions> made_keeper = KeeperFor(ctx, daemon_req, binary);
  if (!made_keeper.has_value()) {
    RemoveTree(temp).ok();
    return Fail(made_keeper.error());
  }
  fs::KeeperOptions keeper = std::move(made_keeper).value();
  keeper.mountpoint = req.dir;  // log lines; a stop without daemons unmounts the overlay

  auto serve = [&](int status_fd) {
    // The keeper owns the directory from now on: the command may exit while the mount lives.
    Status owned = cache::WriteContainerOwner(temp);
    if (!owned.ok()) IMGFS_LOG(kWarning) << owned.ToString();
    keeper.status_fd = status_fd;
    const int rc = fs::RunKeeper(keeper);
    if (!req.upper.empty()) RemoveTree(work).ok();
    Status removed = RemoveTree(temp);
    if (!removed.ok()) IMGFS_LOG(kWarning) << "removing " << temp << ": " << removed.ToString();
    return rc;
  };
  DetachOptions detach;
  // With -f, a terminal's ^C goes to this process, which unmounts the overlay.
  detach.foreground = req.foreground;
  detach.ready = [&](pid_t daemon) {
    fs::KernelOverlay overlay;
    overlay.lower_dirs = {lower};
    overlay.upper_dir = upper;
    overlay.work_dir = work;
    overlay.flags = OverlayFlags(req.mount_options);
    Status mounted = fs::MountKernelOverlay(overlay, req.dir);
    // From here on the overlay's clone is the FUSE mount's only one (none when the overlay
    // failed: the connection ends, and with it the daemon and the keeper).
    if (::umount2(lower.c_str(), MNT_DETACH) != 0) {
      IMGFS_LOG(kWarning) << "detaching " << lower << ": " << std::strerror(errno);
    }
    ::rmdir(lower.c_str());
    if (!mounted.ok()) {
      WaitExitStatus(daemon);
      return Fail(mounted.WithContext("mounting " + req.image + " writable").ToString() +
                  " (--driver fuse needs no kernel overlayfs)");
    }
    return req.foreground ? WaitForegroundOverlay(daemon, req.dir, lower) : kExitOk;
  };
  return RunDetached("mounting " + req.image, serve, detach);
}

}  // namespace

int RunMount(CommandContext& ctx) {
  if (ctx.args.size() == 2 && ctx.args[0] == kKeptDaemonFlag)
    return RunKeptDaemon(ctx, ctx.args[1]);
  static const std::vector<OptionSpec> specs = {
      {"foreground", 'f', false, "", "serve in the foreground, logs on stderr"},
      {"options", 'o', true, "OPTS", "mount options, comma-separated (repeatable)"},
      {"platform", 0, true, "OS/ARCH[/VARIANT]", "platform to pull when not in the store"},
      {"no-pull", 0, false, "", "fail instead of pulling an image the store lacks"},
      {"pull", 0, false, "",
       "fetch every layer into the store before mounting (default: read layer data on demand "
       "where the layer allows it)"},
      {"lazy", 0, false, "", "read layer data on demand (the default; contradicts --pull)"},
      {"fetch-timeout", 0, true, "SECONDS",
       "lazy mounts: an uncached read that cannot be fetched in time fails with EIO"},
      {"prefetch", 0, true, "none|landmarks|all",
       "lazy mounts: what to fetch in the background (default landmarks)"},
      {"insecure-skip-toc-verify", 0, false, "",
       "lazy mounts: serve eStargz/zstd:chunked layers lacking their TOC digest annotation "
       "lazily, unverified TOC (default: fetch them whole)"},
      {"debug", 'd', false, "", "libfuse debug output (implies -f)"},
      {"rw", 0, false, "", "copy-on-write: writes go to a private upper directory"},
      {"upper", 0, true, "DIR",
       "with --rw: keep the changes in DIR (created if missing; remount to see them again)"},
      {"driver", 0, true, "overlay|fuse",
       "with --rw: the kernel's overlayfs over a read-only imgfs mount (the default as root: "
       "kernel speed, the mount outlives a killed daemon) or imgfs's own copy-on-write FUSE "
       "filesystem (the default without root)"},
      {"restart", 0, false, "",
       "`mount --restart DIR`: replace the daemon of a mount (read-only or writable) or of a "
       "layer store by one of the imgfs installed now, without unmounting"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kMountUsage, specs, &args, &code)) return code;
  if (args.Has("restart")) {
    if (args.positional().size() != 1) {
      return UsageError(ctx.name, "\"mount --restart\" requires exactly 1 argument: DIR");
    }
    return RestartMount(ctx, AbsolutePath(args.positional()[0]));
  }
  if (args.positional().size() != 2) {
    return UsageError(ctx.name, "\"mount\" requires exactly 2 arguments: IMAGE DIR");
  }
  MountRequest req;
  req.image = args.positional()[0];
  // Started again by the service manager, whose fd store kept the live connection
  // (fs/fuse/fd_store.h): this keeper takes it over instead of mounting anew. Before anything
  // looks at DIR, which waits while nobody serves it.
  Result<std::optional<fs::StoredConnection>> stored =
      fs::RecoverStoredConnection(AbsoluteLexical(args.positional()[1]));
  if (!stored.has_value()) return Fail(stored.error());
  if (stored->has_value() && !(*stored)->unusable.ok()) {
    return fs::ServeUnusableConnection(std::move(**stored));
  }
  req.dir = stored->has_value() ? (*stored)->state.mountpoint : AbsolutePath(args.positional()[1]);
  const std::string& image = req.image;
  const std::string& dir = req.dir;
  struct stat st {};
  if (!stored->has_value() && (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))) {
    return Fail("mountpoint " + args.positional()[1] + " is not an existing directory");
  }

  req.debug = args.Has("debug");
  bool pull = args.Has("pull");
  bool lazy = args.Has("lazy");
  req.insecure_skip_toc_verify = args.Has("insecure-skip-toc-verify");
  std::string fetch_timeout = args.Has("fetch-timeout") ? args.Get("fetch-timeout") : "";
  std::string prefetch = args.Has("prefetch") ? args.Get("prefetch") : "";
  req.writable = args.Has("rw") || args.Has("upper");
  std::string upper = args.Has("upper") ? args.Get("upper") : "";
  std::string driver = args.Get("driver");
  for (const std::string& group : args.GetAll("options")) {
    for (const std::string& o : SplitComma(group)) {
      if (o == "debug") {
        req.debug = true;
      } else if (o == "lazy") {
        lazy = true;
      } else if (o == "pull") {
        pull = true;
      } else if (o == "insecure_skip_toc_verify") {
        req.insecure_skip_toc_verify = true;
      } else if (o.rfind("fetch_timeout=", 0) == 0) {
        fetch_timeout = o.substr(14);
      } else if (o.rfind("prefetch=", 0) == 0) {
        prefetch = o.substr(9);
      } else if (o.rfind("driver=", 0) == 0) {
        driver = o.substr(7);
      } else if (o.rfind("upper=", 0) == 0) {
        upper = o.substr(6);
        req.writable = true;
      } else if (o.rfind("root=", 0) == 0) {
        // For fstab lines, which cannot set IMGFS_ROOT: the store to use.
        ctx.global.root = o.substr(5);
      } else if (fs::IsPassedMountOption(o)) {
        req.mount_options.push_back(o);
      } else if (IgnoredOption(o)) {
        continue;
      } else {
        return UsageError(ctx.name, "unknown mount option: " + o);
      }
    }
  }
  if (pull && lazy) return UsageError(ctx.name, "--pull and --lazy contradict each other");
  req.lazy = !pull;
  if (!fetch_timeout.empty()) {
    Result<double> seconds = ParseSeconds(fetch_timeout);
    if (!seconds.has_value()) return UsageError(ctx.name, seconds.error().message());
    req.fetch_timeout_seconds = *seconds;
  }
  if (!prefetch.empty()) {
    Result<fs::PrepareOptions::Prefetch> mode = ParsePrefetch(prefetch);
    if (!mode.has_value()) return UsageError(ctx.name, mode.error().message());
    req.prefetch = *mode;
  }
  if (args.Has("platform")) {
    Result<registry::Platform> p = registry::Platform::Parse(args.Get("platform"));
    if (!p.has_value()) return UsageError(ctx.name, p.error().message());
    req.platform = *p;
  }
  if (!upper.empty()) {
    // Absolute and without "." and ".." parts, so the same directory named from another
    // working directory is recorded the same (a kept mount's configuration compares it).
    req.upper = AbsoluteLexical(upper);
  } else if (args.Has("upper")) {
    return UsageError(ctx.name, "--upper needs a directory");
  }
  const bool driver_given = !driver.empty();
  if (!driver_given) driver = ::geteuid() == 0 ? "overlay" : "fuse";
  if (driver != "overlay" && driver != "fuse") {
    return UsageError(ctx.name, "--driver must be overlay or fuse, not \"" + driver + "\"");
  }
  if (driver_given && !req.writable) {
    return UsageError(ctx.name, "--driver is for writable mounts (--rw)");
  }
  if (stored->has_value()) {
    const fs::KeptState& kept = (*stored)->state;
    if (kept.config.has_value()) {
      if (Status served = ServeAsKept(*kept.config, driver, &ctx.global, &req); !served.ok()) {
        return Fail(served);
      }
      if (req.writable) driver = kept.config->driver;
    } else {
      IMGFS_LOG(kWarning) << "the service manager kept the mount at " << dir
                          << " in the state an older imgfs wrote (the mountpoint alone): it is "
                             "served with this command line's configuration, which cannot be "
                             "checked against what it served";
    }
  }
  const bool kernel_overlay = req.writable && driver == "overlay";
  if (kernel_overlay && ::geteuid() != 0) {
    return Fail("--driver overlay needs root (the kernel's overlayfs); use --driver fuse");
  }
  req.no_pull = args.Has("no-pull");
  bool foreground = args.Has("foreground") || req.debug;
  req.foreground = foreground;
  // A path the daemons cannot be told about (not UTF-8) fails before anything is made.
  if (Status utf8 = CheckDaemonConfig(ctx.global, RequestJson(req)); !utf8.ok()) return Fail(utf8);
  // What the host lacks for a FUSE mount (a usable /dev/fuse, fusermount3 without root) fails
  // here, before an image is pulled for nothing.
  if (Status access = fs::CheckMountAccess(req.mount_options); !access.ok()) {
    return Fail(access.WithContext("cannot mount at " + dir));
  }

  Result<std::string> binary = OwnBinary();
  if (!binary.has_value()) return Fail(binary.error());
  // A state of format 1 does not say what the mount served: only a command line whose mount
  // can be kept goes on (a state of format 2 always names such a mount, and set req).
  if (stored->has_value() && req.writable && (kernel_overlay || req.upper.empty())) {
    return Fail("the service manager passed back a kept connection of " + dir +
                ", but only writable mounts of the fuse driver with --upper are kept in its "
                "store");
  }
  if (kernel_overlay) return MountOverlayDriver(ctx, req, *binary);
  // Read-only and fuse-driver writable mounts: this process (or with -f, the foreground one)
  // becomes the keeper (fs/fuse/takeover.h) and starts the daemons that serve the mount. A
  // temporary upper is made in the keeper's process (its owner record names the keeper).
  const bool temp_upper = req.writable && req.upper.empty();
  auto keep = [&ctx, &req, &binary, &stored, &driver, temp_upper, foreground](int status_fd) {
    MountRequest kept = req;
    if (temp_upper) {
      if (Status made = MakeTemporaryUpper(ctx, &kept); !made.ok()) {
        ReportStatus(status_fd, "ERR " + made.ToString());
        return status_fd < 0 ? Fail(made) : kExitError;
      }
    }
    Result<fs::KeeperOptions> made_keeper = KeeperFor(ctx, kept, *binary);
    if (!made_keeper.has_value()) {
      ReportStatus(status_fd, "ERR " + made_keeper.error().ToString());
      return status_fd < 0 ? Fail(made_keeper.error()) : kExitError;
    }
    fs::KeeperOptions keeper = std::move(made_keeper).value();
    // -f mounts speak to a service manager (fd_store.h): the service's main process. Not with
    // a temporary upper: the keeper the manager starts again would make another one.
    keeper.service_manager = foreground && !temp_upper;
    keeper.kept_config = KeptConfigOf(ctx.global.root, kept, driver);
    if (stored->has_value()) {
      keeper.resume = &(*stored)->state.handover;
      keeper.resume_counts_fd = (*stored)->counts.get();
    }
    keeper.status_fd = status_fd;
    return fs::RunKeeper(keeper);
  };
  if (foreground) return keep(-1);
  return RunDetached("mounting " + image, keep);
}

int RunUmount(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"lazy", 'l', false, "", "detach now, clean up when no longer busy"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kUmountUsage, specs, &args, &code)) return code;
  if (args.positional().empty()) {
    return UsageError(ctx.name, "\"umount\" requires at least 1 argument");
  }
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  std::vector<cache::LeaseInfo> leases;
  if (store.has_value()) {
    Result<std::vector<cache::LeaseInfo>> live = cache::ListLiveLeases(**store);
    if (live.has_value()) leases = *live;
  }
  int rc = kExitOk;
  for (const std::string& arg : args.positional()) {
    std::string dir = AbsolutePath(arg);
    Status st = fs::Unmount(dir, args.Has("lazy"));
    if (!st.ok()) {
      if (st.message().find("Invalid argument") != std::string::npos) {
        rc = Fail(dir + " is not mounted");
      } else {
        rc = Fail(st);
      }
      continue;
    }
    // Wait (bounded) for the daemon serving it to finish, so its lease is gone when we return.
    for (const cache::LeaseInfo& lease : leases) {
      if (lease.mountpoint != dir) continue;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (cache::ProcessIsAlive(lease.pid, lease.pid_start) &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
  return rc;
}

}  // namespace imgfs::tools
