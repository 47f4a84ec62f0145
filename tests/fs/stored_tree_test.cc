// imgfs — tests for fs/tree/stored_tree.h and NodeTable::Adopt: a merged tree stored and used in
// place is the same table, a damaged or foreign one is refused, never used; and PrepareImage
// stores the tree of an image whose layers are local, then mounts from it.
#include "fs/tree/stored_tree.h"

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "cache/index_store.h"
#include "fs/layer/index_builder.h"
#include "fs/mount/mount.h"
#include "fs/tree/node_table.h"
#include "fs/tree/overlay.h"
#include "tests/fs/layer_test_util.h"
#include "tests/fs/prepared_store.h"

namespace imgfs::fs {
namespace {

using testing::FixtureLayers;
using testing::kFixtures;

const registry::Digest kManifest = registry::Digest::Sha256Of("a manifest");
const registry::Digest kSources = StoredTreeSources(std::vector<std::string>{"blob a", "blob b"});

// Bytes in memory that a table may use in place: an 8-aligned copy that owns itself.
struct Held {
  std::shared_ptr<std::string> bytes;
  std::string_view view() const { return *bytes; }
};
Held Hold(std::string bytes) { return Held{std::make_shared<std::string>(std::move(bytes))}; }

Result<StoredTree> Decode(const Held& h, const registry::Digest& manifest = kManifest) {
  return DecodeStoredTree(h.view(), h.bytes, manifest);
}

struct Merged {
  std::vector<LayerIndex> layers;
  NodeTable table;
  MergeStats stats;
};

Merged MergeFixture(const std::string& name) {
  Merged out;
  for (const testing::FixtureLayer& l : FixtureLayers(kFixtures + "/" + name)) {
    Result<LayerIndex> built = IndexBuilder::BuildFromFile(l.path, l.media_type);
    EXPECT_TRUE(built.has_value()) << built.error().ToString();
    if (built.has_value()) out.layers.push_back(std::move(built).value());
  }
  std::vector<const LayerIndex*> views;
  for (const LayerIndex& l : out.layers) views.push_back(&l);
  Result<NodeTable> merged = MergeLayers(views, &out.stats);
  EXPECT_TRUE(merged.has_value()) << merged.error().ToString();
  if (merged.has_value()) out.table = std::move(merged).value();
  return out;
}

StoredTreeInfo InfoOf(const Merged& m) {
  return StoredTreeInfo{kManifest, static_cast<uint32_t>(m.layers.size()), kSources, m.stats};
}

// The layers of `m` as a mount opens local ones (no entries) or lazy ones (entries kept).
std::vector<TreeLayer> LocalLayers(const Merged& m) {
  std::vector<TreeLayer> out;
  for (const LayerIndex& l : m.layers) out.push_back(TreeLayer{l.uncompressed_size, nullptr});
  return out;
}
std::vector<TreeLayer> LazyLayers(const Merged& m) {
  std::vector<TreeLayer> out;
  for (const LayerIndex& l : m.layers) out.push_back(TreeLayer{l.uncompressed_size, &l.entries});
  return out;
}

// Byte-for-byte equality of two tables' records (they have no padding bytes).
bool SameRecords(const NodeTable& a, const NodeTable& b) {
  NodeTable::Records ra = a.records(), rb = b.records();
  auto same = [](auto x, auto y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size_bytes()) == 0;
  };
  return same(ra.nodes, rb.nodes) && same(ra.dirents, rb.dirents) && same(ra.xattrs, rb.xattrs) &&
         ra.arena == rb.arena;
}

TEST(StoredTreeTest, ARoundTripIsTheSameTableUsedInPlace) {
  for (const char* name : {"tiny-gzip", "tiny-zstd", "tiny-estargz", "tiny-uncompressed"}) {
    SCOPED_TRACE(name);
    Merged m = MergeFixture(name);
    ASSERT_GT(m.table.inode_count(), 50u);
    Result<std::string> encoded = EncodeStoredTree(m.table.records(), InfoOf(m));
    ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
    Held held = Hold(*encoded);
    Result<StoredTree> back = Decode(held);
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_TRUE(SameRecords(m.table, back->table));
    EXPECT_EQ(back->info.layer_count, m.layers.size());
    EXPECT_EQ(back->info.stats.entries, m.stats.entries);
    EXPECT_EQ(back->info.stats.landmarks, m.stats.landmarks);
    // Used in place: the records are the held bytes, no copy.
    EXPECT_GE(reinterpret_cast<const char*>(back->table.records().nodes.data()),
              held.bytes->data());
    EXPECT_LT(reinterpret_cast<const char*>(back->table.records().nodes.data()),
              held.bytes->data() + held.bytes->size());
    EXPECT_EQ(back->table.MemoryBytes(), 0u);
    // The lookups answer alike, xattrs included.
    Result<uint64_t> data = back->table.Lookup(NodeTable::kRootIno, "data");
    ASSERT_TRUE(data.has_value());
    Result<uint64_t> file = back->table.Lookup(*data, "xattr.txt");
    ASSERT_TRUE(file.has_value());
    Result<std::string_view> comment = back->table.GetXattr(*file, "user.fixture.comment");
    ASSERT_TRUE(comment.has_value()) << comment.error().ToString();
    EXPECT_EQ(*comment, "hello xattr");
    EXPECT_EQ(back->info.sources, kSources);
    EXPECT_TRUE(CheckTreeData(back->table, LocalLayers(m)).ok());
    // The encoding is a function of the table: the same bytes again.
    Result<std::string> again = EncodeStoredTree(back->table.records(), back->info);
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(*again, *encoded);
  }
}

TEST(StoredTreeTest, EveryTruncationAndFlippedByteIsRefused) {
  Merged m = MergeFixture("tiny-gzip");
  Result<std::string> encoded = EncodeStoredTree(m.table.records(), InfoOf(m));
  ASSERT_TRUE(encoded.has_value());
  const std::string& good = *encoded;
  for (size_t size : {size_t{0}, size_t{7}, size_t{100}, good.size() / 2, good.size() - 1}) {
    Result<StoredTree> cut = Decode(Hold(good.substr(0, size)));
    ASSERT_FALSE(cut.has_value()) << size;
    EXPECT_EQ(cut.error().code(), StatusCode::kCorrupt);
  }
  EXPECT_FALSE(Decode(Hold(good + "x")).has_value()) << "a trailing byte";
  // Every byte of the header and a sample of the records: a flipped bit is never accepted.
  for (size_t i = 0; i < good.size(); i += (i < 256 ? 1 : 97)) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    Result<StoredTree> got = Decode(Hold(bad));
    ASSERT_FALSE(got.has_value()) << "byte " << i;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt) << "byte " << i;
  }
}

