// imgfs — tests for cache/usage.h: disk use that adds up to `du -sb`, garbage collection of
// blobs, indexes and chunks, container and mount pins, LRU prune order and the size config.
// (`imgfs cache gc` killed at random points runs the binary:
// tests/integration/cache_gc_kill_test.cc.)
#include "cache/usage.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/chunk_store.h"
#include "cache/containers.h"
#include "cache/images.h"
#include "cache/index_store.h"
#include "cache/leases.h"
#include "fs/layer/layer_index.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using registry::Digest;
using testing::D;
using testing::EncodedChunkIndex;
using testing::MakeImage;
using testing::Ref;
using testing::RunCommand;
using testing::SyntheticImage;
using testing::TempDir;

constexpr char kEstargzAnnotation[] = "containerd.io/snapshot/stargz/toc.digest";

// `du -sb DIR` in bytes (-1 on failure).
int64_t DuSb(const std::string& dir) {
  std::string out;
  if (RunCommand("du -sb '" + dir + "'", &out) != 0) return -1;
  return std::stoll(out);
}

void SetMtime(const std::string& path, int64_t unix_seconds) {
  timespec times[2] = {{unix_seconds, 0}, {unix_seconds, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0) << path;
}

class UsageTest : public testing::UsageStoreTest {
 protected:
  void Record(const std::string& ref, const SyntheticImage& img) {
    Status st = store_->RecordImage(Ref(ref), img.manifest, {});
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  // Stores `chunks` in the chunk store and an index naming them for `layer`.
  void AddChunks(const Digest& layer, const std::vector<std::string>& chunks) {
    ChunkStore cs(Root());
    for (const auto& c : chunks) ASSERT_TRUE(cs.Put(Digest::Sha256Of(c), c).ok());
    IndexStore is(Root());
    std::string encoded = EncodedChunkIndex(layer, chunks);
    auto decoded = fs::LayerIndex::Decode(encoded);
    ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
    ASSERT_TRUE(is.Put(layer, encoded).ok());
  }
  std::string ChunkPath(const std::string& content) const {
    return ChunkStore(Root()).PathFor(Digest::Sha256Of(content));
  }
  bool Exists(const std::string& path) const { return ::access(path.c_str(), F_OK) == 0; }
  const ImageUsage* Find(const StoreUsage& u, const std::string& name) {
    for (const auto& i : u.images) {
      for (const auto& n : i.names) {
        if (n == name) return &i;
      }
    }
    ADD_FAILURE() << name << " not in the usage report";
    return nullptr;
  }
};

TEST_F(UsageTest, NumbersAddUpToDuOfTheStore) {
  std::string shared_layer(30000, 's');
  SyntheticImage a = MakeImage(*store_, {shared_layer, std::string(50000, 'a')}, "2024-01-01", "a");
  SyntheticImage b = MakeImage(*store_, {shared_layer, std::string(70000, 'b')}, "2024-01-02", "b");
  Record("example.com/a:1", a);
  Record("example.com/b:1", b);
  ASSERT_TRUE(store_->PutBlob(std::string(9000, 'u')).has_value());  // unreferenced blob
  std::string c1(4000, '1');
  std::string c2(5000, '2');
  std::string c3(6000, '3');
  AddChunks(a.layers[1], {c1, c2});  // a's own layer
  AddChunks(a.layers[0], {c2});      // shared layer: c2 reached by both images
  ChunkStore cs(Root());
  ASSERT_TRUE(cs.Put(Digest::Sha256Of(c3), c3).ok());  // unreferenced chunk
  AddChunks(Digest::Sha256Of("gone layer"), {});       // index of a layer no image has
  ASSERT_TRUE(MakeDirs(Root() + "/containers/c1/upper/etc").ok());
  ASSERT_TRUE(WriteFileAtomic(Root() + "/containers/c1/upper/etc/x", std::string(777, 'x')).ok());

  StoreUsage u = Scan();
  ASSERT_EQ(u.images.size(), 2u);
  const ImageUsage* ia = Find(u, "example.com/a:1");
  const ImageUsage* ib = Find(u, "example.com/b:1");
  ASSERT_TRUE(ia != nullptr && ib != nullptr);
  // The shared layer, its index and chunk c2 are shared; a's own layer, its index and c1 are a's.
  struct stat st {};
  ASSERT_EQ(::stat(IndexStore(Root()).PathFor(a.layers[0]).c_str(), &st), 0);
  const int64_t shared_expected = 30000 + st.st_size + 5000;
  EXPECT_EQ(ia->shared_bytes, shared_expected);
  EXPECT_EQ(ib->shared_bytes, shared_expected);
  EXPECT_EQ(u.shared_bytes, shared_expected);
  EXPECT_EQ(ia->chunk_bytes, 4000 + 5000);
  EXPECT_EQ(ib->chunk_bytes, 5000);
  EXPECT_EQ(u.unreferenced_chunk_bytes, 6000);
  EXPECT_EQ(u.unreferenced_chunks, 1);
  EXPECT_EQ(u.unreferenced_blob_bytes, 9000);
  EXPECT_EQ(u.unreferenced_indexes, 1);
  EXPECT_TRUE(ia->complete);
  EXPECT_EQ(ia->unique_bytes + ia->shared_bytes, ia->size_bytes);

  // The identities of the file comment.
  int64_t unique = 0;
  for (const auto& i : u.images) unique += i.unique_bytes;
  EXPECT_EQ(unique + u.shared_bytes + u.unreferenced_bytes(),
            u.blob_bytes + u.index_bytes + u.chunk_bytes);
  EXPECT_EQ(u.blob_bytes + u.index_bytes + u.chunk_bytes + u.container_bytes + u.metadata_bytes,
            u.total_bytes);
  // And the total is what du(1) says, for the whole store and per data directory.
  EXPECT_EQ(u.total_bytes, DuSb(Root()));
  std::string out;
  ASSERT_EQ(RunCommand("find '" + Root() +
                           "/blobs/sha256' -type f -printf '%s\\n' | "
                           "awk '{s+=$1} END {print s}'",
                       &out),
            0);
  EXPECT_EQ(u.blob_bytes, std::stoll(out));
  EXPECT_EQ(u.container_bytes, DuSb(Root() + "/containers"));
  // Metadata slack: directories and small files, a few KiB each.
  EXPECT_GT(u.metadata_bytes, 0);
  EXPECT_LT(u.metadata_bytes, 1 << 20);
}

// Network-derived indexes (IndexStore keys by TOC digest or image manifest) are attributed,
// keep their chunks, and go when their layer goes — a published one also when the image it
// was found for goes, even if another image keeps the layer.
TEST_F(UsageTest, GcHandlesIndexesKeyedByTocAndImage) {
  SyntheticImage a = MakeImage(*store_, {"shared layer"}, "2024-01-01", "a");
  SyntheticImage gone = MakeImage(*store_, {"shared layer", "own layer"}, "2024-01-01", "g");
  ASSERT_EQ(a.layers[0], gone.layers[0]);
  Record("example.com/a:1", a);
  ChunkStore cs(Root());
  IndexStore is(Root());
  for (const char* c : {"toc chunk", "published chunk", "gone chunk"}) {
    ASSERT_TRUE(cs.Put(Digest::Sha256Of(c), c).ok());
  }
  const IndexKey by_toc = IndexKey::Toc(a.layers[0], Digest::Sha256Of("toc"));
  const IndexKey published_a = IndexKey::Image(a.layers[0], a.manifest.digest);
  const IndexKey published_gone = IndexKey::Image(a.layers[0], gone.manifest.digest);
  const IndexKey gone_layer = IndexKey::Toc(gone.layers[1], Digest::Sha256Of("toc 2"));
  ASSERT_TRUE(is.Put(by_toc, EncodedChunkIndex(a.layers[0], {"toc chunk"})).ok());
  ASSERT_TRUE(is.Put(published_a, EncodedChunkIndex(a.layers[0], {"published chunk"})).ok());
  ASSERT_TRUE(is.Put(published_gone, EncodedChunkIndex(a.layers[0], {"gone chunk"})).ok());
  ASSERT_TRUE(is.Put(gone_layer, EncodedChunkIndex(gone.layers[1], {"gone chunk"})).ok());

  StoreUsage u = Scan();
  EXPECT_EQ(u.indexes, 4);
  const ImageUsage* ia = Find(u, "example.com/a:1");
  ASSERT_NE(ia, nullptr);
  EXPECT_GT(ia->index_bytes, 0);
  EXPECT_GT(ia->chunk_bytes, 0);

  auto gc = CollectGarbage(*store_, options_);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  EXPECT_EQ(gc->indexes_deleted, 2);
  EXPECT_TRUE(Exists(is.PathFor(by_toc)));
  EXPECT_TRUE(Exists(is.PathFor(published_a)));
  EXPECT_FALSE(Exists(is.PathFor(published_gone))) << "published for an image that is gone";
  EXPECT_FALSE(Exists(is.PathFor(gone_layer)));
  EXPECT_TRUE(Exists(ChunkPath("toc chunk")));
  EXPECT_TRUE(Exists(ChunkPath("published chunk")));
  EXPECT_FALSE(Exists(ChunkPath("gone chunk")));
  EXPECT_EQ(Scan().indexes, 2);
}

// A merged tree (IndexKey::Tree, fs/tree/stored_tree.h) is kept while its manifest is, and
// counts as an index in the usage, which still adds up to du.
TEST_F(UsageTest, GcKeepsTheMergedTreeOfAKeptManifestOnly) {
  SyntheticImage a = MakeImage(*store_, {"layer a"}, "2024-01-01", "a");
  SyntheticImage gone = MakeImage(*store_, {"layer g"}, "2024-01-01", "g");
  Record("example.com/a:1", a);
  IndexStore is(Root());
  const IndexKey kept = IndexKey::Tree(a.manifest.digest);
  const IndexKey stale = IndexKey::Tree(gone.manifest.digest);
  ASSERT_TRUE(is.Put(kept, "tree of a").ok());
  ASSERT_TRUE(is.Put(stale, "tree of g").ok());
  StoreUsage u = Scan();
  EXPECT_EQ(u.indexes, 2);
  EXPECT_EQ(u.total_bytes, DuSb(Root()));
  auto gc = CollectGarbage(*store_, options_);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  EXPECT_EQ(gc->indexes_deleted, 1);
  EXPECT_TRUE(Exists(is.PathFor(kept)));
  EXPECT_FALSE(Exists(is.PathFor(stale)));
  EXPECT_EQ(Scan().total_bytes, DuSb(Root()));
}

TEST_F(UsageTest, GcDeletesUnreferencedBlobsIndexesAndChunksOnly) {
  SyntheticImage a = MakeImage(*store_, {"layer a1", "layer a2"}, "2024-01-01", "a");
  SyntheticImage gone = MakeImage(*store_, {"layer g"}, "2024-01-01", "g");
  Record("example.com/a:1", a);
  AddChunks(a.layers[0], {"kept chunk"});
  AddChunks(gone.layers[0], {"orphan chunk"});
  ChunkStore cs(Root());
  ASSERT_TRUE(cs.Put(Digest::Sha256Of("stray chunk"), "stray chunk").ok());
  ASSERT_TRUE(IndexStore(Root()).PutLandmark(a.layers[0], 4096).ok());
  ASSERT_TRUE(IndexStore(Root()).PutLandmark(gone.layers[0], 4096).ok());
  const Digest orphan = Digest::Sha256Of("a layer whose index was never written");
  ASSERT_TRUE(IndexStore(Root()).PutLandmark(orphan, 4096).ok());

  auto gc = CollectGarbage(*store_, options_);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  EXPECT_EQ(gc->blobs_deleted, 3);  // gone's manifest, config, layer
  EXPECT_EQ(gc->indexes_deleted, 1);
  EXPECT_EQ(gc->chunks_deleted, 2);
  EXPECT_FALSE(store_->HasBlob(gone.manifest.digest));
  EXPECT_FALSE(store_->HasBlob(gone.layers[0]));
  EXPECT_FALSE(Exists(IndexStore(Root()).PathFor(gone.layers[0])));
  EXPECT_FALSE(Exists(ChunkPath("orphan chunk")));
  EXPECT_FALSE(Exists(ChunkPath("stray chunk")));
  EXPECT_TRUE(Exists(ChunkPath("kept chunk")));
  EXPECT_TRUE(Exists(IndexStore(Root()).PathFor(a.layers[0])));
  // A landmark record goes with its index.
  EXPECT_FALSE(Exists(IndexStore(Root()).LandmarkPathFor(gone.layers[0])));
  EXPECT_FALSE(Exists(IndexStore(Root()).LandmarkPathFor(orphan)));
  EXPECT_TRUE(Exists(IndexStore(Root()).LandmarkPathFor(a.layers[0])));
  for (const Digest& d : {a.manifest.digest, a.config, a.layers[0], a.layers[1]}) {
    EXPECT_TRUE(store_->HasBlob(d)) << d.String();
  }
  // Nothing left to do; without a lister chunks are never deleted.
  ASSERT_TRUE(cs.Put(Digest::Sha256Of("stray chunk"), "stray chunk").ok());
  auto again = CollectGarbage(*store_);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->blobs_deleted + again->indexes_deleted + again->chunks_deleted, 0);
  EXPECT_TRUE(Exists(ChunkPath("stray chunk")));
  StoreUsage u = Scan();
  EXPECT_EQ(u.unreferenced_blobs, 0);
  EXPECT_EQ(u.unreferenced_chunks, 1);
}

TEST_F(UsageTest, ContainerPinsItsImageAgainstRmGcAndPrune) {
  SyntheticImage a = MakeImage(*store_, {std::string(20000, 'c')}, "2024-01-01", "a");
  Record("example.com/a:1", a);
  AddChunks(a.layers[0], {"container chunk"});
  ASSERT_TRUE(MakeDirs(Root() + "/containers/web/upper").ok());
  nlohmann::json cj = {{"version", 1}, {"name", "web"}, {"image", a.manifest.digest.String()}};
  ASSERT_TRUE(WriteFileAtomic(Root() + "/containers/web/container.json", cj.dump()).ok());

  auto refused = RemoveImage(*store_, "example.com/a:1", /*force=*/false);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("image is in use by container web"), std::string::npos)
      << refused.error().ToString();
  auto forced = RemoveImage(*store_, "example.com/a:1", /*force=*/true);
  ASSERT_TRUE(forced.has_value()) << forced.error().ToString();
  EXPECT_TRUE(store_->ListRecords()->empty());
  // The entry is gone but the container keeps every file of its image.
  ASSERT_TRUE(CollectGarbage(*store_, options_).has_value());
  auto pruned = Prune(*store_, 0, options_);
  ASSERT_TRUE(pruned.has_value()) << pruned.error().ToString();
  EXPECT_FALSE(pruned->under_limit);
  for (const Digest& d : {a.manifest.digest, a.config, a.layers[0]}) {
    EXPECT_TRUE(store_->HasBlob(d)) << d.String();
  }
  EXPECT_TRUE(Exists(ChunkPath("container chunk")));
  StoreUsage u = Scan();
  ASSERT_EQ(u.images.size(), 1u);
  EXPECT_FALSE(u.images[0].recorded);
  ASSERT_EQ(u.images[0].pinned_by.size(), 1u);
  EXPECT_EQ(u.images[0].pinned_by[0], "container web");
  // Once the container is gone, GC frees it.
  ASSERT_TRUE(RemoveTree(Root() + "/containers/web").ok());
  auto gc = CollectGarbage(*store_, options_);
  ASSERT_TRUE(gc.has_value());
  EXPECT_EQ(gc->blobs_deleted, 3);
  EXPECT_EQ(gc->chunks_deleted, 1);
}

