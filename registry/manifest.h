// imgfs — OCI / Docker manifests, indexes and image configs: decoding, encoding and
// platform selection.
//
// Decoding never throws: every document is parsed with nlohmann's non-throwing parser and
// one function per document type turns errors into Corrupt/Unsupported Status values.
// Unknown fields are ignored; the raw bytes are kept by callers (digests are over bytes).
// Thread-safety: value types and pure functions.
#ifndef IMGFS_REGISTRY_MANIFEST_H_
#define IMGFS_REGISTRY_MANIFEST_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "registry/digest.h"

namespace imgfs::registry {

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64"
  std::string variant;       // "v8", may be empty
  std::string os_version;

  // "linux/amd64" or "linux/arm64/v8".
  std::string String() const;
  // Parses "os/arch[/variant]"; InvalidArgument otherwise.
  static Result<Platform> Parse(std::string_view text);
  // The platform of this host (GOOS/GOARCH naming: amd64, arm64, arm + variant, ...).
  static Platform Host();
  bool operator==(const Platform&) const = default;
};

struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::vector<std::string> urls;
  std::optional<Platform> platform;  // in indexes
  std::string artifact_type;

  bool operator==(const Descriptor&) const = default;
};

// An image manifest (OCI image manifest or Docker v2 schema 2).
struct Manifest {
  int schema_version = 2;
  std::string media_type;  // as declared in the document (may be empty for OCI)
  std::string artifact_type;
  Descriptor config;
  std::vector<Descriptor> layers;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;

  bool operator==(const Manifest&) const = default;
};

// An OCI image index or Docker manifest list.
struct Index {
  int schema_version = 2;
  std::string media_type;
  std::vector<Descriptor> manifests;
  std::map<std::string, std::string> annotations;

  bool operator==(const Index&) const = default;
};

enum class DocumentKind { kManifest, kIndex };

// Tells a manifest from an index, using the declared `mediaType` field, the Content-Type the
// registry sent (may be empty) and, for OCI documents without mediaType, the shape
// (`manifests` vs `layers`). Schema 1 → Unsupported ("schema 1 manifests are not supported;
// re-push the image with a current tool"); not JSON → Corrupt.
Result<DocumentKind> ClassifyDocument(std::string_view bytes, std::string_view content_type);

// Most layers an image manifest may list. Docker refuses images deeper than 127 layers
// (overlay2's "max depth exceeded"), so no image that runs elsewhere is refused; each layer
// of a mount costs an fd, a reader and up to 4 fetch threads, which a 4 MiB manifest of
// 20 000 layers would multiply into fd and thread exhaustion (issue 9, finding 25).
inline constexpr size_t kMaxImageLayers = 127;

// A manifest's config and layer descriptors must have a size > 0 (a size-less descriptor
// would mean "download without a bound"), and the config at most kMaxConfigBytes: both are
// Corrupt naming the descriptor, refused before anything is downloaded. Unsupported for a
// manifest listing more than kMaxImageLayers layers.
Result<Manifest> DecodeManifest(std::string_view bytes);

// Largest image config accepted. Real configs are a few KiB (history and env of images with
// hundreds of layers stay below 100 KiB); 8 MiB leaves ample room while a hostile registry
// cannot make imgfs download and parse an arbitrary amount as "config".
inline constexpr int64_t kMaxConfigBytes = 8 << 20;
Result<Index> DecodeIndex(std::string_view bytes);
// Canonical JSON encodings (used when writing manifests, e.g. for commits and local layouts).
std::string EncodeManifest(const Manifest& m);
std::string EncodeIndex(const Index& idx);

// Picks the manifest for `want` from an index: exact os/arch match, variant match when
// `want.variant` is set (else prefers the arm default variant / no variant), skipping
// attestation manifests (`vnd.docker.reference.type` annotations, unknown/unknown).
// NotFound naming the available platforms when nothing matches.
Result<Descriptor> SelectPlatform(const Index& index, const Platform& want);

// One entry of an image config's "history" (image-spec config.md): how a layer (or, with
// empty_layer, a metadata-only step) was made.
struct HistoryEntry {
  std::string created;  // RFC 3339, may be empty
  std::string created_by;
  std::string author;
  std::string comment;
  bool empty_layer = false;  // true: the step added no layer
};

// The parts of an image config (OCI image-spec config.md) that imgfs uses; `raw` keeps the
// whole document for `inspect`.
struct ImageConfig {
  std::string created;  // RFC 3339, may be empty
  std::string author;
  std::string architecture;
  std::string os;
  std::string variant;
  std::vector<std::string> env;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string working_dir;
  std::string user;
  std::map<std::string, std::string> labels;
  std::vector<Digest> diff_ids;
  // "history", oldest first. Read leniently (it describes, never changes, the image): a
  // malformed entry or field is skipped rather than failing the config.
  std::vector<HistoryEntry> history;
  std::string raw;  // the config bytes as fetched
};

Result<ImageConfig> DecodeImageConfig(std::string_view bytes);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_MANIFEST_H_
