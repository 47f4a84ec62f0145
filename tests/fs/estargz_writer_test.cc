// Tests of the eStargz writer (fs/convert/layer_writer.h): round trips through the project's
// own eStargz readers (footer, TOC, chunk decoding with digest verification), the blob as an
// ordinary tar.gz, landmarks and prioritized files, determinism, and the TOC compared with
// the one ctr-remote wrote for the same layers (tests/fixtures).
#include <zlib.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fs/layer/estargz_toc.h"
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

Blob Write(std::string_view tar, LayerWriterOptions options) {
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

LayerWriterOptions Estargz(uint64_t chunk = kChunk) {
  LayerWriterOptions o;
  o.format = LazyFormat::kEstargz;
  o.chunk_size_bytes = chunk;
  return o;
}

// Decompresses every gzip member of `blob` (an independent decoder: plain zlib). Returns the
// member start offsets through `starts`.
std::string Gunzip(std::string_view blob, std::vector<uint64_t>* starts = nullptr) {
  std::string out;
  size_t pos = 0;
  while (pos < blob.size()) {
    if (starts != nullptr) starts->push_back(pos);
    z_stream zs{};
    EXPECT_EQ(inflateInit2(&zs, 16 + MAX_WBITS), Z_OK);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(blob.data() + pos));
    zs.avail_in = static_cast<uInt>(blob.size() - pos);
    char buf[1 << 16];
    int rc = Z_OK;
    while (rc == Z_OK) {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof(buf);
      rc = inflate(&zs, Z_NO_FLUSH);
      out.append(buf, sizeof(buf) - zs.avail_out);
    }
    EXPECT_EQ(rc, Z_STREAM_END) << "bad gzip member at " << pos;
    pos = blob.size() - zs.avail_in;
    inflateEnd(&zs);
    if (rc != Z_STREAM_END) break;
  }
  return out;
}

std::string TocJsonOf(const Blob& b) {
  std::string_view bytes = b.bytes;
  auto footer = ParseEstargzFooter(bytes.substr(bytes.size() - kEstargzFooterBytes));
  EXPECT_TRUE(footer.has_value()) << footer.error().ToString();
  if (!footer.has_value()) return "";
  auto json = ExtractEstargzTocJson(
      bytes.substr(footer->toc_offset, bytes.size() - kEstargzFooterBytes - footer->toc_offset));
  EXPECT_TRUE(json.has_value()) << json.error().ToString();
  return json.has_value() ? *json : "";
}

TEST(EstargzWriter, RoundTripThroughTheReaders) {
  std::string tar = testing::RichLayerTar(kChunk);
  Blob b = Write(tar, Estargz());
  ASSERT_FALSE(b.bytes.empty());
  EXPECT_EQ(b.layer.descriptor.media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
  EXPECT_EQ(b.layer.descriptor.digest, Digest::Sha256Of(b.bytes));
  EXPECT_EQ(b.layer.descriptor.size, static_cast<int64_t>(b.bytes.size()));

  // Footer → TOC offset → TOC JSON, whose sha256 is the annotation.
  std::string json = TocJsonOf(b);
  ASSERT_FALSE(json.empty());
  EXPECT_EQ(b.layer.descriptor.annotations.at(std::string(kEstargzTocDigestAnnotation)),
            Digest::Sha256Of(json).String());
  EXPECT_EQ(b.layer.toc_digest, Digest::Sha256Of(json));

  // The mount path: footer and TOC by ranged reads, verification, index.
  ::imgfs::testing::FakeBlobSource source(b.bytes);
  auto index = LoadEstargzIndex(source, b.layer.descriptor, /*allow_missing_toc_digest=*/false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  EXPECT_EQ(index->format, LayerFormat::kEstargz);
  size_t chunks = testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar));
  // below/exact: 1 chunk, above: 2, big (2.5 chunks): 3, zeros: 2, small files: 1 each.
  EXPECT_EQ(b.layer.chunks, chunks + 1);  // + the landmark
  EXPECT_EQ(b.layer.chunks, 1u + 1 + 2 + 3 + 2 + 6 + 1 /*landmark*/);
  // Neither landmark nor TOC is an entry of the index.
  for (const FileEntry& e : index->entries) {
    EXPECT_NE(e.path, kEstargzNoPrefetchLandmark);
    EXPECT_NE(e.path, kEstargzTocName);
  }

  // A TOC digest annotation that does not match is refused.
  registry::Descriptor wrong = b.layer.descriptor;
  wrong.annotations[std::string(kEstargzTocDigestAnnotation)] = Digest::Sha256Of("x").String();
  EXPECT_EQ(LoadEstargzIndex(source, wrong, false).error().code(), StatusCode::kCorrupt);
}