TEST(StoredTreeTest, ATreeOfAnotherManifestOrVersionOrAlignmentIsRefused) {
  Merged m = MergeFixture("tiny-gzip");
  Result<std::string> encoded = EncodeStoredTree(m.table.records(), InfoOf(m));
  ASSERT_TRUE(encoded.has_value());
  Held held = Hold(*encoded);
  Result<StoredTree> other = Decode(held, registry::Digest::Sha256Of("another manifest"));
  ASSERT_FALSE(other.has_value());
  EXPECT_NE(other.error().message().find("not the tree of"), std::string::npos)
      << other.error().ToString();
  std::string newer = *encoded;
  newer[8] = static_cast<char>(kStoredTreeVersion + 1);  // the version follows the magic
  Result<StoredTree> v = Decode(Hold(newer));
  ASSERT_FALSE(v.has_value());
  EXPECT_NE(v.error().message().find("version"), std::string::npos) << v.error().ToString();
  // Not 8-byte aligned: refused before any record is read.
  auto shifted = std::make_shared<std::string>("x" + *encoded);
  EXPECT_FALSE(
      DecodeStoredTree(std::string_view(*shifted).substr(1), shifted, kManifest).has_value());
  StoredTreeInfo no_sha = InfoOf(m);
  no_sha.manifest = registry::Digest();
  EXPECT_EQ(EncodeStoredTree(m.table.records(), no_sha).error().code(),
            StatusCode::kInvalidArgument);
}

