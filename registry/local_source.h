// imgfs — local image sources: an OCI image layout directory, an OCI archive (a tar of a
// layout) and a `docker save` archive, behind the BlobSource interface (registry/blob_source.h)
// so the rest of imgfs pulls and mounts them exactly like images from a registry.
//
//  - oci:DIR[:REF]      OCI image layout (image-spec image-layout.md). REF matches the
//                       `org.opencontainers.image.ref.name` annotation of an index.json entry;
//                       "@sha256:…" selects a manifest or index blob by digest. Without REF the
//                       layout must hold exactly one entry (else InvalidArgument listing refs).
//  - oci-archive:FILE[:REF]  the same, inside a tar. The archive is indexed once at open
//                       (member name → offset, size) by walking its headers; blobs are then
//                       read in place with pread, never extracted.
//  - docker-archive:FILE[:REPO:TAG or @N]  `docker save` / skopeo output: manifest.json with
//                       Config, RepoTags and Layers. An OCI image manifest is synthesised for
//                       the selected image: config `application/vnd.oci.image.config.v1+json`,
//                       one layer per Layers member with media type `…layer.v1.tar`, `+gzip` or
//                       `+zstd` by the member's magic bytes, digest = sha256 of the member bytes
//                       (hashed once at open). Layer members may be symlinks (`layer.tar ->
//                       ../<diff_id>.tar`) or hardlinks; both are followed inside the archive.
//                       GetManifest("") and GetManifest(<its digest>) return that manifest.
//
// Every blob read through FetchBlob is hashed and checked against the requested digest;
// GetManifest verifies manifest bytes the same way. ReadBlobRange is a pread of the blob's
// bytes (unverified, per the BlobSource contract).
//
// Errors name the source ("oci layout DIR", "docker archive FILE") and the digest. A file that
// is not a tar gives Corrupt "not a docker archive: FILE: …" (or "not an oci archive").
//
// Thread-safety: all state is immutable after Open*; every method may be called from several
// threads at once (reads use pread on a shared descriptor or open their own).
#ifndef IMGFS_REGISTRY_LOCAL_SOURCE_H_
#define IMGFS_REGISTRY_LOCAL_SOURCE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_range.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "registry/blob_source.h"
#include "registry/digest.h"

namespace imgfs::registry {

class LocalSource : public BlobSource {
 public:
  enum class Kind { kOciLayout, kOciArchive, kDockerArchive };
  struct IndexEntry;

  // `ref`: "" (the only image), a ref name, or "@sha256:<hex>". NotFound when the directory
  // or REF does not exist (the message lists the available refs); Corrupt for a malformed
  // layout (missing oci-layout, index.json not JSON).
  static Result<std::unique_ptr<LocalSource>> OpenOciLayout(const std::string& dir,
                                                            std::string_view ref);
  // Same for a tar of a layout.
  static Result<std::unique_ptr<LocalSource>> OpenOciArchive(const std::string& file,
                                                             std::string_view ref);
  // `selector`: "" (the only image), "REPO:TAG" as listed in RepoTags (":latest" is implied
  // when REPO has no tag), or "@N" (N-th image of manifest.json, from 0).
  static Result<std::unique_ptr<LocalSource>> OpenDockerArchive(const std::string& file,
                                                                std::string_view selector);

  // The entries of an OCI archive's index.json, in order (ref_name "" when unannotated):
  // what `imgfs load` of an archive of several images loads, one by one. Errors as Open*.
  static Result<std::vector<IndexEntry>> ListOciArchive(const std::string& file);

  ~LocalSource() override;
  LocalSource(const LocalSource&) = delete;
  LocalSource& operator=(const LocalSource&) = delete;

  // BlobSource. GetManifest: "" → the selected image; a digest → that blob (it must exist in
  // the layout/archive); a ref name / RepoTag → that entry.
  Result<FetchedManifest> GetManifest(std::string_view tag_or_digest) override;
  Status FetchBlob(const Digest& digest, int64_t expected_size, const BlobSink& sink) override;
  Result<std::string> ReadBlobRange(const Digest& digest, ByteRange range) override;
  // oci: the ref names of index.json (sorted, unique); docker archive: every RepoTag.
  Result<std::vector<std::string>> ListTags() override;
  std::string Describe() const override;

  Kind kind() const { return kind_; }
  // The path given at open.
  const std::string& path() const { return path_; }
  // The name the selected image carries in the source: the ref.name annotation of its
  // index.json entry (oci; "" when selected by digest or unannotated), or the RepoTag the
  // selector matched, else RepoTags[0] of the selected image (docker archive; "" if untagged).
  const std::string& ref_name() const { return ref_name_; }
  // Digest of what GetManifest("") returns.
  const Digest& manifest_digest() const { return selected_.digest; }

  // Where a blob's bytes are (public for the implementation's helpers; not an API).
  struct Member {
    uint64_t offset = 0;
    uint64_t size = 0;
    char type = '0';          // '0' file, '1' hardlink, '2' symlink, '5' dir, other
    std::string link_target;  // for '1' (archive name) and '2' (verbatim)
  };
  struct IndexEntry {
    std::string media_type;
    Digest digest;
    int64_t size = -1;
    std::string ref_name;
  };

 private:
  struct BlobLocation;
  LocalSource(Kind kind, std::string path);

  Status ReadOciIndex();
  Status LoadOciIndex(std::string_view ref);
  Status LoadDockerManifest(std::string_view selector);
  Status IndexArchive(const char* what);
  Result<const Member*> ResolveMember(const std::string& name) const;
  Result<std::string> ReadMember(const std::string& name, uint64_t max_size) const;
  Result<BlobLocation> Locate(const Digest& digest) const;
  Result<FetchedManifest> ReadManifestBlob(const Digest& digest, std::string media_type,
                                           int64_t size);
  Status Context(const Status& s, const Digest* digest) const;

  Kind kind_;
  std::string path_;
  UniqueFd fd_;                            // archives
  std::map<std::string, Member> members_;  // archives: normalised member name → location
  std::vector<IndexEntry> index_;          // oci: index.json entries
  IndexEntry selected_;                    // what GetManifest("") returns
  std::string ref_name_;
  // docker archive: the synthesised manifest and the members behind config/layer digests.
  std::string synthetic_manifest_;
  std::map<Digest, std::string> docker_blobs_;  // digest → member name
  std::vector<std::string> repo_tags_;          // docker archive: every image's RepoTags
};

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_LOCAL_SOURCE_H_
