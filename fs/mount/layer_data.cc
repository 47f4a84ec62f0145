// imgfs — opening the layers of an image for a mount.
#include "fs/mount/layer_data.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/thread.h"
#include "base/unique_fd.h"
#include "fs/image_ops/index_publish.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/layer_reader.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "registry/media_types.h"

namespace imgfs::fs {
namespace {

// Blocks a local layer decodes ahead of a sequential reader (LayerReader::Options): 1 MiB.
constexpr size_t kDecodeAheadBlocks = 4;

}  // namespace
namespace {

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
// load->landmark gets the eStargz prefetch landmark's blob offset (0 when the layer has
// none): found in the TOC when it is fetched now and then recorded beside the index
// (IndexStore::PutLandmark), so a later mount from the stored index prefetches the same
// files (e.g. after `imgfs cache prune` evicted the chunks).
// The files are written without fsync (the mount waits for this index), their paths added to
// *unsynced for a later IndexStore::Sync. *encoding: EncodedIndexDigest of the stored index
// (read or written now); empty when none is kept.
Result<LayerIndex> LoadLazyIndex(const cache::IndexStore& index_store, registry::BlobSource& source,
                                 const registry::Descriptor& desc, bool* built,
                                 EstargzTocLoad* load, std::vector<std::string>* unsynced,
                                 registry::Digest* encoding) {
  const registry::Digest toc = TocDigestOf(desc);
  const cache::IndexKey key = cache::IndexKey::Toc(desc.digest, toc);
  if (!toc.empty()) {
    // Mapped, not read: the decoder copies what it keeps (a read would also clear fresh pages
    // for the whole file first).
    Result<MappedFile> stored = index_store.Map(key);
    if (stored.has_value()) {
      Result<LayerIndex> decoded = LayerIndex::Decode(stored->bytes());
      if (decoded.has_value() &&
          (decoded->format == LayerFormat::kEstargz ||
           decoded->format == LayerFormat::kZstdChunked) &&
          StoredIndexFits(*decoded, desc, IndexProvenance::kToc, toc, {})) {
        if (decoded->format == LayerFormat::kEstargz) {
          load->landmark = StoredLandmark(index_store, desc.digest);
        }
        *encoding = EncodedIndexDigest(stored->bytes());
        return decoded;
      }
    }
  }
  Result<LayerIndex> index = registry::media::IsZstdChunkedLayer(desc)
                                 ? LoadZstdChunkedIndex(source, desc, false)
                                 : LoadEstargzIndex(source, desc, false, load);
  if (!index.has_value()) return index;
  index->provenance = IndexProvenance::kToc;
  index->origin = toc;
  index->subject = registry::Digest();
  *built = true;
  if (toc.empty()) return index;  // verified against a non-sha256 digest: used, not kept
  // The record first: a reader that sees the index also sees its landmark.
  if (load->landmark > 0) {
    Status kept = index_store.PutLandmark(desc.digest, load->landmark, Durability::kUnsynced);
    if (kept.ok()) unsynced->push_back(index_store.LandmarkPathFor(desc.digest));
    if (!kept.ok()) {
      IMGFS_LOG(kWarning) << "cannot keep the prefetch landmark of " << desc.digest.String() << ": "
                          << kept.ToString();
    }
  }
  const std::string encoded = index->Encode();
  Status put = index_store.Put(key, encoded, Durability::kUnsynced);
  if (put.ok()) {
    unsynced->push_back(index_store.PathFor(key));
    *encoding = EncodedIndexDigest(encoded);
  } else {
    IMGFS_LOG(kWarning) << "cannot keep the index of " << desc.digest.String() << ": "
                        << put.ToString();
  }
  return index;
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
                                          EstargzTocLoad* load) {
  if (kind == UnannotatedToc::kZstdChunked) return LoadZstdChunkedIndex(source, desc, true);
  return LoadEstargzIndex(source, desc, true, load);
}

// "image TEXT, layer N (sha256:…)": the context of every error about one layer.
std::string LayerContext(std::string_view image, size_t position,
                         const registry::Descriptor& desc) {
  return "image " + std::string(image) + ", layer " + std::to_string(position + 1) + " (" +
         desc.digest.String() + ")";
}

// The CPUs this process may run on (its affinity mask), at least 1.
size_t UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return static_cast<size_t>(std::max(1, CPU_COUNT(&set)));
}

bool PlainFormat(const LayerIndex& index) {
  return index.format == LayerFormat::kTar || index.format == LayerFormat::kTarGzip ||
         index.format == LayerFormat::kTarZstd;
}

}  // namespace

