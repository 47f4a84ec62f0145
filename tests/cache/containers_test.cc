// imgfs — tests for cache/containers.h: names, records, liveness, listing, removal.
#include "cache/containers.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/leases.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using nlohmann::json;
using testing::TempDir;

registry::Digest DigestOf(std::string_view text) { return registry::Digest::Sha256Of(text); }

class ContainersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto s = Store::Open(dir_.path() + "/store");
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }

  ContainerInfo Info(const std::string& name) {
    ContainerInfo info;
    info.name = name;
    info.image = DigestOf("manifest");
    info.image_id = DigestOf("config");
    info.reference = "docker.io/library/debian:12";
    info.command = {"sh", "-c", "echo x > /x"};
    return info;
  }

  // A child process that exits at once (its pid is then stale) or sleeps until killed.
  pid_t Spawn(bool sleep) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (sleep) ::pause();
      _exit(0);
    }
    return pid;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST(ContainerNames, DockerRule) {
  for (const char* good : {"t1", "a", "my_container.1-x", "0abc", "A-B"}) {
    EXPECT_TRUE(IsValidContainerName(good)) << good;
  }
  for (const char* bad : {"", "_x", ".x", "-x", "a/b", "a b", "..", "a:b", "é"}) {
    EXPECT_FALSE(IsValidContainerName(bad)) << bad;
  }
  EXPECT_TRUE(IsValidContainerName(std::string(128, 'a')));
  EXPECT_FALSE(IsValidContainerName(std::string(129, 'a')));
}

TEST_F(ContainersTest, CreateWritesTheRecordAndTheUpper) {
  Result<ContainerInfo> c = CreateContainer(*store_, Info("t1"));
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->id.size(), 64u);
  EXPECT_EQ(c->id.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_TRUE(c->running);
  EXPECT_EQ(c->pid, ::getpid());
  EXPECT_TRUE(std::filesystem::is_directory(ContainerUpperDir(*store_, "t1")));
  EXPECT_EQ(ContainerDir(*store_, "t1"), store_->root() + "/containers/t1");

  // The documented fields, with "image" the manifest digest exactly (GC and rm pin it).
  Result<std::string> text = ReadFile(ContainerDir(*store_, "t1") + "/container.json");
  ASSERT_TRUE(text.has_value());
  json j = json::parse(*text);
  EXPECT_EQ(j["name"], "t1");
  EXPECT_EQ(j["id"], c->id);
  EXPECT_EQ(j["image"], DigestOf("manifest").String());
  EXPECT_EQ(j["image_id"], DigestOf("config").String());
  EXPECT_EQ(j["reference"], "docker.io/library/debian:12");
  EXPECT_EQ(j["command"], json({"sh", "-c", "echo x > /x"}));
  EXPECT_EQ(j["status"], "running");
  EXPECT_EQ(j["pid"], ::getpid());
  EXPECT_FALSE(j["pid_start"].get<std::string>().empty());
  EXPECT_FALSE(j["created"].get<std::string>().empty());

  Result<ContainerInfo> read = ReadContainer(*store_, "t1");
  ASSERT_TRUE(read.has_value()) << read.error().ToString();
  EXPECT_EQ(read->id, c->id);
  EXPECT_EQ(read->image, c->image);
  EXPECT_EQ(read->command, c->command);
  EXPECT_TRUE(read->running);
}

TEST_F(ContainersTest, NameInUseIsAConflict) {
  Result<ContainerInfo> first = CreateContainer(*store_, Info("t1"));
  ASSERT_TRUE(first.has_value());
  Result<ContainerInfo> second = CreateContainer(*store_, Info("t1"));
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(second.error().message().find("\"/t1\" is already in use by container \"" + first->id),
            std::string::npos)
      << second.error().message();
  Result<ContainerInfo> bad = CreateContainer(*store_, Info("no/slash"));
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ContainersTest, ConcurrentCreatesOfOneNameHaveOneWinner) {
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (CreateContainer(*store_, Info("race")).has_value()) ++wins;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
}

TEST_F(ContainersTest, GeneratedNames) {
  Result<ContainerInfo> a = CreateContainer(*store_, Info(""));
  Result<ContainerInfo> b = CreateContainer(*store_, Info(""));
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_TRUE(IsValidContainerName(a->name)) << a->name;
  EXPECT_NE(a->name, b->name);
}

TEST_F(ContainersTest, ExitedAndDeadRunsReadAsExited) {
  ASSERT_TRUE(CreateContainer(*store_, Info("done")).has_value());
  ASSERT_TRUE(MarkContainerExited(*store_, "done", 3).ok());
  Result<ContainerInfo> done = ReadContainer(*store_, "done");
  ASSERT_TRUE(done.has_value());
  EXPECT_FALSE(done->running);
  EXPECT_EQ(done->exit_code, 3);
  EXPECT_FALSE(done->finished.empty());
  EXPECT_EQ(done->pid, 0);

  // A record left "running" by a process that is gone: exited, killed.
  Result<ContainerInfo> dead = CreateContainer(*store_, Info("dead"));
  ASSERT_TRUE(dead.has_value());
  pid_t pid = Spawn(false);
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  dead->pid = pid;
  dead->pid_start = "1";
  ASSERT_TRUE(WriteContainer(*store_, *dead).ok());
  Result<ContainerInfo> read = ReadContainer(*store_, "dead");
  ASSERT_TRUE(read.has_value());
  EXPECT_FALSE(read->running);
  EXPECT_EQ(read->exit_code, kExitStatusKilled);
}

