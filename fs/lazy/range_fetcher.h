// imgfs — RangeFetcher: the one network path of both lazy readers (fs/lazy/fetcher.h: chunks
// of eStargz / zstd:chunked layers; fs/lazy/indexed_fetcher.h: checkpoint pieces of plain
// layers) and of any later format.
//
// A format has *units* (chunks, pieces), each a compressed byte range of the blob; it says
// only how its units go into reads (Plan: coalescing chunks across small gaps, joining
// adjacent pieces) and what to do with a read's bytes (Deliver: decode and verify chunks,
// write pieces into the sparse copy). Everything else is here, the same for every format:
//  - Batches: the reads of one Fetch (ascending, disjoint) go out as multi-range requests
//    (BlobSource::ReadBlobRanges), each at most `max_request_bytes` and kMaxRangesPerRequest
//    ranges (PlanRangeBatches); a batch of one read is a plain ranged read. A registry that
//    refuses multi-range gets single ranges (RemoteSource does that below the interface).
//  - Attempts: units a delivery refused (the request failed, bytes short, a chunk that failed
//    its digest) are planned and fetched again, up to `attempts` times in all. Nothing is
//    sent once the engine is stopping: the units fail with Unavailable.
//  - Streaming (Stream): one GET of a range handed to the format buffer by buffer with its
//    blob offset; a background pass yields to on-demand fetches between buffers; a stopping
//    engine ends it; the format may end it early (kEnough); a blob that ends inside the range
//    is an error. Nothing thrown by the format crosses the HTTP client's callback. The
//    streaming pass over the rest of a layer (StreamPass) is a loop of such GETs over the
//    segments the format claims one after another (it skips what is present or in flight,
//    and resumes after it); it ends at the first failed segment or when the engine stops.
//  - Stats: requests (one per ranged read, one per multi-range request as the source counts
//    them, one per stream), bytes received and fetch attempts (batches()) are counted here,
//    into the reader's LayerCounters, for every format alike.
// What stays with the format: which units are missing or in flight (claimed in a
// SingleFlight), their priorities and tasks (FetchEngine) and how to verify a unit. Waiting
// for units with a read's deadline and repairing a unit that failed verification are the
// ReadEngine's (fs/lazy/read_engine.h): a delivery that fails verification does not make the
// unit fetched again here, the read that needs it repairs it.
//
// Thread-safety: a RangeFetcher may be used by any number of threads at once (its state is
// immutable or atomic); the callbacks of one call run on the calling thread, in blob order.
#ifndef IMGFS_FS_LAZY_RANGE_FETCHER_H_
#define IMGFS_FS_LAZY_RANGE_FETCHER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_range.h"
#include "base/status.h"
#include "fs/layer/file_data_source.h"
#include "fs/lazy/fetch_engine.h"
#include "registry/blob_source.h"
#include "registry/digest.h"
#include "registry/remote_source.h"

namespace imgfs::fs {

// One ranged read of a format's units: the blob range and the units whose bytes lie in it
// (indexes into the caller's unit list).
struct UnitRead {
  ByteRange range;
  std::vector<size_t> units;
};

// Reads [first, last) of a Fetch that go out as one request.
struct RangeBatch {
  size_t first = 0;
  size_t last = 0;
};

// Cuts `ranges` (in the order they are to be sent) into consecutive batches of at most
// `max_ranges` ranges and `max_bytes` bytes each; a range of `max_bytes` or more goes alone.
// Every range is in exactly one batch.
std::vector<RangeBatch> PlanRangeBatches(const std::vector<ByteRange>& ranges, uint64_t max_bytes,
                                         size_t max_ranges);

// Joins units with the given ranges (ascending offset, not overlapping) into reads: a unit
// starts a new read when it does not begin exactly where the previous one ended or the read
// would pass `max_bytes` (a unit larger than that is a read of its own). Units are positions
// in `units`.
std::vector<UnitRead> JoinAdjacentUnits(const std::vector<ByteRange>& units, uint64_t max_bytes);

class RangeFetcher {
 public:
  // Ranges per multi-range request: what RemoteSource sends in one (it splits longer lists).
  static constexpr size_t kMaxRangesPerRequest = registry::RemoteSource::kMaxRangesPerRequest;