LayerOpener::LayerOpener(LayerOpenerOptions options)
    : options_(std::move(options)), index_store_(options_.store->root()) {}

Result<OpenedLayer> LayerOpener::OpenLayerData(size_t position, const registry::Descriptor& desc) {
  if (!options_.store->HasBlob(desc.digest)) {
    IMGFS_ASSIGN_OR_RETURN(std::optional<OpenedLayer> remote, OpenMissing(position, desc));
    if (remote.has_value()) return std::move(remote).value();
    // Fetched whole: now a local layer.
    Result<OpenedLayer> local = OpenLocal(position, desc);
    if (local.has_value()) local->kind = OpenedLayer::Kind::kFetchedWhole;
    return local;
  }
  return OpenLocal(position, desc);
}

Result<std::optional<OpenedLayer>> LayerOpener::OpenMissing(size_t position,
                                                            const registry::Descriptor& desc) {
  auto decorate = [&](const Status& st) {
    return st.WithContext(LayerContext(options_.image, position, desc));
  };
  if (options_.source == nullptr) {
    if (!options_.source_error.ok()) return decorate(options_.source_error);
    return Status::NotFound("image " + options_.image + ": layer " + desc.digest.String() +
                            " is not in the store; pull the image again");
  }
  registry::BlobSource& source = *options_.source;
  if (options_.lazy) {
    // A plain-looking layer with no index: its footer may still say eStargz/zstd:chunked.
    std::shared_ptr<const LayerIndex> plain;
    std::vector<std::string> unsynced;  // of a published index kept now
    UnannotatedToc unannotated = UnannotatedToc::kNone;
    registry::Digest plain_encoding;
    if (!registry::media::IsLazyLayer(desc)) {
      plain = PlainLazyIndex(desc, &unsynced, &plain_encoding);
      if (plain == nullptr) unannotated = ProbeRemoteFooter(source, desc);
    }
    const bool unverified =
        unannotated != UnannotatedToc::kNone && options_.insecure_skip_toc_verify;
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
      OpenedLayer out;
      out.kind = OpenedLayer::Kind::kLazyToc;
      bool built = false;
      if (unverified) {
        IMGFS_LOG(kWarning) << "layer " << desc.digest.String()
                            << ": --insecure-skip-toc-verify: its TOC is not verified (no "
                               "annotation to check it against), so neither are its file "
                               "table and the chunk digests read data is checked against";
        built = true;
      }
      EstargzTocLoad load;
      Result<LayerIndex> index = unverified
                                     ? LoadUnverifiedTocIndex(source, desc, unannotated, &load)
                                     : LoadLazyIndex(index_store_, source, desc, &built, &load,
                                                     &out.unsynced, &out.index_encoding);
      if (!index.has_value()) return decorate(index.error());
      out.landmark = load.landmark;
      out.index_built = built && !unverified;  // an unverified TOC is never stored
      auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
      LazyLayerReader::Options layer_options;
      static_cast<LazyFetchOptions&>(layer_options) = options_.fetch;  // the shared policy
      layer_options.memory_cache_bytes = CacheShare();
      if (built && load.requests > 0) {
        // eStargz: what LoadEstargzIndex read (plus the footer probe of an unannotated layer).
        layer_options.toc_bytes = load.bytes;
        layer_options.toc_requests = load.requests + (unverified ? 1 : 0);
      } else if (built) {
        // zstd:chunked: the TOC (and footer) sit after the last chunk, read in two requests
        // (three when the footer probe found the layer unannotated).
        uint64_t chunks_end = 0;
        for (const Chunk& c : shared->chunks) {
          chunks_end = std::max(chunks_end, c.blob_offset + c.blob_length);
        }
        const uint64_t blob_size = desc.size > 0 ? static_cast<uint64_t>(desc.size) : 0;
        layer_options.toc_bytes = blob_size > chunks_end ? blob_size - chunks_end : 0;
        layer_options.toc_requests = unverified ? 3 : 2;
      }
      auto reader = std::make_unique<LazyLayerReader>(options_.source, shared, options_.chunks,
                                                      layer_options);
      out.toc_reader = reader.get();
      out.mounted = MountedLayer{shared, std::move(reader)};
      return std::optional<OpenedLayer>(std::move(out));
    }
    // A plain tar / tar+gzip / tar+zstd layer: served by Range requests through its index
    // when the store has one or the registry has one published for this manifest.
    if (plain != nullptr) {
      IndexedRemoteData::Options indexed_options;
      static_cast<LazyFetchOptions&>(indexed_options) = options_.fetch;  // the shared policy
      indexed_options.memory_cache_bytes = CacheShare() / 2;  // chunks, and as much of blocks
      // An index the layer's own tar headers contradict is dropped from the store too, so
      // the next mount does not serve it again.
      if (Result<cache::IndexKey> key = StoreKeyOf(*plain); key.has_value()) {
        indexed_options.on_index_mismatch = [index_store = index_store_,
                                             key = *key](const Status& why) {
          Status removed = index_store.Remove(key);
          IMGFS_LOG(kWarning) << "stored index " << index_store.PathFor(key)
                              << " removed: " << why.ToString()
                              << (removed.ok() ? "" : " (" + removed.ToString() + ")");
        };
      }
      Result<std::unique_ptr<IndexedRemoteData>> data = IndexedRemoteData::Create(
          options_.source, plain, options_.store->Subdir("tmp"), options_.chunks, indexed_options);
      if (data.has_value()) {
        OpenedLayer out;
        out.kind = OpenedLayer::Kind::kIndexed;
        out.unsynced = std::move(unsynced);
        out.index_encoding = plain_encoding;
        out.indexed = data->get();
        out.mounted = MountedLayer{plain, std::move(data).value()};
        return std::optional<OpenedLayer>(std::move(out));
      }
      IMGFS_LOG(kWarning) << "layer " << desc.digest.String() << ": cannot read it lazily ("
                          << data.error().ToString() << "); fetching it whole";
    }
  }
  Status fetched = FetchWhole(position, desc);
  if (!fetched.ok()) return decorate(fetched);
  return std::optional<OpenedLayer>();
}

