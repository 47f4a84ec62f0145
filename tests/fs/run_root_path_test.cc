// imgfs — unit tests of fs/run/root_path: paths inside a container root resolved through
// directory descriptors, symlinks followed inside the root only.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "fs/run/root_path.h"
#include "tests/support/image_builder.h"

namespace imgfs::fs::run {
namespace {

using imgfs::testing::TempDir;

class RootPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.Sub("root");
    outside_ = dir_.Sub("outside");
    ASSERT_TRUE(MakeDirs(root_ + "/etc").ok());
    ASSERT_TRUE(MakeDirs(outside_).ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/etc/passwd", "inside\n").ok());
    ASSERT_TRUE(WriteFileAtomic(outside_ + "/passwd", "outside\n").ok());
    // Links an image would use to point a mount or a read at the host.
    ASSERT_EQ(symlink(outside_.c_str(), (root_ + "/abs").c_str()), 0);
    ASSERT_EQ(symlink(("../../../../../../../.." + outside_).c_str(), (root_ + "/rel").c_str()), 0);
    ASSERT_EQ(symlink("/etc", (root_ + "/etc-link").c_str()), 0);
    ASSERT_EQ(symlink("loop2", (root_ + "/loop1").c_str()), 0);
    ASSERT_EQ(symlink("loop1", (root_ + "/loop2").c_str()), 0);
    fd_ = UniqueFd(open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd_.IsValid());
  }

  // The host path a descriptor refers to.
  static std::string PathOf(const UniqueFd& fd) {
    return std::filesystem::read_symlink(FdPath(fd.get())).string();
  }

  TempDir dir_;
  std::string root_;
  std::string outside_;
  UniqueFd fd_;
};

TEST_F(RootPathTest, SymlinksResolveInsideTheRoot) {
  bool followed = false;
  Result<UniqueFd> etc = OpenInRoot(fd_.get(), "/etc-link/passwd", Create::kNothing, 0, &followed);
  ASSERT_TRUE(etc.has_value()) << etc.error().ToString();
  EXPECT_EQ(PathOf(*etc), root_ + "/etc/passwd");
  EXPECT_TRUE(followed);
  EXPECT_EQ(OpenInRoot(fd_.get(), "/../../etc/./passwd").has_value(), true);
  EXPECT_EQ(PathOf(*OpenInRoot(fd_.get(), "/../../etc/./passwd")), root_ + "/etc/passwd");
  EXPECT_EQ(PathOf(*OpenInRoot(fd_.get(), "/")), root_);
  // Absolute and ".." links to the host name nothing inside the root: NotFound, not the host.
  for (const char* p : {"/abs/passwd", "/rel/passwd"}) {
    Result<UniqueFd> r = OpenInRoot(fd_.get(), p);
    ASSERT_FALSE(r.has_value()) << p << " → " << PathOf(*r);
    EXPECT_EQ(r.error().code(), StatusCode::kNotFound) << r.error().ToString();
  }
  EXPECT_EQ(OpenInRoot(fd_.get(), "/loop1").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenInRoot(fd_.get(), "/etc/passwd/x").error().code(), StatusCode::kInvalidArgument);
}

TEST_F(RootPathTest, CreatingThroughALinkCreatesInsideTheRoot) {
  Result<UniqueFd> made = OpenInRoot(fd_.get(), "/abs/a/b", Create::kDirectory);
  ASSERT_TRUE(made.has_value()) << made.error().ToString();
  EXPECT_EQ(PathOf(*made), root_ + outside_ + "/a/b");
  made = OpenInRoot(fd_.get(), "/rel/file", Create::kFile);
  ASSERT_TRUE(made.has_value()) << made.error().ToString();
  EXPECT_EQ(PathOf(*made), root_ + outside_ + "/file");
  EXPECT_FALSE(std::filesystem::exists(outside_ + "/a"));
  EXPECT_FALSE(std::filesystem::exists(outside_ + "/file"));
}

TEST_F(RootPathTest, ReadFileInRootStaysInsideAndIsBounded) {
  Result<std::string> text = ReadFileInRoot(fd_.get(), "/etc-link/passwd", 1024);
  ASSERT_TRUE(text.has_value()) << text.error().ToString();
  EXPECT_EQ(*text, "inside\n");
  EXPECT_EQ(ReadFileInRoot(fd_.get(), "/abs/passwd", 1024).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(ReadFileInRoot(fd_.get(), "/rel/passwd", 1024).error().code(), StatusCode::kNotFound);
  Result<std::string> big = ReadFileInRoot(fd_.get(), "/etc/passwd", 3);
  ASSERT_FALSE(big.has_value());
  EXPECT_NE(big.error().message().find("limit of 3 bytes"), std::string::npos);
}

}  // namespace
}  // namespace imgfs::fs::run
