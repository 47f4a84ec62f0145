// imgfs — the mounts of one `imgfs run` and what its init mounts before the command.
#include "fs/run/sandbox.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <thread>

#include <net/if.h>

#include "base/file_util.h"
#include "base/log.h"
#include "base/mountinfo.h"
#include "fs/run/root_path.h"
#include "fs/run/userns.h"
#include "fs/upper/kernel_overlay.h"

namespace imgfs::fs::run {
namespace {

// The exit status of the daemon's child when exec fails (docker's "runner error").
constexpr int kExitDaemonExecFailed = 125;

// docker's masked paths (moby oci/defaults.go): files get /dev/null bound over them,
// directories an empty read-only tmpfs.
constexpr const char* kMaskedProcPaths[] = {"asound",      "acpi",          "kcore",
                                            "keys",        "latency_stats", "timer_list",
                                            "timer_stats", "sched_debug",   "scsi"};
constexpr const char* kMaskedSysPaths[] = {"firmware", "devices/virtual/powercap"};
// docker's read-only paths.
constexpr const char* kReadOnlyProcPaths[] = {"bus", "fs", "irq", "sys", "sysrq-trigger"};

constexpr uint64_t kLockedDown = MS_NOSUID | MS_NODEV | MS_NOEXEC;

std::string ErrnoText(int err) { return std::strerror(err); }

template <typename T>
Status Done(const Result<T>& r) {
  return r.has_value() ? Status::Ok() : r.error();
}

Status Mount(const std::string& source, const std::string& target, const char* type, uint64_t flags,
             const std::string& data = "") {
  if (::mount(source.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) !=
      0) {
    return Status::FromErrno(errno, "mounting " + source + " at " + target);
  }
  return Status::Ok();
}

Result<UniqueFd> OpenDir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.IsValid()) return Status::FromErrno(errno, "opening " + path);
  return fd;
}

// Masks `rel` inside `dir_fd` as docker does (nothing to do when it does not exist).
Status Mask(int dir_fd, const std::string& rel) {
  Result<UniqueFd> at = OpenInRoot(dir_fd, rel);
  if (!at.has_value()) {
    return at.error().code() == StatusCode::kNotFound ? Status::Ok() : at.error();
  }
  struct stat st {};
  if (::fstat(at->get(), &st) != 0) return Status::FromErrno(errno, "fstat " + rel);
  if (S_ISDIR(st.st_mode)) {
    return MountOnFd("tmpfs", at->get(), "tmpfs", MS_RDONLY | kLockedDown, "mode=0555")
        .WithContext("masking " + rel);
  }
  return MountOnFd("/dev/null", at->get(), nullptr, MS_BIND).WithContext("masking " + rel);
}

}  // namespace

RunSession::RunSession(std::string container_dir, std::string root_flag)
    : dir_(std::move(container_dir)), root_flag_(std::move(root_flag)) {}

RunSession::~RunSession() { TearDown(); }

Status RunSession::Setup(const std::string& manifest_digest, const RunRequest& req) {
  fuse_rw_ = req.driver == Driver::kFuse;
  confine_ = !req.security.privileged;
  for (const std::string& d : {rootfs(), lower(), init(), work()}) {
    IMGFS_RETURN_IF_ERROR(MakeDirs(d, 0755));
  }
  if (::unshare(CLONE_NEWNS) != 0) return Status::FromErrno(errno, "unshare (new mount namespace)");
  IMGFS_RETURN_IF_ERROR(Mount("none", "/", nullptr, MS_REC | MS_PRIVATE));
  // Device nodes of the image open only with --privileged (FUSE: libfuse mounts nodev
  // unless told `dev`).
  const std::vector<std::string> dev_option =
      confine_ ? std::vector<std::string>{} : std::vector<std::string>{"dev"};
  if (fuse_rw_) {
    // imgfs's own copy-on-write mount over the upper; the mountpoints are made in it and
    // taken out of the upper again after the run (RemoveMountpointsFromUpper).
    IMGFS_RETURN_IF_ERROR(
        StartDaemon(manifest_digest, {"--rw", "--driver", "fuse", "--upper", upper()}, rootfs()));
    rootfs_mounted_ = true;
  } else {
    IMGFS_RETURN_IF_ERROR(StartDaemon(manifest_digest, {}, lower()));
    IMGFS_RETURN_IF_ERROR(MakeInitLayer());
    KernelOverlay overlay;
    overlay.lower_dirs = {init(), lower()};
    overlay.upper_dir = upper();
    overlay.work_dir = work();
    overlay.userxattr = !InInitialUserNamespace();
    overlay.flags = confine_ ? MS_NODEV : 0;
    IMGFS_RETURN_IF_ERROR(MountKernelOverlay(overlay, rootfs()));
    rootfs_mounted_ = true;
  }
  IMGFS_ASSIGN_OR_RETURN(rootfs_fd_, OpenDir(rootfs()));
  if (fuse_rw_) IMGFS_RETURN_IF_ERROR(MakeMountpoints());
  IMGFS_RETURN_IF_ERROR(MountSystem());
  // Parents before children (docker sorts mounts by path depth).
  std::vector<VolumeSpec> volumes = req.volumes;
  std::stable_sort(volumes.begin(), volumes.end(), [](const VolumeSpec& a, const VolumeSpec& b) {
    return std::count(a.target.begin(), a.target.end(), '/') <
           std::count(b.target.begin(), b.target.end(), '/');
  });
  for (const VolumeSpec& v : volumes) IMGFS_RETURN_IF_ERROR(MountVolume(v));
  return Status::Ok();
}

