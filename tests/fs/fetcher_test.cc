// Tests for fs/fetcher.h over the real eStargz and zstd:chunked fixtures, read through a local
// BlobSource: every file reads back equal to the tar-pass reader's bytes, concurrent readers
// of one file fetch each chunk once, a second reader is served from the chunk store without
// I/O, a corrupt stored chunk is fetched again, and a source that keeps returning bad bytes
// fails the read with Corrupt after one retry.
#include "fs/fetcher.h"

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/index_builder.h"
#include "fs/layer/layer_reader.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "registry/local_source.h"
#include "registry/manifest.h"
#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

using registry::Descriptor;
using registry::Digest;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/imgfs-fetcher-test-XXXXXX";
    if (::mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Counts ranged reads; optionally flips a byte of every answer (`corrupt` > 0: that many).
class CountingSource : public registry::BlobSource {
 public:
  explicit CountingSource(std::shared_ptr<registry::BlobSource> inner) : inner_(std::move(inner)) {}
  Result<registry::FetchedManifest> GetManifest(std::string_view t) override {
    return inner_->GetManifest(t);
  }
  Status FetchBlob(const Digest& d, int64_t size, const registry::BlobSink& sink) override {
    return inner_->FetchBlob(d, size, sink);
  }
  Result<std::string> ReadBlobRange(const Digest& d, ByteRange r) override {
    reads.fetch_add(1);
    auto out = inner_->ReadBlobRange(d, r);
    if (out.has_value()) {
      bytes.fetch_add(out->size());
      if (corrupt.load() > 0 && !out->empty()) {
        corrupt.fetch_sub(1);
        (*out)[out->size() / 2] = static_cast<char>((*out)[out->size() / 2] ^ 0x5a);
      }
    }
    return out;
  }
  Result<std::vector<std::string>> ListTags() override { return inner_->ListTags(); }
  std::string Describe() const override { return inner_->Describe(); }

  std::atomic<int> reads{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<int> corrupt{0};

 private:
  std::shared_ptr<registry::BlobSource> inner_;
};

struct LazyLayer {
  std::shared_ptr<CountingSource> source;
  Descriptor desc;
  std::shared_ptr<const LayerIndex> index;
  std::string blob_path;
};

// Layer `n` (0-based) of fixture `name`, its TOC index loaded through the source.
LazyLayer OpenLayer(const std::string& name, size_t n) {
  LazyLayer out;
  std::string dir = testing::kFixtures + "/" + name;
  auto src = registry::LocalSource::OpenOciLayout(dir, "latest");
  EXPECT_TRUE(src.has_value()) << src.error().ToString();
  if (!src.has_value()) return out;
  std::shared_ptr<registry::BlobSource> inner(std::move(src).value());
  auto m = inner->GetManifest("");
  EXPECT_TRUE(m.has_value());
  if (!m.has_value()) return out;
  auto manifest = registry::DecodeManifest(m->bytes);
  EXPECT_TRUE(manifest.has_value());
  if (!manifest.has_value() || manifest->layers.size() <= n) return out;
  out.desc = manifest->layers[n];
  out.source = std::make_shared<CountingSource>(inner);
  Result<LayerIndex> index = name == "tiny-estargz"
                                 ? LoadEstargzIndex(*out.source, out.desc, false)
                                 : LoadZstdChunkedIndex(*out.source, out.desc, false);
  EXPECT_TRUE(index.has_value()) << index.error().ToString();
  if (!index.has_value()) return out;
  out.index = std::make_shared<const LayerIndex>(std::move(index).value());
  out.blob_path = dir + "/blobs/sha256/" + out.desc.digest.hex();
  out.source->reads = 0;
  out.source->bytes = 0;
  return out;
}

const FileEntry* Find(const LayerIndex& index, const std::string& path) {
  for (const FileEntry& e : index.entries) {
    if (e.path == path) return &e;
  }
  return nullptr;
}

std::string ReadAll(LazyLayerReader& r, const FileEntry& e, size_t piece) {
  std::string out;
  while (out.size() < e.size) {
    auto got = r.Read(e, out.size(), piece);
    EXPECT_TRUE(got.has_value()) << e.path << ": " << got.error().ToString();
    if (!got.has_value() || got->empty()) break;
    out += *got;
  }
  return out;
}

// The reference: the same file through the whole-blob tar-pass reader.
std::string Reference(const LazyLayer& l, const std::string& path) {
  auto index = IndexBuilder::BuildFromFile(l.blob_path, l.desc.media_type);
  EXPECT_TRUE(index.has_value()) << index.error().ToString();
  if (!index.has_value()) return "";
  auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
  auto reader = LayerReader::Open(l.blob_path, shared);
  EXPECT_TRUE(reader.has_value());
  if (!reader.has_value()) return "";
  const FileEntry* e = Find(*shared, path);
  EXPECT_NE(e, nullptr) << path;
  if (e == nullptr) return "";
  auto data = (*reader)->Read(*e, 0, e->size);
  EXPECT_TRUE(data.has_value());
  return data.has_value() ? *data : "";
}

class FetcherTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FetcherTest, ReadsEqualTheTarReaderAndPiecesAgree) {
  LazyLayer l = OpenLayer(GetParam(), 0);
  ASSERT_NE(l.index, nullptr);
  TempDir dir;
  auto store = std::make_shared<cache::ChunkStore>(dir.path());
  LazyLayerReader reader(l.source, l.index, store);
  const FileEntry* random = Find(*l.index, "data/random.bin");
  ASSERT_NE(random, nullptr);
  std::string want = Reference(l, "data/random.bin");
  ASSERT_EQ(want.size(), 1576960u);
  // Odd piece size: reads straddle chunk boundaries.
  EXPECT_EQ(ReadAll(reader, *random, 100003), want);
  EXPECT_EQ(*reader.Read(*random, random->size, 10), "");
  EXPECT_EQ(*reader.Read(*random, random->size - 3, 10), want.substr(want.size() - 3));
  uint64_t fetched = reader.chunks_fetched();
  EXPECT_EQ(fetched, random->chunk_count);

  const FileEntry* zeros = Find(*l.index, "data/zeros.bin");
  ASSERT_NE(zeros, nullptr);
  EXPECT_EQ(ReadAll(reader, *zeros, 1 << 20), std::string(zeros->size, '\0'));
  const FileEntry* os = Find(*l.index, "etc/os-release");
  ASSERT_NE(os, nullptr);
  EXPECT_EQ(ReadAll(reader, *os, 4096), Reference(l, "etc/os-release"));
  const FileEntry* dirent = Find(*l.index, "etc");
  ASSERT_NE(dirent, nullptr);
  EXPECT_EQ(reader.Read(*dirent, 0, 1).error().code(), StatusCode::kInvalidArgument);

  // A second reader (another mount) over the same chunk store: no blob reads for random.bin.
  int reads = l.source->reads.load();
  LazyLayerReader again(l.source, l.index, store);
  EXPECT_EQ(ReadAll(again, *random, 1 << 17), want);
  EXPECT_EQ(l.source->reads.load(), reads);
  EXPECT_EQ(again.chunks_fetched(), 0u);
}

TEST_P(FetcherTest, ConcurrentReadersFetchEveryChunkOnce) {
  LazyLayer l = OpenLayer(GetParam(), 0);
  ASSERT_NE(l.index, nullptr);
  TempDir dir;
  auto store = std::make_shared<cache::ChunkStore>(dir.path());
  LazyLayerReader reader(l.source, l.index, store);
  const FileEntry* random = Find(*l.index, "data/random.bin");
  ASSERT_NE(random, nullptr);
  std::string want = Reference(l, "data/random.bin");
  std::vector<std::string> got(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] { got[t] = ReadAll(reader, *random, 65536 + 4096 * t); });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(got[t], want) << "thread " << t;
  EXPECT_EQ(reader.chunks_fetched(), random->chunk_count);
  uint64_t compressed = 0;
  for (uint32_t i = 0; i < random->chunk_count; ++i) {
    compressed += l.index->chunks[random->first_chunk + i].blob_length;
  }
  // Coalescing may bridge small gaps; nothing is fetched twice.
  EXPECT_LT(l.source->bytes.load(), compressed + 2 * kDefaultCoalesceGapBytes * 8);
  EXPECT_LE(l.source->bytes.load(), compressed * 2);
}

