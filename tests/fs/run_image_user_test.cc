// imgfs — unit tests of fs/run/image_user: docker's USER[:GROUP] rules and id range checks
// (security review finding 11: no 2^32 wrap to root).
#include <gtest/gtest.h>

#include "fs/run/image_user.h"

namespace imgfs::fs::run {
namespace {

constexpr const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1234:1234:app:/home/app:/bin/sh\n"
    "evil:x:4294967296:0:evil:/:/bin/sh\n"
    "huge:x:1:99999999999999999999999:huge:/:/bin/sh\n"
    "short:x:7\n";
constexpr const char* kGroup =
    "root:x:0:\napp:x:1234:\nextra:x:5000:app,other\nbad:x:4294967296:nobody\n";

TEST(ParseIdTest, AcceptsThe32BitRangeWithoutTheUnchangedMarker) {
  EXPECT_EQ(*ParseId("0", "uid"), 0u);
  EXPECT_EQ(*ParseId("4294967294", "uid"), 4294967294u);
  for (const char* bad : {"4294967295", "4294967296", "99999999999999999999999", "-1", "+1", "",
                          "1a", " 1", "0x10"}) {
    Result<uint32_t> r = ParseId(bad, "uid");
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.error().message().find("uid"), std::string::npos) << r.error().ToString();
  }
  EXPECT_NE(ParseId("4294967296", "uid").error().message().find("out of range"), std::string::npos);
}

TEST(ResolveUserTest, NamesIdsAndSupplementaryGroups) {
  Result<ExecUser> u = ResolveUser("app", kPasswd, kGroup);
  ASSERT_TRUE(u.has_value()) << u.error().ToString();
  EXPECT_EQ(u->uid, 1234u);
  EXPECT_EQ(u->gid, 1234u);
  EXPECT_EQ(u->home, "/home/app");
  EXPECT_EQ(u->groups, std::vector<gid_t>{5000});
  u = ResolveUser("1234:5000", kPasswd, kGroup);
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->uid, 1234u);
  EXPECT_EQ(u->gid, 5000u);
  EXPECT_TRUE(u->groups.empty());
  u = ResolveUser("777", kPasswd, kGroup);  // numeric, not listed: accepted, gid 0
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->uid, 777u);
  EXPECT_EQ(u->gid, 0u);
  u = ResolveUser("", kPasswd, kGroup);
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->uid, 0u);
  EXPECT_EQ(ResolveUser("nobody", kPasswd, kGroup).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(ResolveUser("app:nogroup", kPasswd, kGroup).error().code(), StatusCode::kNotFound);
}

TEST(ResolveUserTest, OutOfRangeIdsAreErrorsNotRoot) {
  for (const char* spec : {"4294967296", "4294967296:0", "0:4294967296", "evil", "huge",
                           "99999999999999999999999", "app:bad"}) {
    Result<ExecUser> u = ResolveUser(spec, kPasswd, kGroup);
    ASSERT_FALSE(u.has_value()) << spec << " resolved to uid " << u->uid;
    EXPECT_EQ(u.error().code(), StatusCode::kInvalidArgument) << spec;
    EXPECT_NE(u.error().message().find("out of range"), std::string::npos) << u.error().ToString();
  }
  // A group line that is out of range matters only to a user that is a member.
  Result<ExecUser> root = ResolveUser("root", kPasswd, kGroup);
  ASSERT_TRUE(root.has_value()) << root.error().ToString();
  EXPECT_EQ(root->uid, 0u);
}

}  // namespace
}  // namespace imgfs::fs::run
