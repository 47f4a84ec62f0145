// imgfs — LayerCounters: the counters of a lazy reader and their LayerStats snapshot
// (fs/layer/file_data_source.h).
#include <cstdint>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "fs/layer/file_data_source.h"

namespace imgfs::fs {
namespace {

TEST(LayerCountersTest, SnapshotReportsEveryCounterOfALazyLayer) {
  LayerCounters c;
  LayerStats empty = c.Snapshot(1000);
  EXPECT_TRUE(empty.lazy);
  EXPECT_EQ(empty.blob_size, 1000u);
  EXPECT_EQ(
      empty.bytes_fetched + empty.requests + empty.chunks_fetched + empty.cache_hits + empty.errors,
      0u);
  c.bytes_fetched = 10;  // e.g. the TOC, fetched before the reader existed
  c.requests = 2;
  c.chunks_fetched.fetch_add(3);
  c.cache_hits.fetch_add(4);
  c.errors.fetch_add(5);
  LayerStats s = c.Snapshot(1000);
  EXPECT_EQ(s.bytes_fetched, 10u);
  EXPECT_EQ(s.requests, 2u);
  EXPECT_EQ(s.chunks_fetched, 3u);
  EXPECT_EQ(s.cache_hits, 4u);
  EXPECT_EQ(s.errors, 5u);
  // A local layer reports all zeros, not lazy.
  EXPECT_FALSE(LayerStats().lazy);
}

TEST(LayerCountersTest, CountsFromManyThreadsAddUp) {
  LayerCounters c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c] {
      for (int i = 0; i < 10000; ++i) {
        c.requests.fetch_add(1, std::memory_order_relaxed);
        c.bytes_fetched.fetch_add(3, std::memory_order_relaxed);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  LayerStats s = c.Snapshot(0);
  EXPECT_EQ(s.requests, 40000u);
  EXPECT_EQ(s.bytes_fetched, 120000u);
}

}  // namespace
}  // namespace imgfs::fs
