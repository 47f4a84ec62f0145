// imgfs — publishing imgfs layer indexes as an OCI artifact (see index_publish.h).
#include "fs/image_ops/index_publish.h"

#include <algorithm>
#include <optional>
#include <thread>
#include <utility>

#include "base/log.h"
#include "base/thread.h"
#include "cache/index_store.h"
#include "fs/image_ops/image_convert.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/index_builder.h"
#include "fs/layer/zstd_buffer.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "registry/media_types.h"
#include "registry/remote_source.h"

namespace imgfs::fs {
namespace {

// image-spec manifest.md "Guidance for an Empty Descriptor".
constexpr std::string_view kEmptyJson = "{}";
// A published index larger than this is not believable (a 100k-file layer's is ~10 MB).
constexpr int64_t kMaxPublishedIndexBytes = 256 << 20;
// zstd level of a published index: pushed once, fetched by every lazy mount. Level 9 is
// within 2 % of level 19 on real indexes and ~20x faster.
constexpr int kPublishedIndexZstdLevel = 9;
// Index blobs fetched at once by FindPublishedIndexes.
constexpr size_t kParallelIndexFetches = 8;

bool HasToc(const registry::Descriptor& d) {
  for (std::string_view key : {kEstargzTocDigestAnnotation, kZstdChunkedPositionAnnotation,
                               kZstdChunkedOldPositionAnnotation}) {
    if (d.annotations.count(std::string(key)) > 0) return true;
  }
  return false;
}

class MapReader : public registry::PushBlobReader {
 public:
  explicit MapReader(const std::map<registry::Digest, std::string>* blobs) : blobs_(blobs) {}
  bool Has(const registry::Digest& digest) override { return blobs_->count(digest) > 0; }
  Result<std::string> ReadAt(const registry::Digest& digest, uint64_t offset,
                             size_t length) override {
    auto it = blobs_->find(digest);
    if (it == blobs_->end()) return Status::NotFound("no blob " + digest.String());
    if (offset >= it->second.size()) return std::string();
    return it->second.substr(offset, length);
  }

