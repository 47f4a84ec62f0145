// imgfs — FuseSession.
#include "fs/fuse/session.h"

#include <fcntl.h>
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
  const Handover* handover = s->options_.handover;
  if (handover != nullptr) {
    // A live mount nobody serves: resolving its path would wait for this daemon.
    s->context_.mountpoint = mountpoint;
  } else if (char* canonical = ::realpath(mountpoint.c_str(), nullptr); canonical != nullptr) {
    // Canonical now: after the mount, resolving the path would ask this daemon (not yet
    // serving).
    s->context_.mountpoint = canonical;
    std::free(canonical);  // NOLINT(cppcoreguidelines-no-malloc): realpath's allocation
  }

  if (handover == nullptr) {
    Status access = CheckMountAccess(s->options_.mount_options);
    if (!access.ok()) return access.WithContext("cannot mount at " + mountpoint);
  }
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
  // libfuse 3.14 takes "/dev/fd/N" as an open /dev/fuse descriptor to serve (the mount exists
  // already); the session owns and closes N, so it gets a copy of the keeper's.
  std::string target = mountpoint;
  if (handover != nullptr) {
    int fd = fcntl(handover->fuse_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return Status::FromErrno(errno, "taking over the FUSE connection");
    target = "/dev/fd/" + std::to_string(fd);
  }
  if (fuse_session_mount(se, target.c_str()) != 0) {
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
  Status init = ServeInit();
  int rc = 0;
  if (init.ok() && !fuse_session_exited(se)) {
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    // One descriptor for every worker: a cloned descriptor (FUSE_DEV_IOC_CLONE) is a file of
    // its own whose unanswered requests the kernel fails when this process dies, which a
    // takeover could not resend.
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, options_.max_threads);
    rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
  }
  fuse_remove_signal_handlers(se);
  if (options_.handover != nullptr) {
    // libfuse unmounts only what it mounted; a signal ends a taken-over mount here.
    if (!ConnectionGone(fuse_session_fd(se))) {
      Status st = Unmount(context_.mountpoint, /*lazy=*/true);
      if (!st.ok()) IMGFS_LOG(kWarning) << "unmounting: " << st.ToString();
    }
  } else {
    fuse_session_unmount(se);
  }
  mounted_ = false;
  if (!init.ok()) return init;
  if (rc < 0) return Status::Io("FUSE loop failed: " + std::string(strerror(-rc)));
  return Status::Ok();
}

Status FuseSession::ServeInit() {
  fuse_session* se = session_.get();
  if (const Handover* handover = options_.handover; handover != nullptr) {
    // The kernel sent INIT to the first daemon only. libfuse answers nothing before it has
    // seen one, so it gets those bytes again: the same negotiation, the same Init hook (read
    // ahead raised again, on_ready). Its reply goes to a request the kernel no longer has and
    // fails with ENOENT, which libfuse ignores.
    std::string request = handover->init_request;
    fuse_buf buf{};
    buf.mem = request.data();
    buf.size = request.size();
    fuse_session_process_buf(se, &buf);
    // The requests the previous daemon read and never answered come again.
    Status resent = NotifyResend(fuse_session_fd(se));
    if (!resent.ok()) IMGFS_LOG(kWarning) << "taking over: " << resent.ToString();
    return Status::Ok();
  }
  fuse_buf buf{};
  int res = 0;
  do {
    res = fuse_session_receive_buf(se, &buf);
  } while (res == -EINTR && !fuse_session_exited(se));
  if (res <= 0) {
    std::free(buf.mem);  // NOLINT(cppcoreguidelines-no-malloc): libfuse's allocation
    if (res == 0 || res == -EINTR) return Status::Ok();  // unmounted or stopped meanwhile
    return Status::Io("reading the INIT request: " + std::string(strerror(-res)));
  }
  if (options_.on_connection) {
    options_.on_connection(fuse_session_fd(se),
                           std::string_view(static_cast<const char*>(buf.mem), buf.size));
  }
  fuse_session_process_buf(se, &buf);
  std::free(buf.mem);  // NOLINT(cppcoreguidelines-no-malloc): libfuse's allocation
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