TEST_F(UsageTest, PruneEvictsChunksThenLazyLayersThenImagesLeastRecentlyUsedFirst) {
  // Three images: old (used long ago), mid, new (used recently), and one pinned by a lease.
  SyntheticImage old_img = MakeImage(*store_, {std::string(40000, 'o')}, "2024-01-01", "old");
  SyntheticImage mid_img = MakeImage(*store_, {std::string(40000, 'm')}, "2024-01-01", "mid");
  SyntheticImage new_img = MakeImage(*store_, {std::string(40000, 'n')}, "2024-01-01", "new");
  SyntheticImage pinned = MakeImage(*store_, {std::string(40000, 'p')}, "2024-01-01", "pin");
  Record("example.com/old:1", old_img);
  Record("example.com/mid:1", mid_img);
  Record("example.com/new:1", new_img);
  Record("example.com/pinned:1", pinned);
  SetMtime(store_->BlobPath(old_img.manifest.digest), 1000000000);
  SetMtime(store_->BlobPath(mid_img.manifest.digest), 1100000000);
  SetMtime(store_->BlobPath(new_img.manifest.digest), 1200000000);
  SetMtime(store_->BlobPath(pinned.manifest.digest), 900000000);
  // Chunks: an old and a new one of `new`, and one of the pinned image.
  AddChunks(new_img.layers[0], {std::string(10000, '1'), std::string(10000, '2')});
  AddChunks(pinned.layers[0], {std::string(10000, '3')});
  SetMtime(ChunkPath(std::string(10000, '1')), 1000000000);
  SetMtime(ChunkPath(std::string(10000, '2')), 1300000000);
  auto lease = Lease::Acquire(*store_, pinned.manifest.digest, "/mnt/pinned", "x");
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();

  auto size = StoreSizeBytes(*store_);
  ASSERT_TRUE(size.has_value());
  // Just under the current size: the oldest unpinned chunk goes, nothing else.
  auto r1 = Prune(*store_, *size - 5000, options_);
  ASSERT_TRUE(r1.has_value()) << r1.error().ToString();
  EXPECT_TRUE(r1->under_limit);
  EXPECT_EQ(r1->chunks_deleted, 1);
  EXPECT_FALSE(Exists(ChunkPath(std::string(10000, '1'))));
  EXPECT_TRUE(Exists(ChunkPath(std::string(10000, '2'))));
  EXPECT_TRUE(r1->images_removed.empty());

  // Far under: every unpinned chunk, then images oldest first; never the pinned image.
  size = StoreSizeBytes(*store_);
  auto r2 = Prune(*store_, *size - 50000, options_);
  ASSERT_TRUE(r2.has_value()) << r2.error().ToString();
  EXPECT_TRUE(r2->under_limit);
  EXPECT_EQ(r2->chunks_deleted, 1);
  ASSERT_EQ(r2->images_removed.size(), 1u);
  EXPECT_EQ(r2->images_removed[0], "example.com/old:1");
  EXPECT_FALSE(store_->HasBlob(old_img.layers[0]));
  EXPECT_TRUE(store_->HasBlob(mid_img.layers[0]));
  EXPECT_TRUE(Exists(ChunkPath(std::string(10000, '3'))));

  // Down to nothing: only the pinned image stays.
  auto r3 = Prune(*store_, 0, options_);
  ASSERT_TRUE(r3.has_value()) << r3.error().ToString();
  EXPECT_FALSE(r3->under_limit);
  ASSERT_EQ(r3->images_removed.size(), 2u);
  EXPECT_EQ(r3->images_removed[0], "example.com/mid:1");
  EXPECT_EQ(r3->images_removed[1], "example.com/new:1");
  auto records = store_->ListRecords();
  ASSERT_TRUE(records.has_value());
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].reference, "example.com/pinned:1");
  for (const Digest& d : {pinned.manifest.digest, pinned.config, pinned.layers[0]}) {
    EXPECT_TRUE(store_->HasBlob(d)) << d.String();
  }
  EXPECT_TRUE(Exists(ChunkPath(std::string(10000, '3'))));
  EXPECT_TRUE(Exists(IndexStore(Root()).PathFor(pinned.layers[0])));
}