void RunSession::TearDown() {
  rootfs_fd_.Close();
  if (rootfs_mounted_) {
    if (::umount2(rootfs().c_str(), MNT_DETACH) != 0) {
      IMGFS_LOG(kWarning) << "unmounting " << rootfs() << ": " << ErrnoText(errno);
    }
    rootfs_mounted_ = false;
  }
  if (daemon_pid_ > 0) {
    if (IsMountPoint(lower()) && ::umount2(lower().c_str(), MNT_DETACH) != 0) {
      IMGFS_LOG(kWarning) << "unmounting " << lower() << ": " << ErrnoText(errno);
    }
    // Unmounted, the daemon ends by itself; SIGTERM, then SIGKILL, if it does not.
    if (!WaitDaemon(std::chrono::seconds(2))) {
      ::kill(daemon_pid_, SIGTERM);
      if (!WaitDaemon(kDaemonExitWait)) {
        ::kill(daemon_pid_, SIGKILL);
        WaitDaemon(kDaemonExitWait);
      }
    }
    daemon_pid_ = -1;
  }
  if (fuse_rw_) RemoveMountpointsFromUpper();
}

void RunSession::RemoveScratch() {
  for (const std::string& d : {rootfs(), lower(), init(), work()}) {
    Status st = RemoveTree(d);
    if (!st.ok()) IMGFS_LOG(kWarning) << "removing " << d << ": " << st.ToString();
  }
  ::unlink(mount_log().c_str());
}

