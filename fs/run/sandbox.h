// imgfs — the file system side of one `imgfs run`: a private mount namespace, the image
// mounted copy-on-write at rootfs/, and /sys, a minimal /dev, the host's resolv.conf and
// hosts, the -v volumes inside it; plus what the container's init does in its own mount
// namespace before the command starts (/proc with docker's masked and read-only paths,
// pivot_root, the loopback interface).
//
// Steps (the numbers of tools/cmd_run.cc's overview):
//   3. unshare(CLONE_NEWNS) and make every mount private: whatever is mounted from here on
//      exists only in this process's mount namespace and vanishes with its last process;
//   4. the mount daemon as a child (`imgfs mount -f --no-pull DIGEST lower/`) in its own
//      session with PR_SET_PDEATHSIG = SIGTERM; wait until lower/ is a mount point;
//   5. the kernel's overlayfs at rootfs/: lowerdir = init/ (the mountpoints /proc, /sys,
//      /dev, /etc/resolv.conf, /etc/hosts, with the image's own attributes, so they never
//      land in the upper layer) over lower/, upperdir = upper/ (redirect_dir, index and
//      metacopy off). `--driver fuse` replaces 4–5 by `imgfs mount -f --rw --upper upper/
//      DIGEST rootfs/`; the mountpoints the image lacks are then created in it and taken
//      out of the upper again after the run;
//   6. /dev (tmpfs: null zero full random urandom tty, devpts with its ptmx, shm), the
//      host's /etc/resolv.conf and /etc/hosts read-only, the -v volumes (/proc and /sys
//      are mounted by the container's init: MountKernelFileSystems).
// Without root the whole session runs inside the run's user namespace (fs/run/userns.h): the
// daemon's FUSE mount belongs to it (the image's uid 0 is the namespace's root), overlayfs
// is mounted with `userxattr` (opaque markers in user.overlay.*, redirect_dir=nofollow), and
// mknod is refused there, so /dev's nodes are always the host's, bound.
// Every target inside the rootfs is resolved through directory fds (fs/run/root_path.h):
// an image's symlink cannot point a mount outside the rootfs.
//
// Unless --privileged (SandboxOptions::confine), device nodes cannot be opened anywhere the
// command can write or the image put them: the rootfs (overlayfs, or the FUSE mount made
// without `dev`), /dev's tmpfs, /dev/shm and the volumes are nodev; the nodes of /dev are
// bind mounts of the host's null, zero, full, random, urandom and tty (docker's device
// cgroup allows the same set, plus the pty devices devpts provides).
//
// Thread-safety: a RunSession belongs to one thread; it forks.
#ifndef IMGFS_FS_RUN_SANDBOX_H_
#define IMGFS_FS_RUN_SANDBOX_H_

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "fs/run/process_spec.h"

namespace imgfs::fs::run {

// How long to wait for the mount daemon to make the image's mount (the image is in the store
// and indexed by then; this bounds a stuck daemon).
inline constexpr auto kMountWait = std::chrono::seconds(60);
// How long the daemon gets to exit after its mount is gone before it is killed.
inline constexpr auto kDaemonExitWait = std::chrono::seconds(5);

// The mounts and the daemon of one run; destroying it tears everything down.
class RunSession {
 public:
  // `container_dir`: ROOT/containers/<name>; `root_flag`: the store, for the daemon's --root.
  RunSession(std::string container_dir, std::string root_flag);
  RunSession(const RunSession&) = delete;
  RunSession& operator=(const RunSession&) = delete;
  ~RunSession();

  std::string rootfs() const { return dir_ + "/rootfs"; }
  // An O_PATH descriptor of the mounted rootfs (valid after a successful Setup).
  int rootfs_fd() const { return rootfs_fd_.get(); }

  // Steps 3–6. The calling process is in the new mount namespace afterwards.
  Status Setup(const std::string& manifest_digest, const RunRequest& req);

  // Unmounts everything and stops the daemon (idempotent).
  void TearDown();

  // Removes the scratch directories of a kept container (upper/ and container.json stay).
  void RemoveScratch();

 private:
  std::string lower() const { return dir_ + "/lower"; }
  std::string init() const { return dir_ + "/init"; }
  std::string work() const { return dir_ + "/work"; }
  std::string upper() const { return dir_ + "/upper"; }
  std::string mount_log() const { return dir_ + "/mount.log"; }

  bool WaitDaemon(std::chrono::seconds limit);
  Status StartDaemon(const std::string& manifest_digest, const std::vector<std::string>& extra,
                     const std::string& mountpoint);
  std::string DaemonLog() const;
  Status MakeInitLayer();
  Status MakeMountpoints();
  void RemoveMountpointsFromUpper();
  Status MountSystem();
  Status MountDev();
  Status MountVolume(const VolumeSpec& v);

  std::string dir_;
  std::string root_flag_;
  bool confine_ = true;
  pid_t daemon_pid_ = -1;
  bool rootfs_mounted_ = false;
  bool fuse_rw_ = false;
  UniqueFd rootfs_fd_;
  std::vector<std::string> created_in_upper_;  // FUSE driver: relative paths, deepest first
};

// In the container's init (own mount, PID and network namespaces, still on the host's root):
// mounts sysfs (read-only; it shows the network namespace's interfaces) at the rootfs's
// /sys and that PID namespace's /proc at its /proc; when `confine`, docker's masked paths
// (/dev/null or an empty read-only tmpfs over /proc/{asound,acpi,kcore,keys,latency_stats,
// timer_list,timer_stats,sched_debug,scsi}, /sys/firmware, /sys/devices/virtual/powercap)
// and read-only paths (/proc/{bus,fs,irq,sys,sysrq-trigger}).
Status MountKernelFileSystems(int rootfs_fd, bool confine);

// In the container's init, after MountKernelFileSystems: makes the rootfs the root of the mount
// namespace with pivot_root(2) and detaches the old root, so that no path, ".." or fd trick
// (chroot + fchdir) leads back to the host's tree; cwd becomes "/".
Status EnterRoot(int rootfs_fd);

// Brings the loopback interface of a new network namespace up.
Status BringUpLoopback();

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_SANDBOX_H_
