// Tests for fs/indexed_fetcher.h: lazy reads of plain tar, tar+gzip and tar+zstd layers built
// here (random, incompressible file bytes; small chunks and checkpoint spans so the layer has
// many pieces) through their IndexBuilder index and testing::FakeBlobSource. Every
// test checks the bytes read against the files written, and the requests the source saw:
// chunk-store reuse, growing read-ahead, single flight, the streaming switch (each byte
// fetched once), the fetch deadline against a hanging source, background fetch (also in
// segments from a registry), corruption (also of pieces two chunks share), exceptions on the
// workers, and an interleaving of a refetch with a decode made by holding ranges.
#include "fs/lazy/indexed_fetcher.h"

#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cache/chunk_store.h"
#include "fs/layer/index_builder.h"
#include "registry/media_types.h"
#include "registry/remote_source.h"
#include "tests/fs/layer_test_util.h"
#include "tests/fs/range_ignoring_source.h"
#include "tests/support/fake_blob_source.h"
#include "tests/support/http_test_server.h"
#include "tests/support/temp_dir.h"

namespace imgfs::fs {
namespace {

using registry::Digest;
using Clock = std::chrono::steady_clock;
using imgfs::testing::HttpTestConnection;
using imgfs::testing::HttpTestRequest;
using imgfs::testing::HttpTestServer;

using ::imgfs::testing::TempDir;

// Serves one blob from memory, counting ranged reads and recording them; can hang, delay,
// flip bytes, throw.
using MemorySource = ::imgfs::testing::FakeBlobSource;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

// A layer in tar order: a few small files, a 2 MiB file, a 6 MiB file, more small files.
struct TestLayer {
  std::map<std::string, std::string> files;  // path → content
  std::vector<std::string> order;            // tar order
  std::string blob;
  std::shared_ptr<const LayerIndex> index;

  const FileEntry& Entry(const std::string& path) const {
    for (const FileEntry& e : index->entries) {
      if (e.path == path) return e;
    }
    ADD_FAILURE() << "no entry " << path;
    return index->entries.front();
  }
};

constexpr uint64_t kChunkBytes = 256 << 10;
constexpr uint64_t kSpanBytes = 512 << 10;

TestLayer BuildLayer(LayerFormat format, const std::string& dir) {
  TestLayer layer;
  auto add = [&](const std::string& path, size_t size, uint32_t seed) {
    layer.files[path] = RandomBytes(size, seed);
    layer.order.push_back(path);
  };
  for (int i = 0; i < 4; ++i) add("etc/small" + std::to_string(i), 3000 + i * 100, 10 + i);
  add("data/mid.bin", 2 << 20, 20);
  add("data/big.bin", 6 << 20, 21);
  for (int i = 0; i < 4; ++i) add("var/tail" + std::to_string(i), 5000 + i * 300, 30 + i);
  testing::TarWriter tar;
  tar.Dir("etc/");
  tar.Dir("data/");
  tar.Dir("var/");
  for (const std::string& path : layer.order) tar.File(path, layer.files[path]);
  const std::string stream = tar.Finish();
  std::string_view media;
  switch (format) {
    case LayerFormat::kTarGzip:
      layer.blob = testing::Gzip(stream);
      media = registry::media::kOciLayerGzip;
      break;
    case LayerFormat::kTarZstd:
      layer.blob = testing::Zstd(stream, 40);  // frames of ~256 KiB: seekable
      media = registry::media::kOciLayerZstd;
      break;
    default:
      layer.blob = stream;
      media = registry::media::kOciLayerTar;
      break;
  }
  const std::string path = dir + "/blob";
  EXPECT_TRUE(testing::WriteWhole(path, layer.blob));
  IndexOptions options;
  options.chunk_size_bytes = kChunkBytes;
  options.span_bytes = kSpanBytes;
  options.expected_digest = Digest::Sha256Of(layer.blob);
  Result<LayerIndex> index = IndexBuilder::BuildFromFile(path, media, options);
  EXPECT_TRUE(index.has_value()) << index.error().ToString();
  if (index.has_value()) layer.index = std::make_shared<const LayerIndex>(std::move(index).value());
  std::filesystem::remove(path);
  return layer;
}

// Reads all of `path` in `step`-byte reads; "" plus a failure on error.
std::string ReadFile(IndexedRemoteData& data, const TestLayer& layer, const std::string& path,
                     size_t step = 128 << 10) {
  const FileEntry& e = layer.Entry(path);
  std::string out;
  for (uint64_t at = 0; at < e.size; at += step) {
    Result<std::string> part = data.Read(e, at, step);
    if (!part.has_value()) {
      ADD_FAILURE() << path << " at " << at << ": " << part.error().ToString();
      return "";
    }
    out += *part;
  }
  return out;
}

using RangeIgnoringSource = RangeIgnoring<MemorySource>;

std::string FormatName(const ::testing::TestParamInfo<LayerFormat>& info) {
  switch (info.param) {
    case LayerFormat::kTarGzip:
      return "Gzip";
    case LayerFormat::kTarZstd:
      return "Zstd";
    default:
      return "Tar";
  }
}

class IndexedFetcherTest : public ::testing::TestWithParam<LayerFormat> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    layer_ = BuildLayer(GetParam(), dir_.path());
    ASSERT_NE(layer_.index, nullptr);
    ASSERT_EQ(layer_.index->format, GetParam());
    store_ = std::make_shared<cache::ChunkStore>(dir_.path() + "/store");
  }

  // A reader over a fresh counting source.
  std::unique_ptr<IndexedRemoteData> Open(std::shared_ptr<MemorySource>* source,
                                          IndexedRemoteData::Options options,
                                          std::shared_ptr<cache::ChunkStore> store = nullptr) {
    *source = std::make_shared<MemorySource>(layer_.blob);
    auto data =
        IndexedRemoteData::Create(*source, layer_.index, dir_.path() + "/tmp", store, options);
    EXPECT_TRUE(data.has_value()) << data.error().ToString();
    if (!data.has_value()) return nullptr;
    return std::move(data).value();
  }

