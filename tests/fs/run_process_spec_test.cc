// imgfs — unit tests of fs/run/process_spec: docker's argv/env/workdir rules, -v parsing,
// run options, and the UTF-8 replacement for records (security review finding 9).
#include <gtest/gtest.h>

#include "fs/run/process_spec.h"

namespace imgfs::fs::run {
namespace {

TEST(BuildProcessSpecTest, EntrypointCmdEnvAndWorkdir) {
  registry::ImageConfig config;
  config.entrypoint = {"/bin/sh", "-c"};
  config.cmd = {"echo hi"};
  config.env = {"A=1", "PATH=/bin"};
  config.working_dir = "srv";
  config.user = "app";
  RunRequest req;
  req.env_args = {"A=2", "B=3"};
  Result<ProcessSpec> spec = BuildProcessSpec(req, config);
  ASSERT_TRUE(spec.has_value()) << spec.error().ToString();
  EXPECT_EQ(spec->argv, (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
  EXPECT_EQ(spec->env, (std::vector<std::string>{"A=2", "PATH=/bin", "B=3"}));
  EXPECT_EQ(spec->workdir, "/srv");
  EXPECT_EQ(spec->user, "app");
  req.entrypoint = "";
  req.command = {"ls"};
  req.user = "0";
  spec = BuildProcessSpec(req, config);
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->argv, std::vector<std::string>{"ls"});
  EXPECT_EQ(spec->user, "0");
  req.workdir = "relative";
  EXPECT_FALSE(BuildProcessSpec(req, config).has_value());
  EXPECT_FALSE(BuildProcessSpec(RunRequest{}, registry::ImageConfig{}).has_value());
}

TEST(ParseVolumeTest, DockerSyntax) {
  Result<VolumeSpec> v = ParseVolume("/host:/ctr:ro");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->host, "/host");
  EXPECT_EQ(v->target, "/ctr");
  EXPECT_TRUE(v->read_only);
  for (const char* bad : {"/host", "rel:/ctr", "/host:rel", "/h:/c:xx", "/a:/b:ro:z"}) {
    EXPECT_FALSE(ParseVolume(bad).has_value()) << bad;
  }
}

TEST(RunOptionsTest, NetworkAndSecurityOpt) {
  EXPECT_EQ(*ParseNetworkMode("none"), NetworkMode::kNone);
  EXPECT_EQ(*ParseNetworkMode("host"), NetworkMode::kHost);
  EXPECT_FALSE(ParseNetworkMode("bridge").has_value());
  SecurityOptions o;
  EXPECT_FALSE(o.privileged);
  EXPECT_TRUE(o.seccomp);
  EXPECT_FALSE(o.no_new_privileges);
  ASSERT_TRUE(ApplySecurityOpt("no-new-privileges", &o).ok());
  EXPECT_TRUE(o.no_new_privileges);
  ASSERT_TRUE(ApplySecurityOpt("no-new-privileges:false", &o).ok());
  EXPECT_FALSE(o.no_new_privileges);
  ASSERT_TRUE(ApplySecurityOpt("seccomp=unconfined", &o).ok());
  EXPECT_FALSE(o.seccomp);
  EXPECT_FALSE(ApplySecurityOpt("apparmor=unconfined", &o).ok());
}

}  // namespace
}  // namespace imgfs::fs::run
