// Tests for fs/lazy/range_fetcher.h, the fetch path both lazy readers share: planning reads
// into multi-range batches (caps on ranges and bytes), joining adjacent units, attempts
// (a unit refused once is fetched again, alone), the stats it counts, a stopping engine, and
// the streaming hand-off (offsets, early end, a short blob, a throwing consumer, a stop).
// Requests go to testing::FakeBlobSource over an in-memory blob.
#include "fs/lazy/range_fetcher.h"

#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/fake_blob_source.h"

namespace imgfs::fs {
namespace {

using ::imgfs::testing::FakeBlobSource;

struct NoTask {
  FetchPriority priority = FetchPriority::kDemand;
};

// An engine nobody submits to: the FetchControl a fetch checks (stopping, demand).
class IdleEngine : public FetchEngine<NoTask> {
 public:
  IdleEngine()
      : FetchEngine<NoTask>("test-fetch", 1, {[](NoTask&) {}, [](NoTask&, const Status&) {}}) {}
};

std::string Blob(size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>('a' + i % 26);
  return out;
}

const registry::Digest& AnyDigest() {
  static const registry::Digest digest = registry::Digest::Sha256Of("blob");
  return digest;
}

// Each unit a read of its own; delivery keeps the bytes by unit.
RangeFetcher::Plan OneReadPerUnit(const std::vector<ByteRange>& units) {
  return [units](const std::vector<size_t>& todo) {
    std::vector<UnitRead> reads;
    for (size_t k : todo) reads.push_back(UnitRead{units[k], {k}});
    return reads;
  };
}

TEST(PlanRangeBatchesTest, CutsAtTheRangeAndByteCapsAndSendsAHugeRangeAlone) {
  std::vector<ByteRange> ranges;
  for (uint64_t i = 0; i < 5; ++i) ranges.push_back(ByteRange{i * 100, 10});
  std::vector<RangeBatch> batches = PlanRangeBatches(ranges, 1000, 2);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].first, 0u);
  EXPECT_EQ(batches[0].last, 2u);
  EXPECT_EQ(batches[1].first, 2u);
  EXPECT_EQ(batches[1].last, 4u);
  EXPECT_EQ(batches[2].first, 4u);
  EXPECT_EQ(batches[2].last, 5u);

  // 25 bytes per batch: two ranges of 10; a range of 30 goes alone.
  ranges = {{0, 10}, {20, 10}, {40, 10}, {60, 30}, {100, 10}};
  batches = PlanRangeBatches(ranges, 25, 32);
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[0].last - batches[0].first, 2u);
  EXPECT_EQ(batches[1].last - batches[1].first, 1u);
  EXPECT_EQ(batches[2].first, 3u);
  EXPECT_EQ(batches[2].last, 4u);
  EXPECT_EQ(batches[3].first, 4u);

  EXPECT_TRUE(PlanRangeBatches({}, 25, 32).empty());
}

TEST(JoinAdjacentUnitsTest, JoinsTouchingUnitsUpToTheCap) {
  const std::vector<ByteRange> units = {{0, 10}, {10, 10}, {20, 10}, {40, 10}, {50, 30}};
  std::vector<UnitRead> reads = JoinAdjacentUnits(units, 25);
  ASSERT_EQ(reads.size(), 4u);
  EXPECT_EQ(reads[0].range.offset, 0u);
  EXPECT_EQ(reads[0].range.length, 20u);
  EXPECT_EQ(reads[0].units, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(reads[1].range.offset, 20u);  // the cap
  EXPECT_EQ(reads[1].units, (std::vector<size_t>{2}));
  EXPECT_EQ(reads[2].range.offset, 40u);  // the gap
  EXPECT_EQ(reads[3].range.length, 30u);  // larger than the cap: alone
  EXPECT_EQ(reads[3].units, (std::vector<size_t>{4}));
}

TEST(RangeFetcherTest, DisjointReadsGoOutAsOneMultiRangeRequestAndAreCounted) {
  const std::string blob = Blob(1000);
  auto source = std::make_shared<FakeBlobSource>(blob);
  source->set_multi_range(true);
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  const std::vector<ByteRange> units = {{0, 100}, {300, 50}, {900, 100}};
  std::vector<std::string> got(units.size());
  std::vector<size_t> failed = fetcher.Fetch(
      units.size(), 2, engine, OneReadPerUnit(units),
      [&](const UnitRead& read, const Result<std::string>& bytes, std::vector<size_t>*) {
        ASSERT_TRUE(bytes.has_value()) << bytes.error().ToString();
        for (size_t k : read.units) got[k] = *bytes;
      });
  EXPECT_TRUE(failed.empty());
  for (size_t k = 0; k < units.size(); ++k) {
    EXPECT_EQ(got[k], blob.substr(units[k].offset, units[k].length)) << k;
  }
  EXPECT_EQ(source->requests(), 1);
  EXPECT_EQ(source->multi_range_requests(), 1);
  EXPECT_EQ(counters.requests.load(), 1u);
  EXPECT_EQ(counters.bytes_fetched.load(), 250u);
  EXPECT_EQ(fetcher.attempts(), 1u);
  EXPECT_EQ(fetcher.multi_range_batches(), 1u);
}

TEST(RangeFetcherTest, TheByteCapSplitsBatchesAndASingleReadIsAPlainRangedRead) {
  const std::string blob = Blob(1000);
  auto source = std::make_shared<FakeBlobSource>(blob);
  source->set_multi_range(true);
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 150, 32);
  IdleEngine engine;
  // 100 + 50 fit one batch; the third (100) goes alone, as a plain ranged read.
  const std::vector<ByteRange> units = {{0, 100}, {300, 50}, {900, 100}};
  std::vector<size_t> failed =
      fetcher.Fetch(units.size(), 1, engine, OneReadPerUnit(units),
                    [&](const UnitRead&, const Result<std::string>& bytes, std::vector<size_t>*) {
                      EXPECT_TRUE(bytes.has_value());
                    });
  EXPECT_TRUE(failed.empty());
  EXPECT_EQ(source->requests(), 2);
  EXPECT_EQ(source->multi_range_requests(), 1);
  EXPECT_EQ(counters.requests.load(), 2u);
  EXPECT_EQ(counters.bytes_fetched.load(), 250u);
}

