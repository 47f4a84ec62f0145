// Tests for fs/lazy/read_engine.h, the read side both lazy readers share: waiting for units
// with the read's deadline (the fetch goes on), going round once after a failure of a flight
// the read did not own, repairing a unit that failed verification (its bad bytes forgotten,
// fetched anew, bounded, a clear error), and the counters. The units here are flights of a
// SingleFlight table completed by the test (also from many threads at once, for TSan);
// tests/fs/fetcher_test.cc and tests/fs/indexed_fetcher_test.cc check that both readers
// repair through it (repairs()).
#include "fs/lazy/read_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "fs/lazy/single_flight.h"
#include "tests/support/fake_blob_source.h"

namespace imgfs::fs {
namespace {

using ::imgfs::testing::FakeBlobSource;
using Wait = ReadEngine::Wait<Status>;

// A flight already completed with `value`.
Wait Done(size_t slot, Status value, bool own) {
  std::promise<Status> p;
  p.set_value(std::move(value));
  return Wait{slot, p.get_future().share(), own};
}

Status TakeStatus(size_t, const Status& st) { return st; }
std::string Data(size_t) { return "data"; }

}  // namespace

class ReadEngineTest : public ::testing::Test {
 protected:
  ReadEngine engine_{std::make_shared<FakeBlobSource>(std::string(10, 'x')), "sha256:layer",
                     ReadEngine::Options{std::chrono::seconds(60), 1}};
};

TEST_F(ReadEngineTest, AFlightNotDoneByTheDeadlineIsUnavailableAndGoesOn) {
  ReadEngine engine(std::make_shared<FakeBlobSource>(std::string(10, 'x')), "sha256:layer",
                    ReadEngine::Options{std::chrono::milliseconds(50), 1});
  SingleFlight<int, Status> flights;
  std::optional<SingleFlight<int, Status>::Flight> flight = flights.Claim(7);
  ASSERT_TRUE(flight.has_value());
  const ReadEngine::Read read = engine.Begin("etc/hosts");
  Status st = engine.Await(
      read,
      [&](int) {
        return std::vector<Wait>{Wait{0, flight->future, true}};
      },
      TakeStatus, [](size_t) { return std::string("chunk sha256:abc"); });
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("/etc/hosts"), std::string::npos) << st.ToString();
  // The fetch itself goes on: its flight is still there, and completes later.
  EXPECT_TRUE(flights.InFlight(7));
  EXPECT_TRUE(flights.Complete(7, flight->ticket, Status::Ok()));
  EXPECT_EQ(engine.Stats(100).errors, 0u) << "Await counts nothing; the read's Failed does";
}

TEST_F(ReadEngineTest, ADeadlineInARepairIsAFailedRead) {
  ReadEngine engine(std::make_shared<FakeBlobSource>(std::string(10, 'x')), "sha256:layer",
                    ReadEngine::Options{std::chrono::milliseconds(50), 1});
  std::promise<Status> never;
  std::shared_future<Status> future = never.get_future().share();
  const ReadEngine::Read read = engine.Begin("f");
  Status st = engine.Repair(
      read, {0},
      [&](const std::vector<size_t>&) {
        return engine.Await(
            read,
            [&](int) {
              return std::vector<Wait>{Wait{0, future, true}};
            },
            TakeStatus, Data);
      },
      [](size_t) { return ReadEngine::Verdict{}; }, [](size_t) {});
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_EQ(engine.Stats(100).errors, 1u);
}

TEST_F(ReadEngineTest, AFailedFlightTheReadDidNotOwnSendsItRoundOnceToFetchItself) {
  std::vector<int> passes;
  Status st = engine_.Await(
      engine_.Begin("f"),
      [&](int pass) {
        passes.push_back(pass);
        // First the read-ahead's flight (tried once) failed; then the read's own succeeds.
        if (pass == 0) return std::vector<Wait>{Done(0, Status::Unavailable("gone"), false)};
        return std::vector<Wait>{Done(0, Status::Ok(), true)};
      },
      TakeStatus, Data);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(passes, (std::vector<int>{0, 1}));
}

TEST_F(ReadEngineTest, AFailureOfTheReadsOwnFlightIsTheAnswer) {
  int rounds = 0;
  Status st = engine_.Await(
      engine_.Begin("f"),
      [&](int) {
        ++rounds;
        return std::vector<Wait>{Done(0, Status::Ok(), false),
                                 Done(1, Status::Unavailable("refused"), true)};
      },
      TakeStatus, Data);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_EQ(rounds, 1);
}

