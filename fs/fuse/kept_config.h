// imgfs — what a kept mount serves, as its keeper records it in the service manager's fd store
// (fs/fuse/fd_store.h) for the keeper the manager starts again.
//
// The kernel of a live mount holds node ids, open handles and lookup counts of the tree its
// daemons serve, and a writable mount's work directory journals them for its upper. A daemon
// that takes the mount over must therefore serve the same tree: the same image (pinned by its
// manifest digest: Handover::image, recorded beside this), from the same store, read-only or
// writable over the same upper, with the same layer options. So a keeper started again serves
// what the state recorded, not what its own command line says (tools/cmd_mount.cc logs what
// differs); only the mountpoint is the command line's, and it must match the state's.
//
// Not recorded: how the registry is reached (credentials, CA certificates, insecure
// registries) and logging. They change how bytes are fetched, never which (every byte is
// checked against digests that chain up to the pinned manifest), they may rightly change
// between two runs of a service (a rotated password), and credentials do not belong in the
// store: the process started again uses its own.
//
// The encoding is one JSON object, keys sorted and no white space (nlohmann's dump), and the
// parser accepts exactly what the encoder makes: the state is hostile input (any process of
// the service could have stored it), so every field is checked as `imgfs mount --kept-daemon`
// checks its configuration, and more.
//
// Thread-safety: plain values and pure functions.
#ifndef IMGFS_FS_FUSE_KEPT_CONFIG_H_
#define IMGFS_FS_FUSE_KEPT_CONFIG_H_

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace imgfs::fs {

struct KeptConfig {
  // The image as `imgfs mount` was asked for it (a reference, an image ID, oci:DIR:TAG, …),
  // for comparing with a later command line; what is served is Handover::image, the pin.
  // Not empty, no control characters.
  std::string image;
  std::string root;  // the image store; absolute
  bool writable = false;
  // The writable driver: "fuse" (the only one kept: the overlay driver's mount is the
  // kernel's overlayfs) when writable, "" when read-only.
  std::string driver;
  std::string upper;  // the upper directory: absolute when writable, "" when read-only
  // The -o options passed on to the kernel mount (IsPassedMountOption, mount_access.h).
  std::vector<std::string> mount_options;
  bool lazy = true;      // false: every layer was fetched whole (--pull)
  std::string platform;  // registry::Platform::Parse form, "" when not given
  // --fetch-timeout: 0 (the default) or 0 < s <= 86400.
  double fetch_timeout_seconds = 0;
  std::string prefetch = "landmarks";  // "none", "landmarks" or "all"
  bool insecure_skip_toc_verify = false;

  bool operator==(const KeptConfig&) const = default;
};

// The JSON text of `config`. InvalidArgument when it cannot be encoded (a string that is not
// UTF-8) or would not parse back (CheckKeptConfig).
Result<std::string> EncodeKeptConfig(const KeptConfig& config);

// The inverse. Corrupt on anything EncodeKeptConfig does not make: not JSON, another key or
// type, another spelling of the same values, or a field CheckKeptConfig refuses.
Result<KeptConfig> ParseKeptConfig(std::string_view text);

// OK when every field is as KeptConfig says (the paths absolute, without NUL, shorter than
// PATH_MAX; a writable configuration with the fuse driver and an upper, a read-only one with
// neither; known options; a parsable platform; fetch_timeout_seconds in range); Corrupt
// naming the first field that is not.
Status CheckKeptConfig(const KeptConfig& config);

// The fields in which `kept` and `other` (what a command line asks) differ, each named as
// `imgfs mount` spells it ("image", "--root", "--rw", "--driver", "--upper", "-o", "--pull",
// "--platform", "--fetch-timeout", "--prefetch", "--insecure-skip-toc-verify") with both
// values: "--upper: kept /a, asked /b" ("none" for an empty value). Images that normalise
// alike ("alpine", "docker.io/library/alpine:latest") and -o lists with the same options in
// another order do not differ. Empty when nothing differs.
std::vector<std::string> KeptConfigDifferences(const KeptConfig& kept, const KeptConfig& other);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_KEPT_CONFIG_H_
