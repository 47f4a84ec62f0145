// Tests for fs/layer/estargz_toc.h and, over the eStargz fixture, fs/layer/chunk_decoder.h:
// the TOC index of every tiny-estargz layer (read through a local BlobSource with two ranged
// reads) equals the tar-pass index of the same blob minus the landmark and TOC entries, and
// every chunk decodes and verifies to the fixture's file contents.
#include "fs/layer/estargz_toc.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/time.h"
#include "fs/layer/chunk_decoder.h"
#include "fs/layer/index_builder.h"
#include "registry/local_source.h"
#include "registry/manifest.h"
#include "tests/fs/layer_test_util.h"
#include "tests/support/fake_blob_source.h"

namespace imgfs::fs {
namespace {

using registry::Descriptor;
using registry::Digest;

using ::imgfs::testing::FakeBlobSource;

struct Fixture {
  std::shared_ptr<registry::BlobSource> source;
  std::vector<Descriptor> layers;
};

Fixture OpenFixture(const std::string& name) {
  Fixture f;
  auto src = registry::LocalSource::OpenOciLayout(testing::kFixtures + "/" + name, "latest");
  EXPECT_TRUE(src.has_value()) << src.error().ToString();
  if (!src.has_value()) return f;
  f.source = std::move(*src);
  auto m = f.source->GetManifest("");
  EXPECT_TRUE(m.has_value()) << m.error().ToString();
  if (!m.has_value()) return f;
  auto manifest = registry::DecodeManifest(m->bytes);
  EXPECT_TRUE(manifest.has_value()) << manifest.error().ToString();
  if (manifest.has_value()) f.layers = manifest->layers;
  return f;
}

std::string BlobPath(const std::string& fixture, const Descriptor& d) {
  return testing::kFixtures + "/" + fixture + "/blobs/sha256/" + d.digest.hex();
}

// Whole-file contents of every regular file of `index`, decoded chunk by chunk.
std::map<std::string, std::string> DecodeAll(registry::BlobSource& source, const LayerIndex& index,
                                             uint64_t gap) {
  std::map<std::string, std::string> out;
  for (const FileEntry& e : index.entries) {
    if (e.type != EntryType::kRegular) continue;
    std::vector<uint32_t> ids;
    for (uint32_t i = 0; i < e.chunk_count; ++i) ids.push_back(e.first_chunk + i);
    auto chunks = ReadChunks(source, index, ids, gap);
    EXPECT_TRUE(chunks.has_value()) << e.path << ": " << chunks.error().ToString();
    if (!chunks.has_value()) continue;
    std::string data;
    for (const std::string& c : *chunks) data += c;
    out[e.path] = std::move(data);
  }
  return out;
}

// The tar-pass index's view of a file's content, as 1 MiB chunk digests.
void ExpectSameContent(const LayerIndex& tar, const FileEntry& te, const std::string& data) {
  ASSERT_EQ(data.size(), te.size) << te.path;
  for (uint32_t i = 0; i < te.chunk_count; ++i) {
    const Chunk& c = tar.chunks[te.first_chunk + i];
    EXPECT_EQ(Digest::Sha256Of(std::string_view(data).substr(c.file_offset, c.size)), c.digest)
        << te.path << " at " << c.file_offset;
  }
}

// Entries compared field by field (payload_offset and chunks differ by design).
void ExpectSameEntries(const std::vector<FileEntry>& want, const std::vector<FileEntry>& got) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const FileEntry& a = want[i];
    const FileEntry& b = got[i];
    EXPECT_EQ(a.path, b.path) << i;
    EXPECT_EQ(a.type, b.type) << a.path;
    EXPECT_EQ(a.mode, b.mode) << a.path;
    EXPECT_EQ(a.uid, b.uid) << a.path;
    EXPECT_EQ(a.gid, b.gid) << a.path;
    EXPECT_EQ(a.size, b.size) << a.path;
    EXPECT_EQ(a.mtime_sec, b.mtime_sec) << a.path;
    EXPECT_EQ(a.mtime_nsec, b.mtime_nsec) << a.path;
    EXPECT_EQ(a.dev_major, b.dev_major) << a.path;
    EXPECT_EQ(a.dev_minor, b.dev_minor) << a.path;
    EXPECT_EQ(a.link_target, b.link_target) << a.path;
    EXPECT_EQ(a.xattrs, b.xattrs) << a.path;
  }
}

