// imgfs — LayerOpener (fs/mount/layer_data.h): every kind of layer through one factory, and
// the index loads of an image's layers in parallel.
#include "fs/mount/layer_data.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cache/chunk_store.h"
#include "cache/store.h"
#include "registry/local_source.h"
#include "registry/manifest.h"
#include "tests/fs/layer_test_util.h"
#include "tests/fs/prepared_store.h"
#include "tests/support/fake_blob_source.h"

namespace imgfs::fs {
namespace {

using ::imgfs::testing::FakeBlobSource;

// The tiny-estargz fixture (three eStargz layers with TOC digest annotations) behind a
// FakeBlobSource, and an empty store: every layer is missing, so a lazy opener loads TOCs.
class LayerOpenerTest : public testing::PreparedStoreTest {
 protected:
  void SetUp() override {
    PreparedStoreTest::SetUp();
    if (HasFatalFailure()) return;
    auto local =
        registry::LocalSource::OpenOciLayout(testing::kFixtures + "/tiny-estargz", "latest");
    ASSERT_TRUE(local.has_value()) << local.error().ToString();
    std::shared_ptr<registry::BlobSource> inner(std::move(local).value());
    Result<registry::FetchedManifest> fetched = inner->GetManifest("");
    ASSERT_TRUE(fetched.has_value()) << fetched.error().ToString();
    Result<registry::Manifest> manifest = registry::DecodeManifest(fetched->bytes);
    ASSERT_TRUE(manifest.has_value()) << manifest.error().ToString();
    manifest_ = std::move(manifest).value();
    manifest_digest_ = fetched->digest;
    ASSERT_EQ(manifest_.layers.size(), 3U);
    source_ = std::make_shared<FakeBlobSource>(inner);
  }

  LayerOpenerOptions Options() const {
    LayerOpenerOptions o;
    o.store = &store();
    o.image = "tiny-estargz";
    o.manifest = manifest_digest_;
    o.source = source_;
    o.chunks = std::make_shared<cache::ChunkStore>(store().root());
    o.lazy = true;
    return o;
  }

  registry::Manifest manifest_;
  registry::Digest manifest_digest_;
  std::shared_ptr<FakeBlobSource> source_;
};

TEST_F(LayerOpenerTest, LoadsTheTocsOfAllLayersAtOnce) {
  // Every ranged read is held until the test releases them: the loads can only all have
  // sent their first request (the footer) if they run at the same time.
  source_->Hang();
  LayerOpener opener(Options());
  std::optional<Result<std::vector<OpenedLayer>>> opened;
  std::thread open([&] { opened = opener.OpenAll(manifest_.layers); });
  const bool all_asked = source_->WaitForReads(3, std::chrono::seconds(60));
  source_->Release();
  open.join();
  EXPECT_TRUE(all_asked) << "at most " << source_->max_in_flight() << " reads were in flight";
  EXPECT_GE(source_->max_in_flight(), 3);
  ASSERT_TRUE(opened.has_value());
  ASSERT_TRUE(opened->has_value()) << opened->error().ToString();
  ASSERT_EQ((*opened)->size(), 3U);
  for (size_t i = 0; i < 3; ++i) {
    const OpenedLayer& l = (**opened)[i];
    EXPECT_EQ(l.kind, OpenedLayer::Kind::kLazyToc) << i;
    EXPECT_TRUE(l.index_built) << i;
    EXPECT_NE(l.toc_reader, nullptr) << i;
    ASSERT_NE(l.mounted.index, nullptr);
    EXPECT_EQ(l.mounted.index->layer_digest, manifest_.layers[i].digest);  // in order
  }
  EXPECT_EQ(source_->whole_blob_fetches(), 0);
  for (const registry::Descriptor& d : manifest_.layers) EXPECT_FALSE(store().HasBlob(d.digest));

  // A second opener finds the indexes kept in the store: no request at all.
  source_->ResetCounts();
  LayerOpener again(Options());
  Result<std::vector<OpenedLayer>> reopened = again.OpenAll(manifest_.layers);
  ASSERT_TRUE(reopened.has_value()) << reopened.error().ToString();
  EXPECT_EQ(source_->requests(), 0);
  for (const OpenedLayer& l : *reopened) EXPECT_FALSE(l.index_built);
}

TEST_F(LayerOpenerTest, ReportsTheLowestFailedLayer) {
  source_->set_fail(true);  // every layer fails, concurrently
  LayerOpener opener(Options());
  Result<std::vector<OpenedLayer>> opened = opener.OpenAll(manifest_.layers);
  ASSERT_FALSE(opened.has_value());
  EXPECT_NE(opened.error().ToString().find("layer 1 (" + manifest_.layers[0].digest.String()),
            std::string::npos)
      << opened.error().ToString();
}

// The in-order callback (what the mount merges with) sees each layer bottom first, on the
// calling thread, with its merge input made; its error is OpenAll's; a failed layer is never
// passed to it.
TEST_F(LayerOpenerTest, InOrderTakesEachLayerBottomFirstOnTheCallingThread) {
  LayerOpener opener(Options());
  std::vector<size_t> seen;
  const std::thread::id caller = std::this_thread::get_id();
  Result<std::vector<OpenedLayer>> opened =
      opener.OpenAll(manifest_.layers, [&](size_t position, OpenedLayer& l) {
        EXPECT_EQ(std::this_thread::get_id(), caller);
        EXPECT_EQ(l.mounted.index->layer_digest, manifest_.layers[position].digest);
        EXPECT_EQ(l.merge_input.data.size(), l.mounted.index->entries.size());
        seen.push_back(position);
        return Status::Ok();
      });
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_EQ(seen, (std::vector<size_t>{0, 1, 2}));

  seen.clear();
  LayerOpener stopped(Options());
  opened = stopped.OpenAll(manifest_.layers, [&](size_t position, OpenedLayer&) {
    seen.push_back(position);
    return position == 1 ? Status::Corrupt("stop at 1") : Status::Ok();
  });
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().message(), "stop at 1");
  EXPECT_EQ(seen, (std::vector<size_t>{0, 1}));

