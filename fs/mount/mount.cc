// imgfs — preparing an image for a mount.
#include "fs/mount/mount.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/unique_fd.h"
#include "cache/chunk_store.h"
#include "cache/images.h"
#include "cache/index_store.h"
#include "fs/image_ops/index_publish.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "fs/lazy/fetcher.h"
#include "fs/lazy/indexed_fetcher.h"
#include "registry/media_types.h"

namespace imgfs::fs {
namespace {

Result<cache::ResolvedImage> ResolveOrPull(cache::Store& store, std::string_view text,
                                           const PrepareOptions& options, std::string* recorded) {
  Result<cache::ResolvedImage> resolved = cache::ResolveImage(store, text);
  if (resolved.has_value() || resolved.error().code() != StatusCode::kNotFound ||
      !options.pull_if_missing) {
    return resolved;
  }
  IMGFS_LOG(kInfo) << "image " << text << " is not in the store; pulling it";
  PullOptions pull = options.pull;
  if (options.lazy) pull.metadata_only = true;
  Puller puller(&store, pull);
  IMGFS_ASSIGN_OR_RETURN(std::vector<PulledImage> pulled, puller.Pull(text, options.progress));
  if (pulled.empty()) return Status::NotFound("pull of " + std::string(text) + " recorded nothing");
  *recorded = pulled.front().reference.String();
  return cache::ResolveImage(store, *recorded);
}

// A BlobSource that remembers the bytes of the last ranged read (the eStargz TOC member read
// by LoadEstargzIndex), so the `.prefetch.landmark` can be found without a second request.
class LastRangeSource : public registry::BlobSource {
 public:
  explicit LastRangeSource(registry::BlobSource* inner) : inner_(inner) {}
  Result<registry::FetchedManifest> GetManifest(std::string_view t) override {
    return inner_->GetManifest(t);
  }
  Status FetchBlob(const registry::Digest& d, int64_t size,
                   const registry::BlobSink& sink) override {
    return inner_->FetchBlob(d, size, sink);
  }
  Result<std::string> ReadBlobRange(const registry::Digest& d, ByteRange r) override {
    Result<std::string> out = inner_->ReadBlobRange(d, r);
    if (out.has_value()) last_ = *out;
    return out;
  }
  Result<std::vector<std::string>> ListTags() override { return inner_->ListTags(); }
  std::string Describe() const override { return inner_->Describe(); }
  const std::string& last() const { return last_; }

