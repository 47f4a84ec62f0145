// Tests of the zstd:chunked writer (fs/convert/layer_writer.h) and its content-defined
// chunker (fs/convert/content_chunker.h): round trips through the project's own zstd:chunked
// readers (annotation and footer paths, chunk decoding with digest verification), the blob as
// an ordinary tar+zstd stream equal to the input tar, frame boundaries, the tar-split stream,
// determinism, the TOC fields and the chunk boundaries compared with the ones skopeo wrote
// for the same layers (tests/fixtures), dedup after an insertion, min/max bounds, zero runs,
// and --prioritize order.
#include <zstd.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/base64.h"
#include "fs/layer/layer_writer.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "tests/fs/layer_test_util.h"
#include "tests/support/fake_blob_source.h"
#include "tests/support/lazy_layer_check.h"

namespace imgfs::fs {
namespace {

using registry::Digest;

constexpr uint64_t kChunk = 64 << 10;

struct Blob {
  WrittenLayer layer;
  std::string bytes;
};

LayerWriterOptions Fixed(uint64_t chunk = kChunk) {
  LayerWriterOptions options;
  options.format = LazyFormat::kZstdChunked;
  options.zstd_chunking = ZstdChunking::kFixedSize;
  options.chunk_size_bytes = chunk;
  return options;
}

LayerWriterOptions ContentDefined(ContentChunking chunking = {}) {
  LayerWriterOptions options;
  options.format = LazyFormat::kZstdChunked;
  options.content_chunking = chunking;
  return options;
}

Blob Write(std::string_view tar, const LayerWriterOptions& options = ContentDefined()) {
  Blob out;
  registry::BlobSink sink = [&out](std::string_view piece) {
    out.bytes.append(piece);
    return Status::Ok();
  };
  Result<WrittenLayer> written = WriteLazyLayer(TarBytes::FromString(tar), options, sink);
  EXPECT_TRUE(written.has_value()) << written.error().ToString();
  if (written.has_value()) out.layer = *written;
  return out;
}

// Decompresses a whole zstd stream (skippable frames are skipped, as every zstd decoder
// does).
std::string Unzstd(std::string_view in) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  std::string buf(1 << 16, '\0');
  while (ib.pos < ib.size) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    size_t rc = ZSTD_decompressStream(dctx.get(), &ob, &ib);
    EXPECT_FALSE(ZSTD_isError(rc)) << ZSTD_getErrorName(rc);
    if (ZSTD_isError(rc)) break;
    out.append(buf.data(), ob.pos);
  }
  return out;
}

uint64_t Le64At(std::string_view s, size_t pos) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[pos + i]);
  return v;
}

std::vector<uint64_t> SplitPosition(const std::string& text) {
  std::vector<uint64_t> out;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ':')) out.push_back(std::stoull(part));
  return out;
}

std::string TocJsonOf(const Blob& b) {
  auto pos = ParseZstdChunkedPosition(
      b.layer.descriptor.annotations.at(std::string(kZstdChunkedPositionAnnotation)));
  EXPECT_TRUE(pos.has_value());
  if (!pos.has_value()) return "";
  auto json = DecompressZstdChunkedToc(
      std::string_view(b.bytes).substr(pos->offset, pos->compressed_length),
      pos->uncompressed_length);
  EXPECT_TRUE(json.has_value()) << json.error().ToString();
  return json.has_value() ? *json : "";
}

class ZstdChunkedRoundTrip : public ::testing::TestWithParam<ZstdChunking> {};

