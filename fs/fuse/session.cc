// imgfs — FuseSession.
#include "fs/fuse/session.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "base/log.h"
#include "base/mountinfo.h"
#include "fs/fuse/lowlevel.h"
#include "fs/fuse/mount_access.h"

extern char** environ;

namespace imgfs::fs {
namespace {}  // namespace

void FuseSession::SessionDeleter::operator()(fuse_session* se) const { fuse_session_destroy(se); }

Result<std::unique_ptr<FuseSession>> FuseSession::Mount(ImageFilesystem* filesystem,
                                                        const std::string& mountpoint,
                                                        SessionOptions options) {
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
      ",subtype=imgfs,fsname=" + EscapeFuseOption(s->options_.fsname);
  for (const std::string& o : s->options_.mount_options) {
    if (o.empty()) continue;
    opts += "," + o;
  }
  // libfuse 3.14 takes "/dev/fd/N" as an open /dev/fuse descriptor to serve (the mount exists
  // already); the session owns and closes N, so it gets a copy of the keeper's.
  std::string target = mountpoint;
  if (handover != nullptr) {
    int fd = fcntl(handover->fuse_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return Status::FromErrno(errno, "taking over the FUSE connection");
    target = "/dev/fd/" + std::to_string(fd);
  }
  const fuse_lowlevel_ops& ops =
      s->options_.writable != nullptr ? WritableFilesystemOps() : ImageFilesystemOps();
  IMGFS_ASSIGN_OR_RETURN(fuse_session * se, MountLowLevel(ops, &s->context_, opts,
                                                          s->options_.debug, target, mountpoint));
  s->session_.reset(se);
  s->context_.session = se;
  s->mounted_ = true;
  return s;
}

FuseSession::~FuseSession() {
  if (session_ && mounted_) fuse_session_unmount(session_.get());
}

Status FuseSession::Run() {
  fuse_session* se = session_.get();
  if (fuse_set_signal_handlers(se) != 0) return Status::Internal("cannot set signal handlers");
  Status init = ServeInit();
  int rc = 0;
  if (init.ok() && !fuse_session_exited(se)) rc = ServeLowLevel(se, options_.max_threads);
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
  // A takeover replays the first daemon's INIT: the same negotiation, the same Init hook
  // (read ahead raised again, on_ready). A writable mount clears setuid bits where the kernel
  // asks (fuse_ops_rw.cc) and so takes FUSE_HANDLE_KILLPRIV_V2.
  return ServeInitRequest(session_.get(), options_.handover, options_.on_connection,
                          /*handle_killpriv_v2=*/options_.writable != nullptr);
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
