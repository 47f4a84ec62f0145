// imgfs — tests for random-access reads of layer files (fs/layer/layer_reader.h) over the real
// fixtures and a generated layer larger than 64 MiB.
#include "fs/layer/layer_reader.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "fs/layer/index_builder.h"
#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

using testing::FixtureLayers;
using testing::kFixtures;

struct Opened {
  std::shared_ptr<const LayerIndex> index;
  std::unique_ptr<LayerReader> reader;
};

// Indexes and opens layer `n` of fixture `name` with a span below the fixtures' big files.
Opened OpenFixtureLayer(const std::string& name, size_t n,
                        LayerReader::Options options = LayerReader::Options()) {
  Opened o;
  auto layers = FixtureLayers(kFixtures + "/" + name);
  if (layers.size() <= n) {
    ADD_FAILURE() << "fixture missing: " << kFixtures << "/" << name;
    return o;
  }
  IndexOptions io;
  io.chunk_size_bytes = 256 << 10;
  io.span_bytes = 512 << 10;
  io.expected_digest = layers[n].digest;
  auto index = IndexBuilder::BuildFromFile(layers[n].path, layers[n].media_type, io);
  if (!index.has_value()) {
    ADD_FAILURE() << index.error().ToString();
    return o;
  }
  o.index = std::make_shared<const LayerIndex>(std::move(index).value());
  auto reader = LayerReader::Open(layers[n].path, o.index, options);
  if (!reader.has_value()) {
    ADD_FAILURE() << reader.error().ToString();
    return o;
  }
  o.reader = std::move(reader).value();
  return o;
}

const FileEntry* Find(const LayerIndex& index, std::string_view path) {
  for (const FileEntry& e : index.entries) {
    if (e.path == path) return &e;
  }
  return nullptr;
}

Result<std::string> ReadWholeFile(LayerReader& r, const FileEntry& e, size_t piece) {
  std::string out;
  while (out.size() < e.size) {
    IMGFS_ASSIGN_OR_RETURN(std::string part, r.Read(e, out.size(), piece));
    if (part.empty()) return Status::Internal("short read");
    out += part;
  }
  return out;
}

// path (without leading "/") -> sha256 hex of regular files in tiny.expected.txt.
std::map<std::string, std::string> ExpectedRegularFiles() {
  std::map<std::string, std::string> out;
  std::istringstream in(testing::ReadWhole(kFixtures + "/tiny.expected.txt"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string field;
    while (std::getline(ss, field, '\t')) f.push_back(field);
    if (f.size() >= 6 && f[1] == "f") out[f[0].substr(1)] = f[5];
  }
  return out;
}

class FixtureReadTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureReadTest, EveryRegularFileOfLayer1MatchesTheExpectedTree) {
  Opened o = OpenFixtureLayer(GetParam(), 0);
  ASSERT_NE(o.reader, nullptr);
  auto expected = ExpectedRegularFiles();
  ASSERT_GT(expected.size(), 20u);
  // Paths that later layers replace are not expected to match layer 1.
  std::set<std::string> replaced;
  for (size_t n : {1, 2}) {
    Opened later = OpenFixtureLayer(GetParam(), n);
    ASSERT_NE(later.index, nullptr);
    for (const FileEntry& e : later.index->entries) replaced.insert(e.path);
  }
  size_t checked = 0;
  for (const FileEntry& e : o.index->entries) {
    if (e.type != EntryType::kRegular) continue;
    auto data = ReadWholeFile(*o.reader, e, 100000);
    ASSERT_TRUE(data.has_value()) << e.path << ": " << data.error().ToString();
    ASSERT_EQ(data->size(), e.size);
    auto it = expected.find(e.path);
    if (it == expected.end() || replaced.count(e.path) != 0) continue;
    EXPECT_EQ(registry::Digest::Sha256Of(*data).hex(), it->second) << e.path;
    ++checked;
  }
  EXPECT_GE(checked, 15u);
  const FileEntry* random = Find(*o.index, "data/random.bin");
  const FileEntry* busybox = Find(*o.index, "bin/busybox");
  const FileEntry* zeros = Find(*o.index, "data/zeros.bin");
  ASSERT_TRUE(random && busybox && zeros);
  EXPECT_TRUE(registry::Digest::Sha256Of(*ReadWholeFile(*o.reader, *random, 1 << 20))
                  .hex()
                  .starts_with("b352facb"));
  EXPECT_TRUE(registry::Digest::Sha256Of(*ReadWholeFile(*o.reader, *busybox, 65536))
                  .hex()
                  .starts_with("3d9f2889"));
  EXPECT_TRUE(registry::Digest::Sha256Of(*ReadWholeFile(*o.reader, *zeros, 300000))
                  .hex()
                  .starts_with("106f0647"));
  // Reads past the end are empty; hardlinks are not readable themselves.
  EXPECT_EQ(*o.reader->Read(*random, random->size, 10), "");
  const FileEntry* sh = Find(*o.index, "bin/sh");
  ASSERT_NE(sh, nullptr);
  EXPECT_EQ(o.reader->Read(*sh, 0, 10).error().code(), StatusCode::kInvalidArgument);
  // Chunks verify against their digests.
  for (uint32_t i = 0; i < random->chunk_count; ++i) {
    auto chunk = o.reader->ReadChunk(*random, i);
    ASSERT_TRUE(chunk.has_value()) << chunk.error().ToString();
  }
}

