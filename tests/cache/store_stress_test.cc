// imgfs — concurrency tests for the store: several processes and threads recording images,
// writing blobs and collecting garbage on one store at once lose nothing.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/images.h"
#include "cache/leases.h"
#include "cache/store.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::cache {
namespace {

using testing::MakeImage;
using testing::Ref;
using testing::TempDir;

// Runs `fn` in `n` forked children (fn gets the child index and returns success); returns
// how many children succeeded.
template <typename Fn>
int RunInChildren(int n, Fn fn) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) _exit(fn(i) ? 0 : 1);
    if (pid > 0) pids.push_back(pid);
  }
  int ok = 0;
  for (pid_t pid : pids) {
    int status = 0;
    if (::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) ++ok;
  }
  return ok;
}

// Every blob reachable from index.json must be present, and (after a final GC) nothing else.
void ExpectStoreConsistent(Store& store) {
  auto records = store.ListRecords();
  ASSERT_TRUE(records.has_value()) << records.error().ToString();
  std::set<std::string> reachable;
  for (const auto& r : *records) {
    auto bytes = store.ReadBlob(r.manifest.digest);
    ASSERT_TRUE(bytes.has_value()) << r.reference << ": " << bytes.error().ToString();
    auto m = nlohmann::json::parse(*bytes);
    reachable.insert(r.manifest.digest.hex());
    reachable.insert(m["config"]["digest"].get<std::string>().substr(7));
    for (const auto& l : m["layers"]) reachable.insert(l["digest"].get<std::string>().substr(7));
  }
  for (const auto& hex : reachable) {
    EXPECT_TRUE(std::filesystem::exists(store.root() + "/blobs/sha256/" + hex)) << hex;
  }
  auto gc = CollectGarbage(store);
  ASSERT_TRUE(gc.has_value()) << gc.error().ToString();
  std::set<std::string> present;
  for (const auto& e : std::filesystem::directory_iterator(store.root() + "/blobs/sha256")) {
    present.insert(e.path().filename().string());
  }
  EXPECT_EQ(present, reachable);
  EXPECT_EQ(testing::CountEntries(store.root() + "/tmp"), 0u);
}

TEST(StoreStressTest, ProcessesRecordingAtOnceLoseNothing) {
  TempDir dir;
  std::string root = dir.path() + "/store";
  constexpr int kProcs = 4;
  constexpr int kImagesEach = 5;
  int ok = RunInChildren(kProcs, [&](int p) {
    auto store = Store::Open(root);  // every child opens (and may create) the store itself
    if (!store.has_value()) return false;
    for (int i = 0; i < kImagesEach; ++i) {
      auto guard = (*store)->WriteGuard();
      if (!guard.has_value()) return false;
      std::string id = std::to_string(p) + "-" + std::to_string(i);
      auto img = MakeImage(**store, {"shared base layer", "layer " + id});
      if (!(*store)
               ->RecordImage(Ref("proc" + std::to_string(p) + "/img:" + std::to_string(i)),
                             img.manifest, {})
               .ok()) {
        return false;
      }
      // Everyone moves the same tag around, too.
      if (!(*store)->RecordImage(Ref("shared:latest"), img.manifest, {}).ok()) return false;
    }
    return true;
  });
  EXPECT_EQ(ok, kProcs);
  auto store = Store::Open(root);
  ASSERT_TRUE(store.has_value());
  auto records = (*store)->ListRecords();
  ASSERT_TRUE(records.has_value());
  std::set<std::string> refs;
  int dangling = 0;
  for (const auto& r : *records) {
    if (r.dangling()) {
      ++dangling;
    } else {
      EXPECT_TRUE(refs.insert(r.reference).second) << "duplicate entry " << r.reference;
    }
  }
  EXPECT_EQ(dangling, 0);  // every image the shared tag left is still named elsewhere
  EXPECT_EQ(refs.size(), static_cast<size_t>(kProcs * kImagesEach + 1));
  for (int p = 0; p < kProcs; ++p) {
    for (int i = 0; i < kImagesEach; ++i) {
      std::string ref = "docker.io/proc" + std::to_string(p) + "/img:" + std::to_string(i);
      EXPECT_EQ(refs.count(ref), 1u) << ref;
    }
  }
  ExpectStoreConsistent(**store);
}

