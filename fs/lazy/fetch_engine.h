// imgfs — FetchEngine: the worker pool both lazy readers run their fetches on
// (fs/lazy/fetcher.h: chunks of eStargz / zstd:chunked layers; fs/lazy/indexed_fetcher.h:
// checkpoint pieces of plain layers).
//
// A reader plans tasks (what to fetch, at which priority) and submits them; the engine queues
// them by priority (demand before read-ahead before background) and runs each on one of at
// most `max_workers` threads, started only when there is work for them (a mounted layer
// nobody reads costs no thread). Background work yields to demand: YieldToDemand, called by
// a long streaming pass between buffers, sleeps while demand tasks are queued or running
// (bounded, so the stream is never starved for long).
//
// Failure containment (base/thread.h): a task whose run throws is handed to `fail` with the
// Status made from the exception, and the worker lives on. Stop (also run by the destructor)
// refuses new tasks, lets running ones finish, joins the workers and hands every task still
// queued to `fail` with Unavailable("the mount is closing"), so no waiter hangs. A reader
// owning an engine calls Stop first in its destructor, before the state its hooks use goes.
//
// The engine does not know what a task fetches: which units a task claimed (SingleFlight,
// keyed by chunk digest or piece number) is the reader's; waiting for them and repairing them
// is ReadEngine's (fs/lazy/read_engine.h).
//
// Thread-safety: every method may be called from any thread, also from inside a hook, except
// Stop (it joins the workers). The engine's lock is a leaf: hooks run without it.
#ifndef IMGFS_FS_LAZY_FETCH_ENGINE_H_
#define IMGFS_FS_LAZY_FETCH_ENGINE_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/mutex.h"
#include "base/status.h"
#include "base/thread.h"
#include "base/thread_annotations.h"

namespace imgfs::fs {

enum class FetchPriority { kDemand = 0, kReadAhead = 1, kBackground = 2 };

// A Read's deadline (LazyFetchOptions::fetch_timeout) passed while `what` ("chunk sha256:…",
// "data") of /`path` in layer `layer` was not yet fetched from `source`: logs it and returns
// the Unavailable the read answers (EIO). The fetch itself goes on.
inline Status FetchDeadlineExceeded(const std::string& path, const std::string& layer,
                                    std::chrono::milliseconds timeout, const std::string& what,
                                    const std::string& source) {
  const double seconds = static_cast<double>(timeout.count()) / 1000.0;
  IMGFS_LOG(kWarning) << "lazy read of /" << path << " in layer " << layer << ": " << what
                      << " not fetched within " << seconds << " s (" << source << ")";
  return Status::Unavailable("/" + path + ": data not fetched within " + std::to_string(seconds) +
                             " s from " + source);
}

// What a running task may ask of its engine, whatever the engine's task type: whether it is
// stopping, and to wait for demand (fs/lazy/range_fetcher.h takes one of these).
class FetchControl {
 public:
  // How long a background stream waits for demand fetches per buffer it receives (the
  // registry's data waits in the socket meanwhile: TCP backpressure), in steps of
  // kYieldStep. 2 s keeps the stream above RemoteSource::kMinStreamBytesPerSecond.
  static constexpr auto kYieldStep = std::chrono::milliseconds(5);
  static constexpr auto kMaxYield = std::chrono::milliseconds(2000);

  // True once Stop began: long tasks check it between steps and give up.
  bool stopping() const { return stopping_.load(); }

  // Demand tasks queued or running.
  int demand() const { return demand_.load(); }

  // For background work between steps: waits while demand tasks are queued or running, at
  // most kMaxYield, and not once Stop began.
  void YieldToDemand() const {
    auto waited = std::chrono::milliseconds(0);
    while (demand() > 0 && waited < kMaxYield && !stopping()) {
      std::this_thread::sleep_for(kYieldStep);
      waited += kYieldStep;
    }
  }

 protected:
  FetchControl() = default;
  ~FetchControl() = default;

  std::atomic<bool> stopping_{false};  // set by the engine's Stop, read without a lock
  std::atomic<int> demand_{0};         // demand tasks queued or running
};

// `Task` is movable, default-constructible and has a `FetchPriority priority` member.
template <class Task>
class FetchEngine : public FetchControl {
 public:
  struct Hooks {
    // Runs a task on a worker thread. May throw: the task then goes to `fail`.
    std::function<void(Task&)> run;
    // Fails a task that will not run (refused, or queued at Stop) or whose run threw: it must
    // complete every waiter still waiting and tolerate those already completed.
    std::function<void(Task&, const Status&)> fail;
  };