 private:
  registry::BlobSource* inner_;
  std::string last_;
};

// Blob offset of the eStargz `.prefetch.landmark` in the TOC member `toc_member` (already
// verified by LoadEstargzIndex), or 0 when the layer has none.
uint64_t LandmarkOffset(const std::string& toc_member, const registry::Digest& layer) {
  Result<std::string> json = ExtractEstargzTocJson(toc_member);
  if (!json.has_value()) return 0;
  Result<std::vector<toc_internal::TocRecord>> records =
      toc_internal::ParseTocJson(*json, "layer " + layer.String());
  if (!records.has_value()) return 0;
  for (const toc_internal::TocRecord& r : *records) {
    if (r.name == kEstargzPrefetchLandmark && r.has_offset) return r.offset;
  }
  return 0;
}

// The eStargz landmark offset recorded beside a stored index (0 when there is none).
uint64_t StoredLandmark(const cache::IndexStore& index_store, const registry::Digest& layer) {
  Result<uint64_t> recorded = index_store.GetLandmark(layer);
  if (recorded.has_value()) return *recorded;
  if (recorded.error().code() != StatusCode::kNotFound) {
    IMGFS_LOG(kWarning) << "ignoring the landmark record of " << layer.String() << ": "
                        << recorded.error().ToString();
  }
  return 0;
}

// The digest that verifies the TOC of eStargz / zstd:chunked layer `desc` (its toc.digest,
// or zstd:chunked manifest-checksum annotation): the key of its TOC index in the IndexStore.
// Empty when absent or not a sha256 digest (the index is then not kept).
registry::Digest TocDigestOf(const registry::Descriptor& desc) {
  const std::vector<std::string_view> keys =
      registry::media::IsZstdChunkedLayer(desc)
          ? std::vector<std::string_view>{kZstdChunkedChecksumAnnotation,
                                          kZstdChunkedOldChecksumAnnotation}
          : std::vector<std::string_view>{kEstargzTocDigestAnnotation};
  for (std::string_view key : keys) {
    auto it = desc.annotations.find(std::string(key));
    if (it == desc.annotations.end()) continue;
    Result<registry::Digest> d = registry::Digest::Parse(it->second);
    if (d.has_value() && d->algorithm() == "sha256") return std::move(d).value();
    return registry::Digest();
  }
  return registry::Digest();
}

// Whether `index`, read from the IndexStore, may serve lazy layer `desc` as `provenance`
// from `origin` (the TOC digest) / for `subject` (the image manifest). The file name is the
// lookup key; this checks the index says the same, and that it describes this blob.
bool StoredIndexFits(const LayerIndex& index, const registry::Descriptor& desc,
                     IndexProvenance provenance, const registry::Digest& origin,
                     const registry::Digest& subject) {
  if (index.layer_digest != desc.digest || index.provenance != provenance) return false;
  if (desc.size > 0 && index.compressed_size != static_cast<uint64_t>(desc.size)) return false;
  switch (provenance) {
    case IndexProvenance::kLayerBlob:
      return true;
    case IndexProvenance::kToc:
      return !origin.empty() && index.origin == origin;
    case IndexProvenance::kPublished:
      return !subject.empty() && index.subject == subject;
    case IndexProvenance::kUnverified:
      return false;
  }
  return false;
}

// The TOC index of `desc`: from the IndexStore when one was kept for the same (layer digest,
// TOC digest) pair, else fetched through `source` and kept under that pair. A TOC index is
// only as good as the TOC digest it was verified against (the blob's bytes are read by range
// and never checked against the layer digest), so a layer descriptor naming another TOC
// digest — another image's, or an attacker's claim about the same layer — never gets it.
// *landmark gets the eStargz prefetch landmark's blob offset (0 when the layer has none):
// found in the TOC when it is fetched now and then recorded beside the index
// (IndexStore::PutLandmark), so a later mount from the stored index prefetches the same
// files (e.g. after `imgfs cache prune` evicted the chunks).
Result<LayerIndex> LoadLazyIndex(const cache::IndexStore& index_store, registry::BlobSource& source,
                                 const registry::Descriptor& desc, bool* built,
                                 uint64_t* landmark) {
  const registry::Digest toc = TocDigestOf(desc);
  const cache::IndexKey key = cache::IndexKey::Toc(desc.digest, toc);
  if (!toc.empty()) {
    Result<std::string> stored = index_store.Get(key);
    if (stored.has_value()) {
      Result<LayerIndex> decoded = LayerIndex::Decode(*stored);
      if (decoded.has_value() &&
          (decoded->format == LayerFormat::kEstargz ||
           decoded->format == LayerFormat::kZstdChunked) &&
          StoredIndexFits(*decoded, desc, IndexProvenance::kToc, toc, {})) {
        if (decoded->format == LayerFormat::kEstargz) {
          *landmark = StoredLandmark(index_store, desc.digest);
        }
        return decoded;
      }
    }
  }
  LastRangeSource recording(&source);
  Result<LayerIndex> index = registry::media::IsZstdChunkedLayer(desc)
                                 ? LoadZstdChunkedIndex(source, desc, false)
                                 : LoadEstargzIndex(recording, desc, false);
  if (!index.has_value()) return index;
  index->provenance = IndexProvenance::kToc;
  index->origin = toc;
  index->subject = registry::Digest();
  if (!registry::media::IsZstdChunkedLayer(desc))
    *landmark = LandmarkOffset(recording.last(), desc.digest);
  *built = true;
  if (toc.empty()) return index;  // verified against a non-sha256 digest: used, not kept
  // The record first: a reader that sees the index also sees its landmark.
  if (*landmark > 0) {
    Status kept = index_store.PutLandmark(desc.digest, *landmark);
    if (!kept.ok()) {
      IMGFS_LOG(kWarning) << "cannot keep the prefetch landmark of " << desc.digest.String() << ": "
                          << kept.ToString();
    }
  }
  Status put = index_store.Put(key, index->Encode());
  if (!put.ok())
    IMGFS_LOG(kWarning) << "cannot keep the index of " << desc.digest.String() << ": "
                        << put.ToString();
  return index;
}

// The index to read plain layer `desc` of image manifest `subject` lazily with: the layer's
// own index when the store has one (built from its verified blob, good for any image), else
// an index published in the registry for `subject` — kept in the IndexStore under
// (layer, `subject`) by an earlier mount of this same image, or looked up once into
// *published (verified by FindPublishedIndexes) and kept so. A published index is trusted
// for this image only: a lazy mount of another image with the same layer never sees it, and
// once the blob is in the store LoadOrBuildIndex indexes the blob itself. It is kept (rather
// than looked up on every mount) so that a remount of the same image needs no request for
// it; the manifest digest pins which image it was found for, and the artifact digest is
// recorded in the index (LayerIndex::origin). nullptr when there is none or it does not fit
// the layer: the caller then fetches the layer whole (and indexes it).
std::shared_ptr<const LayerIndex> PlainLazyIndex(
    const cache::IndexStore& index_store, registry::BlobSource& source,
    const registry::Digest& subject, const registry::Descriptor& desc,
    std::optional<std::map<registry::Digest, LayerIndex>>* published) {
  auto plain = [](const LayerIndex& index) {
    return index.format == LayerFormat::kTar || index.format == LayerFormat::kTarGzip ||
           index.format == LayerFormat::kTarZstd;
  };
  auto stored = [&](const cache::IndexKey& key,
                    IndexProvenance provenance) -> std::shared_ptr<const LayerIndex> {
    Result<std::string> bytes = index_store.Get(key);
    if (!bytes.has_value()) return nullptr;
    Result<LayerIndex> decoded = LayerIndex::Decode(*bytes);
    if (!decoded.has_value() || !plain(*decoded) ||
        !StoredIndexFits(*decoded, desc, provenance, {}, subject)) {
      return nullptr;
    }
    return std::make_shared<const LayerIndex>(std::move(decoded).value());
  };
  if (auto own = stored(cache::IndexKey::LayerBlob(desc.digest), IndexProvenance::kLayerBlob)) {
    return own;
  }
  const cache::IndexKey key = cache::IndexKey::Image(desc.digest, subject);
  if (auto kept = stored(key, IndexProvenance::kPublished)) return kept;
  if (!published->has_value()) {
    registry::Digest artifact;
    Result<std::map<registry::Digest, LayerIndex>> found =
        FindPublishedIndexes(source, subject, &artifact);
    if (found.has_value()) {
      IMGFS_LOG(kInfo) << "using " << found->size() << " imgfs indexes published for "
                       << subject.String() << " (artifact " << artifact.String()
                       << "), for lazy reads of this image only";
      for (auto& [layer, index] : *found) {
        index.provenance = IndexProvenance::kPublished;
        index.origin = artifact;
        index.subject = subject;
      }
      *published = std::move(found).value();
    } else {
      if (found.error().code() == StatusCode::kNotFound) {
        IMGFS_LOG(kInfo) << "no imgfs index is published for " << subject.String()
                         << "; plain layers are fetched whole";
      } else {
        IMGFS_LOG(kWarning) << "refusing the imgfs indexes published for " << subject.String()
                            << " (" << found.error().ToString()
                            << "); plain layers are fetched whole";
      }
      published->emplace();
    }
  }
  auto it = (*published)->find(desc.digest);
  if (it == (*published)->end()) return nullptr;
  if (!plain(it->second) ||
      !StoredIndexFits(it->second, desc, IndexProvenance::kPublished, {}, subject)) {
    IMGFS_LOG(kWarning) << "the imgfs index published for layer " << desc.digest.String()
                        << " does not fit it (format or size); fetching the layer whole";
    return nullptr;
  }
  Status put = index_store.Put(key, it->second.Encode());
  if (!put.ok()) {
    IMGFS_LOG(kWarning) << "cannot keep the index of " << desc.digest.String() << ": "
                        << put.ToString();
  }
  return std::make_shared<const LayerIndex>(it->second);
}

// What the tail of a tar+gzip / tar+zstd layer without TOC annotations says it is.
enum class UnannotatedToc { kNone, kEstargz, kZstdChunked };

UnannotatedToc DetectFooter(std::string_view tail, LayerFormat format, uint64_t blob_size) {
  if (format == LayerFormat::kTarGzip) {
    Result<EstargzFooter> footer = ParseEstargzFooter(tail);
    if (footer.has_value() && footer->toc_offset < blob_size) return UnannotatedToc::kEstargz;
  } else if (format == LayerFormat::kTarZstd) {
    if (ParseZstdChunkedFooter(tail).has_value()) return UnannotatedToc::kZstdChunked;
  }
  return UnannotatedToc::kNone;
}

// A registry layer without TOC annotations: one Range request for its last bytes (lazy
// mounts only) tells an eStargz or zstd:chunked blob from a plain one.
UnannotatedToc ProbeRemoteFooter(registry::BlobSource& source, const registry::Descriptor& desc) {
  Result<LayerFormat> format = LayerFormatForMediaType(desc.media_type);
  if (!format.has_value() || desc.size <= 0) return UnannotatedToc::kNone;
  if (*format != LayerFormat::kTarGzip && *format != LayerFormat::kTarZstd) {
    return UnannotatedToc::kNone;
  }
  const uint64_t want =
      *format == LayerFormat::kTarGzip ? kEstargzFooterBytes : kZstdChunkedFooterBytes;
  const uint64_t size = static_cast<uint64_t>(desc.size);
  if (size < want) return UnannotatedToc::kNone;
  Result<std::string> tail = source.ReadBlobRange(desc.digest, ByteRange{size - want, want});
  if (!tail.has_value()) {
    IMGFS_LOG(kWarning) << "cannot read the footer of layer " << desc.digest.String() << " ("
                        << tail.error().ToString() << ")";
    return UnannotatedToc::kNone;
  }
  return DetectFooter(*tail, *format, size);
}

// Whether the stored tar+gzip blob at `path` ends with an eStargz footer (a local read).
bool LocalEstargzFooter(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.IsValid()) return false;
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < static_cast<off_t>(kEstargzFooterBytes)) return false;
  std::string tail(kEstargzFooterBytes, '\0');
  ssize_t n = ::pread(fd.get(), tail.data(), tail.size(), size - static_cast<off_t>(tail.size()));
  if (n != static_cast<ssize_t>(tail.size())) return false;
  return DetectFooter(tail, LayerFormat::kTarGzip, static_cast<uint64_t>(size)) ==
         UnannotatedToc::kEstargz;
}