TEST(RangeFetcherTest, ARefusedUnitIsFetchedAgainAloneUpToTheAttempts) {
  const std::string blob = Blob(1000);
  auto source = std::make_shared<FakeBlobSource>(blob);
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  const std::vector<ByteRange> units = {{0, 100}, {200, 100}};
  int deliveries_of_1 = 0;
  std::vector<int> failed_attempts;
  auto deliver = [&](const UnitRead& read, const Result<std::string>& bytes,
                     std::vector<size_t>* refused) {
    ASSERT_TRUE(bytes.has_value());
    for (size_t k : read.units) {
      if (k == 1 && ++deliveries_of_1 < 3) refused->push_back(k);  // "failed its digest"
    }
  };
  auto log = [&](int attempt, size_t tried, const std::vector<size_t>& failed) {
    failed_attempts.push_back(attempt);
    EXPECT_EQ(failed, std::vector<size_t>{1});
    EXPECT_EQ(tried, attempt == 1 ? 2u : 1u);
  };
  // Two attempts: unit 1 is refused both times and is the answer.
  std::vector<size_t> failed =
      fetcher.Fetch(units.size(), 2, engine, OneReadPerUnit(units), deliver, log);
  EXPECT_EQ(failed, std::vector<size_t>{1});
  EXPECT_EQ(deliveries_of_1, 2);
  EXPECT_EQ(failed_attempts, (std::vector<int>{1, 2}));
  // Only unit 1 went out again: 2 + 1 requests.
  EXPECT_EQ(source->requests(), 3);
  EXPECT_EQ(counters.requests.load(), 3u);
  EXPECT_EQ(fetcher.attempts(), 2u);

  // A third attempt delivers it.
  deliveries_of_1 = 0;
  failed_attempts.clear();
  failed = fetcher.Fetch(units.size(), 3, engine, OneReadPerUnit(units), deliver, log);
  EXPECT_TRUE(failed.empty());
  EXPECT_EQ(deliveries_of_1, 3);
}

TEST(RangeFetcherTest, AFailedRequestFailsItsUnitsWithTheSourcesError) {
  auto source = std::make_shared<FakeBlobSource>(Blob(1000));
  source->set_fail(true);
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  const std::vector<ByteRange> units = {{0, 100}};
  Status seen = Status::Ok();
  std::vector<size_t> failed = fetcher.Fetch(
      1, 2, engine, OneReadPerUnit(units),
      [&](const UnitRead& read, const Result<std::string>& bytes, std::vector<size_t>* refused) {
        ASSERT_FALSE(bytes.has_value());
        seen = bytes.error();
        for (size_t k : read.units) refused->push_back(k);
      });
  EXPECT_EQ(failed, std::vector<size_t>{0});
  EXPECT_EQ(seen.code(), StatusCode::kUnavailable);
  EXPECT_EQ(source->requests(), 2);
  EXPECT_EQ(counters.requests.load(), 2u);
  EXPECT_EQ(counters.bytes_fetched.load(), 0u);
}