  static IndexedRemoteData::Options Quiet() {  // no read-ahead, no streaming
    IndexedRemoteData::Options options;
    options.readahead = false;
    options.streaming = false;
    return options;
  }

  TempDir dir_;
  TestLayer layer_;
  std::shared_ptr<cache::ChunkStore> store_;
};

TEST_P(IndexedFetcherTest, EveryFileReadsBackAndASmallFileCostsItsSpan) {
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, Quiet());
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(ReadFile(*data, layer_, "etc/small2"), layer_.files["etc/small2"]);
  EXPECT_GT(source->bytes(), 0u);
  // One checkpoint span (incompressible data) and a cache block at most.
  EXPECT_LE(source->bytes(), kSpanBytes + (512u << 10)) << "a small file cost too much";
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(*data, layer_, path), layer_.files[path]) << path;
  }
  EXPECT_TRUE(source->NoOverlaps());
  EXPECT_LE(source->bytes(), layer_.blob.size());
  // An odd read straddling chunks.
  const FileEntry& big = layer_.Entry("data/big.bin");
  Result<std::string> odd = data->Read(big, kChunkBytes - 7, 3 * kChunkBytes + 11);
  ASSERT_TRUE(odd.has_value()) << odd.error().ToString();
  EXPECT_EQ(*odd, layer_.files["data/big.bin"].substr(kChunkBytes - 7, 3 * kChunkBytes + 11));
  LayerStats stats = data->Stats();
  EXPECT_TRUE(stats.lazy);
  EXPECT_EQ(stats.blob_size, layer_.blob.size());
  EXPECT_EQ(stats.bytes_fetched, source->bytes());
  EXPECT_EQ(stats.requests, static_cast<uint64_t>(source->requests()));
  EXPECT_GT(stats.chunks_fetched, 0u);
  EXPECT_EQ(stats.errors, 0u);
}

TEST_P(IndexedFetcherTest, SecondReaderIsServedFromTheChunkStore) {
  std::shared_ptr<MemorySource> first;
  {
    auto data = Open(&first, IndexedRemoteData::Options(), store_);
    ASSERT_NE(data, nullptr);
    for (const std::string& path : layer_.order) {
      EXPECT_EQ(ReadFile(*data, layer_, path), layer_.files[path]) << path;
    }
    ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(20)));
  }
  EXPECT_GT(first->bytes(), 0u);
  std::shared_ptr<MemorySource> second;
  auto data = Open(&second, IndexedRemoteData::Options(), store_);
  ASSERT_NE(data, nullptr);
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(*data, layer_, path), layer_.files[path]) << path;
  }
  ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(20)));
  EXPECT_EQ(second->requests(), 0);
  EXPECT_EQ(second->bytes(), 0u);
  LayerStats stats = data->Stats();
  EXPECT_EQ(stats.bytes_fetched, 0u);
  EXPECT_GT(stats.cache_hits, 0u);
}

TEST_P(IndexedFetcherTest, TwoDisjointSpansWantedAtOnceGoOutAsOneMultiRangeRequest) {
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, Quiet());
  ASSERT_NE(data, nullptr);
  source->set_multi_range(true);
  const FileEntry& big = layer_.Entry("data/big.bin");
  const std::string& want = layer_.files["data/big.bin"];
  // The middle of the file first: one ranged read.
  const uint64_t middle = big.size / 2;
  Result<std::string> part = data->Read(big, middle, 1);
  ASSERT_TRUE(part.has_value()) << part.error().ToString();
  EXPECT_EQ(*part, want.substr(middle, 1));
  ASSERT_EQ(source->requests(), 1);
  EXPECT_EQ(source->multi_range_requests(), 0);
  // Then the whole file: what lies before and after the middle span is missing, two
  // disjoint spans in one read (together under max_request_bytes), so one request.
  Result<std::string> all = data->Read(big, 0, big.size);
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  EXPECT_TRUE(*all == want) << "wrong bytes";
  EXPECT_EQ(source->requests(), 2);
  EXPECT_EQ(source->multi_range_requests(), 1);
  const std::vector<ByteRange> ranges = source->Ranges();
  ASSERT_EQ(ranges.size(), 3u);  // the middle, then the two spans around it
  EXPECT_LE(ranges[1].end(), ranges[0].offset);
  EXPECT_GE(ranges[2].offset, ranges[0].end());
  EXPECT_TRUE(source->NoOverlaps());
  const LayerStats stats = data->Stats();
  EXPECT_EQ(stats.requests, 2u);
  EXPECT_EQ(stats.bytes_fetched, source->bytes());
  EXPECT_EQ(stats.errors, 0u);
}

TEST_P(IndexedFetcherTest, SequentialReadGrowsItsRequests) {
  IndexedRemoteData::Options options = Quiet();
  options.readahead = true;
  options.readahead_min_bytes = 256 << 10;
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, options);
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(ReadFile(*data, layer_, "data/big.bin"), layer_.files["data/big.bin"]);
  ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(20)));
  EXPECT_TRUE(source->NoOverlaps());
  auto largest = [](MemorySource& s) {
    uint64_t out = 0;
    for (const ByteRange& r : s.Ranges()) out = std::max(out, r.length);
    return out;
  };
  std::string sizes;
  for (const ByteRange& r : source->Ranges()) sizes += std::to_string(r.length) + " ";

  // Without read-ahead the same read costs one request per chunk span.
  std::shared_ptr<MemorySource> plain;
  auto quiet = Open(&plain, Quiet());
  ASSERT_NE(quiet, nullptr);
  EXPECT_EQ(ReadFile(*quiet, layer_, "data/big.bin"), layer_.files["data/big.bin"]);
  EXPECT_GE(plain->requests(), 4);
  EXPECT_LT(source->requests(), plain->requests()) << sizes;
  // The window grew past one span: requests larger than any single read needs.
  EXPECT_GT(largest(*source), largest(*plain)) << sizes;
  EXPECT_GE(largest(*source), 1u << 20) << sizes;
}