// Records that are well sealed (a right checksum) but break a rule Adopt checks.
class AdoptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = MergeFixture("tiny-gzip");
    NodeTable::Records r = m_.table.records();
    nodes_.assign(r.nodes.begin(), r.nodes.end());
    dirents_.assign(r.dirents.begin(), r.dirents.end());
    xattrs_.assign(r.xattrs.begin(), r.xattrs.end());
    arena_ = std::string(r.arena);
  }
  // Seals the (changed) records and decodes them; the error message, "" when accepted.
  std::string Refusal() {
    NodeTable::Records r{nodes_, dirents_, xattrs_, arena_};
    Result<std::string> encoded = EncodeStoredTree(r, InfoOf(m_));
    if (!encoded.has_value()) return "not encoded: " + encoded.error().ToString();
    Result<StoredTree> got = Decode(Hold(*encoded));
    if (got.has_value()) return "";
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt);
    return got.error().message();
  }
  // The first directory other than the root with at least two names.
  Node& SomeDir() {
    for (size_t i = 1; i < nodes_.size(); ++i) {
      if (nodes_[i].type == EntryType::kDirectory && nodes_[i].child_count >= 2) return nodes_[i];
    }
    ADD_FAILURE() << "no directory with two names";
    return nodes_[0];
  }
  Merged m_;
  std::vector<Node> nodes_;
  std::vector<NodeTable::Dirent> dirents_;
  std::vector<NodeTable::Xattr> xattrs_;
  std::string arena_;
};

TEST_F(AdoptTest, TheUnchangedRecordsAreAccepted) { EXPECT_EQ(Refusal(), ""); }

TEST_F(AdoptTest, ARootThatIsNotADirectoryOrNotItsOwnParent) {
  nodes_[0].type = EntryType::kRegular;
  EXPECT_NE(Refusal(), "");
  SetUp();
  nodes_[0].parent = 2;
  EXPECT_NE(Refusal(), "");
  SetUp();
  nodes_.clear();
  EXPECT_NE(Refusal(), "");
}

TEST_F(AdoptTest, StringsOutsideTheArena) {
  nodes_[3].name.offset = static_cast<uint32_t>(arena_.size());
  nodes_[3].name.size = 1;
  EXPECT_NE(Refusal().find("arena"), std::string::npos);
  SetUp();
  nodes_[3].link_target = {0xfffffff0u, 0x20u};  // offset + size overflows 32 bits
  EXPECT_NE(Refusal().find("arena"), std::string::npos);
  SetUp();
  ASSERT_FALSE(xattrs_.empty());
  xattrs_[0].value.size = static_cast<uint32_t>(arena_.size()) + 1;
  EXPECT_NE(Refusal().find("arena"), std::string::npos);
}

TEST_F(AdoptTest, ParentsThatMakeACycleOrAreNotDirectories) {
  Node& dir = SomeDir();
  dir.parent = static_cast<uint32_t>(&dir - nodes_.data() + 1);  // itself
  EXPECT_NE(Refusal().find("parent"), std::string::npos);
  SetUp();
  nodes_[5].parent = static_cast<uint32_t>(nodes_.size() + 1);
  EXPECT_NE(Refusal().find("parent"), std::string::npos);
  SetUp();
  for (size_t i = 1; i < nodes_.size(); ++i) {
    if (nodes_[i].type == EntryType::kRegular) {
      for (Node& n : nodes_) {
        if (n.parent == 1 && &n != &nodes_[0]) {
          n.parent = static_cast<uint32_t>(i + 1);  // a file as a parent
          break;
        }
      }
      break;
    }
  }
  EXPECT_NE(Refusal().find("parent"), std::string::npos);
}

