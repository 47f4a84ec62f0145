// Tests for fs/layer/zstd_chunked_toc.h over the tiny-zstdchunked fixture (skopeo's writer):
// the TOC index equals the tar-pass index of the same blob, costs one ranged read with the
// annotation (two with the footer), every chunk (zeros chunks included) decodes and verifies,
// and corrupt TOCs, positions and footers are rejected.
#include "fs/layer/zstd_chunked_toc.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

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

struct Layer {
  Descriptor desc;
  std::string path;
};

std::vector<Layer> FixtureLayers(std::unique_ptr<registry::LocalSource>* keep) {
  std::vector<Layer> out;
  const std::string dir = testing::kFixtures + "/tiny-zstdchunked";
  auto src = registry::LocalSource::OpenOciLayout(dir, "latest");
  EXPECT_TRUE(src.has_value()) << src.error().ToString();
  if (!src.has_value()) return out;
  auto m = (*src)->GetManifest("");
  EXPECT_TRUE(m.has_value());
  if (!m.has_value()) return out;
  auto manifest = registry::DecodeManifest(m->bytes);
  EXPECT_TRUE(manifest.has_value());
  if (!manifest.has_value()) return out;
  for (const Descriptor& d : manifest->layers) {
    out.push_back({d, dir + "/blobs/sha256/" + d.digest.hex()});
  }
  *keep = std::move(*src);
  return out;
}

TEST(ZstdChunkedToc, FixtureIndexMatchesTarIndexAndChunksDecode) {
  std::unique_ptr<registry::LocalSource> local;
  std::vector<Layer> layers = FixtureLayers(&local);
  ASSERT_EQ(layers.size(), 3u);
  std::map<std::string, Digest> whole;
  size_t zeros_chunks = 0;
  for (const Layer& l : layers) {
    FakeBlobSource blobs(testing::ReadWhole(l.path));
    auto index = LoadZstdChunkedIndex(blobs, l.desc, /*allow_missing_checksum=*/false);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    EXPECT_EQ(blobs.requests(), 1);  // the TOC only: its position is in the annotation
    EXPECT_EQ(index->format, LayerFormat::kZstdChunked);
    EXPECT_EQ(index->layer_digest, l.desc.digest);
    if (l.desc.size > 1000000) {
      EXPECT_LT(blobs.bytes() * 100, uint64_t(l.desc.size));
    }

    auto tar = IndexBuilder::BuildFromFile(l.path, l.desc.media_type);
    ASSERT_TRUE(tar.has_value()) << tar.error().ToString();
    ASSERT_EQ(tar->entries.size(), index->entries.size());
    for (size_t i = 0; i < tar->entries.size(); ++i) {
      const FileEntry& a = tar->entries[i];
      const FileEntry& b = index->entries[i];
      EXPECT_EQ(a.path, b.path) << i;
      EXPECT_EQ(a.type, b.type) << a.path;
      EXPECT_EQ(a.mode, b.mode) << a.path;
      EXPECT_EQ(a.uid, b.uid) << a.path;
      EXPECT_EQ(a.gid, b.gid) << a.path;
      EXPECT_EQ(a.size, b.size) << a.path;
      EXPECT_EQ(a.mtime_sec, b.mtime_sec) << a.path;
      EXPECT_EQ(a.dev_major, b.dev_major) << a.path;
      EXPECT_EQ(a.dev_minor, b.dev_minor) << a.path;
      EXPECT_EQ(a.link_target, b.link_target) << a.path;
      EXPECT_EQ(a.xattrs, b.xattrs) << a.path;
      if (b.type != EntryType::kRegular) continue;
      std::vector<uint32_t> ids;
      for (uint32_t k = 0; k < b.chunk_count; ++k) {
        ids.push_back(b.first_chunk + k);
        zeros_chunks += IsZerosChunk(index->chunks[b.first_chunk + k]);
      }
      blobs.ResetCounts();
      auto chunks = ReadChunks(blobs, *index, ids);
      ASSERT_TRUE(chunks.has_value()) << b.path << ": " << chunks.error().ToString();
      EXPECT_LE(blobs.requests(), 1) << b.path;  // a file's frames are contiguous
      std::string data;
      for (const std::string& c : *chunks) data += c;
      ASSERT_EQ(data.size(), a.size) << a.path;
      for (uint32_t k = 0; k < a.chunk_count; ++k) {
        const Chunk& c = tar->chunks[a.first_chunk + k];
        EXPECT_EQ(Digest::Sha256Of(std::string_view(data).substr(c.file_offset, c.size)), c.digest)
            << a.path;
      }
      whole[b.path] = Digest::Sha256Of(data);
    }
    auto decoded = LayerIndex::Decode(index->Encode());
    ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
    EXPECT_EQ(*decoded, *index);
  }
  EXPECT_EQ(zeros_chunks, 6u);  // busybox's zeros chunks (fixture README)
  EXPECT_EQ(whole["bin/busybox"].hex(),
            "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6");
  EXPECT_EQ(whole["data/random.bin"].hex(),
            "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d");
  EXPECT_EQ(whole["data/zeros.bin"].hex(),
            "106f0647ae10a6516b1ab2968038161e287ef40d1b22ca047531ed768e594ef1");
}