// The TOC index of an eStargz / zstd:chunked layer that has no TOC digest annotation, loaded
// without verifying the TOC (--insecure-skip-toc-verify). The chunk digests it lists still
// verify every chunk. Not kept in the IndexStore: a later verified mount must not reuse it.
Result<LayerIndex> LoadUnverifiedTocIndex(registry::BlobSource& source,
                                          const registry::Descriptor& desc, UnannotatedToc kind,
                                          uint64_t* landmark) {
  if (kind == UnannotatedToc::kZstdChunked) return LoadZstdChunkedIndex(source, desc, true);
  LastRangeSource recording(&source);
  Result<LayerIndex> index = LoadEstargzIndex(recording, desc, true);
  if (index.has_value()) *landmark = LandmarkOffset(recording.last(), desc.digest);
  return index;
}

Status FetchWholeBlob(cache::Store& store, registry::BlobSource& source,
                      const registry::Descriptor& desc) {
  IMGFS_ASSIGN_OR_RETURN(cache::BlobWriter writer,
                         store.NewBlobWriter(desc.digest, desc.size > 0 ? desc.size : -1));
  IMGFS_RETURN_IF_ERROR(
      source.FetchBlob(desc.digest, desc.size > 0 ? desc.size : -1,
                       [&](std::string_view chunk) { return writer.Write(chunk); }));
  return writer.Commit();
}

}  // namespace