TEST(EstargzWriter, BlobIsAnOrdinaryTarGzipWithTheInputEntriesByteForByte) {
  std::string tar = testing::RichLayerTar(kChunk);
  Blob b = Write(tar, Estargz());
  std::vector<uint64_t> starts;
  std::string plain = Gunzip(b.bytes, &starts);
  EXPECT_EQ(Digest::Sha256Of(plain), b.layer.diff_id);
  EXPECT_EQ(plain.size(), b.layer.uncompressed_size);
  EXPECT_EQ(b.layer.descriptor.annotations.at(std::string(kEstargzUncompressedSizeAnnotation)),
            std::to_string(plain.size()));
  // Landmark header + its padded byte, then the input's entries unchanged (its two zero
  // end blocks replaced by the TOC entry).
  ASSERT_GT(plain.size(), 1024 + tar.size() - 1024);
  EXPECT_TRUE(plain.substr(1024, tar.size() - 1024) == tar.substr(0, tar.size() - 1024));
  auto items = testing::ReadTarItems(plain);
  ASSERT_GE(items.size(), 3u);
  EXPECT_EQ(items.front().entry.name, kEstargzNoPrefetchLandmark);
  EXPECT_EQ(items.front().content, "\x0f");
  EXPECT_EQ(items.front().entry.mode, 0u);
  EXPECT_EQ(items.back().entry.name, kEstargzTocName);
  EXPECT_EQ(items.back().content, TocJsonOf(b));
  EXPECT_EQ(items.size(), testing::ReadTarItems(tar).size() + 2);

  // Every payload chunk starts a gzip member; the TOC has one of its own; the footer is the
  // last one, 51 bytes, as stargz-snapshotter writes it.
  auto toc = nlohmann::json::parse(TocJsonOf(b));
  std::set<uint64_t> member_starts(starts.begin(), starts.end());
  for (const auto& e : toc["entries"]) {
    if (e.contains("offset")) {
      EXPECT_TRUE(member_starts.count(e["offset"].get<uint64_t>())) << e.dump();
    }
  }
  EXPECT_TRUE(member_starts.count(b.layer.toc_offset));
  EXPECT_TRUE(member_starts.count(b.bytes.size() - 51));
  std::string footer = b.bytes.substr(b.bytes.size() - 51);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(b.layer.toc_offset));
  std::string want = std::string("\x1f\x8b\x08\x04\0\0\0\0\0\xff\x1a\0SG\x16\0", 16) + hex +
                     "STARGZ" + std::string("\x01\0\0\xff\xff\0\0\0\0\0\0\0\0", 13);
  EXPECT_EQ(footer, want);
}

TEST(EstargzWriter, OutputIsDeterministic) {
  std::string tar = testing::RichLayerTar(kChunk);
  Blob a = Write(tar, Estargz());
  Blob b = Write(tar, Estargz());
  EXPECT_TRUE(a.bytes == b.bytes);
  EXPECT_EQ(a.layer.descriptor, b.layer.descriptor);
  Blob c = Write(tar, Estargz(kChunk / 2));
  EXPECT_NE(a.layer.descriptor.digest, c.layer.descriptor.digest);
  EXPECT_GT(c.layer.chunks, a.layer.chunks);
}

TEST(EstargzWriter, PrioritizedFilesComeFirstBeforeThePrefetchLandmark) {
  std::string tar = testing::RichLayerTar(kChunk);
  LayerWriterOptions o = Estargz();
  o.prioritized_files = {"/data/xattr.txt", "etc/one", "not/in/this/layer"};
  Blob b = Write(tar, o);
  EXPECT_TRUE(b.layer.prioritized);
  auto items = testing::ReadTarItems(Gunzip(b.bytes));
  std::vector<std::string> names;
  for (size_t i = 0; i < 6 && i < items.size(); ++i) names.push_back(items[i].entry.name);
  EXPECT_EQ(names, (std::vector<std::string>{"", "etc", "etc/one", "data", "data/xattr.txt",
                                             std::string(kEstargzPrefetchLandmark)}));
  // Still the same files and bytes.
  ::imgfs::testing::FakeBlobSource source(b.bytes);
  auto index = LoadEstargzIndex(source, b.layer.descriptor, false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar));
  // The landmark's offset in the TOC bounds the prefetch range: the prioritized files sit
  // before it.
  auto toc = nlohmann::json::parse(TocJsonOf(b));
  uint64_t landmark = 0, xattr_txt = 0;
  for (const auto& e : toc["entries"]) {
    if (e["name"] == kEstargzPrefetchLandmark) landmark = e["offset"];
    if (e["name"] == "data/xattr.txt") xattr_txt = e["offset"];
  }
  EXPECT_GT(landmark, 0u);
  EXPECT_LT(xattr_txt, landmark);

  // Nothing of this layer prioritized: the no-prefetch landmark.
  o.prioritized_files = {"elsewhere"};
  Blob none = Write(tar, o);
  EXPECT_FALSE(none.layer.prioritized);
  EXPECT_EQ(testing::ReadTarItems(Gunzip(none.bytes)).front().entry.name,
            kEstargzNoPrefetchLandmark);
  o.prioritized_files = {"../escape"};
  registry::BlobSink drop = [](std::string_view) { return Status::Ok(); };
  EXPECT_EQ(WriteLazyLayer(TarBytes::FromString(tar), o, drop).error().code(),
            StatusCode::kInvalidArgument);
}

