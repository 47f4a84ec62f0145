// imgfs — ReadEngine: what a lazy read does with the units it needs, whatever the format.
//
// The lazy-fetch engine both lazy readers (fs/lazy/fetcher.h: chunks of eStargz /
// zstd:chunked layers; fs/lazy/indexed_fetcher.h: checkpoint pieces of plain layers) and any
// later format share is four parts, each a file of fs/lazy/:
//  - FetchEngine (fetch_engine.h): the worker pool and the priorities tasks run at;
//  - RangeFetcher (range_fetcher.h): the network path (multi-range batches, attempts after a
//    failed request, the streaming pass, request and byte counts);
//  - SingleFlight (single_flight.h): one fetch per unit, waiters sharing its future;
//  - ReadEngine (here): the read's side: waiting for units with the read's deadline, repairing
//    a unit that failed verification, and the layer's counters.
// A format says only how a file range maps to units, how to claim them (which are missing or
// in flight: its own state), how to verify one and how to forget a unit's bad bytes.
//
// A read (Begin) has a deadline: Options::fetch_timeout from its start.
//  - Await: runs rounds of the format's `round` (claim or join the flights of the units still
//    needed, submit the tasks, return the waits) and waits for each flight until the deadline;
//    past it the read fails with Unavailable (FetchDeadlineExceeded; EIO) while the fetch goes
//    on. A failure of a flight this read did not own (read-ahead, the streaming pass, another
//    reader: tried once) sends the read round once more, fetching the unit itself; a failure
//    of its own flight (the RangeFetcher made its attempts) is the answer.
//  - Repair: rounds of `ensure` (make the units present: typically an Await) and `verify` per
//    unit. A unit whose verification fails with Corrupt has its bad bytes forgotten by the
//    format (`discard`: nothing of them is ever served or stored again) and is fetched anew
//    in the next round, at most Options::max_repairs times; then the Corrupt status is the
//    answer. A unit whose bytes another read sent to be fetched again meanwhile (`busy`) is
//    waited for again, within the deadline, without counting a repair.
//  - Counters: the LayerCounters behind `imgfs stats` (requests and bytes counted by the
//    RangeFetcher through counters(); units fetched, cache hits and failed reads here) and
//    the repairs made.
//
// Thread-safety: every method may be called from any number of threads at once; the state is
// immutable or atomic. The callbacks of one call run on the calling thread, without any lock
// of the engine (there is none): a format calls them under its own locks as it needs.
#ifndef IMGFS_FS_LAZY_READ_ENGINE_H_
#define IMGFS_FS_LAZY_READ_ENGINE_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "base/status.h"
#include "fs/layer/file_data_source.h"
#include "fs/lazy/fetch_engine.h"
#include "registry/blob_source.h"

namespace imgfs::fs {

// The status a unit's flight completed with: the chunk reader's flights carry the chunk
// (Result), the indexed reader's only a Status.
inline Status FlightStatus(const Status& value) { return value; }
template <class T>
Status FlightStatus(const Result<T>& value) {
  return value.has_value() ? Status::Ok() : value.error();
}

class ReadEngine {
 public:
  struct Options {
    // How long a read waits for its units (LazyFetchOptions::fetch_timeout).
    std::chrono::milliseconds fetch_timeout{30000};
    // Fetches of one unit after it failed verification, per read. 1: a bad answer is most
    // often a one-off (a proxy's truncated body, a flipped bit); twice is a bad blob.
    int max_repairs = 1;
  };

  // A read in progress: the file (for errors and logs) and its deadline.
  struct Read {
    std::string path;
    std::chrono::steady_clock::time_point deadline;
  };

  // A flight a read waits for: `slot` is the unit's position in the read's list, `own` true
  // when the read claimed it (its task made every attempt the fetch allows).
  template <class Value>
  struct Wait {
    size_t slot = 0;
    std::shared_future<Value> future;
    bool own = false;
  };

  // What `verify` found for one unit: ok (verified), its error, or `busy`: its bytes are
  // being fetched again by another read, wait for them (status ignored).
  struct Verdict {
    Status status = Status::Ok();
    bool busy = false;
  };

  // Reads of the blob `layer` from `source` (named in errors and logs; must outlive this).
  ReadEngine(std::shared_ptr<registry::BlobSource> source, std::string layer, Options options)
      : source_(std::move(source)), layer_(std::move(layer)), options_(options) {}
  ReadEngine(const ReadEngine&) = delete;
  ReadEngine& operator=(const ReadEngine&) = delete;

  // A read of /`path` starting now.
  Read Begin(const std::string& path) const {
    return Read{path, std::chrono::steady_clock::now() + options_.fetch_timeout};
  }

  // The read's deadline passed while `what` ("chunk sha256:…", "data") was not there: the
  // Unavailable it answers (logged; not counted: the caller's Failed counts it).
  Status DeadlineExceeded(const Read& read, const std::string& what) const {
    return FetchDeadlineExceeded(read.path, layer_, options_.fetch_timeout, what,
                                 source_->Describe());
  }