Result<PreparedImage> PrepareImage(cache::Store& store, std::string_view text,
                                   const PrepareOptions& options) {
  std::string recorded;
  IMGFS_ASSIGN_OR_RETURN(cache::ResolvedImage image,
                         ResolveOrPull(store, text, options, &recorded));
  PreparedImage out;
  out.manifest_digest = image.manifest.digest;
  out.image_id = image.id;
  if (image.by_reference.has_value()) out.reference = image.by_reference->reference;
  if (out.reference.empty()) out.reference = recorded;

  const registry::Manifest& manifest = image.decoded;
  const std::vector<registry::Digest>& diff_ids = image.config.diff_ids;
  if (!diff_ids.empty() && diff_ids.size() != manifest.layers.size()) {
    return Status::Corrupt("image " + std::string(text) + ": manifest has " +
                           std::to_string(manifest.layers.size()) + " layers but the config " +
                           std::to_string(diff_ids.size()) + " diff_ids");
  }

  cache::IndexStore index_store(store.root());
  // Lazy mounts: one registry source for every layer, one chunk store.
  std::shared_ptr<registry::BlobSource> source;
  std::shared_ptr<cache::ChunkStore> chunk_store;
  auto ensure_source = [&]() -> Status {
    if (source != nullptr) return Status::Ok();
    if (out.reference.empty()) {
      return Status::Unsupported("image " + std::string(text) +
                                 " has no registry reference to fetch its layers from");
    }
    PullOptions pull = options.pull;
    IMGFS_ASSIGN_OR_RETURN(std::unique_ptr<registry::BlobSource> opened,
                           OpenRegistrySource(out.reference, pull));
    source = std::move(opened);
    chunk_store = std::make_shared<cache::ChunkStore>(store.root());
    return Status::Ok();
  };
  // Indexes published in the registry for this manifest (looked up at the first plain layer).
  std::optional<std::map<registry::Digest, LayerIndex>> published;
  LazyLayerReader::Options lazy_options;
  if (options.fetch_timeout_seconds > 0) {
    lazy_options.fetch_timeout = std::chrono::milliseconds(
        static_cast<int64_t>(options.fetch_timeout_seconds * 1000.0 + 0.5));
  }
  // Background work started once every layer is prepared (the TOC fetches come first).
  std::vector<std::pair<LazyLayerReader*, uint64_t>> prefetch;  // reader, landmark offset
  std::vector<IndexedRemoteData*> indexed_prefetch;             // plain layers (prefetch=all)
  std::vector<MountedLayer> layers;
  std::vector<const LayerIndex*> views;
  layers.reserve(manifest.layers.size());
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const registry::Descriptor& desc = manifest.layers[i];
    std::string blob = store.BlobPath(desc.digest);
    if (!store.HasBlob(desc.digest) && options.lazy) {
      auto decorate = [&](const Status& st) {
        return st.WithContext("image " + std::string(text) + ", layer " + std::to_string(i + 1) +
                              " (" + desc.digest.String() + ")");
      };
      Status opened = ensure_source();
      if (!opened.ok()) return decorate(opened);
      // A plain-looking layer with no index: its footer may still say eStargz/zstd:chunked.
      std::shared_ptr<const LayerIndex> plain;
      UnannotatedToc unannotated = UnannotatedToc::kNone;
      if (!registry::media::IsLazyLayer(desc)) {
        plain = PlainLazyIndex(index_store, *source, image.manifest.digest, desc, &published);
        if (plain == nullptr) unannotated = ProbeRemoteFooter(*source, desc);
      }
      const bool unverified =
          unannotated != UnannotatedToc::kNone && options.insecure_skip_toc_verify;
      if (unannotated != UnannotatedToc::kNone && !unverified) {
        IMGFS_LOG(kWarning) << "layer " << desc.digest.String() << " is "
                            << (unannotated == UnannotatedToc::kEstargz
                                    ? "eStargz without a toc.digest annotation"
                                    : "zstd:chunked without manifest-position/checksum "
                                      "annotations")
                            << ": fetching it whole to verify it (--insecure-skip-toc-verify "
                               "mounts it lazily, unverified)";
      }
      if (registry::media::IsLazyLayer(desc) || unverified) {
        bool built = false;
        uint64_t landmark = 0;
        if (unverified) {
          IMGFS_LOG(kWarning) << "layer " << desc.digest.String()
                              << ": --insecure-skip-toc-verify: its TOC is not verified (no "
                                 "annotation to check it against), so neither are its file "
                                 "table and the chunk digests read data is checked against";
          built = true;
        }
        Result<LayerIndex> index =
            unverified ? LoadUnverifiedTocIndex(*source, desc, unannotated, &landmark)
                       : LoadLazyIndex(index_store, *source, desc, &built, &landmark);
        if (!index.has_value()) return decorate(index.error());
        if (built && !unverified) ++out.indexes_built;  // an unverified TOC is never stored
        auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
        LazyLayerReader::Options layer_options = lazy_options;
        if (built) {
          // The TOC (and footer) sit after the last chunk; the mount read them in two requests
          // (three when the footer probe found the layer unannotated).
          uint64_t chunks_end = 0;
          for (const Chunk& c : shared->chunks) {
            chunks_end = std::max(chunks_end, c.blob_offset + c.blob_length);
          }
          const uint64_t blob_size = desc.size > 0 ? static_cast<uint64_t>(desc.size) : 0;
          layer_options.toc_bytes = blob_size > chunks_end ? blob_size - chunks_end : 0;
          layer_options.toc_requests = unverified ? 3 : 2;
        }
        auto reader = std::make_unique<LazyLayerReader>(source, shared, chunk_store, layer_options);
        prefetch.emplace_back(reader.get(), landmark);
        layers.push_back(MountedLayer{shared, std::move(reader)});
        ++out.lazy_layers;
        continue;
      }
      // A plain tar / tar+gzip / tar+zstd layer: served by Range requests through its
      // index when the store has one or the registry has one published for this manifest.
      if (plain != nullptr) {
        IndexedRemoteData::Options indexed_options;
        static_cast<LazyFetchOptions&>(indexed_options) = lazy_options;  // the shared policy
        // An index the layer's own tar headers contradict is dropped from the store too, so
        // the next mount does not serve it again.
        if (Result<cache::IndexKey> key = StoreKeyOf(*plain); key.has_value()) {
          indexed_options.on_index_mismatch = [index_store, key = *key](const Status& why) {
            Status removed = index_store.Remove(key);
            IMGFS_LOG(kWarning) << "stored index " << index_store.PathFor(key)
                                << " removed: " << why.ToString()
                                << (removed.ok() ? "" : " (" + removed.ToString() + ")");
          };
        }
        Result<std::unique_ptr<IndexedRemoteData>> data = IndexedRemoteData::Create(
            source, plain, store.Subdir("tmp"), chunk_store, indexed_options);
        if (data.has_value()) {
          indexed_prefetch.push_back(data->get());
          layers.push_back(MountedLayer{plain, std::move(data).value()});
          ++out.lazy_layers;
          continue;
        }
        IMGFS_LOG(kWarning) << "layer " << desc.digest.String() << ": cannot read it lazily ("
                            << data.error().ToString() << "); fetching it whole";
      }
      Status fetched = FetchWholeBlob(store, *source, desc);
      if (!fetched.ok()) return decorate(fetched);
    }
    if (!store.HasBlob(desc.digest)) {
      return Status::NotFound("image " + std::string(text) + ": layer " + desc.digest.String() +
                              " is not in the store; pull the image again");
    }
    IndexOptions index_options = options.index;
    index_options.expected_digest = desc.digest;
    if (i < diff_ids.size()) index_options.expected_diff_id = diff_ids[i];
    // Only for the log line: a stat, not a second read of the index.
    bool existed = ::access(index_store.PathFor(desc.digest).c_str(), F_OK) == 0;
    Result<LayerIndex> index = LoadOrBuildIndex(index_store, blob, desc.media_type, index_options);
    if (!index.has_value()) {
      return index.error().WithContext("image " + std::string(text) + ", layer " +
                                       std::to_string(i + 1) + " (" + desc.digest.String() + ")");
    }
    if (!existed) ++out.indexes_built;
    // An eStargz blob is also a valid tar+gzip and is indexed as one; its TOC annotation
    // says what it is, so the merge hides the converter's landmark and TOC files.
    // Without the annotation, the blob's own footer (a local read) says so.
    if (index->format == LayerFormat::kTarGzip &&
        (desc.annotations.count(std::string(kEstargzTocDigestAnnotation)) > 0 ||
         LocalEstargzFooter(blob))) {
      index->format = LayerFormat::kEstargz;
    }
    auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
    Result<std::unique_ptr<LayerReader>> reader = LayerReader::Open(blob, shared);
    if (!reader.has_value()) {
      return reader.error().WithContext("image " + std::string(text) + ", layer " +
                                        desc.digest.String());
    }
    layers.push_back(
        MountedLayer{shared, std::make_unique<LocalLayerData>(std::move(reader).value())});
  }
  views.reserve(layers.size());
  for (const MountedLayer& l : layers) views.push_back(l.index.get());
  IMGFS_ASSIGN_OR_RETURN(NodeTable table, MergeLayers(views, &out.merge_stats));
  IMGFS_LOG(kInfo) << "image " << text << ": " << layers.size() << " layers, "
                   << table.inode_count() << " inodes, " << out.indexes_built << " indexes built, "
                   << out.lazy_layers << " lazy layers";
  out.filesystem = std::make_unique<ImageFilesystem>(std::move(table), std::move(layers));
  for (auto& [reader, landmark] : prefetch) {
    if (options.prefetch == PrepareOptions::Prefetch::kAll) {
      reader->StartBackgroundFetch();
    } else if (options.prefetch == PrepareOptions::Prefetch::kLandmarks && landmark > 0) {
      reader->PrefetchBefore(landmark);
    }
  }
  if (options.prefetch == PrepareOptions::Prefetch::kAll) {
    for (IndexedRemoteData* data : indexed_prefetch) data->StartBackgroundFetch();
  }
  return out;
}

}  // namespace imgfs::fs