constexpr char kBusybox[] = "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6";
constexpr char kRandom[] = "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d";
constexpr char kZeros[] = "106f0647ae10a6516b1ab2968038161e287ef40d1b22ca047531ed768e594ef1";

TEST(EstargzToc, FixtureIndexMatchesTarIndexAndReadsOnlyFooterAndToc) {
  Fixture f = OpenFixture("tiny-estargz");
  ASSERT_EQ(f.layers.size(), 3u);
  for (const Descriptor& d : f.layers) {
    FakeBlobSource counting(f.source);
    auto index = LoadEstargzIndex(counting, d, /*allow_missing_toc_digest=*/false);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    EXPECT_EQ(index->format, LayerFormat::kEstargz);
    EXPECT_EQ(index->layer_digest, d.digest);
    EXPECT_EQ(index->compressed_size, static_cast<uint64_t>(d.size));
    // Footer and TOC in one read of the blob's tail (the whole blob when it is smaller).
    EXPECT_EQ(counting.requests(), 1);
    EXPECT_EQ(counting.bytes(), std::min<uint64_t>(d.size, kEstargzTailReadBytes));

    auto tar = IndexBuilder::BuildFromFile(BlobPath("tiny-estargz", d), d.media_type);
    ASSERT_TRUE(tar.has_value()) << tar.error().ToString();
    std::vector<FileEntry> want;
    for (const FileEntry& e : tar->entries) {
      if (e.path == "stargz.index.json" || e.path == ".no.prefetch.landmark" ||
          e.path == ".prefetch.landmark") {
        continue;
      }
      want.push_back(e);
    }
    ExpectSameEntries(want, index->entries);
    // The encoded form round-trips (the cache stores TOC indexes like any other).
    auto decoded = LayerIndex::Decode(index->Encode());
    ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
    EXPECT_EQ(*decoded, *index);
  }
  // The big layer: the tail read is a small part of the blob, and says what it read.
  FakeBlobSource counting(f.source);
  EstargzTocLoad load;
  ASSERT_TRUE(LoadEstargzIndex(counting, f.layers[0], false, &load).has_value());
  EXPECT_LT(counting.bytes() * 20, static_cast<uint64_t>(f.layers[0].size));
  EXPECT_EQ(load.bytes, counting.bytes());
  EXPECT_EQ(load.requests, 1u);
}

TEST(EstargzToc, EveryChunkDecodesAndVerifies) {
  Fixture f = OpenFixture("tiny-estargz");
  ASSERT_EQ(f.layers.size(), 3u);
  std::map<std::string, Digest> whole;
  for (const Descriptor& d : f.layers) {
    auto index = LoadEstargzIndex(*f.source, d, false);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    auto tar = IndexBuilder::BuildFromFile(BlobPath("tiny-estargz", d), d.media_type);
    ASSERT_TRUE(tar.has_value());
    auto files = DecodeAll(*f.source, *index, /*gap=*/0);
    for (const FileEntry& te : tar->entries) {
      if (te.type != EntryType::kRegular || te.path == "stargz.index.json" ||
          te.path == ".no.prefetch.landmark") {
        continue;
      }
      ASSERT_TRUE(files.count(te.path)) << te.path;
      ExpectSameContent(*tar, te, files[te.path]);
      whole[te.path] = Digest::Sha256Of(files[te.path]);
    }
  }
  EXPECT_EQ(whole["bin/busybox"].hex(), kBusybox);
  EXPECT_EQ(whole["data/random.bin"].hex(), kRandom);
  EXPECT_EQ(whole["data/zeros.bin"].hex(), kZeros);
}