TEST_F(UsageTest, PruneEvictsLazilyMountableLayerBlobsBeforeWholeImages) {
  // An image whose layer is eStargz-annotated: prune drops the layer blob and keeps the
  // image (recorded, manifest and config present), like `pull --lazy` left it.
  std::string layer(60000, 'e');
  Digest layer_digest = *store_->PutBlob(layer);
  std::string config = testing::ConfigBytes({layer_digest.String()}, "2024-01-01", "lazy");
  Digest config_digest = *store_->PutBlob(config);
  nlohmann::json manifest = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"config",
       {{"mediaType", "application/vnd.oci.image.config.v1+json"},
        {"digest", config_digest.String()},
        {"size", config.size()}}},
      {"layers",
       {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
         {"digest", layer_digest.String()},
         {"size", layer.size()},
         {"annotations", {{kEstargzAnnotation, Digest::Sha256Of("toc").String()}}}}}}};
  std::string mbytes = manifest.dump();
  registry::Descriptor desc;
  desc.media_type = "application/vnd.oci.image.manifest.v1+json";
  desc.digest = *store_->PutBlob(mbytes);
  desc.size = static_cast<int64_t>(mbytes.size());
  ASSERT_TRUE(store_->RecordImage(Ref("registry.example.com/lazy:1"), desc, {}).ok());
  SyntheticImage plain = MakeImage(*store_, {std::string(60000, 'q')}, "2024-01-01", "plain");
  Record("example.com/plain:1", plain);
  SetMtime(store_->BlobPath(plain.manifest.digest), 1000000000);  // older than the lazy one

  auto size = StoreSizeBytes(*store_);
  ASSERT_TRUE(size.has_value());
  auto r = Prune(*store_, *size - 30000, options_);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_TRUE(r->under_limit);
  EXPECT_EQ(r->layers_evicted, 1);
  EXPECT_TRUE(r->images_removed.empty());
  EXPECT_FALSE(store_->HasBlob(layer_digest));
  EXPECT_TRUE(store_->HasBlob(desc.digest));
  EXPECT_TRUE(store_->HasBlob(config_digest));
  EXPECT_TRUE(store_->HasBlob(plain.layers[0]));
  // The image is listed as lazy and a later GC keeps what is left of it.
  auto list = ListImages(*store_);
  ASSERT_TRUE(list.has_value());
  for (const auto& s : *list) EXPECT_EQ(s.complete, s.reference != "registry.example.com/lazy:1");
  ASSERT_TRUE(CollectGarbage(*store_, options_).has_value());
  EXPECT_TRUE(store_->HasBlob(desc.digest));
  StoreUsage u = Scan();
  for (const auto& i : u.images) {
    if (!i.names.empty() && i.names[0] == "registry.example.com/lazy:1") {
      EXPECT_FALSE(i.complete);
    }
  }
}