  // `name` names the worker threads (15 characters are kept) and the log lines of failures.
  FetchEngine(std::string name, int max_workers, Hooks hooks)
      : name_(std::move(name)),
        max_workers_(static_cast<size_t>(std::max(1, max_workers))),
        hooks_(std::move(hooks)) {}
  FetchEngine(const FetchEngine&) = delete;
  FetchEngine& operator=(const FetchEngine&) = delete;
  ~FetchEngine() { Stop(); }

  // Queues `tasks`, starting workers as needed. After Stop the tasks go to `fail` instead.
  void Submit(std::vector<Task> tasks) {
    if (tasks.empty()) return;
    std::vector<Task> refused;
    {
      MutexLock lock(&mu_);
      if (stop_) {
        refused = std::move(tasks);
      } else {
        for (Task& t : tasks) {
          if (t.priority == FetchPriority::kDemand) demand_.fetch_add(1);
          queue_[static_cast<int>(t.priority)].push_back(std::move(t));
        }
        size_t waiting = 0;
        for (const auto& q : queue_) waiting += q.size();
        while (workers_.size() < max_workers_ &&
               workers_.size() < static_cast<size_t>(running_) + waiting) {
          workers_.push_back(StartThread(name_, [this] {
            WorkerLoop();
            return Status::Ok();
          }));
        }
      }
    }
    work_cv_.SignalAll();
    for (Task& t : refused) Fail(t, Status::Unavailable("the mount is closing"));
  }

  // Refuses new tasks, waits for the running ones, fails the queued ones. Idempotent.
  void Stop() {
    std::vector<std::thread> workers;
    std::vector<Task> left;
    {
      MutexLock lock(&mu_);
      stop_ = true;
      stopping_.store(true);
      workers.swap(workers_);
    }
    work_cv_.SignalAll();
    for (std::thread& t : workers) t.join();
    {
      MutexLock lock(&mu_);
      for (auto& q : queue_) {
        for (Task& t : q) left.push_back(std::move(t));
        q.clear();
      }
    }
    for (Task& t : left) {
      if (t.priority == FetchPriority::kDemand) demand_.fetch_sub(1);
      Fail(t, Status::Unavailable("the mount is closing"));
    }
    idle_cv_.SignalAll();
  }

  // True once nothing is queued or running, waiting up to `timeout`.
  bool WaitIdle(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    MutexLock lock(&mu_);
    while (!IdleLocked()) {
      if (!WaitIdleUntil(deadline) && !IdleLocked()) return false;
    }
    return true;
  }

 private:
  static constexpr int kPriorities = 3;

  void WaitForWork() IMGFS_REQUIRES(mu_) { work_cv_.Wait(&mu_); }
  bool WaitIdleUntil(std::chrono::steady_clock::time_point deadline) IMGFS_REQUIRES(mu_) {
    return idle_cv_.WaitUntil(&mu_, deadline);
  }

  bool IdleLocked() const IMGFS_REQUIRES(mu_) {
    if (running_ > 0) return false;
    for (const auto& q : queue_) {
      if (!q.empty()) return false;
    }
    return true;
  }

  void Fail(Task& task, const Status& error) {
    // A failing fail hook (an already completed waiter it did not expect) is logged and
    // dropped: nothing may leave a worker.
    (void)RunGuarded(name_ + ": failing a task", [&] {
      hooks_.fail(task, error);
      return Status::Ok();
    });
  }

  void WorkerLoop() {
    for (;;) {
      Task task;
      {
        MutexLock lock(&mu_);
        for (;;) {
          if (stop_) return;
          auto q = std::find_if(std::begin(queue_), std::end(queue_),
                                [](const std::deque<Task>& d) { return !d.empty(); });
          if (q != std::end(queue_)) {
            task = std::move(q->front());
            q->pop_front();
            break;
          }
          WaitForWork();
        }
        ++running_;
      }
      // One task's exception (bad_alloc on a huge chunk, a failing store lookup) fails that
      // task; the worker lives on for the next.
      Status guarded = RunGuarded(name_, [&] {
        hooks_.run(task);
        return Status::Ok();
      });
      if (!guarded.ok()) Fail(task, guarded);
      if (task.priority == FetchPriority::kDemand) demand_.fetch_sub(1);
      {
        MutexLock lock(&mu_);
        --running_;
      }
      idle_cv_.SignalAll();
    }
  }

  const std::string name_;
  const size_t max_workers_;
  const Hooks hooks_;

  Mutex mu_;
  CondVar work_cv_;  // tasks queued, or stop_
  CondVar idle_cv_;  // a task finished
  bool stop_ IMGFS_GUARDED_BY(mu_) = false;
  std::deque<Task> queue_[kPriorities] IMGFS_GUARDED_BY(mu_);
  int running_ IMGFS_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_ IMGFS_GUARDED_BY(mu_);
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_FETCH_ENGINE_H_
