// imgfs — test fixture: a store in a fresh temporary directory (store(); dir() for more
// beside it), and images prepared from it as a mount prepares them (PrepareImage,
// fs/mount/mount.h).
#ifndef IMGFS_TESTS_FS_PREPARED_STORE_H_
#define IMGFS_TESTS_FS_PREPARED_STORE_H_

#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "cache/index_store.h"
#include "cache/store.h"
#include "fs/mount/mount.h"
#include "tests/support/temp_dir.h"

namespace imgfs::fs::testing {

class PreparedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(dir_.Sub("store"));
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    store_ = std::move(store).value();
  }

  // `image` prepared with default options, and its background work done (the indexes
  // synced, the tree written): what a mount started later finds in the store.
  Result<PreparedImage> Prepare(const std::string& image) {
    Result<PreparedImage> prepared = PrepareImage(*store_, image, PrepareOptions{});
    if (prepared.has_value()) prepared->cleanup.reset();
    return prepared;
  }

  cache::Store& store() const { return *store_; }
  const imgfs::testing::TempDir& dir() const { return dir_; }
  cache::IndexStore indexes() const { return cache::IndexStore(store_->root()); }

 private:
  imgfs::testing::TempDir dir_;
  std::unique_ptr<cache::Store> store_;
};

}  // namespace imgfs::fs::testing

#endif  // IMGFS_TESTS_FS_PREPARED_STORE_H_
