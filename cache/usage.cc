// imgfs — disk use of the store, garbage collection and the size cap.
#include "cache/usage.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/time.h"
#include "cache/containers.h"
#include "cache/index_store.h"
#include "cache/leases.h"
#include "registry/media_types.h"
#include "registry/reference.h"

namespace imgfs::cache {
namespace {

using json = nlohmann::json;
using registry::Descriptor;
using registry::Digest;

// Nesting limit when following index → manifest links (indexes of indexes are legal but
// never deeper than a couple of levels in practice).
constexpr int kMaxIndexDepth = 4;
// Blobs at most this large are read to find out whether an unreferenced blob is a manifest
// or an index (deleted before the blobs it names). Real manifests are a few KiB.
constexpr int64_t kMaxDocumentBytes = 4 << 20;
// A temporary file in chunks/ older than this is a crash leftover (chunk writes take
// milliseconds; chunk writers hold no lock GC could wait for).
constexpr int64_t kStaleChunkTmpSeconds = 3600;

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string Rfc3339(int64_t unix_seconds) {
  return unix_seconds <= 0 ? std::string() : FormatRfc3339(unix_seconds);
}

std::string FamiliarOf(const ImageRecord& r) {
  if (r.dangling()) return {};
  auto ref = registry::Reference::Parse(r.reference);
  return ref.has_value() ? ref->FamiliarString() : r.reference;
}

Result<Descriptor> DecodeDescriptor(const json& j) {
  if (!j.is_object()) return Status::Corrupt("descriptor is not an object");
  Descriptor d;
  auto mt = j.find("mediaType");
  if (mt != j.end() && mt->is_string()) d.media_type = mt->get<std::string>();
  auto dg = j.find("digest");
  if (dg == j.end() || !dg->is_string()) return Status::Corrupt("descriptor without digest");
  IMGFS_ASSIGN_OR_RETURN(d.digest, Digest::Parse(dg->get<std::string>()));
  auto size = j.find("size");
  if (size != j.end() && size->is_number_integer()) d.size = size->get<int64_t>();
  if (auto it = j.find("annotations"); it != j.end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      if (v.is_string()) d.annotations[k] = v.get<std::string>();
    }
  }
  return d;
}

// What one manifest (or index) reaches.
struct Reach {
  std::unordered_set<std::string> hexes;  // blob digests (hex), stored or not
  std::vector<Descriptor> layers;
  Digest config;
  int64_t image_bytes = 0;  // config + layer sizes (first manifest)
  bool ok = true;           // false: a stored document could not be read
};

void AddReach(const Store& store, const Digest& digest, int depth, Reach* out) {
  out->hexes.insert(digest.hex());
  if (depth > kMaxIndexDepth) return;
  auto bytes = store.ReadBlob(digest);
  if (!bytes.has_value()) {
    if (bytes.error().code() == StatusCode::kNotFound) return;  // gone or never stored
    IMGFS_LOG(kWarning) << "store scan: " << bytes.error().ToString();
    out->ok = false;
    return;
  }
  json j = json::parse(*bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    IMGFS_LOG(kWarning) << "store scan: " << digest.String() << " is not JSON";
    out->ok = false;
    return;
  }
  bool first = out->config.empty();
  if (auto it = j.find("config"); it != j.end()) {
    auto d = DecodeDescriptor(*it);
    if (d.has_value()) {
      out->hexes.insert(d->digest.hex());
      if (first) {
        out->config = d->digest;
        out->image_bytes += d->size;
      }
    }
  }
  for (const char* key : {"layers", "blobs"}) {
    if (auto it = j.find(key); it != j.end() && it->is_array()) {
      for (const auto& l : *it) {
        auto d = DecodeDescriptor(l);
        if (!d.has_value()) continue;
        out->hexes.insert(d->digest.hex());
        if (first && std::string_view(key) == "layers") {
          out->image_bytes += d->size;
          out->layers.push_back(std::move(*d));
        }
      }
    }
  }
  if (auto it = j.find("manifests"); it != j.end() && it->is_array()) {
    for (const auto& m : *it) {
      auto d = DecodeDescriptor(m);
      if (d.has_value()) AddReach(store, d->digest, depth + 1, out);
    }
  }
}

struct FileInfo {
  int64_t size = 0;
  int64_t mtime = 0;
};

// The index files of one layer (IndexStore: its own, and the network-derived ones keyed by a
// TOC digest or an image manifest).
struct LayerIndexFiles {
  struct File {
    std::string name;  // under indexes/
    IndexKey key;
    int64_t size = 0;
  };
  std::vector<File> files;
  int64_t size = 0;  // all of them
};

// Every file of the store, classified.
struct Inventory {
  std::unordered_map<std::string, FileInfo> blobs;           // hex → blobs/sha256/<hex>
  std::unordered_map<std::string, LayerIndexFiles> indexes;  // layer hex → indexes/<hex>*.idx
  std::unordered_map<std::string, FileInfo> landmarks;       // hex → indexes/<hex>.landmark
  std::unordered_map<std::string, FileInfo> chunks;          // hex → chunks/xx/<hex>
  std::vector<std::pair<std::string, int64_t>> chunk_tmp;    // stray files in chunks/, mtime
  int64_t container_bytes = 0;
  // containers/<name> → bytes of that entry's tree (the entry itself included).
  std::unordered_map<std::string, int64_t> container_entry_bytes;
  int64_t total = 0;
};

Result<Inventory> TakeInventory(const Store& store) {
  namespace fs = std::filesystem;
  Inventory inv;
  const std::string& root = store.root();
  struct stat st {};
  if (::lstat(root.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + root);
  inv.total += st.st_size;
  const dev_t root_dev = st.st_dev;
  std::set<std::pair<dev_t, ino_t>> linked;
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  if (ec) return Status::FromErrno(ec.value(), "list " + root);
  const std::string blobs_dir = root + "/blobs/sha256/";
  const std::string idx_dir = root + "/indexes/";
  const std::string chunk_dir = root + "/chunks/";
  const std::string containers_dir = root + "/containers";
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      // A file removed while we walk: skip it.
      ec.clear();
      continue;
    }
    const std::string path = it->path().string();
    if (::lstat(path.c_str(), &st) != 0) continue;
    if (st.st_dev != root_dev) {
      // A filesystem mounted inside the store (a running container's rootfs): not the
      // store's data (du -x would skip it too).
      if (S_ISDIR(st.st_mode)) it.disable_recursion_pending();
      continue;
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second) {
      continue;  // a hard link counted already (du counts it once)
    }
    inv.total += st.st_size;
    if (path.starts_with(containers_dir) &&
        (path.size() == containers_dir.size() || path[containers_dir.size()] == '/')) {
      inv.container_bytes += st.st_size;
      if (path.size() > containers_dir.size() + 1) {
        size_t end = path.find('/', containers_dir.size() + 1);
        std::string entry = path.substr(
            containers_dir.size() + 1,
            end == std::string::npos ? std::string::npos : end - containers_dir.size() - 1);
        inv.container_entry_bytes[entry] += st.st_size;
      }
      continue;
    }
    if (!S_ISREG(st.st_mode)) continue;
    const std::string name = it->path().filename().string();
    FileInfo info{st.st_size, st.st_mtim.tv_sec};
    if (path.starts_with(blobs_dir) && path.size() == blobs_dir.size() + 64 && IsHex64(name)) {
      inv.blobs[name] = info;
    } else if (std::optional<IndexKey> key = IndexStore::KeyOfFileName(name);
               key.has_value() && path.starts_with(idx_dir) &&
               path.size() == idx_dir.size() + name.size()) {
      LayerIndexFiles& layer = inv.indexes[key->layer.hex()];
      layer.files.push_back({name, std::move(key).value(), info.size});
      layer.size += info.size;
    } else if (path.starts_with(idx_dir) && name.size() == 73 && name.ends_with(".landmark") &&
               path.size() == idx_dir.size() + 73 && IsHex64(name.substr(0, 64))) {
      inv.landmarks[name.substr(0, 64)] = info;
    } else if (path.starts_with(chunk_dir) && path.size() == chunk_dir.size() + 3 + 64 &&
               IsHex64(name) && path.compare(chunk_dir.size(), 2, name, 0, 2) == 0) {
      inv.chunks[name] = info;
    } else if (path.starts_with(chunk_dir)) {
      inv.chunk_tmp.emplace_back(path, info.mtime);
    }
  }
  return inv;
}