TEST_P(IndexedFetcherTest, ParallelReadersOfOneSpanShareOneFetch) {
  const FileEntry& big = layer_.Entry("data/big.bin");
  std::shared_ptr<MemorySource> alone;
  auto single = Open(&alone, Quiet());
  ASSERT_NE(single, nullptr);
  ASSERT_TRUE(single->Read(big, 3 * kChunkBytes, 4096).has_value());
  const int alone_requests = alone->requests();
  const uint64_t alone_bytes = alone->bytes();
  ASSERT_GE(alone_requests, 1);

  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, Quiet());
  ASSERT_NE(data, nullptr);
  source->set_delay(std::chrono::milliseconds(100));  // all readers arrive while the fetch runs
  constexpr int kReaders = 8;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kReaders; ++t) {
    threads.emplace_back([&, t] {
      Result<std::string> r = data->Read(big, 3 * kChunkBytes + t * 1000, 4096);
      if (r.has_value() &&
          *r == layer_.files["data/big.bin"].substr(3 * kChunkBytes + t * 1000, 4096)) {
        ok.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), kReaders);
  EXPECT_EQ(source->requests(), alone_requests);
  EXPECT_EQ(source->bytes(), alone_bytes);
  EXPECT_TRUE(source->NoOverlaps());
}

TEST_P(IndexedFetcherTest, StreamingSwitchFetchesEachByteOnce) {
  IndexedRemoteData::Options options;
  options.readahead_min_bytes = 256 << 10;
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, options, store_);
  ASSERT_NE(data, nullptr);
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(*data, layer_, path), layer_.files[path]) << path;
  }
  ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(20)));
  EXPECT_TRUE(data->streamed());
  EXPECT_TRUE(source->NoOverlaps());
  EXPECT_LE(source->bytes(), layer_.blob.size());
  EXPECT_EQ(data->present_bytes(), layer_.blob.size()) << "the stream went to the end";
  EXPECT_EQ(data->Stats().bytes_fetched, source->bytes());
}

TEST_P(IndexedFetcherTest, FetchTimeoutFailsInTimeThenRecovers) {
  IndexedRemoteData::Options options = Quiet();
  options.fetch_timeout = std::chrono::milliseconds(300);
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, options);
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(ReadFile(*data, layer_, "etc/small0"), layer_.files["etc/small0"]);

  source->Hang();
  const FileEntry& tail = layer_.Entry("var/tail3");
  const auto start = Clock::now();
  Result<std::string> r = data->Read(tail, 0, 4096);
  const auto elapsed = Clock::now() - start;
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable) << r.error().ToString();
  EXPECT_GE(elapsed, std::chrono::milliseconds(250));
  EXPECT_LT(elapsed, std::chrono::seconds(3));
  // Fetched data is still served while the source hangs.
  EXPECT_EQ(ReadFile(*data, layer_, "etc/small0"), layer_.files["etc/small0"]);
  // A second reader of the hanging span also gives up in time.
  const auto again = Clock::now();
  EXPECT_FALSE(data->Read(tail, 0, 4096).has_value());
  EXPECT_LT(Clock::now() - again, std::chrono::seconds(3));

  source->Release();
  ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(20)));
  EXPECT_EQ(ReadFile(*data, layer_, "var/tail3"), layer_.files["var/tail3"]);
  EXPECT_GE(data->Stats().errors, 2u);
}

TEST_P(IndexedFetcherTest, BackgroundFetchFetchesEverything) {
  std::shared_ptr<MemorySource> source;
  {
    auto data = Open(&source, IndexedRemoteData::Options(), store_);
    ASSERT_NE(data, nullptr);
    data->StartBackgroundFetch();
    ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(30)));
    EXPECT_TRUE(data->streamed());
    EXPECT_EQ(data->present_bytes(), layer_.blob.size());
    EXPECT_EQ(source->bytes(), layer_.blob.size());
    EXPECT_TRUE(source->NoOverlaps());
    const int before = source->requests();
    for (const std::string& path : layer_.order) {
      EXPECT_EQ(ReadFile(*data, layer_, path), layer_.files[path]) << path;
    }
    EXPECT_EQ(source->requests(), before) << "reads after the background fetch fetched";
  }
  // Every chunk was verified and stored on the way: another mount fetches nothing.
  std::shared_ptr<MemorySource> second;
  auto data = Open(&second, Quiet(), store_);
  ASSERT_NE(data, nullptr);
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(*data, layer_, path), layer_.files[path]) << path;
  }
  EXPECT_EQ(second->requests(), 0);
}

TEST_P(IndexedFetcherTest, ASourceThatIgnoresRangesIsStreamedFromTheFirstRead) {
  auto source = std::make_shared<RangeIgnoringSource>(layer_.blob);
  IndexedRemoteData::Options streaming = Quiet();
  streaming.streaming = true;  // and no read-ahead: only the switch fetches beyond the read
  auto data =
      IndexedRemoteData::Create(source, layer_.index, dir_.path() + "/tmp", store_, streaming);
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  const std::string& first = layer_.order.front();
  EXPECT_EQ(ReadFile(**data, layer_, first), layer_.files[first]);
  EXPECT_TRUE((*data)->streamed());
  ASSERT_TRUE((*data)->WaitIdle(std::chrono::seconds(30)));
  EXPECT_GE(source->streams.load(), 1) << "the rest was not streamed through the source";
  EXPECT_EQ((*data)->present_bytes(), layer_.blob.size());
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(**data, layer_, path), layer_.files[path]) << path;
  }
}