  // The format's reads for the units `todo` (positions in the caller's unit list, ascending)
  // of one attempt, ascending blob offset.
  using Plan = std::function<std::vector<UnitRead>(const std::vector<size_t>& todo)>;
  // The bytes of `read` (exactly as the source answered it), or the error its request failed
  // with: appends the units of `read` the format could not use to *failed, which fetches them
  // again on the next attempt.
  using Deliver = std::function<void(const UnitRead& read, const Result<std::string>& bytes,
                                     std::vector<size_t>* failed)>;
  // After attempt `attempt` (1-based) of `tried` units, `failed` (sorted, not empty) failed.
  using Failed = std::function<void(int attempt, size_t tried, const std::vector<size_t>& failed)>;

  enum class StreamStep { kMore, kEnough };
  // Bytes `data` of the blob from `offset` (consecutive calls are contiguous). kEnough ends
  // the stream without error; an error ends it with that error.
  using Consume = std::function<Result<StreamStep>(uint64_t offset, std::string_view data)>;

  // Fetches from `source` the blob `digest`; counts requests and bytes into `counters` (which
  // must outlive this object). Requests of a batch: at most `max_request_bytes` bytes (at
  // least 1) and `max_ranges` ranges.
  RangeFetcher(std::shared_ptr<registry::BlobSource> source, registry::Digest digest,
               LayerCounters* counters, uint64_t max_request_bytes, size_t max_ranges);
  RangeFetcher(const RangeFetcher&) = delete;
  RangeFetcher& operator=(const RangeFetcher&) = delete;

  // Fetches units [0, count): each attempt plans the units not yet delivered, batches the
  // reads and hands each read's bytes (or error) to `deliver`; at most max(1, attempts)
  // attempts. Returns the units that still failed (sorted). Once `control` is stopping, reads
  // are not sent: `deliver` gets Unavailable("the mount is closing") for them.
  std::vector<size_t> Fetch(size_t count, int attempts, const FetchControl& control,
                            const Plan& plan, const Deliver& deliver,
                            const Failed& failed = nullptr);

  // Streams `range` to `consume` (one request). A background stream waits for on-demand
  // fetches (control.YieldToDemand) before each buffer. Ok when the whole range was consumed
  // or `consume` returned kEnough; otherwise the first of: `consume`'s error (also for an
  // exception it threw), Unavailable when `control` began stopping, the source's error,
  // Unavailable when the blob ended inside the range.
  Status Stream(ByteRange range, bool background, const FetchControl& control,
                const Consume& consume);

  // A streaming pass: the format's segments (ranges it claimed), each streamed by Stream to
  // the same consumer, until none is left, one failed or `control` is stopping.
  struct StreamPassHooks {
    // Claims the next segment from where the last one ended; none when the pass is done.
    std::function<std::optional<ByteRange>()> next;
    Consume consume;
    // After a segment with the result of its stream (Internal for an exception thrown while
    // claiming or streaming it): completes or fails what it left claimed; a non-OK result
    // ends the pass with it.
    std::function<Status(Status)> done;
  };
  // Runs the pass (a background pass yields to demand between buffers). Ok when `next` had
  // nothing left; else the result of the segment that ended it, or Unavailable("the mount is
  // closing") when `control` began stopping between segments.
  Status StreamPass(bool background, const FetchControl& control, const StreamPassHooks& hooks);

  // Fetch attempts made (each attempt is one or more batches).
  uint64_t attempts() const { return attempts_.load(std::memory_order_relaxed); }
  // Multi-range requests sent (batches of more than one read).
  uint64_t multi_range_batches() const { return multi_batches_.load(std::memory_order_relaxed); }

  const registry::Digest& digest() const { return digest_; }
  registry::BlobSource& source() const { return *source_; }

 private:
  // Sends reads [batch.first, batch.last) of `reads` as one request; the answer per read.
  std::vector<Result<std::string>> Send(const std::vector<UnitRead>& reads, RangeBatch batch);

  const std::shared_ptr<registry::BlobSource> source_;
  const registry::Digest digest_;
  LayerCounters* const counters_;
  const uint64_t max_request_bytes_;
  const size_t max_ranges_;
  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> multi_batches_{0};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_RANGE_FETCHER_H_