Result<OpenedLayer> LayerOpener::OpenLocal(size_t position, const registry::Descriptor& desc) {
  const std::string blob = options_.store->BlobPath(desc.digest);
  IndexOptions index_options = options_.index;
  index_options.expected_digest = desc.digest;
  // Read through the checkpoints alone: no chunk table, and the merge's peak is lower.
  index_options.chunk_table = LayerIndex::ChunkTable::kSkip;
  if (position < options_.diff_ids.size())
    index_options.expected_diff_id = options_.diff_ids[position];
  // Only for the log line: a stat, not a second read of the index.
  const bool existed = ::access(index_store_.PathFor(desc.digest).c_str(), F_OK) == 0;
  cache::IndexStore index_store = index_store_;
  registry::Digest encoding;
  Result<LayerIndex> index =
      LoadOrBuildIndex(index_store, blob, desc.media_type, index_options, &encoding);
  if (!index.has_value()) {
    return index.error().WithContext(LayerContext(options_.image, position, desc));
  }
  // An eStargz blob is also a valid tar+gzip and is indexed as one; its TOC annotation
  // says what it is, so the merge hides the converter's landmark and TOC files.
  // Without the annotation, the blob's own footer (a local read) says so.
  if (index->format == LayerFormat::kTarGzip &&
      (desc.annotations.count(std::string(kEstargzTocDigestAnnotation)) > 0 ||
       LocalEstargzFooter(blob))) {
    index->format = LayerFormat::kEstargz;
  }
  auto owned = std::make_shared<LayerIndex>(std::move(index).value());
  std::shared_ptr<const LayerIndex> shared = owned;
  LayerReader::Options reader_options;
  reader_options.cache_bytes = std::max(CacheShare(), reader_options.block_bytes);
  // A sequential reader (a cold tar of the mount) finds its next blocks decoded on another
  // CPU while it copies this one; within the layer's share of the cache (at least 4 blocks).
  reader_options.decode_ahead_blocks = std::min<size_t>(
      kDecodeAheadBlocks, reader_options.cache_bytes / reader_options.block_bytes / 2);
  Result<std::unique_ptr<LayerReader>> reader = LayerReader::Open(blob, shared, reader_options);
  if (!reader.has_value()) {
    return reader.error().WithContext("image " + options_.image + ", layer " +
                                      desc.digest.String());
  }
  OpenedLayer out;
  out.kind = OpenedLayer::Kind::kLocal;
  out.index_built = !existed;
  out.index_encoding = encoding;
  out.entries_droppable = std::move(owned);
  out.mounted = MountedLayer{shared, std::make_unique<LocalLayerData>(std::move(reader).value())};
  return out;
}

