// imgfs — tests for base/file_util.h.
#include "base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

namespace imgfs {
namespace {

// The content of `path`, or `missing` when it cannot be read.
std::string ContentOr(const std::string& path, const std::string& missing) {
  Result<std::string> r = ReadFile(path);
  return r.has_value() ? *r : missing;
}

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

// MakeDirs creates every missing directory with its mode (issue 9: it used to ignore it, so
// a caller's 0700 became 0755) and leaves existing ones as they are.
TEST_F(FileUtilTest, MakeDirsHonoursItsMode) {
  mode_t old_umask = umask(022);
  ASSERT_TRUE(MakeDirs(dir_ + "/p/q/r", 0700).ok());
  ASSERT_TRUE(MakeDirs(dir_ + "/s", 0750).ok());
  umask(old_umask);
  for (const char* d : {"/p", "/p/q", "/p/q/r"}) {
    struct stat st {};
    ASSERT_EQ(stat((dir_ + d).c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 07777, 0700u) << d;
  }
  struct stat st {};
  ASSERT_EQ(stat((dir_ + "/s").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(chmod((dir_ + "/s").c_str(), 0711), 0);
  ASSERT_TRUE(MakeDirs(dir_ + "/s", 0700).ok());
  ASSERT_EQ(stat((dir_ + "/s").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u) << "an existing directory keeps its mode";
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/file", "x").ok());
  EXPECT_FALSE(MakeDirs(dir_ + "/file/sub", 0700).ok());
}

// RemoveTree and RemoveTreeAt remove links, never what they point to, also when the tree is
// deeper than the descriptors a process may hold per level would allow.
TEST_F(FileUtilTest, RemoveTreeNeverFollowsLinks) {
  std::string outside = dir_ + "/outside";
  ASSERT_TRUE(MakeDirs(outside + "/keep", 0755).ok());
  ASSERT_TRUE(WriteFileAtomic(outside + "/keep/data", "keep").ok());
  std::string tree = dir_ + "/tree";
  ASSERT_TRUE(MakeDirs(tree + "/a", 0755).ok());
  ASSERT_EQ(symlink(outside.c_str(), (tree + "/a/link").c_str()), 0);
  ASSERT_EQ(symlink((outside + "/keep").c_str(), (tree + "/top").c_str()), 0);
  std::string deep = tree + "/a";
  for (int i = 0; i < 300; ++i) {
    deep += "/d";
    ASSERT_EQ(mkdir(deep.c_str(), 0755), 0);
  }
  ASSERT_TRUE(WriteFileAtomic(deep + "/leaf", "x").ok());
  ASSERT_TRUE(RemoveTree(tree).ok());
  EXPECT_FALSE(std::filesystem::exists(tree));
  EXPECT_EQ(ContentOr(outside + "/keep/data", "<gone>"), "keep");
  // A symlink named as the tree itself is removed as a link.
  ASSERT_EQ(symlink(outside.c_str(), (dir_ + "/alias").c_str()), 0);
  UniqueFd dir(open(dir_.c_str(), O_PATH | O_DIRECTORY));
  ASSERT_TRUE(RemoveTreeAt(dir.get(), "alias").ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/alias"));
  EXPECT_EQ(ContentOr(outside + "/keep/data", "<gone>"), "keep");
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