// One image: every index.json entry with the same config digest (or a lease/container-only
// manifest).
struct ImageModel {
  Digest id;
  std::vector<Digest> manifests;
  std::vector<ImageRecord> records;
  Reach reach;
  std::vector<std::string> pinned_by;
  bool recorded = false;
  int64_t last_used = 0;
  std::unordered_set<std::string> chunks;  // chunk hexes named by its stored layer indexes
};

struct Model {
  std::vector<ImageModel> images;
  bool ok = true;  // every stored document was readable
  std::vector<LeaseInfo> leases;
};

// Chunks named by the stored index file `file` (cached per file name).
const std::vector<std::string>& ChunksOfIndex(
    const Store& store, const UsageOptions& options, const LayerIndexFiles::File& file,
    std::unordered_map<std::string, std::vector<std::string>>* cache) {
  auto [it, inserted] = cache->try_emplace(file.name);
  // A merged tree (IndexKey::kTree) names no chunks.
  if (!inserted || !options.chunk_lister || file.key.kind == IndexKey::Kind::kTree) {
    return it->second;
  }
  IndexStore index_store(store.root());
  Result<std::string> bytes = index_store.Get(file.key);
  if (!bytes.has_value()) {
    if (bytes.error().code() != StatusCode::kNotFound) {
      IMGFS_LOG(kInfo) << "store scan: index " << file.name << ": " << bytes.error().ToString();
    }
    return it->second;
  }
  Result<std::vector<Digest>> listed = options.chunk_lister(*bytes);
  if (!listed.has_value()) {
    IMGFS_LOG(kInfo) << "store scan: index " << file.name << ": " << listed.error().ToString();
    return it->second;
  }
  for (const Digest& d : *listed) {
    if (d.algorithm() == "sha256" && !d.empty()) it->second.push_back(d.hex());
  }
  return it->second;
}

