// imgfs — tests for the LayerIndex binary encoding (fs/layer/layer_index.h): round trip,
// golden bytes, and rejection of damaged or inconsistent encodings.
#include "fs/layer/layer_index.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "registry/tar_reader.h"
#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

registry::Digest D(std::string_view s) { return registry::Digest::Sha256Of(s); }

// A small index using every field and entry type.
LayerIndex Sample() {
  LayerIndex x;
  x.layer_digest = D("blob");
  x.diff_id = D("tar");
  x.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  x.format = LayerFormat::kTarGzip;
  x.compressed_size = 5000;
  x.uncompressed_size = 10240;
  x.chunk_size = 1 << 20;
  x.checkpoint_span = 4 << 20;
  x.max_checkpoint_gap = 10240;
  x.provenance = IndexProvenance::kPublished;
  x.origin = registry::Digest::Sha256Of("artifact");
  x.subject = registry::Digest::Sha256Of("manifest");
  FileEntry root;
  root.type = EntryType::kDirectory;
  root.mode = 0755;
  x.entries.push_back(root);
  FileEntry f;
  f.path = "etc/héllo wörld.txt";
  f.mode = 04755;
  f.uid = 1000;
  f.gid = 100;
  f.size = 3000;
  f.mtime_sec = -14182940;
  f.mtime_nsec = 123456789;
  f.xattrs = {{"security.capability", std::string("\x01\x00\x00\x02", 4)}, {"user.a", "b"}};
  f.payload_offset = 512;
  f.first_chunk = 0;
  f.chunk_count = 2;
  x.entries.push_back(f);
  FileEntry l;
  l.path = "bin/sh";
  l.type = EntryType::kHardlink;
  l.link_target = "bin/busybox";
  x.entries.push_back(l);
  FileEntry s;
  s.path = "lnk";
  s.type = EntryType::kSymlink;
  s.mode = 0777;
  s.link_target = "../etc/os-release";
  x.entries.push_back(s);
  FileEntry c;
  c.path = "dev/null";
  c.type = EntryType::kChar;
  c.dev_major = 1;
  c.dev_minor = 3;
  x.entries.push_back(c);
  FileEntry w;
  w.path = "etc/issue";
  w.type = EntryType::kWhiteout;
  x.entries.push_back(w);
  FileEntry o;
  o.path = "etc/conf.d";
  o.type = EntryType::kOpaque;
  x.entries.push_back(o);
  Chunk c0;
  c0.size = 2000;
  c0.digest = D("c0");
  Chunk c1;
  c1.file_offset = 2000;
  c1.size = 1000;  // no digest
  c1.blob_offset = 77;
  c1.blob_length = 88;
  c1.inner_offset = 99;
  x.chunks = {c0, c1};
  Checkpoint k0;
  Checkpoint k1;
  k1.compressed_offset = 2500;
  k1.uncompressed_offset = 6000;
  k1.bits = 5;
  k1.window = PackedWindow::Pack(std::string(100, 'w'));
  x.checkpoints = {k0, k1};
  return x;
}

