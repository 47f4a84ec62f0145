// imgfs — BlobSource: where an image's manifests and blobs come from.
//
// One interface for a remote registry repository (registry/remote_source.h) and for local
// sources: an OCI layout directory, an OCI archive and a `docker save` archive
// (registry/local_source.h). A BlobSource is bound to one repository (one image name).
//
// Contract for every implementation:
//  - GetManifest returns bytes whose digest the caller may verify; remote sources already
//    verify them against the requested digest and Docker-Content-Digest.
//  - FetchBlob streams the *whole* blob to `sink` and verifies it against `digest` before
//    returning OK; on a mismatch it returns Corrupt (the sink has then seen bad bytes: sinks
//    must write to a temporary place and only publish after OK).
//  - ReadBlobRange returns exactly the bytes [range.offset, range.end()) (shorter only at
//    the blob's end); a range cannot be verified by itself, the caller verifies what it
//    decodes.
//  - ReadBlobRanges answers several ranges at once, one string per range in the order asked,
//    each as ReadBlobRange would. The default implementation calls ReadBlobRange for each;
//    a remote source sends them as one multi-range request where the registry supports it.
//  - StreamBlobRange hands the bytes of a range to a sink as they arrive (the lazy readers'
//    streaming pass); ignores_ranges() tells them a range request costs a whole blob, so
//    they should stream instead. ListReferrers is the distribution-spec referrers API.
//    Each has a default that fits a source without the feature, so fakes and local sources
//    need not override them.
//  - Errors carry context naming the source and the digest; kUnavailable means a retry may
//    succeed, kNotFound that the thing does not exist.
//
// Thread-safety: implementations are safe to call from several threads at once.
#ifndef IMGFS_REGISTRY_BLOB_SOURCE_H_
#define IMGFS_REGISTRY_BLOB_SOURCE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/byte_range.h"
#include "base/status.h"
#include "registry/digest.h"
#include "registry/manifest.h"

namespace imgfs::registry {

struct FetchedManifest {
  std::string bytes;
  std::string media_type;  // Content-Type, or the descriptor's media type for local sources
  Digest digest;           // sha256 of bytes
};

// Receives consecutive pieces of a blob. Returning non-OK aborts the transfer.
using BlobSink = std::function<Status(std::string_view chunk)>;

class BlobSource {
 public:
  // Bytes per ReadBlobRange of the default StreamBlobRange: a bounded buffer (the whole
  // rest of a layer can be gigabytes) that still makes a local read one sequential pass.
  static constexpr uint64_t kStreamPieceBytes = 8 << 20;

  virtual ~BlobSource() = default;

  // A manifest or index by tag or by digest ("sha256:..."). For local sources "" means the
  // only/default image.
  virtual Result<FetchedManifest> GetManifest(std::string_view tag_or_digest) = 0;

  // Streams a whole blob to `sink` and verifies it (see contract above). `expected_size`
  // (-1 if unknown) lets the source reject a body of the wrong length early.
  virtual Status FetchBlob(const Digest& digest, int64_t expected_size, const BlobSink& sink) = 0;

  // Bytes [range.offset, range.end()) of a blob, unverified.
  virtual Result<std::string> ReadBlobRange(const Digest& digest, ByteRange range) = 0;

  // Bytes of each of `ranges` (any order, may overlap), unverified, one string per range as
  // ReadBlobRange would return it. When `requests` is not null it is increased by the number
  // of requests made (also when an error is returned), so callers can count round trips.
  // Default: one ReadBlobRange per non-empty range; the first error is returned.
  virtual Result<std::vector<std::string>> ReadBlobRanges(const Digest& digest,
                                                          const std::vector<ByteRange>& ranges,
                                                          uint64_t* requests) {
    std::vector<std::string> out;
    out.reserve(ranges.size());
    for (const ByteRange& range : ranges) {
      if (range.empty()) {
        out.emplace_back();
        continue;
      }
      if (requests != nullptr) ++*requests;
      IMGFS_ASSIGN_OR_RETURN(std::string bytes, ReadBlobRange(digest, range));
      out.push_back(std::move(bytes));
    }
    return out;
  }

  // Bytes [range.offset, range.end()) of a blob handed to `sink` in order as they arrive
  // (fewer when the blob ends first), unverified. A non-OK sink result stops the transfer
  // and is returned. Default: ReadBlobRange of kStreamPieceBytes at a time, one piece after
  // another; a short or empty piece is the blob's end.
  virtual Status StreamBlobRange(const Digest& digest, ByteRange range, const BlobSink& sink) {
    for (uint64_t off = range.offset; off < range.end();) {
      const ByteRange piece{off, std::min(kStreamPieceBytes, range.end() - off)};
      IMGFS_ASSIGN_OR_RETURN(std::string bytes, ReadBlobRange(digest, piece));
      if (bytes.empty()) break;
      IMGFS_RETURN_IF_ERROR(sink(bytes));
      if (bytes.size() < piece.length) break;
      off += bytes.size();
    }
    return Status::Ok();
  }

  // True when a range request of this source is answered with the whole blob, so a reader
  // should stream what it still needs rather than ask range by range. Default: false.
  virtual bool ignores_ranges() const { return false; }

  // The descriptors of the manifests that refer to `subject` (distribution-spec 1.1
  // "Listing Referrers"), of `artifact_type` when not "". Unsupported when the source has
  // no referrers API (callers fall back to the `sha256-<hex>` tag schema). Default:
  // Unsupported.
  virtual Result<std::vector<Descriptor>> ListReferrers(const Digest& subject,
                                                        std::string_view artifact_type) {
    (void)artifact_type;
    return Status::Unsupported(Describe() + " has no referrers API (subject " + subject.String() +
                               ")");
  }

  // Every tag of the repository (sorted). Unsupported for sources without tags.
  virtual Result<std::vector<std::string>> ListTags() = 0;

  // For messages: "registry 127.0.0.1:5000, repository demo/app" or "oci layout ./dir".
  virtual std::string Describe() const = 0;
};

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_BLOB_SOURCE_H_
