// imgfs — end-to-end test of issue 11's "never an EIO on a good image": a plain tar+gzip
// image with an imgfs index published beside it (`imgfs index push`) is mounted with
// `imgfs mount --lazy` from a fresh store through a proxy that makes the link slow (20 ms per
// request, 25 MB/s per connection: scripts/wan_proxy.py's 20 ms / 200 Mbit link), and every
// file of the tree is read by several threads at once, on demand and (second round) while the
// `--prefetch all` background pass races them; and the tree is copied with `tar` (one
// sequential reader, the reproduction), with and without the background pass. Every
// file's sha256 must equal the source's, and no read may fail.
//
// The layer is gzip cut as parallel compressors cut it (pgzip: a sync flush every 1 MiB of
// tar), so the index's checkpoints fall on cache-block boundaries right before an empty
// stored block: the layout of the image, where a read ending at a checkpoint made the
// decoder parse the next block's header from a hole of the sparse copy ("gzip stream invalid
// ... invalid stored block lengths; fetching it again", then EIO) whenever read-ahead had not
// yet fetched the next span — on a slow link, not on loopback.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"

namespace imgfs::testing {
namespace {

constexpr int kReaders = 8;
// The link: scripts/wan_proxy.py's defaults (20 ms each way, 200 Mbit/s).
constexpr int kDelayMs = 20;
constexpr int64_t kBytesPerSecond = 25'000'000;

// Deterministic bytes: incompressible (xorshift64) or text-like, so the deflate stream has
// both stored and Huffman blocks.
std::string FileBytes(size_t n, uint64_t seed, bool text) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    const uint8_t b = static_cast<uint8_t>(x >> (8 * (i % 8)));
    out[i] = text ? "etaoin shrdlu\n"[b % 14] : static_cast<char>(b);
  }
  return out;
}

// A file's sha256, or "error: <errno text>" when a read failed.
std::string HashOf(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("error: open: ") + std::strerror(errno);
  std::string data;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return std::string("error: read: ") + std::strerror(err);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return registry::Digest::Sha256Of(data).hex();
}

