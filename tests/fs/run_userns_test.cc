// imgfs — unit tests of fs/run/userns: the maps of a rootless run, and the errors that say
// what is missing (with the host's files replaced by the test's).
#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "fs/run/userns.h"
#include "tests/support/temp_dir.h"

namespace imgfs::fs::run {
namespace {

using Maps = std::vector<IdMapping>;

TEST(RootlessMappingsTest, CallerIsRootAndRangesFollowFromOne) {
  EXPECT_EQ(RootlessMappings(1000, {}), (Maps{{0, 1000, 1}}));
  EXPECT_EQ(RootlessMappings(1000, {{100000, 65536}, {300000, 10}}),
            (Maps{{0, 1000, 1}, {1, 100000, 65536}, {65537, 300000, 10}}));
}

TEST(RootlessMappingsTest, CutsWhatWouldPassTheLargestId) {
  // Inside ids 1..4294967290, then 4 more up to 4294967294 (the largest id): the second range
  // is cut, and a third has no room left.
  Maps m = RootlessMappings(5, {{1, 4294967290u}, {10, 10}, {50, 1}});
  EXPECT_EQ(m, (Maps{{0, 5, 1}, {1, 1, 4294967290u}, {4294967291u, 10, 4}}));
}

class PlanRootlessMapsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    host_.uid = 1234;
    host_.gid = 4321;
    host_.user_name = "alice";
    host_.subuid = dir_.Sub("subuid");
    host_.subgid = dir_.Sub("subgid");
    host_.max_user_namespaces = dir_.Sub("max_user_namespaces");
    host_.unprivileged_userns_clone = dir_.Sub("unprivileged_userns_clone");
    host_.newuidmap = "/bin/true";
    host_.newgidmap = "/bin/true";
    Write("subuid", "alice:100000:65536\n");
    Write("subgid", "4321:200000:1000\nalice:300000:5\n");
    Write("max_user_namespaces", "15000\n");
  }

  void Write(const std::string& name, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic(dir_.Sub(name), text).ok());
  }

  testing::TempDir dir_;
  RootlessHost host_;
};

TEST_F(PlanRootlessMapsTest, MapsTheCallerAndTheirRanges) {
  Result<RootlessMaps> maps = PlanRootlessMaps(host_);
  ASSERT_TRUE(maps.has_value()) << maps.error().ToString();
  EXPECT_EQ(maps->uids, (Maps{{0, 1234, 1}, {1, 100000, 65536}}));
  // subgid lines are matched by the user's name and by their uid (as newgidmap does).
  EXPECT_EQ(maps->gids, (Maps{{0, 4321, 1}, {1, 300000, 5}}));
}

TEST_F(PlanRootlessMapsTest, NoRangeSaysHowToAddOne) {
  Write("subuid", "bob:100000:65536\n");
  Result<RootlessMaps> maps = PlanRootlessMaps(host_);
  ASSERT_FALSE(maps.has_value());
  EXPECT_EQ(maps.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(maps.error().message().find("usermod --add-subuids 100000-165535 alice"),
            std::string::npos)
      << maps.error().ToString();
  EXPECT_NE(maps.error().message().find(host_.subuid), std::string::npos);

  // A missing file is no range either; the gid side names its own file and flag.
  Write("subuid", "alice:100000:65536\n");
  host_.subgid = dir_.Sub("absent");
  maps = PlanRootlessMaps(host_);
  ASSERT_FALSE(maps.has_value());
  EXPECT_NE(maps.error().message().find("--add-subgids"), std::string::npos)
      << maps.error().ToString();
}

TEST_F(PlanRootlessMapsTest, MissingNewuidmapSaysWhichPackage) {
  host_.newgidmap = dir_.Sub("newgidmap");
  Result<RootlessMaps> maps = PlanRootlessMaps(host_);
  ASSERT_FALSE(maps.has_value());
  EXPECT_EQ(maps.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(maps.error().message().find("uidmap package"), std::string::npos)
      << maps.error().ToString();
}

TEST_F(PlanRootlessMapsTest, DisabledUserNamespacesAreNamed) {
  Write("max_user_namespaces", "0\n");
  Result<RootlessMaps> maps = PlanRootlessMaps(host_);
  ASSERT_FALSE(maps.has_value());
  EXPECT_EQ(maps.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(maps.error().message().find("max_user_namespaces"), std::string::npos);

  Write("max_user_namespaces", "15000\n");
  Write("unprivileged_userns_clone", "0\n");
  maps = PlanRootlessMaps(host_);
  ASSERT_FALSE(maps.has_value());
  EXPECT_NE(maps.error().message().find("unprivileged_userns_clone"), std::string::npos);

  Write("unprivileged_userns_clone", "1\n");
  EXPECT_TRUE(PlanRootlessMaps(host_).has_value());
}

TEST(InInitialUserNamespaceTest, TheTestRunsOnTheHost) {
  // The unit tests run in the host's namespace (as root or not).
  EXPECT_TRUE(InInitialUserNamespace());
}

}  // namespace
}  // namespace imgfs::fs::run