// Builds the image model. `leases` must be the live leases (read under index.lock by
// callers that delete).
Model BuildModel(const Store& store, const std::vector<ImageRecord>& records,
                 std::vector<LeaseInfo> leases, const Inventory& inv, const UsageOptions& options,
                 std::unordered_map<std::string, std::vector<std::string>>* index_cache) {
  // index_cache: chunk hexes by index file name.
  Model model;
  model.leases = std::move(leases);
  std::map<std::string, size_t> by_id;        // config hex → image
  std::map<std::string, size_t> by_manifest;  // manifest hex → image
  auto add_manifest = [&](const Digest& manifest) -> size_t {
    if (auto m = by_manifest.find(manifest.hex()); m != by_manifest.end()) return m->second;
    Reach reach;
    AddReach(store, manifest, 0, &reach);
    model.ok = model.ok && reach.ok;
    Digest id = reach.config.empty() ? manifest : reach.config;
    size_t pos;
    if (auto i = by_id.find(id.hex()); i != by_id.end()) {
      pos = i->second;
      model.images[pos].reach.hexes.insert(reach.hexes.begin(), reach.hexes.end());
    } else {
      pos = model.images.size();
      by_id[id.hex()] = pos;
      ImageModel img;
      img.id = id;
      img.reach = std::move(reach);
      model.images.push_back(std::move(img));
    }
    model.images[pos].manifests.push_back(manifest);
    by_manifest[manifest.hex()] = pos;
    return pos;
  };
  for (const ImageRecord& r : records) {
    size_t pos = add_manifest(r.manifest.digest);
    ImageModel& img = model.images[pos];
    img.records.push_back(r);
    img.recorded = true;
    if (!r.repo_digest.empty() && r.repo_digest != r.manifest.digest) {
      Reach extra;
      AddReach(store, r.repo_digest, 0, &extra);
      model.ok = model.ok && extra.ok;
      img.reach.hexes.insert(extra.hexes.begin(), extra.hexes.end());
    }
  }
  for (const LeaseInfo& l : model.leases) {
    size_t pos = add_manifest(l.manifest);
    model.images[pos].pinned_by.push_back("mount " + l.mountpoint);
  }
  for (const auto& [name, manifest] : ContainerImages(store)) {
    size_t pos = add_manifest(manifest);
    model.images[pos].pinned_by.push_back("container " + name);
  }
  for (ImageModel& img : model.images) {
    for (const Digest& m : img.manifests) {
      if (auto b = inv.blobs.find(m.hex()); b != inv.blobs.end()) {
        img.last_used = std::max(img.last_used, b->second.mtime);
      }
    }
    for (const std::string& hex : img.reach.hexes) {
      auto files = inv.indexes.find(hex);
      if (files == inv.indexes.end()) continue;
      for (const LayerIndexFiles::File& file : files->second.files) {
        // An index published for another image serves that image only (and goes with it).
        if (file.key.kind == IndexKey::Kind::kImage &&
            img.reach.hexes.count(file.key.origin.hex()) == 0) {
          continue;
        }
        for (const std::string& c : ChunksOfIndex(store, options, file, index_cache)) {
          img.chunks.insert(c);
        }
      }
    }
  }
  return model;
}

// Everything a set of images reaches.
struct KeepSet {
  std::unordered_set<std::string> blobs;  // also used for indexes (same hex)
  std::unordered_set<std::string> chunks;
};