TEST(ZstdChunkedToc, FooterPathsGiveTheSameIndex) {
  std::unique_ptr<registry::LocalSource> local;
  std::vector<Layer> layers = FixtureLayers(&local);
  ASSERT_EQ(layers.size(), 3u);
  const Layer& l = layers[0];
  std::string blob = testing::ReadWhole(l.path);
  FakeBlobSource by_annotation(blob);
  auto want = LoadZstdChunkedIndex(by_annotation, l.desc, false);
  ASSERT_TRUE(want.has_value()) << want.error().ToString();

  // No position annotation: the 40-byte GnUlInUx footer, one extra ranged read.
  Descriptor d = l.desc;
  d.annotations.erase(std::string(kZstdChunkedOldPositionAnnotation));
  FakeBlobSource by_footer(blob);
  auto got = LoadZstdChunkedIndex(by_footer, d, false);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, *want);
  EXPECT_EQ(by_footer.requests(), 2);

  // The 64-byte GNUlInUx footer (c/storage since 2023) appended in a skippable frame.
  auto pos = ParseZstdChunkedPosition(
      l.desc.annotations.at(std::string(kZstdChunkedOldPositionAnnotation)));
  ASSERT_TRUE(pos.has_value());
  std::string footer;
  auto le64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) footer.push_back(static_cast<char>(v >> (8 * i)));
  };
  le64(pos->offset), le64(pos->compressed_length), le64(pos->uncompressed_length), le64(1);
  le64(0), le64(0), le64(0);
  footer += kZstdChunkedFooterMagic;
  std::string frame("\x50\x2a\x4d\x18\x40\0\0\0", 8);
  std::string longer = blob + frame + footer;
  d.size = static_cast<int64_t>(longer.size());
  FakeBlobSource new_footer(longer);
  auto again = LoadZstdChunkedIndex(new_footer, d, false);
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->entries, want->entries);
  EXPECT_EQ(again->chunks, want->chunks);

  // The current annotation names win over the old ones and are read the same way.
  Descriptor renamed = l.desc;
  renamed.annotations.clear();
  renamed.annotations[std::string(kZstdChunkedPositionAnnotation)] =
      l.desc.annotations.at(std::string(kZstdChunkedOldPositionAnnotation));
  renamed.annotations[std::string(kZstdChunkedChecksumAnnotation)] =
      l.desc.annotations.at(std::string(kZstdChunkedOldChecksumAnnotation));
  FakeBlobSource renamed_blobs(blob);
  auto third = LoadZstdChunkedIndex(renamed_blobs, renamed, false);
  ASSERT_TRUE(third.has_value()) << third.error().ToString();
  EXPECT_EQ(*third, *want);
}

TEST(ZstdChunkedToc, CorruptTocPositionAndFooter) {
  std::unique_ptr<registry::LocalSource> local;
  std::vector<Layer> layers = FixtureLayers(&local);
  ASSERT_EQ(layers.size(), 3u);
  const Layer& l = layers[0];
  std::string blob = testing::ReadWhole(l.path);
  auto pos = ParseZstdChunkedPosition(
      l.desc.annotations.at(std::string(kZstdChunkedOldPositionAnnotation)));
  ASSERT_TRUE(pos.has_value());

  // A flipped byte inside the compressed TOC: checksum mismatch naming the layer.
  std::string flipped = blob;
  flipped[pos->offset + pos->compressed_length / 2] ^= 0x20;
  FakeBlobSource bad(flipped);
  auto index = LoadZstdChunkedIndex(bad, l.desc, false);
  ASSERT_FALSE(index.has_value());
  EXPECT_EQ(index.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(index.error().message().find("checksum mismatch"), std::string::npos)
      << index.error().ToString();
  EXPECT_NE(index.error().message().find(l.desc.digest.String()), std::string::npos);

  // Missing checksum annotation: refused unless allowed.
  Descriptor d = l.desc;
  d.annotations.erase(std::string(kZstdChunkedOldChecksumAnnotation));
  FakeBlobSource good(blob);
  EXPECT_EQ(LoadZstdChunkedIndex(good, d, false).error().code(), StatusCode::kCorrupt);
  EXPECT_TRUE(LoadZstdChunkedIndex(good, d, true).has_value());

  // Positions outside the blob or malformed.
  for (const std::string& p : std::vector<std::string>{
           std::to_string(blob.size() - 10) + ":5556:25964:1", "2641395:99999999:25964:1",
           "2641395:5556:25964:2", "1:2:3", "a:b:c:d", "1:2:3:4:5", "::::"}) {
    Descriptor q = l.desc;
    q.annotations[std::string(kZstdChunkedOldPositionAnnotation)] = p;
    auto r = LoadZstdChunkedIndex(good, q, true);
    ASSERT_FALSE(r.has_value()) << p;
    EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << p;
  }
  // Wrong uncompressed length: the TOC does not decompress to the announced size.
  Descriptor q = l.desc;
  q.annotations[std::string(kZstdChunkedOldPositionAnnotation)] =
      std::to_string(pos->offset) + ":" + std::to_string(pos->compressed_length) + ":100:1";
  EXPECT_EQ(LoadZstdChunkedIndex(good, q, false).error().code(), StatusCode::kCorrupt);

  // Truncated footer (no annotation to fall back on).
  d = l.desc;
  d.annotations.clear();
  std::string cut = blob.substr(0, blob.size() - 7);
  d.size = static_cast<int64_t>(cut.size());
  FakeBlobSource truncated(cut);
  auto r = LoadZstdChunkedIndex(truncated, d, true);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().message().find("footer"), std::string::npos) << r.error().ToString();
}