TEST(RangeFetcherTest, AStoppingEngineSendsNothingAndFailsTheUnits) {
  auto source = std::make_shared<FakeBlobSource>(Blob(1000));
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  engine.Stop();
  const std::vector<ByteRange> units = {{0, 100}, {500, 100}};
  std::vector<Status> seen;
  std::vector<size_t> failed = fetcher.Fetch(
      units.size(), 2, engine, OneReadPerUnit(units),
      [&](const UnitRead& read, const Result<std::string>& bytes, std::vector<size_t>* refused) {
        ASSERT_FALSE(bytes.has_value());
        seen.push_back(bytes.error());
        for (size_t k : read.units) refused->push_back(k);
      });
  EXPECT_EQ(failed, (std::vector<size_t>{0, 1}));
  ASSERT_EQ(seen.size(), 2u);  // one attempt: nothing is tried again once stopping
  EXPECT_EQ(seen[0].code(), StatusCode::kUnavailable);
  EXPECT_EQ(source->requests(), 0);
  EXPECT_EQ(counters.requests.load(), 0u);

  int consumed = 0;
  Status st = fetcher.Stream(ByteRange{0, 100}, false, engine,
                             [&](uint64_t, std::string_view) -> Result<RangeFetcher::StreamStep> {
                               ++consumed;
                               return RangeFetcher::StreamStep::kMore;
                             });
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_EQ(consumed, 0);
}

// The stream's buffers: FakeBlobSource streams through BlobSource's default StreamBlobRange,
// kStreamPieceBytes per buffer, so a blob of three and a half pieces arrives in four.
TEST(RangeFetcherStreamTest, HandsOverContiguousBuffersWithTheirOffsetsAndCountsThem) {
  const uint64_t piece = registry::BlobSource::kStreamPieceBytes;
  const std::string blob = Blob(static_cast<size_t>(piece * 3 + piece / 2));
  auto source = std::make_shared<FakeBlobSource>(blob);
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  const ByteRange range{100, blob.size() - 100};
  std::string got;
  std::vector<uint64_t> offsets;
  Status st = fetcher.Stream(
      range, true, engine,
      [&](uint64_t offset, std::string_view data) -> Result<RangeFetcher::StreamStep> {
        offsets.push_back(offset);
        EXPECT_EQ(offset, range.offset + got.size());
        got.append(data);
        return RangeFetcher::StreamStep::kMore;
      });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, blob.substr(100));
  EXPECT_EQ(offsets.size(), 4u);
  EXPECT_EQ(counters.requests.load(), 1u);
  EXPECT_EQ(counters.bytes_fetched.load(), range.length);
}

TEST(RangeFetcherStreamTest, TheConsumerEndsItEarlyWithoutError) {
  const uint64_t piece = registry::BlobSource::kStreamPieceBytes;
  auto source = std::make_shared<FakeBlobSource>(Blob(static_cast<size_t>(piece * 3)));
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  int buffers = 0;
  Status st = fetcher.Stream(ByteRange{0, piece * 3}, false, engine,
                             [&](uint64_t, std::string_view) -> Result<RangeFetcher::StreamStep> {
                               ++buffers;
                               return RangeFetcher::StreamStep::kEnough;
                             });
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(buffers, 1);
  EXPECT_EQ(source->requests(), 1);  // the rest was never asked for
}

TEST(RangeFetcherStreamTest, ABlobEndingInsideTheRangeIsAnError) {
  auto source = std::make_shared<FakeBlobSource>(Blob(1000));
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  uint64_t consumed = 0;
  Status st =
      fetcher.Stream(ByteRange{500, 1000}, false, engine,
                     [&](uint64_t, std::string_view data) -> Result<RangeFetcher::StreamStep> {
                       consumed += data.size();
                       return RangeFetcher::StreamStep::kMore;
                     });
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("ended at 1000"), std::string::npos) << st.ToString();
  EXPECT_EQ(consumed, 500u);
}

TEST(RangeFetcherStreamTest, AConsumerErrorOrExceptionStopsItWithThatError) {
  auto source = std::make_shared<FakeBlobSource>(Blob(1000));
  LayerCounters counters;
  RangeFetcher fetcher(source, AnyDigest(), &counters, 1 << 20, 32);
  IdleEngine engine;
  Status st = fetcher.Stream(ByteRange{0, 1000}, false, engine,
                             [&](uint64_t, std::string_view) -> Result<RangeFetcher::StreamStep> {
                               return Status::Io("disk full (test)");
                             });
  EXPECT_EQ(st.code(), StatusCode::kIo);
  st = fetcher.Stream(ByteRange{0, 1000}, false, engine,
                      [&](uint64_t, std::string_view) -> Result<RangeFetcher::StreamStep> {
                        throw std::runtime_error("boom (test)");
                      });
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_NE(st.message().find("boom"), std::string::npos) << st.ToString();
}