Status LayerOpener::FetchWhole(size_t position, const registry::Descriptor& desc) {
  IMGFS_LOG(kInfo) << "fetching layer " << position + 1 << " (" << desc.digest.String() << ", "
                   << desc.size << " bytes) of " << options_.image << " whole";
  auto report = [&](LayerProgress::State state, int64_t done) {
    if (!options_.progress) return;
    LayerProgress p;
    p.index = position;
    p.count = layer_count_;
    p.digest = desc.digest;
    p.done_bytes = done;
    p.total_bytes = desc.size;
    p.state = state;
    std::scoped_lock lock(progress_mu_);
    options_.progress(p);
  };
  report(LayerProgress::State::kDownloading, 0);
  const int64_t size = desc.size > 0 ? desc.size : -1;
  Result<cache::BlobWriter> writer = options_.store->NewBlobWriter(desc.digest, size);
  Status st = writer.has_value() ? Status::Ok() : writer.error();
  int64_t done = 0;
  if (st.ok()) {
    st = options_.source->FetchBlob(desc.digest, size, [&](std::string_view chunk) {
      IMGFS_RETURN_IF_ERROR(writer->Write(chunk));
      done += static_cast<int64_t>(chunk.size());
      report(LayerProgress::State::kDownloading, done);
      return Status::Ok();
    });
  }
  if (st.ok()) st = writer->Commit();
  report(st.ok() ? LayerProgress::State::kDone : LayerProgress::State::kFailed, done);
  return st;
}

const std::map<registry::Digest, LayerIndex>& LayerOpener::Published() {
  std::call_once(published_once_, [this] {
    const registry::Digest& subject = options_.manifest;
    registry::Digest artifact;
    Result<std::map<registry::Digest, LayerIndex>> found =
        FindPublishedIndexes(*options_.source, subject, &artifact);
    if (found.has_value()) {
      IMGFS_LOG(kInfo) << "using " << found->size() << " imgfs indexes published for "
                       << subject.String() << " (artifact " << artifact.String()
                       << "), for lazy reads of this image only";
      for (auto& [layer, index] : *found) {
        index.provenance = IndexProvenance::kPublished;
        index.origin = artifact;
        index.subject = subject;
      }
      published_ = std::move(found).value();
    } else if (found.error().code() == StatusCode::kNotFound) {
      IMGFS_LOG(kInfo) << "no imgfs index is published for " << subject.String()
                       << "; plain layers are fetched whole";
    } else {
      IMGFS_LOG(kWarning) << "refusing the imgfs indexes published for " << subject.String() << " ("
                          << found.error().ToString() << "); plain layers are fetched whole";
    }
  });
  return published_;
}