TEST_P(FixtureReadTest, RandomOffsetReadsMatchThePlainTarLayer) {
  Opened plain = OpenFixtureLayer("tiny-uncompressed", 0);
  LayerReader::Options small;
  small.block_bytes = 64 << 10;
  small.cache_bytes = 256 << 10;  // small cache: most random reads decode from a checkpoint
  Opened o = OpenFixtureLayer(GetParam(), 0, small);
  ASSERT_NE(plain.reader, nullptr);
  ASSERT_NE(o.reader, nullptr);
  std::mt19937_64 rng(42);
  for (const char* path : {"data/random.bin", "bin/busybox", "data/zeros.bin"}) {
    const FileEntry* want = Find(*plain.index, path);
    const FileEntry* got = Find(*o.index, path);
    ASSERT_TRUE(want && got);
    for (int i = 0; i < 60; ++i) {
      uint64_t off = rng() % (got->size + 100);
      size_t len = static_cast<size_t>(rng() % 300000);
      auto a = plain.reader->Read(*want, off, len);
      auto b = o.reader->Read(*got, off, len);
      ASSERT_TRUE(a.has_value() && b.has_value()) << path << " @" << off;
      ASSERT_EQ(*a, *b) << path << " @" << off << " +" << len;
    }
  }
}

TEST_P(FixtureReadTest, ConcurrentReadersSeeTheSameBytes) {
  Opened plain = OpenFixtureLayer("tiny-uncompressed", 0);
  LayerReader::Options small;
  small.block_bytes = 32 << 10;
  small.cache_bytes = 128 << 10;
  Opened o = OpenFixtureLayer(GetParam(), 0, small);
  ASSERT_NE(plain.reader, nullptr);
  ASSERT_NE(o.reader, nullptr);
  const FileEntry* want = Find(*plain.index, "data/random.bin");
  const FileEntry* got = Find(*o.index, "data/random.bin");
  ASSERT_TRUE(want && got);
  std::string expect = *plain.reader->Read(*want, 0, want->size);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 25; ++i) {
        uint64_t off = rng() % got->size;
        auto r = o.reader->Read(*got, off, 50000);
        if (!r.has_value() || *r != expect.substr(off, 50000)) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureReadTest,
                         ::testing::Values("tiny-gzip", "tiny-zstd", "tiny-uncompressed"));