TEST_P(FetcherTest, CorruptStoredChunkIsFetchedAgain) {
  LazyLayer l = OpenLayer(GetParam(), 0);
  ASSERT_NE(l.index, nullptr);
  TempDir dir;
  auto store = std::make_shared<cache::ChunkStore>(dir.path());
  LazyLayerReader reader(l.source, l.index, store);
  const FileEntry* os = Find(*l.index, "etc/os-release");
  ASSERT_NE(os, nullptr);
  ASSERT_GE(os->chunk_count, 1u);
  std::string want = Reference(l, "etc/os-release");
  EXPECT_EQ(ReadAll(reader, *os, 1 << 16), want);
  const Chunk& c = l.index->chunks[os->first_chunk];
  ASSERT_FALSE(c.digest.empty());
  ASSERT_TRUE(store->Has(c.digest));
  ASSERT_TRUE(WriteFileAtomic(store->PathFor(c.digest), "garbage").ok());

  // A new reader (the in-memory copy of the first one would hide the store).
  LazyLayerReader fresh(l.source, l.index, store);
  int reads = l.source->reads.load();
  EXPECT_EQ(ReadAll(fresh, *os, 1 << 16), want);
  EXPECT_GT(l.source->reads.load(), reads);
  EXPECT_EQ(store->corrupt_dropped(), 1u);
  EXPECT_EQ(*store->Get(c.digest), want.substr(0, c.size));
}

