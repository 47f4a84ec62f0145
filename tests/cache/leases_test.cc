// imgfs — tests for cache/leases.h: live and stale leases.
#include "cache/leases.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using nlohmann::json;
using testing::CountEntries;
using testing::MakeImage;
using testing::TempDir;

class LeasesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    auto s = Store::Open(dir_.path() + "/store");
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
    image_ = MakeImage(*store_, {"leased layer"});
  }
  std::string MountsDir() { return store_->Subdir("mounts"); }

  // A child process that sleeps until killed.
  pid_t SpawnSleeper() {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::pause();
      _exit(0);
    }
    return pid;
  }
  void Reap(pid_t pid) {
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  testing::SyntheticImage image_;
};

TEST_F(LeasesTest, AcquireWritesLeaseAndReleaseRemovesIt) {
  auto lease = Lease::Acquire(*store_, image_.manifest.digest, "/mnt/a", "docker.io/library/a:1");
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();
  EXPECT_TRUE(lease->held());
  std::string path = MountsDir() + "/" + lease->info().id + ".json";
  auto text = ReadFile(path);
  ASSERT_TRUE(text.has_value());
  json j = json::parse(*text);
  EXPECT_EQ(j["pid"], ::getpid());
  EXPECT_EQ(j["mountpoint"], "/mnt/a");
  EXPECT_EQ(j["manifest"], image_.manifest.digest.String());
  EXPECT_EQ(j["reference"], "docker.io/library/a:1");
  EXPECT_EQ(j["pid_start"], ProcessStartTime(::getpid()));
  EXPECT_FALSE(j["started"].get<std::string>().empty());

  auto live = ListLiveLeases(*store_);
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].id, lease->info().id);
  EXPECT_EQ((*live)[0].manifest, image_.manifest.digest);

  ASSERT_TRUE(lease->Release().ok());
  EXPECT_FALSE(lease->held());
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(ListLiveLeases(*store_)->empty());
  EXPECT_TRUE(lease->Release().ok());  // idempotent
}

TEST_F(LeasesTest, DestructorReleasesAndMoveTransfers) {
  {
    auto lease = Lease::Acquire(*store_, image_.manifest.digest, "/mnt/b", "");
    ASSERT_TRUE(lease.has_value());
    Lease moved = std::move(*lease);
    EXPECT_FALSE(lease->held());
    EXPECT_TRUE(moved.held());
    EXPECT_EQ(CountEntries(MountsDir()), 1u);
  }
  EXPECT_EQ(CountEntries(MountsDir()), 0u);
  {
    auto lease = Lease::Acquire(*store_, image_.manifest.digest, "/mnt/c", "");
    ASSERT_TRUE(lease.has_value());
    lease->Detach();  // outlives the object
  }
  EXPECT_EQ(ListLiveLeases(*store_)->size(), 1u);
}

