// imgfs — what confines the command of `imgfs run`: capabilities and the seccomp filter,
// docker's defaults (moby profiles/seccomp/default.json; oci/caps/defaults.go).
//
// Docker's default for a container (and ours unless --privileged):
//   - capabilities: CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP
//     SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE (± --cap-add/--cap-drop). Every
//     other capability is dropped from the bounding set (so no exec, setuid binary or file
//     capability brings it back) and from the effective, permitted and inheritable sets;
//     the ambient set is cleared. A non-root user ends with no capabilities at all.
//   - seccomp: docker's allowlist (DefaultSeccompProfile in security.cc), everything else
//     fails with EPERM.
//   - no_new_privs only with --security-opt no-new-privileges (docker's rule).
// With --privileged nothing of this applies (all capabilities, no filter).
//
// Use: PrepareConfinement() in the parent (it allocates: name lookups, libseccomp compiles
// the filter to BPF); in the forked child ApplyBeforeUserSwitch() while still root (the
// bounding set needs CAP_SETPCAP and a filter without no_new_privs needs CAP_SYS_ADMIN, as
// runc does it), then setgroups/setgid/setuid, then ApplyAfterUserSwitch(). Both Apply
// functions only make system calls: safe after fork.
//
// Thread-safety: pure functions; a Confinement is a plain value.
#ifndef IMGFS_FS_RUN_SECURITY_H_
#define IMGFS_FS_RUN_SECURITY_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <linux/filter.h>

#include "base/status.h"
#include "fs/run/process_spec.h"

namespace imgfs::fs::run {

// A set of capabilities: bit N is capability N (linux/capability.h numbering).
using CapabilityMask = uint64_t;

// docker's default capability set.
CapabilityMask DefaultCapabilities();

// "SYS_ADMIN", "CAP_SYS_ADMIN", "sys_admin" → 21; InvalidArgument for an unknown name.
Result<int> CapabilityFromName(std::string_view name);
// "CAP_SYS_ADMIN" for 21; "CAP_<n>" for numbers this build does not name.
std::string CapabilityName(int cap);

// The capabilities of a run, as docker computes them: all with --privileged; with
// --cap-drop ALL only the --cap-add ones; with --cap-add ALL all but the --cap-drop ones;
// else the default plus --cap-add minus --cap-drop. InvalidArgument for an unknown name.
Result<CapabilityMask> EffectiveCapabilities(const SecurityOptions& options);

// docker's default seccomp profile for a container holding `caps` (its cap-dependent
// rules included as docker includes them), compiled to classic BPF by libseccomp for this
// machine's architecture (and, on x86-64, the x86 and x32 ABIs, as docker does).
Result<std::vector<sock_filter>> CompileDefaultSeccompProfile(CapabilityMask caps);

// The names of the system calls DefaultSeccompProfile allows unconditionally (for tests).
std::vector<std::string_view> DefaultAllowedSyscalls();

// Everything the child applies, prepared before the fork.
struct Confinement {
  bool confine = true;      // false with --privileged: nothing below is applied
  CapabilityMask caps = 0;  // kept capabilities
  int last_cap = 40;        // highest capability number the kernel knows
  bool no_new_privileges = false;
  std::vector<sock_filter> seccomp;  // empty: no filter
};

Result<Confinement> PrepareConfinement(const SecurityOptions& options);

// In the child, as root, before the user switch: bounding set, no_new_privs, seccomp. On
// failure returns the errno and sets *what to a static description; 0 on success.
int ApplyBeforeUserSwitch(const Confinement& c, const char** what);
// In the child, after setgroups/setgid/setuid: effective/permitted/inheritable reduced to
// the kept capabilities, ambient set cleared. Same error convention.
int ApplyAfterUserSwitch(const Confinement& c, const char** what);

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_SECURITY_H_