TEST_P(ZstdChunkedRoundTrip, ThroughTheReadersByAnnotationAndByFooter) {
  std::string tar = testing::RichLayerTar(kChunk);
  // Content-defined: small bounds so that the files of a few chunk sizes get several.
  ContentChunking small;
  small.min_bytes = 4 << 10;
  small.max_bytes = 48 << 10;
  small.split_bits = 13;
  Blob b = Write(tar, GetParam() == ZstdChunking::kFixedSize ? Fixed() : ContentDefined(small));
  ASSERT_FALSE(b.bytes.empty());
  const auto& a = b.layer.descriptor.annotations;
  EXPECT_EQ(b.layer.descriptor.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
  EXPECT_EQ(b.layer.descriptor.digest, Digest::Sha256Of(b.bytes));
  auto pos = SplitPosition(a.at(std::string(kZstdChunkedPositionAnnotation)));
  ASSERT_EQ(pos.size(), 4u);
  EXPECT_EQ(pos[0], b.layer.toc_offset);
  EXPECT_EQ(pos[3], 1u);
  EXPECT_EQ(a.at(std::string(kZstdChunkedChecksumAnnotation)),
            Digest::Sha256Of(b.bytes.substr(pos[0], pos[1])).String());

  ::imgfs::testing::FakeBlobSource source(b.bytes);
  auto index = LoadZstdChunkedIndex(source, b.layer.descriptor, /*allow_missing_checksum=*/false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  EXPECT_EQ(index->format, LayerFormat::kZstdChunked);
  auto items = testing::ReadTarItems(tar);
  size_t chunks = testing::ExpectIndexMatchesTar(*index, source, items);
  EXPECT_EQ(chunks, b.layer.chunks);
  if (GetParam() == ZstdChunking::kFixedSize) {
    EXPECT_EQ(b.layer.chunks, 1u + 1 + 2 + 3 + 2 + 6);
    EXPECT_EQ(b.layer.zeros_chunks, 0u);
  } else {
    // Files of 64 KiB - 1 .. 160 KiB with chunks of at most 48 KiB; 128 KiB of zeros: 3
    // zeros chunks (48 + 48 + 32 KiB).
    EXPECT_GE(b.layer.chunks, 1u + 1 + 2 + 2 + 2 + 4 + 3);
    EXPECT_EQ(b.layer.zeros_chunks, 3u);
  }

  // Without annotations the 64-byte footer leads to the same TOC.
  registry::Descriptor bare = b.layer.descriptor;
  bare.annotations.clear();
  auto by_footer = LoadZstdChunkedIndex(source, bare, /*allow_missing_checksum=*/true);
  ASSERT_TRUE(by_footer.has_value()) << by_footer.error().ToString();
  EXPECT_EQ(by_footer->entries, index->entries);
  EXPECT_EQ(by_footer->chunks, index->chunks);

  // A wrong checksum is refused.
  registry::Descriptor wrong = b.layer.descriptor;
  wrong.annotations[std::string(kZstdChunkedChecksumAnnotation)] = Digest::Sha256Of("x").String();
  EXPECT_EQ(LoadZstdChunkedIndex(source, wrong, false).error().code(), StatusCode::kCorrupt);
}

INSTANTIATE_TEST_SUITE_P(Chunking, ZstdChunkedRoundTrip,
                         ::testing::Values(ZstdChunking::kFixedSize, ZstdChunking::kContentDefined),
                         [](const ::testing::TestParamInfo<ZstdChunking>& param) {
                           return param.param == ZstdChunking::kFixedSize ? "FixedSize"
                                                                          : "ContentDefined";
                         });

TEST(ZstdChunkedWriter, BlobDecompressesToTheInputTarAndFramesStartAtChunks) {
  std::string tar = testing::RichLayerTar(kChunk);
  Blob b = Write(tar);
  std::string plain = Unzstd(b.bytes);
  // Headers are copied and the end blocks are the same two zero blocks: the very input.
  EXPECT_TRUE(plain == tar);
  EXPECT_EQ(Digest::Sha256Of(plain), b.layer.diff_id);
  EXPECT_EQ(plain.size(), b.layer.uncompressed_size);

  auto toc = nlohmann::json::parse(TocJsonOf(b));
  ASSERT_TRUE(toc.contains("tarSplitDigest"));
  for (const auto& e : toc["entries"]) {
    if (!e.contains("offset")) continue;
    uint64_t off = e["offset"];
    ASSERT_LT(off + 4, b.bytes.size());
    EXPECT_EQ(b.bytes.substr(off, 4), std::string("\x28\xb5\x2f\xfd", 4)) << e.dump();
    if (e.contains("endOffset")) {
      // Each chunk ends a frame: the next frame (or the next data) starts at endOffset.
      uint64_t end = e["endOffset"];
      EXPECT_EQ(b.bytes.substr(end, 4), std::string("\x28\xb5\x2f\xfd", 4)) << e.dump();
    }
  }

  // Footer: a skippable frame holding 64 bytes ending in "GNUlInUx" with the positions.
  std::string_view tail = std::string_view(b.bytes).substr(b.bytes.size() - 72);
  EXPECT_EQ(tail.substr(0, 8), std::string("\x50\x2a\x4d\x18\x40\0\0\0", 8));
  std::string_view footer = tail.substr(8);
  EXPECT_EQ(footer.substr(56), "GNUlInUx");
  auto pos =
      SplitPosition(b.layer.descriptor.annotations.at(std::string(kZstdChunkedPositionAnnotation)));
  EXPECT_EQ(Le64At(footer, 0), pos[0]);
  EXPECT_EQ(Le64At(footer, 8), pos[1]);
  EXPECT_EQ(Le64At(footer, 16), pos[2]);
  EXPECT_EQ(Le64At(footer, 24), 1u);
  auto split =
      SplitPosition(b.layer.descriptor.annotations.at(std::string(kZstdChunkedTarSplitAnnotation)));
  ASSERT_EQ(split.size(), 3u);
  EXPECT_EQ(Le64At(footer, 32), split[0]);
  EXPECT_EQ(Le64At(footer, 40), split[1]);
  EXPECT_EQ(Le64At(footer, 48), split[2]);

  // tar-split: its digest is in the TOC; segments + file payloads rebuild the tar exactly.
  std::string split_z = b.bytes.substr(split[0], split[1]);
  EXPECT_EQ(toc["tarSplitDigest"], Digest::Sha256Of(split_z).String());
  std::string lines = Unzstd(split_z);
  EXPECT_EQ(lines.size(), split[2]);
  std::map<std::string, const testing::TarItem*> files;
  auto items = testing::ReadTarItems(tar);
  for (const auto& item : items) {
    std::string name = item.entry.name.empty() ? "."
                       : item.entry.type == registry::TarEntryType::kDirectory
                           ? item.entry.name + "/"
                           : item.entry.name;
    files[name] = &item;
  }
  std::stringstream ss(lines);
  std::string line;
  std::string rebuilt;
  int64_t position = 0;
  while (std::getline(ss, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["position"], position++);
    if (j["type"] == 2) {
      rebuilt += DecodeBase64(j["payload"].get<std::string>()).value();
    } else {
      ASSERT_EQ(j["type"], 1);
      auto it = files.find(j["name"]);
      ASSERT_NE(it, files.end()) << line;
      rebuilt += it->second->content;
      EXPECT_EQ(j.value("size", uint64_t{0}), it->second->content.size());
      EXPECT_EQ(j["payload"].is_null(), it->second->content.empty()) << line;
    }
  }
  EXPECT_TRUE(rebuilt == tar);
}

TEST(ZstdChunkedWriter, OutputIsDeterministic) {
  std::string tar = testing::RichLayerTar(kChunk);
  Blob a = Write(tar);
  Blob b = Write(tar);
  EXPECT_TRUE(a.bytes == b.bytes);
  EXPECT_EQ(a.layer.descriptor, b.layer.descriptor);
  ContentChunking finer;
  finer.split_bits = 12;
  finer.min_bytes = 1024;
  EXPECT_NE(a.layer.descriptor.digest, Write(tar, ContentDefined(finer)).layer.descriptor.digest);
  EXPECT_NE(a.layer.descriptor.digest, Write(tar, Fixed()).layer.descriptor.digest);
}

TEST(ZstdChunkedWriter, TocFieldsEqualSkopeosForTheFixtureLayers) {
  // tiny-uncompressed holds the tars skopeo converted into tiny-zstdchunked. Chunk records
  // differ (our chunks have bounds, skopeo's none: see ChunkBoundaries… below); every other
  // record must carry the same values.
  auto plain = testing::FixtureLayers(testing::kFixtures + "/tiny-uncompressed");
  auto peer = testing::FixtureLayers(testing::kFixtures + "/tiny-zstdchunked");
  ASSERT_EQ(plain.size(), 3u);
  ASSERT_EQ(peer.size(), 3u);
  auto peer_manifest = nlohmann::json::parse(testing::ReadWhole(
      testing::kFixtures + "/tiny-zstdchunked/blobs/sha256/" +
      nlohmann::json::parse(testing::ReadWhole(
          testing::kFixtures + "/tiny-zstdchunked/index.json"))["manifests"][0]["digest"]
          .get<std::string>()
          .substr(7)));
  for (size_t i = 0; i < plain.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i + 1));
    std::string tar = testing::ReadWhole(plain[i].path);
    Blob ours = Write(tar);
    // skopeo kept the diff_id: a zstd:chunked blob decompresses to the same tar.
    EXPECT_EQ(ours.layer.diff_id, plain[i].diff_id);
    Blob theirs;
    theirs.bytes = testing::ReadWhole(peer[i].path);
    std::string pos_text =
        peer_manifest["layers"][i]["annotations"]["io.containers.zstd-chunked.manifest-position"];
    auto pos = ParseZstdChunkedPosition(pos_text);
    ASSERT_TRUE(pos.has_value());
    auto their_json = DecompressZstdChunkedToc(
        std::string_view(theirs.bytes).substr(pos->offset, pos->compressed_length),
        pos->uncompressed_length);
    ASSERT_TRUE(their_json.has_value());
    auto records = [](const std::string& json) {
      std::vector<nlohmann::json> out;
      nlohmann::json doc = nlohmann::json::parse(json);
      for (auto e : doc["entries"]) {
        if (e["type"] == "chunk") continue;
        for (const char* k : {"offset", "endOffset", "chunkSize", "chunkDigest", "chunkOffset",
                              "chunkType", "accesstime", "changetime"}) {
          e.erase(k);
        }
        out.push_back(e);
      }
      return out;
    };
    auto a = records(TocJsonOf(ours));
    auto b = records(*their_json);
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k)
      EXPECT_EQ(a[k], b[k]) << a[k].dump() << "\n" << b[k].dump();
    ::imgfs::testing::FakeBlobSource source(ours.bytes);
    auto index = LoadZstdChunkedIndex(source, ours.layer.descriptor, false);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar));
  }
}

