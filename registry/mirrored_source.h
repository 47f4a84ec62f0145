// imgfs — MirroredSource: one image repository reachable at several endpoints (the mirrors
// registries.conf lists, then the registry itself; registry/pull_endpoints.h), as one
// BlobSource. Pulls (manifests, whole blobs) and lazy reads (ranges) use the same order.
//
// Order and fallback:
//  - Every call starts at the current endpoint, initially the first. A call that fails there
//    is tried at the next endpoints in order: on any error for GetManifest, ListTags and
//    ListReferrers (a mirror may lack a tag, refuse us, or be down), and on Unavailable
//    (connection failure, 5xx after retries), NotFound (a mirror lacking a blob) and
//    PermissionDenied for blob reads. Corrupt and other errors of blob reads are returned:
//    the bytes were wrong, not missing.
//  - FetchBlob and StreamBlobRange fall back only while nothing reached the sink (the sink
//    sees each byte once, in order: the BlobSource contract); after that the endpoint's own
//    retries and resume are all there is.
//  - The endpoint that served the manifest becomes the current one (as containers/image
//    takes blobs from where the manifest came from), and an endpoint that is Unavailable
//    stops being current, so a dead mirror costs one failed attempt, not one per blob.
//  - When every endpoint failed, the error of the last one (the registry itself) is
//    returned, with what each earlier endpoint answered as context.
//
// Thread-safety: every method may be called from many threads at once (the endpoints are
// BlobSources, which are; the current index is atomic).
#ifndef IMGFS_REGISTRY_MIRRORED_SOURCE_H_
#define IMGFS_REGISTRY_MIRRORED_SOURCE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "registry/blob_source.h"

namespace imgfs::registry {

class MirroredSource : public BlobSource {
 public:
  // `endpoints` in the order to try, at least one; the last is the registry itself.
  explicit MirroredSource(std::vector<std::unique_ptr<BlobSource>> endpoints);

  Result<FetchedManifest> GetManifest(std::string_view tag_or_digest) override;
  Status FetchBlob(const Digest& digest, int64_t expected_size, const BlobSink& sink) override;
  Result<std::string> ReadBlobRange(const Digest& digest, ByteRange range) override;
  Result<std::vector<std::string>> ReadBlobRanges(const Digest& digest,
                                                  const std::vector<ByteRange>& ranges,
                                                  uint64_t* requests) override;
  Status StreamBlobRange(const Digest& digest, ByteRange range, const BlobSink& sink) override;
  bool ignores_ranges() const override;
  Result<std::vector<Descriptor>> ListReferrers(const Digest& subject,
                                                std::string_view artifact_type) override;
  Result<std::vector<std::string>> ListTags() override;
  // The registry's description, plus the mirrors: "registry R, repository P (mirrors: ...)".
  std::string Describe() const override;

  // Index of the endpoint calls start at (tests).
  size_t current() const { return current_.load(std::memory_order_relaxed); }

 private:
  // Runs `op` on the endpoints from the current one on; `fallback` says whether an error
  // moves on to the next endpoint.
  Status Try(std::string_view what, const std::function<bool(const Status&)>& fallback,
             const std::function<Status(BlobSource&, size_t index)>& op);
  // Try for a call streaming into `sink`: once a byte has reached the sink, an error is the
  // answer (the caller has consumed part of the blob), never a move to the next endpoint.
  Status TryStreaming(std::string_view what, const BlobSink& sink,
                      const std::function<Status(BlobSource&, const BlobSink&)>& op);

  const std::vector<std::unique_ptr<BlobSource>> endpoints_;
  std::atomic<size_t> current_{0};
};

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_MIRRORED_SOURCE_H_
