// imgfs — crash safety of `imgfs cache gc`: the real binary killed with SIGKILL at random
// points leaves a store whose recorded image is whole and prepares, and a final GC finishes
// the job. (Moved here from tests/cache/usage_test.cc: it runs the binary, so it is not a
// unit test.)
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/chunk_store.h"
#include "cache/images.h"
#include "cache/index_store.h"
#include "cache/usage.h"
#include "fs/mount/mount.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using registry::Digest;
using testing::D;
using testing::EncodedChunkIndex;
using testing::ImportFixture;
using testing::MakeImage;
using testing::Ref;
using testing::TempDir;

class CacheGcKillTest : public testing::UsageStoreTest {};

// `imgfs cache gc` killed with SIGKILL at random points: afterwards the recorded image is
// whole and prepares (the mount path without the kernel: indexes, merge, reads), and a
// final GC finishes the job.
TEST_F(CacheGcKillTest, GcKilledAtRandomPointsLeavesAWorkingStore) {
  registry::Descriptor desc = ImportFixture(*store_, "tiny-gzip");
  ASSERT_TRUE(store_->RecordImage(Ref("127.0.0.1:5000/demo/tiny:1"), desc, {}).ok());
  std::mt19937 rng(20261127);
  const unsigned seed = rng();
  SCOPED_TRACE("seed " + std::to_string(seed));
  rng.seed(seed);
  for (int iteration = 0; iteration < 4; ++iteration) {
    // Garbage for GC to chew on: unreferenced blobs, indexes and chunks (written without
    // fsync: the test is about GC being killed, not about power loss).
    for (int i = 0; i < 200; ++i) {
      std::string junk = "junk " + std::to_string(iteration) + " " + std::to_string(i);
      Digest d = Digest::Sha256Of(junk);
      std::ofstream(store_->BlobPath(d)) << junk;
      if (i % 4 == 0) {
        Digest layer = Digest::Sha256Of(junk + " layer");
        std::ofstream(IndexStore(Root()).PathFor(layer)) << EncodedChunkIndex(layer, {junk});
        std::string chunk = ChunkStore(Root()).PathFor(d);
        ASSERT_TRUE(MakeDirs(chunk.substr(0, chunk.rfind('/'))).ok());
        std::ofstream(chunk) << junk;
      }
    }
    // And whole unreferenced images, whose manifests must go before the blobs they name.
    for (int i = 0; i < 8; ++i) {
      std::string tag = std::to_string(iteration) + "/" + std::to_string(i);
      MakeImage(*store_, {"garbage layer " + tag, "second garbage layer " + tag}, "2024-01-01",
                tag);
    }
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::setenv("IMGFS_ROOT", Root().c_str(), 1);
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      ::execl(IMGFS_BINARY, IMGFS_BINARY, "cache", "gc", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 60000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 127) << "could not run imgfs";

    // The image is whole and mountable.
    auto resolved = ResolveImage(*store_, "127.0.0.1:5000/demo/tiny:1");
    ASSERT_TRUE(resolved.has_value()) << resolved.error().ToString();
    for (const auto& l : resolved->decoded.layers) {
      ASSERT_EQ(*store_->BlobSize(l.digest), l.size) << l.digest.String();
    }
    fs::PrepareOptions prep;
    prep.pull_if_missing = false;
    auto prepared = fs::PrepareImage(*store_, "127.0.0.1:5000/demo/tiny:1", prep);
    ASSERT_TRUE(prepared.has_value()) << prepared.error().ToString();
    auto etc = prepared->filesystem->Lookup(1, "etc");
    ASSERT_TRUE(etc.has_value()) << etc.error().ToString();
    auto os = prepared->filesystem->Lookup(etc->st_ino, "os-release");
    ASSERT_TRUE(os.has_value()) << os.error().ToString();
    auto data = prepared->filesystem->Read(os->st_ino, 0, 4096);
    ASSERT_TRUE(data.has_value()) << data.error().ToString();
    EXPECT_NE(data->find("ID=tiny"), std::string::npos);
    // No manifest left in the store names a missing blob.
    for (const auto& e : std::filesystem::directory_iterator(Root() + "/blobs/sha256")) {
      auto bytes = ReadFile(e.path().string());
      if (!bytes.has_value()) continue;
      auto m = nlohmann::json::parse(*bytes, nullptr, false);
      if (m.is_discarded() || !m.is_object() || !m.contains("layers")) continue;
      EXPECT_TRUE(store_->HasBlob(D(m["config"]["digest"].get<std::string>())))
          << "manifest " << e.path() << " names a deleted config";
      for (const auto& l : m["layers"]) {
        EXPECT_TRUE(store_->HasBlob(D(l["digest"].get<std::string>())))
            << "manifest " << e.path() << " names a deleted layer";
      }
    }
    // Nothing dangles: every index and chunk file is whole (a scan reads them all).
    StoreUsage u = Scan();
    ASSERT_EQ(u.images.size(), 1u);
    EXPECT_TRUE(u.images[0].complete);
  }
  auto gc = CollectGarbage(*store_, options_);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  StoreUsage u = Scan();
  EXPECT_EQ(u.unreferenced_bytes(), 0);
  EXPECT_EQ(u.blobs, 5);  // manifest, config, 3 layers
}

}  // namespace
}  // namespace imgfs::cache
