// imgfs — end-to-end tests of what the kernel may cache, counted in FUSE requests
// (`imgfs stats --format json`, "fuse"): a warm `tar` or `cat` of a read-only mount sends no
// OPEN, RELEASE, OPENDIR or RELEASEDIR once the kernel opens files and directories by itself
// (FUSE_CAP_NO_OPEN_SUPPORT / FUSE_CAP_NO_OPENDIR_SUPPORT; where the kernel does not offer
// them, each open is sent and the counts say so); and on a writable mount, directories that a
// change copied up keep consistent attributes, so `tar` of the tree sees nothing change under it,
// write-only handles send one WRITE per write(2), and listings carry their names' entries.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/mountinfo.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"

namespace imgfs::testing {
namespace {

using nlohmann::json;

const std::string kTiny = "oci:" + FixturePath("tiny-gzip:latest");

// The kernel's counts of drop_caches writes (/proc/vmstat drop_pagecache and drop_slab).
std::string DropCachesCount() {
  std::ifstream in("/proc/vmstat");
  std::string line;
  std::string out;
  while (std::getline(in, line)) {
    if (line.rfind("drop_", 0) == 0) out += line + ";";
  }
  return out;
}

class KernelCacheTest : public ImgfsMountTest {
 protected:
  // The "fuse" object of the mount's stats (null on failure, with a test failure).
  json FuseStats() {
    ProcessResult r = Imgfs({"stats", Mnt(), "--format", "json"});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    if (j.is_discarded() || !j.contains("fuse")) {
      ADD_FAILURE() << "no \"fuse\" in stats: " << r.out;
      return json();
    }
    return j["fuse"];
  }

  static uint64_t Requests(const json& fuse, const std::string& op) {
    if (!fuse.is_object() || !fuse.contains("requests")) return 0;
    return fuse["requests"].value(op, uint64_t{0});
  }

  // `tar cf OUT .` of the mount (to a file: GNU tar reads nothing when writing to /dev/null).
  ProcessResult Tar(const std::string& out) {
    return RunProcess({"tar", "-C", Mnt(), "-cf", out, "."});
  }

