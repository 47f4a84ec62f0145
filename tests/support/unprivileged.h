// imgfs tests — running parts of a test as an ordinary user, for the tests of imgfs without
// root (the test process itself runs as root).
//
//  - TestUser(): the unprivileged account the tests use: `nobody` (present on every Debian
//    system, so CI needs no useradd and leaves no account behind). It gets a private HOME
//    below the test's directory; nothing else of the machine is written as that user.
//  - RunAsUser: a program run with the user's uid and gid, no supplementary groups and a
//    clean environment (`setpriv --reuid --regid --clear-groups`, then `env -i`).
//  - CallAsUser: a function run in a forked child with the user's ids (for in-process checks
//    such as ListTree of a mount that only its owner can reach).
//  - DevFuseMode: sets /dev/fuse's permission bits for its lifetime and restores them. On
//    machines where /dev/fuse is root-only (0600), an unprivileged mount needs it usable;
//    another test wants it unusable to see the error. The guard holds an exclusive lock
//    (flock of kDevFuseLockPath) for its whole life, so two tests, in one or several
//    processes, never overlap their changes; the original mode is written into the lock file
//    while changed, so a test killed before restoring is repaired by the next guard.
//
// Thread-safety: the functions are thread-safe; a DevFuseMode blocks while another (in any
// process) lives. CallAsUser forks: call it while the test has no other threads.
#ifndef IMGFS_TESTS_SUPPORT_UNPRIVILEGED_H_
#define IMGFS_TESTS_SUPPORT_UNPRIVILEGED_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "tests/support/image_builder.h"

namespace imgfs::testing {

struct UnprivilegedUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

// The account `nobody`; NotFound when this system has none, InvalidArgument if it is uid 0.
Result<UnprivilegedUser> TestUser();

// Gives `path` to `user` (chown, not following a symlink).
Status GiveTo(const std::string& path, const UnprivilegedUser& user);

// Runs `argv` as `user` with exactly the environment `env` ("NAME=value"; PATH is set to the
// system directories unless `env` sets it). Like RunProcess otherwise.
ProcessResult RunAsUser(const UnprivilegedUser& user, const std::vector<std::string>& argv,
                        const std::vector<std::string>& env, int timeout_s = 120);

// Runs `fn` in a forked child as `user` and returns what it returned. Internal when the
// child cannot drop its privileges, dies, or is still running after `timeout_s` (then it is
// killed).
Result<std::string> CallAsUser(const UnprivilegedUser& user, const std::function<std::string()>& fn,
                               int timeout_s = 120);

// The lock and record file of DevFuseMode.
inline constexpr char kDevFuseLockPath[] = "/tmp/imgfs-test-dev-fuse.lock";

class DevFuseMode {
 public:
  // Waits for the lock, then sets /dev/fuse's permission bits to `mode`. ok() tells whether
  // it was done (status() why not).
  explicit DevFuseMode(mode_t mode);
  ~DevFuseMode();  // Restore()
  DevFuseMode(const DevFuseMode&) = delete;
  DevFuseMode& operator=(const DevFuseMode&) = delete;

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  // Puts the original mode back and releases the lock (idempotent).
  void Restore();

 private:
  UniqueFd lock_fd_;
  mode_t original_ = 0;
  bool changed_ = false;
  Status status_;
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_UNPRIVILEGED_H_
