// imgfs — the two small files of an OCI image layout (image-spec `image-layout.md`):
// `oci-layout` ({"imageLayoutVersion": "1.0.0"}) and `index.json` (an image index whose
// descriptors name the images, by `org.opencontainers.image.ref.name`). The one reader and
// writer of them, for the store (cache/store.cc), local `oci:` sources and archives
// (registry/local_source.cc) and `imgfs push oci:DIR` (registry/push.cc).
//
// index.json is untrusted (a layout or archive from anywhere): it is read up to
// kMaxOciIndexBytes and decoded by registry::DecodeIndex (every descriptor checked: media
// type, digest, non-negative size, string annotations); anything else is Corrupt naming
// "index.json".
//
// Thread-safety: pure functions; the directory functions are not safe against concurrent
// writers of the same layout (the store serialises them with its index.lock).
#ifndef IMGFS_REGISTRY_OCI_LAYOUT_H_
#define IMGFS_REGISTRY_OCI_LAYOUT_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "base/status.h"
#include "registry/manifest.h"

namespace imgfs::registry {

inline constexpr std::string_view kOciLayoutFile = "oci-layout";
inline constexpr std::string_view kOciIndexFile = "index.json";
// The annotation that names an image of a layout (image-spec annotations.md).
inline constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";
// Largest oci-layout or index.json read. An entry is a few hundred bytes, so 16 MiB holds
// tens of thousands of names, far beyond any real layout, while a hostile one cannot make
// imgfs read and parse an arbitrary amount.
inline constexpr size_t kMaxOciIndexBytes = 16u << 20;

// The content of a new oci-layout file.
std::string EncodeOciLayoutFile();
// OK for an oci-layout file: a JSON object with a string "imageLayoutVersion".
// Corrupt otherwise.
Status CheckOciLayoutFile(std::string_view bytes);

// index.json bytes → Index (see above). Corrupt when larger than kMaxOciIndexBytes.
Result<Index> DecodeOciIndex(std::string_view bytes);
// Index → index.json bytes (mediaType set to the OCI index type when empty).
std::string EncodeOciIndex(Index index);

// Makes `index` name `manifest` `ref_name`: entries already carrying that name are dropped,
// `manifest` is appended with the annotation ("" = appended without a name).
void NameInOciIndex(Index* index, Descriptor manifest, const std::string& ref_name);

// On a layout directory DIR:
// Creates DIR/oci-layout and an empty DIR/index.json where missing; an existing oci-layout
// must pass CheckOciLayoutFile. DIR itself must exist.
Status InitOciLayout(const std::string& dir);
// DIR/index.json decoded; NotFound when it does not exist.
Result<Index> ReadOciIndex(const std::string& dir);
// Replaces DIR/index.json atomically (temporary file + rename).
Status WriteOciIndex(const std::string& dir, Index index);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_OCI_LAYOUT_H_
