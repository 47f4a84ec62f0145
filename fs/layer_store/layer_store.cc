// imgfs — the Additional Layer Store tree: names, info files, overlay-format layers.
#include "fs/layer_store/layer_store.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/base64.h"
#include "base/log.h"
#include "cache/chunk_store.h"
#include "cache/images.h"
#include "fs/image_ops/pull.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "fs/mount/layer_data.h"
#include "fs/tree/overlay.h"
#include "registry/media_types.h"
#include "registry/reference.h"

namespace imgfs::fs {
namespace {

constexpr size_t kMaxInfoJsonBytes = 64 << 10;
constexpr std::string_view kOpaqueValue = "y";

bool IsOverlayXattrName(std::string_view name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

// The TOC digest a layer descriptor announces (eStargz toc.digest, zstd:chunked
// manifest-checksum, either spelling); empty when it has none or it does not parse.
registry::Digest TocDigestOf(const registry::Descriptor& desc) {
  for (std::string_view key : {kEstargzTocDigestAnnotation, kZstdChunkedChecksumAnnotation,
                               kZstdChunkedOldChecksumAnnotation}) {
    auto it = desc.annotations.find(std::string(key));
    if (it == desc.annotations.end()) continue;
    Result<registry::Digest> d = registry::Digest::Parse(it->second);
    if (d.has_value()) return *d;
  }
  return {};
}

// A node of type `type` and mode `mode` that keeps only the path, owner and times of `e`: no
// content (size, link target, chunks), no xattrs, device 0/0.
FileEntry BareNode(const FileEntry& e, EntryType type, uint32_t mode) {
  FileEntry out;
  out.path = e.path;
  out.type = type;
  out.mode = mode;
  out.uid = e.uid;
  out.gid = e.gid;
  out.mtime_sec = e.mtime_sec;
  out.mtime_nsec = e.mtime_nsec;
  return out;
}

}  // namespace

Result<std::string> DecodeRefElement(std::string_view element) {
  if (element.empty() || element.size() > kMaxRefElementBytes) {
    return Status::InvalidArgument("not a layer store reference name (length " +
                                   std::to_string(element.size()) + ")");
  }
  IMGFS_ASSIGN_OR_RETURN(std::string text, DecodeBase64(element));
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return Status::InvalidArgument("layer store reference has a control character or space");
    }
  }
  IMGFS_ASSIGN_OR_RETURN(registry::Reference ref, registry::Reference::Parse(text));
  return ref.String();
}

std::string LayerInfoJson(const LayerInfo& info) {
  nlohmann::json j = nlohmann::json::object();
  j["compressed-diff-digest"] = info.compressed.String();
  j["compressed-size"] = info.compressed_size;
  // containers/storage's archive.Compression: Gzip = 2, Zstd = 4.
  j["compression"] = info.compression == LayerInfo::Compression::kZstd ? 4 : 2;
  if (!info.diff_id.empty()) {
    j["diff-digest"] = info.diff_id.String();
    j["flags"] = {{"expected-layer-diffid", info.diff_id.String()}};
  }
  if (!info.toc.empty()) j["toc-digest"] = info.toc.String();
  if (info.diff_size > 0) j["diff-size"] = info.diff_size;
  return j.dump();
}

Result<LayerInfo> ParseLayerInfoJson(std::string_view json) {
  if (json.size() > kMaxInfoJsonBytes) return Status::Corrupt("layer info larger than 64 KiB");
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Corrupt("layer info is not a JSON object");
  LayerInfo out;
  auto digest = [&](const char* key, registry::Digest* d) -> Status {
    auto it = j.find(key);
    if (it == j.end()) return Status::Ok();
    if (!it->is_string())
      return Status::Corrupt(std::string("layer info: ") + key + " not a string");
    IMGFS_ASSIGN_OR_RETURN(*d, registry::Digest::Parse(it->get<std::string>()));
    return Status::Ok();
  };
  IMGFS_RETURN_IF_ERROR(digest("compressed-diff-digest", &out.compressed));
  // LayerInfoJson always writes it: an info file without it is not one of ours.
  if (out.compressed.empty()) return Status::Corrupt("layer info: no compressed-diff-digest");
  IMGFS_RETURN_IF_ERROR(digest("diff-digest", &out.diff_id));
  IMGFS_RETURN_IF_ERROR(digest("toc-digest", &out.toc));
  if (auto it = j.find("compressed-size"); it != j.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      return Status::Corrupt("layer info: compressed-size");
    }
    out.compressed_size = it->get<int64_t>();
  }
  if (auto it = j.find("diff-size"); it != j.end()) {
    if (!it->is_number_unsigned()) return Status::Corrupt("layer info: diff-size");
    out.diff_size = it->get<uint64_t>();
  }
  if (auto it = j.find("compression"); it != j.end()) {
    if (!it->is_number_integer()) return Status::Corrupt("layer info: compression");
    const int64_t c = it->get<int64_t>();
    if (c != 2 && c != 4) return Status::Corrupt("layer info: compression " + std::to_string(c));
    out.compression = c == 4 ? LayerInfo::Compression::kZstd : LayerInfo::Compression::kGzip;
  }
  return out;
}