TEST_F(AdoptTest, NameRangesAndNamesOfDirectories) {
  Node& dir = SomeDir();
  dir.child_count = static_cast<uint32_t>(dirents_.size());
  EXPECT_NE(Refusal().find("outside the table"), std::string::npos);
  SetUp();
  Node& d2 = SomeDir();
  std::swap(dirents_[d2.first_child], dirents_[d2.first_child + 1]);  // unsorted
  EXPECT_NE(Refusal().find("sorted"), std::string::npos);
  SetUp();
  Node& d3 = SomeDir();
  dirents_[d3.first_child].ino = static_cast<uint32_t>(nodes_.size() + 1);
  EXPECT_NE(Refusal().find("no inode"), std::string::npos);
  SetUp();
  Node& d4 = SomeDir();
  dirents_[d4.first_child].ino = 1;  // the root under another name
  EXPECT_NE(Refusal().find("no inode"), std::string::npos);
  SetUp();
  Node& d5 = SomeDir();
  arena_.append("a/b");
  dirents_[d5.first_child].name = {static_cast<uint32_t>(arena_.size() - 3), 3};
  EXPECT_NE(Refusal().find("names"), std::string::npos);
  SetUp();
  Node& d6 = SomeDir();
  d6.first_xattr = static_cast<uint32_t>(xattrs_.size());
  d6.xattr_count = 1;
  EXPECT_NE(Refusal().find("xattrs outside"), std::string::npos);
}

TEST_F(AdoptTest, TypesThatAMergedTreeNeverHas) {
  for (EntryType t : {EntryType::kHardlink, EntryType::kWhiteout, EntryType::kOpaque,
                      static_cast<EntryType>(200)}) {
    SetUp();
    nodes_[nodes_.size() - 1].type = t;
    EXPECT_NE(Refusal().find("type"), std::string::npos) << static_cast<int>(t);
  }
}

TEST(StoredTreeTest, DataOutsideItsLayerIsRefusedAgainstTheOpenedLayers) {
  Merged m = MergeFixture("tiny-gzip");
  EXPECT_TRUE(CheckTreeData(m.table, LocalLayers(m)).ok());
  // One layer fewer than the nodes name.
  std::vector<TreeLayer> fewer = LocalLayers(m);
  fewer.pop_back();
  EXPECT_EQ(CheckTreeData(m.table, fewer).code(), StatusCode::kCorrupt);
  // Streams shorter than the files' data.
  std::vector<TreeLayer> shorter = LocalLayers(m);
  for (TreeLayer& l : shorter) l.stream_size = 100;
  EXPECT_EQ(CheckTreeData(m.table, shorter).code(), StatusCode::kCorrupt);
}

// A lazy layer reads a file through its entry (Node::entry): the entry must exist and say what
// the node says (type, metadata, a file's size and place, a symlink's target), whatever the
// layer's stream size is.
TEST(StoredTreeTest, ANodeOfALazyLayerMustBeWhatItsEntrySays) {
  Merged m = MergeFixture("tiny-gzip");
  EXPECT_TRUE(CheckTreeData(m.table, LazyLayers(m)).ok());
  std::vector<TreeLayer> tiny_streams = LazyLayers(m);
  for (TreeLayer& l : tiny_streams) l.stream_size = 1;
  EXPECT_TRUE(CheckTreeData(m.table, tiny_streams).ok()) << "lazy files are read by entry";
  NodeTable::Records r = m.table.records();
  auto first_of = [&](EntryType type) -> const Node* {
    for (const Node& n : r.nodes) {
      if (n.type == type && n.layer != Node::kNoLayer && (type != EntryType::kRegular || n.size))
        return &n;
    }
    return nullptr;
  };
  const Node* file = first_of(EntryType::kRegular);
  const Node* link = first_of(EntryType::kSymlink);
  const Node* dir = first_of(EntryType::kDirectory);
  const Node* dev = first_of(EntryType::kChar);
  ASSERT_TRUE(file != nullptr && link != nullptr && dir != nullptr && dev != nullptr);
  // Its layer with `change` made to the entry of `n` (a copy of the table).
  auto refusal = [&](const Node& n, const std::function<void(FileEntry&)>& change) {
    std::vector<FileEntry> entries = m.layers[n.layer].entries;
    change(entries[n.entry]);
    std::vector<TreeLayer> layers = LazyLayers(m);
    layers[n.layer].entries = &entries;
    return CheckTreeData(m.table, layers);
  };
  // Fewer entries than the node's index.
  {
    std::vector<FileEntry> fewer(m.layers[file->layer].entries.begin(),
                                 m.layers[file->layer].entries.begin() + file->entry);
    std::vector<TreeLayer> layers = LazyLayers(m);
    layers[file->layer].entries = &fewer;
    Status st = CheckTreeData(m.table, layers);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt);
    EXPECT_NE(st.message().find("no such entry"), std::string::npos) << st.ToString();
  }
  const std::vector<std::pair<const Node*, std::function<void(FileEntry&)>>> changes = {
      {file, [](FileEntry& e) { e.size += 1; }},
      {file, [](FileEntry& e) { e.payload_offset += 512; }},
      {file, [](FileEntry& e) { e.type = EntryType::kSymlink; }},
      {file, [](FileEntry& e) { e.mode ^= 0100; }},
      {file, [](FileEntry& e) { e.uid += 1; }},
      {file, [](FileEntry& e) { e.gid += 1; }},
      {file, [](FileEntry& e) { e.mtime_sec += 1; }},
      {file, [](FileEntry& e) { e.mtime_nsec += 1; }},
      {link, [](FileEntry& e) { e.link_target += "x"; }},
      {dir, [](FileEntry& e) { e.type = EntryType::kRegular; }},
      {dir, [](FileEntry& e) { e.mode ^= 0002; }},
      {dev, [](FileEntry& e) { e.dev_minor += 1; }},
  };
  for (size_t i = 0; i < changes.size(); ++i) {
    Status st = refusal(*changes[i].first, changes[i].second);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << "change " << i;
    EXPECT_NE(st.message().find("not what its layer's entry says"), std::string::npos)
        << "change " << i << ": " << st.ToString();
  }
}