// A file's chunks as a TOC lists them.
struct ChunkRecord {
  uint64_t offset = 0;  // in the file
  uint64_t size = 0;
  std::string digest;
  bool zeros = false;
  bool operator==(const ChunkRecord&) const = default;
};

// name → chunks, in TOC order (a single-chunk file: one record with the file digest).
std::map<std::string, std::vector<ChunkRecord>> ChunksOf(const std::string& toc_json) {
  std::map<std::string, std::vector<ChunkRecord>> out;
  nlohmann::json toc = nlohmann::json::parse(toc_json);
  for (const auto& e : toc["entries"]) {
    const std::string name = e["name"];
    if (e["type"] == "reg" && e.value("size", uint64_t{0}) > 0) {
      ChunkRecord c;
      c.size = e.contains("chunkSize") ? e["chunkSize"].get<uint64_t>() : e["size"].get<uint64_t>();
      c.digest = e.contains("chunkDigest") ? e["chunkDigest"] : e["digest"];
      c.zeros = e.value("chunkType", "") == "zeros";
      out[name].push_back(c);
    } else if (e["type"] == "chunk") {
      ChunkRecord c;
      c.offset = e.value("chunkOffset", uint64_t{0});
      c.size = e["chunkSize"];
      c.digest = e["chunkDigest"];
      c.zeros = e.value("chunkType", "") == "zeros";
      out[name].push_back(c);
    }
  }
  return out;
}

