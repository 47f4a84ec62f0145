// Tests for fs/lazy/single_flight.h: one claim per key, joins share the claimant's value,
// completion forgets the key before waking waiters, a ticket completes once and never a
// later claim of its key, the `done` re-check of JoinOrClaim, and many threads on one key.
#include "fs/lazy/single_flight.h"

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/status.h"

namespace imgfs::fs {
namespace {

using Flights = SingleFlight<std::string, int>;

TEST(SingleFlightTest, OneClaimPerKeyAndJoinersGetItsValue) {
  Flights flights;
  std::optional<Flights::Flight> mine = flights.Claim("a");
  ASSERT_TRUE(mine.has_value());
  EXPECT_TRUE(mine->claimed());
  EXPECT_FALSE(flights.Claim("a").has_value()) << "a key in flight is claimed once";
  EXPECT_TRUE(flights.Claim("b").has_value()) << "other keys are independent";
  std::optional<Flights::Flight> joined = flights.Find("a");
  ASSERT_TRUE(joined.has_value());
  EXPECT_FALSE(joined->claimed());
  std::optional<Flights::Flight> also = flights.JoinOrClaim("a", [] { return false; });
  ASSERT_TRUE(also.has_value());
  EXPECT_FALSE(also->claimed());
  EXPECT_TRUE(flights.InFlight("a"));
  EXPECT_EQ(flights.size(), 2u);

  EXPECT_TRUE(flights.Complete("a", mine->ticket, 42));
  EXPECT_EQ(joined->future.get(), 42);
  EXPECT_EQ(also->future.get(), 42);
  EXPECT_EQ(mine->future.get(), 42);
  EXPECT_FALSE(flights.InFlight("a"));
  EXPECT_FALSE(flights.Find("a").has_value());
  EXPECT_TRUE(flights.Claim("a").has_value()) << "a completed key can be claimed again";
}

TEST(SingleFlightTest, ATicketCompletesOnceAndNeverALaterClaim) {
  Flights flights;
  std::optional<Flights::Flight> first = flights.Claim("k");
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(flights.Complete("k", first->ticket, 1));
  std::optional<Flights::Flight> second = flights.Claim("k");
  ASSERT_TRUE(second.has_value());
  // A failure path completing every ticket of its task again (the engine's fail hook).
  EXPECT_FALSE(flights.Complete("k", first->ticket, -1));
  EXPECT_TRUE(flights.InFlight("k")) << "the later claim was dropped";
  EXPECT_EQ(first->future.get(), 1);
  EXPECT_TRUE(flights.Complete("k", second->ticket, 2));
  EXPECT_EQ(second->future.get(), 2);
}

TEST(SingleFlightTest, JoinOrClaimRechecksDoneWorkInTheSameStep) {
  Flights flights;
  int checks = 0;
  // Completed between the caller's own look and the claim: no claim, no flight.
  std::optional<Flights::Flight> none = flights.JoinOrClaim("x", [&] {
    ++checks;
    return true;
  });
  EXPECT_FALSE(none.has_value());
  EXPECT_EQ(checks, 1);
  EXPECT_FALSE(flights.InFlight("x"));
  // Not done: claimed.
  std::optional<Flights::Flight> claimed = flights.JoinOrClaim("x", [&] {
    ++checks;
    return false;
  });
  ASSERT_TRUE(claimed.has_value());
  EXPECT_TRUE(claimed->claimed());
  // In flight: joined, without asking `done`.
  std::optional<Flights::Flight> joined = flights.JoinOrClaim("x", [&] {
    ++checks;
    return true;
  });
  ASSERT_TRUE(joined.has_value());
  EXPECT_FALSE(joined->claimed());
  EXPECT_EQ(checks, 2);
  EXPECT_TRUE(flights.Complete("x", claimed->ticket, 7));
}

// A waiter woken by a failure finds the key free: it can claim and fetch it itself.
TEST(SingleFlightTest, AWaiterWokenByAFailureCanClaimAtOnce) {
  SingleFlight<uint32_t, Status> flights;
  std::optional<SingleFlight<uint32_t, Status>::Flight> owner = flights.Claim(3);
  ASSERT_TRUE(owner.has_value());
  std::optional<SingleFlight<uint32_t, Status>::Flight> waiter = flights.Find(3);
  ASSERT_TRUE(waiter.has_value());
  auto retry = std::async(std::launch::async, [&] {
    Status st = waiter->future.get();
    return !st.ok() && flights.Claim(3).has_value();
  });
  EXPECT_TRUE(flights.Complete(3, owner->ticket, Status::Unavailable("test")));
  EXPECT_TRUE(retry.get());
}

// Many threads asking for one key at once: exactly one claims it, everyone gets its value.
TEST(SingleFlightTest, ManyThreadsOnOneKeyMakeOneClaim) {
  Flights flights;
  constexpr int kThreads = 16;
  std::atomic<int> claims{0};
  std::atomic<int> ready{0};
  std::atomic<int> arrived{0};  // threads past JoinOrClaim
  std::atomic<int> right{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      std::optional<Flights::Flight> flight = flights.JoinOrClaim("chunk", [] { return false; });
      arrived.fetch_add(1);
      if (!flight.has_value()) return;
      if (flight->claimed()) {
        claims.fetch_add(1);
        // Complete once everyone asked: a later ask would find the key free and claim it.
        while (arrived.load() < kThreads) std::this_thread::yield();
        flights.Complete("chunk", flight->ticket, 99);
      }
      if (flight->future.get() == 99) right.fetch_add(1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(claims.load(), 1);
  EXPECT_EQ(right.load(), kThreads);
  EXPECT_FALSE(flights.InFlight("chunk"));
}

}  // namespace
}  // namespace imgfs::fs