  void MountRw(const std::string& upper = "upper") {
    ProcessResult r =
        Imgfs({"mount", "--rw", "--driver", "fuse", "--upper", Sub(upper), kTiny, Mnt()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_TRUE(IsMounted(Mnt()));
  }
};

TEST_F(KernelCacheTest, WarmTarAndCatOfReadOnlyMountSendNoOpenOrRelease) {
  MountOrDie({kTiny});
  ProcessResult cold = Tar(Sub("cold.tar"));
  ASSERT_EQ(cold.exit_code, 0) << cold.Describe();
  const std::string cat_all = "cd " + Mnt() + " && find . -type f -exec cat {} + | wc -c";
  ProcessResult cold_cat = RunProcess({"sh", "-c", cat_all});
  ASSERT_EQ(cold_cat.exit_code, 0) << cold_cat.Describe();

  json before = FuseStats();
  ProcessResult warm = Tar(Sub("warm.tar"));
  ASSERT_EQ(warm.exit_code, 0) << warm.Describe();
  ProcessResult warm_cat = RunProcess({"sh", "-c", cat_all});
  ASSERT_EQ(warm_cat.exit_code, 0) << warm_cat.Describe();
  json after = FuseStats();

  // Reads work with the kernel's own opens (no handle): same bytes, warm and cold.
  std::string cold_bytes = ReadAll(Sub("cold.tar"));
  EXPECT_GT(cold_bytes.size(), 1982256u);  // bin/busybox and the rest
  EXPECT_TRUE(cold_bytes == ReadAll(Sub("warm.tar")));
  EXPECT_EQ(warm_cat.out, cold_cat.out);
  EXPECT_GT(after.value("largest_read_bytes", uint64_t{0}), 0u);

  auto delta = [&](const std::string& op) { return Requests(after, op) - Requests(before, op); };
  std::string counts = "before: " + before.dump() + "\nafter: " + after.dump();
  if (after.value("no_open", false)) {
    EXPECT_EQ(delta("open"), 0u) << counts;
    EXPECT_EQ(delta("release"), 0u) << counts;
    // The first OPEN was answered "not needed"; none came after it.
    EXPECT_EQ(Requests(after, "open"), 1u) << counts;
    EXPECT_EQ(Requests(after, "release"), 0u) << counts;
  } else {
    EXPECT_GT(delta("open"), 0u) << counts;  // every open of a file is sent
  }
  if (after.value("no_opendir", false)) {
    EXPECT_EQ(delta("opendir"), 0u) << counts;
    EXPECT_EQ(delta("releasedir"), 0u) << counts;
    EXPECT_EQ(Requests(after, "opendir"), 1u) << counts;
    EXPECT_EQ(Requests(after, "releasedir"), 0u) << counts;
  } else {
    EXPECT_GT(delta("opendir"), 0u) << counts;
  }
  RecordProperty("warm_requests", counts);
}

// A sequential read of a large file comes in requests larger than the kernel's default
// read-ahead of 128 KiB: INIT raised the mount's bdi read_ahead_kb (fs/fuse/read_ahead.h).
TEST_F(KernelCacheTest, LargeFileIsReadInRequestsLargerThanTheDefaultReadAhead) {
  std::string big;
  uint32_t x = 12345;
  while (big.size() < (8u << 20)) {
    x = x * 1103515245u + 12345u;
    big.push_back(static_cast<char>(x >> 24));
  }
  ImageBuilder builder(Sub("layout"));
  ASSERT_TRUE(builder.Add(SimpleImage({{"big", big}}), "latest").has_value());
  MountOrDie({"oci:" + Sub("layout") + ":latest"});

  std::optional<std::string> dev = MountDeviceOf(ReadAll("/proc/self/mountinfo"), Mnt());
  ASSERT_TRUE(dev.has_value()) << Mnt() << " not in mountinfo";
  EXPECT_EQ(ReadAll("/sys/class/bdi/" + *dev + "/read_ahead_kb"), "1024\n");

  EXPECT_TRUE(ReadAll(Mnt() + "/big") == big);
  json fuse = FuseStats();
  EXPECT_GT(fuse.value("largest_read_bytes", uint64_t{0}), uint64_t{128} << 10) << fuse.dump();
  EXPECT_LE(fuse.value("largest_read_bytes", uint64_t{0}), uint64_t{1} << 20) << fuse.dump();
  EXPECT_LT(Requests(fuse, "read"), 64u) << fuse.dump();  // 8 MiB in 128 KiB requests
}

// A directory copied up by a change below it (usr when usr/share/doc is removed, etc and
// etc/conf.d when a file is written in etc/conf.d/sub) reports the same size and link count
// before and after, and the kernel forgets what it cached of it: a later `tar` of the tree
// sees nothing change while it reads.
TEST_F(KernelCacheTest, CopiedUpDirectoriesKeepTheirAttributesAndTarSeesNoChange) {
  ASSERT_NO_FATAL_FAILURE(MountRw());
  ProcessResult first = Tar(Sub("first.tar"));  // the kernel caches the image's attributes
  ASSERT_EQ(first.exit_code, 0) << first.Describe();

  const std::vector<std::string> dirs = {"usr", "usr/share", "etc", "etc/conf.d"};
  std::vector<struct stat> before(dirs.size());
  for (size_t i = 0; i < dirs.size(); ++i) {
    ASSERT_EQ(stat((Mnt() + "/" + dirs[i]).c_str(), &before[i]), 0) << dirs[i];
  }
  ProcessResult rm = RunProcess({"rm", "-rf", Mnt() + "/usr/share/doc"});
  ASSERT_EQ(rm.exit_code, 0) << rm.Describe();
  ProcessResult write =
      RunProcess({"sh", "-c", "echo new > " + Mnt() + "/etc/conf.d/sub/new.conf"});
  ASSERT_EQ(write.exit_code, 0) << write.Describe();
  for (size_t i = 0; i < dirs.size(); ++i) {
    struct stat st {};
    ASSERT_EQ(stat((Mnt() + "/" + dirs[i]).c_str(), &st), 0) << dirs[i];
    EXPECT_EQ(st.st_size, before[i].st_size) << dirs[i];
    EXPECT_EQ(st.st_nlink, before[i].st_nlink) << dirs[i];
    EXPECT_EQ(st.st_ino, before[i].st_ino) << dirs[i];
  }

  ProcessResult second = Tar(Sub("second.tar"));
  EXPECT_EQ(second.exit_code, 0) << second.Describe();
  EXPECT_EQ(second.err.find("changed as we read it"), std::string::npos) << second.err;
  ProcessResult list = RunProcess({"tar", "-tf", Sub("second.tar")});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  EXPECT_EQ(list.out.find("./usr/share/doc"), std::string::npos);
  EXPECT_NE(list.out.find("./etc/conf.d/sub/new.conf"), std::string::npos);
}

// On the fuse driver a write-only handle writes past the page cache: each write(2) is one
// WRITE (a cached write starting inside a page the kernel does not hold went in two) with no
// security.capability GETXATTR before it, and what it writes is what every other handle,
// mapping and later open of the file reads.
TEST_F(KernelCacheTest, WriteOnlyHandlesSendOneWritePerWriteAndStayCoherent) {
  ASSERT_NO_FATAL_FAILURE(MountRw());
  const std::string path = Mnt() + "/tmp/written";
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << strerror(errno);
  const std::string record(10240, 'a');  // tar's record size: the second starts mid-page
  const json before = FuseStats();
  ASSERT_EQ(write(fd, record.data(), record.size()), static_cast<ssize_t>(record.size()));
  ASSERT_EQ(write(fd, record.data(), record.size()), static_cast<ssize_t>(record.size()));
  const json after = FuseStats();
  EXPECT_EQ(Requests(after, "write") - Requests(before, "write"), 2u) << after.dump();
  EXPECT_EQ(Requests(after, "getxattr"), Requests(before, "getxattr")) << after.dump();

  // A reader that holds the first page in its cache and in a mapping sees the new bytes.
  const int rd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(rd, 0) << strerror(errno);
  char head[4] = {};
  ASSERT_EQ(pread(rd, head, sizeof(head), 0), 4);
  EXPECT_EQ(std::string(head, 4), "aaaa");
  void* map = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, rd, 0);
  ASSERT_NE(map, MAP_FAILED) << strerror(errno);
  const auto* mapped = static_cast<const volatile char*>(map);
  EXPECT_EQ(mapped[0], 'a');  // the page is mapped in
  ASSERT_EQ(pwrite(fd, "bbbb", 4, 0), 4);
  EXPECT_EQ(std::string({mapped[0], mapped[1], mapped[2], mapped[3]}), "bbbb") << "mapping";
  ASSERT_EQ(pread(rd, head, sizeof(head), 0), 4);
  EXPECT_EQ(std::string(head, 4), "bbbb") << "pread after a write through another handle";
  munmap(map, 4096);
  const int app = open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(app, 0) << strerror(errno);
  ASSERT_EQ(write(app, "Z", 1), 1);
  close(app);
  close(fd);
  struct stat st {};
  ASSERT_EQ(fstat(rd, &st), 0);
  EXPECT_EQ(st.st_size, 2 * 10240 + 1);
  char tail[2] = {};
  ASSERT_EQ(pread(rd, tail, sizeof(tail), 2 * 10240 - 1), 2);
  EXPECT_EQ(std::string(tail, 2), "aZ");
  close(rd);
  Result<std::string> whole = ReadFile(path);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  EXPECT_EQ(*whole, "bbbb" + std::string(2 * 10240 - 4, 'a') + "Z");
}

// On the fuse driver a listing comes with each name's entry (READDIRPLUS): `rm -rf` of an
// image tree looks up no name of it, and what the listing answers is what a change made.
TEST_F(KernelCacheTest, WritableListingsCarryEntriesSoRemovalLooksNothingUp) {
  ASSERT_NO_FATAL_FAILURE(MountRw());
  ASSERT_EQ(chmod((Mnt() + "/etc/passwd").c_str(), 0600), 0) << strerror(errno);
  ProcessResult made = RunProcess({"sh", "-c", "echo new > " + Mnt() + "/etc/made.txt"});
  ASSERT_EQ(made.exit_code, 0) << made.Describe();
  ProcessResult ls = RunProcess({"ls", "-lan", Mnt() + "/etc"});
  ASSERT_EQ(ls.exit_code, 0) << ls.Describe();
  EXPECT_NE(ls.out.find("-rw------- 1 0 0"), std::string::npos) << ls.out;
  // made.txt: "-rw-r--r-- 1 0 0 4 <date> made.txt", its size as the create and write left it.
  std::string made_line;
  std::istringstream lines(ls.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > 9 && line.substr(line.size() - 9) == " made.txt") made_line = line;
  }
  std::istringstream fields(made_line);
  std::string mode, links, uid, gid, size;
  fields >> mode >> links >> uid >> gid >> size;
  EXPECT_EQ(size, "4") << ls.out;