 private:
  const std::map<registry::Digest, std::string>* blobs_;
};

}  // namespace

Result<ImageIndexes> BuildImageIndexes(cache::Store& store, std::string_view text,
                                       const PullOptions& pull, bool pull_if_missing) {
  IMGFS_ASSIGN_OR_RETURN(cache::ResolvedImage image,
                         ResolveOrPullImage(store, text, pull, pull_if_missing));
  ImageIndexes out;
  if (image.by_reference.has_value()) out.reference = image.by_reference->reference;
  out.manifest = image.manifest;
  cache::IndexStore index_store(store.root());
  const std::vector<registry::Descriptor>& layers = image.decoded.layers;
  for (size_t i = 0; i < layers.size(); ++i) {
    const registry::Descriptor& desc = layers[i];
    if (HasToc(desc) || !LayerFormatForMediaType(desc.media_type).has_value()) {
      ++out.skipped;
      continue;
    }
    IndexOptions options;
    options.expected_digest = desc.digest;
    if (i < image.config.diff_ids.size()) options.expected_diff_id = image.config.diff_ids[i];
    Result<LayerIndex> index =
        LoadOrBuildIndex(index_store, store.BlobPath(desc.digest), desc.media_type, options);
    if (!index.has_value()) {
      return index.error().WithContext("indexing layer " + std::to_string(i + 1) + " (" +
                                       desc.digest.String() + ") of " + std::string(text));
    }
    ImageIndexes::Layer l;
    l.layer = desc;
    l.encoded = index->Encode();
    l.files = index->entries.size();
    l.checkpoints = index->checkpoints.size();
    out.layers.push_back(std::move(l));
  }
  return out;
}

IndexArtifact MakeIndexArtifact(const ImageIndexes& indexes) {
  IndexArtifact a;
  registry::Manifest& m = a.manifest;
  m.schema_version = 2;
  m.media_type = std::string(registry::media::kOciManifest);
  m.artifact_type = std::string(kImgfsIndexArtifactType);
  m.config.media_type = std::string(registry::media::kOciEmpty);
  m.config.digest = registry::Digest::Sha256Of(kEmptyJson);
  m.config.size = static_cast<int64_t>(kEmptyJson.size());
  a.blobs[m.config.digest] = std::string(kEmptyJson);
  for (const ImageIndexes::Layer& l : indexes.layers) {
    registry::Descriptor d;
    Result<std::string> packed = ZstdAll(l.encoded, kPublishedIndexZstdLevel);
    const bool zstd = packed.has_value();
    if (!zstd) IMGFS_LOG(kWarning) << packed.error().ToString();
    // (zstd fails only without memory: the plain encoding is published then.)
    std::string blob = zstd ? std::move(packed).value() : std::string(l.encoded);
    d.media_type = std::string(zstd ? kImgfsLayerIndexZstdMediaType : kImgfsLayerIndexMediaType);
    d.digest = registry::Digest::Sha256Of(blob);
    d.size = static_cast<int64_t>(blob.size());
    d.annotations[std::string(kImgfsIndexLayerAnnotation)] = l.layer.digest.String();
    a.blobs[d.digest] = std::move(blob);
    m.layers.push_back(std::move(d));
  }
  registry::Descriptor subject = indexes.manifest;
  subject.annotations.clear();  // the store's index.json annotations are not the image's
  subject.platform.reset();
  m.subject = subject;
  a.manifest_bytes = registry::EncodeManifest(m);
  a.descriptor.media_type = m.media_type;
  a.descriptor.digest = registry::Digest::Sha256Of(a.manifest_bytes);
  a.descriptor.size = static_cast<int64_t>(a.manifest_bytes.size());
  a.descriptor.artifact_type = m.artifact_type;
  return a;
}

std::string ReferrersTag(const registry::Digest& subject) {
  return subject.algorithm() + "-" + subject.hex();
}

Result<registry::Digest> PushImageIndexes(const ImageIndexes& indexes,
                                          const std::string& registry_host,
                                          const std::string& repository,
                                          const registry::PushOptions& options,
                                          registry::BlobSource& source) {
  if (indexes.layers.empty()) {
    return Status::InvalidArgument("the image has no layer that needs an imgfs index");
  }
  IndexArtifact artifact = MakeIndexArtifact(indexes);
  registry::ImageToPush image;
  image.manifest_bytes = artifact.manifest_bytes;
  image.manifest_media_type = artifact.manifest.media_type;
  image.blobs.push_back(artifact.manifest.config);
  for (const registry::Descriptor& d : artifact.manifest.layers) image.blobs.push_back(d);
  MapReader reader(&artifact.blobs);
  registry::Pusher pusher(registry_host, repository, options);
  IMGFS_ASSIGN_OR_RETURN(registry::PushReport report, pusher.Push(image, "", reader));

  // Referrers tag schema (distribution-spec "Unavailable Referrers API"): read the index the
  // tag names, replace any earlier imgfs index, add this one, write it back.
  const std::string tag = ReferrersTag(indexes.manifest.digest);
  registry::Index referrers;
  referrers.schema_version = 2;
  referrers.media_type = std::string(registry::media::kOciIndex);
  Result<registry::FetchedManifest> current = source.GetManifest(tag);
  if (current.has_value()) {
    IMGFS_ASSIGN_OR_RETURN(registry::Index existing, registry::DecodeIndex(current->bytes));
    for (registry::Descriptor& d : existing.manifests) {
      if (d.artifact_type != kImgfsIndexArtifactType) referrers.manifests.push_back(std::move(d));
    }
  } else if (current.error().code() != StatusCode::kNotFound) {
    return current.error().WithContext("reading the referrers tag " + tag);
  }
  referrers.manifests.push_back(artifact.descriptor);
  IMGFS_RETURN_IF_ERROR(pusher.PutManifest(tag, registry::EncodeIndex(referrers),
                                           std::string(registry::media::kOciIndex)));
  return report.manifest_digest;
}

Result<std::vector<registry::Descriptor>> ListImgfsReferrers(registry::BlobSource& source,
                                                             const registry::Digest& subject) {
  // The referrers tag is asked for beside the referrers API, not after it: a registry without
  // the API (distribution 2.x) then costs one round trip, not two. The API's answer wins.
  std::optional<Result<registry::FetchedManifest>> tagged;
  std::thread tag_thread = StartThread(
      "imgfs-referrers",
      [&] {
        tagged = source.GetManifest(ReferrersTag(subject));
        return Status::Ok();
      },
      [&tagged](const Status& st) { tagged = st; });
  Result<std::vector<registry::Descriptor>> api =
      source.ListReferrers(subject, kImgfsIndexArtifactType);
  tag_thread.join();
  if (api.has_value()) return api;
  if (api.error().code() != StatusCode::kUnsupported) return api.error();
  IMGFS_LOG(kDebug) << api.error().ToString() << "; using the referrers tag";
  if (!tagged.has_value()) return Status::Internal("the referrers tag was not read");
  Result<registry::FetchedManifest>& listed = *tagged;
  if (!listed.has_value()) {
    if (listed.error().code() == StatusCode::kNotFound) return std::vector<registry::Descriptor>{};
    return listed.error();
  }
  IMGFS_ASSIGN_OR_RETURN(registry::Index referrers, registry::DecodeIndex(listed->bytes));
  std::vector<registry::Descriptor> out;
  for (registry::Descriptor& d : referrers.manifests) {
    if (d.artifact_type == kImgfsIndexArtifactType) out.push_back(std::move(d));
  }
  return out;
}

Result<std::map<registry::Digest, LayerIndex>> FindPublishedIndexes(registry::BlobSource& source,
                                                                    const registry::Digest& subject,
                                                                    registry::Digest* artifact) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<registry::Descriptor> referrers,
                         ListImgfsReferrers(source, subject));
  for (const registry::Descriptor& d : referrers) {
    if (d.artifact_type != kImgfsIndexArtifactType) continue;
    IMGFS_ASSIGN_OR_RETURN(registry::FetchedManifest fetched,
                           source.GetManifest(d.digest.String()));
    IMGFS_RETURN_IF_ERROR(d.digest.Verify(fetched.bytes));
    IMGFS_ASSIGN_OR_RETURN(registry::Manifest m, registry::DecodeManifest(fetched.bytes));
    if (m.artifact_type != kImgfsIndexArtifactType || !m.subject.has_value() ||
        m.subject->digest != subject) {
      continue;
    }
    // What to fetch, checked before anything is.
    struct Wanted {
      const registry::Descriptor* blob;
      registry::Digest layer;
      bool zstd;
    };
    std::vector<Wanted> wanted;
    for (const registry::Descriptor& l : m.layers) {
      const bool zstd = l.media_type == kImgfsLayerIndexZstdMediaType;
      if (!zstd && l.media_type != kImgfsLayerIndexMediaType) continue;
      if (l.size < 0 || l.size > kMaxPublishedIndexBytes) {
        return Status::Corrupt("published index " + l.digest.String() + " has an absurd size");
      }
      auto named = l.annotations.find(std::string(kImgfsIndexLayerAnnotation));
      if (named == l.annotations.end()) {
        return Status::Corrupt("published index " + l.digest.String() + " names no layer");
      }
      IMGFS_ASSIGN_OR_RETURN(registry::Digest layer, registry::Digest::Parse(named->second));
      wanted.push_back(Wanted{&l, layer, zstd});
    }
    // Each blob is fetched and decoded on a thread of its own (at most kParallelIndexFetches
    // at once): one round trip for all, and a layer decodes while the others still arrive.
    std::vector<std::optional<Result<LayerIndex>>> got(wanted.size());
    auto fetch = [&source, &wanted, &got](size_t i) -> Status {
      const Wanted& w = wanted[i];
      std::string bytes;
      Status read =
          source.FetchBlob(w.blob->digest, w.blob->size, [&bytes](std::string_view piece) {
            bytes.append(piece);
            return Status::Ok();
          });
      if (!read.ok()) {
        got[i] = read;
        return Status::Ok();
      }
      if (w.zstd) {
        Result<std::string> plain =
            UnzstdAll(bytes, kMaxPublishedIndexBytes, "published index " + w.blob->digest.String());
        if (!plain.has_value()) {
          got[i] = plain.error();
          return Status::Ok();
        }
        bytes = std::move(*plain);
      }
      got[i] = LayerIndex::Decode(bytes);
      return Status::Ok();
    };
    for (size_t first = 0; first < wanted.size(); first += kParallelIndexFetches) {
      const size_t end = std::min(wanted.size(), first + kParallelIndexFetches);
      std::vector<std::thread> threads;
      for (size_t i = first; i < end; ++i) {
        threads.push_back(StartThread(
            "imgfs-index", [&fetch, i] { return fetch(i); },
            [&got, i](const Status& st) { got[i] = st; }));
      }
      for (std::thread& t : threads) t.join();
    }
    std::map<registry::Digest, LayerIndex> out;
    for (size_t i = 0; i < wanted.size(); ++i) {
      if (!got[i].has_value()) return Status::Internal("a published index was not fetched");
      IMGFS_ASSIGN_OR_RETURN(LayerIndex index, std::move(*got[i]));
      if (index.layer_digest != wanted[i].layer) {
        return Status::Corrupt("published index " + wanted[i].blob->digest.String() +
                               " describes layer " + index.layer_digest.String() + ", not " +
                               wanted[i].layer.String());
      }
      out[wanted[i].layer] = std::move(index);
    }
    if (artifact != nullptr) *artifact = d.digest;
    return out;
  }
  return Status::NotFound("no imgfs index is published for " + subject.String());
}

}  // namespace imgfs::fs