// The streaming pass: the format's segments one after another, each handed over buffer by
// buffer, each ended by `done`; the pass ends when `next` has none left. Every pass here
// streams a 1000-byte blob.
class RangeFetcherStreamPassTest : public ::testing::Test {
 protected:
  // Hooks claiming 100-byte segments from 0 on without end (`claimed_` counts them),
  // dropping their bytes; `done` passes the segment's result on.
  RangeFetcher::StreamPassHooks EndlessSegments() {
    RangeFetcher::StreamPassHooks hooks;
    hooks.next = [this]() -> std::optional<ByteRange> {
      return ByteRange{uint64_t(claimed_++) * 100, 100};
    };
    hooks.consume = [](uint64_t, std::string_view) -> Result<RangeFetcher::StreamStep> {
      return RangeFetcher::StreamStep::kMore;
    };
    hooks.done = [](Status st) { return st; };
    return hooks;
  }

  const std::string blob_ = Blob(1000);
  std::shared_ptr<FakeBlobSource> source_ = std::make_shared<FakeBlobSource>(blob_);
  LayerCounters counters_;
  RangeFetcher fetcher_{source_, AnyDigest(), &counters_, 1 << 20, 32};
  IdleEngine engine_;
  int claimed_ = 0;
};

TEST_F(RangeFetcherStreamPassTest, StreamsEverySegmentTheFormatClaimsThenEnds) {
  const std::vector<ByteRange> segments = {{0, 100}, {300, 200}, {900, 100}};
  std::string got;
  std::vector<bool> done;
  RangeFetcher::StreamPassHooks hooks;
  hooks.next = [&]() -> std::optional<ByteRange> {
    if (static_cast<size_t>(claimed_) == segments.size()) return std::nullopt;
    return segments[static_cast<size_t>(claimed_++)];
  };
  hooks.consume = [&](uint64_t offset, std::string_view data) -> Result<RangeFetcher::StreamStep> {
    EXPECT_EQ(std::string(data), blob_.substr(offset, data.size()));
    got.append(data);
    return RangeFetcher::StreamStep::kMore;
  };
  hooks.done = [&](Status st) {
    done.push_back(st.ok());
    return st;
  };
  Status st = fetcher_.StreamPass(true, engine_, hooks);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(got, blob_.substr(0, 100) + blob_.substr(300, 200) + blob_.substr(900, 100));
  EXPECT_EQ(done, (std::vector<bool>{true, true, true}));
  EXPECT_EQ(counters_.requests.load(), 3u);
  EXPECT_EQ(counters_.bytes_fetched.load(), 400u);
  EXPECT_EQ(source_->requests(), 3);
}

TEST_F(RangeFetcherStreamPassTest, AFailedSegmentEndsThePassAndDoneSeesItsError) {
  source_->set_fail(true);
  std::vector<StatusCode> seen;
  RangeFetcher::StreamPassHooks hooks = EndlessSegments();
  hooks.done = [&](Status st) {
    seen.push_back(st.code());
    return st;
  };
  Status st = fetcher_.StreamPass(false, engine_, hooks);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_EQ(claimed_, 1);  // nothing claimed after the failure
  EXPECT_EQ(seen, std::vector<StatusCode>{StatusCode::kUnavailable});
}

TEST_F(RangeFetcherStreamPassTest, AnExceptionWhileClaimingGoesToDoneAsInternal) {
  Status seen = Status::Ok();
  RangeFetcher::StreamPassHooks hooks = EndlessSegments();
  hooks.next = []() -> std::optional<ByteRange> { throw std::bad_alloc(); };
  hooks.done = [&](Status st) {
    seen = st;
    return st;
  };
  Status st = fetcher_.StreamPass(false, engine_, hooks);
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_EQ(seen.code(), StatusCode::kInternal);
  EXPECT_EQ(source_->requests(), 0);
}

TEST_F(RangeFetcherStreamPassTest, AStoppingEngineEndsThePassBetweenSegments) {
  RangeFetcher::StreamPassHooks hooks = EndlessSegments();
  hooks.done = [&](Status st) {
    if (claimed_ == 2) engine_.Stop();  // the mount closes after the second segment
    return st;
  };
  Status st = fetcher_.StreamPass(false, engine_, hooks);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_EQ(claimed_, 2);
  EXPECT_EQ(source_->requests(), 2);
}

}  // namespace
}  // namespace imgfs::fs