// Replaces the trailing checksum so a hand-edited body passes the integrity check.
std::string Reseal(std::string encoded) {
  encoded.resize(encoded.size() - 32);
  std::string hex = registry::Digest::Sha256Of(encoded).hex();
  for (size_t i = 0; i < 64; i += 2) {
    encoded.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return encoded;
}

TEST(LayerIndexTest, RoundTrips) {
  LayerIndex x = Sample();
  std::string bytes = x.Encode();
  EXPECT_EQ(bytes.substr(0, 8), "IMGFSIDX");
  auto y = LayerIndex::Decode(bytes);
  ASSERT_TRUE(y.has_value()) << y.error().ToString();
  EXPECT_EQ(*y, x);
  auto empty = LayerIndex::Decode(LayerIndex().Encode());
  ASSERT_TRUE(empty.has_value()) << empty.error().ToString();
  EXPECT_EQ(*empty, LayerIndex());
}

// The checked-in encoding pins the format: if this fails, the encoding changed. Bump
// kLayerIndexFormatVersion, then regenerate with IMGFS_UPDATE_GOLDEN=1 (which writes
// tests/testdata/layer_index_v<version>.idx) and document the change in docs/FORMATS.md.
TEST(LayerIndexTest, GoldenEncoding) {
  std::string golden_path = std::string(IMGFS_SOURCE_DIR) + "/tests/testdata/layer_index_v" +
                            std::to_string(kLayerIndexFormatVersion) + ".idx";
  std::string encoded = Sample().Encode();
  if (std::getenv("IMGFS_UPDATE_GOLDEN") != nullptr) {
    ASSERT_TRUE(testing::WriteWhole(golden_path, encoded));
  }
  std::string golden = testing::ReadWhole(golden_path);
  ASSERT_FALSE(golden.empty()) << "missing " << golden_path
                               << " (a new format version needs a new golden file)";
  EXPECT_EQ(encoded, golden) << "the LayerIndex encoding changed without a version bump";
  auto decoded = LayerIndex::Decode(golden);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(*decoded, Sample());
}

// Version 1 had no provenance: its indexes still decode (a published index made by an older
// imgfs stays usable lazily), as kUnverified, which no stored-index lookup accepts.
TEST(LayerIndexTest, Version1DecodesAsUnverified) {
  std::string v1 =
      testing::ReadWhole(std::string(IMGFS_SOURCE_DIR) + "/tests/testdata/layer_index_v1.idx");
  ASSERT_FALSE(v1.empty());
  auto decoded = LayerIndex::Decode(v1);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  LayerIndex want = Sample();
  want.provenance = IndexProvenance::kUnverified;
  want.origin = registry::Digest();
  want.subject = registry::Digest();
  EXPECT_EQ(*decoded, want);
}

// Version 2 stored checkpoint windows raw: they decode into the same packed windows.
TEST(LayerIndexTest, Version2DecodesWithItsWindowsPacked) {
  std::string v2 =
      testing::ReadWhole(std::string(IMGFS_SOURCE_DIR) + "/tests/testdata/layer_index_v2.idx");
  ASSERT_FALSE(v2.empty());
  auto decoded = LayerIndex::Decode(v2);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(*decoded, Sample());
  std::string raw;
  ASSERT_TRUE(decoded->checkpoints[1].window.Unpack(&raw).ok());
  EXPECT_EQ(raw, std::string(100, 'w'));
}

TEST(LayerIndexTest, PackedWindowsKeepTheLast32KiBAndRefuseFramesOfAnotherSize) {
  std::string raw;
  for (int i = 0; i < 40000; ++i) raw += static_cast<char>('a' + (i * 7919) % 26);
  PackedWindow w = PackedWindow::Pack(raw);
  EXPECT_EQ(w.size(), PackedWindow::kMaxBytes);
  EXPECT_LT(w.packed().size(), w.size());
  std::string out;
  ASSERT_TRUE(w.Unpack(&out).ok());
  EXPECT_EQ(out, raw.substr(raw.size() - PackedWindow::kMaxBytes));
  EXPECT_TRUE(PackedWindow::Pack("").empty());

  auto ok = PackedWindow::FromPacked(w.size(), w.packed());
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  EXPECT_EQ(*ok, w);
  auto corrupt = [](uint32_t size, std::string packed) {
    auto r = PackedWindow::FromPacked(size, std::move(packed));
    return !r.has_value() && r.error().code() == StatusCode::kCorrupt;
  };
  EXPECT_TRUE(corrupt(w.size() - 1, w.packed()));  // the frame says another size
  EXPECT_TRUE(corrupt(w.size(), w.packed().substr(0, w.packed().size() - 1)));  // cut short
  EXPECT_TRUE(corrupt(w.size(), w.packed() + "x"));                             // trailing bytes
  EXPECT_TRUE(corrupt(0, "x"));                                   // bytes for no window
  EXPECT_TRUE(corrupt(PackedWindow::kMaxBytes + 1, w.packed()));  // larger than deflate's
  EXPECT_TRUE(corrupt(10, "not a zstd frame"));
}

TEST(LayerIndexTest, ProvenanceRoundTripsAndIsChecked) {
  for (IndexProvenance p : {IndexProvenance::kUnverified, IndexProvenance::kLayerBlob,
                            IndexProvenance::kToc, IndexProvenance::kPublished}) {
    LayerIndex x = Sample();
    x.provenance = p;
    auto y = LayerIndex::Decode(x.Encode());
    ASSERT_TRUE(y.has_value()) << y.error().ToString();
    EXPECT_EQ(y->provenance, p);
  }
  // The provenance byte follows the header; an unknown value is Corrupt.
  LayerIndex x = Sample();
  x.provenance = IndexProvenance::kToc;
  std::string bytes = x.Encode();
  LayerIndex plain = Sample();
  plain.provenance = IndexProvenance::kLayerBlob;
  std::string other = plain.Encode();
  size_t at = 0;
  while (at < bytes.size() && bytes[at] == other[at]) ++at;
  ASSERT_LT(at, bytes.size());
  ASSERT_EQ(bytes[at], static_cast<char>(IndexProvenance::kToc));
  bytes[at] = 9;
  auto r = LayerIndex::Decode(Reseal(bytes));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
}

TEST(LayerIndexTest, RejectsEveryFlippedByteAndTruncation) {
  std::string bytes = Sample().Encode();
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x20;
    auto r = LayerIndex::Decode(bad);
    ASSERT_FALSE(r.has_value()) << "flip at " << i;
    EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  }
  for (size_t n = 0; n < bytes.size(); ++n) {
    ASSERT_FALSE(LayerIndex::Decode(bytes.substr(0, n)).has_value()) << "length " << n;
  }
}

