// Tests for cache/chunk_store.h: content-addressed layout, dedup, verification on read
// (a corrupt file is deleted and reported absent), refusal of mismatched bytes.
#include "cache/chunk_store.h"

#include <sys/stat.h>

#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using registry::Digest;
using testing::TempDir;

TEST(ChunkStoreTest, PutGetLayoutAndDedup) {
  TempDir dir;
  ChunkStore store(dir.path());
  std::string data(100000, 'x');
  data += "tail";
  Digest d = Digest::Sha256Of(data);
  EXPECT_FALSE(store.Has(d));
  EXPECT_EQ(store.Get(d).error().code(), StatusCode::kNotFound);

  ASSERT_TRUE(store.Put(d, data).ok());
  std::string path = dir.path() + "/chunks/" + d.hex().substr(0, 2) + "/" + d.hex();
  EXPECT_EQ(store.PathFor(d), path);
  EXPECT_TRUE(store.Has(d));
  auto got = store.Get(d);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, data);

  // A second Put of the same chunk (another layer, another image) keeps the one file.
  struct stat before {};
  ASSERT_EQ(::stat(path.c_str(), &before), 0);
  ASSERT_TRUE(store.Put(d, data).ok());
  struct stat after {};
  ASSERT_EQ(::stat(path.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);

  // A second store over the same root sees it.
  ChunkStore other(dir.path());
  EXPECT_EQ(*other.Get(d), data);
}

TEST(ChunkStoreTest, RefusesBytesThatDoNotMatch) {
  TempDir dir;
  ChunkStore store(dir.path());
  Digest d = Digest::Sha256Of("right");
  EXPECT_EQ(store.Put(d, "wrong").code(), StatusCode::kCorrupt);
  EXPECT_FALSE(store.Has(d));
  EXPECT_EQ(store.Put(Digest(), "x").code(), StatusCode::kInvalidArgument);
}

TEST(ChunkStoreTest, CorruptFileIsDeletedAndReportedAbsent) {
  TempDir dir;
  ChunkStore store(dir.path());
  std::string data = "chunk content";
  Digest d = Digest::Sha256Of(data);
  ASSERT_TRUE(store.Put(d, data).ok());
  ASSERT_TRUE(WriteFileAtomic(store.PathFor(d), "chunk c0ntent").ok());

  auto got = store.Get(d);
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store.Has(d));
  EXPECT_EQ(store.corrupt_dropped(), 1u);

  // Truncated file: same.
  ASSERT_TRUE(store.Put(d, data).ok());
  ASSERT_TRUE(WriteFileAtomic(store.PathFor(d), "chunk").ok());
  EXPECT_FALSE(store.Get(d).has_value());
  EXPECT_EQ(store.corrupt_dropped(), 2u);

  ASSERT_TRUE(store.Put(d, data).ok());
  EXPECT_EQ(*store.Get(d), data);
}

}  // namespace
}  // namespace imgfs::cache