  // Waits for units (see the top). `round(pass)` claims or joins the flights of the units
  // still needed (pass 0, then 1 when going round), submits what it claimed and returns the
  // waits (std::vector<Wait<Value>>). `take(slot, value)` gets each value in the order of the
  // waits and returns a Status: a non-OK one fails the round like a failed flight. `what(slot)`
  // names a unit in a deadline error. Ok when every wait of a round was taken; else the
  // deadline's Unavailable or the failure that ended the last round (logged).
  template <class Round, class Take, class What>
  Status Await(const Read& read, const Round& round, const Take& take, const What& what) const {
    for (int pass = 0;; ++pass) {
      auto waits = round(pass);
      Status result = Status::Ok();
      bool foreign = false;
      for (auto& w : waits) {
        if (w.future.wait_until(read.deadline) != std::future_status::ready) {
          return DeadlineExceeded(read, what(w.slot));
        }
        result = take(w.slot, w.future.get());
        if (!result.ok()) {
          foreign = !w.own;
          break;
        }
      }
      if (result.ok()) return result;
      if (!foreign || pass > 0 || std::chrono::steady_clock::now() >= read.deadline) {
        IMGFS_LOG(kWarning) << "lazy read of /" << read.path << " in layer " << layer_
                            << " failed: " << result.ToString();
        return result;
      }
    }
  }

  // Makes the units `need` (slots of the read) present and verified, repairing the ones that
  // fail verification (see the top). `ensure(need)` makes their bytes present (Status: its
  // error is the read's); `verify(slot)` returns a Verdict; `discard(slot)` forgets the
  // unit's bad bytes so that the next `ensure` fetches them anew. The read's errors are
  // counted (Failed).
  template <class Ensure, class Verify, class Discard>
  Status Repair(const Read& read, std::vector<size_t> need, const Ensure& ensure,
                const Verify& verify, const Discard& discard) {
    std::vector<int> repairs_of;  // by position in the first `need`: repairs made
    const std::vector<size_t> slots = need;
    repairs_of.assign(slots.size(), 0);
    auto index_of = [&slots](size_t slot) {
      size_t k = 0;
      while (k < slots.size() && slots[k] != slot) ++k;
      return k;
    };
    for (int round = 0; !need.empty(); ++round) {
      if (round > 0 && std::chrono::steady_clock::now() >= read.deadline) {
        return Failed(DeadlineExceeded(read, "data"));
      }
      if (Status st = ensure(need); !st.ok()) return Failed(st);
      std::vector<size_t> again;
      for (size_t slot : need) {
        Verdict v = verify(slot);
        if (v.busy) {
          again.push_back(slot);
          continue;
        }
        if (v.status.ok()) continue;
        int& made = repairs_of[index_of(slot)];
        const bool repair = v.status.code() == StatusCode::kCorrupt && made < options_.max_repairs;
        IMGFS_LOG(kWarning) << "lazy read of /" << read.path << " in layer " << layer_ << ": "
                            << v.status.ToString() << (repair ? "; fetching it again" : "");
        if (!repair) return Failed(v.status);
        discard(slot);
        ++made;
        repairs_.fetch_add(1, std::memory_order_relaxed);
        again.push_back(slot);
      }
      need = std::move(again);
    }
    return Status::Ok();
  }

  // Counters. The LayerCounters the RangeFetcher counts requests and bytes into.
  LayerCounters* counters() { return &counters_; }
  // Requests and bytes spent before the first read (the TOC or index fetched at mount).
  void CountSetup(uint64_t requests, uint64_t bytes) {
    counters_.requests.fetch_add(requests, std::memory_order_relaxed);
    counters_.bytes_fetched.fetch_add(bytes, std::memory_order_relaxed);
  }
  // A unit decoded and verified from fetched bytes.
  void CountFetched() { counters_.chunks_fetched.fetch_add(1, std::memory_order_relaxed); }
  // A unit served from memory or the chunk store.
  void CountHit() { counters_.cache_hits.fetch_add(1, std::memory_order_relaxed); }
  // A failure no read returns (a chunk of the streaming pass that failed verification).
  void CountError() { counters_.errors.fetch_add(1, std::memory_order_relaxed); }
  // A read that fails with `error`: counted, returned.
  Status Failed(Status error) {
    CountError();
    return error;
  }

  uint64_t units_fetched() const { return counters_.chunks_fetched.load(); }
  uint64_t repairs() const { return repairs_.load(std::memory_order_relaxed); }
  // The counts now, for `imgfs stats` (a layer of `blob_size` compressed bytes).
  LayerStats Stats(uint64_t blob_size) const { return counters_.Snapshot(blob_size); }

  const Options& options() const { return options_; }

 private:
  const std::shared_ptr<registry::BlobSource> source_;
  const std::string layer_;
  const Options options_;
  LayerCounters counters_;
  std::atomic<uint64_t> repairs_{0};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_READ_ENGINE_H_