TEST_F(ReadEngineTest, TakeSeesEveryValueAndItsErrorFailsTheRound) {
  std::vector<size_t> taken;
  Status st = engine_.Await(
      engine_.Begin("f"),
      [&](int) {
        return std::vector<Wait>{Done(2, Status::Ok(), true), Done(5, Status::Ok(), true)};
      },
      [&](size_t slot, const Status&) {
        taken.push_back(slot);
        return slot == 5 ? Status::Corrupt("bad (test)") : Status::Ok();
      },
      Data);
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_EQ(taken, (std::vector<size_t>{2, 5}));
}

// A format whose units are fetched by `ensure` and checked by `verify` against what the
// "source" answered: the repair forgets the bad bytes (discard) and fetches them anew.
struct FakeFormat {
  std::vector<std::string> stored;           // by slot: the bytes the last fetch wrote ("" = none)
  std::vector<std::string> answers;          // what the source answers, one per fetch, in order
  std::vector<std::vector<size_t>> fetched;  // the `need` of each ensure
  std::vector<size_t> discarded;
  size_t next_answer = 0;

  Status Ensure(const std::vector<size_t>& need) {
    fetched.push_back(need);
    for (size_t slot : need) {
      if (!stored[slot].empty()) continue;  // present: nothing to fetch
      stored[slot] = answers[std::min(next_answer++, answers.size() - 1)];
    }
    return Status::Ok();
  }
  ReadEngine::Verdict Verify(size_t slot) const {
    if (stored[slot] == "good") return {};
    return {Status::Corrupt("unit " + std::to_string(slot) + ": digest mismatch")};
  }
  void Discard(size_t slot) {
    discarded.push_back(slot);
    stored[slot].clear();
  }
};

TEST_F(ReadEngineTest, ACorruptUnitIsFetchedAgainWithoutItsBadBytesAndCounted) {
  FakeFormat f;
  f.stored.assign(3, "");
  f.answers = {"good", "bad", "good", "good"};  // unit 1's first answer is bad
  Status st = engine_.Repair(
      engine_.Begin("f"), {0, 1, 2}, [&](const std::vector<size_t>& n) { return f.Ensure(n); },
      [&](size_t s) { return f.Verify(s); }, [&](size_t s) { f.Discard(s); });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(f.fetched, (std::vector<std::vector<size_t>>{{0, 1, 2}, {1}}));
  EXPECT_EQ(f.discarded, std::vector<size_t>{1});
  EXPECT_EQ(f.stored, (std::vector<std::string>{"good", "good", "good"}));
  EXPECT_EQ(engine_.repairs(), 1u);
  EXPECT_EQ(engine_.Stats(100).errors, 0u);
}

TEST_F(ReadEngineTest, RepairsAreBoundedThenTheCorruptStatusIsTheAnswer) {
  FakeFormat f;
  f.stored.assign(1, "");
  f.answers = {"bad"};  // every answer bad
  Status st = engine_.Repair(
      engine_.Begin("f"), {0}, [&](const std::vector<size_t>& n) { return f.Ensure(n); },
      [&](size_t s) { return f.Verify(s); }, [&](size_t s) { f.Discard(s); });
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("digest mismatch"), std::string::npos) << st.ToString();
  EXPECT_EQ(f.fetched.size(), 2u) << "one fetch, one refetch";
  EXPECT_EQ(engine_.repairs(), 1u);
  EXPECT_EQ(engine_.Stats(100).errors, 1u);

  // More repairs allowed: more refetches, still bounded.
  ReadEngine patient(std::make_shared<FakeBlobSource>(std::string(10, 'x')), "sha256:layer",
                     ReadEngine::Options{std::chrono::seconds(60), 3});
  FakeFormat g;
  g.stored.assign(1, "");
  g.answers = {"bad"};
  st = patient.Repair(
      patient.Begin("f"), {0}, [&](const std::vector<size_t>& n) { return g.Ensure(n); },
      [&](size_t s) { return g.Verify(s); }, [&](size_t s) { g.Discard(s); });
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_EQ(g.fetched.size(), 4u);
  EXPECT_EQ(patient.repairs(), 3u);
}