std::string TocOfFixtureLayer(const std::string& layout, size_t layer) {
  auto index = nlohmann::json::parse(testing::ReadWhole(layout + "/index.json"));
  std::string digest = index["manifests"][0]["digest"];
  auto manifest =
      nlohmann::json::parse(testing::ReadWhole(layout + "/blobs/sha256/" + digest.substr(7)));
  const auto& l = manifest["layers"][layer];
  std::string blob =
      testing::ReadWhole(layout + "/blobs/sha256/" + l["digest"].get<std::string>().substr(7));
  auto pos = ParseZstdChunkedPosition(
      l["annotations"]["io.containers.zstd-chunked.manifest-position"].get<std::string>());
  if (!pos.has_value()) return "";
  auto json = DecompressZstdChunkedToc(
      std::string_view(blob).substr(pos->offset, pos->compressed_length), pos->uncompressed_length);
  return json.has_value() ? *json : "";
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

std::string OneFileTar(const std::string& name, const std::string& content) {
  std::string out;
  registry::TarWriter w(&out);
  EXPECT_TRUE(w.Add(registry::FileEntry(name, content.size()), content).ok());
  EXPECT_TRUE(w.Finish().ok());
  return out;
}

// The share of `b`'s chunk digests (counted by bytes) also found among `a`'s.
double SharedShare(const std::vector<ChunkRecord>& a, const std::vector<ChunkRecord>& b) {
  std::set<std::string> have;
  for (const ChunkRecord& c : a) have.insert(c.digest);
  uint64_t shared = 0;
  uint64_t total = 0;
  for (const ChunkRecord& c : b) {
    total += c.size;
    if (have.count(c.digest) > 0) shared += c.size;
  }
  return total == 0 ? 0 : static_cast<double>(shared) / static_cast<double>(total);
}

TEST(ZstdChunkedWriter, ChunkBoundariesEqualSkopeosWithoutBoundsAndAreASubsetWithThem) {
  // The splitting is containers/storage's: with the bounds lifted, every file of the fixture
  // is cut exactly where skopeo cut it (same chunk offsets, sizes, digests and zeros runs).
  auto plain = testing::FixtureLayers(testing::kFixtures + "/tiny-uncompressed");
  ASSERT_EQ(plain.size(), 3u);
  ContentChunking unbounded;
  unbounded.min_bytes = 1;
  unbounded.max_bytes = 1ull << 30;
  size_t compared = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i + 1));
    std::string tar = testing::ReadWhole(plain[i].path);
    auto theirs = ChunksOf(TocOfFixtureLayer(testing::kFixtures + "/tiny-zstdchunked", i));
    auto ours = ChunksOf(TocJsonOf(Write(tar, ContentDefined(unbounded))));
    ASSERT_EQ(ours.size(), theirs.size());
    for (const auto& [name, chunks] : theirs) {
      ASSERT_EQ(ours.count(name), 1u) << name;
      const auto& mine = ours[name];
      if (chunks.size() == 1) {
        // A one-chunk file carries no chunk type in either TOC.
        ASSERT_EQ(mine.size(), 1u) << name;
        EXPECT_EQ(mine[0].digest, chunks[0].digest) << name;
      } else {
        EXPECT_EQ(mine, chunks) << name;
      }
      compared += chunks.size();
    }
    // With the default bounds (8 KiB .. 1 MiB), every boundary is one of skopeo's, or a
    // 1 MiB cut.
    auto bounded = ChunksOf(TocJsonOf(Write(tar)));
    for (const auto& [name, chunks] : bounded) {
      std::set<uint64_t> their_cuts;
      for (const ChunkRecord& c : theirs[name]) their_cuts.insert(c.offset);
      for (const ChunkRecord& c : chunks) {
        EXPECT_TRUE(their_cuts.count(c.offset) > 0 || c.offset % (1 << 20) == 0 ||
                    (c.zeros && c.offset > 0))
            << name << " chunk at " << c.offset;
        EXPECT_LE(c.size, 1u << 20) << name;
      }
    }
  }
  // busybox and random.bin alone have 60 chunks.
  EXPECT_GT(compared, 60u);
}