bool RunSession::WaitDaemon(std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int wstatus = 0;
    pid_t r = ::waitpid(daemon_pid_, &wstatus, WNOHANG);
    if (r == daemon_pid_ || (r < 0 && errno == ECHILD)) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Starts `imgfs mount -f --no-pull -o OPTIONS EXTRA… DIGEST MOUNTPOINT` and waits for the
// mount.
Status RunSession::StartDaemon(const std::string& manifest_digest,
                               const std::vector<std::string>& extra,
                               const std::string& mountpoint) {
  std::vector<std::string> args = {
      "imgfs", "--root",    root_flag_, "mount",
      "-f",    "--no-pull", "-o",       confine_ ? "allow_other,suid" : "allow_other,dev,suid"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(manifest_digest);
  args.push_back(mountpoint);
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  UniqueFd log_fd(
      ::open(mount_log().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!log_fd.IsValid()) return Status::FromErrno(errno, "creating " + mount_log());
  pid_t parent = ::getpid();
  std::cout.flush();
  std::cerr.flush();
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    ::setsid();  // terminal signals (Ctrl-C) are for the command, not for the daemon
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(kExitDaemonExecFailed);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(log_fd.get(), STDOUT_FILENO);
    ::dup2(log_fd.get(), STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(kExitDaemonExecFailed);
  }
  daemon_pid_ = pid;
  auto deadline = std::chrono::steady_clock::now() + kMountWait;
  for (;;) {
    if (IsMountPoint(mountpoint)) return Status::Ok();
    int wstatus = 0;
    if (::waitpid(pid, &wstatus, WNOHANG) == pid) {
      daemon_pid_ = -1;
      return Status::Internal("the mount daemon exited before the image was mounted: " +
                              DaemonLog());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::Unavailable("the image was not mounted within " +
                                 std::to_string(kMountWait.count()) + " s: " + DaemonLog());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string RunSession::DaemonLog() const {
  Result<std::string> text = ReadFile(mount_log());
  if (!text.has_value() || text->empty()) return "(no output)";
  std::string out = *text;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  if (out.rfind("imgfs: ", 0) == 0) out = out.substr(7);
  return out;
}

// init/: the mountpoints, each with the attributes of the image's own entry when it has one
// (the topmost lower layer's directory attributes win in overlayfs). init/ is ours; the
// image's entries are looked at with fstatat(AT_SYMLINK_NOFOLLOW) from a descriptor of the
// read-only lower mount.
Status RunSession::MakeInitLayer() {
  struct Entry {
    const char* path;
    bool dir;
    mode_t mode;
  };
  static const Entry kEntries[] = {
      {"proc", true, 0555},
      {"sys", true, 0555},
      {"dev", true, 0755},
      {"etc", true, 0755},
      {"etc/resolv.conf", false, 0644},
      {"etc/hosts", false, 0644},
  };
  IMGFS_ASSIGN_OR_RETURN(UniqueFd lower_fd, OpenDir(lower()));
  IMGFS_ASSIGN_OR_RETURN(UniqueFd init_fd, OpenDir(init()));
  // Create everything first, then set attributes deepest first: creating a child changes
  // its parent's mtime.
  std::vector<std::pair<std::string, struct stat>> image_attrs;
  std::vector<std::string> skipped;
  for (const Entry& e : kEntries) {
    std::string rel = e.path;
    bool parent_skipped = std::any_of(skipped.begin(), skipped.end(), [&](const std::string& p) {
      return rel.rfind(p + "/", 0) == 0;
    });
    struct stat image_st {};
    bool in_image = !parent_skipped &&
                    ::fstatat(lower_fd.get(), rel.c_str(), &image_st, AT_SYMLINK_NOFOLLOW) == 0;
    if (parent_skipped || (in_image && S_ISDIR(image_st.st_mode) != e.dir)) {
      skipped.push_back(rel);  // e.g. /etc a symlink in the image: leave it alone
      continue;
    }
    IMGFS_RETURN_IF_ERROR(
        Done(OpenInRoot(init_fd.get(), rel, e.dir ? Create::kDirectory : Create::kFile, e.mode)));
    std::string path = init() + "/" + rel;
    if (::fchmodat(init_fd.get(), rel.c_str(), e.mode, 0) != 0) {
      return Status::FromErrno(errno, "chmod " + path);
    }
    if (in_image) image_attrs.emplace_back(rel, image_st);
  }
  for (auto it = image_attrs.rbegin(); it != image_attrs.rend(); ++it) {
    const auto& [rel, image_st] = *it;
    if (::fchownat(init_fd.get(), rel.c_str(), image_st.st_uid, image_st.st_gid,
                   AT_SYMLINK_NOFOLLOW) != 0 ||
        ::fchmodat(init_fd.get(), rel.c_str(), image_st.st_mode & 07777, 0) != 0) {
      return Status::FromErrno(errno, "setting the attributes of " + init() + "/" + rel);
    }
    timespec times[2] = {image_st.st_atim, image_st.st_mtim};
    ::utimensat(init_fd.get(), rel.c_str(), times, AT_SYMLINK_NOFOLLOW);
  }
  return Status::Ok();
}

// FUSE driver: creates the mountpoints the image lacks inside the writable mount,
// remembering what the upper did not have before, so it can be taken out again.
Status RunSession::MakeMountpoints() {
  static const std::pair<const char*, bool> kPoints[] = {{"proc", true},
                                                         {"sys", true},
                                                         {"dev", true},
                                                         {"etc/resolv.conf", false},
                                                         {"etc/hosts", false}};
  IMGFS_ASSIGN_OR_RETURN(UniqueFd upper_fd, OpenDir(upper()));
  for (const auto& [path, dir] : kPoints) {
    bool via_symlink = false;
    Result<UniqueFd> existing = OpenInRoot(rootfs_fd(), path, Create::kNothing, 0, &via_symlink);
    if (existing.has_value()) continue;  // the image has it
    if (existing.error().code() != StatusCode::kNotFound) return existing.error();
    // Entries of the upper this creates: the path and any parent not copied up yet (when
    // the path went through a symlink of the image, what it creates stays).
    std::string rel = path;
    for (size_t pos = rel.size(); !via_symlink && pos != std::string::npos && pos > 0;
         pos = rel.rfind('/', pos - 1)) {
      std::string prefix = rel.substr(0, pos);
      struct stat st {};
      if (::fstatat(upper_fd.get(), prefix.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        created_in_upper_.push_back(prefix);
      }
    }
    IMGFS_RETURN_IF_ERROR(
        Done(OpenInRoot(rootfs_fd(), path, dir ? Create::kDirectory : Create::kFile)));
  }
  // Deepest first.
  std::sort(created_in_upper_.begin(), created_in_upper_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return Status::Ok();
}

// After the daemon exited: removes what MakeMountpoints put into the upper (empty
// directories and empty files only: what the command wrote there stays). The command may
// have replaced any directory of the upper by a symlink (to the host's /etc, say): every
// component is opened with O_NOFOLLOW from the upper's descriptor, and the entry itself is
// looked at and removed with fstatat/unlinkat relative to its parent.
void RunSession::RemoveMountpointsFromUpper() {
  Result<UniqueFd> upper_fd = OpenDir(upper());
  if (!upper_fd.has_value()) {
    created_in_upper_.clear();
    return;
  }
  for (const std::string& rel : created_in_upper_) {
    size_t slash = rel.rfind('/');
    std::string parent_rel = slash == std::string::npos ? "" : rel.substr(0, slash);
    std::string name = slash == std::string::npos ? rel : rel.substr(slash + 1);
    UniqueFd parent(::openat(upper_fd->get(), ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    bool ok = parent.IsValid();
    size_t start = 0;
    while (ok && start < parent_rel.size()) {
      size_t end = parent_rel.find('/', start);
      if (end == std::string::npos) end = parent_rel.size();
      std::string comp = parent_rel.substr(start, end - start);
      UniqueFd next(
          ::openat(parent.get(), comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      ok = next.IsValid();
      parent = std::move(next);
      start = end + 1;
    }
    if (!ok) continue;  // a parent is gone or no longer a directory: nothing of ours there
    // unlinkat needs a real directory descriptor, not O_PATH.
    UniqueFd dir(::openat(parent.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir.IsValid()) continue;
    struct stat st {};
    if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      ::unlinkat(dir.get(), name.c_str(), AT_REMOVEDIR);  // fails when not empty: the command's
    } else if (S_ISREG(st.st_mode) && st.st_size == 0) {
      ::unlinkat(dir.get(), name.c_str(), 0);
    }
  }
  created_in_upper_.clear();
}

Status RunSession::MountSystem() {
  // /proc and /sys are mounted by the command's init, inside its PID and network namespaces
  // (MountKernelFileSystems); here only their mountpoints are made.
  for (const char* p : {"/proc", "/sys"}) {
    IMGFS_RETURN_IF_ERROR(Done(OpenInRoot(rootfs_fd(), p, Create::kDirectory)));
  }
  IMGFS_RETURN_IF_ERROR(MountDev());
  for (const char* f : {"/etc/resolv.conf", "/etc/hosts"}) {
    struct stat st {};
    if (::stat(f, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    IMGFS_RETURN_IF_ERROR(
        BindInRoot(rootfs_fd(), f, f, MS_RDONLY | MS_NOSUID | MS_NODEV, Create::kFile));
  }
  return Status::Ok();
}

// A minimal /dev: tmpfs with the usual nodes, devpts, shm and the /proc/self/fd links.
// Confined, the tmpfs is nodev (a node the command makes there cannot be opened) and the
// nodes are bind mounts of the host's; with --privileged they are made with mknod.
Status RunSession::MountDev() {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd at, OpenInRoot(rootfs_fd(), "/dev", Create::kDirectory));
  IMGFS_RETURN_IF_ERROR(MountOnFd("tmpfs", at.get(), "tmpfs",
                                  MS_NOSUID | MS_STRICTATIME | (confine_ ? MS_NODEV : 0),
                                  "mode=755,size=65536k"));
  IMGFS_ASSIGN_OR_RETURN(UniqueFd dev_path, OpenInRoot(rootfs_fd(), "/dev"));
  // A real directory descriptor of the new tmpfs (nothing of the image is in it).
  UniqueFd dev(::openat(dev_path.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dev.IsValid()) return Status::FromErrno(errno, "opening /dev of the container");
  struct Node {
    const char* name;
    unsigned major;
    unsigned minor;
  };
  static const Node kNodes[] = {{"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
                                {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
  for (const Node& n : kNodes) {
    if (!confine_ && ::mknodat(dev.get(), n.name, S_IFCHR | 0666, makedev(n.major, n.minor)) == 0) {
      ::fchmodat(dev.get(), n.name, 0666, 0);  // not reduced by the umask
      continue;
    }
    IMGFS_RETURN_IF_ERROR(
        BindInRoot(dev.get(), n.name, std::string("/dev/") + n.name, 0, Create::kFile));
  }
  if (::mkdirat(dev.get(), "pts", 0755) != 0) return Status::FromErrno(errno, "mkdir /dev/pts");
  IMGFS_ASSIGN_OR_RETURN(UniqueFd pts, OpenInRoot(dev.get(), "pts"));
  if (!MountOnFd("devpts", pts.get(), "devpts", MS_NOSUID | MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620")
           .ok()) {
    IMGFS_RETURN_IF_ERROR(BindInRoot(dev.get(), "pts", "/dev/pts", 0));
  }
  if (::mkdirat(dev.get(), "shm", 01777) != 0) return Status::FromErrno(errno, "mkdir /dev/shm");
  IMGFS_ASSIGN_OR_RETURN(UniqueFd shm, OpenInRoot(dev.get(), "shm"));
  IMGFS_RETURN_IF_ERROR(MountOnFd("shm", shm.get(), "tmpfs", kLockedDown, "mode=1777,size=65536k"));
  static const std::pair<const char*, const char*> kLinks[] = {
      {"ptmx", "pts/ptmx"},          {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"},
      {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
  };
  for (const auto& [name, target] : kLinks) {
    if (::symlinkat(target, dev.get(), name) != 0) {
      return Status::FromErrno(errno, std::string("symlink /dev/") + name);
    }
  }
  return Status::Ok();
}

Status RunSession::MountVolume(const VolumeSpec& v) {
  struct stat st {};
  if (::stat(v.host.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::FromErrno(errno, "volume source " + v.host);
    IMGFS_RETURN_IF_ERROR(MakeDirs(v.host));  // docker -v creates a missing host directory
    if (::stat(v.host.c_str(), &st) != 0) return Status::FromErrno(errno, v.host);
  }
  uint64_t flags = (v.read_only ? MS_RDONLY | MS_NOSUID | MS_NODEV : 0) | (confine_ ? MS_NODEV : 0);
  return BindInRoot(rootfs_fd(), v.target, v.host, flags,
                    S_ISDIR(st.st_mode) ? Create::kDirectory : Create::kFile)
      .WithContext("volume " + v.host + ":" + v.target);
}

Status MountKernelFileSystems(int rootfs_fd, bool confine) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd sys, OpenInRoot(rootfs_fd, "/sys", Create::kDirectory));
  if (!MountOnFd("sysfs", sys.get(), "sysfs", MS_RDONLY | kLockedDown).ok()) {
    IMGFS_RETURN_IF_ERROR(BindInRoot(rootfs_fd, "/sys", "/sys", MS_RDONLY | kLockedDown));
  }
  if (confine) {
    IMGFS_ASSIGN_OR_RETURN(UniqueFd mounted_sys, OpenInRoot(rootfs_fd, "/sys"));
    for (const char* p : kMaskedSysPaths) IMGFS_RETURN_IF_ERROR(Mask(mounted_sys.get(), p));
  }
  IMGFS_ASSIGN_OR_RETURN(UniqueFd at, OpenInRoot(rootfs_fd, "/proc", Create::kDirectory));
  IMGFS_RETURN_IF_ERROR(MountOnFd("proc", at.get(), "proc", kLockedDown).WithContext("/proc"));
  if (!confine) return Status::Ok();
  IMGFS_ASSIGN_OR_RETURN(UniqueFd proc, OpenInRoot(rootfs_fd, "/proc"));
  for (const char* p : kMaskedProcPaths) IMGFS_RETURN_IF_ERROR(Mask(proc.get(), p));
  for (const char* p : kReadOnlyProcPaths) {
    Result<UniqueFd> src = OpenInRoot(proc.get(), p);
    if (!src.has_value()) {
      if (src.error().code() == StatusCode::kNotFound) continue;
      return src.error();
    }
    IMGFS_RETURN_IF_ERROR(BindInRoot(proc.get(), p, FdPath(src->get()), MS_RDONLY | kLockedDown)
                              .WithContext(std::string("/proc/") + p + " read-only"));
  }
  return Status::Ok();
}

Status EnterRoot(int rootfs_fd) {
  // pivot_root(".", "."): the old root is stacked on the new one and detached at once (runc
  // does the same); nothing of the host's tree stays in this mount namespace.
  if (::fchdir(rootfs_fd) != 0) return Status::FromErrno(errno, "fchdir to the rootfs");
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return Status::FromErrno(errno, "pivot_root");
  if (::umount2(".", MNT_DETACH) != 0) return Status::FromErrno(errno, "detaching the old root");
  if (::chdir("/") != 0) return Status::FromErrno(errno, "chdir /");
  return Status::Ok();
}

Status BringUpLoopback() {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.IsValid()) return Status::FromErrno(errno, "socket (loopback)");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0)
    return Status::FromErrno(errno, "SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<decltype(ifr.ifr_flags)>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0)
    return Status::FromErrno(errno, "SIOCSIFFLAGS lo");
  return Status::Ok();
}

}  // namespace imgfs::fs::run
