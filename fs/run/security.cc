// imgfs — docker's default capabilities and seccomp profile for `imgfs run`.
#include "fs/run/security.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <memory>

#include <linux/capability.h>
#include <linux/seccomp.h>

#include "base/file_util.h"
#include "base/unique_fd.h"

namespace imgfs::fs::run {
namespace {

// Capability names by number (linux/capability.h, up to CAP_CHECKPOINT_RESTORE = 40).
constexpr std::string_view kCapNames[] = {
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
};
constexpr int kNamedCaps = static_cast<int>(std::size(kCapNames));

constexpr CapabilityMask Bit(int cap) { return CapabilityMask{1} << cap; }

// Capability numbers used by the cap-dependent rules (kept local: older kernel headers may
// lack CAP_PERFMON / CAP_BPF).
constexpr int kCapDacReadSearch = 2;
constexpr int kCapSysModule = 16;
constexpr int kCapSysRawio = 17;
constexpr int kCapSysChroot = 18;
constexpr int kCapSysPtrace = 19;
constexpr int kCapSysPacct = 20;
constexpr int kCapSysAdmin = 21;
constexpr int kCapSysBoot = 22;
constexpr int kCapSysNice = 23;
constexpr int kCapSysTime = 25;
constexpr int kCapSysTtyConfig = 26;
constexpr int kCapSyslog = 34;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

// docker's default profile (moby profiles/seccomp/default.json): default action
// SCMP_ACT_ERRNO with errno 1 (EPERM); these names are allowed unconditionally. ptrace,
// process_vm_readv and process_vm_writev are in it for kernels >= 4.8 (before 4.8 ptrace
// could bypass seccomp); imgfs run needs a newer kernel anyway (openat2: 5.6).
//
// Not in it, so EPERM for every container: add_key, keyctl, request_key, kexec_load,
// kexec_file_load, pivot_root, swapon, swapoff, userfaultfd, uselib, nfsservctl, vm86,
// vm86old, ustat, sysfs, _sysctl, create_module, get_kernel_syms, query_module.
// Allowed only with a capability (CapRules): mount, umount/umount2, unshare, setns, fsopen &
// co., bpf, perf_event_open, syslog, sethostname (CAP_SYS_ADMIN); reboot; init_module,
// finit_module, delete_module; acct; settimeofday, clock_settime; iopl, ioperm; vhangup;
// mbind, set_mempolicy; open_by_handle_at (CAP_DAC_READ_SEARCH); kcmp, pidfd_getfd.
// With arguments: clone only without namespace flags and clone3 → ENOSYS (libc then uses
// clone) unless CAP_SYS_ADMIN; personality only with the default personalities; socket of
// every family but AF_VSOCK.
// clang-format off
constexpr std::string_view kAllowed[] = {
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset",
    "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown",
    "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
    "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_time64", "futex_waitv",
    "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32",
    "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getitimer",
    "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
    "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
    "getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
    "gettimeofday", "getuid", "getuid32", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup",
    "io_submit", "io_uring_enter", "io_uring_register", "io_uring_setup", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek",
    "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise", "membarrier",
    "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock",
    "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6",
    "pselect6_time64", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
    "remap_file_pages", "removexattr", "rename", "renameat", "renameat2", "restart_syscall",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list",
    "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32",
    "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd",
    "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
    "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range",
    "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask",
    "uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vfork",
    "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
    // minKernel 4.8
    "process_vm_readv", "process_vm_writev", "ptrace",
    // arches amd64, x32 (arch_prctl) and amd64, x32, x86 (modify_ldt)
    "arch_prctl", "modify_ldt",
};
// clang-format on

// docker's "includes": {"caps": [...]} rules: allowed when the container holds the
// capability.
struct CapRule {
  int cap;
  std::vector<std::string_view> names;
};
const std::vector<CapRule>& CapRules() {
  static const std::vector<CapRule> rules = {
      {kCapDacReadSearch, {"open_by_handle_at"}},
      {kCapSysAdmin,
       {"bpf",           "clone",         "clone3",      "fanotify_init",   "fsconfig",
        "fsmount",       "fsopen",        "fspick",      "lookup_dcookie",  "mount",
        "mount_setattr", "move_mount",    "open_tree",   "perf_event_open", "quotactl",
        "quotactl_fd",   "setdomainname", "sethostname", "setns",           "syslog",
        "umount",        "umount2",       "unshare"}},
      {kCapSysBoot, {"reboot"}},
      {kCapSysChroot, {"chroot"}},
      {kCapSysModule, {"delete_module", "init_module", "finit_module"}},
      {kCapSysPacct, {"acct"}},
      {kCapSysPtrace,
       {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
        "ptrace"}},
      {kCapSysRawio, {"iopl", "ioperm"}},
      {kCapSysTime, {"settimeofday", "stime", "clock_settime", "clock_settime64"}},
      {kCapSysTtyConfig, {"vhangup"}},
      {kCapSysNice, {"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"}},
      {kCapSyslog, {"syslog"}},
      {kCapBpf, {"bpf"}},
      {kCapPerfmon, {"perf_event_open"}},
  };
  return rules;
}

// personality(2) values docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
// and 0xffffffff (the query).
constexpr uint64_t kPersonalities[] = {0x0, 0x8, 0x20000, 0x20008, 0xffffffff};
// AF_VSOCK: the one socket family docker refuses.
constexpr uint64_t kAfVsock = 40;
// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: the clone flags docker
// refuses without CAP_SYS_ADMIN (its mask 2114060288).
constexpr uint64_t kCloneNamespaceFlags = 0x7E020000;

// A comparison of the first system call argument (SCMP_A0 without the macro's partial
// initializer).
scmp_arg_cmp Arg0(scmp_compare op, uint64_t a, uint64_t b = 0) {
  scmp_arg_cmp cmp{};
  cmp.arg = 0;
  cmp.op = op;
  cmp.datum_a = a;
  cmp.datum_b = b;
  return cmp;
}

struct SeccompDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using SeccompCtx = std::unique_ptr<void, SeccompDeleter>;

// Adds an allow rule for `name` when this architecture has it (docker's profile names
// system calls of every architecture; unknown ones are skipped as docker skips them).
Status Allow(scmp_filter_ctx ctx, std::string_view name, uint32_t action = SCMP_ACT_ALLOW,
             std::vector<scmp_arg_cmp> args = {}) {
  std::string n(name);
  int nr = seccomp_syscall_resolve_name(n.c_str());
  if (nr == __NR_SCMP_ERROR) return Status::Ok();
  int rc = seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(args.size()),
                                  args.empty() ? nullptr : args.data());
  // -EEXIST: the same rule twice (a name in two cap rules); -EDOM/-EINVAL: the name is not a
  // system call on one of the ABIs (libseccomp then leaves it out there).
  if (rc != 0 && rc != -EEXIST && rc != -EDOM) {
    return Status::FromErrno(-rc, "seccomp rule for " + n);
  }
  return Status::Ok();
}

}  // namespace

