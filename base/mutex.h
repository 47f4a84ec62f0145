// imgfs — Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with clang's
// thread-safety annotations, so that `-Wthread-safety` (the clang builds: ASan, TSan, fuzz)
// checks every IMGFS_GUARDED_BY / IMGFS_REQUIRES in the tree at compile time.
//
//   Mutex mu_;
//   int count_ IMGFS_GUARDED_BY(mu_) = 0;
//   void Add() { MutexLock lock(&mu_); ++count_; }
//   void AddLocked() IMGFS_REQUIRES(mu_) { ++count_; }
//
// CondVar::Wait takes the Mutex the caller holds (as absl's CondVar does, so the analysis
// can check it is held) and returns with it held again.
//
// Thread-safety: Mutex and CondVar are what they wrap.
#ifndef IMGFS_BASE_MUTEX_H_
#define IMGFS_BASE_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "base/thread_annotations.h"

namespace imgfs {

class IMGFS_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() IMGFS_ACQUIRE() { mu_.lock(); }
  void Unlock() IMGFS_RELEASE() { mu_.unlock(); }
  // Tells the analysis the caller holds the lock (e.g. in a callback run under it).
  void AssertHeld() IMGFS_ASSERT_CAPABILITY(this) {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class IMGFS_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) IMGFS_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() IMGFS_RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Releases `mu`, waits for a signal (or a spurious wake-up), takes `mu` again.
  void Wait(Mutex* mu) IMGFS_REQUIRES(*mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // As Wait, until `deadline` at the latest. False when the deadline passed.
  template <class Clock, class Duration>
  bool WaitUntil(Mutex* mu, const std::chrono::time_point<Clock, Duration>& deadline)
      IMGFS_REQUIRES(*mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    const bool signalled = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return signalled;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace imgfs

#endif  // IMGFS_BASE_MUTEX_H_