  seen.clear();
  source_->set_fail(true);
  std::string stores = dir().Sub("store2");
  Result<std::unique_ptr<cache::Store>> fresh = cache::Store::Open(stores);
  ASSERT_TRUE(fresh.has_value());
  LayerOpenerOptions o = Options();
  o.store = fresh->get();
  LayerOpener failing(o);
  opened = failing.OpenAll(manifest_.layers, [&](size_t position, OpenedLayer&) {
    seen.push_back(position);
    return Status::Ok();
  });
  ASSERT_FALSE(opened.has_value());
  EXPECT_NE(opened.error().ToString().find("layer 1 (" + manifest_.layers[0].digest.String()),
            std::string::npos)
      << opened.error().ToString();
  EXPECT_TRUE(seen.empty());
}

TEST_F(LayerOpenerTest, NotLazyFetchesMissingLayersWholeAndReadsThemLocally) {
  LayerOpenerOptions o = Options();
  o.lazy = false;
  LayerOpener opener(o);
  Result<std::vector<OpenedLayer>> opened = opener.OpenAll(manifest_.layers);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_EQ(source_->whole_blob_fetches(), 3);
  EXPECT_EQ(source_->requests(), 0);  // no TOC read
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*opened)[i].kind, OpenedLayer::Kind::kFetchedWhole) << i;
    EXPECT_TRUE(store().HasBlob(manifest_.layers[i].digest)) << i;
    // An eStargz blob read locally is still known as eStargz (its annotation says so).
    EXPECT_EQ((*opened)[i].mounted.index->format, LayerFormat::kEstargz) << i;
  }
}

TEST_F(LayerOpenerTest, MissingLayerWithoutSourceNamesTheReason) {
  LayerOpenerOptions o = Options();
  o.source = nullptr;
  o.source_error = Status::Unsupported("image tiny-estargz has no registry reference");
  LayerOpener opener(o);
  Result<std::vector<OpenedLayer>> opened = opener.OpenAll(manifest_.layers);
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(opened.error().ToString().find("layer 1 ("), std::string::npos)
      << opened.error().ToString();
}

}  // namespace
}  // namespace imgfs::fs
