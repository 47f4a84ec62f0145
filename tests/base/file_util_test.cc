// imgfs — tests for base/file_util.h.
#include "base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>

#include <gtest/gtest.h>

namespace imgfs {
namespace {

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/imgfs-fileutil-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileUtilTest, AtomicWriteReplacesAndLeavesNoTemp) {
  std::string path = dir_ + "/f";
  ASSERT_TRUE(WriteFileAtomic(path, "one").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "two", 0600).ok());
  EXPECT_EQ(*ReadFile(path), "two");
  // Unsynced: the same atomic replacement, without the fsyncs.
  ASSERT_TRUE(WriteFileAtomic(path, "three", 0600, Durability::kUnsynced).ok());
  EXPECT_EQ(*ReadFile(path), "three");
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(FileUtilTest, ReadMissingIsNotFound) {
  Result<std::string> r = ReadFile(dir_ + "/missing");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound);
  EXPECT_NE(r.error().message().find("missing"), std::string::npos);
}

TEST_F(FileUtilTest, MakeDirsAndRemoveTree) {
  std::string deep = dir_ + "/a/b/c";
  ASSERT_TRUE(MakeDirs(deep).ok());
  ASSERT_TRUE(MakeDirs(deep).ok());
  ASSERT_TRUE(WriteFileAtomic(deep + "/x", "x").ok());
  ASSERT_TRUE(RemoveTree(dir_ + "/a").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a"));
  EXPECT_TRUE(RemoveTree(dir_ + "/a").ok());
}

TEST_F(FileUtilTest, PreadAllShortAtEnd) {
  std::string path = dir_ + "/p";
  ASSERT_TRUE(WriteFileAtomic(path, "0123456789").ok());
  Result<UniqueFd> fd = OpenFile(path, O_RDONLY);
  ASSERT_TRUE(fd.has_value());
  EXPECT_EQ(*PreadAll(fd->get(), 2, 3), "234");
  EXPECT_EQ(*PreadAll(fd->get(), 8, 10), "89");
}

}  // namespace
}  // namespace imgfs