TEST(LayerReaderTest, ReadingNearTheEndOfABigFileCostsAboutOneSpan) {
  // One 66 MiB file in a gzip layer, 4 MiB span: reading its last bytes decodes from the
  // nearest checkpoint, not from the start of the layer.
  constexpr uint64_t kSpan = 4 << 20;
  std::string big = testing::TextishBytes(66 << 20, 21);
  testing::TarWriter tar;
  tar.File("big.bin", big);
  std::string stream = tar.Finish();
  std::string gz = testing::Gzip(stream, 1);
  std::string path = ::testing::TempDir() + "/imgfs_big_" + std::to_string(getpid()) + ".tar.gz";
  ASSERT_TRUE(testing::WriteWhole(path, gz));
  gz.clear();
  stream.clear();
  IndexOptions io;
  io.span_bytes = kSpan;
  auto index = IndexBuilder::BuildFromFile(path, "application/vnd.oci.image.layer.v1.tar+gzip", io);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  EXPECT_GE(index->checkpoints.size(), 15u);
  EXPECT_LE(index->max_checkpoint_gap, 2 * kSpan);
  auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
  auto reader = LayerReader::Open(path, shared);
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  const FileEntry& e = shared->entries[0];
  ASSERT_EQ(e.size, big.size());

  auto tail = (*reader)->Read(e, e.size - 4096, 4096);
  ASSERT_TRUE(tail.has_value()) << tail.error().ToString();
  EXPECT_EQ(*tail, big.substr(big.size() - 4096));
  uint64_t cost = (*reader)->decompressed_bytes();
  EXPECT_LE(cost, 2 * kSpan) << "decompressed " << cost << " bytes for a 4 KiB read";
  EXPECT_GT(cost, 0u);

  // A read in the middle, then the sequential continuation: the parked decoder continues
  // where it stopped instead of going back to the checkpoint.
  uint64_t mid = 30 << 20;
  auto a = (*reader)->Read(e, mid, 128 << 10);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, big.substr(mid, 128 << 10));
  uint64_t before = (*reader)->decompressed_bytes();
  EXPECT_LE(before - cost, 2 * kSpan);
  for (uint64_t off = mid + (128 << 10); off < mid + (2 << 20); off += 128 << 10) {
    auto b = (*reader)->Read(e, off, 128 << 10);
    ASSERT_TRUE(b.has_value());
    ASSERT_EQ(*b, big.substr(off, 128 << 10));
  }
  // 2 MiB read sequentially costs about 2 MiB of decoding (plus one cache block).
  EXPECT_LE((*reader)->decompressed_bytes() - before, (2 << 20) + (256 << 10));
  std::filesystem::remove(path);
}

// ReadFileSlices gives the bytes as views into the reader's cached blocks: several parts for a
// read across blocks, the same bytes as ReadFile, and still valid once the cache has evicted
// those blocks (the result holds them).
TEST(LayerReaderTest, SlicesViewCachedBlocksAndOutliveTheirEviction) {
  std::string data = testing::TextishBytes(3 << 20, 7);
  testing::TarWriter tar;
  tar.File("data.bin", data);
  std::string path = ::testing::TempDir() + "/imgfs_slices_" + std::to_string(getpid()) + ".tar.gz";
  ASSERT_TRUE(testing::WriteWhole(path, testing::Gzip(tar.Finish(), 1)));
  IndexOptions io;
  io.span_bytes = 1 << 20;
  auto index = IndexBuilder::BuildFromFile(path, "application/vnd.oci.image.layer.v1.tar+gzip", io);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
  LayerReader::Options o;
  o.block_bytes = 64 << 10;
  o.cache_bytes = 256 << 10;  // four blocks
  auto reader = LayerReader::Open(path, shared, o);
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  const FileEntry& e = shared->entries[0];
  const uint64_t off = (1 << 20) + 1000;
  const size_t len = 200 << 10;  // spans four blocks
  auto slices = (*reader)->ReadFileSlices(e.payload_offset, e.size, off, len);
  ASSERT_TRUE(slices.has_value()) << slices.error().ToString();
  EXPECT_EQ(slices->parts().size(), 4u);
  EXPECT_EQ(slices->size(), len);
  // Evict every block of that read: read 1 MiB elsewhere.
  for (uint64_t at = 2 << 20; at < (3 << 20); at += 64 << 10) {
    auto other = (*reader)->Read(e, at, 64 << 10);
    ASSERT_TRUE(other.has_value());
    ASSERT_EQ(*other, data.substr(at, 64 << 10));
  }
  EXPECT_EQ(ByteSlices(*slices).TakeString(), data.substr(off, len));
  auto whole = (*reader)->Read(e, off, len);
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(*whole, data.substr(off, len));
  // Past the end: no parts.
  auto past = (*reader)->ReadFileSlices(e.payload_offset, e.size, e.size, 10);
  ASSERT_TRUE(past.has_value());
  EXPECT_EQ(past->size(), 0u);
  std::filesystem::remove(path);
}

