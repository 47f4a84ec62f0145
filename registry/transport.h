// imgfs — image arguments with transports, as skopeo and podman spell them:
//
//   oci:DIR[:REF]                    OCI image layout; REF = org.opencontainers.image.ref.name
//   oci:DIR@sha256:<hex>             ... one manifest/index of it by digest
//   oci-archive:FILE[:REF]           a tar of an OCI layout (same REF forms)
//   docker-archive:FILE[:REPO:TAG]   `docker save` output; also docker-archive:FILE:@N
//   docker://REF                     a registry reference, explicitly
//   anything else                    a registry reference (registry/reference.h)
//
// The path ends at the first ':' (so local paths cannot contain one, as in containers/image).
// Other transport names skopeo knows (dir:, docker-daemon:, containers-storage:) are
// Unsupported rather than mistaken for a registry host.
//
// OpenLocalSource opens the local transports (the caller makes remote sources from
// registry/remote_source.h). LocalImageReference gives the name under which a local image is
// recorded in the store, following podman's convention: an OCI ref name that is itself an
// image reference ("example.com/app:1", "alpine:3.20") is used as is; a bare tag ("latest",
// "v1") or no ref becomes "localhost/<dir or file name>:<tag>" (a digest selection
// "localhost/<name>@sha256:…"); a docker archive is recorded under the RepoTag its selector
// matched, else its RepoTags[0] (untagged: "localhost/<file name>:latest").
//
// Thread-safety: pure functions.
#ifndef IMGFS_REGISTRY_TRANSPORT_H_
#define IMGFS_REGISTRY_TRANSPORT_H_

#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "registry/local_source.h"
#include "registry/reference.h"

namespace imgfs::registry {

enum class Transport { kRegistry, kOciLayout, kOciArchive, kDockerArchive };

struct SourceSpec {
  Transport transport = Transport::kRegistry;
  // Local transports: the directory or archive file, and what selects the image in it
  // ("" = the only one; an OCI ref name or "@sha256:<hex>"; a docker "REPO:TAG" or "@N").
  std::string path;
  std::string selector;
  // kRegistry: the parsed, normalised reference.
  Reference reference;
  // The argument as the user gave it, for messages.
  std::string text;

  bool IsLocal() const { return transport != Transport::kRegistry; }
};

// "oci", "oci-archive", "docker-archive", "docker".
std::string_view TransportName(Transport t);

// Parses a user's image argument. InvalidArgument for an empty path, a malformed digest or
// reference (the message quotes the argument); Unsupported for other known transports.
Result<SourceSpec> ParseSourceSpec(std::string_view arg);

// Opens a local transport. InvalidArgument for kRegistry.
Result<std::unique_ptr<LocalSource>> OpenLocalSource(const SourceSpec& spec);

// The reference a local image is recorded under in the store (see above). `source` is the
// source OpenLocalSource(spec) returned.
Result<Reference> LocalImageReference(const SourceSpec& spec, const LocalSource& source);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_TRANSPORT_H_