TEST(ZstdChunkedWriter, AnInsertionNearTheStartKeepsMostChunkDigests) {
  const std::string v1 = RandomBytes(6 << 20, 42);
  std::string v2 = v1;
  v2.insert(1000, RandomBytes(100, 7));
  const std::string tar1 = OneFileTar("opt/model.bin", v1);
  const std::string tar2 = OneFileTar("opt/model.bin", v2);

  Blob a = Write(tar1);
  Blob b = Write(tar2);
  auto ca = ChunksOf(TocJsonOf(a))["opt/model.bin"];
  auto cb = ChunksOf(TocJsonOf(b))["opt/model.bin"];
  ASSERT_GT(ca.size(), 40u);  // 6 MiB / ~64 KiB
  double content_defined = SharedShare(ca, cb);

  Blob fa = Write(tar1, Fixed(64 << 10));
  Blob fb = Write(tar2, Fixed(64 << 10));
  double fixed = SharedShare(ChunksOf(TocJsonOf(fa))["opt/model.bin"],
                             ChunksOf(TocJsonOf(fb))["opt/model.bin"]);
  std::printf(
      "[ insertion ] 100 bytes inserted at offset 1000 of a 6 MiB file: %.1f %% of the bytes "
      "in chunks whose digest is shared (content-defined, %zu chunks); fixed 64 KiB chunks: "
      "%.1f %%\n",
      100.0 * content_defined, cb.size(), 100.0 * fixed);
  EXPECT_GE(content_defined, 0.80);
  EXPECT_LT(fixed, 0.05);
  // Chunk count shared too (not only bytes).
  std::set<std::string> have;
  for (const ChunkRecord& c : ca) have.insert(c.digest);
  size_t shared = 0;
  for (const ChunkRecord& c : cb) shared += have.count(c.digest);
  std::printf("[ insertion ] %zu of %zu chunk digests shared\n", shared, cb.size());
  EXPECT_GE(shared * 10, cb.size() * 8);

  // Both blobs read back through the index.
  ::imgfs::testing::FakeBlobSource source(b.bytes);
  auto index = LoadZstdChunkedIndex(source, b.layer.descriptor, false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar2));
}

