// Tests of the zstd:chunked writer (fs/convert/layer_writer.h): round trips through the
// project's own zstd:chunked readers (annotation and footer paths, chunk decoding with digest
// verification), the blob as an ordinary tar+zstd stream equal to the input tar, frame
// boundaries, the tar-split stream, determinism, and the TOC fields compared with the ones
// skopeo wrote for the same layers (shared fixtures).
#include <zstd.h>

#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/base64.h"
#include "fs/convert/layer_writer.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "tests/fs/layer_test_util.h"
#include "tests/support/lazy_layer_check.h"

namespace imgfs::fs {
namespace {

using registry::Digest;

constexpr uint64_t kChunk = 64 << 10;

struct Blob {
  WrittenLayer layer;
  std::string bytes;
};

Blob Write(std::string_view tar, uint64_t chunk = kChunk) {
  LayerWriterOptions options;
  options.format = LazyFormat::kZstdChunked;
  options.chunk_size_bytes = chunk;
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

TEST(ZstdChunkedWriter, RoundTripThroughTheReadersByAnnotationAndByFooter) {
  std::string tar = testing::RichLayerTar(kChunk);
  Blob b = Write(tar);
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

  testing::OneBlobSource source(b.bytes);
  auto index = LoadZstdChunkedIndex(source, b.layer.descriptor, /*allow_missing_checksum=*/false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  EXPECT_EQ(index->format, LayerFormat::kZstdChunked);
  auto items = testing::ReadTarItems(tar);
  size_t chunks = testing::ExpectIndexMatchesTar(*index, source, items);
  EXPECT_EQ(chunks, b.layer.chunks);
  EXPECT_EQ(b.layer.chunks, 1u + 1 + 2 + 3 + 2 + 6);

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
  EXPECT_NE(a.layer.descriptor.digest, Write(tar, kChunk * 2).layer.descriptor.digest);
}

TEST(ZstdChunkedWriter, TocFieldsEqualSkopeosForTheFixtureLayers) {
  // tiny-uncompressed holds the tars skopeo converted into tiny-zstdchunked. skopeo cuts
  // files by content (rolling checksum) and we by size, so chunk records differ; every
  // other record must carry the same values.
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
    Blob ours = Write(tar, 4 << 20);
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
                              "accesstime", "changetime"}) {
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
    testing::OneBlobSource source(ours.bytes);
    auto index = LoadZstdChunkedIndex(source, ours.layer.descriptor, false);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar));
  }
}

}  // namespace
}  // namespace imgfs::fs