TEST(StoredTreeTest, TheSourcesDigestNamesEachLayerInOrder) {
  using V = std::vector<std::string>;
  const registry::Digest ab = StoredTreeSources(V{"blob a", "blob b"});
  EXPECT_EQ(ab, StoredTreeSources(V{"blob a", "blob b"}));
  EXPECT_NE(ab, StoredTreeSources(V{"blob b", "blob a"}));
  EXPECT_NE(ab, StoredTreeSources(V{"blob a", "blob b", ""}));
  EXPECT_NE(ab, StoredTreeSources(V{"blob ab", "lob b"}));  // lengths are part of it
  EXPECT_NE(ab, StoredTreeSources(V{}));
}

// PrepareImage: the first mount of an image merges and stores the tree, the next maps it; a
// damaged tree file is merged again and replaced; the tables are the same every time.
class StoredTreeOfPreparedImages : public testing::PreparedStoreTest {};

TEST_F(StoredTreeOfPreparedImages, PrepareImageStoresTheTreeAndMountsFromIt) {
  const std::string image = "oci:" + kFixtures + "/tiny-zstd:latest";
  Result<PreparedImage> first = Prepare(image);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_FALSE(first->tree_stored);
  const std::string tree_path = indexes().PathFor(cache::IndexKey::Tree(first->manifest_digest));
  Result<std::string> written = ReadFile(tree_path);
  ASSERT_TRUE(written.has_value()) << written.error().ToString();

  Result<PreparedImage> second = Prepare(image);
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_TRUE(second->tree_stored);
  EXPECT_TRUE(SameRecords(first->filesystem->table(), second->filesystem->table()));
  EXPECT_EQ(second->merge_stats.entries, first->merge_stats.entries);
  // Every file reads the same bytes through the mapped tree's offsets.
  const NodeTable& t = second->filesystem->table();
  size_t files = 0;
  for (uint64_t ino = 1; ino <= t.inode_count(); ++ino) {
    const Node* n = t.Get(ino);
    if (n->type != EntryType::kRegular) continue;
    Result<std::string> a = first->filesystem->Read(ino, 0, n->size + 1);
    Result<std::string> b = second->filesystem->Read(ino, 0, n->size + 1);
    ASSERT_TRUE(a.has_value() && b.has_value()) << ino;
    EXPECT_EQ(*a, *b) << *t.PathOf(ino);
    ++files;
  }
  EXPECT_GT(files, 10u);

  // A damaged tree: the mount merges, answers alike, and stores a good tree again.
  std::string damaged = *written;
  damaged[damaged.size() / 2] = static_cast<char>(damaged[damaged.size() / 2] ^ 1);
  ASSERT_TRUE(WriteFileAtomic(tree_path, damaged, 0600).ok());
  Result<PreparedImage> third = Prepare(image);
  ASSERT_TRUE(third.has_value()) << third.error().ToString();
  EXPECT_FALSE(third->tree_stored);
  EXPECT_TRUE(SameRecords(first->filesystem->table(), third->filesystem->table()));
  Result<std::string> rewritten = ReadFile(tree_path);
  ASSERT_TRUE(rewritten.has_value());
  EXPECT_EQ(*rewritten, *written);

  // A well-formed tree of this manifest whose file data lies beyond its layer's stream (a
  // planted file): refused against the opened layers, merged again, replaced.
  NodeTable::Records r = first->filesystem->table().records();
  std::vector<Node> nodes(r.nodes.begin(), r.nodes.end());
  bool planted = false;
  for (Node& n : nodes) {
    if (n.type == EntryType::kRegular && n.layer != Node::kNoLayer && n.size > 0) {
      n.payload_offset = uint64_t{1} << 40;
      planted = true;
      break;
    }
  }
  ASSERT_TRUE(planted);
  r.nodes = nodes;
  Result<StoredTree> good = Decode(Hold(*written), first->manifest_digest);
  ASSERT_TRUE(good.has_value()) << good.error().ToString();
  Result<std::string> forged = EncodeStoredTree(r, good->info);
  ASSERT_TRUE(forged.has_value());
  ASSERT_TRUE(WriteFileAtomic(tree_path, *forged, 0600).ok());
  Result<PreparedImage> fourth = Prepare(image);
  ASSERT_TRUE(fourth.has_value()) << fourth.error().ToString();
  EXPECT_FALSE(fourth->tree_stored);
  EXPECT_TRUE(SameRecords(first->filesystem->table(), fourth->filesystem->table()));
  rewritten = ReadFile(tree_path);
  ASSERT_TRUE(rewritten.has_value());
  EXPECT_EQ(*rewritten, *written);

  // The same tree said to be merged from other layer indexes (a lazy mount's, before the
  // layers were pulled): not used, merged again, replaced.
  StoredTreeInfo elsewhere = good->info;
  elsewhere.sources = StoredTreeSources(std::vector<std::string>{"index of another source"});
  forged = EncodeStoredTree(good->table.records(), elsewhere);
  ASSERT_TRUE(forged.has_value());
  ASSERT_TRUE(WriteFileAtomic(tree_path, *forged, 0600).ok());
  Result<PreparedImage> fifth = Prepare(image);
  ASSERT_TRUE(fifth.has_value()) << fifth.error().ToString();
  EXPECT_FALSE(fifth->tree_stored);
  EXPECT_TRUE(SameRecords(first->filesystem->table(), fifth->filesystem->table()));
  rewritten = ReadFile(tree_path);
  ASSERT_TRUE(rewritten.has_value());
  EXPECT_EQ(*rewritten, *written);
}