TEST(ZstdChunkedWriter, ChunksRespectTheBoundsAndZeroRunsAreZerosChunks) {
  // Random data, a long run of one byte (the checksum never or always fires there), a zeros
  // run longer than the maximum, short zero runs (data), and random data again.
  std::string content = RandomBytes(700 << 10, 1);
  content += std::string(900 << 10, 'a');
  content += std::string(300 << 10, '\0');
  for (int i = 0; i < 50; ++i) content += RandomBytes(3000, 100 + i) + std::string(500, '\0');
  content += RandomBytes(200 << 10, 2);
  const std::string tar = OneFileTar("data/mixed.bin", content);

  ContentChunking bounds;
  bounds.min_bytes = 16 << 10;
  bounds.max_bytes = 128 << 10;
  Blob b = Write(tar, ContentDefined(bounds));
  auto chunks = ChunksOf(TocJsonOf(b))["data/mixed.bin"];
  ASSERT_GT(chunks.size(), 10u);
  uint64_t expect_offset = 0;
  size_t zeros = 0;
  size_t at_max = 0;
  for (size_t k = 0; k < chunks.size(); ++k) {
    const ChunkRecord& c = chunks[k];
    SCOPED_TRACE("chunk " + std::to_string(k) + " at " + std::to_string(c.offset));
    EXPECT_EQ(c.offset, expect_offset);
    expect_offset += c.size;
    EXPECT_GT(c.size, 0u);
    EXPECT_LE(c.size, bounds.max_bytes);
    at_max += c.size == bounds.max_bytes ? 1 : 0;
    std::string bytes = content.substr(c.offset, c.size);
    EXPECT_EQ(c.digest, Digest::Sha256Of(bytes).String());
    if (c.zeros) {
      ++zeros;
      EXPECT_EQ(bytes, std::string(c.size, '\0'));
      continue;
    }
    // A data chunk is shorter than the minimum only at the end of the file or before zeros.
    const bool last = k + 1 == chunks.size();
    if (!last && !chunks[k + 1].zeros) {
      EXPECT_GE(c.size, bounds.min_bytes);
    }
  }
  EXPECT_EQ(expect_offset, content.size());
  // 300 KiB of zeros in chunks of at most 128 KiB: 3 zeros chunks; 500-byte runs are data.
  EXPECT_EQ(zeros, 3u);
  EXPECT_EQ(b.layer.zeros_chunks, 3u);
  // The 900 KiB run of 'a' is cut at the maximum (or at the minimum: the checksum of a
  // constant window is constant).
  EXPECT_GE(at_max, 2u);

  ::imgfs::testing::FakeBlobSource source(b.bytes);
  auto index = LoadZstdChunkedIndex(source, b.layer.descriptor, false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar));
  // Zeros chunks need no bytes from the blob.
  size_t free_chunks = 0;
  for (const Chunk& c : index->chunks) free_chunks += IsZerosChunk(c) ? 1 : 0;
  EXPECT_EQ(free_chunks, 3u);

  // Bad bounds are refused.
  registry::BlobSink drop = [](std::string_view) { return Status::Ok(); };
  ContentChunking bad = bounds;
  bad.max_bytes = bad.min_bytes - 1;
  EXPECT_EQ(WriteLazyLayer(TarBytes::FromString(tar), ContentDefined(bad), drop).error().code(),
            StatusCode::kInvalidArgument);
  bad = bounds;
  bad.split_bits = 0;
  EXPECT_EQ(WriteLazyLayer(TarBytes::FromString(tar), ContentDefined(bad), drop).error().code(),
            StatusCode::kInvalidArgument);
}