TEST(EstargzToc, CoalescedReadsFetchAdjacentChunksTogether) {
  Fixture f = OpenFixture("tiny-estargz");
  ASSERT_EQ(f.layers.size(), 3u);
  auto index = LoadEstargzIndex(*f.source, f.layers[0], false);
  ASSERT_TRUE(index.has_value());
  std::vector<uint32_t> all(index->chunks.size());
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = i;
  // Reversed order: results still come back in request order.
  std::vector<uint32_t> reversed(all.rbegin(), all.rend());
  FakeBlobSource counting(f.source);
  auto chunks = ReadChunks(counting, *index, reversed, kDefaultCoalesceGapBytes);
  ASSERT_TRUE(chunks.has_value()) << chunks.error().ToString();
  EXPECT_EQ(counting.requests(), 1);  // members are contiguous: one read for the layer
  for (size_t k = 0; k < reversed.size(); ++k) {
    EXPECT_EQ(Digest::Sha256Of((*chunks)[k]), index->chunks[reversed[k]].digest);
  }
  // Every other chunk: with no gap bridged, one read per chunk; with a wide gap, one read.
  std::vector<uint32_t> sparse;
  for (uint32_t i = 0; i < all.size(); i += 2) sparse.push_back(i);
  FakeBlobSource apart(f.source);
  ASSERT_TRUE(ReadChunks(apart, *index, sparse, 0).has_value());
  EXPECT_EQ(apart.requests(), static_cast<int>(sparse.size()));
  FakeBlobSource wide(f.source);
  ASSERT_TRUE(ReadChunks(wide, *index, sparse, 1 << 30).has_value());
  EXPECT_EQ(wide.requests(), 1);

  // Grouping with a gap: two far-apart chunks stay separate, near ones merge.
  std::vector<Chunk> list(3);
  list[0].blob_offset = 0, list[0].blob_length = 10, list[0].size = 1;
  list[1].blob_offset = 15, list[1].blob_length = 5, list[1].size = 1;
  list[2].blob_offset = 1000, list[2].blob_length = 5, list[2].size = 1;
  auto reads = CoalesceChunkReads(list, 8);
  ASSERT_EQ(reads.size(), 2u);
  EXPECT_EQ(reads[0].range, (ByteRange{0, 20}));
  EXPECT_EQ(reads[0].chunks, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(reads[1].range, (ByteRange{1000, 5}));
  EXPECT_EQ(SliceChunk(reads[0], "0123456789abcdefghij", list[1]), "fghij");
}

// The fixture's first layer with its TOC replaced by `json` (same offset, same footer).
std::string WithToc(const std::string& blob, uint64_t toc_offset, const std::string& json) {
  testing::TarWriter tar;
  tar.File("stargz.index.json", json);
  return blob.substr(0, toc_offset) + testing::Gzip(tar.Finish()) +
         blob.substr(blob.size() - kEstargzFooterBytes);
}

struct FirstLayer {
  Descriptor desc;
  std::string blob;
  uint64_t toc_offset = 0;
  std::string json;
};

FirstLayer LoadFirstLayer() {
  FirstLayer l;
  Fixture f = OpenFixture("tiny-estargz");
  if (f.layers.empty()) return l;
  l.desc = f.layers[0];
  l.blob = testing::ReadWhole(BlobPath("tiny-estargz", l.desc));
  auto footer = ParseEstargzFooter(std::string_view(l.blob).substr(l.blob.size() - 51));
  EXPECT_TRUE(footer.has_value());
  if (!footer.has_value()) return l;
  l.toc_offset = footer->toc_offset;
  auto json = ExtractEstargzTocJson(std::string_view(l.blob).substr(
      l.toc_offset, l.blob.size() - kEstargzFooterBytes - l.toc_offset));
  EXPECT_TRUE(json.has_value());
  if (json.has_value()) l.json = *json;
  return l;
}

TEST(EstargzToc, ATocLargerThanTheTailReadTakesASecondRead) {
  FirstLayer l = LoadFirstLayer();
  ASSERT_FALSE(l.json.empty());
  // An unknown field of incompressible text: the TOC's gzip member outgrows the tail read.
  std::string padding;
  uint32_t x = 20261205;
  while (padding.size() < 4 * kEstargzTailReadBytes) {
    x = x * 1103515245u + 12345u;
    padding += "0123456789abcdef"[(x >> 16) & 15];
  }
  std::string big = l.json;
  ASSERT_EQ(big.front(), '{');
  big.insert(1, "\"padding\":\"" + padding + "\",");
  std::string blob = WithToc(l.blob, l.toc_offset, big);
  ASSERT_GT(blob.size() - l.toc_offset, kEstargzTailReadBytes);
  Descriptor d = l.desc;
  d.size = static_cast<int64_t>(blob.size());
  d.annotations[std::string(kEstargzTocDigestAnnotation)] = Digest::Sha256Of(big).String();
  FakeBlobSource mem(blob);
  EstargzTocLoad load;
  auto index = LoadEstargzIndex(mem, d, false, &load);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  EXPECT_EQ(mem.requests(), 2);
  EXPECT_EQ(load.requests, 2u);
  EXPECT_EQ(load.bytes, mem.bytes());

  FakeBlobSource small(l.blob);
  auto expected = LoadEstargzIndex(small, l.desc, false);
  ASSERT_TRUE(expected.has_value()) << expected.error().ToString();
  ExpectSameEntries(expected->entries, index->entries);
}

TEST(EstargzToc, FlippedTocByteIsADigestMismatch) {
  FirstLayer l = LoadFirstLayer();
  ASSERT_FALSE(l.json.empty());
  std::string bad = l.json;
  size_t at = bad.find("2020-02-02T02:02:02Z");  // mtime of data/random.bin
  ASSERT_NE(at, std::string::npos);
  bad[at + 18] = '3';
  Descriptor d = l.desc;
  std::string blob = WithToc(l.blob, l.toc_offset, bad);
  d.size = static_cast<int64_t>(blob.size());
  FakeBlobSource mem(blob);
  auto index = LoadEstargzIndex(mem, d, false);
  ASSERT_FALSE(index.has_value());
  EXPECT_EQ(index.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(index.error().message().find("TOC digest mismatch"), std::string::npos)
      << index.error().ToString();
  EXPECT_NE(index.error().message().find(l.desc.digest.String()), std::string::npos);

  // The same TOC vouched for by its own digest loads: the check above is what caught it.
  d.annotations[std::string(kEstargzTocDigestAnnotation)] = Digest::Sha256Of(bad).String();
  auto ok = LoadEstargzIndex(mem, d, false);
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  bool found = false;
  for (const auto& e : ok->entries) {
    if (e.path == "data/random.bin") found = e.mtime_sec == 1580608923;
  }
  EXPECT_TRUE(found);

  // A missing annotation is refused unless allowed.
  d.annotations.erase(std::string(kEstargzTocDigestAnnotation));
  EXPECT_EQ(LoadEstargzIndex(mem, d, false).error().code(), StatusCode::kCorrupt);
  EXPECT_TRUE(LoadEstargzIndex(mem, d, true).has_value());
}

TEST(EstargzToc, OffsetsOutsideTheBlobAreCorrupt) {
  FirstLayer l = LoadFirstLayer();
  ASSERT_FALSE(l.json.empty());
  std::string bad = l.json;
  const std::string needle = "\"offset\": 2640102";  // last chunk of data/random.bin
  size_t at = bad.find(needle);
  ASSERT_NE(at, std::string::npos) << "fixture TOC changed";
  bad.replace(at, needle.size(), "\"offset\": 9999999999");
  auto index = BuildEstargzIndexFromToc(bad, l.desc.digest, l.blob.size(), l.toc_offset);
  ASSERT_FALSE(index.has_value());
  EXPECT_EQ(index.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(index.error().message().find("data/random.bin"), std::string::npos)
      << index.error().ToString();

  // A chunk that leaves a hole in its file.
  bad = l.json;
  const std::string gap = "\"chunkOffset\": 1048576";
  at = bad.find(gap);
  ASSERT_NE(at, std::string::npos);
  bad.replace(at, gap.size(), "\"chunkOffset\": 1048577");
  index = BuildEstargzIndexFromToc(bad, l.desc.digest, l.blob.size(), l.toc_offset);
  ASSERT_FALSE(index.has_value());
  EXPECT_EQ(index.error().code(), StatusCode::kCorrupt);

  // A footer pointing past the blob.
  std::string blob = l.blob;
  std::string hex = "00000000ffffffff";
  blob.replace(blob.size() - kEstargzFooterBytes + 16, 16, hex);
  FakeBlobSource mem(blob);
  auto loaded = LoadEstargzIndex(mem, l.desc, false);
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(loaded.error().message().find("outside the blob"), std::string::npos)
      << loaded.error().ToString();
}

TEST(EstargzToc, TruncatedFooterIsCorrupt) {
  FirstLayer l = LoadFirstLayer();
  ASSERT_FALSE(l.blob.empty());
  std::string cut = l.blob.substr(0, l.blob.size() - 10);
  FakeBlobSource mem(cut);
  Descriptor d = l.desc;
  d.size = static_cast<int64_t>(cut.size());
  auto index = LoadEstargzIndex(mem, d, false);
  ASSERT_FALSE(index.has_value());
  EXPECT_EQ(index.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(index.error().message().find("footer"), std::string::npos) << index.error().ToString();
  // Too small to hold any footer.
  d.size = 20;
  EXPECT_EQ(LoadEstargzIndex(mem, d, false).error().code(), StatusCode::kCorrupt);
}

TEST(EstargzToc, LegacyFooterAndFooterParsing) {
  // Legacy 47-byte stargz footer: XLEN=22, payload "%016xSTARGZ".
  std::string legacy("\x1f\x8b\x08\x04\0\0\0\0\0\xff\x16\0", 12);
  legacy += "00000000000004d2STARGZ";
  legacy += std::string("\x01\x00\x00\xff\xff", 5) + std::string(8, '\0');
  ASSERT_EQ(legacy.size(), kEstargzLegacyFooterBytes);
  auto f = ParseEstargzFooter(std::string(4, 'x') + legacy);
  ASSERT_TRUE(f.has_value()) << f.error().ToString();
  EXPECT_EQ(f->toc_offset, 1234u);
  EXPECT_EQ(f->footer_bytes, kEstargzLegacyFooterBytes);
  // Not hex / wrong magic.
  std::string bad = legacy;
  bad[12] = 'g';
  EXPECT_FALSE(ParseEstargzFooter(bad).has_value());
  EXPECT_FALSE(ParseEstargzFooter(std::string(51, '\0')).has_value());
  EXPECT_FALSE(ParseEstargzFooter("").has_value());
}

TEST(EstargzToc, TimesAndMalformedJson) {
  int64_t sec = 0;
  uint32_t nsec = 0;
  ASSERT_TRUE(ParseRfc3339("1969-07-20T20:17:40Z", &sec, &nsec).ok());
  EXPECT_EQ(sec, -14182940);
  ASSERT_TRUE(ParseRfc3339("2024-03-01T01:00:00.5+01:00", &sec, &nsec).ok());
  EXPECT_EQ(sec, 1709251200);
  EXPECT_EQ(nsec, 500000000u);
  EXPECT_FALSE(ParseRfc3339("2024-03-01 00:00:00", &sec, &nsec).ok());

  Digest layer = Digest::Sha256Of("layer");
  for (const char* json : {"", "[]", "{\"entries\":3}", "{\"entries\":[{\"name\":1}]}",
                           "{\"entries\":[{\"name\":\"a\",\"type\":\"weird\"}]}",
                           "{\"entries\":[{\"name\":\"a\",\"type\":\"chunk\"}]}",
                           "{\"entries\":[{\"name\":\"../../x\",\"type\":\"dir\"}]}",
                           "{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":5}]}",
                           "{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"mode\":-1}]}"}) {
    auto index = BuildEstargzIndexFromToc(json, layer, 1000, 900);
    ASSERT_FALSE(index.has_value()) << json;
    EXPECT_EQ(index.error().code(), StatusCode::kCorrupt) << json;
  }
  // Whiteouts map like the tar index builder's.
  auto index = BuildEstargzIndexFromToc(
      "{\"version\":1,\"entries\":[{\"name\":\"etc/.wh.issue\",\"type\":\"reg\"},"
      "{\"name\":\"etc/conf.d/.wh..wh..opq\",\"type\":\"reg\"}]}",
      layer, 1000, 900);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  ASSERT_EQ(index->entries.size(), 2u);
  EXPECT_EQ(index->entries[0].type, EntryType::kWhiteout);
  EXPECT_EQ(index->entries[0].path, "etc/issue");
  EXPECT_EQ(index->entries[1].type, EntryType::kOpaque);
  EXPECT_EQ(index->entries[1].path, "etc/conf.d");
}

// Issue 9, finding 8: chunk geometry and TOC size.
TEST(EstargzTocLimits, ChunkSpanningMostOfTheBlobIsRefused) {
  // One 1-byte file at offset 0 and the TOC 1 GiB later: the chunk's gzip member would be
  // the whole blob. Before: accepted, and the first read fetched 1 GiB into memory.
  Digest layer = Digest::Sha256Of("layer");
  const std::string digest = Digest::Sha256Of("x").String();
  const uint64_t toc_offset = 1ull << 30;
  auto index = BuildEstargzIndexFromToc(
      "{\"version\":1,\"entries\":[{\"name\":\"f\",\"type\":\"reg\",\"size\":1,\"offset\":0,"
      "\"digest\":\"" +
          digest + "\"}]}",
      layer, toc_offset + 100, toc_offset);
  ASSERT_FALSE(index.has_value());
  EXPECT_EQ(index.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(index.error().message().find("MaxChunkBlobBytes"), std::string::npos)
      << index.error().ToString();
  EXPECT_NE(index.error().message().find("'f'"), std::string::npos) << index.error().ToString();

  // A chunk bigger than kMaxChunkBytes (decoded) is refused too.
  const uint64_t big = kMaxChunkBytes + 1;
  auto huge = BuildEstargzIndexFromToc(
      "{\"version\":1,\"entries\":[{\"name\":\"g\",\"type\":\"reg\",\"size\":" +
          std::to_string(big) + ",\"offset\":0,\"digest\":\"" + digest + "\"}]}",
      layer, big + 1000, big);
  ASSERT_FALSE(huge.has_value());
  EXPECT_NE(huge.error().message().find("kMaxChunkBytes"), std::string::npos)
      << huge.error().ToString();

  // Within the bounds: a 1-byte file whose member also holds the following headers.
  auto ok = BuildEstargzIndexFromToc(
      "{\"version\":1,\"entries\":[{\"name\":\"f\",\"type\":\"reg\",\"size\":1,\"offset\":0,"
      "\"digest\":\"" +
          digest + "\"}]}",
      layer, (1 << 20) + 100, 1 << 20);
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
}

TEST(EstargzTocLimits, TooManyEntriesIsRefusedWhileParsing) {
  // kMaxTocEntries + 1 tiny entries; before: parsed into a DOM (then counted).
  std::string json = "{\"version\":1,\"entries\":[";
  json.reserve(3 * kMaxTocEntries + 64);
  for (size_t i = 0; i <= kMaxTocEntries; ++i) json += i == 0 ? "{}" : ",{}";
  json += "]}";
  auto records = toc_internal::ParseTocJson(json, "layer");
  ASSERT_FALSE(records.has_value());
  EXPECT_EQ(records.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(records.error().message().find("kMaxTocEntries"), std::string::npos)
      << records.error().ToString();
}

TEST(EstargzTocLimits, SaxParserKeepsTheDomReadersResults) {
  // Unknown keys at every level (with nested values) are skipped; types are checked.
  auto r = toc_internal::ParseTocJson(
      "{\"junk\":[1,[2,{\"a\":[]}]],\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"reg\","
      "\"size\":3,\"other\":{\"x\":[1,2]},\"offset\":7,\"xattrs\":{\"user.b\":\"dg==\","
      "\"user.a\":\"dw==\"},\"uid\":5,\"chunkDigest\":null},{\"name\":\"d\",\"type\":\"dir\"}],"
      "\"tail\":{\"entries\":3}}",
      "layer");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].name, "a");
  EXPECT_EQ((*r)[0].size, 3u);
  EXPECT_TRUE((*r)[0].has_offset);
  EXPECT_EQ((*r)[0].offset, 7u);
  EXPECT_FALSE((*r)[0].has_end_offset);
  EXPECT_EQ((*r)[0].uid, 5u);
  ASSERT_EQ((*r)[0].xattrs.size(), 2u);
  EXPECT_EQ((*r)[0].xattrs[0].first, "user.a");
  EXPECT_EQ((*r)[0].xattrs[0].second, "w");
  EXPECT_EQ((*r)[1].type, "dir");
  for (const char* bad :
       {"{\"entries\":[{\"name\":\"a\",\"size\":1.5}]}",
        "{\"entries\":[{\"name\":\"a\",\"size\":-1}]}",
        "{\"entries\":[{\"name\":\"a\",\"size\":\"1\"}]}", "{\"entries\":[{\"name\":[\"a\"]}]}",
        "{\"entries\":[{\"name\":\"a\",\"uid\":4294967296}]}",
        "{\"entries\":[{\"name\":\"a\",\"xattrs\":[]}]}",
        "{\"entries\":[{\"name\":\"a\",\"xattrs\":{\"k\":1}}]}",
        "{\"entries\":[{\"name\":\"a\",\"xattrs\":{\"k\":\"!!\"}}]}", "{\"entries\":[1]}",
        "{\"entries\":[[]]}", "{\"entries\":{}}", "{\"version\":1}", "{\"entries\":[]", "[]", "3",
        "{\"entries\":[]} x"}) {
    auto got = toc_internal::ParseTocJson(bad, "layer");
    ASSERT_FALSE(got.has_value()) << bad;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt) << bad;
  }
}

}  // namespace
}  // namespace imgfs::fs