CapabilityMask DefaultCapabilities() {
  // oci/caps/defaults.go DefaultCapabilities().
  return Bit(CAP_CHOWN) | Bit(CAP_DAC_OVERRIDE) | Bit(CAP_FSETID) | Bit(CAP_FOWNER) |
         Bit(CAP_MKNOD) | Bit(CAP_NET_RAW) | Bit(CAP_SETGID) | Bit(CAP_SETUID) | Bit(CAP_SETFCAP) |
         Bit(CAP_SETPCAP) | Bit(CAP_NET_BIND_SERVICE) | Bit(CAP_SYS_CHROOT) | Bit(CAP_KILL) |
         Bit(CAP_AUDIT_WRITE);
}

Result<int> CapabilityFromName(std::string_view name) {
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string_view n = upper;
  if (n.starts_with("CAP_")) n.remove_prefix(4);
  for (int i = 0; i < kNamedCaps; ++i) {
    if (kCapNames[i] == n) return i;
  }
  return Status::InvalidArgument("unknown capability \"" + std::string(name) + "\"");
}

std::string CapabilityName(int cap) {
  if (cap >= 0 && cap < kNamedCaps) return "CAP_" + std::string(kCapNames[cap]);
  return "CAP_" + std::to_string(cap);
}

Result<CapabilityMask> EffectiveCapabilities(const SecurityOptions& options) {
  constexpr CapabilityMask kAll = ~CapabilityMask{0};
  if (options.privileged) return kAll;
  auto has_all = [](const std::vector<std::string>& v) {
    return std::any_of(v.begin(), v.end(),
                       [](const std::string& s) { return s == "ALL" || s == "all"; });
  };
  auto mask_of = [](const std::vector<std::string>& v) -> Result<CapabilityMask> {
    CapabilityMask m = 0;
    for (const std::string& s : v) {
      if (s == "ALL" || s == "all") continue;
      IMGFS_ASSIGN_OR_RETURN(int cap, CapabilityFromName(s));
      m |= Bit(cap);
    }
    return m;
  };
  IMGFS_ASSIGN_OR_RETURN(CapabilityMask add, mask_of(options.cap_add));
  IMGFS_ASSIGN_OR_RETURN(CapabilityMask drop, mask_of(options.cap_drop));
  if (has_all(options.cap_drop)) return has_all(options.cap_add) ? kAll : add;
  if (has_all(options.cap_add)) return kAll & ~drop;
  return (DefaultCapabilities() | add) & ~drop;
}

std::vector<std::string_view> DefaultAllowedSyscalls() {
  return {std::begin(kAllowed), std::end(kAllowed)};
}

