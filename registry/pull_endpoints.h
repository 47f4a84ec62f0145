// imgfs — where a reference is pulled from, given registries.conf (registry/registries_conf.h):
// the containers/image sysregistriesv2 rules.
//
//  - The [[registry]] whose prefix matches the reference applies: the prefix equals the
//    fully qualified reference text ("docker.io/library/alpine:3.20") or is followed in it
//    by '/', ':' or '@'; "*.example.com" matches any subdomain host. The longest match wins.
//  - Its endpoints, in order: the mirrors (a tag reference skips "digest-only" mirrors, a
//    digest reference skips "tag-only" ones; mirror-by-digest-only keeps mirrors for digest
//    references only), then the location. Each endpoint's reference is the original with
//    the matched prefix replaced by the endpoint's location (a wildcard prefix: the host).
//  - blocked = true refuses the pull (PermissionDenied naming the prefix and file).
//  - No matching [[registry]]: the reference itself is the one endpoint.
//  - Short names ("alpine", "user/app:1", no registry host): an alias of the name (without
//    tag or digest) gives the one candidate; else each unqualified-search-registries entry
//    in order; else docker.io, as imgfs has always done.
//
// Credentials are looked up per endpoint host by the caller: a mirror's host gets the
// mirror's credentials, never the origin's.
//
// Thread-safety: pure functions.
#ifndef IMGFS_REGISTRY_PULL_ENDPOINTS_H_
#define IMGFS_REGISTRY_PULL_ENDPOINTS_H_

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "registry/reference.h"
#include "registry/registries_conf.h"

namespace imgfs::registry {

struct PullEndpoint {
  Reference reference;    // as the endpoint names it (prefix rewritten)
  bool insecure = false;  // plain http allowed for reference.domain()
  bool mirror = false;    // a mirror, not the location
};

// Length of the part of `ref_text` that `prefix` matches, or -1 (refMatchingPrefix).
int PrefixMatchLength(std::string_view ref_text, std::string_view prefix);

// The [[registry]] that applies to `ref` (longest prefix match), or nullptr.
const RegistryConf* FindRegistryConf(const RegistriesConf& conf, const Reference& ref);

// The endpoints to try for `ref`, in order (see above); never empty on success.
// PermissionDenied when the registry is blocked; InvalidArgument when a rewritten reference
// does not parse (a location that is no registry host).
Result<std::vector<PullEndpoint>> PullEndpoints(const RegistriesConf& conf, const Reference& ref);

// True when `text` (without "docker://") names no registry host: "alpine", "user/app:1".
bool IsShortName(std::string_view text);

// The fully qualified references to try for the user's `text`, in order: `text` itself when
// qualified, else by alias, unqualified-search-registries, or docker.io (see above).
// InvalidArgument for text that does not parse, an alias value that is not a fully
// qualified name, or an empty unqualified-search-registries list.
Result<std::vector<Reference>> ResolveShortName(const RegistriesConf& conf, std::string_view text);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_PULL_ENDPOINTS_H_