LayerIndex ToOverlayFormat(const LayerIndex& index) {
  LayerIndex out = index;
  std::set<std::string, std::less<>> opaque;
  for (const FileEntry& e : out.entries) {
    if (e.type == EntryType::kOpaque) opaque.insert(e.path);
  }
  auto mark = [](FileEntry& e) {
    e.xattrs.emplace_back("trusted.overlay.opaque", std::string(kOpaqueValue));
    e.xattrs.emplace_back("user.overlay.opaque", std::string(kOpaqueValue));
    std::sort(e.xattrs.begin(), e.xattrs.end());
  };
  // The attributes an opaque marker's directory gets when the layer has no entry for it.
  std::map<std::string, const FileEntry*, std::less<>> last_dir;
  for (const FileEntry& e : index.entries) {
    if (e.type == EntryType::kDirectory && opaque.contains(e.path)) last_dir[e.path] = &e;
  }
  for (FileEntry& e : out.entries) {
    std::erase_if(e.xattrs, [](const auto& x) { return IsOverlayXattrName(x.first); });
    switch (e.type) {
      case EntryType::kWhiteout:
        // containers/storage's overlay driver: a whiteout is a character device 0/0.
        e = BareNode(e, EntryType::kChar, 0);
        break;
      case EntryType::kOpaque: {
        const std::string path = e.path;
        auto it = last_dir.find(path);
        if (it != last_dir.end()) {
          e = *it->second;
          std::erase_if(e.xattrs, [](const auto& x) { return IsOverlayXattrName(x.first); });
        } else {
          e = BareNode(e, EntryType::kDirectory, 0755);
          e.uid = 0;
          e.gid = 0;
        }
        e.path = path;
        mark(e);
        break;
      }
      case EntryType::kDirectory:
        if (opaque.contains(e.path)) mark(e);
        break;
      default:
        break;
    }
  }
  return out;
}

// One image of the store: its manifest and config, and what opens its layers.
struct LayerStore::Image {
  cache::ResolvedImage resolved;
  std::unique_ptr<LayerOpener> opener;
  std::shared_ptr<registry::BlobSource> source;
};

// One layer directory: opened once, under its own lock.
struct LayerStore::Pending {
  Mutex mu;
  std::shared_ptr<const StoreLayer> layer IMGFS_GUARDED_BY(mu);
};

LayerStore::LayerStore(LayerStoreOptions options)
    : options_(std::move(options)),
      refs_(options_.store, options_.reference_owner != 0 ? options_.reference_owner : ::getpid(),
            options_.mountpoint) {}

