// imgfs — end-to-end fault injection for `imgfs mount --lazy`: the real binary mounts an
// eStargz or zstd:chunked image from a real docker-registry through a fault-injecting proxy
// (tests/support/http_test_server.h FaultyProxyHandler). Whatever the registry path does —
// 500s, 429s, dropped connections, corrupted bytes, 200 instead of 206, a slow link, a
// registry that hangs or vanishes — every read returns either the right bytes or EIO, and
// within a bounded time (`--fetch-timeout`); once the fault is gone, reads succeed again.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

// Files of the `tiny` image read in every case, with the sha256 of their content
// (tiny.expected.txt): several chunks (random.bin, busybox), zeros, small files of each layer.
const std::map<std::string, std::string>& Expected() {
  static const std::map<std::string, std::string> kFiles = {
      {"/data/random.bin", "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d"},
      {"/bin/busybox", "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6"},
      {"/data/zeros.bin", "106f0647ae10a6516b1ab2968038161e287ef40d1b22ca047531ed768e594ef1"},
      {"/etc/os-release", "d0f15c4d8c5d93ac7882b30873d43fa690695f342bc254ce7e4fed52166bff83"},
      {"/etc/passwd", "e0c79f05a81e5ca5f39c1e8a05146c2464d9dd4f3052c8446d04e0cf3355bd7e"},
      {"/data/changeme.txt", "be1e99b2af2a9bfa5e670bc5a55cd9c998d0739b419ad5922869313e36ddde8f"},
      {"/etc/conf.d/new.conf", "7ef249a20b7ea4991f7d38c661bc7412027ce0f75222d46b419bd9fea2946d11"},
  };
  return kFiles;
}

struct ReadOutcome {
  int err = 0;  // errno of the failing read, 0 on success
  std::string sha256;
  double seconds = 0;
};