// The tree names each layer's stored index by the checksum its file ends with: an index whose
// bytes changed under the same key (rebuilt, or written by another imgfs) makes the next mount
// merge again, from that index, and replace the tree; the mount after it uses the new tree.
TEST_F(StoredTreeOfPreparedImages, ATreeIsUsedOnlyWithTheIndexBytesItWasMergedFrom) {
  const std::string image = "oci:" + kFixtures + "/tiny-gzip:latest";
  Result<PreparedImage> first = Prepare(image);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  const std::string tree_path = indexes().PathFor(cache::IndexKey::Tree(first->manifest_digest));
  Result<std::string> tree = ReadFile(tree_path);
  ASSERT_TRUE(tree.has_value()) << tree.error().ToString();

  // The top layer's index, with its last file's mtime changed and sealed again.
  const std::vector<testing::FixtureLayer> layers = FixtureLayers(kFixtures + "/tiny-gzip");
  ASSERT_FALSE(layers.empty());
  const std::string index_path = indexes().PathFor(layers.back().digest);
  Result<std::string> bytes = ReadFile(index_path);
  ASSERT_TRUE(bytes.has_value()) << index_path << ": " << bytes.error().ToString();
  Result<LayerIndex> index = LayerIndex::Decode(*bytes);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  FileEntry* changed = nullptr;
  for (FileEntry& e : index->entries) {
    if (e.type == EntryType::kRegular) changed = &e;  // the top layer's last file: shown
  }
  ASSERT_NE(changed, nullptr);
  changed->mtime_sec += 1000;
  const std::string changed_path = changed->path;
  const int64_t changed_mtime = changed->mtime_sec;
  ASSERT_TRUE(WriteFileAtomic(index_path, index->Encode(), 0600).ok());

  Result<PreparedImage> second = Prepare(image);
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_FALSE(second->tree_stored) << "a tree used with other index bytes";
  const NodeTable& t = second->filesystem->table();
  Result<uint64_t> ino = NodeTable::kRootIno;
  size_t from = 0;
  while (ino.has_value() && from <= changed_path.size()) {
    const size_t slash = std::min(changed_path.find('/', from), changed_path.size());
    ino = t.Lookup(*ino, std::string_view(changed_path).substr(from, slash - from));
    from = slash + 1;
  }
  ASSERT_TRUE(ino.has_value()) << changed_path;
  EXPECT_EQ(t.Get(*ino)->mtime_sec, changed_mtime) << "not merged from the changed index";
  Result<std::string> rewritten = ReadFile(tree_path);
  ASSERT_TRUE(rewritten.has_value());
  EXPECT_NE(*rewritten, *tree);

  Result<PreparedImage> third = Prepare(image);
  ASSERT_TRUE(third.has_value()) << third.error().ToString();
  EXPECT_TRUE(third->tree_stored);
  EXPECT_TRUE(SameRecords(second->filesystem->table(), third->filesystem->table()));
}

