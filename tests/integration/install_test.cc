// imgfs tests — installing: `cmake --install` of the build tree this test belongs to into a
// DESTDIR, and the Debian package `cpack -G DEB` makes from it, checked with dpkg-deb.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/image_builder.h"

namespace imgfs::testing {
namespace {

// The build tree of the imgfs binary under test (the directory with CMakeCache.txt above it).
std::string BuildDir() {
  std::filesystem::path p = std::filesystem::path(IMGFS_BINARY).parent_path();
  while (!p.empty() && p != p.root_path() && !std::filesystem::exists(p / "CMakeCache.txt")) {
    p = p.parent_path();
  }
  return p.string();
}

std::string LinkTarget(const std::string& path) {
  std::error_code ec;
  return std::filesystem::read_symlink(path, ec).string();
}

TEST(InstallTest, CmakeInstallPutsBinaryHelperAndDocsInPlace) {
  std::string build = BuildDir();
  ASSERT_TRUE(std::filesystem::exists(build + "/CMakeCache.txt")) << build;
  TempDir dir;
  std::string dest = dir.Sub("dest");
  ProcessResult r = RunProcess({"cmake", "--install", build, "--prefix", "/usr/local"},
                               {"DESTDIR=" + dest}, {}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.Describe() << r.out;
  struct stat st {};
  ASSERT_EQ(stat((dest + "/usr/local/bin/imgfs").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode) && (st.st_mode & 0111) == 0111);
  // mount(8) looks for helpers in /sbin only; the link names the installed binary.
  EXPECT_EQ(LinkTarget(dest + "/sbin/mount.imgfs"), "/usr/local/bin/imgfs");
  for (const char* doc :
       {"README.md", "ARCHITECTURE.md", "SEMANTICS.md", "SECURITY.md", "WRITABLE.md"}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(dest + "/usr/local/share/doc/imgfs/" + doc))
        << doc;
  }
  // Nothing but these: no test binaries, libraries or headers.
  std::vector<std::string> files = ListFilesRecursive(dest);
  for (const std::string& f : files) {
    EXPECT_TRUE(f == "usr/local/bin/imgfs" || f == "sbin/mount.imgfs" ||
                f.starts_with("usr/local/share/doc/imgfs/"))
        << f;
  }
  ProcessResult version = RunProcess({dest + "/usr/local/bin/imgfs", "--version"});
  EXPECT_EQ(version.exit_code, 0) << version.Describe();
  EXPECT_EQ(version.out.rfind("imgfs version ", 0), 0u) << version.out;
}

TEST(InstallTest, CpackBuildsADebianPackage) {
  std::string build = BuildDir();
  TempDir dir;
  ProcessResult r = RunProcess(
      {"cpack", "-G", "DEB", "--config", build + "/CPackConfig.cmake", "-B", dir.Sub("pkg")}, {},
      {}, 600);
  ASSERT_EQ(r.exit_code, 0) << r.Describe() << r.out;
  std::string deb;
  for (const auto& e : std::filesystem::directory_iterator(dir.Sub("pkg"))) {
    if (e.path().extension() == ".deb") deb = e.path().string();
  }
  ASSERT_FALSE(deb.empty()) << r.out;
  EXPECT_NE(deb.find("imgfs_"), std::string::npos) << deb;
  ProcessResult list = RunProcess({"dpkg-deb", "-c", deb});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  EXPECT_NE(list.out.find(" ./usr/bin/imgfs\n"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find(" ./sbin/mount.imgfs -> /usr/bin/imgfs\n"), std::string::npos)
      << list.out;
  EXPECT_NE(list.out.find(" ./usr/share/doc/imgfs/README.md\n"), std::string::npos) << list.out;
  ProcessResult depends = RunProcess({"dpkg-deb", "-f", deb, "Depends"});
  ASSERT_EQ(depends.exit_code, 0) << depends.Describe();
  for (const char* pkg :
       {"libfuse3-3", "libcurl4", "libssl3", "libzstd1", "zlib1g", "libseccomp2", "fuse3"}) {
    EXPECT_NE(depends.out.find(pkg), std::string::npos) << pkg << " in " << depends.out;
  }
}

}  // namespace
}  // namespace imgfs::testing