TEST_F(LeasesTest, AcquireFailsForMissingManifest) {
  auto lease = Lease::Acquire(*store_, registry::Digest::Sha256Of("not stored"), "/mnt/x", "");
  ASSERT_FALSE(lease.has_value());
  EXPECT_EQ(lease.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(CountEntries(MountsDir()), 0u);
}

TEST_F(LeasesTest, LeaseOfDeadProcessIsStaleAndCleared) {
  pid_t child = SpawnSleeper();
  ASSERT_GT(child, 0);
  auto lease = Lease::AcquireFor(*store_, child, image_.manifest.digest, "/mnt/dead", "");
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();
  lease->Detach();
  EXPECT_EQ(ListLiveLeases(*store_)->size(), 1u);
  ::kill(child, SIGKILL);
  // Not yet reaped: a zombie is not alive either.
  for (int i = 0; i < 100 && ProcessIsAlive(child, ""); ++i) ::usleep(10 * 1000);
  EXPECT_FALSE(ProcessIsAlive(child, ""));
  Reap(child);
  int stale = 0;
  auto lock = store_->LockIndex();
  ASSERT_TRUE(lock.has_value());
  auto live = ListLiveLeasesLocked(*store_, &stale);
  lock->Unlock();
  ASSERT_TRUE(live.has_value());
  EXPECT_TRUE(live->empty());
  EXPECT_EQ(stale, 1);
  EXPECT_EQ(CountEntries(MountsDir()), 0u);
}

TEST_F(LeasesTest, ReusedPidIsDetectedByStartTime) {
  auto lease = Lease::Acquire(*store_, image_.manifest.digest, "/mnt/r", "");
  ASSERT_TRUE(lease.has_value());
  lease->Detach();
  std::string path = MountsDir() + "/" + lease->info().id + ".json";
  json j = json::parse(*ReadFile(path));
  j["pid_start"] = "1";  // as if our pid had belonged to an older process
  ASSERT_TRUE(WriteFileAtomic(path, j.dump()).ok());
  EXPECT_FALSE(ProcessIsAlive(::getpid(), "1"));
  EXPECT_TRUE(ProcessIsAlive(::getpid(), ProcessStartTime(::getpid())));
  EXPECT_TRUE(ListLiveLeases(*store_)->empty());
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(LeasesTest, GarbageInMountsIsCleared) {
  ASSERT_TRUE(WriteFileAtomic(MountsDir() + "/bad.json", "{not json").ok());
  ASSERT_TRUE(WriteFileAtomic(MountsDir() + "/x.json.tmp-abcdef", "{").ok());
  auto lease = Lease::Acquire(*store_, image_.manifest.digest, "/mnt/ok", "");
  ASSERT_TRUE(lease.has_value());
  auto live = ListLiveLeases(*store_);
  ASSERT_TRUE(live.has_value());
  EXPECT_EQ(live->size(), 1u);
  EXPECT_EQ(CountEntries(MountsDir()), 1u);
  ASSERT_TRUE(RemoveLease(*store_, lease->info().id).ok());
  EXPECT_EQ(CountEntries(MountsDir()), 0u);
  EXPECT_EQ(RemoveLease(*store_, "../x").code(), StatusCode::kInvalidArgument);
}

TEST_F(LeasesTest, AcquireForDeadPidIsRefused) {
  pid_t child = SpawnSleeper();
  ASSERT_GT(child, 0);
  Reap(child);
  auto lease = Lease::AcquireFor(*store_, child, image_.manifest.digest, "/mnt/x", "");
  ASSERT_FALSE(lease.has_value());
  EXPECT_EQ(lease.error().code(), StatusCode::kInvalidArgument);
}

// Issue 9, finding 23: a store shared across pid namespaces.
TEST_F(LeasesTest, LeaseFromAnotherPidNamespaceIsKept) {
  // The lease of a mount in another pid namespace: its pid (here one no process has in ours)
  // says nothing about that mount. Before: removed as stale, so GC freed a live mount's blobs.
  auto own = Lease::Acquire(*store_, image_.manifest.digest, "/mnt/own", "");
  ASSERT_TRUE(own.has_value()) << own.error().ToString();
  EXPECT_EQ(own->info().pid_ns, PidNamespaceOf(0));
  ASSERT_FALSE(PidNamespaceOf(0).empty());
  json j = json::parse(*ReadFile(MountsDir() + "/" + own->info().id + ".json"));
  EXPECT_EQ(j["pid_ns"], PidNamespaceOf(0));
  j["id"] = "foreign-1";
  j["pid"] = 4000000;  // above pid_max's ceiling (2^22): no such process here
  j["pid_ns"] = "pid:[1]";
  ASSERT_TRUE(WriteFileAtomic(MountsDir() + "/foreign-1.json", j.dump()).ok());
  // The same lease in our own namespace is stale.
  j["id"] = "local-dead";
  j["pid_ns"] = PidNamespaceOf(0);
  ASSERT_TRUE(WriteFileAtomic(MountsDir() + "/local-dead.json", j.dump()).ok());

  int stale = 0;
  auto live = ListLiveLeasesLocked(*store_, &stale);
  ASSERT_TRUE(live.has_value()) << live.error().ToString();
  std::vector<std::string> ids;
  for (const LeaseInfo& l : *live) ids.push_back(l.id);
  EXPECT_THAT(ids, ::testing::UnorderedElementsAre(own->info().id, "foreign-1"));
  EXPECT_EQ(stale, 1);
  EXPECT_TRUE(std::filesystem::exists(MountsDir() + "/foreign-1.json"));
  ASSERT_TRUE(RemoveLease(*store_, "foreign-1").ok());  // the way out, by id
}

// Issue 9, finding 9: a mountpoint that is not UTF-8 (Latin-1 names are valid on Linux).
TEST_F(LeasesTest, NonUtf8MountpointRoundTripsWithoutThrowing) {
  const std::string latin1 = "/mnt/caf\xe9";
  auto lease = Lease::Acquire(*store_, image_.manifest.digest, latin1, "", "/up/\xff");
  ASSERT_TRUE(lease.has_value()) << lease.error().ToString();
  auto live = ListLiveLeases(*store_);
  ASSERT_TRUE(live.has_value());
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].mountpoint, latin1);
  EXPECT_EQ((*live)[0].upper, "/up/\xff");
  // The file stays valid JSON for other readers (U+FFFD in the display field).
  json j = json::parse(*ReadFile(MountsDir() + "/" + lease->info().id + ".json"));
  EXPECT_EQ(j["mountpoint"], "/mnt/caf\xef\xbf\xbd");
}

}  // namespace
}  // namespace imgfs::cache
