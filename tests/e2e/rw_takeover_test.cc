// imgfs — end-to-end tests of kept `--rw --driver fuse` mounts (imgfs's own copy-on-write
// filesystem, fs/writable/writable_fs.h, its state journaled for the next daemon:
// fs/writable/writable_journal.h): readers (stat, find, whole files checked byte for byte,
// descriptors held open) and a writer (create, append, rename, unlink, each fsync'ed) work on
// the mount while its daemon is SIGKILLed 20 times at random moments and replaced once by
// `imgfs mount --restart`. No syscall fails, every fsync'ed byte is there, a file held open
// across the kills (written through, and one unlinked while open) keeps its data, and once
// the kernel has dropped its caches the journal holds no lookups nor handles it forgot.
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fs/writable/writable_journal.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/mount_support.h"
#include "tests/support/run_support.h"
#include "tests/support/takeover_readers.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

constexpr int kKills = 20;
constexpr int kRestartAt = 10;  // the takeover that is an `imgfs mount --restart`
constexpr int kThreads = 5;     // 4 readers (slots 0-3) and the writer (slot 4)

// The content the writer gives file `name`, part `part` (0: created, 1: appended).
std::string ContentOf(const std::string& name, int part) {
  std::string out;
  while (out.size() < 6000)
    out += name + "/" + std::to_string(part) + ":" + std::to_string(out.size()) + "\n";
  return out;
}

// pwrite of all of `data` at `offset`, then fsync.
bool WriteSynced(int fd, const std::string& data, off_t offset, std::string* error) {
  ssize_t n = pwrite(fd, data.data(), data.size(), offset);
  if (n != static_cast<ssize_t>(data.size())) {
    *error = std::string("pwrite: ") + (n < 0 ? strerror(errno) : "short");
    return false;
  }
  if (fsync(fd) != 0) {
    *error = std::string("fsync: ") + strerror(errno);
    return false;
  }
  return true;
}

class RwTakeoverTest : public ImgfsMountTest {
 protected:
  // The mount's journal (its temporary upper's work directory), "" if none.
  std::string JournalPath() {
    glob_t g{};
    std::string out;
    const std::string pattern = Root() + "/containers/mount-*/.upper.imgfs-work/journal";
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0 && g.gl_pathc == 1) out = g.gl_pathv[0];
    globfree(&g);
    return out;
  }
};

