// imgfs — preparing an image for a mount.
#include "fs/mount/mount.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/thread.h"
#include "cache/chunk_store.h"
#include "cache/images.h"
#include "fs/mount/layer_data.h"
#include "fs/tree/stored_tree.h"
#include "registry/transport.h"

namespace imgfs::fs {
namespace {

// `*source`: the registry source a lazy pull read the image from (Puller::TakeSource), to
// serve its layers without a second session.
Result<cache::ResolvedImage> ResolveOrPull(cache::Store& store, std::string_view text,
                                           const PrepareOptions& options,
                                           const decltype(PullOptions::on_manifest)& on_manifest,
                                           std::string* recorded,
                                           std::shared_ptr<registry::BlobSource>* source) {
  Result<cache::ResolvedImage> resolved = cache::ResolveImage(store, text);
  if (resolved.has_value() || resolved.error().code() != StatusCode::kNotFound ||
      !options.pull_if_missing) {
    return resolved;
  }
  IMGFS_LOG(kInfo) << "image " << text << " is not in the store; pulling it";
  PullOptions pull = options.pull;
  // A lazy mount records the manifest and config only and reads layers from the registry;
  // a local image (oci:, oci-archive:, docker-archive:) has no registry to read them from
  // later, so it is copied whole.
  Result<registry::SourceSpec> spec = registry::ParseSourceSpec(text);
  const bool local = spec.has_value() && spec->IsLocal();
  if (options.lazy && !local) {
    pull.metadata_only = true;
    pull.on_manifest = on_manifest;
  }
  Puller puller(&store, pull);
  IMGFS_ASSIGN_OR_RETURN(std::vector<PulledImage> pulled, puller.Pull(text, options.progress));
  if (pulled.empty()) return Status::NotFound("pull of " + std::string(text) + " recorded nothing");
  *recorded = pulled.front().reference.String();
  if (pull.metadata_only) *source = puller.TakeSource();
  return cache::ResolveImage(store, *recorded);
}

// The reference to fetch missing layers of `image` from: the one it was named by, else the
// one a pull just recorded, else any record of it (a mount by digest or image ID). "" when
// it has none.
std::string SourceReference(const cache::ResolvedImage& image, const std::string& recorded) {
  if (image.by_reference.has_value()) return image.by_reference->reference;
  if (!recorded.empty()) return recorded;
  if (!image.records.empty()) return image.records.front().reference;
  return "";
}

// What every LayerOpener of this mount is given, whichever path opens the layers.
LayerOpenerOptions BaseOpenerOptions(cache::Store& store, std::string_view text,
                                     const PrepareOptions& options) {
  LayerOpenerOptions o;
  o.store = &store;
  o.image = std::string(text);
  o.lazy = options.lazy;
  o.insecure_skip_toc_verify = options.insecure_skip_toc_verify;
  o.index = options.index;
  o.progress = options.progress;
  if (options.fetch_timeout_seconds > 0) {
    o.fetch.fetch_timeout =
        std::chrono::milliseconds(std::llround(options.fetch_timeout_seconds * 1000.0));
  }
  return o;
}

// Opens `layers`; each merges into *merge as soon as it and those below it are open, while
// the upper ones load.
Result<std::vector<OpenedLayer>> OpenAndMerge(LayerOpenerOptions options,
                                              const std::vector<registry::Descriptor>& layers,
                                              LayerMerge* merge) {
  LayerOpener opener(std::move(options));
  return opener.OpenAll(layers, [merge](size_t, OpenedLayer& l) {
    Status added = merge->Add(l.mounted.index.get(), l.merge_input);
    l.merge_input = MergeInput();  // done with: its memory goes now
    return added;
  });
}

// The stored merged tree of `manifest` (fs/tree/stored_tree.h), mapped; null when there is
// none (then the mount merges and stores it).
std::shared_ptr<const MappedFile> MapStoredTree(const cache::Store& store,
                                                const registry::Digest& manifest) {
  Result<MappedFile> mapped = cache::IndexStore(store.root()).Map(cache::IndexKey::Tree(manifest));
  if (!mapped.has_value()) {
    if (mapped.error().code() != StatusCode::kNotFound) {
      IMGFS_LOG(kInfo) << "stored tree of " << manifest.String() << ": "
                       << mapped.error().ToString();
    }
    return nullptr;
  }
  return std::make_shared<const MappedFile>(std::move(mapped).value());
}

// What each opened layer's file table came from, as the stored tree records it
// (StoredTreeSources): the exact bytes of its stored index (OpenedLayer::index_encoding), and
// for a lazy layer also the provenance and origin (the TOC digest, the published artifact)
// that made it fit this layer. nullopt when a layer's index is not kept
// (--insecure-skip-toc-verify, a TOC digest that is not sha256): such a tree is never stored.
std::optional<registry::Digest> TreeSourcesOf(const std::vector<registry::Descriptor>& layers,
                                              const std::vector<OpenedLayer>& opened) {
  if (layers.size() != opened.size()) return std::nullopt;
  std::vector<std::string> sources;
  for (size_t i = 0; i < opened.size(); ++i) {
    const OpenedLayer& l = opened[i];
    if (l.index_encoding.empty()) return std::nullopt;
    if (l.local()) {
      sources.push_back("blob " + layers[i].digest.String() + " " + l.index_encoding.String());
      continue;
    }
    const LayerIndex& index = *l.mounted.index;
    if (index.provenance == IndexProvenance::kUnverified) return std::nullopt;
    sources.push_back("index " + layers[i].digest.String() + " " +
                      std::to_string(static_cast<int>(index.provenance)) + " " +
                      index.origin.String() + " " + index.subject.String() + " " +
                      std::to_string(static_cast<int>(index.format)) + " " +
                      l.index_encoding.String());
  }
  return StoredTreeSources(sources);
}

// The layers of image `manifest` opened without their file tables (a lazy layer keeps its
// own: its reader finds a file's chunks there), and its stored tree `mapped` decoded meanwhile
// on another thread (its checks are a pass over the whole tree: ~5 ms for 75 000 paths, as
// long as the layers' indexes take). nullopt (logged) when the tree is unusable or does not
// fit the layers as they opened; then the mount merges, and *unsynced gets the index files
// these openings wrote, which the next opening finds in the store. Errors are the layers'.
Result<std::optional<std::pair<StoredTree, std::vector<OpenedLayer>>>> OpenWithStoredTree(
    LayerOpenerOptions options, const std::vector<registry::Descriptor>& layers,
    std::shared_ptr<const MappedFile> mapped, const registry::Digest& manifest,
    std::vector<std::string>* unsynced) {
  using Out = std::optional<std::pair<StoredTree, std::vector<OpenedLayer>>>;
  std::optional<Result<StoredTree>> decoded;
  auto decode = [&] { decoded = DecodeStoredTree(mapped->bytes(), mapped, manifest); };
  std::thread decoding;
  try {
    decoding = StartThread(
        "imgfs-tree",
        [&] {
          decode();
          return Status::Ok();
        },
        [&](const Status& st) { decoded = st; });
  } catch (const std::system_error&) {
    decode();  // no thread: here, first
  }
  struct Joined {  // before `decoded` goes, whatever leaves this function
    std::thread& thread;
    ~Joined() {
      if (thread.joinable()) thread.join();
    }
  } joined{decoding};
  options.index.file_table = LayerIndex::FileTable::kSkip;
  LayerOpener opener(std::move(options));
  Result<std::vector<OpenedLayer>> opened = opener.OpenAll(layers);
  if (decoding.joinable()) decoding.join();
  if (!opened.has_value()) return opened.error();
  if (!decoded.has_value() || !decoded->has_value()) {
    AppendUnsynced(*opened, unsynced);
    IMGFS_LOG(kInfo) << (decoded.has_value() ? decoded->error().ToString() : "stored tree: ?")
                     << "; merging the layers again";
    return Out();
  }
  StoredTree& tree = **decoded;
  // Each layer opened from the index the tree was merged from.
  if (TreeSourcesOf(layers, *opened) != tree.info.sources) {
    IMGFS_LOG(kInfo) << "stored tree of " << manifest.String()
                     << ": merged from other layer indexes; merging the layers again";
    AppendUnsynced(*opened, unsynced);
    return Out();
  }
  std::vector<TreeLayer> opened_layers;
  for (const OpenedLayer& l : *opened) {
    const LayerIndex& index = *l.mounted.index;
    opened_layers.push_back(
        TreeLayer{index.uncompressed_size, l.local() ? nullptr : &index.entries});
  }
  Status fits = tree.info.layer_count == layers.size()
                    ? CheckTreeData(tree.table, opened_layers)
                    : Status::Corrupt("stored tree: " + std::to_string(tree.info.layer_count) +
                                      " layers, the image " + std::to_string(layers.size()));
  if (!fits.ok()) {
    IMGFS_LOG(kWarning) << fits.ToString() << "; merging the layers again";
    AppendUnsynced(*opened, unsynced);
    return Out();
  }
  return Out(std::in_place, std::move(tree), std::move(opened).value());
}

// Layers of a lazy mount of an image not in the store yet, opened on a thread of their own
// while the pull fetches the config and records the image (PullOptions::on_manifest): the
// tables of contents and published indexes load a round trip earlier. Started only when no
// layer is in the store (a local layer's index is checked against the config's diff_ids);
// PrepareImage uses the result only when the pull then recorded that manifest from that
// source, and otherwise opens the layers again as usual.
//
// Thread-safety: Start once; the other members are the caller's after Join.
class EarlyLayers {
 public:
  EarlyLayers() = default;
  EarlyLayers(const EarlyLayers&) = delete;
  EarlyLayers& operator=(const EarlyLayers&) = delete;
  ~EarlyLayers() { Join(); }