// A gzip layer of `files` text files of `size` bytes each (f000 … ), indexed with 1 MiB spans.
struct ManyFiles {
  std::string path;
  std::shared_ptr<const LayerIndex> index;
  std::vector<std::string> contents;
  uint64_t stream_size = 0;
};
ManyFiles MakeManyFiles(const std::string& name, int files, size_t size) {
  ManyFiles m;
  testing::TarWriter tar;
  for (int i = 0; i < files; ++i) {
    m.contents.push_back(testing::TextishBytes(size, static_cast<uint32_t>(i + 1)));
    char file[16];
    std::snprintf(file, sizeof(file), "f%03d", i);
    tar.File(file, m.contents.back());
  }
  std::string stream = tar.Finish();
  m.stream_size = stream.size();
  m.path = ::testing::TempDir() + "/imgfs_" + name + "_" + std::to_string(getpid()) + ".tar.gz";
  if (!testing::WriteWhole(m.path, testing::Gzip(stream, 1))) ADD_FAILURE() << m.path;
  IndexOptions io;
  io.span_bytes = 1 << 20;
  auto index =
      IndexBuilder::BuildFromFile(m.path, "application/vnd.oci.image.layer.v1.tar+gzip", io);
  if (!index.has_value()) {
    ADD_FAILURE() << index.error().ToString();
  } else {
    m.index = std::make_shared<const LayerIndex>(std::move(index).value());
  }
  return m;
}

LayerReader::Options AheadOptions() {
  LayerReader::Options o;
  o.block_bytes = 32 << 10;
  o.cache_bytes = 512 << 10;
  o.decode_ahead_blocks = 4;
  return o;
}

// A reader that reads file after file in layer order (a cold tar of a mount) has the next
// blocks decoded on the reader's own thread while it goes on: it gets the same bytes, and
// every block is decoded once, ahead or not.
TEST(LayerReaderTest, DecodeAheadServesASequentialReaderTheSameBytesDecodingEachBlockOnce) {
  ManyFiles m = MakeManyFiles("ahead", 120, 20000);
  ASSERT_NE(m.index, nullptr);
  auto reader = LayerReader::Open(m.path, m.index, AheadOptions());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  LayerReader& r = **reader;
  ASSERT_EQ(m.index->entries.size(), m.contents.size());
  // The first two files: the second continues the parked decoder, so blocks past it are
  // decoded ahead, without any further read.
  for (int i = 0; i < 2; ++i) {
    auto got = ReadWholeFile(r, m.index->entries[i], 4096);
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    ASSERT_EQ(*got, m.contents[i]);
  }
  const uint64_t read_so_far = m.index->entries[1].payload_offset + m.index->entries[1].size;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r.decompressed_bytes() < read_so_far + 2 * (32 << 10) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GE(r.decompressed_bytes(), read_so_far + 2 * (32 << 10)) << "nothing decoded ahead";
  for (size_t i = 2; i < m.contents.size(); ++i) {
    auto got = ReadWholeFile(r, m.index->entries[i], 4096);
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    ASSERT_EQ(*got, m.contents[i]) << m.index->entries[i].path;
  }
  // Each block once: the whole stream, and nothing twice (the first read decodes from the
  // layer's start, its checkpoint).
  EXPECT_LE(r.decompressed_bytes(), m.stream_size) << "a block was decoded twice";
  std::filesystem::remove(m.path);
}

