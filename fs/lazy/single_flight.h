// imgfs — SingleFlight: the table of fetches in flight that both lazy readers share
// (fs/lazy/fetcher.h: chunks of eStargz / zstd:chunked layers, keyed by chunk digest;
// fs/lazy/indexed_fetcher.h: pieces of plain layers, keyed by piece number).
//
// Concurrent readers of the same missing unit share one fetch (cvmfs's Fetcher, stargz's
// fs/remote/blob.go): the first claims the key and gets a Ticket, the promise it must
// complete; the others find the key in flight and wait on its shared future. Completion
// forgets the key before waking the waiters, so a waiter whose fetch failed and that comes
// back to claim the key again finds it free.
//
// Claims can be made conditional on what the owner knows (JoinOrClaim's `done`): the check
// runs under the table's lock, in one step with the lookup and the claim, so a unit whose
// fetch completed between the caller's own look (its memory or chunk store) and the claim is
// not fetched a second time — provided the owner records a completed unit where `done` sees
// it *before* it calls Complete.
//
// A Ticket is completed once: Complete returns false for a ticket already completed (a
// failure path that cannot know which of its tickets a worker completed before it threw
// fails them all; the completed ones are left alone) and never touches a later claim of the
// same key.
//
// Thread-safety: every method may be called from any number of threads. mu_ is a leaf lock
// except for JoinOrClaim's `done`, which runs under it and may take only leaf locks of its
// own; an owner that calls the table under its own lock takes that lock first (lock order:
// owner's lock, then mu_). Waiters wait without any lock.
#ifndef IMGFS_FS_LAZY_SINGLE_FLIGHT_H_
#define IMGFS_FS_LAZY_SINGLE_FLIGHT_H_

#include <future>
#include <memory>
#include <optional>
#include <unordered_map>
#include <utility>

#include "base/mutex.h"
#include "base/thread_annotations.h"

namespace imgfs::fs {

template <class Key, class Value, class Hash = std::hash<Key>>
class SingleFlight {
 public:
  using Future = std::shared_future<Value>;
  using Ticket = std::shared_ptr<std::promise<Value>>;

  // A flight of one key: `ticket` is set when the caller claimed it (and must complete it),
  // null when it joined another caller's flight; `future` gives the value either way.
  struct Flight {
    Ticket ticket;
    Future future;
    bool claimed() const { return ticket != nullptr; }
  };

  SingleFlight() = default;
  SingleFlight(const SingleFlight&) = delete;
  SingleFlight& operator=(const SingleFlight&) = delete;

  // Claims `key` when no flight of it exists; nullopt when one does.
  std::optional<Flight> Claim(const Key& key) {
    MutexLock lock(&mu_);
    if (flights_.count(key) > 0) return std::nullopt;
    return ClaimLocked(key);
  }

  // The flight of `key` (joined, ticket null), or nullopt when none.
  std::optional<Flight> Find(const Key& key) const {
    MutexLock lock(&mu_);
    auto it = flights_.find(key);
    if (it == flights_.end()) return std::nullopt;
    return Flight{nullptr, it->second.future};
  }

  bool InFlight(const Key& key) const {
    MutexLock lock(&mu_);
    return flights_.count(key) > 0;
  }

  // The flight of `key` if there is one (joined); else nullopt when `done()` says the unit
  // was completed meanwhile; else a new claim. `done` runs under mu_ (see the top).
  template <class Done>
  std::optional<Flight> JoinOrClaim(const Key& key, const Done& done) {
    MutexLock lock(&mu_);
    auto it = flights_.find(key);
    if (it != flights_.end()) return Flight{nullptr, it->second.future};
    if (done()) return std::nullopt;
    return ClaimLocked(key);
  }

  // Completes `ticket` (the flight of `key`) with `value`: forgets the key if it is still
  // this ticket's, then wakes the waiters. False, and nothing done, when the ticket was
  // completed before.
  bool Complete(const Key& key, const Ticket& ticket, Value value) {
    {
      MutexLock lock(&mu_);
      auto it = flights_.find(key);
      // Another ticket's flight of the key (claimed after this one completed) stays.
      if (it != flights_.end() && it->second.ticket == ticket) flights_.erase(it);
    }
    try {
      ticket->set_value(std::move(value));
    } catch (const std::future_error&) {
      return false;  // completed before
    }
    return true;
  }

  // Keys in flight (tests, statistics).
  size_t size() const {
    MutexLock lock(&mu_);
    return flights_.size();
  }

 private:
  struct Entry {
    Ticket ticket;
    Future future;
  };

  Flight ClaimLocked(const Key& key) IMGFS_REQUIRES(mu_) {
    auto ticket = std::make_shared<std::promise<Value>>();
    Future future = ticket->get_future().share();
    flights_.emplace(key, Entry{ticket, future});
    return Flight{std::move(ticket), std::move(future)};
  }

  mutable Mutex mu_;
  std::unordered_map<Key, Entry, Hash> flights_ IMGFS_GUARDED_BY(mu_);
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_SINGLE_FLIGHT_H_