TEST_P(FetcherTest, RecentChunksAreKeptInMemoryWithinTheBound) {
  LazyLayer l = OpenLayer(GetParam(), 0);
  ASSERT_NE(l.index, nullptr);
  TempDir dir;
  auto store = std::make_shared<cache::ChunkStore>(dir.path());
  LazyLayerReader::Options options;
  options.memory_cache_bytes = 1 << 20;  // less than the 1.5 MiB file
  LazyLayerReader reader(l.source, l.index, store, options);
  const FileEntry* random = Find(*l.index, "data/random.bin");
  ASSERT_NE(random, nullptr);
  std::string want = Reference(l, "data/random.bin");
  EXPECT_EQ(ReadAll(reader, *random, 1 << 16), want);
  // The chunk store is emptied: the last chunk still comes from memory, without I/O ...
  std::filesystem::remove_all(dir.path() + "/chunks");
  int reads = l.source->reads.load();
  EXPECT_EQ(*reader.Read(*random, random->size - 4096, 4096), want.substr(want.size() - 4096));
  EXPECT_EQ(l.source->reads.load(), reads);
  // ... the first one was evicted and is fetched again.
  EXPECT_EQ(*reader.Read(*random, 0, 4096), want.substr(0, 4096));
  EXPECT_GT(l.source->reads.load(), reads);
}

TEST_P(FetcherTest, BadBytesAreRetriedOnceThenCorrupt) {
  LazyLayer l = OpenLayer(GetParam(), 0);
  ASSERT_NE(l.index, nullptr);
  TempDir dir;
  auto store = std::make_shared<cache::ChunkStore>(dir.path());
  LazyLayerReader reader(l.source, l.index, store);
  const FileEntry* random = Find(*l.index, "data/random.bin");
  ASSERT_NE(random, nullptr);
  std::string want = Reference(l, "data/random.bin");

  // One bad answer: the retry succeeds.
  l.source->corrupt = 1;
  auto first = reader.Read(*random, 0, 1000);
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_EQ(*first, want.substr(0, 1000));
  EXPECT_EQ(reader.fetch_batches(), 2u);

  // Every answer bad: Corrupt after two attempts, nothing stored.
  uint64_t last_off = random->size - 10;
  const Chunk& last = l.index->chunks[random->first_chunk + random->chunk_count - 1];
  l.source->corrupt = 1000;
  int reads = l.source->reads.load();
  auto bad = reader.Read(*random, last_off, 10);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kCorrupt) << bad.error().ToString();
  EXPECT_EQ(l.source->reads.load() - reads, 2);
  EXPECT_FALSE(store->Has(last.digest));

  // The source recovers: the same read works.
  l.source->corrupt = 0;
  auto good = reader.Read(*random, last_off, 10);
  ASSERT_TRUE(good.has_value()) << good.error().ToString();
  EXPECT_EQ(*good, want.substr(last_off));
}

INSTANTIATE_TEST_SUITE_P(Formats, FetcherTest,
                         ::testing::Values("tiny-estargz", "tiny-zstdchunked"),
                         [](const auto& param_info) {
                           return param_info.param == "tiny-estargz" ? "Estargz" : "ZstdChunked";
                         });

}  // namespace
}  // namespace imgfs::fs
