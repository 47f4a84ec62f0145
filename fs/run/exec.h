// imgfs — the processes of one `imgfs run`: an init in new PID, mount, IPC, UTS (and,
// with --network none, network) namespaces, and the command it forks.
//
//   7. clone an init (like `docker run --init`): it sets the host name, brings up the
//      loopback interface of a private network namespace, mounts /sys and that PID namespace's
//      /proc with docker's masked and read-only paths, pivot_roots into the rootfs, marks every
//      inherited descriptor close-on-exec, and forks the command, which applies the
//      confinement (fs/run/security.h: bounding set, no_new_privs, seccomp), switches to the
//      user (setgroups/setgid/setuid), drops the remaining capabilities, chdirs and execs
//      with a PATH search inside the image. A failure before exec is reported through a
//      close-on-exec pipe (docker's statuses: 125 imgfs error, 126 not executable, 127 not
//      found). Init and command die with SIGKILL when their parent does (PR_SET_PDEATHSIG),
//      and when the init exits the kernel kills whatever is left in the namespace;
//      With -t the command's stdin, stdout and stderr are a pseudo-terminal of the container's
//      /dev/pts, its controlling terminal (fs/run/tty.h); without -i its stdin is /dev/null;
//   8. forward signals (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH sent to imgfs
//      reach the command; a terminal's SIGINT/SIGQUIT/SIGWINCH already reached it, being
//      sent to the whole foreground process group, and are not sent twice), wait, return
//      the exit status (128+N for a signal). With -t imgfs relays the terminal meanwhile,
//      the caller's terminal in raw mode with -i, and resizes the pty on SIGWINCH instead
//      of forwarding it; the terminal's SIGINT and SIGQUIT are forwarded too (the command
//      is in a session of its own).
//
// Thread-safety: RunCommand forks; call it from a process with no other threads running
// (the children only make system calls and write an error line).
#ifndef IMGFS_FS_RUN_EXEC_H_
#define IMGFS_FS_RUN_EXEC_H_

#include <signal.h>

#include <string>

#include "fs/run/image_user.h"
#include "fs/run/process_spec.h"
#include "fs/run/security.h"

namespace imgfs::fs::run {

// docker's exit statuses for failures of the runner itself and of exec.
inline constexpr int kExitRunError = 125;
inline constexpr int kExitNotExecutable = 126;
inline constexpr int kExitNotFound = 127;

// Where and how the command runs.
struct ContainerProcess {
  // The mounted rootfs (RunSession::rootfs()). A path, not a descriptor: the init has a
  // mount namespace of its own, and a descriptor opened before it was made would refer to
  // the mount of the parent's namespace (mount(2) on it fails with EINVAL). The path is the
  // store's, owned by root (rootless: by the caller, root of the run's user namespace),
  // and nothing of the container runs yet when it is opened.
  std::string rootfs;
  NetworkMode network = NetworkMode::kNone;
  std::string hostname;  // empty: the host's name (in a UTS namespace of its own)
  Confinement confinement;
  bool tty = false;          // -t: a pseudo-terminal as stdin, stdout and stderr
  bool interactive = false;  // -i: the caller's stdin is passed on (else /dev/null)
};

// The signals imgfs run handles itself (to be blocked from the container's creation on, so
// that a SIGTERM during the setup still tears everything down): those forwarded, and
// SIGCHLD.
sigset_t RunSignals();

// Steps 7–8: runs `spec` as `user` in `where`; RunSignals() must be blocked by the caller.
// Returns the exit status to report; errors are printed to stderr ("imgfs: …"). The caller's
// terminal is restored before it returns, whatever the outcome.
int RunCommand(const ContainerProcess& where, const ProcessSpec& spec, const ExecUser& user);

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_EXEC_H_
