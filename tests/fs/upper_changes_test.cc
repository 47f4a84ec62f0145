// imgfs — unit tests of ListUpperChanges: a real lower image (built as an OCI layout and
// prepared by PrepareImage) and a real upper directory with whiteouts (mknod 0/0), opaque
// directories (trusted.overlay.opaque) and symlinks that point at host directories.
#include "fs/writable/upper_changes.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "cache/store.h"
#include "fs/mount/mount.h"
#include "tests/support/image_builder.h"

namespace imgfs::fs {
namespace {

using testing::TempDir;
using testing::TestFile;

// The lower: directories, files, a directory with several children (made opaque above), a
// file the upper replaces by a directory and /usr (replaced by a symlink to the host).
testing::TestImageSpec LowerSpec() {
  using K = TestFile::Kind;
  testing::TestImageSpec spec;
  spec.layers.push_back({{
      {"etc", "", K::kDir, 0755},
      {"etc/hosts", "127.0.0.1 localhost\n"},
      {"etc/passwd", "root:x:0:0::/root:/bin/sh\n"},
      {"etc/sub", "", K::kDir, 0755},
      {"etc/sub/x", "x"},
      {"file.txt", "untouched"},
      {"opq", "", K::kDir, 0755},
      {"opq/a", "a"},
      {"opq/b", "b"},
      {"opq/c", "c"},
      {"usr", "", K::kDir, 0755},
      {"usr/bin", "", K::kDir, 0755},
      {"usr/bin/tool", "tool"},
      {"was-file", "a file in the lower"},
  }});
  return spec;
}

class UpperChangesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "whiteouts (mknod 0/0) and trusted.* xattrs need root";
    testing::ImageBuilder builder(dir_.Sub("layout"));
    Result<testing::BuiltImage> built = builder.Add(LowerSpec(), "base");
    ASSERT_TRUE(built.has_value()) << built.error().ToString();
    Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(dir_.Sub("store"));
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    store_ = std::move(*store);
    Result<PreparedImage> prepared =
        PrepareImage(*store_, "oci:" + dir_.Sub("layout") + ":base", PrepareOptions{});
    ASSERT_TRUE(prepared.has_value()) << prepared.error().ToString();
    prepared_ = std::move(*prepared);
    ASSERT_TRUE(MakeDirs(Upper()).ok());
  }

  std::string Upper() const { return dir_.Sub("upper"); }
  const NodeTable& Lower() const { return prepared_.filesystem->table(); }

  void Dir(const std::string& rel) { ASSERT_TRUE(MakeDirs(Upper() + "/" + rel).ok()); }
  void File(const std::string& rel, const std::string& content) {
    ASSERT_TRUE(WriteFileAtomic(Upper() + "/" + rel, content).ok());
  }
  void Whiteout(const std::string& rel) {
    ASSERT_EQ(::mknod((Upper() + "/" + rel).c_str(), S_IFCHR | 0, makedev(0, 0)), 0) << rel;
  }
  void Opaque(const std::string& rel) {
    ASSERT_EQ(::lsetxattr((Upper() + "/" + rel).c_str(), "trusted.overlay.opaque", "y", 1, 0), 0)
        << rel;
  }

  // The changes as `imgfs diff` prints them.
  std::vector<std::string> Lines() {
    Result<std::vector<UpperChange>> changes = ListUpperChanges(Upper(), Lower());
    EXPECT_TRUE(changes.has_value()) << changes.error().ToString();
    std::vector<std::string> out;
    if (changes.has_value()) {
      for (const UpperChange& c : *changes) out.push_back(FormatUpperChange(c));
    }
    return out;
  }

  TempDir dir_;
  std::unique_ptr<cache::Store> store_;
  PreparedImage prepared_;
};

TEST_F(UpperChangesTest, EmptyUpperChangesNothing) { EXPECT_TRUE(Lines().empty()); }

TEST_F(UpperChangesTest, ClassifiesLikeDockerDiff) {
  Dir("etc");  // copied up because of its children
  File("etc/passwd", "root:x:0:0::/root:/bin/bash\n");
  Whiteout("etc/hosts");
  File("etc/new", "added");
  File("etc-x", "sorts between /etc and /etc/hosts");
  Dir("newdir/sub");
  File("newdir/sub/f", "below an added directory");
  Dir("opq");
  Opaque("opq");
  File("opq/b", "the only b now");
  ASSERT_EQ(::mkdir((Upper() + "/was-file").c_str(), 0755), 0);
  File("was-file/inner", "a directory replaced the lower file");
  EXPECT_EQ(Lines(), (std::vector<std::string>{
                         "C /etc",
                         "A /etc-x",
                         "D /etc/hosts",
                         "A /etc/new",
                         "C /etc/passwd",
                         "A /newdir",
                         "A /newdir/sub",
                         "A /newdir/sub/f",
                         "C /opq",
                         "D /opq/a",
                         "C /opq/b",
                         "D /opq/c",
                         "C /was-file",
                         "A /was-file/inner",
                     }));
}

TEST_F(UpperChangesTest, OpaqueDirectoryNotInTheLowerIsOnlyAdded) {
  Dir("fresh");
  Opaque("fresh");
  File("fresh/f", "f");
  EXPECT_EQ(Lines(), (std::vector<std::string>{"A /fresh", "A /fresh/f"}));
}

TEST_F(UpperChangesTest, WhiteoutOfAWholeLowerDirectoryIsOneLine) {
  Whiteout("usr");
  EXPECT_EQ(Lines(), (std::vector<std::string>{"D /usr"}));
}

// A container swapped its /usr (and made /trap) for symlinks to a host directory: they are
// reported as the symlinks they are, and nothing of the host directory appears.
TEST_F(UpperChangesTest, SymlinksToTheHostAreNeverFollowed) {
  TempDir host;
  ASSERT_TRUE(MakeDirs(host.Sub("secret-dir")).ok());
  ASSERT_TRUE(WriteFileAtomic(host.Sub("secret"), "host data").ok());
  ASSERT_EQ(::symlink(host.path().c_str(), (Upper() + "/usr").c_str()), 0);
  ASSERT_EQ(::symlink(host.path().c_str(), (Upper() + "/trap").c_str()), 0);
  Dir("etc");
  ASSERT_EQ(::symlink(host.path().c_str(), (Upper() + "/etc/sub").c_str()), 0);
  EXPECT_EQ(Lines(), (std::vector<std::string>{"C /etc", "C /etc/sub", "A /trap", "C /usr"}));
}

TEST_F(UpperChangesTest, MissingUpperIsAnError) {
  Result<std::vector<UpperChange>> changes = ListUpperChanges(dir_.Sub("no-such-upper"), Lower());
  ASSERT_FALSE(changes.has_value());
  EXPECT_NE(changes.error().message().find("no-such-upper"), std::string::npos)
      << changes.error().ToString();
}

TEST(ChangeLetterTest, LettersAreDockers) {
  EXPECT_EQ(ChangeLetter(ChangeKind::kAdded), 'A');
  EXPECT_EQ(ChangeLetter(ChangeKind::kChanged), 'C');
  EXPECT_EQ(ChangeLetter(ChangeKind::kDeleted), 'D');
  EXPECT_EQ(FormatUpperChange({ChangeKind::kDeleted, "/a b"}), "D /a b");
}

}  // namespace
}  // namespace imgfs::fs
