// imgfs — the streaming switch both lazy readers share (fs/lazy/lazy_fetch_options.h).
#include "fs/lazy/lazy_fetch_options.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::fs {
namespace {

// A source that only answers ignores_ranges(); the switch asks nothing else.
class RangesSource : public registry::BlobSource {
 public:
  explicit RangesSource(bool ignores) : ignores_(ignores) {}
  Result<registry::FetchedManifest> GetManifest(std::string_view) override {
    return Status::Unsupported("test");
  }
  Status FetchBlob(const registry::Digest&, int64_t, const registry::BlobSink&) override {
    return Status::Unsupported("test");
  }
  Result<std::string> ReadBlobRange(const registry::Digest&, ByteRange) override {
    return Status::Unsupported("test");
  }
  Result<std::vector<std::string>> ListTags() override { return Status::Unsupported("test"); }
  std::string Describe() const override { return "test source"; }
  bool ignores_ranges() const override { return ignores_; }

 private:
  bool ignores_;
};

constexpr uint64_t kUnit = 1 << 20;
const ReadAheadWindow::Length kLength = [](uint32_t) { return kUnit; };

TEST(StreamSwitchTest, HalfTheLayerPresentSwitches) {
  LazyFetchOptions o;
  RangesSource source(false);
  ReadAheadWindow w(o.readahead_min_bytes, o.readahead_max_bytes);
  EXPECT_FALSE(ShouldStream(o, 0, 100, w, source));
  EXPECT_FALSE(ShouldStream(o, 49, 100, w, source));
  EXPECT_TRUE(ShouldStream(o, 50, 100, w, source));
  o.streaming = false;
  EXPECT_FALSE(ShouldStream(o, 100, 100, w, source)) << "switched off";
}

TEST(StreamSwitchTest, ASourceIgnoringRangesSwitchesAtOnce) {
  LazyFetchOptions o;
  RangesSource source(true);
  ReadAheadWindow w(o.readahead_min_bytes, o.readahead_max_bytes);
  EXPECT_TRUE(ShouldStream(o, 0, 100, w, source));
  o.streaming = false;
  EXPECT_FALSE(ShouldStream(o, 0, 100, w, source));
}

TEST(StreamSwitchTest, FullWindowsOfSequentialReadingSwitch) {
  LazyFetchOptions o;
  o.stream_after_full_windows = 2;
  RangesSource source(false);
  ReadAheadWindow w(1 * kUnit, 4 * kUnit);
  uint32_t pos = 0;
  w.Record(pos, pos, kLength);
  while (w.full_windows() < 2 && pos < 1000) {
    EXPECT_FALSE(ShouldStream(o, 0, 1000 * kUnit, w, source)) << pos;
    ++pos;
    w.Record(pos, pos, kLength);
  }
  ASSERT_EQ(w.full_windows(), 2);
  EXPECT_TRUE(ShouldStream(o, 0, 1000 * kUnit, w, source));
}

}  // namespace
}  // namespace imgfs::fs