// The index to read plain layer `desc` of image manifest `subject` lazily with: the layer's
// own index when the store has one (built from its verified blob, good for any image), else
// an index published in the registry for `subject` — kept in the IndexStore under
// (layer, `subject`) by an earlier mount of this same image, or looked up once into
// Published() (verified by FindPublishedIndexes) and kept so. A published index is trusted
// for this image only: a lazy mount of another image with the same layer never sees it, and
// once the blob is in the store LoadOrBuildIndex indexes the blob itself. It is kept (rather
// than looked up on every mount) so that a remount of the same image needs no request for
// it; the manifest digest pins which image it was found for, and the artifact digest is
// recorded in the index (LayerIndex::origin). nullptr when there is none or it does not fit
// the layer: the caller then fetches the layer whole (and indexes it).
std::shared_ptr<const LayerIndex> LayerOpener::PlainLazyIndex(const registry::Descriptor& desc,
                                                              std::vector<std::string>* unsynced,
                                                              registry::Digest* encoding) {
  const registry::Digest& subject = options_.manifest;
  const cache::IndexStore& index_store = index_store_;
  auto stored = [&](const cache::IndexKey& key,
                    IndexProvenance provenance) -> std::shared_ptr<const LayerIndex> {
    Result<MappedFile> bytes = index_store.Map(key);  // as LoadLazyIndex
    if (!bytes.has_value()) return nullptr;
    Result<LayerIndex> decoded = LayerIndex::Decode(bytes->bytes());
    if (!decoded.has_value() || !PlainFormat(*decoded) ||
        !StoredIndexFits(*decoded, desc, provenance, {}, subject)) {
      return nullptr;
    }
    *encoding = EncodedIndexDigest(bytes->bytes());
    return std::make_shared<const LayerIndex>(std::move(decoded).value());
  };
  if (auto own = stored(cache::IndexKey::LayerBlob(desc.digest), IndexProvenance::kLayerBlob)) {
    return own;
  }
  const cache::IndexKey key = cache::IndexKey::Image(desc.digest, subject);
  if (auto kept = stored(key, IndexProvenance::kPublished)) return kept;
  const std::map<registry::Digest, LayerIndex>& published = Published();
  auto it = published.find(desc.digest);
  if (it == published.end()) return nullptr;
  if (!PlainFormat(it->second) ||
      !StoredIndexFits(it->second, desc, IndexProvenance::kPublished, {}, subject)) {
    IMGFS_LOG(kWarning) << "the imgfs index published for layer " << desc.digest.String()
                        << " does not fit it (format or size); fetching the layer whole";
    return nullptr;
  }
  const std::string encoded = it->second.Encode();
  Status put = index_store.Put(key, encoded, Durability::kUnsynced);
  if (put.ok()) {
    unsynced->push_back(index_store.PathFor(key));
    *encoding = EncodedIndexDigest(encoded);
  } else {
    IMGFS_LOG(kWarning) << "cannot keep the index of " << desc.digest.String() << ": "
                        << put.ToString();
  }
  return std::make_shared<const LayerIndex>(it->second);
}

size_t LayerOpener::CacheShare() const {
  return std::max(kMinLayerCacheBytes,
                  options_.cache_budget_bytes / std::max<size_t>(1, layer_count_));
}