TEST(ZstdChunkedToc, ChunkOffsetsAreValidated) {
  Digest layer = Digest::Sha256Of("layer");
  const std::string digest = Digest::Sha256Of("abc").String();
  auto build = [&](const std::string& entries) {
    return BuildZstdChunkedIndexFromToc("{\"version\":1,\"entries\":[" + entries + "]}", layer,
                                        1000, 900);
  };
  auto ok = build(
      "{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"endOffset\":20,"
      "\"digest\":\"" +
      digest + "\"}");
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  ASSERT_EQ(ok->chunks.size(), 1u);
  EXPECT_EQ(ok->chunks[0].blob_offset, 10u);
  EXPECT_EQ(ok->chunks[0].blob_length, 10u);
  EXPECT_EQ(ok->chunks[0].digest.String(), digest);
  for (const std::string& bad : std::vector<std::string>{
           "{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"endOffset\":950,"
           "\"digest\":\"" +
               digest + "\"}",
           "{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"endOffset\":5,"
           "\"digest\":\"" +
               digest + "\"}",
           "{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"digest\":\"" + digest +
               "\"}",
           "{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"endOffset\":20}",
           "{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"endOffset\":20,"
           "\"chunkSize\":"
           "1,\"chunkDigest\":\"" +
               digest + "\"}",
           "{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"endOffset\":20,"
           "\"chunkType\":"
           "\"holes\",\"digest\":\"" +
               digest + "\"}"}) {
    auto r = build(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << bad;
    EXPECT_NE(r.error().message().find("'f'"), std::string::npos) << r.error().ToString();
  }
}

// Issue 9, finding 8: a chunk whose frame spans most of the blob, and zeros chunks.
TEST(ZstdChunkedTocLimits, ChunkGeometryIsBounded) {
  Digest layer = Digest::Sha256Of("layer");
  const std::string digest = Digest::Sha256Of("abc").String();
  const uint64_t blob = 4ull << 30;
  auto build = [&](const std::string& entries) {
    return BuildZstdChunkedIndexFromToc("{\"version\":1,\"entries\":[" + entries + "]}", layer,
                                        blob, blob - 100);
  };
  // A 3-byte file whose frame claims 4 GiB. Before: accepted (only checked <= data end).
  auto spans = build("{\"type\":\"reg\",\"name\":\"f\",\"size\":3,\"offset\":10,\"endOffset\":" +
                     std::to_string(blob - 200) + ",\"digest\":\"" + digest + "\"}");
  ASSERT_FALSE(spans.has_value());
  EXPECT_NE(spans.error().message().find("MaxChunkBlobBytes"), std::string::npos)
      << spans.error().ToString();
  // A 1 GiB zeros chunk has no bytes to fetch: accepted, served in slices by the reader.
  const uint64_t gib = 1ull << 30;
  auto zeros = build("{\"type\":\"reg\",\"name\":\"z\",\"size\":" + std::to_string(gib) +
                     ",\"offset\":0,\"endOffset\":0,\"chunkSize\":" + std::to_string(gib) +
                     ",\"chunkType\":\"zeros\",\"digest\":\"" + digest + "\"}");
  ASSERT_TRUE(zeros.has_value()) << zeros.error().ToString();
  ASSERT_EQ(zeros->chunks.size(), 1u);
  EXPECT_TRUE(IsZerosChunk(zeros->chunks[0]));
  // Decoding it whole is refused by the decoder, not allocated.
  auto whole = DecodeChunk(LayerFormat::kZstdChunked, zeros->chunks[0], "", layer, "z");
  ASSERT_FALSE(whole.has_value());
  EXPECT_NE(whole.error().message().find("kMaxChunkBytes"), std::string::npos)
      << whole.error().ToString();
}

}  // namespace
}  // namespace imgfs::fs