TEST(LayerIndexTest, RejectsOtherVersions) {
  std::string bytes = Sample().Encode();
  bytes[8] = static_cast<char>(kLayerIndexFormatVersion + 1);
  auto r = LayerIndex::Decode(Reseal(bytes));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("version"), std::string::npos);
}

TEST(LayerIndexTest, RejectsInconsistentContents) {
  auto expect_corrupt = [](const LayerIndex& x, std::string_view why) {
    auto r = LayerIndex::Decode(x.Encode());
    EXPECT_FALSE(r.has_value()) << why;
    if (!r.has_value()) {
      EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << why;
    }
  };
  LayerIndex x = Sample();
  x.entries[1].chunk_count = 3;  // beyond the chunk table
  expect_corrupt(x, "chunk range");
  x = Sample();
  x.entries[1].payload_offset = 9000;  // data beyond the stream
  expect_corrupt(x, "payload beyond stream");
  x = Sample();
  x.chunks[1].size = 5;  // chunks do not cover the file
  expect_corrupt(x, "chunk coverage");
  x = Sample();
  std::swap(x.checkpoints[0], x.checkpoints[1]);
  expect_corrupt(x, "checkpoint order");
  x = Sample();
  x.checkpoints[1].bits = 8;
  expect_corrupt(x, "bits");
  x = Sample();
  x.entries[1].xattrs = {{"z", ""}, {"a", ""}};
  expect_corrupt(x, "xattr order");
  x = Sample();
  x.entries[1].mode = 0170000;
  expect_corrupt(x, "mode");
}

// A large entry table is decoded in two halves on two threads: the same index, and the same
// first error (the lower one's when both halves have one) as one pass.
TEST(LayerIndexTest, LargeEntryTablesDecodeInHalvesAlike) {
  LayerIndex x = Sample();
  x.entries.clear();
  x.chunks.clear();
  for (uint32_t i = 0; i < 40001; ++i) {
    FileEntry e;
    e.path = "dir" + std::to_string(i % 97) + "/file-" + std::to_string(i);
    e.type = i % 5 == 0 ? EntryType::kDirectory : EntryType::kRegular;
    e.mode = 0644;
    e.mtime_sec = -static_cast<int64_t>(i);
    if (i % 7 == 0) e.xattrs = {{"user.a", std::string(i % 13, 'v')}, {"user.b", "w"}};
    if (i % 11 == 0) e.link_target = "target" + std::to_string(i);
    x.entries.push_back(e);
  }
  auto decoded = LayerIndex::Decode(x.Encode());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(*decoded, x);
  auto error_with_bad = [&](std::vector<size_t> bad) {
    LayerIndex y = x;
    for (size_t k : bad) y.entries[k].mode = 0170000;
    auto r = LayerIndex::Decode(Reseal(y.Encode()));
    return r.has_value() ? std::string("decoded") : r.error().ToString();
  };
  const std::string lower = error_with_bad({100});
  const std::string upper = error_with_bad({30000});
  EXPECT_NE(lower.find("bad entry mode or time at byte"), std::string::npos) << lower;
  EXPECT_NE(upper.find("bad entry mode or time at byte"), std::string::npos) << upper;
  EXPECT_NE(lower, upper);
  EXPECT_EQ(error_with_bad({30000, 100}), lower);
  EXPECT_EQ(error_with_bad({20000}).find("decoded"), std::string::npos);
  EXPECT_EQ(error_with_bad({20001, 40000}).find("decoded"), std::string::npos);
}

