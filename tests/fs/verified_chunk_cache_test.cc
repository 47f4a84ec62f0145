// imgfs — VerifiedChunkCache: hits, the byte bound, least-recently-used eviction and chunks
// too large to keep (fs/lazy/verified_chunk_cache.h).
#include "fs/lazy/verified_chunk_cache.h"

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::fs {
namespace {

using Cache = VerifiedChunkCache<uint32_t>;

Cache::ChunkData Chunk(size_t bytes, char fill) {
  return std::make_shared<const std::string>(bytes, fill);
}

TEST(VerifiedChunkCacheTest, FindsWhatWasInsertedAndNothingElse) {
  VerifiedChunkCache<std::string> cache(1 << 20);
  EXPECT_EQ(cache.Find("sha256:a"), nullptr);
  Cache::ChunkData a = Chunk(100, 'a');
  cache.Insert("sha256:a", a);
  EXPECT_EQ(cache.Find("sha256:a"), a);
  EXPECT_EQ(cache.Find("sha256:b"), nullptr);
  // A key already present keeps its first chunk.
  cache.Insert("sha256:a", Chunk(50, 'x'));
  EXPECT_EQ(cache.Find("sha256:a"), a);
  EXPECT_EQ(cache.bytes(), 100u);
  cache.Insert("sha256:null", nullptr);
  EXPECT_EQ(cache.Find("sha256:null"), nullptr);
}

TEST(VerifiedChunkCacheTest, EvictsTheLeastRecentlyUsedBeyondTheCapacity) {
  Cache cache(300);
  cache.Insert(1, Chunk(100, '1'));
  cache.Insert(2, Chunk(100, '2'));
  cache.Insert(3, Chunk(100, '3'));
  EXPECT_EQ(cache.bytes(), 300u);
  ASSERT_NE(cache.Find(1), nullptr);  // 1 is now the most recent; 2 the least
  cache.Insert(4, Chunk(100, '4'));
  EXPECT_EQ(cache.Find(2), nullptr);
  EXPECT_NE(cache.Find(1), nullptr);
  EXPECT_NE(cache.Find(3), nullptr);
  EXPECT_NE(cache.Find(4), nullptr);
  EXPECT_EQ(cache.bytes(), 300u);
  // A larger chunk pushes out as many as it needs.
  cache.Insert(5, Chunk(250, '5'));
  EXPECT_LE(cache.bytes(), 300u);
  EXPECT_NE(cache.Find(5), nullptr);
  EXPECT_EQ(cache.Find(1), nullptr);
  EXPECT_EQ(cache.Find(3), nullptr);
}

TEST(VerifiedChunkCacheTest, AChunkLargerThanTheCapacityIsNotKept) {
  Cache cache(100);
  cache.Insert(1, Chunk(60, '1'));
  cache.Insert(2, Chunk(101, '2'));
  EXPECT_EQ(cache.Find(2), nullptr);
  EXPECT_NE(cache.Find(1), nullptr) << "an oversized chunk evicted what fits";
  Cache none(0);  // capacity 0: the cache is off
  none.Insert(1, Chunk(1, '1'));
  EXPECT_EQ(none.Find(1), nullptr);
}

TEST(VerifiedChunkCacheTest, AnEvictedChunkStaysValidForItsHolder) {
  Cache cache(100);
  cache.Insert(1, Chunk(100, 'a'));
  Cache::ChunkData held = cache.Find(1);
  cache.Insert(2, Chunk(100, 'b'));
  EXPECT_EQ(cache.Find(1), nullptr);
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(*held, std::string(100, 'a'));
}

TEST(VerifiedChunkCacheTest, ConcurrentUseKeepsTheBound) {
  Cache cache(64 << 10);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (uint32_t i = 0; i < 2000; ++i) {
        const uint32_t key = (i * 7 + static_cast<uint32_t>(t)) % 97;
        if (Cache::ChunkData got = cache.Find(key); got != nullptr) {
          EXPECT_EQ(got->size(), 1024u + key);
        } else {
          cache.Insert(key, Chunk(1024 + key, 'c'));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(cache.bytes(), 64u << 10);
}

}  // namespace
}  // namespace imgfs::fs