TEST_P(IndexedFetcherTest, ConcurrentReadersDuringBackgroundFetch) {
  IndexedRemoteData::Options options;
  options.readahead_min_bytes = 256 << 10;
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, options, store_);
  ASSERT_NE(data, nullptr);
  source->set_delay(std::chrono::milliseconds(2));
  data->StartBackgroundFetch();
  constexpr int kReaders = 4;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kReaders; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::string> order = layer_.order;
      std::mt19937 rng(static_cast<uint32_t>(t));
      std::shuffle(order.begin(), order.end(), rng);
      for (const std::string& path : order) {
        if (ReadFile(*data, layer_, path, 64 << 10) != layer_.files[path]) wrong.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(30)));
  EXPECT_EQ(data->present_bytes(), layer_.blob.size());
  EXPECT_TRUE(source->NoOverlaps());
  EXPECT_EQ(source->bytes(), layer_.blob.size());
  EXPECT_EQ(data->Stats().errors, 0u);
}

TEST_P(IndexedFetcherTest, CorruptBytesAreFetchedAgainThenFailAsCorrupt) {
  const FileEntry& big = layer_.Entry("data/big.bin");
  const std::string want = layer_.files["data/big.bin"].substr(kChunkBytes, 4096);
  {
    // One bad answer: the refetch repairs it.
    std::shared_ptr<MemorySource> source;
    auto data = Open(&source, Quiet(), store_);
    ASSERT_NE(data, nullptr);
    source->CorruptNext(1);
    Result<std::string> r = data->Read(big, kChunkBytes, 4096);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    EXPECT_EQ(*r, want);
    EXPECT_EQ(source->requests(), 2);
    EXPECT_EQ(data->repairs(), 1u) << "the bad chunk is repaired by the shared ReadEngine";
    EXPECT_EQ(data->Stats().errors, 0u);
  }
  std::filesystem::remove_all(dir_.path() + "/store");
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, Quiet(), store_);
  ASSERT_NE(data, nullptr);
  source->CorruptNext(-1);
  Result<std::string> r = data->Read(big, kChunkBytes, 4096);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << r.error().ToString();
  EXPECT_EQ(source->requests(), 2) << "one fetch, one refetch";
  EXPECT_EQ(data->repairs(), 1u);
  EXPECT_EQ(data->Stats().errors, 1u);
  // Nothing unverified reached the chunk store.
  EXPECT_FALSE(store_->Has(layer_.index->chunks[big.first_chunk + 1].digest));
  // The source is healthy again: the next read succeeds.
  source->CorruptNext(0);
  r = data->Read(big, kChunkBytes, 4096);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, want);
}

// A source throwing (bad_alloc on a worker) fails that fetch, not the process; the next
// read fetches again and succeeds.
TEST_P(IndexedFetcherTest, AnExceptionInAFetchFailsOnlyThatFetch) {
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, Quiet());
  ASSERT_NE(data, nullptr);
  const FileEntry& big = layer_.Entry("data/big.bin");
  source->ThrowNext(1);
  Result<std::string> r = data->Read(big, 0, 4096);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInternal) << r.error().ToString();
  r = data->Read(big, 0, 4096);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, layer_.files["data/big.bin"].substr(0, 4096));
}

// An exception inside the streaming pass fails the pieces it claimed (their readers fetch
// them instead of waiting forever) and ends the pass so that it can be started again.
TEST_P(IndexedFetcherTest, AnExceptionInTheStreamReleasesItsPiecesAndItCanRestart) {
  IndexedRemoteData::Options options;
  options.fetch_timeout = std::chrono::milliseconds(10000);
  std::shared_ptr<MemorySource> source;
  auto data = Open(&source, options, store_);
  ASSERT_NE(data, nullptr);
  source->ThrowNext(1);
  data->StartBackgroundFetch();
  ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(30)));
  EXPECT_FALSE(data->streamed()) << "a failed pass is not marked as started";
  EXPECT_EQ(data->present_bytes(), 0u);
  const auto start = Clock::now();
  EXPECT_EQ(ReadFile(*data, layer_, "etc/small0"), layer_.files["etc/small0"]);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5)) << "the read waited for the pass";
  data->StartBackgroundFetch();
  ASSERT_TRUE(data->WaitIdle(std::chrono::seconds(30)));
  EXPECT_TRUE(data->streamed());
  EXPECT_EQ(data->present_bytes(), layer_.blob.size());
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(*data, layer_, path), layer_.files[path]) << path;
  }
}

// Chunks A and B share a piece (a tar block). B fails verification once (a bad byte of its
// own), so its pieces, the shared one included, are fetched again, and that refetch carries
// a bad byte of A. A, verified before and no longer in memory, must not be served from the
// rewritten bytes unchecked.
TEST(IndexedFetcherSharedPieceTest, ARefetchOfSharedPiecesUnverifiesTheirOtherChunks) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  TestLayer layer = BuildLayer(LayerFormat::kTar, dir.path());
  ASSERT_NE(layer.index, nullptr);
  const FileEntry& big = layer.Entry("data/big.bin");
  ASSERT_GE(big.chunk_count, 2u);
  const Chunk& a = layer.index->chunks[big.first_chunk];
  const Chunk& b = layer.index->chunks[big.first_chunk + 1];
  const uint64_t block = LayerReader::Options().block_bytes;
  const uint64_t a_last = big.payload_offset + a.file_offset + a.size - 1;
  const uint64_t b_last = big.payload_offset + b.file_offset + b.size - 1;
  ASSERT_EQ(a_last / block, (a_last + 1) / block) << "A and B must share a block";
  ASSERT_NE(a_last / block, b_last / block) << "B must have a block of its own";

  IndexedRemoteData::Options options;
  options.readahead = false;
  options.streaming = false;
  options.memory_cache_bytes = 0;  // A leaves memory at once
  auto source = std::make_shared<MemorySource>(layer.blob);
  auto data = IndexedRemoteData::Create(source, layer.index, dir.path() + "/tmp", nullptr, options);
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  const std::string& want = layer.files["data/big.bin"];
  Result<std::string> r = (*data)->Read(big, a.file_offset, a.size);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  ASSERT_EQ(*r, want.substr(a.file_offset, a.size));

  source->FlipAt(b_last, 1);  // B's first fetch (its own block) is bad
  source->FlipAt(a_last, 1);  // the refetch of B's blocks (the shared one too) breaks A
  const int before = source->requests();
  r = (*data)->Read(big, b.file_offset, b.size);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, want.substr(b.file_offset, b.size));
  ASSERT_EQ(source->requests(), before + 2) << "B fetched, then fetched again";

  // A again: verified anew (its bad byte is found, its pieces fetched once more), never the
  // rewritten bytes unchecked.
  r = (*data)->Read(big, a.file_offset, a.size);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(*r, want.substr(a.file_offset, a.size)) << "a chunk was served unverified";
  EXPECT_EQ(source->requests(), before + 3);
}