// Issue 9, finding 8: a published (untrusted, checksum-valid) index is decoded within bounds.
TEST(LayerIndexTest, RejectsWhatExceedsTheLimits) {
  auto expect_refused = [](const LayerIndex& x, std::string_view why) -> std::string {
    auto r = LayerIndex::Decode(x.Encode());
    EXPECT_FALSE(r.has_value()) << why;
    if (r.has_value()) return std::string();
    EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << why;
    return r.error().message();
  };
  LayerIndex x = Sample();
  x.entries[1].xattrs.clear();
  for (int i = 0; i < 300; ++i) x.entries[1].xattrs.emplace_back("user.k" + std::to_string(i), "");
  std::sort(x.entries[1].xattrs.begin(), x.entries[1].xattrs.end());
  expect_refused(x, "xattr count");
  x = Sample();
  x.entries[1].xattrs = {{"user.v", std::string(registry::kMaxXattrValueBytes + 1, 'v')}};
  expect_refused(x, "xattr value");
  // Lazy formats: chunk geometry as at TOC assembly.
  x = Sample();
  x.format = LayerFormat::kEstargz;
  x.checkpoints.clear();
  x.chunks[1].blob_length = 1ull << 30;
  EXPECT_NE(expect_refused(x, "blob length").find("MaxChunkBlobBytes"), std::string::npos);
  x.chunks[1].blob_length = 88;
  x.chunks[1].inner_offset = kChunkBlobSlackBytes + 1;
  expect_refused(x, "inner offset");
  // A tar index may keep large chunks (its chunks are ranges of a local file).
  x = Sample();
  x.chunks[1].blob_length = 1ull << 30;
  x.compressed_size = 2ull << 30;
  EXPECT_TRUE(LayerIndex::Decode(x.Encode()).has_value());
}

TEST(LayerIndexTest, EntryCountIsCappedBeforeAllocating) {
  // An index declaring kMaxIndexEntries + 1 entries, with enough bytes behind the count to
  // pass the 16-bytes-per-entry check. Before: entries.resize(count) (~300 MB) came first.
  LayerIndex x;
  x.layer_digest = D("blob");
  std::string encoded = x.Encode();
  std::string body = encoded.substr(0, encoded.size() - 32);
  ASSERT_EQ(body.substr(body.size() - 3), std::string(3, '\0'));  // 0 entries, chunks, checkpoints
  body.resize(body.size() - 3);
  uint64_t n = kMaxIndexEntries + 1;
  while (n >= 0x80) {
    body.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  body.push_back(static_cast<char>(n));
  body.append(16 * (kMaxIndexEntries + 1), 'x');
  auto r = LayerIndex::Decode(Reseal(body + std::string(32, '\0')));
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("kMaxIndexEntries"), std::string::npos)
      << r.error().ToString();
}

TEST(LayerIndexTest, DroppingTheFileTableKeepsWhatStreamReadsNeed) {
  LayerIndex x = Sample();
  LayerIndex dropped = x;
  dropped.DropChunks();
  EXPECT_TRUE(dropped.chunks.empty());
  EXPECT_EQ(dropped.chunks.capacity(), 0u);
  EXPECT_EQ(dropped.entries, x.entries);
  dropped.DropEntries();
  EXPECT_TRUE(dropped.entries.empty());
  EXPECT_EQ(dropped.entries.capacity(), 0u);
  EXPECT_EQ(dropped.checkpoints, x.checkpoints);
  EXPECT_EQ(dropped.layer_digest, x.layer_digest);
  EXPECT_EQ(dropped.uncompressed_size, x.uncompressed_size);
}

// ChunkTable::kSkip gives what DropChunks leaves, and still refuses an entry whose chunk range
// leaves the encoded table (the table's values are not checked: they are not kept).
TEST(LayerIndexTest, DecodingWithoutTheChunkTableIsDecodingThenDroppingIt) {
  LayerIndex x = Sample();
  ASSERT_FALSE(x.chunks.empty());
  LayerIndex dropped = x;
  dropped.DropChunks();
  auto skipped = LayerIndex::Decode(x.Encode(), LayerIndex::ChunkTable::kSkip);
  ASSERT_TRUE(skipped.has_value()) << skipped.error().ToString();
  EXPECT_EQ(*skipped, dropped);

  LayerIndex outside = x;
  for (FileEntry& e : outside.entries) {
    if (e.chunk_count != 0) e.first_chunk = static_cast<uint32_t>(x.chunks.size());
  }
  auto refused = LayerIndex::Decode(outside.Encode(), LayerIndex::ChunkTable::kSkip);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("outside the chunk table"), std::string::npos)
      << refused.error().ToString();
}

TEST(LayerIndexTest, CheckpointFor) {
  LayerIndex x = Sample();
  EXPECT_EQ(x.CheckpointFor(0), 0u);
  EXPECT_EQ(x.CheckpointFor(5999), 0u);
  EXPECT_EQ(x.CheckpointFor(6000), 1u);
  EXPECT_EQ(x.CheckpointFor(1 << 30), 1u);
  EXPECT_EQ(LayerIndex().CheckpointFor(5), 0u);
}

}  // namespace
}  // namespace imgfs::fs