Result<std::shared_ptr<LayerStore::Image>> LayerStore::OpenImage(const std::string& reference,
                                                                 bool refresh) {
  if (!refresh) {
    MutexLock lock(&mu_);
    auto it = images_.find(reference);
    if (it != images_.end()) return it->second;
  }
  PullOptions pull;
  pull.insecure_registries = options_.insecure_registries;
  pull.ca_files = options_.ca_files;
  pull.creds = options_.creds;
  if (Result<registry::Reference> ref = registry::Reference::Parse(reference); ref.has_value()) {
    // The auth helper's credential for this registry host (--creds goes to it alone too).
    MutexLock lock(&mu_);
    auto it = credentials_.find(registry::NormalizeRegistryHost(ref->domain()));
    if (it != credentials_.end()) pull.creds = it->second.username + ":" + it->second.password;
  }
  pull.metadata_only = true;
  cache::Store& store = *options_.store;
  Result<cache::ResolvedImage> resolved =
      refresh ? Result<cache::ResolvedImage>(Status::NotFound("refresh"))
              : cache::ResolveImage(store, reference);
  if (!resolved.has_value() && resolved.error().code() == StatusCode::kNotFound) {
    IMGFS_LOG(kInfo) << "layer store: fetching the manifest and config of " << reference;
    Puller puller(&store, pull);
    IMGFS_ASSIGN_OR_RETURN(std::vector<PulledImage> pulled, puller.Pull(reference));
    if (pulled.empty()) return Status::NotFound("pull of " + reference + " recorded nothing");
    resolved = cache::ResolveImage(store, pulled.front().reference.String());
  }
  if (!resolved.has_value()) return resolved.error();
  auto image = std::make_shared<Image>();
  image->resolved = std::move(resolved).value();
  IMGFS_ASSIGN_OR_RETURN(std::unique_ptr<registry::BlobSource> source,
                         OpenRegistrySource(reference, pull));
  image->source = std::move(source);
  LayerOpenerOptions opener;
  opener.store = &store;
  opener.image = reference;
  opener.manifest = image->resolved.manifest.digest;
  opener.diff_ids = image->resolved.config.diff_ids;
  opener.source = image->source;
  opener.chunks = std::make_shared<cache::ChunkStore>(store.root());
  opener.lazy = true;
  if (options_.fetch_timeout_seconds > 0) {
    opener.fetch.fetch_timeout =
        std::chrono::milliseconds(std::llround(options_.fetch_timeout_seconds * 1000.0));
  }
  image->opener = std::make_unique<LayerOpener>(std::move(opener));
  MutexLock lock(&mu_);
  if (refresh) {
    images_[reference] = image;
    return image;
  }
  // Two lookups may have opened it at once: the first one stored wins.
  auto [it, inserted] = images_.emplace(reference, image);
  return it->second;
}

Result<std::shared_ptr<const StoreLayer>> LayerStore::OpenLayer(const std::string& reference,
                                                                const registry::Digest& digest) {
  IMGFS_ASSIGN_OR_RETURN(std::shared_ptr<Image> image, OpenImage(reference, false));
  Result<std::shared_ptr<const StoreLayer>> layer = OpenLayerOf(*image, reference, digest);
  if (layer.has_value() || layer.error().code() != StatusCode::kNotFound) return layer;
  Result<registry::Reference> parsed = registry::Reference::Parse(reference);
  if (!parsed.has_value() || parsed->digest().has_value()) return layer;  // cannot move
  // The tag may have moved since the manifest was recorded: fetch it again, once.
  IMGFS_ASSIGN_OR_RETURN(image, OpenImage(reference, true));
  return OpenLayerOf(*image, reference, digest);
}

Result<std::shared_ptr<const StoreLayer>> LayerStore::OpenLayerOf(Image& image_ref,
                                                                  const std::string& reference,
                                                                  const registry::Digest& digest) {
  Image* image = &image_ref;
  const registry::Manifest& manifest = image->resolved.decoded;
  const std::vector<registry::Digest>& diff_ids = image->resolved.config.diff_ids;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const registry::Descriptor& desc = manifest.layers[i];
    const registry::Digest toc = TocDigestOf(desc);
    if (desc.digest != digest && (toc.empty() || toc != digest)) continue;
    if (!registry::media::IsLazyLayer(desc)) {
      return Status::Unsupported("layer " + desc.digest.String() + " of " + reference +
                                 " is neither eStargz nor zstd:chunked");
    }
    IMGFS_ASSIGN_OR_RETURN(OpenedLayer opened, image->opener->OpenLayerData(i, desc));
    LayerIndex overlay = ToOverlayFormat(*opened.mounted.index);
    const LayerIndex* views[] = {&overlay};
    IMGFS_ASSIGN_OR_RETURN(NodeTable table, MergeLayers(views));
    std::vector<MountedLayer> layers;
    layers.push_back(MountedLayer{std::make_shared<const LayerIndex>(std::move(overlay)),
                                  std::move(opened.mounted.reader)});
    auto out = std::make_shared<StoreLayer>();
    out->diff = std::make_unique<ImageFilesystem>(std::move(table), std::move(layers));
    LayerInfo info;
    info.compressed = desc.digest;
    info.compressed_size = desc.size;
    info.toc = toc;
    info.compression = registry::media::IsZstdChunkedLayer(desc) ? LayerInfo::Compression::kZstd
                                                                 : LayerInfo::Compression::kGzip;
    if (i < diff_ids.size()) info.diff_id = diff_ids[i];
    if (auto it = desc.annotations.find(std::string(kEstargzUncompressedSizeAnnotation));
        it != desc.annotations.end()) {
      uint64_t size = 0;
      const std::string& text = it->second;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), size);
      if (ec == std::errc() && end == text.data() + text.size()) info.diff_size = size;
    }
    out->info = LayerInfoJson(info);
    out->descriptor = desc;
    out->source = image->source;
    out->manifest = image->resolved.manifest.digest;
    out->reference = reference;
    IMGFS_LOG(kInfo) << "layer store: serving layer " << desc.digest.String() << " of " << reference
                     << " (" << out->diff->table().inode_count() << " inodes)";
    return std::shared_ptr<const StoreLayer>(std::move(out));
  }
  return Status::NotFound("image " + reference + " has no layer " + digest.String());
}

