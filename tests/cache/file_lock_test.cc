// imgfs — tests for cache/file_lock.h: flock semantics between descriptors and processes.
#include "cache/file_lock.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using testing::TempDir;
using Mode = FileLock::Mode;

bool CanTake(const std::string& path, Mode mode) {
  auto l = FileLock::TryAcquire(path, mode);
  EXPECT_TRUE(l.has_value()) << l.error().ToString();
  return l.has_value() && l->has_value();
}

TEST(FileLockTest, ExclusiveExcludesEveryoneUntilReleased) {
  TempDir dir;
  std::string path = dir.path() + "/x.lock";
  auto held = FileLock::Acquire(path, Mode::kExclusive);
  ASSERT_TRUE(held.has_value()) << held.error().ToString();
  EXPECT_TRUE(held->held());
  EXPECT_FALSE(CanTake(path, Mode::kExclusive));
  EXPECT_FALSE(CanTake(path, Mode::kShared));
  held->Unlock();
  EXPECT_FALSE(held->held());
  EXPECT_TRUE(CanTake(path, Mode::kExclusive));
}

TEST(FileLockTest, SharedLocksCoexistAndBlockExclusive) {
  TempDir dir;
  std::string path = dir.path() + "/s.lock";
  auto a = FileLock::Acquire(path, Mode::kShared);
  auto b = FileLock::Acquire(path, Mode::kShared);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_FALSE(CanTake(path, Mode::kExclusive));
  a->Unlock();
  EXPECT_FALSE(CanTake(path, Mode::kExclusive));
  {
    FileLock moved = std::move(*b);  // ownership moves with the object
    EXPECT_TRUE(moved.held());
    EXPECT_FALSE(CanTake(path, Mode::kExclusive));
  }
  EXPECT_TRUE(CanTake(path, Mode::kExclusive));
}

TEST(FileLockTest, AcquireBlocksUntilAnotherProcessReleases) {
  TempDir dir;
  std::string path = dir.path() + "/p.lock";
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto l = FileLock::Acquire(path, Mode::kExclusive);
    char c = l.has_value() ? 'y' : 'n';
    (void)!::write(pipefd[1], &c, 1);
    ::usleep(300 * 1000);  // hold it a while
    _exit(0);              // the lock dies with the process
  }
  ::close(pipefd[1]);
  char c = 0;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  ::close(pipefd[0]);
  ASSERT_EQ(c, 'y');
  EXPECT_FALSE(CanTake(path, Mode::kShared));
  auto l = FileLock::Acquire(path, Mode::kShared);  // waits for the child to exit
  ASSERT_TRUE(l.has_value());
  // Granted once the holder's process released it by exiting (it was refused above).
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(FileLockTest, ThreadsAreExcludedToo) {
  TempDir dir;
  std::string path = dir.path() + "/t.lock";
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto l = FileLock::Acquire(path, Mode::kExclusive);
        ASSERT_TRUE(l.has_value());
        int now = ++inside;
        int prev = max_inside.load();
        while (now > prev && !max_inside.compare_exchange_weak(prev, now)) {
        }
        std::this_thread::yield();
        --inside;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(max_inside.load(), 1);
}

TEST(FileLockTest, UnopenablePathIsAnError) {
  auto l = FileLock::Acquire("/nonexistent-dir-imgfs/x.lock", Mode::kShared);
  ASSERT_FALSE(l.has_value());
  EXPECT_NE(l.error().message().find("/nonexistent-dir-imgfs/x.lock"), std::string::npos);
  auto t = FileLock::TryAcquire("/nonexistent-dir-imgfs/x.lock", Mode::kShared);
  EXPECT_FALSE(t.has_value());
}

}  // namespace
}  // namespace imgfs::cache