Result<std::vector<OpenedLayer>> LayerOpener::OpenAll(
    const std::vector<registry::Descriptor>& layers, const InOrder& in_order) {
  const size_t n = layers.size();
  layer_count_ = n;  // before any thread starts
  std::vector<std::optional<Result<OpenedLayer>>> results(n);
  std::atomic<size_t> next{0};
  // The lowest layer that failed so far (n: none). A layer above it is not opened: its
  // result cannot change the answer, which is that error (or a lower layer's).
  std::atomic<size_t> lowest_failed{n};
  // Which results are set (guarded by mu; a result is written before its flag).
  std::mutex mu;
  std::condition_variable opened_one;
  std::vector<bool> done(n, false);
  auto work = [&] {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      if (i > lowest_failed.load()) {
        std::scoped_lock lock(mu);
        done[i] = true;  // skipped: results[i] stays empty
        opened_one.notify_all();
        continue;
      }
      Result<OpenedLayer> opened = Status::Internal("not opened");
      // std::bad_alloc and the like: this layer's error, not a terminate.
      Status guarded = RunGuarded("opening a layer", [&] {
        opened = OpenLayerData(i, layers[i]);
        if (opened.has_value() && in_order) {
          opened->merge_input = PrepareMergeInput(*opened->mounted.index);
        }
        return Status::Ok();
      });
      if (!guarded.ok()) opened = guarded.WithContext(LayerContext(options_.image, i, layers[i]));
      if (!opened.has_value()) {
        size_t seen = lowest_failed.load();
        while (i < seen && !lowest_failed.compare_exchange_weak(seen, i)) {
        }
      }
      results[i] = std::move(opened);
      std::scoped_lock lock(mu);
      done[i] = true;
      opened_one.notify_all();
    }
  };
  // No source: every layer is opened from the store (or fails), CPU work alone.
  const bool cpu_only = options_.source == nullptr;
  const size_t parallel = std::min({n, kMaxParallelLayers, cpu_only ? UsableCpus() : n});
  // With `in_order` the calling thread takes each opened layer in turn; else it opens too.
  const size_t extra = in_order ? parallel : (parallel > 0 ? parallel - 1 : 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < extra; ++t) {
    try {
      threads.push_back(StartThread("imgfs-layers", [&work] {
        work();
        return Status::Ok();
      }));
    } catch (const std::system_error& e) {  // no thread: the others do its share
      IMGFS_LOG(kWarning) << "opening layers on fewer threads: " << e.what();
      break;
    }
  }
  Status in_order_failed;
  if (in_order && !threads.empty()) {
    for (size_t i = 0; i < n; ++i) {
      {
        std::unique_lock lock(mu);
        opened_one.wait(lock, [&] { return done[i]; });
      }
      if (!results[i].has_value() || !results[i]->has_value()) break;  // OpenAll's error below
      in_order_failed = in_order(i, **results[i]);
      if (!in_order_failed.ok()) {
        lowest_failed = 0;  // no further layer is opened
        break;
      }
    }
  } else {
    work();
  }
  for (std::thread& t : threads) t.join();
  if (!in_order_failed.ok()) return in_order_failed;
  std::vector<OpenedLayer> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!results[i].has_value()) {  // skipped: a lower layer failed, found below
      continue;
    }
    if (!results[i]->has_value()) return results[i]->error();
    out.push_back(std::move(*results[i]).value());
  }
  if (out.size() != n) return Status::Internal("a layer was skipped while none failed");
  if (in_order && threads.empty()) {  // no thread to open while the caller merges: in turn now
    for (size_t i = 0; i < n; ++i) IMGFS_RETURN_IF_ERROR(in_order(i, out[i]));
  }
  return out;
}

BackgroundCleanup::BackgroundCleanup(std::vector<std::vector<FileEntry>> spent_entries,
                                     cache::IndexStore store, std::vector<std::string> unsynced,
                                     std::optional<TreeToStore> tree) {
  if (spent_entries.empty() && unsynced.empty() && !tree.has_value()) return;
  try {
    thread_ = StartThread(
        "imgfs-cleanup", [spent = std::move(spent_entries), store = std::move(store),
                          paths = std::move(unsynced), tree = std::move(tree)]() mutable {
          std::vector<std::vector<FileEntry>>().swap(spent);
          for (const std::string& path : paths) {
            Status synced = store.Sync(path);
            if (!synced.ok())
              IMGFS_LOG(kWarning) << "index not made durable: " << synced.ToString();
          }
          if (tree.has_value()) {
            // After the indexes: the tree is of use only with them. Synced before its rename,
            // so a crash leaves the old tree or none, never a torn one.
            Result<std::string> encoded = EncodeStoredTree(tree->records, tree->info);
            Status put = encoded.has_value()
                             ? store.Put(cache::IndexKey::Tree(tree->info.manifest), *encoded)
                             : encoded.error();
            if (!put.ok()) IMGFS_LOG(kWarning) << "merged tree not stored: " << put.ToString();
          }
          return Status::Ok();
        });
  } catch (const std::system_error& e) {
    // No thread: the tables are freed here (the lambda was not made), the files stay unsynced
    // (a crash may cost a refetch, never a wrong index).
    IMGFS_LOG(kWarning) << "not syncing the new indexes: " << e.what();
  }
}

BackgroundCleanup::~BackgroundCleanup() {
  if (thread_.joinable()) thread_.join();
}

void AppendUnsynced(const std::vector<OpenedLayer>& layers, std::vector<std::string>* out) {
  for (const OpenedLayer& l : layers) out->insert(out->end(), l.unsynced.begin(), l.unsynced.end());
}

}  // namespace imgfs::fs
