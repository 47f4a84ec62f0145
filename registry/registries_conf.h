// imgfs — registries.conf: where images are pulled from, as containers-registries.conf(5)
// (version 2, the TOML format podman, skopeo and buildah read) says.
//
// What is read:
//   unqualified-search-registries = ["quay.io", "docker.io"]   short names: try in order
//   [[registry]]                    one per registry (or namespace) the user configures
//   prefix = "docker.io/library"    what references it applies to (default: location);
//                                   "*.example.com" matches every subdomain
//   location = "docker.io"          where the prefix really lives (rewrites the prefix)
//   insecure = true                 plain http / unverified TLS allowed (registry/origin.h)
//   blocked = true                  pulls are refused
//   mirror-by-digest-only = true    (older form of pull-from-mirror = "digest-only")
//   [[registry.mirror]]             tried in order before the location
//   location, insecure              as above
//   pull-from-mirror = "all" | "digest-only" | "tag-only"
//   [aliases]                       "name" = "host/repo": short-name aliases
// Every other key and table (credential-helpers, short-name-mode, v1 [registries.*] tables)
// is parsed and ignored. The TOML accepted is the subset these files use: [tables],
// [[arrays of tables]], key = value with bare or quoted keys, basic and literal strings,
// booleans, (multi-line) arrays of strings, comments. Anything else — integers, inline
// tables, multi-line strings, a key given twice in one table — is InvalidArgument naming the
// file and line. Files are at most kMaxFileBytes.
//
// Which files (LoadRegistriesConf, as containers/image sysregistriesv2 does):
//  - `explicit_file` when set (CONTAINERS_REGISTRIES_CONF or `imgfs --registries-conf FILE`):
//    that file alone, it must exist. Unlike podman, the drop-in directory is not read then,
//    so one file says everything (and a test is not affected by /etc).
//  - else $HOME/.config/containers/registries.conf if it exists, else
//    /etc/containers/registries.conf; then the drop-ins /etc/containers/registries.conf.d/
//    *.conf and $HOME/.config/containers/registries.conf.d/*.conf in lexical order. A later
//    file replaces a [[registry]] of the same prefix, replaces
//    unqualified-search-registries when it sets it, and adds or replaces aliases.
//  - docker's /etc/docker/daemon.json "registry-mirrors" become mirrors of docker.io when no
//    registries.conf file configures docker.io itself.
// Missing files are skipped; a file that exists but does not parse fails the load (a typo
// must not silently send pulls elsewhere). `root` prefixes every system path (tests; as
// containers/image's RootForImplicitAbsolutePaths).
//
// Thread-safety: values and pure functions (LoadRegistriesConf reads files only).
#ifndef IMGFS_REGISTRY_REGISTRIES_CONF_H_
#define IMGFS_REGISTRY_REGISTRIES_CONF_H_

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace imgfs::registry {

enum class PullFromMirror { kAll, kDigestOnly, kTagOnly };

struct MirrorConf {
  std::string location;  // "mirror.example.com[:port][/namespace]"
  bool insecure = false;
  PullFromMirror pull_from_mirror = PullFromMirror::kAll;
};

struct RegistryConf {
  std::string prefix;    // never empty after parsing (defaults to location)
  std::string location;  // empty only for a "*.domain" prefix (the reference's own host)
  bool insecure = false;
  bool blocked = false;
  bool mirror_by_digest_only = false;
  std::vector<MirrorConf> mirrors;
  std::string file;  // the file that configured it (LoadRegistriesConf), for messages
};

struct RegistriesConf {
  std::vector<RegistryConf> registries;
  // nullopt: not configured (docker.io only, as imgfs always did).
  std::optional<std::vector<std::string>> unqualified_search_registries;
  // Short name ("fedora", "library/alpine") → fully qualified name without tag.
  std::map<std::string, std::string> aliases;
  // The files that were read, for messages ("/etc/containers/registries.conf, ...").
  std::vector<std::string> files;
};

// Bounds on hostile or mistaken input.
inline constexpr size_t kMaxRegistriesConfBytes = 1 << 20;  // real files are a few KiB
inline constexpr size_t kMaxRegistriesConfEntries = 4096;   // registries, mirrors, array items
inline constexpr size_t kMaxRegistriesConfDropIns = 256;

// Parses one file's text; `name` is used in messages ("FILE:LINE: ..."). InvalidArgument for
// TOML outside the subset above, wrong value types of known keys, a bad pull-from-mirror, a
// location with a URL scheme, a mirror before any [[registry]], a wildcard prefix with a
// location, both mirror-by-digest-only and pull-from-mirror, a prefix that does not match
// its location's form.
Result<RegistriesConf> ParseRegistriesConf(std::string_view text, std::string_view name);

// Applies a later file `update` on top of `base` (the drop-in rules above).
void MergeRegistriesConf(RegistriesConf* base, RegistriesConf update);

// docker's daemon.json "registry-mirrors" (URLs like "https://mirror.gcr.io"): mirrors of
// docker.io, http:// ones insecure. Corrupt when the JSON is malformed or the key is not an
// array of http(s) URL strings; an empty list when absent.
Result<std::vector<MirrorConf>> ParseDockerDaemonMirrors(std::string_view json_text);

struct RegistriesConfPaths {
  // The one file to read instead of the defaults; "" = the defaults.
  std::string explicit_file;
  // Prefixed to every system path ("/etc/..."); "" in production.
  std::string root;
  // $HOME; "" = no per-user files.
  std::string home;
};

// From the environment: CONTAINERS_REGISTRIES_CONF, IMGFS_CONFIG_ROOT (the test root),
// HOME.
RegistriesConfPaths RegistriesConfPathsFromEnvironment();

// Reads and merges the files `paths` selects (see above).
Result<RegistriesConf> LoadRegistriesConf(const RegistriesConfPaths& paths);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_REGISTRIES_CONF_H_
