// imgfs — unit tests of fs/run/security: docker's default capability set and seccomp
// profile, applied for real in forked children (the kernel decides, not a mock).
#include <errno.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>

#include <gtest/gtest.h>

#include "fs/run/security.h"

namespace imgfs::fs::run {
namespace {

constexpr CapabilityMask Bit(int cap) { return CapabilityMask{1} << cap; }

// Forks; the child applies `c` (as root: before and after a no-op user switch) and exits
// with the errno `probe` returns (0 for success). Returns that status, or -1.
int InConfinedChild(const Confinement& c, const std::function<int()>& probe) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const char* what = "";
    if (ApplyBeforeUserSwitch(c, &what) != 0) _exit(200);
    if (ApplyAfterUserSwitch(c, &what) != 0) _exit(201);
    _exit(probe());
  }
  int wstatus = 0;
  if (waitpid(pid, &wstatus, 0) != pid || !WIFEXITED(wstatus)) return -1;
  return WEXITSTATUS(wstatus);
}

int ErrnoOf(long rc) { return rc < 0 ? errno : 0; }

TEST(CapabilitiesTest, DockersDefaultSetAndAddDrop) {
  EXPECT_EQ(DefaultCapabilities(), 0xa80425fbu);
  EXPECT_EQ(__builtin_popcountll(DefaultCapabilities()), 14);
  EXPECT_EQ(*CapabilityFromName("SYS_ADMIN"), 21);
  EXPECT_EQ(*CapabilityFromName("cap_sys_admin"), 21);
  EXPECT_FALSE(CapabilityFromName("SYS_EVERYTHING").has_value());
  EXPECT_EQ(CapabilityName(21), "CAP_SYS_ADMIN");

  SecurityOptions o;
  EXPECT_EQ(*EffectiveCapabilities(o), DefaultCapabilities());
  o.cap_add = {"SYS_ADMIN"};
  o.cap_drop = {"CHOWN"};
  EXPECT_EQ(*EffectiveCapabilities(o), (DefaultCapabilities() | Bit(21)) & ~Bit(0));
  o.cap_drop = {"ALL"};
  EXPECT_EQ(*EffectiveCapabilities(o), Bit(21));
  o.cap_add = {"ALL"};
  o.cap_drop = {"MKNOD"};
  EXPECT_EQ(*EffectiveCapabilities(o), ~Bit(27));
  o.cap_add = {"NOPE"};
  EXPECT_FALSE(EffectiveCapabilities(o).has_value());
  o = SecurityOptions{};
  o.privileged = true;
  Result<Confinement> c = PrepareConfinement(o);
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->confine);
  EXPECT_TRUE(c->seccomp.empty());
}

TEST(CapabilitiesTest, BoundingAndEffectiveSetsAreReduced) {
  ASSERT_EQ(geteuid(), 0u) << "needs root";
  Result<Confinement> c = PrepareConfinement(SecurityOptions{});
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  // CAP_SYS_ADMIN (21) is gone from the bounding set; CAP_CHOWN (0) stays.
  EXPECT_EQ(InConfinedChild(*c, [] { return prctl(PR_CAPBSET_READ, 21) == 0 ? 0 : 1; }), 0);
  EXPECT_EQ(InConfinedChild(*c, [] { return prctl(PR_CAPBSET_READ, 0) == 1 ? 0 : 1; }), 0);
  // Without the filter, what is left of root cannot mount either (the capability is gone).
  SecurityOptions no_filter;
  no_filter.seccomp = false;
  Result<Confinement> caps_only = PrepareConfinement(no_filter);
  ASSERT_TRUE(caps_only.has_value());
  EXPECT_EQ(
      InConfinedChild(*caps_only,
                      [] { return ErrnoOf(mount("none", "/", nullptr, MS_REMOUNT, nullptr)); }),
      EPERM);
}

TEST(SeccompTest, DockersProfileRefusesWhatDockerRefuses) {
  ASSERT_EQ(geteuid(), 0u) << "needs root";
  std::vector<std::string_view> allowed = DefaultAllowedSyscalls();
  for (std::string_view blocked : {"mount",
                                   "umount2",
                                   "unshare",
                                   "setns",
                                   "keyctl",
                                   "add_key",
                                   "request_key",
                                   "bpf",
                                   "perf_event_open",
                                   "kexec_load",
                                   "init_module",
                                   "finit_module",
                                   "delete_module",
                                   "open_by_handle_at",
                                   "pivot_root",
                                   "swapon",
                                   "swapoff",
                                   "reboot",
                                   "acct",
                                   "settimeofday",
                                   "clock_settime",
                                   "userfaultfd",
                                   "personality",
                                   "clone",
                                   "clone3"}) {
    EXPECT_EQ(std::count(allowed.begin(), allowed.end(), blocked), 0) << blocked;
  }
  EXPECT_EQ(std::count(allowed.begin(), allowed.end(), "ptrace"), 1);  // kernel >= 4.8

  SecurityOptions o;
  o.cap_add = {"ALL"};  // only the filter refuses here, not a missing capability
  o.cap_drop = {"SYS_ADMIN"};
  Result<Confinement> c = PrepareConfinement(o);
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  ASSERT_FALSE(c->seccomp.empty());
  auto errno_in_child = [&](const std::function<long()>& call) {
    return InConfinedChild(*c, [&] { return ErrnoOf(call()); });
  };
  EXPECT_EQ(errno_in_child([] { return getpid() > 0 ? 0 : -1; }), 0);
  EXPECT_EQ(errno_in_child([] { return unshare(CLONE_NEWNS); }), EPERM);
  EXPECT_EQ(errno_in_child([] { return unshare(CLONE_NEWUSER); }), EPERM);
  EXPECT_EQ(errno_in_child([] { return syscall(SYS_keyctl, 0, -3, 1); }), EPERM);
  EXPECT_EQ(errno_in_child([] { return syscall(SYS_add_key, "user", "k", "v", 1, -3); }), EPERM);
  EXPECT_EQ(errno_in_child([] { return syscall(SYS_pivot_root, ".", "."); }), EPERM);
  EXPECT_EQ(errno_in_child([] { return syscall(SYS_userfaultfd, 0); }), EPERM);
  EXPECT_EQ(errno_in_child([] { return syscall(SYS_swapoff, "/nonexistent"); }), EPERM);
  EXPECT_EQ(errno_in_child([] { return syscall(SYS_clone3, nullptr, 0); }), ENOSYS);
  // clone with a namespace flag is refused, plain fork-like clone is not.
  EXPECT_EQ(errno_in_child([] {
              return syscall(SYS_clone, CLONE_NEWUTS | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
            }),
            EPERM);
  EXPECT_EQ(errno_in_child([] {
              long pid = syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, nullptr);
              if (pid == 0) _exit(0);
              if (pid > 0) waitpid(static_cast<pid_t>(pid), nullptr, 0);
              return pid > 0 ? 0L : -1L;
            }),
            0);
  // personality: the query and PER_LINUX only.
  EXPECT_EQ(errno_in_child([] { return personality(0xffffffff) < 0 ? -1 : 0; }), 0);
  EXPECT_EQ(errno_in_child([] { return personality(PER_BSD); }), EPERM);
  // Docker ties mount & co. to CAP_SYS_ADMIN: with it, the filter lets unshare through.
  o.cap_drop.clear();
  Result<Confinement> admin = PrepareConfinement(o);
  ASSERT_TRUE(admin.has_value());
  EXPECT_EQ(InConfinedChild(*admin, [] { return ErrnoOf(unshare(CLONE_NEWUTS)); }), 0);
}

}  // namespace
}  // namespace imgfs::fs::run