TEST(StoreStressTest, ThreadsWritingTheSameBlobAllSucceed) {
  TempDir dir;
  auto store = Store::Open(dir.path() + "/store");
  ASSERT_TRUE(store.has_value());
  std::string big(1 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
  registry::Digest d = registry::Digest::Sha256Of(big);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto w = (*store)->NewBlobWriter(d, static_cast<int64_t>(big.size()));
      if (!w.has_value()) return;
      for (size_t off = 0; off < big.size(); off += 65536) {
        if (!w->Write(std::string_view(big).substr(off, 65536)).ok()) return;
      }
      if (w->Commit().ok()) ++ok;
      // And a blob of its own.
      if ((*store)->PutBlob("thread " + std::to_string(t)).has_value()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 12);
  auto data = (*store)->ReadBlob(d);
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(*data, big);
  EXPECT_EQ(testing::CountEntries((*store)->root() + "/blobs/sha256"), 7u);
  EXPECT_EQ(testing::CountEntries((*store)->root() + "/tmp"), 0u);
}

TEST(StoreStressTest, GarbageCollectionRacingWithPullsKeepsRecordedImages) {
  TempDir dir;
  std::string root = dir.path() + "/store";
  auto store = Store::Open(root);
  ASSERT_TRUE(store.has_value());
  constexpr int kPullers = 2;
  constexpr int kPulls = 6;
  pid_t gc_child = ::fork();
  ASSERT_GE(gc_child, 0);
  if (gc_child == 0) {
    // Collect garbage and remove images continuously until the pullers are done.
    auto s = Store::Open(root);
    if (!s.has_value()) _exit(1);
    for (int i = 0; i < 200 && !std::filesystem::exists(root + "/done"); ++i) {
      if (!CollectGarbage(**s).has_value()) _exit(2);
      auto rm = RemoveImage(**s, "victim:latest", true);
      if (!rm.has_value() && rm.error().code() != StatusCode::kNotFound) _exit(3);
      ::usleep(5000);
    }
    _exit(0);
  }
  int ok = RunInChildren(kPullers, [&](int p) {
    auto s = Store::Open(root);
    if (!s.has_value()) return false;
    for (int i = 0; i < kPulls; ++i) {
      // What a pull does: guard, write blobs, record.
      auto guard = (*s)->WriteGuard();
      if (!guard.has_value()) return false;
      std::string id = std::to_string(p) + "-" + std::to_string(i);
      auto img = MakeImage(**s, {"common", "pull " + id});
      ::usleep(2000);  // give GC a chance to run between write and record
      if (!(*s)->RecordImage(Ref("pulled" + std::to_string(p) + ":" + std::to_string(i)),
                             img.manifest, {})
               .ok()) {
        return false;
      }
      auto victim = MakeImage(**s, {"victim " + id});
      if (!(*s)->RecordImage(Ref("victim:latest"), victim.manifest, {}).ok()) return false;
      guard->Unlock();
      // Everything this pull recorded is still complete (GC may have removed the victim).
      auto rec = (*s)->FindRecord(Ref("pulled" + std::to_string(p) + ":" + std::to_string(i)));
      if (!rec.has_value() || !(*s)->HasBlob(img.layers[1]) || !(*s)->HasBlob(img.config)) {
        return false;
      }
    }
    return true;
  });
  EXPECT_EQ(ok, kPullers);
  ASSERT_TRUE(WriteFileAtomic(root + "/done", "").ok());
  int status = 0;
  ASSERT_EQ(::waitpid(gc_child, &status, 0), gc_child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ::unlink((root + "/done").c_str());
  for (int p = 0; p < kPullers; ++p) {
    for (int i = 0; i < kPulls; ++i) {
      EXPECT_TRUE(
          (*store)->FindRecord(Ref("pulled" + std::to_string(p) + ":" + std::to_string(i))).ok());
    }
  }
  ExpectStoreConsistent(**store);
}

}  // namespace
}  // namespace imgfs::cache