TEST(CacheConfigTest, SizesParseAndConfigRoundTrips) {
  EXPECT_EQ(*ParseSize("20G"), 20000000000);
  EXPECT_EQ(*ParseSize("500M"), 500000000);
  EXPECT_EQ(*ParseSize("1.5GiB"), 1610612736);
  EXPECT_EQ(*ParseSize("4096"), 4096);
  EXPECT_EQ(*ParseSize("10kB"), 10000);
  EXPECT_EQ(*ParseSize("2Ki"), 2048);
  EXPECT_EQ(*ParseSize("0"), 0);
  for (const char* bad : {"", "G", "-1G", "1.2.3M", "12XB", "1e9", "abc"}) {
    EXPECT_FALSE(ParseSize(bad).has_value()) << bad;
  }
  TempDir dir;
  auto store = Store::Open(dir.path() + "/store");
  ASSERT_TRUE(store.has_value());
  auto empty = LoadCacheConfig(**store);
  ASSERT_TRUE(empty.has_value());
  EXPECT_FALSE(empty->max_size_bytes.has_value());
  EXPECT_EQ(empty->prune_interval_seconds, 60);
  CacheConfig c;
  c.max_size_bytes = 123456789;
  c.prune_interval_seconds = 5;
  ASSERT_TRUE(SaveCacheConfig(**store, c).ok());
  auto back = LoadCacheConfig(**store);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->max_size_bytes, 123456789);
  EXPECT_EQ(back->prune_interval_seconds, 5);
  ASSERT_TRUE(WriteFileAtomic((*store)->root() + "/config.json", "[1]").ok());
  EXPECT_EQ(LoadCacheConfig(**store).error().code(), StatusCode::kCorrupt);
}