  // Never throws: a thread that cannot be started leaves it unstarted (the usual path opens).
  void Start(LayerOpenerOptions options, const registry::Digest& manifest,
             std::vector<registry::Descriptor> layers) noexcept {
    if (started_) return;
    try {
      manifest_ = manifest;
      source_ = options.source;
      thread_ = StartThread(
          "imgfs-open",
          [this, options = std::move(options), layers = std::move(layers)]() mutable {
            opened_ = OpenAndMerge(std::move(options), layers, &merge_);
            return Status::Ok();
          },
          [this](const Status& st) { opened_ = st; });
      started_ = true;
    } catch (...) {
      started_ = false;
    }
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  // After Join: whether the layers were opened for `manifest` from `source`, every one lazily
  // (one fetched whole is opened again as a local layer, its index checked against the
  // config's diff_id), or failed there.
  bool Fits(const registry::Digest& manifest, const registry::BlobSource* source) const {
    if (!started_ || !opened_.has_value() || manifest_ != manifest || source_.get() != source) {
      return false;
    }
    if (!opened_->has_value()) return true;
    for (const OpenedLayer& l : **opened_) {
      if (l.local()) return false;
    }
    return true;
  }
  Result<std::vector<OpenedLayer>>& opened() { return *opened_; }
  LayerMerge& merge() { return merge_; }
  // After Join, for layers opened here but not used: appends the index files their opening wrote
  // without fsync (the next opening finds them in the store and writes nothing).
  void AppendUnsynced(std::vector<std::string>* out) const {
    if (opened_.has_value() && opened_->has_value()) fs::AppendUnsynced(**opened_, out);
  }

 private:
  bool started_ = false;
  registry::Digest manifest_;
  std::shared_ptr<registry::BlobSource> source_;
  std::optional<Result<std::vector<OpenedLayer>>> opened_;
  LayerMerge merge_;
  std::thread thread_;
};

}  // namespace

Result<PreparedImage> PrepareImage(cache::Store& store, std::string_view text,
                                   const PrepareOptions& options) {
  std::string recorded;
  std::shared_ptr<registry::BlobSource> pulled_from;
  EarlyLayers early;
  auto open_early = [&](const registry::Digest& manifest, const registry::Manifest& decoded,
                        const std::shared_ptr<registry::BlobSource>& source) {
    for (const registry::Descriptor& d : decoded.layers) {
      if (store.HasBlob(d.digest)) return;
    }
    LayerOpenerOptions o = BaseOpenerOptions(store, text, options);
    o.manifest = manifest;
    o.source = source;
    o.chunks = std::make_shared<cache::ChunkStore>(store.root());
    early.Start(std::move(o), manifest, decoded.layers);
  };
  Result<cache::ResolvedImage> resolved =
      ResolveOrPull(store, text, options, open_early, &recorded, &pulled_from);
  early.Join();
  if (!resolved.has_value()) return resolved.error();
  cache::ResolvedImage& image = *resolved;
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

  LayerOpenerOptions opener_options = BaseOpenerOptions(store, text, options);
  opener_options.manifest = image.manifest.digest;
  opener_options.diff_ids = diff_ids;
  // Missing layers (a lazy pull recorded the image without them): one registry source for
  // every layer, one chunk store.
  const bool missing =
      std::any_of(manifest.layers.begin(), manifest.layers.end(),
                  [&](const registry::Descriptor& d) { return !store.HasBlob(d.digest); });
  if (missing) {
    const std::string source_reference = SourceReference(image, recorded);
    if (pulled_from != nullptr && source_reference == recorded) {
      opener_options.source = std::move(pulled_from);
      opener_options.chunks = std::make_shared<cache::ChunkStore>(store.root());
    } else if (source_reference.empty()) {
      opener_options.source_error = Status::Unsupported(
          "image " + std::string(text) + " has no registry reference to fetch its layers from");
    } else {
      Result<std::unique_ptr<registry::BlobSource>> opened =
          OpenRegistrySource(source_reference, options.pull);
      if (opened.has_value()) {
        opener_options.source = std::move(opened).value();
        opener_options.chunks = std::make_shared<cache::ChunkStore>(store.root());
      } else {
        opener_options.source_error = opened.error();
      }
    }
  }
  // The tree a mount of this manifest merged before, if stored, replaces the layers' file
  // tables and their merge (a lazy layer's file table stays: its reader looks files up there).
  std::optional<StoredTree> stored;
  std::vector<OpenedLayer> opened;
  std::vector<std::string> unsynced;
  if (std::shared_ptr<const MappedFile> mapped = MapStoredTree(store, image.manifest.digest)) {
    IMGFS_ASSIGN_OR_RETURN(auto fit,
                           OpenWithStoredTree(opener_options, manifest.layers, std::move(mapped),
                                              image.manifest.digest, &unsynced));
    if (fit.has_value()) {
      stored = std::move(fit->first);
      opened = std::move(fit->second);
    }
  }
  LayerMerge own_merge;
  LayerMerge* merge = &own_merge;
  bool early_used = false;
  if (!stored.has_value()) {
    if (early.Fits(image.manifest.digest, opener_options.source.get())) {
      IMGFS_ASSIGN_OR_RETURN(opened, std::move(early.opened()));
      merge = &early.merge();
      early_used = true;
    } else {
      IMGFS_ASSIGN_OR_RETURN(opened,
                             OpenAndMerge(std::move(opener_options), manifest.layers, merge));
    }
  }
  if (!early_used) early.AppendUnsynced(&unsynced);
  // Before the layers move out of `opened`.
  const std::optional<registry::Digest> sources =
      stored.has_value() ? std::nullopt : TreeSourcesOf(manifest.layers, opened);
  AppendUnsynced(opened, &unsynced);
  std::vector<MountedLayer> layers;
  layers.reserve(opened.size());
  for (OpenedLayer& l : opened) {
    if (l.index_built) ++out.indexes_built;
    if (!l.local()) ++out.lazy_layers;
    layers.push_back(std::move(l.mounted));
  }
  NodeTable table;
  std::optional<TreeToStore> tree_to_store;
  if (stored.has_value()) {
    table = std::move(stored->table);
    out.merge_stats = stored->info.stats;
  } else {
    IMGFS_ASSIGN_OR_RETURN(table, merge->Finish(&out.merge_stats));
    // Kept for the next mount of this manifest whose layers open from the same indexes.
    if (sources.has_value()) {
      tree_to_store =
          TreeToStore{StoredTreeInfo{image.manifest.digest, static_cast<uint32_t>(opened.size()),
                                     *sources, out.merge_stats},
                      table.records(), table.records_owner()};
    }
  }
  out.tree_stored = stored.has_value();
  // The table holds the file table now; local layers are read by offset. Their entries move
  // out here, before any reader thread runs (the filesystem is not serving), and are freed in
  // the background.
  std::vector<std::vector<FileEntry>> spent;
  for (OpenedLayer& l : opened) {
    if (l.entries_droppable != nullptr) {
      spent.push_back(std::move(l.entries_droppable->entries));
      l.entries_droppable->DropEntries();
    }
    l.entries_droppable.reset();
  }
  IMGFS_LOG(kInfo) << "image " << text << ": " << layers.size() << " layers, "
                   << table.inode_count() << " inodes, " << out.indexes_built << " indexes built, "
                   << out.lazy_layers << " lazy layers, merged tree "
                   << (out.tree_stored ? "from the store" : "merged now");
  out.filesystem = std::make_unique<ImageFilesystem>(std::move(table), std::move(layers));
  out.cleanup =
      std::make_unique<BackgroundCleanup>(std::move(spent), cache::IndexStore(store.root()),
                                          std::move(unsynced), std::move(tree_to_store));
  // Background work once every layer is prepared (the index loads came first). The
  // readers live in out.filesystem; `opened` still points at them.
  for (const OpenedLayer& l : opened) {
    if (l.toc_reader != nullptr) {
      if (options.prefetch == PrepareOptions::Prefetch::kAll) {
        l.toc_reader->StartBackgroundFetch();
      } else if (options.prefetch == PrepareOptions::Prefetch::kLandmarks && l.landmark > 0) {
        l.toc_reader->PrefetchBefore(l.landmark);
      }
    }
    if (l.indexed != nullptr && options.prefetch == PrepareOptions::Prefetch::kAll) {
      l.indexed->StartBackgroundFetch();
    }
  }
  return out;
}

}  // namespace imgfs::fs