// A tree of version 1 (no sources digest: local layers only) is refused by its version; the
// mount merges again and replaces it.
TEST(StoredTreeTest, AVersion1TreeIsRefused) {
  Result<std::string> v1 =
      ReadFile(std::string(IMGFS_SOURCE_DIR) + "/tests/testdata/stored_tree_v1.tree");
  ASSERT_TRUE(v1.has_value()) << v1.error().ToString();
  ASSERT_GE(v1->size(), 64u);
  const auto manifest =
      registry::Digest::FromSha256Bytes(reinterpret_cast<const unsigned char*>(v1->data() + 32));
  Result<StoredTree> got = Decode(Hold(*v1), manifest);
  ASSERT_FALSE(got.has_value());
  EXPECT_NE(got.error().message().find("version 1, this imgfs reads 2"), std::string::npos)
      << got.error().ToString();
}

// The encoding of this version, for a fixed image: a change to the merge's output or to the
// records fails here, and needs kStoredTreeVersion bumped (then a new golden file,
// tests/testdata/stored_tree_v<version>.tree, and docs/FORMATS.md §3 updated). A new layer
// index encoding fails here too, through the sources digest alone (the header names each
// layer's index file by its checksum): older trees are then refused by their sources, and only
// the golden file is made again.
TEST_F(StoredTreeOfPreparedImages, TheEncodingOfAFixtureMatchesTheGoldenFile) {
  Result<PreparedImage> prepared = Prepare("oci:" + kFixtures + "/tiny-gzip:latest");
  ASSERT_TRUE(prepared.has_value()) << prepared.error().ToString();
  Result<std::string> written =
      ReadFile(indexes().PathFor(cache::IndexKey::Tree(prepared->manifest_digest)));
  ASSERT_TRUE(written.has_value()) << written.error().ToString();
  Result<std::string> golden =
      ReadFile(std::string(IMGFS_SOURCE_DIR) + "/tests/testdata/stored_tree_v" +
               std::to_string(kStoredTreeVersion) + ".tree");
  ASSERT_TRUE(golden.has_value()) << golden.error().ToString();
  EXPECT_TRUE(*written == *golden) << "the stored tree's encoding changed: bump kStoredTreeVersion";
}

}  // namespace
}  // namespace imgfs::fs