KeepSet KeepOf(const Model& model, bool pinned_only) {
  KeepSet keep;
  for (const ImageModel& img : model.images) {
    if (pinned_only && img.pinned_by.empty()) continue;
    keep.blobs.insert(img.reach.hexes.begin(), img.reach.hexes.end());
    keep.chunks.insert(img.chunks.begin(), img.chunks.end());
  }
  return keep;
}

// Deletion rank of an unreferenced blob: 0 for an image index (names manifests), 1 for a
// manifest (names a config and layers), 2 for anything else (configs, layers). Deleting in
// rank order never leaves a document naming a deleted blob. (An image config also has a
// "config" key, but an object without a digest: it is a leaf.)
int DeletionRank(const Store& store, const std::string& hex, int64_t size) {
  if (size > kMaxDocumentBytes) return 2;
  auto bytes = ReadFile(store.root() + "/blobs/sha256/" + hex);
  if (!bytes.has_value()) return 2;
  json j = json::parse(*bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return 2;
  if (j.contains("manifests")) return 0;
  auto config = j.find("config");
  bool config_descriptor = config != j.end() && config->is_object() && config->contains("digest");
  if (j.contains("layers") || j.contains("blobs") || config_descriptor) return 1;
  return 2;
}

// Unlinks `path`; adds its size to *freed. ENOENT counts as done (a concurrent GC won).
Status Unlink(const std::string& path, int64_t size, int64_t* freed, int64_t* count) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, "remove " + path);
  }
  *freed += size;
  ++*count;
  return Status::Ok();
}

std::string ChunkPath(const Store& store, const std::string& hex) {
  return store.root() + "/chunks/" + hex.substr(0, 2) + "/" + hex;
}

// The sweep of GC, with gc.lock and index.lock held: deletes what no image reaches, in the
// crash-safe order of the file comment. Updates `inv` (deleted files leave it).
Status SweepLocked(Store& store, const UsageOptions& options, const Model& model, Inventory* inv,
                   GcReport* report) {
  if (!model.ok) {
    IMGFS_LOG(kWarning) << "garbage collection: an image document could not be read; nothing "
                           "deleted";
    return Status::Ok();
  }
  KeepSet keep = KeepOf(model, /*pinned_only=*/false);
  // 1. Unreferenced image indexes, then manifests, then the blobs they named.
  std::vector<std::string> by_rank[3];
  for (const auto& [hex, info] : inv->blobs) {
    if (keep.blobs.count(hex) > 0) continue;
    by_rank[DeletionRank(store, hex, info.size)].push_back(hex);
  }
  int64_t blobs_deleted = 0;
  for (const auto& list : by_rank) {
    for (const std::string& hex : list) {
      IMGFS_RETURN_IF_ERROR(Unlink(store.root() + "/blobs/sha256/" + hex, inv->blobs[hex].size,
                                   &report->bytes_freed, &blobs_deleted));
      inv->blobs.erase(hex);
    }
  }
  report->blobs_deleted += static_cast<int>(blobs_deleted);
  // 2. Indexes of layers no image has, and indexes published for an image that is gone (an
  // image's published index serves no other image, index_store.h).
  IndexStore index_store(store.root());
  std::vector<std::string> emptied;
  for (auto& [hex, layer] : inv->indexes) {
    const bool layer_kept = keep.blobs.count(hex) != 0;
    std::vector<LayerIndexFiles::File> kept;
    for (LayerIndexFiles::File& file : layer.files) {
      const bool stale = !layer_kept || (file.key.kind == IndexKey::Kind::kImage &&
                                         keep.blobs.count(file.key.origin.hex()) == 0);
      if (!stale) {
        kept.push_back(std::move(file));
        continue;
      }
      int64_t n = 0;
      IMGFS_RETURN_IF_ERROR(
          Unlink(store.root() + "/indexes/" + file.name, file.size, &report->bytes_freed, &n));
      report->indexes_deleted += static_cast<int>(n);
      layer.size -= file.size;
    }
    layer.files = std::move(kept);
    if (layer.files.empty()) emptied.push_back(hex);
  }
  for (const std::string& hex : emptied) inv->indexes.erase(hex);
  // Landmark records (IndexStore::PutLandmark, a few bytes) of layers no image has, with or
  // without their index.
  for (const auto& [hex, info] : inv->landmarks) {
    if (keep.blobs.count(hex) != 0) continue;
    Result<registry::Digest> layer = registry::Digest::Parse("sha256:" + hex);
    if (!layer.has_value()) continue;
    int64_t ignored = 0;
    IMGFS_RETURN_IF_ERROR(
        Unlink(index_store.LandmarkPathFor(*layer), info.size, &report->bytes_freed, &ignored));
  }
  // 3. Chunks no kept index names (only when indexes can be read), and stray temp files.
  if (options.chunk_lister) {
    std::vector<std::string> stale_chunks;
    for (const auto& [hex, info] : inv->chunks) {
      if (keep.chunks.count(hex) == 0) stale_chunks.push_back(hex);
    }
    for (const std::string& hex : stale_chunks) {
      int64_t n = 0;
      IMGFS_RETURN_IF_ERROR(
          Unlink(ChunkPath(store, hex), inv->chunks[hex].size, &report->bytes_freed, &n));
      report->chunks_deleted += n;
      inv->chunks.erase(hex);
    }
  }
  int64_t now = ::time(nullptr);
  for (const auto& [path, mtime] : inv->chunk_tmp) {
    if (now - mtime > kStaleChunkTmpSeconds) ::unlink(path.c_str());
  }
  // 4. Control sockets of mounts that are gone (fs/mount_services.h: control/<lease>.sock).
  std::unordered_set<std::string> live_ids;
  for (const LeaseInfo& l : model.leases) live_ids.insert(l.id + ".sock");
  std::error_code ec;
  std::vector<std::string> stale_sockets;
  for (std::filesystem::directory_iterator it(store.Subdir("control"), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (live_ids.count(it->path().filename().string()) == 0) {
      stale_sockets.push_back(it->path().string());
    }
  }
  for (const std::string& p : stale_sockets) ::unlink(p.c_str());
  return Status::Ok();
}

// Leftover temporary files of interrupted index.json writes (writers hold index.lock).
void RemoveIndexTemps(const Store& store) {
  std::error_code ec;
  std::vector<std::filesystem::path> paths;
  for (std::filesystem::directory_iterator top(store.root(), ec);
       !ec && top != std::filesystem::directory_iterator(); top.increment(ec)) {
    if (top->path().filename().string().starts_with("index.json.tmp-")) {
      paths.push_back(top->path());
    }
  }
  for (const auto& p : paths) ::unlink(p.c_str());
}

}  // namespace