// A registry serving the layer blob at /v2/demo/blobs/<digest>: Range honoured (206) unless
// `ignore_range`, then every GET is answered 200 with the whole blob. Counts blob GETs and
// the body bytes sent.
class BlobRegistry {
 public:
  BlobRegistry(const std::string& blob, bool ignore_range)
      : server_([this, &blob, ignore_range](const HttpTestRequest& req, HttpTestConnection& conn) {
          if (req.path == "/v2/") {
            conn.Respond(200, {{"Docker-Distribution-API-Version", "registry/2.0"}}, "{}");
            return;
          }
          if (req.path.rfind("/v2/demo/blobs/", 0) != 0) {
            conn.Respond(404);
            return;
          }
          gets.fetch_add(1);
          const std::string range = req.Header("range");
          uint64_t first = 0;
          uint64_t last = blob.size() - 1;
          if (ignore_range || range.rfind("bytes=", 0) != 0 ||
              std::sscanf(range.c_str(), "bytes=%lu-%lu", &first, &last) < 1) {
            body_bytes.fetch_add(blob.size());
            conn.Respond(200, {{"Content-Type", "application/octet-stream"}}, blob);
            return;
          }
          last = std::min<uint64_t>(last, blob.size() - 1);
          if (first > last) {
            conn.Respond(416);
            return;
          }
          body_bytes.fetch_add(last - first + 1);
          conn.Respond(
              206,
              {{"Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(last) +
                                     "/" + std::to_string(blob.size())}},
              std::string_view(blob).substr(first, last - first + 1));
        }) {}

  std::shared_ptr<registry::RemoteSource> Source() {
    registry::RemoteSourceOptions o;
    o.certs_dir = "";
    o.connect_timeout = std::chrono::milliseconds(2000);
    o.request_timeout = std::chrono::milliseconds(10000);
    o.max_attempts = 2;
    o.base_backoff = std::chrono::milliseconds(10);
    o.max_backoff = std::chrono::milliseconds(100);
    return registry::RemoteSource::Create(server_.host_port(), "demo", o);
  }

  std::atomic<int> gets{0};
  std::atomic<uint64_t> body_bytes{0};

 private:
  HttpTestServer server_;
};

TEST_P(IndexedFetcherTest, StreamsFromARegistryEachByteOnce) {
  BlobRegistry registry(layer_.blob, /*ignore_range=*/false);
  IndexedRemoteData::Options options;
  options.readahead_min_bytes = 256 << 10;
  auto data = IndexedRemoteData::Create(registry.Source(), layer_.index, dir_.path() + "/tmp",
                                        store_, options);
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(**data, layer_, path), layer_.files[path]) << path;
  }
  ASSERT_TRUE((*data)->WaitIdle(std::chrono::seconds(20)));
  EXPECT_TRUE((*data)->streamed());
  EXPECT_EQ((*data)->present_bytes(), layer_.blob.size());
  EXPECT_LE(registry.body_bytes.load(), layer_.blob.size()) << "a byte was fetched twice";
  EXPECT_EQ((*data)->Stats().bytes_fetched, registry.body_bytes.load());
  EXPECT_EQ((*data)->Stats().requests, static_cast<uint64_t>(registry.gets.load()));
}

// `--prefetch=all` through a registry, in several segments (one GET each), without any
// read: the whole layer arrives, each byte once, and every chunk is stored on the way.
TEST_P(IndexedFetcherTest, BackgroundFetchFromARegistryFetchesEverySegment) {
  BlobRegistry registry(layer_.blob, /*ignore_range=*/false);
  IndexedRemoteData::Options options;
  options.max_request_bytes = 1 << 20;
  auto data = IndexedRemoteData::Create(registry.Source(), layer_.index, dir_.path() + "/tmp",
                                        store_, options);
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  (*data)->StartBackgroundFetch();
  ASSERT_TRUE((*data)->WaitIdle(std::chrono::seconds(30)));
  EXPECT_EQ((*data)->present_bytes(), layer_.blob.size());
  EXPECT_EQ(registry.body_bytes.load(), layer_.blob.size());
  EXPECT_GE(registry.gets.load(), static_cast<int>(layer_.blob.size() >> 20));
  EXPECT_EQ((*data)->Stats().errors, 0u);
  data->reset();
  // Every chunk was verified and stored: a second reader fetches nothing.
  std::shared_ptr<MemorySource> second;
  auto again = Open(&second, Quiet(), store_);
  ASSERT_NE(again, nullptr);
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(*again, layer_, path), layer_.files[path]) << path;
  }
  EXPECT_EQ(second->requests(), 0);
}