  ProcessResult count = RunProcess({"sh", "-c", "find " + Mnt() + "/data | wc -l"});
  ASSERT_EQ(count.exit_code, 0) << count.Describe();
  ASSERT_GT(std::stoi(count.out), 20) << count.out;
  ProcessResult umount = Imgfs({"umount", Mnt()});
  ASSERT_EQ(umount.exit_code, 0) << umount.Describe();

  // Each try on a fresh mount and upper: every name of /data is new to the kernel. Another
  // test's drop_caches (counted in /proc/vmstat) drops the entries the listing gave, and the
  // names are then looked up again: such a try does not count. Without READDIRPLUS every try
  // looks up every name.
  uint64_t lookups = 0;
  bool counted = false;
  for (int attempt = 0; attempt < 30 && !counted; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::seconds(1));
    const std::string drops = DropCachesCount();
    ASSERT_NO_FATAL_FAILURE(MountRw("rm-upper-" + std::to_string(attempt)));
    const json before = FuseStats();
    ProcessResult rm = RunProcess({"rm", "-rf", Mnt() + "/data"});
    ASSERT_EQ(rm.exit_code, 0) << rm.Describe();
    const json after = FuseStats();
    EXPECT_GT(Requests(after, "readdirplus"), Requests(before, "readdirplus")) << after.dump();
    lookups = Requests(after, "lookup") - Requests(before, "lookup");
    struct stat st {};
    EXPECT_NE(lstat((Mnt() + "/data").c_str(), &st), 0);
    umount = Imgfs({"umount", Mnt()});
    ASSERT_EQ(umount.exit_code, 0) << umount.Describe();
    counted = DropCachesCount() == drops;
  }
  ASSERT_TRUE(counted) << "drop_caches ran during each of 30 tries";
  EXPECT_LE(lookups, 1u);
}

}  // namespace
}  // namespace imgfs::testing