ReadOutcome ReadFileTimed(const std::string& path) {
  ReadOutcome out;
  auto start = std::chrono::steady_clock::now();
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    out.err = errno;
  } else {
    std::string data;
    char buf[1 << 16];
    while (true) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0) {
        out.err = errno;
        break;
      }
      if (n == 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    if (out.err == 0) out.sha256 = registry::Digest::Sha256Of(data).hex();
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

class LazyFaultsTest : public ImgfsMountTest {
 protected:
  void TearDown() override {
    if (faults_ != nullptr) {
      faults_->hang = false;
      faults_->unreachable = false;
    }
    ImgfsMountTest::TearDown();
    proxy_.reset();
  }

  // Pushes `fixture` to the suite's registry (the faults are the proxy's, so the registry can
  // be shared), puts the proxy in front, mounts lazily through it with `extra` mount
  // arguments. Faults are off during the mount.
  void MountThroughProxy(const std::string& fixture, std::vector<std::string> extra) {
    registry_ = SharedRegistry();
    ASSERT_NE(registry_, nullptr);
    ASSERT_TRUE(registry_->PushOciLayout(FixturePath(fixture), "latest", "demo/f:1").ok());
    stats_ = std::make_shared<ProxyStats>();
    faults_ = std::make_shared<ProxyFaults>();
    proxy_ =
        std::make_unique<HttpTestServer>(FaultyProxyHandler(registry_->url(), stats_, faults_));
    Mount(std::move(extra));
  }

  // `imgfs mount --lazy` of the pushed image through the proxy (again after an umount).
  void Mount(std::vector<std::string> extra) {
    std::vector<std::string> args = {"mount", "--lazy"};
    if (std::find(extra.begin(), extra.end(), "--prefetch") == extra.end()) {
      args.insert(args.end(), {"--prefetch", "none"});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(proxy_->host_port() + "/demo/f:1");
    args.push_back(Mnt());
    ProcessResult r = Imgfs(args);
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_TRUE(IsMounted(Mnt()));
  }

  RegistryServer* registry_ = nullptr;  // the suite's
  std::shared_ptr<ProxyStats> stats_;
  std::shared_ptr<ProxyFaults> faults_;
  std::unique_ptr<HttpTestServer> proxy_;
};

// One kind of fault, switched on after the mount.
struct FaultCase {
  std::string name;
  std::function<void(ProxyFaults&)> apply;
  bool recoverable;  // the reader's retries get past it: every read must succeed
};

class LazyFaultCaseTest : public LazyFaultsTest,
                          public ::testing::WithParamInterface<std::tuple<std::string, int>> {};

std::vector<FaultCase> Cases() {
  return {
      {"Http500Once", [](ProxyFaults& f) { f.fail_count = 1; }, true},
      {"Http429Twice",
       [](ProxyFaults& f) {
         f.fail_status = 429;
         f.fail_count = 2;
       },
       true},
      {"DroppedConnectionOnce", [](ProxyFaults& f) { f.drop_count = 1; }, true},
      {"CorruptBytesOnce", [](ProxyFaults& f) { f.corrupt_count = 1; }, true},
      {"WholeBlobInsteadOfRange", [](ProxyFaults& f) { f.ignore_range = true; }, true},
      {"SlowLink",
       [](ProxyFaults& f) {
         f.delay_ms = 20;
         f.rate_bytes_per_s = 4 << 20;
       },
       true},
      {"MultiRangeRefused", [](ProxyFaults& f) { f.refuse_multi_range = true; }, true},
      {"CorruptBytesAlways", [](ProxyFaults& f) { f.corrupt_count = -1; }, false},
      {"Http500Always", [](ProxyFaults& f) { f.fail_count = -1; }, false},
      {"DroppedConnectionAlways", [](ProxyFaults& f) { f.drop_count = -1; }, false},
  };
}

TEST_P(LazyFaultCaseTest, EveryReadIsRightOrEioInBoundedTime) {
  const auto& [fixture, case_index] = GetParam();
  const FaultCase c = Cases()[static_cast<size_t>(case_index)];
  constexpr double kTimeoutSeconds = 8;
  MountThroughProxy(fixture, {"--fetch-timeout", "8"});
  c.apply(*faults_);
  int ok = 0;
  int eio = 0;
  for (const auto& [path, sha] : Expected()) {
    // Persistent faults cost a full retry cycle per read: two files show it.
    if (!c.recoverable && path != "/data/random.bin" && path != "/etc/os-release") continue;
    ReadOutcome r = ReadFileTimed(Mnt() + path);
    if (r.err == 0) {
      EXPECT_EQ(r.sha256, sha) << c.name << ": " << path << " read wrong bytes";
      ++ok;
    } else {
      EXPECT_EQ(r.err, EIO) << c.name << ": " << path << ": " << strerror(r.err);
      ++eio;
    }
    // One read may wait for several chunks, each bounded by the fetch timeout; with the
    // registry answering (even badly) nothing should come near it.
    EXPECT_LT(r.seconds, 2 * kTimeoutSeconds) << c.name << ": " << path;
  }
  if (c.recoverable) {
    EXPECT_EQ(eio, 0) << c.name << ": a fault the retries get past reached a reader";
  } else {
    EXPECT_GT(eio, 0) << c.name << ": every read succeeded although every answer was bad";
    // /data/zeros.bin is zeros chunks in zstd:chunked (no I/O) and may succeed.
  }
  if (c.name == "MultiRangeRefused") {
    // At most one refused multi-range request: the daemon remembers the refusal for the
    // registry and asks single ranges after it (MultiRangeGapRead* below forces one).
    EXPECT_LE(faults_->multi_range_requests.load(), 1);
  }
  if (c.name != "WholeBlobInsteadOfRange" && c.name != "SlowLink" &&
      c.name != "MultiRangeRefused") {
    EXPECT_GT(faults_->faults_injected.load(), 0) << c.name << ": the fault never fired";
  }

  // The fault goes away: everything reads right (failed reads are not cached by the kernel).
  faults_->fail_count = 0;
  faults_->drop_count = 0;
  faults_->corrupt_count = 0;
  for (const auto& [path, sha] : Expected()) {
    ReadOutcome r = ReadFileTimed(Mnt() + path);
    EXPECT_EQ(r.err, 0) << c.name << " (after): " << path << ": " << strerror(r.err);
    EXPECT_EQ(r.sha256, sha) << c.name << " (after): " << path;
  }
  ProcessResult u = Imgfs({"umount", Mnt()}, 30);
  EXPECT_EQ(u.exit_code, 0) << u.Describe();
}

// Every case on eStargz; on zstd:chunked the ones whose handling depends on the format
// (decoding a cut, corrupted or sliced answer), to keep the suite's time down.
std::vector<std::tuple<std::string, int>> CaseMatrix() {
  std::vector<std::tuple<std::string, int>> out;
  const std::vector<FaultCase> cases = Cases();
  for (int i = 0; i < static_cast<int>(cases.size()); ++i) {
    out.emplace_back("tiny-estargz", i);
    const std::string& n = cases[static_cast<size_t>(i)].name;
    if (n == "DroppedConnectionOnce" || n == "CorruptBytesOnce" || n == "WholeBlobInsteadOfRange" ||
        n == "CorruptBytesAlways" || n == "SlowLink") {
      out.emplace_back("tiny-zstdchunked", i);
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Faults, LazyFaultCaseTest, ::testing::ValuesIn(CaseMatrix()),
                         [](const auto& param_info) {
                           return std::string(std::get<0>(param_info.param) == "tiny-estargz"
                                                  ? "Estargz"
                                                  : "ZstdChunked") +
                                  "_" +
                                  Cases()[static_cast<size_t>(std::get<1>(param_info.param))].name;
                         });

// A read whose chunks have a gap, made deterministic on tiny-estargz's first layer, where
// blob order is ... busybox chunks c2 (348695 compressed bytes) and c3 (178334), then the
// small data/ files, then random.bin. With only c3 in the chunk store, a read of busybox's
// c2 takes the small files along (widening, 256 KiB of blob scanned) but not c3: two ranges
// 178334 bytes apart, more than the 64 KiB coalescing gap, so ONE multi-range request.
// Each case puts a fault on the proxy before that read: the read and everything after it
// must still be right, with the multi-range answer or its fallback.
struct GapReadCase {
  std::string name;
  std::function<void(ProxyFaults&)> apply;
};

class LazyMultiRangeTest : public LazyFaultsTest,
                           public ::testing::WithParamInterface<GapReadCase> {};

TEST_P(LazyMultiRangeTest, GapReadIsRightWithMultiRangeOrItsFallback) {
  constexpr uint64_t kC2 = 1048576;  // busybox chunk offsets (chunk size 512 KiB)
  constexpr uint64_t kC3 = 1572864;
  const GapReadCase& c = GetParam();
  MountThroughProxy("tiny-estargz", {"--fetch-timeout", "8"});
  // 1. busybox's last chunk (and, by widening, the small files after it) into the store.
  std::string tail;
  {
    int fd = open((Mnt() + "/bin/busybox").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0) << strerror(errno);
    char buf[1 << 16];
    for (uint64_t off = kC3;;) {
      ssize_t n = pread(fd, buf, sizeof(buf), static_cast<off_t>(off));
      ASSERT_GE(n, 0) << strerror(errno);
      if (n == 0) break;
      tail.append(buf, static_cast<size_t>(n));
      off += static_cast<uint64_t>(n);
    }
    close(fd);
  }
  ASSERT_EQ(tail.size(), 1982256u - kC3);
  ProcessResult u = Imgfs({"umount", Mnt()}, 30);
  ASSERT_EQ(u.exit_code, 0) << u.Describe();
  // 2. Keep only that chunk in the store (chunk files are named by their content's sha256).
  const std::string keep = registry::Digest::Sha256Of(tail).hex();
  bool kept = false;
  for (const std::string& f : ListFilesRecursive(Root() + "/chunks")) {
    if (f.find(keep) != std::string::npos) {
      kept = true;
      continue;
    }
    std::filesystem::remove(Root() + "/chunks/" + f);
  }
  ASSERT_TRUE(kept) << "busybox's last chunk is not in the chunk store";
  // 3. A fresh daemon (no refusal remembered yet), the fault on, and the read with a gap.
  Mount({"--fetch-timeout", "8"});
  const int multi_before = faults_->multi_range_requests.load();
  c.apply(*faults_);
  std::string at_c2(4096, '\0');
  {
    int fd = open((Mnt() + "/bin/busybox").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0) << strerror(errno);
    const ssize_t n = pread(fd, at_c2.data(), at_c2.size(), static_cast<off_t>(kC2));
    EXPECT_EQ(n, static_cast<ssize_t>(at_c2.size())) << c.name << ": " << strerror(errno);
    close(fd);
  }
  const int multi = faults_->multi_range_requests.load() - multi_before;
  ReadOutcome busybox = ReadFileTimed(Mnt() + "/bin/busybox");
  EXPECT_EQ(busybox.err, 0) << c.name << ": " << strerror(busybox.err);
  EXPECT_EQ(busybox.sha256, Expected().at("/bin/busybox")) << c.name;
  EXPECT_GE(multi, 1) << c.name << ": the gap read sent no multi-range request";
  if (c.name == "Refused") {
    EXPECT_EQ(multi, 1) << "the refusal was not remembered";
    EXPECT_EQ(faults_->faults_injected.load(), 1);
    EXPECT_GT(faults_->ranged_requests.load(), 1);
  } else if (c.name == "DroppedConnectionOnce") {
    EXPECT_GE(multi, 2) << "the cut multi-range answer was not asked again";
  }
  if (c.name != "Allowed" && c.name != "Refused" && c.name != "SlowLink" &&
      c.name != "WholeBlobInsteadOfRange") {
    EXPECT_GT(faults_->faults_injected.load(), 0) << c.name << ": the fault never fired";
  }
  // Everything else reads right too, with the fault gone.
  faults_->fail_count = 0;
  faults_->drop_count = 0;
  faults_->corrupt_count = 0;
  for (const auto& [path, sha] : Expected()) {
    ReadOutcome r = ReadFileTimed(Mnt() + path);
    EXPECT_EQ(r.err, 0) << c.name << ": " << path << ": " << strerror(r.err);
    EXPECT_EQ(r.sha256, sha) << c.name << ": " << path;
  }
  if (c.name == "Refused") {
    EXPECT_EQ(faults_->multi_range_requests.load() - multi_before, 1);
  }
  u = Imgfs({"umount", Mnt()}, 30);
  EXPECT_EQ(u.exit_code, 0) << u.Describe();
}

INSTANTIATE_TEST_SUITE_P(
    MultiRange, LazyMultiRangeTest,
    ::testing::Values(
        GapReadCase{"Allowed", [](ProxyFaults&) {}},
        GapReadCase{"Refused", [](ProxyFaults& f) { f.refuse_multi_range = true; }},
        GapReadCase{"CorruptBytesOnce", [](ProxyFaults& f) { f.corrupt_count = 1; }},
        GapReadCase{"DroppedConnectionOnce", [](ProxyFaults& f) { f.drop_count = 1; }},
        GapReadCase{"WholeBlobInsteadOfRange", [](ProxyFaults& f) { f.ignore_range = true; }},
        GapReadCase{"SlowLink",
                    [](ProxyFaults& f) {
                      f.delay_ms = 20;
                      f.rate_bytes_per_s = 4 << 20;
                    }}),
    [](const auto& param_info) { return param_info.param.name; });

// The registry stops answering (connections held open) and then vanishes (connections
// refused): uncached reads are EIO within --fetch-timeout, the daemon keeps serving what it
// has, and once the registry is back the same reads succeed.
TEST_F(LazyFaultsTest, RegistryHangsOrVanishesEioWithinFetchTimeoutThenRecovers) {
  MountThroughProxy("tiny-estargz", {"--fetch-timeout", "2"});
  ReadOutcome cached = ReadFileTimed(Mnt() + "/etc/os-release");
  ASSERT_EQ(cached.err, 0);

  faults_->hang = true;
  ReadOutcome hung = ReadFileTimed(Mnt() + "/data/random.bin");
  EXPECT_EQ(hung.err, EIO);
  EXPECT_LT(hung.seconds, 6.0) << "a read waited far beyond --fetch-timeout 2";
  EXPECT_GE(hung.seconds, 1.5);
  // The daemon still answers metadata and cached data while a fetch is stuck.
  EXPECT_TRUE(std::filesystem::exists(Mnt() + "/etc/passwd"));
  EXPECT_EQ(ReadFileTimed(Mnt() + "/etc/os-release").sha256, cached.sha256);

  faults_->hang = false;
  faults_->unreachable = true;
  ReadOutcome refused = ReadFileTimed(Mnt() + "/bin/busybox");
  EXPECT_EQ(refused.err, EIO);
  EXPECT_LT(refused.seconds, 6.0);

  faults_->unreachable = false;
  for (const auto& [path, sha] : Expected()) {
    ReadOutcome r = ReadFileTimed(Mnt() + path);
    EXPECT_EQ(r.err, 0) << path << ": " << strerror(r.err);
    EXPECT_EQ(r.sha256, sha) << path;
  }
  ProcessResult u = Imgfs({"umount", Mnt()}, 30);
  EXPECT_EQ(u.exit_code, 0) << u.Describe();
}

// --prefetch=all: after the mount, the daemon fetches every chunk in the background; once it
// is done the registry can go away and every file still reads right.
TEST_F(LazyFaultsTest, PrefetchAllFetchesEverythingInTheBackground) {
  MountThroughProxy("tiny-zstdchunked", {"--prefetch", "all"});
  // Wait (bounded) until the chunk store stops growing.
  size_t last = 0;
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    size_t n = ListFilesRecursive(Root() + "/chunks").size();
    if (n > 0 && n == last) break;
    last = n;
  }
  faults_->unreachable = true;
  for (const auto& [path, sha] : Expected()) {
    ReadOutcome r = ReadFileTimed(Mnt() + path);
    EXPECT_EQ(r.err, 0) << path << ": " << strerror(r.err);
    EXPECT_EQ(r.sha256, sha) << path;
  }
  ProcessResult u = Imgfs({"umount", Mnt()}, 30);
  EXPECT_EQ(u.exit_code, 0) << u.Describe();
}

}  // namespace
}  // namespace imgfs::testing