class PublishedIndexWanTest : public ImgfsMountTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ImgfsMountTest::SetUp());
    // ~24 MiB of tar in 300 files of 1 KiB to 300 KiB in 10 directories: six 4 MiB
    // checkpoint spans, many files straddling them.
    TestLayer layer;
    layer.gzip_flush_bytes = 1 << 20;
    uint64_t x = 12345;
    for (int d = 0; d < 10; ++d) {
      const std::string dir = "usr/lib" + std::to_string(d);
      if (d == 0) layer.files.push_back({"usr", "", TestFile::Kind::kDir, 0755});
      layer.files.push_back({dir, "", TestFile::Kind::kDir, 0755});
      for (int f = 0; f < 30; ++f) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        const size_t size = 1024 + static_cast<size_t>((x >> 33) % (300u << 10));
        const std::string path = dir + "/file" + std::to_string(f);
        std::string content = FileBytes(size, x, f % 3 == 0);
        want_["/" + path] = registry::Digest::Sha256Of(content).hex();
        layer.files.push_back({path, std::move(content)});
      }
    }
    TestImageSpec spec;
    spec.layers.push_back(std::move(layer));
    {
      ImageBuilder builder(dir_.Sub("layout"));
      Result<BuiltImage> built = builder.Add(spec, "latest");
      ASSERT_TRUE(built.has_value()) << built.error().ToString();
      layer_size_ = static_cast<uint64_t>(built->layer_sizes.at(0));
    }
    auto reg = RegistryServer::Start();
    ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
    reg_ = std::move(reg).value();
    ASSERT_TRUE(reg_->PushOciLayout(dir_.Sub("layout"), "latest", "demo/wan:1").ok());
    std::filesystem::remove_all(dir_.Sub("layout"));
    ProcessResult r = Imgfs("publisher", {"index", "push", reg_->host_port() + "/demo/wan:1"});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    stats_ = std::make_shared<ProxyStats>();
    faults_ = std::make_shared<ProxyFaults>();
    faults_->delay_ms = kDelayMs;
    faults_->rate_bytes_per_s = kBytesPerSecond;
    proxy_ = std::make_unique<HttpTestServer>(FaultyProxyHandler(reg_->url(), stats_, faults_));
  }
  ProcessResult Imgfs(const std::string& store, std::vector<std::string> args) {
    return RunImgfs(dir_.Sub(store), std::move(args), {}, {}, 180);
  }

  // Mounts lazily from the fresh store `store` through the slow proxy at dir_/mnt; false
  // (and a failure) when the mount failed.
  bool MountLazily(const std::string& store, const std::string& prefetch) {
    ProcessResult r = Imgfs(store, {"mount", "--lazy", "--prefetch", prefetch,
                                    proxy_->host_port() + "/demo/wan:1", dir_.Sub("mnt")});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    if (r.exit_code != 0) return false;
    EXPECT_LT(ListFilesRecursive(dir_.Sub(store) + "/blobs/sha256").size(), 3u)
        << "the layer was fetched whole: the published index was not used";
    return true;
  }

  // Mounts lazily from the fresh store `store` through the slow proxy, reads every file with
  // kReaders threads (each walks the tree in order from its own starting point, so reads of
  // one span meet), unmounts; the files whose hash differs, with what was read.
  std::vector<std::string> ReadTreeConcurrently(const std::string& store,
                                                const std::string& prefetch) {
    std::vector<std::string> bad;
    const std::string mnt = dir_.Sub("mnt");
    if (!MountLazily(store, prefetch)) return {"mount failed"};
    ProcessResult r;
    std::vector<std::string> paths;
    for (const auto& [path, hash] : want_) paths.push_back(path);
    std::mutex mu;
    std::vector<std::thread> threads;
    for (int t = 0; t < kReaders; ++t) {
      threads.emplace_back([&, t] {
        for (size_t k = 0; k < paths.size(); ++k) {
          const std::string& path = paths[(k + t * paths.size() / kReaders) % paths.size()];
          const std::string got = HashOf(mnt + path);
          if (got != want_.at(path)) {
            std::scoped_lock lock(mu);
            bad.push_back(path + ": " + got);
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    r = Imgfs(store, {"umount", mnt});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    return bad;
  }

  // Mounts lazily from the fresh store `store` through the slow proxy, copies the whole
  // tree with tar (one reader, in tar order: sequential reads that grow the read-ahead and
  // switch the layer to streaming), unmounts; the copied files whose hash differs from the
  // source's, or what failed.
  std::vector<std::string> TarTheTree(const std::string& store, const std::string& prefetch) {
    const std::string mnt = dir_.Sub("mnt");
    if (!MountLazily(store, prefetch)) return {"mount failed"};
    const std::string copy = dir_.Sub(store + "-copy");
    std::filesystem::create_directories(copy);
    ProcessResult tar =
        RunProcess({"bash", "-c", "set -o pipefail; tar -C \"$1\" -cf - . | tar -C \"$2\" -xf -",
                    "tar", mnt, copy},
                   {}, {}, 120);
    std::vector<std::string> bad;
    if (tar.exit_code != 0) bad.push_back("tar failed: " + tar.Describe());
    for (const auto& [path, hash] : want_) {
      const std::string got = HashOf(copy + path);
      if (got != hash) bad.push_back(path + ": " + got);
    }
    ProcessResult r = Imgfs(store, {"umount", mnt});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    return bad;
  }

  std::unique_ptr<RegistryServer> reg_;
  std::shared_ptr<ProxyStats> stats_;
  std::shared_ptr<ProxyFaults> faults_;
  std::unique_ptr<HttpTestServer> proxy_;
  std::map<std::string, std::string> want_;  // "/path" → sha256 of its content
  uint64_t layer_size_ = 0;
};

TEST_F(PublishedIndexWanTest, ConcurrentReadsOfTheWholeTreeOverASlowLinkReadEveryByte) {
  ASSERT_GT(layer_size_, 16u << 20) << "several checkpoint spans";
  // Demand reads, read-ahead and the streaming switch.
  std::vector<std::string> bad = ReadTreeConcurrently("fresh1", "none");
  EXPECT_TRUE(bad.empty()) << bad.size() << " of " << want_.size()
                           << " files read wrong, first: " << bad.front();
  // The same while the background pass streams the layer.
  bad = ReadTreeConcurrently("fresh2", "all");
  EXPECT_TRUE(bad.empty()) << bad.size() << " of " << want_.size()
                           << " files read wrong, first: " << bad.front();
}

// The reproduction: `tar` of the whole tree of a lazily mounted gzip image with a
// published index, over the slow link, once on demand (the streaming switch races the
// reads) and once with the background pass streaming the layer at the same time. Every file
// must arrive, with the source's bytes.
TEST_F(PublishedIndexWanTest, TarOfTheWholeTreeOverASlowLinkCopiesEveryFile) {
  ASSERT_GT(layer_size_, 16u << 20) << "several checkpoint spans";
  std::vector<std::string> bad = TarTheTree("tar1", "landmarks");
  EXPECT_TRUE(bad.empty()) << bad.size() << " of " << want_.size()
                           << " files copied wrong, first: " << bad.front();
  bad = TarTheTree("tar2", "all");
  EXPECT_TRUE(bad.empty()) << bad.size() << " of " << want_.size()
                           << " files copied wrong, first: " << bad.front();
}

}  // namespace
}  // namespace imgfs::testing