Result<std::vector<sock_filter>> CompileDefaultSeccompProfile(CapabilityMask caps) {
  SeccompCtx ctx(seccomp_init(SCMP_ACT_ERRNO(EPERM)));
  if (ctx == nullptr) return Status::Internal("seccomp_init failed");
  if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
    for (uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
      int rc = seccomp_arch_add(ctx.get(), arch);
      if (rc != 0 && rc != -EEXIST) return Status::FromErrno(-rc, "seccomp_arch_add");
    }
  }
  for (std::string_view name : kAllowed) IMGFS_RETURN_IF_ERROR(Allow(ctx.get(), name));
  for (uint64_t p : kPersonalities) {
    IMGFS_RETURN_IF_ERROR(Allow(ctx.get(), "personality", SCMP_ACT_ALLOW, {Arg0(SCMP_CMP_EQ, p)}));
  }
  IMGFS_RETURN_IF_ERROR(Allow(ctx.get(), "socket", SCMP_ACT_ALLOW, {Arg0(SCMP_CMP_NE, kAfVsock)}));
  for (const CapRule& rule : CapRules()) {
    if ((caps & Bit(rule.cap)) == 0) continue;
    for (std::string_view name : rule.names) IMGFS_RETURN_IF_ERROR(Allow(ctx.get(), name));
  }
  if ((caps & Bit(kCapSysAdmin)) == 0) {
    // clone without namespace flags (x86/arm argument order: flags are argument 0).
    IMGFS_RETURN_IF_ERROR(Allow(ctx.get(), "clone", SCMP_ACT_ALLOW,
                                {Arg0(SCMP_CMP_MASKED_EQ, kCloneNamespaceFlags, 0)}));
    // clone3's flags are in memory a filter cannot read: ENOSYS makes libc use clone.
    IMGFS_RETURN_IF_ERROR(Allow(ctx.get(), "clone3", SCMP_ACT_ERRNO(ENOSYS)));
  }
  // libseccomp writes the program to a file descriptor (seccomp_export_bpf_mem is 2.6+).
  UniqueFd mem(static_cast<int>(::syscall(SYS_memfd_create, "imgfs-seccomp", MFD_CLOEXEC)));
  if (!mem.IsValid()) return Status::FromErrno(errno, "memfd_create");
  if (int rc = seccomp_export_bpf(ctx.get(), mem.get()); rc != 0) {
    return Status::FromErrno(-rc, "seccomp_export_bpf");
  }
  struct stat st {};
  if (::fstat(mem.get(), &st) != 0) return Status::FromErrno(errno, "fstat (seccomp program)");
  // BPF_MAXINSNS: the kernel's limit on one classic BPF program.
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0 || size % sizeof(sock_filter) != 0 || size / sizeof(sock_filter) > BPF_MAXINSNS) {
    return Status::Internal("seccomp program of " + std::to_string(size) + " bytes");
  }
  IMGFS_ASSIGN_OR_RETURN(std::string bytes, PreadAll(mem.get(), 0, size));
  std::vector<sock_filter> program(size / sizeof(sock_filter));
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(program.data()));
  return program;
}

Result<Confinement> PrepareConfinement(const SecurityOptions& options) {
  Confinement c;
  c.no_new_privileges = options.no_new_privileges;
  if (options.privileged) {
    c.confine = false;
    return c;
  }
  IMGFS_ASSIGN_OR_RETURN(c.caps, EffectiveCapabilities(options));
  Result<std::string> last = ReadFile("/proc/sys/kernel/cap_last_cap");
  if (last.has_value()) {
    int value = 0;
    auto [end, ec] = std::from_chars(last->data(), last->data() + last->size(), value);
    if (ec == std::errc() && value >= 0 && value < 64) c.last_cap = value;
  }
  if (options.seccomp) {
    IMGFS_ASSIGN_OR_RETURN(c.seccomp, CompileDefaultSeccompProfile(c.caps));
  }
  return c;
}

int ApplyBeforeUserSwitch(const Confinement& c, const char** what) {
  if (c.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    *what = "prctl(PR_SET_NO_NEW_PRIVS)";
    return errno;
  }
  if (!c.confine) return 0;
  for (int cap = 0; cap <= c.last_cap; ++cap) {
    if ((c.caps & Bit(cap)) != 0) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      *what = "prctl(PR_CAPBSET_DROP)";
      return errno;
    }
  }
  if (!c.seccomp.empty()) {
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(c.seccomp.size());
    prog.filter = const_cast<sock_filter*>(c.seccomp.data());
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
      *what = "installing the seccomp filter";
      return errno;
    }
  }
  return 0;
}

int ApplyAfterUserSwitch(const Confinement& c, const char** what) {
  if (!c.confine) return 0;
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) {
    *what = "capget";
    return errno;
  }
  for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; ++i) {
    uint32_t keep = static_cast<uint32_t>(c.caps >> (32 * i));
    data[i].permitted &= keep;
    data[i].effective &= data[i].permitted;
    data[i].inheritable &= data[i].permitted;
  }
  if (::syscall(SYS_capset, &header, data) != 0) {
    *what = "capset";
    return errno;
  }
  // EINVAL: a kernel without ambient capabilities (< 4.3) has none to clear.
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    *what = "prctl(PR_CAP_AMBIENT_CLEAR_ALL)";
    return errno;
  }
  return 0;
}

}  // namespace imgfs::fs::run