// Readers at random and sequential offsets at once, and readers dropped while a block is
// being decoded ahead: the same bytes, no block served before it is whole (run under TSan).
TEST(LayerReaderTest, DecodeAheadWithConcurrentReadersAndAReaderDroppedMidway) {
  ManyFiles m = MakeManyFiles("ahead_mt", 60, 30000);
  ASSERT_NE(m.index, nullptr);
  auto reader = LayerReader::Open(m.path, m.index, AheadOptions());
  ASSERT_TRUE(reader.has_value()) << reader.error().ToString();
  LayerReader& r = **reader;
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t));
      for (size_t i = 0; i < m.contents.size(); ++i) {
        // Threads 0 and 1 read in order; 2 and 3 jump around.
        const size_t f = t < 2 ? i : rng() % m.contents.size();
        auto got = ReadWholeFile(r, m.index->entries[f], 8192);
        if (!got.has_value() || *got != m.contents[f]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  for (int round = 0; round < 20; ++round) {
    auto dropped = LayerReader::Open(m.path, m.index, AheadOptions());
    ASSERT_TRUE(dropped.has_value());
    for (int i = 0; i < 3; ++i) {
      auto got = (*dropped)->Read(m.index->entries[static_cast<size_t>(i)], 0, 30000);
      ASSERT_TRUE(got.has_value());
      ASSERT_EQ(*got, m.contents[static_cast<size_t>(i)]);
    }
  }  // each destroyed while its ahead thread may still decode
  std::filesystem::remove(m.path);
}

TEST(LayerReaderTest, SingleFrameZstdLayerDecodesFromTheFrameStart) {
  std::string data = testing::TextishBytes(3 << 20, 5);
  testing::TarWriter tar;
  tar.File("f", data);
  std::string stream = tar.Finish();
  std::string path =
      ::testing::TempDir() + "/imgfs_one_frame_" + std::to_string(getpid()) + ".tar.zst";
  ASSERT_TRUE(testing::WriteWhole(path, testing::Zstd(stream, 1)));
  IndexOptions io;
  io.span_bytes = 512 << 10;
  auto index = IndexBuilder::BuildFromFile(path, "application/vnd.oci.image.layer.v1.tar+zstd", io);
  ASSERT_TRUE(index.has_value()) << index.error().ToString();
  ASSERT_EQ(index->checkpoints.size(), 1u);
  EXPECT_EQ(index->max_checkpoint_gap, index->uncompressed_size);  // recorded: not seekable
  auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
  auto reader = LayerReader::Open(path, shared);
  ASSERT_TRUE(reader.has_value());
  auto r = (*reader)->Read(shared->entries[0], data.size() - 10, 10);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(*r, data.substr(data.size() - 10));
  EXPECT_GE((*reader)->decompressed_bytes(), data.size() - 10);
  std::filesystem::remove(path);
}

TEST(LayerReaderTest, OpenRejectsABlobOfTheWrongSize) {
  auto layers = FixtureLayers(kFixtures + "/tiny-gzip");
  ASSERT_EQ(layers.size(), 3u);
  auto index = IndexBuilder::BuildFromFile(layers[1].path, layers[1].media_type);
  ASSERT_TRUE(index.has_value());
  auto shared = std::make_shared<const LayerIndex>(std::move(index).value());
  auto r = LayerReader::Open(layers[0].path, shared);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(LayerReader::Open("/nonexistent/blob", shared).error().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace imgfs::fs