TEST(ContentChunker, BoundariesDoNotDependOnHowTheBytesArrive) {
  std::string content = RandomBytes(300 << 10, 9) + std::string(5000, '\0') + RandomBytes(1000, 3) +
                        std::string(700, '\0') + RandomBytes(90 << 10, 4) + std::string(2000, '\0');
  ContentChunking options;
  options.min_bytes = 2 << 10;
  options.max_bytes = 64 << 10;
  options.split_bits = 12;
  auto run = [&](size_t piece) {
    std::vector<std::pair<uint64_t, ChunkKind>> cuts;
    std::string seen;
    uint64_t size = 0;
    ContentChunker chunker(
        options,
        [&](std::string_view bytes) {
          seen.append(bytes);
          size += bytes.size();
          return Status::Ok();
        },
        [&](ChunkKind kind) {
          EXPECT_GT(size, 0u);
          cuts.emplace_back(size, kind);
          size = 0;
          return Status::Ok();
        });
    chunker.Reset();
    for (size_t off = 0; off < content.size(); off += piece) {
      EXPECT_TRUE(chunker.Feed(std::string_view(content).substr(off, piece)).ok());
    }
    EXPECT_TRUE(chunker.Finish().ok());
    EXPECT_TRUE(seen == content);
    return cuts;
  };
  auto whole = run(content.size());
  EXPECT_GT(whole.size(), 10u);
  EXPECT_EQ(run(1), whole);
  EXPECT_EQ(run(7), whole);
  EXPECT_EQ(run(4096), whole);
  size_t zeros = 0;
  for (const auto& [size, kind] : whole) zeros += kind == ChunkKind::kZeros ? 1 : 0;
  EXPECT_EQ(zeros, 2u);  // the 5000- and 2000-byte runs; the 700-byte run is data

  // A callback's error stops the chunker and is returned.
  ContentChunker failing(
      options, [](std::string_view) { return Status::Ok(); },
      [](ChunkKind) { return Status::Unavailable("sink full"); });
  failing.Reset();
  Status st = failing.Feed(content);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
}