// ---------------------------------------------------------------------------------------

std::vector<std::pair<std::string, Digest>> ContainerImages(const Store& store) {
  std::vector<std::pair<std::string, Digest>> out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(store.Subdir("containers"), ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.starts_with(".")) continue;  // a container being removed
    std::string file = it->path().string() + "/container.json";
    Result<std::string> text = ReadFile(file);
    if (!text.has_value()) {
      if (text.error().code() != StatusCode::kNotFound) {
        IMGFS_LOG(kWarning) << "container " << name << ": " << text.error().ToString();
      }
      continue;
    }
    json j = json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("image") || !j["image"].is_string()) {
      IMGFS_LOG(kWarning) << "container " << name << ": " << file << " has no \"image\"";
      continue;
    }
    auto digest = Digest::Parse(j["image"].get<std::string>());
    if (!digest.has_value()) {
      IMGFS_LOG(kWarning) << "container " << name << ": " << digest.error().ToString();
      continue;
    }
    out.emplace_back(name, *digest);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<StoreUsage> ScanUsage(const Store& store, const UsageOptions& options) {
  IMGFS_ASSIGN_OR_RETURN(Inventory inv, TakeInventory(store));
  IMGFS_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, store.ListRecords());
  IMGFS_ASSIGN_OR_RETURN(std::vector<LeaseInfo> leases, ListLiveLeases(store));
  std::unordered_map<std::string, std::vector<std::string>> index_cache;
  Model model = BuildModel(store, records, std::move(leases), inv, options, &index_cache);

  // Abandoned directories in containers/ (cache/containers.h): part of container_bytes.
  int64_t abandoned = 0;
  int64_t abandoned_bytes = 0;
  for (const AbandonedContainerDir& d : ListAbandonedContainerDirs(store, model.leases)) {
    ++abandoned;
    auto found = inv.container_entry_bytes.find(d.name);
    if (found != inv.container_entry_bytes.end()) abandoned_bytes += found->second;
  }

  // How many images reach each file.
  std::unordered_map<std::string, int> blob_refs;
  std::unordered_map<std::string, int> chunk_refs;
  for (const ImageModel& img : model.images) {
    for (const std::string& h : img.reach.hexes) ++blob_refs[h];
    for (const std::string& c : img.chunks) ++chunk_refs[c];
  }
  StoreUsage u;
  for (const ImageModel& img : model.images) {
    ImageUsage iu;
    iu.id = img.id;
    iu.manifest = img.manifests.front();
    std::set<std::string> names;
    for (const ImageRecord& r : img.records) {
      std::string n = FamiliarOf(r);
      if (!n.empty()) names.insert(n);
    }
    iu.names.assign(names.begin(), names.end());
    iu.image_bytes = img.reach.image_bytes;
    for (const Descriptor& l : img.reach.layers) {
      if (inv.blobs.count(l.digest.hex()) == 0) iu.complete = false;
    }
    for (const std::string& h : img.reach.hexes) {
      bool shared = blob_refs[h] > 1;
      if (auto b = inv.blobs.find(h); b != inv.blobs.end()) {
        iu.blob_bytes += b->second.size;
        if (shared) iu.shared_bytes += b->second.size;
      }
      if (auto i = inv.indexes.find(h); i != inv.indexes.end()) {
        iu.index_bytes += i->second.size;
        if (shared) iu.shared_bytes += i->second.size;
      }
    }
    for (const std::string& c : img.chunks) {
      if (auto f = inv.chunks.find(c); f != inv.chunks.end()) {
        iu.chunk_bytes += f->second.size;
        if (chunk_refs[c] > 1) iu.shared_bytes += f->second.size;
      }
    }
    iu.size_bytes = iu.blob_bytes + iu.index_bytes + iu.chunk_bytes;
    iu.unique_bytes = iu.size_bytes - iu.shared_bytes;
    iu.last_used_unix = img.last_used;
    iu.last_used = Rfc3339(img.last_used);
    iu.pinned_by = img.pinned_by;
    iu.recorded = img.recorded;
    u.images.push_back(std::move(iu));
  }
  std::stable_sort(u.images.begin(), u.images.end(), [](const ImageUsage& a, const ImageUsage& b) {
    return a.last_used_unix > b.last_used_unix;
  });
  for (const auto& [hex, info] : inv.blobs) {
    u.blob_bytes += info.size;
    ++u.blobs;
    auto r = blob_refs.find(hex);
    if (r == blob_refs.end()) {
      u.unreferenced_blob_bytes += info.size;
      ++u.unreferenced_blobs;
    } else if (r->second > 1) {
      u.shared_bytes += info.size;
    }
  }
  for (const auto& [hex, info] : inv.indexes) {
    u.index_bytes += info.size;
    u.indexes += static_cast<int64_t>(info.files.size());
    auto r = blob_refs.find(hex);
    if (r == blob_refs.end()) {
      u.unreferenced_index_bytes += info.size;
      u.unreferenced_indexes += static_cast<int64_t>(info.files.size());
    } else if (r->second > 1) {
      u.shared_bytes += info.size;
    }
  }
  for (const auto& [hex, info] : inv.chunks) {
    u.chunk_bytes += info.size;
    ++u.chunks;
    auto r = chunk_refs.find(hex);
    if (r == chunk_refs.end()) {
      u.unreferenced_chunk_bytes += info.size;
      ++u.unreferenced_chunks;
    } else if (r->second > 1) {
      u.shared_bytes += info.size;
    }
  }
  const KeepSet pinned = KeepOf(model, /*pinned_only=*/true);
  for (const std::string& hex : pinned.blobs) {
    if (auto b = inv.blobs.find(hex); b != inv.blobs.end()) u.pinned_blob_bytes += b->second.size;
    if (auto i = inv.indexes.find(hex); i != inv.indexes.end())
      u.pinned_blob_bytes += i->second.size;
  }
  for (const std::string& hex : pinned.chunks) {
    if (auto c = inv.chunks.find(hex); c != inv.chunks.end()) {
      u.pinned_chunk_bytes += c->second.size;
      ++u.pinned_chunks;
    }
  }
  u.container_entry_bytes.insert(inv.container_entry_bytes.begin(),
                                 inv.container_entry_bytes.end());
  u.container_bytes = inv.container_bytes;
  u.abandoned_containers = abandoned;
  u.abandoned_container_bytes = abandoned_bytes;
  u.total_bytes = inv.total;
  u.metadata_bytes = inv.total - u.blob_bytes - u.index_bytes - u.chunk_bytes - u.container_bytes;
  return u;
}

