// imgfs — media types of the OCI image spec and Docker's image manifest v2 schema 2, and the
// layer annotations that make a layer lazily readable (eStargz, zstd:chunked). They live
// here, not in fs/layer/, because cache/ (GC keeps lazy layers' blobs apart) needs them too.
//
// Thread-safety: constants and pure functions.
#ifndef IMGFS_REGISTRY_MEDIA_TYPES_H_
#define IMGFS_REGISTRY_MEDIA_TYPES_H_

#include <string_view>

namespace imgfs::registry {
struct Descriptor;
}  // namespace imgfs::registry

namespace imgfs::registry::media {

inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kOciLayerTar = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view kOciLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kOciLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view kOciLayerNondistTar =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
inline constexpr std::string_view kOciLayerNondistGzip =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
inline constexpr std::string_view kOciLayerNondistZstd =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
inline constexpr std::string_view kOciEmpty = "application/vnd.oci.empty.v1+json";

inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestV1 =
    "application/vnd.docker.distribution.manifest.v1+json";
inline constexpr std::string_view kDockerManifestV1Signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kDockerLayerGzip =
    "application/vnd.docker.image.rootfs.diff.tar.gzip";
inline constexpr std::string_view kDockerLayerForeignGzip =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

// The Accept header for manifest requests: every manifest and index type we decode.
inline constexpr std::string_view kManifestAccept =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

// Layer compression by media type.
enum class Compression { kNone, kGzip, kZstd, kUnknown };
Compression LayerCompression(std::string_view media_type);

// eStargz: sha256 of the TOC JSON (estargz/types.go: TOCJSONDigestAnnotation).
inline constexpr std::string_view kEstargzTocDigestAnnotation =
    "containerd.io/snapshot/stargz/toc.digest";
// zstd:chunked (c/storage pkg/chunked/internal/minimal/compression.go; the `io.containers.`
// prefix is the pre-rename form, still written by older tools).
inline constexpr std::string_view kZstdChunkedPositionAnnotation =
    "io.github.containers.zstd-chunked.manifest-position";
inline constexpr std::string_view kZstdChunkedChecksumAnnotation =
    "io.github.containers.zstd-chunked.manifest-checksum";
inline constexpr std::string_view kZstdChunkedOldPositionAnnotation =
    "io.containers.zstd-chunked.manifest-position";
inline constexpr std::string_view kZstdChunkedOldChecksumAnnotation =
    "io.containers.zstd-chunked.manifest-checksum";

// A layer descriptor with a zstd:chunked manifest position annotation (either spelling).
bool IsZstdChunkedLayer(const Descriptor& layer);
// A layer that can be read lazily by its TOC: eStargz (toc.digest) or zstd:chunked.
bool IsLazyLayer(const Descriptor& layer);

}  // namespace imgfs::registry::media

#endif  // IMGFS_REGISTRY_MEDIA_TYPES_H_