TEST(EstargzWriter, TocEqualsCtrRemotesForTheFixtureLayersExceptOffsets) {
  // tiny-uncompressed holds the very tars ctr-remote converted into tiny-estargz (with
  // --estargz-chunk-size 524288).
  auto plain = testing::FixtureLayers(testing::kFixtures + "/tiny-uncompressed");
  auto peer = testing::FixtureLayers(testing::kFixtures + "/tiny-estargz");
  ASSERT_EQ(plain.size(), 3u);
  ASSERT_EQ(peer.size(), 3u);
  for (size_t i = 0; i < plain.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i + 1));
    std::string tar = testing::ReadWhole(plain[i].path);
    Blob ours = Write(tar, Estargz(524288));
    Blob theirs;
    theirs.bytes = testing::ReadWhole(peer[i].path);
    auto strip = [](std::string json) {
      auto j = nlohmann::ordered_json::parse(json);
      for (auto& e : j["entries"]) e.erase("offset");
      return j;
    };
    auto a = strip(TocJsonOf(ours));
    auto b = strip(TocJsonOf(theirs));
    ASSERT_EQ(a["entries"].size(), b["entries"].size());
    for (size_t k = 0; k < a["entries"].size(); ++k) {
      EXPECT_EQ(a["entries"][k].dump(), b["entries"][k].dump());
    }
    EXPECT_EQ(a["version"], b["version"]);
    // And the files read back equal the tar.
    ::imgfs::testing::FakeBlobSource source(ours.bytes);
    auto index = LoadEstargzIndex(source, ours.layer.descriptor, false);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar));
  }
}

TEST(EstargzWriter, ConvertingAnEstargzLayerAgainReplacesItsLandmarkAndToc) {
  std::string tar = testing::RichLayerTar(kChunk);
  Blob once = Write(tar, Estargz());
  std::string plain = Gunzip(once.bytes);
  Blob twice = Write(plain, Estargz());
  // The same entries again: one landmark, one TOC, the same TOC (offsets included: the
  // input entries and their order are the same).
  EXPECT_EQ(TocJsonOf(twice), TocJsonOf(once));
  EXPECT_TRUE(twice.bytes == once.bytes);
  // And to zstd:chunked: no eStargz leftovers.
  LayerWriterOptions zstd;
  zstd.format = LazyFormat::kZstdChunked;
  Blob z = Write(plain, zstd);
  ::imgfs::testing::FakeBlobSource source(z.bytes);
  auto index = LoadZstdChunkedIndex(source, z.layer.descriptor, false);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  for (const FileEntry& e : index->entries) {
    EXPECT_NE(e.path, kEstargzTocName);
    EXPECT_NE(e.path, kEstargzNoPrefetchLandmark);
  }
  testing::ExpectIndexMatchesTar(*index, source, testing::ReadTarItems(tar));
}

TEST(EstargzWriter, MalformedInputIsCorruptAndFileVariantWritesAtomically) {
  std::string tar = testing::RichLayerTar(kChunk);
  registry::BlobSink drop = [](std::string_view) { return Status::Ok(); };
  auto truncated =
      WriteLazyLayer(TarBytes::FromString(std::string_view(tar).substr(0, 700)), Estargz(), drop);
  ASSERT_FALSE(truncated.has_value());
  EXPECT_EQ(truncated.error().code(), StatusCode::kCorrupt);
  LayerWriterOptions zero = Estargz(0);
  EXPECT_EQ(WriteLazyLayer(TarBytes::FromString(tar), zero, drop).error().code(),
            StatusCode::kInvalidArgument);

  char dir_template[] = "/tmp/imgfs-estargz-writer-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string dir = dir_template;
  ASSERT_TRUE(testing::WriteWhole(dir + "/layer.tar", tar));
  auto written = WriteLazyLayerFile(dir + "/layer.tar", dir + "/blob", Estargz());
  ASSERT_TRUE(written.has_value()) << written.error().ToString();
  EXPECT_TRUE(testing::ReadWhole(dir + "/blob") == Write(tar, Estargz()).bytes);
  EXPECT_EQ(written->descriptor.digest, Digest::Sha256Of(testing::ReadWhole(dir + "/blob")));
  auto bad = WriteLazyLayerFile(dir + "/missing.tar", dir + "/blob2", Estargz());
  EXPECT_FALSE(bad.has_value());
  EXPECT_NE(access((dir + "/blob2").c_str(), F_OK), 0);
  std::system(("rm -rf " + dir).c_str());  // NOLINT(cert-env33-c)
}

}  // namespace
}  // namespace imgfs::fs
