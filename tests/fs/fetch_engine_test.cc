// imgfs — FetchEngine: priority order, the bounded and lazily started pool, the exception
// firewall, Stop failing what is queued, WaitIdle and yielding to demand
// (fs/lazy/fetch_engine.h).
#include "fs/lazy/fetch_engine.h"

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/mutex.h"

namespace imgfs::fs {
namespace {

using namespace std::chrono_literals;

struct TestTask {
  FetchPriority priority = FetchPriority::kDemand;
  int id = 0;
  bool throws = false;
  std::shared_future<void> gate;  // the run waits for it when valid
};

// Records the order tasks ran in and the tasks failed, with their messages.
struct Recorder {
  Mutex mu;
  std::vector<int> ran IMGFS_GUARDED_BY(mu);
  std::vector<std::pair<int, std::string>> failed IMGFS_GUARDED_BY(mu);
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};

  FetchEngine<TestTask>::Hooks Hooks() {
    return {[this](TestTask& t) {
              int now = ++running;
              int seen = max_running.load();
              while (now > seen && !max_running.compare_exchange_weak(seen, now)) {
              }
              if (t.gate.valid()) t.gate.wait();
              --running;
              if (t.throws) throw std::runtime_error("task " + std::to_string(t.id));
              MutexLock lock(&mu);
              ran.push_back(t.id);
            },
            [this](TestTask& t, const Status& st) {
              MutexLock lock(&mu);
              failed.emplace_back(t.id, st.ToString());
            }};
  }
  std::vector<int> Ran() {
    MutexLock lock(&mu);
    return ran;
  }
  std::vector<std::pair<int, std::string>> Failed() {
    MutexLock lock(&mu);
    return failed;
  }
};

TestTask Make(int id, FetchPriority priority, std::shared_future<void> gate = {}) {
  TestTask t;
  t.id = id;
  t.priority = priority;
  t.gate = std::move(gate);
  return t;
}

TEST(FetchEngineTest, QueuedTasksRunDemandFirstThenReadAheadThenBackground) {
  Recorder r;
  FetchEngine<TestTask> engine("test-fetch", 1, r.Hooks());
  std::promise<void> open;
  // The one worker is held by task 0 while the rest queue up.
  std::vector<TestTask> first;
  first.push_back(Make(0, FetchPriority::kDemand, open.get_future().share()));
  engine.Submit(std::move(first));
  std::vector<TestTask> rest;
  rest.push_back(Make(1, FetchPriority::kBackground));
  rest.push_back(Make(2, FetchPriority::kReadAhead));
  rest.push_back(Make(3, FetchPriority::kDemand));
  rest.push_back(Make(4, FetchPriority::kReadAhead));
  engine.Submit(std::move(rest));
  EXPECT_FALSE(engine.WaitIdle(20ms));
  open.set_value();
  ASSERT_TRUE(engine.WaitIdle(10s));
  EXPECT_EQ(r.Ran(), (std::vector<int>{0, 3, 2, 4, 1}));
  EXPECT_TRUE(r.Failed().empty());
  EXPECT_EQ(engine.demand(), 0);
}

TEST(FetchEngineTest, RunsAtMostMaxWorkersAtOnce) {
  Recorder r;
  FetchEngine<TestTask> engine("test-fetch", 3, r.Hooks());
  std::promise<void> open;
  std::shared_future<void> gate = open.get_future().share();
  std::vector<TestTask> tasks;
  for (int i = 0; i < 10; ++i) tasks.push_back(Make(i, FetchPriority::kReadAhead, gate));
  engine.Submit(std::move(tasks));
  for (int i = 0; i < 500 && r.running.load() < 3; ++i) std::this_thread::sleep_for(2ms);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(r.running.load(), 3);
  open.set_value();
  ASSERT_TRUE(engine.WaitIdle(10s));
  EXPECT_EQ(r.Ran().size(), 10u);
  EXPECT_EQ(r.max_running.load(), 3);
}

TEST(FetchEngineTest, AThrowingTaskIsFailedAndTheWorkerLivesOn) {
  Recorder r;
  FetchEngine<TestTask> engine("test-fetch", 1, r.Hooks());
  std::vector<TestTask> tasks;
  tasks.push_back(Make(1, FetchPriority::kDemand));
  tasks.back().throws = true;
  tasks.push_back(Make(2, FetchPriority::kDemand));
  engine.Submit(std::move(tasks));
  ASSERT_TRUE(engine.WaitIdle(10s));
  EXPECT_EQ(r.Ran(), std::vector<int>{2});
  auto failed = r.Failed();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].first, 1);
  EXPECT_NE(failed[0].second.find("task 1"), std::string::npos) << failed[0].second;
  EXPECT_EQ(engine.demand(), 0);
}