TEST_F(ContainersTest, ListFindAndSkipDebris) {
  ASSERT_TRUE(CreateContainer(*store_, Info("a1")).has_value());
  Result<ContainerInfo> b = CreateContainer(*store_, Info("b2"));
  ASSERT_TRUE(b.has_value());
  // A container being created (no record yet) and a half-removed one are not listed.
  ASSERT_TRUE(MakeDirs(store_->Subdir("containers") + "/creating").ok());
  ASSERT_TRUE(MakeDirs(store_->Subdir("containers") + "/.rm-old-1234/upper").ok());
  // A corrupt record is skipped, not fatal.
  ASSERT_TRUE(MakeDirs(store_->Subdir("containers") + "/broken").ok());
  ASSERT_TRUE(WriteFileAtomic(store_->Subdir("containers") + "/broken/container.json", "{").ok());

  Result<std::vector<ContainerInfo>> all = ListContainers(*store_);
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  std::vector<std::string> names;
  for (const auto& c : *all) names.push_back(c.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a1", "b2"}));

  Result<ContainerInfo> by_prefix = FindContainer(*store_, b->id.substr(0, 12));
  ASSERT_TRUE(by_prefix.has_value()) << by_prefix.error().ToString();
  EXPECT_EQ(by_prefix->name, "b2");
  Result<ContainerInfo> missing = FindContainer(*store_, "nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.error().message(), "No such container: nope");
  Result<ContainerInfo> corrupt = ReadContainer(*store_, "broken");
  ASSERT_FALSE(corrupt.has_value());
  EXPECT_EQ(corrupt.error().code(), StatusCode::kCorrupt);
}

TEST_F(ContainersTest, RemoveRefusesRunningUnlessForced) {
  Result<ContainerInfo> c = CreateContainer(*store_, Info("live"));
  ASSERT_TRUE(c.has_value());
  pid_t sleeper = Spawn(true);
  c->pid = sleeper;
  c->pid_start = ProcessStartTime(sleeper);
  ASSERT_TRUE(WriteContainer(*store_, *c).ok());
  ASSERT_TRUE(WriteFileAtomic(ContainerUpperDir(*store_, "live") + "/file", "data").ok());

  Result<ContainerInfo> refused = RemoveContainer(*store_, "live", false);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("cannot remove a running container"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(ContainerDir(*store_, "live")));

  // Forced: the owning process is killed (and reaped here, as its parent would).
  std::thread reaper([&] { ::waitpid(sleeper, nullptr, 0); });
  Result<ContainerInfo> removed = RemoveContainer(*store_, "live", true);
  reaper.join();
  ASSERT_TRUE(removed.has_value()) << removed.error().ToString();
  EXPECT_FALSE(std::filesystem::exists(ContainerDir(*store_, "live")));
  // Nothing left behind, hidden or not.
  EXPECT_TRUE(std::filesystem::is_empty(store_->Subdir("containers")));
  Result<ContainerInfo> again = RemoveContainer(*store_, "live", false);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kNotFound);
}

TEST_F(ContainersTest, AbandonedAutoRemoveContainersAreCleanedUp) {
  ContainerInfo keep = Info("kept");
  ASSERT_TRUE(CreateContainer(*store_, keep).has_value());
  ASSERT_TRUE(MarkContainerExited(*store_, "kept", 0).ok());
  ContainerInfo temp = Info("");
  temp.auto_remove = true;
  Result<ContainerInfo> live = CreateContainer(*store_, temp);  // running: our own pid
  ASSERT_TRUE(live.has_value());
  Result<ContainerInfo> abandoned = CreateContainer(*store_, temp);
  ASSERT_TRUE(abandoned.has_value());
  pid_t pid = Spawn(false);
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  abandoned->pid = pid;
  ASSERT_TRUE(WriteContainer(*store_, *abandoned).ok());

  Result<int> removed = RemoveAbandonedContainers(*store_);
  ASSERT_TRUE(removed.has_value()) << removed.error().ToString();
  EXPECT_EQ(*removed, 1);
  EXPECT_FALSE(std::filesystem::exists(ContainerDir(*store_, abandoned->name)));
  EXPECT_TRUE(std::filesystem::exists(ContainerDir(*store_, live->name)));
  EXPECT_TRUE(std::filesystem::exists(ContainerDir(*store_, "kept")));
}

}  // namespace
}  // namespace imgfs::cache