TEST(ZstdChunkedWriter, PrioritizedFilesComeFirstInTheGivenOrder) {
  std::string tar;
  registry::TarWriter w(&tar);
  ASSERT_TRUE(w.Add(registry::DirEntry(""), "").ok());
  ASSERT_TRUE(w.Add(registry::DirEntry("bin"), "").ok());
  ASSERT_TRUE(w.Add(registry::FileEntry("bin/tool", 4), "tool").ok());
  ASSERT_TRUE(w.Add(registry::DirEntry("usr"), "").ok());
  ASSERT_TRUE(w.Add(registry::DirEntry("usr/lib"), "").ok());
  ASSERT_TRUE(w.Add(registry::FileEntry("usr/lib/libbig.so", 200000), RandomBytes(200000, 5)).ok());
  ASSERT_TRUE(w.Add(registry::FileEntry("usr/lib/libsmall.so", 5), "small").ok());
  registry::TarEntry link = registry::FileEntry("usr/lib/libsmall.so.1", 0);
  link.type = registry::TarEntryType::kHardlink;
  link.link_target = "usr/lib/libsmall.so";
  ASSERT_TRUE(w.Add(link, "").ok());
  ASSERT_TRUE(w.Add(registry::DirEntry("etc"), "").ok());
  ASSERT_TRUE(w.Add(registry::FileEntry("etc/app.conf", 3), "a=1").ok());
  ASSERT_TRUE(w.Add(registry::FileEntry("etc/twice", 1), "1").ok());
  ASSERT_TRUE(w.Add(registry::FileEntry("etc/twice", 1), "2").ok());
  ASSERT_TRUE(w.Finish().ok());

  LayerWriterOptions options = ContentDefined();
  // Given order, not layer order; a missing file, a duplicated name, a directory and a
  // hardlink are not moved.
  options.prioritized_files = {"/etc/app.conf", "usr/lib/libbig.so",    "not/here", "etc/twice",
                               "usr",           "usr/lib/libsmall.so.1"};
  Blob b = Write(tar, options);
  EXPECT_TRUE(b.layer.prioritized);
  std::vector<std::string> names;
  const nlohmann::json toc = nlohmann::json::parse(TocJsonOf(b));
  for (const auto& e : toc["entries"]) {
    if (e["type"] != "chunk") names.push_back(e["name"]);
  }
  const std::vector<std::string> want = {".",
                                         "etc/",
                                         "etc/app.conf",
                                         "usr/",
                                         "usr/lib/",
                                         "usr/lib/libbig.so",
                                         "bin/",
                                         "bin/tool",
                                         "usr/lib/libsmall.so",
                                         "usr/lib/libsmall.so.1",
                                         "etc/twice",
                                         "etc/twice"};
  EXPECT_EQ(names, want);
  // The blob is still a valid layer: every file reads back (the tar in the new order).
  std::string plain = Unzstd(b.bytes);
  EXPECT_EQ(Digest::Sha256Of(plain), b.layer.diff_id);
  auto items = testing::ReadTarItems(plain);
  ASSERT_EQ(items.size(), want.size());
  EXPECT_EQ(items[2].entry.name, "etc/app.conf");
  EXPECT_EQ(items[5].content, RandomBytes(200000, 5));
  // The same entries with the same payloads as the input, only moved.
  std::multiset<std::pair<std::string, std::string>> before;
  std::multiset<std::pair<std::string, std::string>> after;
  for (const auto& item : testing::ReadTarItems(tar)) before.emplace(item.entry.name, item.content);
  for (const auto& item : items) after.emplace(item.entry.name, item.content);
  EXPECT_TRUE(before == after);
  EXPECT_EQ(items.back().content, "2");  // the last etc/twice still wins
  ::imgfs::testing::FakeBlobSource source(b.bytes);
  auto index = LoadZstdChunkedIndex(source, b.layer.descriptor, false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();

  // Nothing of this layer named: the layer order stays, nothing is reported prioritized.
  options.prioritized_files = {"elsewhere"};
  Blob same = Write(tar, options);
  EXPECT_FALSE(same.layer.prioritized);
  EXPECT_TRUE(same.bytes == Write(tar).bytes);
  options.prioritized_files = {"../escape"};
  registry::BlobSink drop = [](std::string_view) { return Status::Ok(); };
  EXPECT_EQ(WriteLazyLayer(TarBytes::FromString(tar), options, drop).error().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace imgfs::fs