TEST(FetchEngineTest, StopFailsWhatIsQueuedAndRefusesWhatComesLater) {
  Recorder r;
  auto engine = std::make_unique<FetchEngine<TestTask>>("test-fetch", 1, r.Hooks());
  std::promise<void> open;
  std::vector<TestTask> tasks;
  tasks.push_back(Make(0, FetchPriority::kDemand, open.get_future().share()));
  tasks.push_back(Make(1, FetchPriority::kReadAhead));
  tasks.push_back(Make(2, FetchPriority::kBackground));
  engine->Submit(std::move(tasks));
  for (int i = 0; i < 500 && r.running.load() < 1; ++i) std::this_thread::sleep_for(2ms);
  std::thread stopper([&] { engine->Stop(); });
  while (!engine->stopping()) std::this_thread::sleep_for(1ms);
  open.set_value();  // the running task finishes; the queued ones are failed
  stopper.join();
  EXPECT_EQ(r.Ran(), std::vector<int>{0});
  std::vector<TestTask> late;
  late.push_back(Make(3, FetchPriority::kDemand));
  engine->Submit(std::move(late));
  auto failed = r.Failed();
  ASSERT_EQ(failed.size(), 3u);
  for (const auto& [id, message] : failed) {
    EXPECT_NE(message.find("the mount is closing"), std::string::npos) << id << ": " << message;
  }
  EXPECT_TRUE(engine->WaitIdle(0ms));
  engine.reset();  // a second Stop (the destructor's) is harmless
}

TEST(FetchEngineTest, NoWorkerStartsBeforeThereIsWork) {
  Recorder r;
  FetchEngine<TestTask> engine("test-fetch", 4, r.Hooks());
  EXPECT_TRUE(engine.WaitIdle(0ms));
  std::vector<TestTask> one;
  one.push_back(Make(7, FetchPriority::kBackground));
  engine.Submit(std::move(one));
  ASSERT_TRUE(engine.WaitIdle(10s));
  EXPECT_EQ(r.Ran(), std::vector<int>{7});
  EXPECT_EQ(r.max_running.load(), 1);
}

TEST(FetchEngineTest, BackgroundWorkYieldsWhileDemandIsWaiting) {
  Recorder r;
  FetchEngine<TestTask> engine("test-fetch", 2, r.Hooks());
  // No demand: no wait.
  auto start = std::chrono::steady_clock::now();
  engine.YieldToDemand();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  // A demand task held for 100 ms: the yield lasts about that long, not kMaxYield.
  std::promise<void> open;
  std::vector<TestTask> demand;
  demand.push_back(Make(1, FetchPriority::kDemand, open.get_future().share()));
  engine.Submit(std::move(demand));
  EXPECT_EQ(engine.demand(), 1);
  std::thread opener([&] {
    std::this_thread::sleep_for(100ms);
    open.set_value();
  });
  start = std::chrono::steady_clock::now();
  engine.YieldToDemand();
  const auto waited = std::chrono::steady_clock::now() - start;
  opener.join();
  EXPECT_GE(waited, 90ms);
  EXPECT_LT(waited, FetchEngine<TestTask>::kMaxYield);
  ASSERT_TRUE(engine.WaitIdle(10s));
}

TEST(FetchEngineTest, AMissedDeadlineIsUnavailableNamingFileTimeAndSource) {
  Status st = FetchDeadlineExceeded("etc/passwd", "sha256:ab", 1500ms, "data", "registry x");
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("/etc/passwd"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("1.5"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("registry x"), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace imgfs::fs