TEST_F(ReadEngineTest, AnErrorOtherThanCorruptIsNotRepaired) {
  int ensured = 0;
  Status st = engine_.Repair(
      engine_.Begin("f"), {0},
      [&](const std::vector<size_t>&) {
        ++ensured;
        return Status::Ok();
      },
      [](size_t) { return ReadEngine::Verdict{Status::Io("sparse copy unreadable (test)")}; },
      [](size_t) { ADD_FAILURE() << "nothing to discard"; });
  EXPECT_EQ(st.code(), StatusCode::kIo);
  EXPECT_EQ(ensured, 1);
  EXPECT_EQ(engine_.repairs(), 0u);
}

TEST_F(ReadEngineTest, ABusyUnitIsWaitedForAgainWithoutARepair) {
  int verified = 0;
  std::vector<std::vector<size_t>> ensured;
  Status st = engine_.Repair(
      engine_.Begin("f"), {0, 1},
      [&](const std::vector<size_t>& n) {
        ensured.push_back(n);
        return Status::Ok();
      },
      [&](size_t slot) {
        // Unit 1's bytes are being fetched again by another read the first time.
        ReadEngine::Verdict v;
        v.busy = slot == 1 && verified++ == 0;
        return v;
      },
      [](size_t) { ADD_FAILURE() << "a busy unit is not repaired"; });
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ensured, (std::vector<std::vector<size_t>>{{0, 1}, {1}}));
  EXPECT_EQ(engine_.repairs(), 0u);
}

TEST_F(ReadEngineTest, CountersAreTheLayerStats) {
  engine_.CountSetup(2, 4096);                // the TOC
  engine_.counters()->requests.fetch_add(1);  // what a RangeFetcher counts
  engine_.counters()->bytes_fetched.fetch_add(100);
  engine_.CountFetched();
  engine_.CountFetched();
  engine_.CountHit();
  engine_.CountError();
  EXPECT_EQ(engine_.Failed(Status::Corrupt("x")).code(), StatusCode::kCorrupt);
  LayerStats s = engine_.Stats(12345);
  EXPECT_TRUE(s.lazy);
  EXPECT_EQ(s.blob_size, 12345u);
  EXPECT_EQ(s.requests, 3u);
  EXPECT_EQ(s.bytes_fetched, 4196u);
  EXPECT_EQ(s.chunks_fetched, 2u);
  EXPECT_EQ(engine_.units_fetched(), 2u);
  EXPECT_EQ(s.cache_hits, 1u);
  EXPECT_EQ(s.errors, 2u);
}

// Readers on many threads: one claims the unit, the others join its flight; all wait with
// their own deadline, and the counters they bump from every thread add up (run under TSan).
TEST_F(ReadEngineTest, ReadersOnManyThreadsShareOneFlightAndTheirCountsAddUp) {
  constexpr int kReaders = 8;
  SingleFlight<int, Status> flights;
  std::promise<SingleFlight<int, Status>::Ticket> claimed;
  std::shared_future<SingleFlight<int, Status>::Ticket> ticket = claimed.get_future().share();
  std::atomic<int> waiting{0};
  std::vector<std::thread> readers;
  std::vector<Status> results(kReaders, Status::Internal("not run"));
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      const ReadEngine::Read read = engine_.Begin("f");
      results[static_cast<size_t>(r)] = engine_.Await(
          read,
          [&](int) {
            std::optional<SingleFlight<int, Status>::Flight> f =
                flights.JoinOrClaim(7, [] { return false; });
            if (f->claimed()) claimed.set_value(f->ticket);
            waiting.fetch_add(1);
            return std::vector<Wait>{Wait{0, f->future, f->claimed()}};
          },
          [&](size_t, const Status& st) {
            engine_.CountHit();
            return st;
          },
          Data);
      engine_.CountFetched();
    });
  }
  // Completed once every reader waits on it (or took it: a waiter never misses a value).
  const SingleFlight<int, Status>::Ticket owner = ticket.get();
  while (waiting.load() < kReaders) std::this_thread::yield();
  EXPECT_TRUE(flights.Complete(7, owner, Status::Ok()));
  for (std::thread& t : readers) t.join();
  for (const Status& st : results) EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(flights.size(), 0u);
  EXPECT_EQ(engine_.Stats(1).cache_hits, static_cast<uint64_t>(kReaders));
  EXPECT_EQ(engine_.Stats(1).chunks_fetched, static_cast<uint64_t>(kReaders));
}

}  // namespace imgfs::fs
