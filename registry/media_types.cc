// imgfs — media types (see media_types.h).
#include "registry/media_types.h"

#include <string>
#include <string_view>

#include "registry/manifest.h"

namespace imgfs::registry::media {
namespace {

// "type/subtype; param=x" -> "type/subtype" (parameters are not part of the identity).
std::string_view Essence(std::string_view media_type) {
  size_t semi = media_type.find(';');
  if (semi != std::string_view::npos) media_type = media_type.substr(0, semi);
  while (!media_type.empty() && (media_type.back() == ' ' || media_type.back() == '\t')) {
    media_type.remove_suffix(1);
  }
  while (!media_type.empty() && (media_type.front() == ' ' || media_type.front() == '\t')) {
    media_type.remove_prefix(1);
  }
  return media_type;
}

// Uncompressed Docker layers: listed by the Docker image spec, rarely seen in registries.
constexpr std::string_view kDockerLayerTar = "application/vnd.docker.image.rootfs.diff.tar";

}  // namespace

Compression LayerCompression(std::string_view media_type) {
  std::string_view t = Essence(media_type);
  if (t == kOciLayerTar || t == kOciLayerNondistTar || t == kDockerLayerTar) {
    return Compression::kNone;
  }
  if (t == kOciLayerGzip || t == kOciLayerNondistGzip || t == kDockerLayerGzip ||
      t == kDockerLayerForeignGzip) {
    return Compression::kGzip;
  }
  if (t == kOciLayerZstd || t == kOciLayerNondistZstd) return Compression::kZstd;
  return Compression::kUnknown;
}

bool IsZstdChunkedLayer(const Descriptor& layer) {
  return layer.annotations.count(std::string(kZstdChunkedPositionAnnotation)) > 0 ||
         layer.annotations.count(std::string(kZstdChunkedOldPositionAnnotation)) > 0;
}

bool IsLazyLayer(const Descriptor& layer) {
  return layer.annotations.count(std::string(kEstargzTocDigestAnnotation)) > 0 ||
         IsZstdChunkedLayer(layer);
}

}  // namespace imgfs::registry::media