TEST_P(IndexedFetcherTest, RegistryIgnoringRangeIsStreamedAtOnce) {
  BlobRegistry registry(layer_.blob, /*ignore_range=*/true);
  IndexedRemoteData::Options options;
  options.readahead = false;
  auto data = IndexedRemoteData::Create(registry.Source(), layer_.index, dir_.path() + "/tmp",
                                        store_, options);
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  // The first read learns that ranges are ignored; the second switches to one stream.
  EXPECT_EQ(ReadFile(**data, layer_, "etc/small1"), layer_.files["etc/small1"]);
  EXPECT_EQ(ReadFile(**data, layer_, "var/tail0"), layer_.files["var/tail0"]);
  ASSERT_TRUE((*data)->WaitIdle(std::chrono::seconds(20)));
  EXPECT_TRUE((*data)->streamed());
  EXPECT_EQ((*data)->present_bytes(), layer_.blob.size());
  const int gets = registry.gets.load();
  EXPECT_LE(gets, 4);
  for (const std::string& path : layer_.order) {
    EXPECT_EQ(ReadFile(**data, layer_, path), layer_.files[path]) << path;
  }
  EXPECT_EQ(registry.gets.load(), gets) << "reads after the stream fetched again";
}

// gzip cut the way parallel compressors cut it (pigz every 128 KiB, pgzip every 1 MiB): a sync
// flush every `every` bytes of input ends a deflate block there and adds an empty stored block
// (00 00 ff ff). The indexer's checkpoints then fall on those offsets, which are multiples of
// the LayerReader's cache block.
std::string GzipFlushedEvery(std::string_view data, size_t every) {
  z_stream s{};
  deflateInit2(&s, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&s, data.size()) + 64 + (data.size() / every + 1) * 8, '\0');
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  for (size_t at = 0; at < data.size();) {
    const size_t n = std::min(every, data.size() - at);
    s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + at));
    s.avail_in = static_cast<uInt>(n);
    at += n;
    deflate(&s, at < data.size() ? Z_SYNC_FLUSH : Z_FINISH);
  }
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

// A tar+gzip layer of many files (random and text-like, 1 KiB to 700 KiB, ~6 MiB in all),
// flushed every 256 KiB, indexed with 512 KiB spans: every checkpoint but the first sits
// exactly at a cache-block boundary, right before an empty stored block.
TestLayer BuildFlushedGzipLayer(const std::string& dir) {
  TestLayer layer;
  std::mt19937 rng(7);
  testing::TarWriter tar;
  tar.Dir("usr/");
  for (int i = 0; i < 40; ++i) {
    const std::string path = "usr/f" + std::to_string(i);
    const size_t size = 1024 + rng() % (700 << 10);
    layer.files[path] = i % 3 == 0 ? testing::TextishBytes(size, i) : RandomBytes(size, 100 + i);
    layer.order.push_back(path);
    tar.File(path, layer.files[path]);
  }
  layer.blob = GzipFlushedEvery(tar.Finish(), 256 << 10);
  const std::string path = dir + "/blob";
  EXPECT_TRUE(testing::WriteWhole(path, layer.blob));
  IndexOptions options;
  options.chunk_size_bytes = kChunkBytes;
  options.span_bytes = kSpanBytes;
  options.expected_digest = Digest::Sha256Of(layer.blob);
  Result<LayerIndex> index =
      IndexBuilder::BuildFromFile(path, registry::media::kOciLayerGzip, options);
  EXPECT_TRUE(index.has_value()) << index.error().ToString();
  if (index.has_value()) layer.index = std::make_shared<const LayerIndex>(std::move(index).value());
  std::filesystem::remove(path);
  return layer;
}

// The checkpoints of `layer` at a cache-block boundary (not the first).
int BlockAlignedCheckpoints(const TestLayer& layer) {
  const uint64_t block = LayerReader::Options().block_bytes;
  int n = 0;
  for (const Checkpoint& cp : layer.index->checkpoints) {
    if (cp.uncompressed_offset > 0 && cp.uncompressed_offset % block == 0) ++n;
  }
  return n;
}

// zlib, once its output buffer is full at the very end of a deflate block, goes on to parse the
// next block's header (a stored block's LEN/NLEN lie up to 5 bytes past the checkpoint). When
// a read's last cache block ended at a checkpoint, those bytes were past the span fetched for
// it: the decoder met the hole of the sparse copy ("invalid stored block lengths"), the
// refetch of the same span changed nothing, and the read failed with EIO.
TEST(IndexedFetcherFlushedGzipTest, AReadEndingAtACheckpointFetchesWhatTheDecoderReads) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  TestLayer layer = BuildFlushedGzipLayer(dir.path());
  ASSERT_NE(layer.index, nullptr);
  ASSERT_GE(BlockAlignedCheckpoints(layer), 4) << "the layout this test is about";
  IndexedRemoteData::Options options;
  options.readahead = false;
  options.streaming = false;
  for (const std::string& path : layer.order) {
    // A fresh reader each time: no piece fetched for an earlier file hides the hole.
    auto source = std::make_shared<MemorySource>(layer.blob);
    auto data =
        IndexedRemoteData::Create(source, layer.index, dir.path() + "/tmp", nullptr, options);
    ASSERT_TRUE(data.has_value()) << data.error().ToString();
    EXPECT_TRUE(ReadFile(**data, layer, path) == layer.files[path]) << path << " read wrong";
    EXPECT_EQ((*data)->Stats().errors, 0u) << path;
    EXPECT_TRUE(source->NoOverlaps()) << path << ": a byte was fetched twice";
  }
}

