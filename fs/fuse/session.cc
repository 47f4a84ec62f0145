// imgfs — FuseSession.
#include "fs/fuse/session.h"

#include <fuse_lowlevel.h>
#include <malloc.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "base/log.h"
#include "base/mountinfo.h"
#include "fs/fuse/mount_access.h"

extern char** environ;

namespace imgfs::fs {
namespace {

// The last error libfuse logged, so that a failed mount can say what libfuse saw ("fuse:
// failed to open /dev/fuse: …", "fuse: failed to exec fusermount3: …").
std::mutex& LastFuseErrorMutex() {
  static std::mutex mutex;
  return mutex;
}
std::string& LastFuseError() {
  static std::string error;
  return error;
}

// libfuse's own messages go to our logger.
void FuseLog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  size_t n = strlen(buf);
  while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  if (level <= FUSE_LOG_ERR) {
    std::scoped_lock lock(LastFuseErrorMutex());
    LastFuseError() = buf;
  }
  LogLevel ours = level <= FUSE_LOG_ERR       ? LogLevel::kError
                  : level <= FUSE_LOG_WARNING ? LogLevel::kWarning
                  : level <= FUSE_LOG_INFO    ? LogLevel::kInfo
                                              : LogLevel::kDebug;
  LogLine(ours, std::string("fuse: ") + buf);
}

// fsname may not contain ',' (option separator); escape it the way libfuse documents.
std::string EscapeOption(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

void FuseSession::SessionDeleter::operator()(fuse_session* se) const { fuse_session_destroy(se); }

Result<std::unique_ptr<FuseSession>> FuseSession::Mount(ImageFilesystem* filesystem,
                                                        const std::string& mountpoint,
                                                        SessionOptions options) {
  fuse_set_log_func(FuseLog);
  std::unique_ptr<FuseSession> s(new FuseSession());
  s->options_ = std::move(options);
  s->mountpoint_ = mountpoint;
  s->context_.filesystem = filesystem;
  s->context_.on_init = s->options_.on_ready;
  s->context_.writable = s->options_.writable;
  // Canonical now: after the mount, resolving the path would ask this daemon (not yet serving).
  if (char* canonical = ::realpath(mountpoint.c_str(), nullptr); canonical != nullptr) {
    s->context_.mountpoint = canonical;
    std::free(canonical);  // NOLINT(cppcoreguidelines-no-malloc): realpath's allocation
  }

  Status access = CheckMountAccess(s->options_.mount_options);
  if (!access.ok()) return access.WithContext("cannot mount at " + mountpoint);
  std::string opts =
      std::string(s->options_.writable != nullptr ? "rw" : "ro") +
      (KernelChecksPermissions(s->options_.mount_options, geteuid()) ? ",default_permissions"
                                                                     : "") +
      ",subtype=imgfs,fsname=" + EscapeOption(s->options_.fsname);
  for (const std::string& o : s->options_.mount_options) {
    if (o.empty()) continue;
    opts += "," + o;
  }
  std::vector<std::string> argv_storage = {"imgfs", "-o", opts};
  if (s->options_.debug) argv_storage.push_back("-d");
  std::vector<char*> argv;
  argv.reserve(argv_storage.size());
  for (std::string& a : argv_storage) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_lowlevel_ops& ops =
      s->options_.writable != nullptr ? WritableFilesystemOps() : ImageFilesystemOps();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), &s->context_);
  fuse_opt_free_args(&args);
  if (se == nullptr) {
    return Status::InvalidArgument("cannot create the FUSE session (mount options: " + opts + ")");
  }
  s->session_.reset(se);
  s->context_.session = se;
  {
    std::scoped_lock lock(LastFuseErrorMutex());
    LastFuseError().clear();
  }
  if (fuse_session_mount(se, mountpoint.c_str()) != 0) {
    std::string seen;
    {
      std::scoped_lock lock(LastFuseErrorMutex());
      seen = LastFuseError();
    }
    return Status::Io("cannot mount at " + mountpoint +
                      (seen.empty() ? " (is it an existing directory?)" : " (" + seen + ")"));
  }
  s->mounted_ = true;
  return s;
}

FuseSession::~FuseSession() {
  if (session_ && mounted_) fuse_session_unmount(session_.get());
}

Status FuseSession::Run() {
  fuse_session* se = session_.get();
  // Every READ reply is a fresh buffer of up to 1 MiB (fs/fuse/read_ahead.h). glibc maps
  // buffers that large anew each time (mmap threshold), and the page faults of filling them
  // cost more than the read: a warm 64 MiB file read in 1 MiB requests took 0.7 s instead of
  // 0.16 s. Buffers up to 8 MiB come from the heap and are reused; at most 8 MiB of freed
  // heap stays with each arena.
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  if (fuse_set_signal_handlers(se) != 0) return Status::Internal("cannot set signal handlers");
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, options_.max_threads);
  int rc = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  fuse_remove_signal_handlers(se);
  fuse_session_unmount(se);
  mounted_ = false;
  if (rc < 0) return Status::Io("FUSE loop failed: " + std::string(strerror(-rc)));
  return Status::Ok();
}

Status Unmount(const std::string& mountpoint, bool lazy) {
  if (geteuid() == 0) {
    if (umount2(mountpoint.c_str(), lazy ? MNT_DETACH : 0) == 0) return Status::Ok();
    return Status::FromErrno(errno, "umount " + mountpoint);
  }
  // fusermount3 would only say "entry not found in /etc/mtab"; answer as umount2 does.
  if (!IsMountPoint(mountpoint)) return Status::FromErrno(EINVAL, "umount " + mountpoint);
  std::vector<std::string> args = {"fusermount3", "-u"};
  if (lazy) args.push_back("-z");
  args.push_back(mountpoint);
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int spawned = posix_spawnp(&pid, "fusermount3", nullptr, nullptr, argv.data(), environ);
  if (spawned == ENOENT) {
    return Status::Unavailable(
        "fusermount3 is not installed: a user other than root unmounts FUSE filesystems "
        "through it; install it (Debian: apt-get install fuse3), or unmount as root");
  }
  if (spawned != 0) return Status::FromErrno(spawned, "cannot run fusermount3");
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return Status::Io("fusermount3 -u " + mountpoint + " failed");
  }
  return Status::Ok();
}

}  // namespace imgfs::fs