TEST_F(RwTakeoverTest, AFuseDriverWritableMountNeverSeesAKilledDaemon) {
  MountOrDie({"--rw", "--driver", "fuse", "oci:" + FixturePath("tiny-gzip:latest")});
  const auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  ASSERT_GT(listing.size(), 50u);
  const pid_t keeper = DaemonPid();
  ASSERT_GT(keeper, 0);
  pid_t daemon = 0;
  ASSERT_TRUE(WaitFor([&] { return (daemon = ServingDaemon(keeper)) != 0; }, 60));
  ASSERT_NE(daemon, keeper);
  const std::string journal = JournalPath();
  ASSERT_FALSE(journal.empty()) << "no journal in the temporary upper's work directory";
  const std::string container = std::filesystem::path(journal).parent_path().parent_path().string();

  const auto files = FilesOf(listing);
  const std::string w = Mnt() + "/w";
  ASSERT_EQ(mkdir(w.c_str(), 0755), 0) << strerror(errno);

  // Held across every takeover: an image file read, a file written through, and a file
  // unlinked while open.
  int held_read = open((Mnt() + "/data/random.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held_read, 0) << strerror(errno);
  const std::string held_sha = listing.at("/data/random.bin").content;
  int held_write = open((w + "/held").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(held_write, 0) << strerror(errno);
  std::string held_content;
  int orphan = open((w + "/orphan").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(orphan, 0) << strerror(errno);
  const std::string orphan_content = ContentOf("orphan", 0);
  std::string error;
  ASSERT_TRUE(WriteSynced(orphan, orphan_content, 0, &error)) << error;
  ASSERT_EQ(unlink((w + "/orphan").c_str()), 0) << strerror(errno);
  // And one with another name that stays.
  int linked_orphan =
      open((w + "/linked-orphan").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(linked_orphan, 0) << strerror(errno);
  const std::string linked_content = ContentOf("linked-orphan", 0);
  ASSERT_TRUE(WriteSynced(linked_orphan, linked_content, 0, &error)) << error;
  ASSERT_EQ(link((w + "/linked-orphan").c_str(), (w + "/linked").c_str()), 0) << strerror(errno);
  ASSERT_EQ(unlink((w + "/linked-orphan").c_str()), 0) << strerror(errno);

  ReaderLog log(kThreads);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] { ReadFilesLoop(Mnt(), files, t, stop, &log); });
  }
  threads.emplace_back([&] { StatLoop(Mnt(), listing, 2, stop, &log); });
  // find, but not below the writer's directory (it changes)
  threads.emplace_back([&] { WalkLoop(Mnt(), w, 3, stop, &log); });
  // The writer: a file created and written, appended to, renamed into place, each step
  // fsync'ed; every third round an earlier file is unlinked. `kept` is what must be there.
  std::map<std::string, std::string> kept;
  std::vector<std::string> removed;
  threads.emplace_back([&] {
    for (uint64_t i = 0; !stop && i < 20000; ++i) {
      const std::string name = "file-" + std::to_string(i);
      const std::string tmp = w + "/tmp-" + std::to_string(i);
      const std::string a = ContentOf(name, 0);
      const std::string b = ContentOf(name, 1);
      std::string err;
      int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) {
        log.Fail("create " + tmp + ": " + strerror(errno));
        continue;
      }
      bool ok = WriteSynced(fd, a, 0, &err);
      close(fd);
      if (ok) {
        fd = open(tmp.c_str(), O_WRONLY | O_CLOEXEC);
        ok = fd >= 0 && WriteSynced(fd, b, static_cast<off_t>(a.size()), &err);
        if (fd < 0) err = std::string("open: ") + strerror(errno);
        if (fd >= 0) close(fd);
      }
      if (ok && rename(tmp.c_str(), (w + "/" + name).c_str()) != 0) {
        ok = false;
        err = std::string("rename: ") + strerror(errno);
      }
      if (!ok) {
        log.Fail(name + ": " + err);
        continue;
      }
      kept[name] = a + b;
      if (i % 3 == 2) {
        const std::string old = "file-" + std::to_string(i - 2);
        if (unlink((w + "/" + old).c_str()) != 0) {
          log.Fail("unlink " + old + ": " + strerror(errno));
        } else {
          kept.erase(old);
          removed.push_back(old);
        }
      }
      log.Done(4);
    }
  });

  std::mt19937 rng(std::random_device{}());
  int takeovers = 0;
  for (int n = 0; n <= kKills && log.FailureCount() == 0; ++n) {
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
    const std::vector<uint64_t> before = log.Snapshot();
    if (n == kRestartAt) {
      ProcessResult r = Imgfs({"mount", "--restart", Mnt()}, 300);
      EXPECT_EQ(r.exit_code, 0) << "restart: " << r.err;
      EXPECT_FALSE(ProcessRuns(daemon)) << "the old daemon still runs after the restart";
    } else {
      ASSERT_EQ(kill(daemon, SIGKILL), 0) << "kill " << n;
    }
    ++takeovers;
    pid_t next = 0;
    const bool served = WaitFor(
        [&] {
          next = ServingDaemon(keeper);
          return next != 0 && next != daemon;
        },
        120);
    const bool moved_on = served && WaitFor([&] { return log.AllMovedOn(before); }, 120);
    if (!moved_on) {
      kill(keeper, SIGKILL);  // frees the threads: the connection ends
      stop = true;
      for (std::thread& t : threads) t.join();
      FAIL() << (served ? "a thread is stuck" : "no daemon took the mount over")
             << " after takeover " << n;
    }
    daemon = next;
    // The held descriptors, through the new daemon.
    std::string err;
    EXPECT_EQ(registry::Digest::Sha256Of(ReadFromDaemon(held_read, &err)).hex(), held_sha);
    EXPECT_EQ(err, "") << "held image file after takeover " << n;
    const std::string block = ContentOf("held-" + std::to_string(n), 0);
    EXPECT_TRUE(WriteSynced(held_write, block, static_cast<off_t>(held_content.size()), &err))
        << "held written file after takeover " << n << ": " << err;
    held_content += block;
    EXPECT_EQ(ReadFromDaemon(held_write, &err), held_content) << "after takeover " << n;
    EXPECT_EQ(err, "");
    EXPECT_EQ(ReadFromDaemon(orphan, &err), orphan_content)
        << "the unlinked open file after takeover " << n << " " << err;
    EXPECT_EQ(ReadFromDaemon(linked_orphan, &err), linked_content)
        << "the unlinked open file with another name after takeover " << n << " " << err;
    struct stat lst {};
    EXPECT_EQ(lstat((w + "/linked").c_str(), &lst), 0) << strerror(errno);
    EXPECT_EQ(lst.st_nlink, 1u) << "its other name, after takeover " << n;
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  const std::vector<std::string> failures = log.Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  EXPECT_EQ(takeovers, kKills + 1);
  size_t wrong = 0;
  std::string first_wrong;  // what the first wrong file holds, to tell how it went wrong
  for (const auto& [name, content] : kept) {
    const std::string got = ReadAll(w + "/" + name);
    if (got == content) continue;
    if (wrong++ == 0) {
      struct stat st {};
      const int rc = lstat((w + "/" + name).c_str(), &st);
      const size_t part = ContentOf(name, 0).size();
      first_wrong = name + ": read " + std::to_string(got.size()) + " bytes, want " +
                    std::to_string(content.size()) + " (lstat " +
                    (rc == 0 ? std::to_string(st.st_size) + " bytes" : strerror(errno)) +
                    "); first part " +
                    (got.compare(0, part, content, 0, part) == 0 ? "right" : "wrong") +
                    ", begins " + got.substr(0, 40);
    }
  }
  size_t still_there = 0;
  for (const std::string& name : removed) {
    struct stat st {};
    if (lstat((w + "/" + name).c_str(), &st) == 0) ++still_there;
  }
  // Every rename the writer saw succeed was done: no temporary name is left.
  size_t temporaries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(w)) {
    if (entry.path().filename().string().rfind("tmp-", 0) == 0) ++temporaries;
  }
  EXPECT_EQ(temporaries, 0u);
  EXPECT_GT(kept.size(), 0u);
  EXPECT_EQ(wrong, 0u) << "of " << kept.size() << " fsync'ed files; " << first_wrong;
  EXPECT_EQ(still_there, 0u) << "of " << removed.size() << " unlinked files";
  std::cout << "rw takeover: " << log.ops() << " operations, " << kept.size() << " files kept and "
            << removed.size() << " unlinked by the writer, across " << kKills
            << " kills and 1 restart\n";

  // Lookup counting: once every descriptor is closed and the kernel dropped its dentries and
  // inodes (FORGET for each), the journal holds no handle and no looked-up id. A request a
  // dead daemon had counted or opened without answering comes again with its number and is
  // answered from the journal, not counted again, so handles are exact. Lookups are exact
  // too but for FORGETs a dead daemon read and did not apply (the kernel sends nothing
  // again for them; docs/SEMANTICS.md): at most those in flight at a kill. Never below the
  // kernel's count: every id the kernel held answered to the end.
  close(held_read);
  close(held_write);
  close(orphan);
  close(linked_orphan);
  const size_t bound = static_cast<size_t>(kThreads + 1) * static_cast<size_t>(takeovers);
  size_t ids = 0;
  size_t handles = 0;
  const bool settled = WaitFor(
      [&] {
        std::ofstream("/proc/sys/vm/drop_caches") << "2\n";
        fs::WritableJournal j;
        if (!j.LoadText(ReadAll(journal)).ok()) return false;
        ids = 0;
        for (const auto& [id, rec] : j.nodes()) ids += rec.lookups > 0 ? 1 : 0;
        handles = j.handles().size();
        return handles == 0 && ids == 0;
      },
      20);
  EXPECT_EQ(handles, 0u) << "handles left open by requests sent again";
  EXPECT_TRUE(settled || ids <= bound) << ids << " ids still looked up";
  std::cout << "after drop_caches: " << ids << " ids looked up (forgets lost at the kills), "
            << handles << " handles open\n";

  EXPECT_TRUE(std::filesystem::exists(container)) << "the temporary upper lives with the mount";
  Umount();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper) && !ProcessRuns(daemon); }, 30));
  EXPECT_FALSE(std::filesystem::exists(container)) << "the temporary upper goes with the mount";
}