// The whole layer read by several threads at once, with read-ahead and the streaming switch
// on, a background pass running and a slow source: every file's bytes are right, and no read
// failed.
TEST(IndexedFetcherFlushedGzipTest, ConcurrentReadersStreamAndBackgroundPassReadEveryByte) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  TestLayer layer = BuildFlushedGzipLayer(dir.path());
  ASSERT_NE(layer.index, nullptr);
  for (int round = 0; round < 3; ++round) {
    auto source = std::make_shared<MemorySource>(layer.blob);
    source->set_delay(std::chrono::milliseconds(20));
    IndexedRemoteData::Options options;
    options.readahead_min_bytes = 256 << 10;
    options.max_request_bytes = 1 << 20;
    auto data = IndexedRemoteData::Create(
        source, layer.index, dir.path() + "/tmp",
        std::make_shared<cache::ChunkStore>(dir.path() + "/store" + std::to_string(round)),
        options);
    ASSERT_TRUE(data.has_value()) << data.error().ToString();
    if (round > 0) (*data)->StartBackgroundFetch();
    constexpr int kReaders = 6;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kReaders; ++t) {
      threads.emplace_back([&, t] {
        // Each thread walks the files in tar order from its own starting point.
        for (size_t k = 0; k < layer.order.size(); ++k) {
          const std::string& path =
              layer.order[(k + t * layer.order.size() / kReaders) % layer.order.size()];
          const FileEntry& e = layer.Entry(path);
          std::string got;
          for (uint64_t at = 0; at < e.size; at += 128 << 10) {
            Result<std::string> part = (*data)->Read(e, at, 128 << 10);
            if (!part.has_value()) break;
            got += *part;
          }
          if (got != layer.files[path]) wrong.fetch_add(1);
        }
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(wrong.load(), 0) << "round " << round;
    EXPECT_EQ((*data)->Stats().errors, 0u) << "round " << round;
    ASSERT_TRUE((*data)->WaitIdle(std::chrono::seconds(30)));
  }
}

// The compressed bytes a read of uncompressed stream bytes [u0, u1) needs (what
// IndexedRemoteData fetches for them: checkpoint before the first cache block to the first
// checkpoint strictly after the last one, plus a byte either side).
ByteRange SpanOf(const LayerIndex& index, uint64_t u0, uint64_t u1) {
  const uint64_t block = LayerReader::Options().block_bytes;
  u0 = u0 / block * block;
  u1 = std::min<uint64_t>((u1 + block - 1) / block * block, index.uncompressed_size);
  const Checkpoint& from = index.checkpoints[index.CheckpointFor(u0)];
  const uint64_t begin = from.compressed_offset > 0 ? from.compressed_offset - 1 : 0;
  uint64_t end = index.compressed_size;
  for (const Checkpoint& cp : index.checkpoints) {
    if (cp.uncompressed_offset > u1 && cp.compressed_offset >= begin) {
      end = std::min(end, cp.compressed_offset + 1);
      break;
    }
  }
  return ByteRange{begin, end - begin};
}

std::string Gunzip(std::string_view gz) {
  z_stream s{};
  inflateInit2(&s, 15 + 16);
  std::string out;
  char buf[1 << 16];
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  s.avail_in = static_cast<uInt>(gz.size());
  int ret = Z_OK;
  while (ret == Z_OK) {
    s.next_out = reinterpret_cast<Bytef*>(buf);
    s.avail_out = sizeof(buf);
    ret = inflate(&s, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - s.avail_out);
    if (ret == Z_BUF_ERROR && s.avail_in == 0) break;
    if (ret == Z_BUF_ERROR) ret = Z_OK;
  }
  inflateEnd(&s);
  return out;
}

// The offset in `gz` of the byte that decodes to uncompressed byte `target` inside a stored
// deflate block (flipping it changes that byte and nothing else), or max() when `target` is
// not in a stored block.
uint64_t StoredByteFor(const std::string& gz, const std::string& plain, uint64_t target) {
  z_stream s{};
  inflateInit2(&s, 15 + 16);
  std::string out(plain.size(), '\0');
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  size_t fed = 0;
  uint64_t found = std::numeric_limits<uint64_t>::max();
  while (fed < gz.size()) {
    // Big steps until near the target, then one byte at a time.
    const size_t step = s.total_out + (256 << 10) < target ? 4096 : 1;
    s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data() + fed));
    s.avail_in = static_cast<uInt>(std::min(step, gz.size() - fed));
    const uInt before = s.avail_in;
    const int ret = inflate(&s, Z_NO_FLUSH);
    fed += before - s.avail_in;
    if (step == 1 && s.total_out > target) {
      found = fed - 1;
      break;
    }
    if (ret != Z_OK) break;
  }
  inflateEnd(&s);
  if (found == std::numeric_limits<uint64_t>::max()) return found;
  std::string flipped = gz;
  flipped[found] = static_cast<char>(flipped[found] ^ 0x5a);
  const std::string got = Gunzip(flipped);
  if (got.size() != plain.size()) return std::numeric_limits<uint64_t>::max();
  for (uint64_t i = 0; i < got.size(); ++i) {
    if ((got[i] != plain[i]) != (i == target)) return std::numeric_limits<uint64_t>::max();
  }
  return found;
}

