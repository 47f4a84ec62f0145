// imgfs — what `imgfs run` is asked to do (RunRequest, filled from the command line by
// tools/cmd_run.cc) and what the command's process gets from it and the image's config
// (ProcessSpec: argv, environment, working directory, user): docker's rules.
//
// Thread-safety: pure functions and plain values.
#ifndef IMGFS_FS_RUN_PROCESS_SPEC_H_
#define IMGFS_FS_RUN_PROCESS_SPEC_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "registry/manifest.h"

namespace imgfs::fs::run {

// docker's default PATH when the image sets none.
inline constexpr std::string_view kDefaultPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// One -v HOST:CONTAINER[:ro].
struct VolumeSpec {
  std::string host;
  std::string target;
  bool read_only = false;
};

// Parses docker's -v syntax (absolute host and container paths; modes ro, rw, z, Z).
Result<VolumeSpec> ParseVolume(const std::string& text);

// How the image is made writable (--driver).
enum class Driver {
  kOverlay,  // a read-only imgfs mount under the kernel's overlayfs (the default)
  kFuse,     // imgfs's own copy-on-write mount (`imgfs mount --rw --upper`)
};

// --network.
enum class NetworkMode {
  kNone,  // a network namespace of its own with only the loopback interface (the default)
  kHost,  // the host's network namespace
};

// Parses "none" / "host"; InvalidArgument otherwise (docker's "bridge" does not exist here).
Result<NetworkMode> ParseNetworkMode(std::string_view text);

// What contains the command (see fs/run/security.h). The default is docker's default.
struct SecurityOptions {
  bool privileged = false;            // --privileged: everything below off, all capabilities
  bool no_new_privileges = false;     // --security-opt no-new-privileges
  bool seccomp = true;                // --security-opt seccomp=unconfined turns it off
  std::vector<std::string> cap_add;   // --cap-add (names, "ALL")
  std::vector<std::string> cap_drop;  // --cap-drop (names, "ALL")
};

// Applies one --security-opt value: "no-new-privileges" (also ":true"/"=true", ":false"),
// "seccomp=unconfined". InvalidArgument for anything else.
Status ApplySecurityOpt(std::string_view text, SecurityOptions* options);

struct RunRequest {
  Driver driver = Driver::kOverlay;
  NetworkMode network = NetworkMode::kNone;
  SecurityOptions security;
  std::string image;
  std::string name;
  bool remove = false;
  std::vector<std::string> env_args;
  std::string workdir;
  std::optional<std::string> user;
  std::vector<VolumeSpec> volumes;
  std::optional<std::string> entrypoint;
  std::string hostname;
  std::optional<registry::Platform> platform;  // for a pull
  std::vector<std::string> command;
  bool tty = false;          // -t: a pseudo-terminal (fs/run/tty.h)
  bool interactive = false;  // -i: stdin stays open (else the command reads /dev/null)
};

// Everything the command's process needs from the request and the config, computed before
// anything is mounted.
struct ProcessSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string workdir = "/";
  std::string user;  // USER[:GROUP] spec, resolved once the rootfs is mounted (image_user.h)
};

// docker's rules: --entrypoint replaces the entrypoint and drops the image's Cmd, arguments
// replace Cmd; TERM=xterm with -t, then the config's Env, then PATH (default kDefaultPath),
// HOSTNAME, then -e
// (KEY=VALUE, or KEY alone for the host's value); -w or WorkingDir (relative ones made
// absolute, a relative -w refused); -u or User.
Result<ProcessSpec> BuildProcessSpec(const RunRequest& req, const registry::ImageConfig& config);

// KEY=VALUE list with later entries replacing earlier ones of the same key, order kept.
void SetEnv(std::vector<std::string>* env, const std::string& entry);
// The value of `key`, "" when unset.
std::string GetEnv(const std::vector<std::string>& env, const std::string& key);
bool HasEnv(const std::vector<std::string>& env, const std::string& key);

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_PROCESS_SPEC_H_
