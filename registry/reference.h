// imgfs — image references, parsed and normalised exactly as Docker does
// (distribution/reference normalize.go; FORMATS.md §2.6).
//
//   alpine                    -> docker.io/library/alpine:latest
//   localhost:5000/x          -> localhost:5000/x:latest
//   ghcr.io/o/a:1@sha256:...  -> digest wins (tag kept for display)
//
// Thread-safety: value type.
#ifndef IMGFS_REGISTRY_REFERENCE_H_
#define IMGFS_REGISTRY_REFERENCE_H_

#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "registry/digest.h"

namespace imgfs::registry {

class Reference {
 public:
  Reference() = default;

  // Parses and normalises a reference. InvalidArgument with a message that quotes the input
  // and says what is wrong ("repository name must be lowercase", "invalid tag", ...).
  // A bare 64-hex string is rejected (ambiguous with an image ID). The repository path
  // (after "library/" is added) is at most 255 characters; digests must be sha256, sha384 or
  // sha512. One deliberate difference from Docker: a first component that is taken for a host
  // but is not a valid host name ("a_b.com/x") is an error here, where Docker would silently
  // make the whole string a domain-less path.
  static Result<Reference> Parse(std::string_view text);

  const std::string& domain() const { return domain_; }  // "docker.io", "127.0.0.1:5000"
  const std::string& path() const { return path_; }      // "library/alpine"
  const std::string& tag() const { return tag_; }        // "" when only a digest was given
  const std::optional<Digest>& digest() const { return digest_; }

  // "docker.io/library/alpine"
  std::string Name() const { return domain_ + "/" + path_; }
  // Fully qualified: "docker.io/library/alpine:3.20", "...@sha256:...", or "name:tag@digest".
  std::string String() const;
  // As docker prints it: "alpine:3.20", "user/app:1", "127.0.0.1:5000/demo/app:1.0".
  std::string FamiliarName() const;  // without tag/digest
  std::string FamiliarString() const;
  // What manifests are fetched by: the digest if any, else the tag.
  std::string TagOrDigest() const;
  // Host[:port] to contact: "registry-1.docker.io" for docker.io, else domain().
  std::string Endpoint() const;
  // Same reference with a different tag and no digest; InvalidArgument when `tag` is not a
  // valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}), e.g. one listed by a hostile registry.
  Result<Reference> WithTag(std::string tag) const;
  // Same name with the digest set (tag kept).
  Reference WithDigest(Digest digest) const;

  bool operator==(const Reference&) const = default;

 private:
  std::string domain_;
  std::string path_;
  std::string tag_;
  std::optional<Digest> digest_;
};

// True for a valid tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} (distribution's tag grammar). No
// '/', '..' prefix, '?', control or escape characters can pass.
bool IsValidTag(std::string_view tag);

// True for hosts that may be spoken to over plain HTTP without --insecure-registry:
// `localhost`, 127.0.0.0/8 and ::1 IP literals (with or without a port); not `*.localhost`
// (glibc resolves those through DNS). The one loopback check of imgfs (registry/origin.h).
bool IsLoopbackHost(std::string_view host_port);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_REFERENCE_H_