TEST(ChunkLastUseTest, GetRefreshesAnOldChunksMtime) {
  TempDir dir;
  ChunkStore cs(dir.path());
  Digest d = Digest::Sha256Of("hello chunk");
  ASSERT_TRUE(cs.Put(d, "hello chunk").ok());
  SetMtime(cs.PathFor(d), 1000000000);
  ASSERT_TRUE(cs.Get(d).has_value());
  struct stat st {};
  ASSERT_EQ(::stat(cs.PathFor(d).c_str(), &st), 0);
  EXPECT_GT(st.st_mtime, ::time(nullptr) - 100);
}

// The pid and start time of a process that existed and is gone (reaped).
std::pair<pid_t, std::string> DeadProcess() {
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  std::string start = ProcessStartTime(child);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  return {child, start};
}

std::vector<std::string> ContainerEntries(const std::string& root) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(root + "/containers")) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST_F(UsageTest, GcDeletesAbandonedContainerDirsAndKeepsLiveOnes) {
  SyntheticImage a = MakeImage(*store_, {std::string(3000, 'a')}, "2024-01-01", "a");
  Record("example.com/a:1", a);
  const std::string containers = Root() + "/containers";
  auto [dead_pid, dead_start] = DeadProcess();
  ASSERT_GT(dead_pid, 0);
  ASSERT_FALSE(dead_start.empty());
  ASSERT_FALSE(ProcessIsAlive(dead_pid, dead_start));
  nlohmann::json dead_owner = {{"pid", dead_pid}, {"pid_start", dead_start}};
  auto make = [&](const std::string& name, const std::string& payload) {
    ASSERT_TRUE(MakeDirs(containers + "/" + name + "/upper/etc").ok());
    ASSERT_TRUE(WriteFileAtomic(containers + "/" + name + "/upper/etc/data", payload).ok());
  };
  auto owned_by_dead = [&](const std::string& name) {
    ASSERT_TRUE(WriteFileAtomic(containers + "/" + name + "/" + std::string(kContainerOwnerFile),
                                dead_owner.dump())
                    .ok());
  };
  // A killed mount daemon's temporary upper: abandoned.
  make("mount-00000000000000aa", std::string(10000, 'x'));
  owned_by_dead("mount-00000000000000aa");
  // A half-created container (claimed by a run that died before container.json): abandoned.
  make("t1", std::string(5000, 'y'));
  owned_by_dead("t1");
  // An old directory without an owner record (older imgfs): abandoned.
  make("mount-00000000000000bb", "old");
  SetMtime(containers + "/mount-00000000000000bb", ::time(nullptr) - 3600);
  // Kept: a live owner (this process), a fresh ownerless directory (a mount in the instant
  // between mkdir and its owner record), a dead owner whose upper a live lease names, a real
  // container with container.json, a removal that may still be running.
  make("mount-00000000000000cc", "live");
  ASSERT_TRUE(WriteContainerOwner(containers + "/mount-00000000000000cc").ok());
  make("mount-00000000000000dd", "fresh");
  make("mount-00000000000000ee", "leased");
  owned_by_dead("mount-00000000000000ee");
  auto lease = Lease::Acquire(*store_, a.manifest.digest, "/mnt/leftovers", "example.com/a:1",
                              containers + "/mount-00000000000000ee/upper");
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();
  make("web", "container");
  owned_by_dead("web");
  nlohmann::json cj = {{"version", 1}, {"name", "web"}, {"image", a.manifest.digest.String()}};
  ASSERT_TRUE(WriteFileAtomic(containers + "/web/container.json", cj.dump()).ok());
  make(".rm-gone-0123", "being removed");

  // du counts the three abandoned directories, byte for byte as du -sb sees them.
  int64_t expected_bytes = DuSb(containers + "/mount-00000000000000aa") + DuSb(containers + "/t1") +
                           DuSb(containers + "/mount-00000000000000bb");
  StoreUsage u = Scan();
  EXPECT_EQ(u.abandoned_containers, 3);
  EXPECT_EQ(u.abandoned_container_bytes, expected_bytes);
  EXPECT_GT(u.abandoned_container_bytes, 15000);
  EXPECT_EQ(u.container_bytes, DuSb(containers));
  EXPECT_EQ(u.total_bytes, DuSb(Root()));

  auto gc = CollectGarbage(*store_, options_);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  EXPECT_EQ(ContainerEntries(Root()),
            (std::vector<std::string>{".rm-gone-0123", "mount-00000000000000cc",
                                      "mount-00000000000000dd", "mount-00000000000000ee", "web"}));
  auto leased_data = ReadFile(containers + "/mount-00000000000000ee/upper/etc/data");
  ASSERT_TRUE(leased_data.has_value()) << leased_data.error().ToString();
  EXPECT_EQ(*leased_data, "leased");
  // The image stays (the lease and the container pin it).
  EXPECT_TRUE(store_->HasBlob(a.layers[0]));
  u = Scan();
  EXPECT_EQ(u.abandoned_containers, 0);
  EXPECT_EQ(u.abandoned_container_bytes, 0);

  // Once the lease is gone, the dead owner's directory goes too.
  ASSERT_TRUE(lease->Release().ok());
  ASSERT_TRUE(CollectGarbage(*store_, options_).has_value());
  EXPECT_EQ(ContainerEntries(Root()),
            (std::vector<std::string>{".rm-gone-0123", "mount-00000000000000cc",
                                      "mount-00000000000000dd", "web"}));
}

TEST_F(UsageTest, CreateContainerRecordsItsOwnerFirst) {
  ContainerInfo info;
  info.name = "owned";
  auto made = CreateContainer(*store_, info);
  ASSERT_TRUE(made.has_value()) << made.error().ToString();
  auto text = ReadFile(ContainerDir(*store_, "owned") + "/" + std::string(kContainerOwnerFile));
  ASSERT_TRUE(text.has_value()) << text.error().ToString();
  auto j = nlohmann::json::parse(*text, nullptr, false);
  ASSERT_TRUE(j.is_object()) << *text;
  EXPECT_EQ(j.value("pid", 0), ::getpid());
  EXPECT_EQ(j.value("pid_start", ""), ProcessStartTime(::getpid()));
  // A listed container (container.json written) is never abandoned, whatever its owner.
  EXPECT_TRUE(ListAbandonedContainerDirs(*store_, {}).empty());
  auto listed = ListContainers(*store_);
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name, "owned");
}

}  // namespace
}  // namespace imgfs::cache