Result<int64_t> StoreSizeBytes(const Store& store) {
  IMGFS_ASSIGN_OR_RETURN(Inventory inv, TakeInventory(store));
  return inv.total;
}

Result<GcReport> CollectGarbage(Store& store, const UsageOptions& options) {
  GcReport report;
  IMGFS_ASSIGN_OR_RETURN(FileLock gc_lock, store.LockGcExclusive());
  IMGFS_ASSIGN_OR_RETURN(report.tmp_entries_removed, store.CleanTmpLocked());
  IMGFS_ASSIGN_OR_RETURN(FileLock index_lock, store.LockIndex());
  IMGFS_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, store.ReadRecordsUnlocked());
  IMGFS_ASSIGN_OR_RETURN(std::vector<LeaseInfo> leases,
                         ListLiveLeasesLocked(store, &report.stale_leases_removed));
  RemoveIndexTemps(store);
  // Temporary uppers of killed mount daemons and half-created containers (their owner is
  // gone), before the inventory so their space is gone from it.
  int abandoned = RemoveAbandonedContainerDirs(store, leases);
  if (abandoned > 0) {
    IMGFS_LOG(kInfo) << "removed " << abandoned << " abandoned director"
                     << (abandoned == 1 ? "y" : "ies") << " in containers/";
  }
  IMGFS_ASSIGN_OR_RETURN(Inventory inv, TakeInventory(store));
  std::unordered_map<std::string, std::vector<std::string>> index_cache;
  Model model = BuildModel(store, records, std::move(leases), inv, options, &index_cache);
  IMGFS_RETURN_IF_ERROR(SweepLocked(store, options, model, &inv, &report));
  return report;
}