Result<std::shared_ptr<const StoreLayer>> LayerStore::Open(std::string_view ref_element,
                                                           std::string_view digest_element) {
  if (digest_element.size() > kMaxDigestElementBytes) {
    return Status::InvalidArgument("not a layer digest");
  }
  IMGFS_ASSIGN_OR_RETURN(registry::Digest digest, registry::Digest::Parse(digest_element));
  IMGFS_ASSIGN_OR_RETURN(std::string reference, DecodeRefElement(ref_element));
  const std::string key = std::string(ref_element) + "/" + std::string(digest_element);
  std::shared_ptr<Pending> pending;
  {
    MutexLock lock(&mu_);
    std::shared_ptr<Pending>& slot = pending_[key];
    if (slot == nullptr) slot = std::make_shared<Pending>();
    pending = slot;
  }
  MutexLock lock(&pending->mu);
  if (pending->layer != nullptr) return pending->layer;
  Result<std::shared_ptr<const StoreLayer>> opened = OpenLayer(reference, digest);
  if (!opened.has_value()) {
    IMGFS_LOG(kInfo) << "layer store: " << reference << " " << digest.String() << ": "
                     << opened.error().ToString();
    return opened.error();
  }
  pending->layer = *opened;
  return pending->layer;
}

Result<int64_t> LayerStore::Use(std::string_view ref_element, std::string_view digest_element) {
  IMGFS_ASSIGN_OR_RETURN(std::shared_ptr<const StoreLayer> layer,
                         Open(ref_element, digest_element));
  const std::string key = std::string(ref_element) + "/" + std::string(digest_element);
  return refs_.Take(key, layer->manifest, layer->reference);
}

int64_t LayerStore::Release(std::string_view ref_element, std::string_view digest_element) {
  const std::string key = std::string(ref_element) + "/" + std::string(digest_element);
  if (refs_.Count(key) == 0) return 0;
  const int64_t left = refs_.Drop(key);
  if (left == 0) {
    // Nobody holds the layer: free its tree (readers that still hold it finish with theirs).
    // A Use racing with this reloads it.
    MutexLock lock(&mu_);
    pending_.erase(key);
  }
  return left;
}

void LayerStore::SetRegistryCredential(const std::string& host,
                                       const registry::Credential& credential) {
  const std::string key = registry::NormalizeRegistryHost(host);
  if (credential.username.empty()) {
    // An identity token alone: imgfs's registry client takes one only from the credential
    // store (imgfs login, auth files), not as a pull's --creds.
    IMGFS_LOG(kWarning) << "layer store: the credential for " << key
                        << " has no username (identity tokens are not taken from the helper)";
    return;
  }
  MutexLock lock(&mu_);
  auto [it, inserted] = credentials_.try_emplace(key, credential);
  if (!inserted && it->second == credential) return;
  it->second = credential;
  // Images of that host opened with the old credential (or none) are opened again.
  std::erase_if(images_, [&](const auto& entry) {
    Result<registry::Reference> ref = registry::Reference::Parse(entry.first);
    return ref.has_value() && registry::NormalizeRegistryHost(ref->domain()) == key;
  });
  IMGFS_LOG(kInfo) << "layer store: a credential for " << key << " from the auth helper";
}

Result<size_t> LayerStore::RecoverReferences() { return refs_.Recover(); }

int64_t LayerStore::References(std::string_view ref_element,
                               std::string_view digest_element) const {
  return refs_.Count(std::string(ref_element) + "/" + std::string(digest_element));
}

size_t LayerStore::ReferencedLayers() const { return refs_.Referenced(); }

}  // namespace imgfs::fs