// A given --upper keeps what was written across a kill and a restart, and a new mount of the
// same upper starts afresh (its work directory emptied, not taken over).
TEST_F(RwTakeoverTest, AGivenUpperIsKeptAcrossTakeoversAndANewMountStartsAfresh) {
  const std::string upper = Sub("upper");
  MountOrDie(
      {"--rw", "--driver", "fuse", "--upper", upper, "oci:" + FixturePath("tiny-gzip:latest")});
  const pid_t keeper = DaemonPid();
  ASSERT_GT(keeper, 0);
  pid_t daemon = 0;
  ASSERT_TRUE(WaitFor([&] { return (daemon = ServingDaemon(keeper)) != 0; }, 60));
  int fd = open((Mnt() + "/etc/new").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  std::string error;
  ASSERT_TRUE(WriteSynced(fd, "one\n", 0, &error)) << error;
  ASSERT_EQ(kill(daemon, SIGKILL), 0);
  pid_t next = 0;
  ASSERT_TRUE(WaitFor([&] { return (next = ServingDaemon(keeper)) != 0 && next != daemon; }, 120));
  ASSERT_TRUE(WriteSynced(fd, "two\n", 4, &error)) << error;
  ProcessResult r = Imgfs({"mount", "--restart", Mnt()}, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WriteSynced(fd, "three\n", 8, &error)) << error;
  close(fd);
  EXPECT_EQ(ReadAll(Mnt() + "/etc/new"), "one\ntwo\nthree\n");
  EXPECT_EQ(ReadAll(upper + "/etc/new"), "one\ntwo\nthree\n");
  Umount();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 30));
  EXPECT_EQ(ReadAll(upper + "/etc/new"), "one\ntwo\nthree\n") << "a given upper is kept";
  EXPECT_FALSE(std::filesystem::exists(Sub(".upper.imgfs-work"))) << "its work directory goes";
  MountOrDie(
      {"--rw", "--driver", "fuse", "--upper", upper, "oci:" + FixturePath("tiny-gzip:latest")});
  EXPECT_EQ(ReadAll(Mnt() + "/etc/new"), "one\ntwo\nthree\n");
}

}  // namespace
}  // namespace imgfs::testing