Result<PruneReport> Prune(Store& store, int64_t max_bytes, const UsageOptions& options) {
  PruneReport out;
  IMGFS_ASSIGN_OR_RETURN(out.gc, CollectGarbage(store, options));
  IMGFS_ASSIGN_OR_RETURN(FileLock gc_lock, store.LockGcExclusive());
  IMGFS_ASSIGN_OR_RETURN(FileLock index_lock, store.LockIndex());
  IMGFS_ASSIGN_OR_RETURN(Inventory inv, TakeInventory(store));
  out.before_bytes = inv.total;
  int64_t total = inv.total;
  auto done = [&] {
    out.after_bytes = total;
    out.under_limit = total <= max_bytes;
    return out;
  };
  if (total <= max_bytes) return done();

  IMGFS_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, store.ReadRecordsUnlocked());
  int stale = 0;
  IMGFS_ASSIGN_OR_RETURN(std::vector<LeaseInfo> leases, ListLiveLeasesLocked(store, &stale));
  std::unordered_map<std::string, std::vector<std::string>> index_cache;
  Model model = BuildModel(store, records, leases, inv, options, &index_cache);
  if (!model.ok) {
    IMGFS_LOG(kWarning) << "prune: an image document could not be read; nothing evicted";
    return done();
  }
  KeepSet pinned = KeepOf(model, /*pinned_only=*/true);

  // 1. Chunks, least recently used first. Without a chunk lister, a pinned image's chunks
  //    cannot be told apart: then no chunk is evicted while any mount runs.
  bool chunks_known = static_cast<bool>(options.chunk_lister) || model.leases.empty();
  if (chunks_known) {
    std::vector<std::pair<int64_t, std::string>> lru;
    for (const auto& [hex, info] : inv.chunks) {
      if (pinned.chunks.count(hex) == 0) lru.emplace_back(info.mtime, hex);
    }
    std::sort(lru.begin(), lru.end());
    for (const auto& [mtime, hex] : lru) {
      if (total <= max_bytes) return done();
      int64_t freed = 0;
      int64_t n = 0;
      IMGFS_RETURN_IF_ERROR(Unlink(ChunkPath(store, hex), inv.chunks[hex].size, &freed, &n));
      out.chunks_deleted += n;
      out.chunk_bytes_freed += freed;
      total -= freed;
      inv.chunks.erase(hex);
    }
  }
  if (total <= max_bytes) return done();

  // Unpinned images, least recently used first.
  std::vector<const ImageModel*> lru_images;
  for (const ImageModel& img : model.images) {
    if (img.pinned_by.empty() && img.recorded) lru_images.push_back(&img);
  }
  std::stable_sort(
      lru_images.begin(), lru_images.end(),
      [](const ImageModel* a, const ImageModel* b) { return a->last_used < b->last_used; });

  // 2. Blobs of lazily mountable layers of images a lazy mount can fetch them for again.
  auto refetchable = [](const ImageModel& img) {
    return std::any_of(img.records.begin(), img.records.end(), [](const ImageRecord& r) {
      return !r.dangling() && !r.reference.starts_with("localhost/");
    });
  };
  for (const ImageModel* img : lru_images) {
    if (!refetchable(*img)) continue;
    for (const Descriptor& layer : img->reach.layers) {
      if (total <= max_bytes) return done();
      const std::string& hex = layer.digest.hex();
      if (!registry::media::IsLazyLayer(layer) || pinned.blobs.count(hex) > 0 ||
          inv.blobs.count(hex) == 0) {
        continue;
      }
      int64_t freed = 0;
      int64_t n = 0;
      IMGFS_RETURN_IF_ERROR(Unlink(store.BlobPath(layer.digest), inv.blobs[hex].size, &freed, &n));
      out.layers_evicted += n;
      out.layer_bytes_freed += freed;
      total -= freed;
      inv.blobs.erase(hex);
    }
  }
  if (total <= max_bytes) return done();

  // 3. Whole images: drop their index.json entries (atomic), then sweep what they reached.
  for (const ImageModel* img : lru_images) {
    if (total <= max_bytes) break;
    std::vector<ImageRecord> kept;
    std::set<Digest> manifests(img->manifests.begin(), img->manifests.end());
    for (const ImageRecord& r : records) {
      if (manifests.count(r.manifest.digest) == 0) kept.push_back(r);
    }
    IMGFS_RETURN_IF_ERROR(store.WriteRecordsUnlocked(kept));
    records = std::move(kept);
    std::string name = img->records.empty() ? img->id.Short() : FamiliarOf(img->records.front());
    out.images_removed.push_back(name.empty() ? img->id.Short() : name);
    Model now = BuildModel(store, records, leases, inv, options, &index_cache);
    GcReport sweep;
    IMGFS_RETURN_IF_ERROR(SweepLocked(store, options, now, &inv, &sweep));
    out.image_bytes_freed += sweep.bytes_freed;
    total -= sweep.bytes_freed;
  }
  // The rewritten index.json and directories change the metadata a little: measure again.
  auto measured = TakeInventory(store);
  if (measured.has_value()) total = measured->total;
  return done();
}