// Chunks B and C of a file share a cache block β (B ends, C starts in it); A (before B) does
// not reach β. The pieces of A's span hold B's, and C needs more beyond them. B's bytes in
// β are bad once. The interleaving, made by holding ranges at the source:
//  1. A is read: its span arrives with B's bad byte (A verifies: its blocks end before β).
//  2. C is read: A's span is present, the rest of C's is held at the source.
//  3. B is read: its chunk fails verification, its pieces are marked missing (a fresh
//     reader is installed) and fetched again: that refetch is held too.
//  4. C's fetch is released. C's decode runs over B's old (bad) bytes, still in the sparse
//     copy; C's own bytes are fine, so it verifies. It must not leave block β, with B's bad
//     byte, in the reader the refetch of B will be decoded with.
//  5. B's refetch is released: B verifies from the refetched bytes. (Before the fix, C's
//     decode took the fresh reader after B's pieces were marked missing, its β reached that
//     reader's cache, B failed again and the read was an EIO: "a refetch reuses the bad
//     piece".)
TEST(IndexedFetcherRaceTest, ADecodeOverPiecesBeingFetchedAgainDoesNotPoisonTheRefetch) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  TestLayer layer = BuildLayer(LayerFormat::kTarGzip, dir.path());
  ASSERT_NE(layer.index, nullptr);
  const LayerIndex& index = *layer.index;
  const FileEntry& big = layer.Entry("data/big.bin");
  const uint64_t block = LayerReader::Options().block_bytes;
  const std::string plain = Gunzip(layer.blob);
  ASSERT_EQ(plain.size(), index.uncompressed_size);

  // Find chunks A, B, C (consecutive) with the layout above and B's bad byte.
  uint32_t b_id = 0;
  uint64_t bad = std::numeric_limits<uint64_t>::max();
  ByteRange span_a{0, 0};
  ByteRange span_c{0, 0};
  // From the third chunk: A is not the file's first (whose read fetches the headers too).
  for (uint32_t k = 2; k + 1 < big.chunk_count && bad == std::numeric_limits<uint64_t>::max();
       ++k) {
    const Chunk& a = index.chunks[big.first_chunk + k - 1];
    const Chunk& b = index.chunks[big.first_chunk + k];
    const Chunk& c = index.chunks[big.first_chunk + k + 1];
    const uint64_t b0 = big.payload_offset + b.file_offset;
    const uint64_t b1 = b0 + b.size;
    if (b0 % block == 0 || b1 % block == 0 || b0 / block + 1 != b1 / block) continue;
    const ByteRange sa = SpanOf(index, big.payload_offset + a.file_offset, b0);
    const ByteRange sb = SpanOf(index, b0, b1);
    const ByteRange sc = SpanOf(index, b1, b1 + c.size);
    if (sb.offset < sa.offset || sb.end() > sa.end() || sc.end() <= sa.end()) continue;
    // A byte of B in β, inside a stored block.
    for (uint64_t t = b1 - 1; t >= (b1 - 1) / block * block && t + 64 >= b1 - 4096; t -= 64) {
      bad = StoredByteFor(layer.blob, plain, t);
      if (bad != std::numeric_limits<uint64_t>::max()) break;
    }
    b_id = big.first_chunk + k;
    span_a = sa;
    span_c = sc;
  }
  ASSERT_NE(bad, std::numeric_limits<uint64_t>::max()) << "no chunks laid out as this test needs";
  ASSERT_GE(bad, span_a.offset);
  ASSERT_LT(bad, span_a.end());
  const Chunk& a = index.chunks[b_id - 1];
  const Chunk& b = index.chunks[b_id];
  const Chunk& c = index.chunks[b_id + 1];
  const std::string& want = layer.files["data/big.bin"];

  auto source = std::make_shared<MemorySource>(layer.blob);
  IndexedRemoteData::Options options;
  options.readahead = false;
  options.streaming = false;
  options.memory_cache_bytes = 0;  // every read decodes
  auto created =
      IndexedRemoteData::Create(source, layer.index, dir.path() + "/tmp", nullptr, options);
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  IndexedRemoteData& data = **created;

  // 1.
  source->FlipAt(bad, 1);
  Result<std::string> r = data.Read(big, a.file_offset, a.size);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  ASSERT_EQ(*r, want.substr(a.file_offset, a.size));
  ASSERT_EQ(source->requests(), 1);
  // 2.
  const uint64_t beyond_a = span_a.end();  // first byte of C's span past A's
  ASSERT_LT(beyond_a, span_c.end());
  source->HoldAt(beyond_a);
  source->HoldAt(bad);
  auto read_c =
      std::async(std::launch::async, [&] { return data.Read(big, c.file_offset, c.size); });
  ASSERT_TRUE(source->WaitForReads(2, std::chrono::seconds(30))) << "C's fetch never came";
  // 3.
  auto read_b =
      std::async(std::launch::async, [&] { return data.Read(big, b.file_offset, b.size); });
  ASSERT_TRUE(source->WaitForReads(3, std::chrono::seconds(30))) << "B was not fetched again";
  const std::vector<ByteRange> ranges = source->Ranges();
  EXPECT_TRUE(ranges[2].offset <= bad && bad < ranges[2].end()) << "B's refetch";
  // 4. C's decode runs now (with the fix, it finds B's pieces being fetched again and
  // waits for them: it cannot finish before step 5).
  source->ReleaseAt(beyond_a);
  (void)read_c.wait_for(std::chrono::seconds(3));
  // 5.
  source->ReleaseAt(bad);
  Result<std::string> got_b = read_b.get();
  ASSERT_TRUE(got_b.has_value()) << "B's refetch was decoded from bad blocks: "
                                 << got_b.error().ToString();
  EXPECT_EQ(*got_b, want.substr(b.file_offset, b.size));
  Result<std::string> got_c = read_c.get();
  ASSERT_TRUE(got_c.has_value()) << got_c.error().ToString();
  EXPECT_EQ(*got_c, want.substr(c.file_offset, c.size));
  EXPECT_EQ(data.Stats().errors, 0u);
  // Once more from memory-less state: every chunk of the three reads right.
  for (const Chunk* chunk : {&a, &b, &c}) {
    Result<std::string> again = data.Read(big, chunk->file_offset, chunk->size);
    ASSERT_TRUE(again.has_value()) << again.error().ToString();
    EXPECT_EQ(*again, want.substr(chunk->file_offset, chunk->size));
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, IndexedFetcherTest,
                         ::testing::Values(LayerFormat::kTar, LayerFormat::kTarGzip,
                                           LayerFormat::kTarZstd),
                         FormatName);

}  // namespace
}  // namespace imgfs::fs