Status TouchImage(const Store& store, const Digest& manifest) {
  std::string path = store.BlobPath(manifest);
  if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "touch " + path);
  }
  return Status::Ok();
}

Result<CacheConfig> LoadCacheConfig(const Store& store) {
  CacheConfig config;
  std::string path = store.root() + "/" + std::string(kCacheConfigFile);
  Result<std::string> text = ReadFile(path);
  if (!text.has_value()) {
    if (text.error().code() == StatusCode::kNotFound) return config;
    return text.error();
  }
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corrupt(path + " is not a JSON object");
  if (auto it = j.find("max_size"); it != j.end() && it->is_number_integer()) {
    if (it->get<int64_t>() >= 0) config.max_size_bytes = it->get<int64_t>();
  }
  if (auto it = j.find("prune_interval_seconds"); it != j.end() && it->is_number_integer()) {
    config.prune_interval_seconds =
        static_cast<int>(std::clamp<int64_t>(it->get<int64_t>(), 1, 24 * 3600));
  }
  return config;
}

Status SaveCacheConfig(const Store& store, const CacheConfig& config) {
  std::string path = store.root() + "/" + std::string(kCacheConfigFile);
  // Keep keys other tools may have added.
  json j = json::object();
  if (Result<std::string> text = ReadFile(path); text.has_value()) {
    json old = json::parse(*text, nullptr, false);
    if (!old.is_discarded() && old.is_object()) j = std::move(old);
  }
  if (config.max_size_bytes.has_value()) {
    j["max_size"] = *config.max_size_bytes;
  } else {
    j.erase("max_size");
  }
  j["prune_interval_seconds"] = config.prune_interval_seconds;
  return WriteFileAtomic(path, j.dump(2) + "\n");
}

Result<int64_t> ParseSize(std::string_view text) {
  auto bad = [&] {
    return Status::InvalidArgument("invalid size '" + std::string(text) +
                                   "' (examples: 20G, 500M, 1.5GiB, 4096)");
  };
  size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
  std::string_view number = text.substr(0, i);
  std::string unit(text.substr(i));
  if (number.empty() || number == "." || std::count(number.begin(), number.end(), '.') > 1) {
    return bad();
  }
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::map<std::string, double, std::less<>> kUnits = {
      {"", 1.0},
      {"b", 1.0},
      {"k", 1e3},
      {"kb", 1e3},
      {"m", 1e6},
      {"mb", 1e6},
      {"g", 1e9},
      {"gb", 1e9},
      {"t", 1e12},
      {"tb", 1e12},
      {"ki", 1024.0},
      {"kib", 1024.0},
      {"mi", 1048576.0},
      {"mib", 1048576.0},
      {"gi", 1073741824.0},
      {"gib", 1073741824.0},
      {"ti", 1099511627776.0},
      {"tib", 1099511627776.0},
  };
  auto u = kUnits.find(unit);
  if (u == kUnits.end()) return bad();
  double value = std::strtod(std::string(number).c_str(), nullptr) * u->second;
  if (!std::isfinite(value) || value < 0 || value > 9.0e18) return bad();
  return static_cast<int64_t>(std::llround(value));
}

}  // namespace imgfs::cache
