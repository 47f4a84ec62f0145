// imgfs — LazyLayerReader: file data of an eStargz or zstd:chunked layer, fetched on demand.
//
// Serves reads of a layer whose blob is not in the store, using only its TOC index
// (fs/layer/estargz_toc.h, fs/layer/zstd_chunked_toc.h) and a BlobSource (the registry, or a
// local source in tests). Read(entry, offset, length) needs the chunks of `entry` covering the
// range; each comes from memory (the last few verified chunks), the chunk store
// (cache/chunk_store.h) or the network. Every fetched chunk is decoded, verified against its
// digest and written to the chunk store.
//
// The design goal is "lazy never loses" (issue #4): reading all of a layer lazily over a slow
// link must not take longer than pulling it whole. The pieces (after mountpoint-s3's
// prefetch.rs and stargz-snapshotter's fs/remote/blob.go):
//  - Blob order. Chunks are numbered by their position in the blob (compressed offset); files
//    of a directory sit next to each other there, so "near in blob order" is what a tree walk
//    touches next.
//  - Fetch tasks run on the layer's FetchEngine (fs/lazy/fetch_engine.h): a small worker
//    pool (Options::max_parallel_fetches requests in flight), taken by priority: on-demand
//    reads first, then read-ahead and the streaming pass, then background prefetch. A task
//    coalesces the chunks it owns into ranged reads (fs/layer/chunk_decoder.h: chunks at most
//    max_gap_bytes apart share one) and hands them to the layer's RangeFetcher
//    (fs/lazy/range_fetcher.h, the fetch path every lazy format shares): reads of one task
//    go out in multi-range requests (BlobSource::ReadBlobRanges) of at most
//    max_request_bytes and RemoteSource::kMaxRangesPerRequest (32) ranges, one after another,
//    so a task costs one round trip per batch, not per gap. A registry that refuses
//    multi-range (or answers it with the whole blob) gets single ranges, one per request.
//    The RangeFetcher also makes the attempts, runs the streaming pass's GETs and counts
//    requests and bytes; this reader decodes and verifies what they bring.
//  - Single flight (fs/lazy/single_flight.h, key: chunk digest): a chunk being fetched has a
//    shared future; every reader of it waits on that instead of fetching again, and a chunk
//    completed between a reader's look and its claim is not claimed again (Completed).
//  - Widening: an on-demand fetch also takes the next chunks in blob order up to
//    Options::widen_bytes (a neighbouring small file costs no extra round trip).
//  - Read-ahead: per layer, a read that continues where the previous one ended (in blob order)
//    doubles the read-ahead window, from readahead_min_bytes up to readahead_max_bytes; any
//    other read resets it. The window ahead of the read is fetched in the background in tasks
//    of max_request_bytes, so a sequential reader never waits one round trip per chunk.
//  - Streaming switch: once stream_after_fraction of the layer's compressed bytes is present,
//    or the read-ahead window reached its cap stream_after_full_windows times, the rest of the
//    layer is fetched by ONE streamed GET from the first missing byte to the end; chunks are
//    decoded, verified and stored as they pass, and readers of chunks just ahead of the stream
//    wait for it. The same pass serves `--prefetch=all` (StartBackgroundFetch), then at the
//    lowest priority: it pauses while on-demand fetches are running. Its memory is one
//    chunk's compressed bytes plus a socket buffer.
//  - A registry that answers a Range request with the whole blob (200) switches the layer to
//    streaming at once (registry::BlobSource::ignores_ranges()).
//  - Deadline, repair, counters: the layer's ReadEngine (fs/lazy/read_engine.h, shared with
//    every lazy format). A Read waits at most Options::fetch_timeout for its chunks
//    (`--fetch-timeout`); then it fails with Unavailable (EIO at the FUSE boundary) while the
//    fetch itself goes on in the background, bounded by the source's own timeouts. No reader
//    is blocked forever; cached chunks keep being served meanwhile, and once the registry
//    answers again the next read of a missing chunk fetches it.
//  - Errors: a chunk is decoded and verified as its bytes arrive; one that fails is never
//    stored nor kept, its flight completes with Corrupt and the read that needs it fetches it
//    again (ReadEngine::Repair, Options::max_attempts - 1 times), then answers Corrupt. A
//    request that failed is sent again by the RangeFetcher (Options::max_attempts in all on
//    demand; read-ahead and streaming once, and a reader that depended on them fetches the
//    chunk itself). The failure is returned (Corrupt or Unavailable) with a log line naming
//    layer, file and chunk.
// Zeros chunks (zstd:chunked) are produced without any I/O and never materialised whole: a
// read gets zeros for its own range only, whatever size the TOC gives the chunk.
// Memory: one chunk is at most kMaxChunkBytes decoded and MaxChunkBlobBytes(size) compressed
// (fs/layer/layer_index.h; checked when the index is assembled from the TOC or decoded), so a
// task's single ranged read of one chunk — the only read allowed past max_request_bytes — is
// bounded by that geometry check, not by max_request_bytes. Chunks without a digest (allowed by
// eStargz) are fetched and verified by their decoder but not stored.
//
// Thread-safety: Read, Stats, Prefetch* may be called from any number of threads. mu_ (the
// read-ahead window) and the single-flight table's lock are leaves, never held together nor
// across network or disk I/O. The destructor
// stops the workers (a streaming pass is aborted at its next buffer) and fails what is queued.
#ifndef IMGFS_FS_LAZY_FETCHER_H_
#define IMGFS_FS_LAZY_FETCHER_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "cache/chunk_store.h"
#include "fs/layer/chunk_decoder.h"
#include "fs/layer/file_data_source.h"
#include "fs/layer/layer_index.h"
#include "fs/lazy/fetch_engine.h"
#include "fs/lazy/lazy_fetch_options.h"
#include "fs/lazy/range_fetcher.h"
#include "fs/lazy/read_engine.h"
#include "fs/lazy/readahead.h"
#include "fs/lazy/single_flight.h"
#include "fs/lazy/verified_chunk_cache.h"
#include "registry/blob_source.h"

namespace imgfs::fs {

class LazyLayerReader : public FileDataSource {
 public:
  // The shared policy (fs/lazy/lazy_fetch_options.h) and what only chunks have.
  struct Options : LazyFetchOptions {
    uint64_t max_gap_bytes = kDefaultCoalesceGapBytes;
    int max_attempts = 2;  // on-demand fetches and chunks that failed verification: one retry
    // Compressed bytes of following chunks an on-demand fetch takes along. 256 KiB costs
    // ~10 ms at 200 Mbit, less than the round trip it saves for the next small file.
    uint64_t widen_bytes = 256 << 10;
    // What the mount fetched for this layer's TOC (bytes, requests): counted in Stats() so
    // `imgfs stats` shows everything the layer cost. 0 when the index came from the store.
    uint64_t toc_bytes = 0;
    uint64_t toc_requests = 0;
  };

  // `index` must be an eStargz or zstd:chunked index (chunks with blob ranges). `source`
  // serves the blob index->layer_digest; `chunks` is shared by every layer of every mount.
  LazyLayerReader(std::shared_ptr<registry::BlobSource> source,
                  std::shared_ptr<const LayerIndex> index,
                  std::shared_ptr<cache::ChunkStore> chunks);
  LazyLayerReader(std::shared_ptr<registry::BlobSource> source,
                  std::shared_ptr<const LayerIndex> index,
                  std::shared_ptr<cache::ChunkStore> chunks, Options options);
  LazyLayerReader(const LazyLayerReader&) = delete;
  LazyLayerReader& operator=(const LazyLayerReader&) = delete;
  ~LazyLayerReader() override;

  // Up to `length` bytes of regular file `entry` (an entry of this layer's index) from
  // `offset`; fewer at the end of the file, "" at or beyond it. InvalidArgument for entries
  // that are not regular files; Unavailable when the chunks did not arrive within
  // Options::fetch_timeout; Corrupt when they failed verification twice.
  Result<std::string> Read(const FileEntry& entry, uint64_t offset, size_t length);
  // The entry `file` names (EntryOf), read as above.
  Result<std::string> Read(const FileRef& file, uint64_t offset, size_t length) override;

  LayerStats Stats() const override;

  // Fetches, in the background, every missing chunk whose compressed bytes start before
  // `blob_offset` (the eStargz `.prefetch.landmark`: the files the image's author marked as
  // needed first) as one task at read-ahead priority. Returns at once.
  void PrefetchBefore(uint64_t blob_offset);
  // Streams every missing chunk of the layer in the background at the lowest priority
  // (`--prefetch=all`). Returns at once.
  void StartBackgroundFetch();
  // Blocks until no task is queued or running (tests, the benchmark); false on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout);

  // Chunks decoded from fetched blob bytes, and fetch attempts made (tests, stats).
  uint64_t chunks_fetched() const { return reads_.units_fetched(); }
  uint64_t fetch_batches() const { return fetcher_.attempts(); }
  // Chunks fetched again after they failed verification (ReadEngine::Repair).
  uint64_t repairs() const { return reads_.repairs(); }
  // Whether the streaming pass was started (switch or background fetch).
  bool streamed() const { return stream_started_.load(std::memory_order_relaxed); }

  const LayerIndex& index() const { return *index_; }

 private:
  using ChunkData = std::shared_ptr<const std::string>;
  using ChunkResult = Result<ChunkData>;
  using Flights = SingleFlight<std::string, ChunkResult>;
  using Promise = Flights::Ticket;

  using StreamStep = RangeFetcher::StreamStep;
  using Priority = FetchPriority;
  static constexpr Priority kDemand = FetchPriority::kDemand;
  static constexpr Priority kReadAhead = FetchPriority::kReadAhead;
  static constexpr Priority kBackground = FetchPriority::kBackground;
  struct Task {
    Priority priority = kDemand;
    bool stream = false;            // the streaming pass (ids unused) ...
    uint32_t stream_from = 0;       // ... from the first missing chunk at or after this position
    std::vector<uint32_t> ids;      // chunk ids, ascending blob offset
    std::vector<Promise> promises;  // one per id, claimed in flights_
  };
  using Wait = ReadEngine::Wait<ChunkResult>;

  // Positions in blob order of the chunks of `entry` overlapping [offset, end).
  Result<std::vector<uint32_t>> ChunksFor(const FileEntry& entry, uint64_t offset,
                                          uint64_t end) const;
  // Immediate answer for chunk `id` (memory, chunk store) or nullptr. Not for zeros chunks:
  // Read serves those in slices.
  ChunkData Available(uint32_t id);
  // Makes chunks `need` (positions in `ids`) of `read` available (through reads_.Await): the
  // verified ones into `out`, the ones whose fetch failed verification into `bad` (Corrupt,
  // for reads_.Repair).
  Status GetChunks(const ReadEngine::Read& read, const std::vector<uint32_t>& ids,
                   const std::vector<size_t>& need, std::vector<ChunkData>* out,
                   std::vector<Status>* bad);
  // One round of GetChunks over the chunks of `need` not yet in `out` nor `bad`: answers
  // from memory or the store into `out`, claims (with widening and read-ahead) or joins the
  // flights of the rest, submits the tasks; returns the waits.
  std::vector<Wait> ClaimRound(const std::vector<uint32_t>& ids, const std::vector<size_t>& need,
                               const std::vector<Status>& bad, std::vector<ChunkData>* out);
  // Claims chunk id in flights_ for `task`; false when already in flight.
  bool Claim(uint32_t id, Task* task);
  // For a chunk not in flight (runs under the flights_ lock: SingleFlight::JoinOrClaim):
  // whether it was fetched since the caller last looked (Complete remembers it in recent_
  // before it leaves flights_), so that a chunk finished between a lookup and a claim is not
  // fetched a second time.
  bool Completed(uint32_t id);
  // Read-ahead bookkeeping for a read touching blob positions [first, last]: updates the
  // window, claims the chunks ahead (or decides to stream) and appends the tasks to *tasks.
  void PlanReadAhead(uint32_t first, uint32_t last, std::vector<Task>* tasks);
  // Claims `ids` (ascending blob offset; ones already in flight are skipped) into tasks of
  // at most max_request_bytes at `priority`, appended to *tasks.
  void ClaimInTasks(const std::vector<uint32_t>& ids, Priority priority, std::vector<Task>* tasks);
  // Whether chunk `id` is in the chunk store (a stat; remembered in present_).
  bool KnownPresent(uint32_t id);

  void RunTask(Task& task);
  // After an exception in RunTask, or for a task that will not run (the engine stopped):
  // fails every promise of `task` not yet completed (and
  // drops its in-flight entry) with `error`, so no reader waits for a chunk nobody fetches.
  void FailUnfinished(Task& task, const Status& error);
  // The streaming pass: one GET from the first missing chunk at or after blob position
  // `from` to the end of the chunks.
  Status RunStream(uint32_t from, bool background);
  // Fetches `ids` (ascending blob offset) with `attempts` tries; results in order.
  std::vector<ChunkResult> Fetch(const std::vector<uint32_t>& ids, int attempts);
  // Records a fetched or failed chunk: stores it, completes and forgets its promise.
  void Complete(uint32_t id, const Promise& promise, ChunkResult result);

  std::string KeyOf(uint32_t id) const;
  std::string FileOf(uint32_t id) const;
  void MarkPresent(uint32_t id);

  std::shared_ptr<registry::BlobSource> source_;
  std::shared_ptr<const LayerIndex> index_;
  std::shared_ptr<cache::ChunkStore> chunks_;
  Options options_;
  VerifiedChunkCache<std::string> recent_{options_.memory_cache_bytes};  // by chunk digest

  // Immutable after construction.
  std::vector<uint32_t> order_;   // chunk ids with bytes to fetch, ascending blob offset
  std::vector<uint32_t> pos_of_;  // chunk id → position in order_ (kNoPos for zeros chunks)
  uint64_t fetchable_bytes_ = 0;  // sum of blob_length over order_
  uint64_t chunks_end_ = 0;       // end of the last chunk's compressed bytes
  std::unique_ptr<std::atomic<bool>[]> present_;  // by position: known to be stored

  std::atomic<uint64_t> present_bytes_{0};  // compressed bytes of present_ chunks
  // Deadline, repair and the counters Stats() reports.
  ReadEngine reads_{source_,
                    index_->layer_digest.String(),
                    {options_.fetch_timeout, std::max(0, options_.max_attempts - 1)}};
  // Every request of this layer: batches, attempts, streams, and their counts in reads_.
  RangeFetcher fetcher_{source_, index_->layer_digest, reads_.counters(),
                        options_.max_request_bytes, RangeFetcher::kMaxRangesPerRequest};
  std::atomic<bool> stream_started_{false};
  std::atomic<bool> stream_running_{false};

  Flights flights_;  // by chunk digest

  // Leaf lock; never held across I/O.
  mutable Mutex mu_;
  ReadAheadWindow window_ IMGFS_GUARDED_BY(mu_){0, 0};  // positions in order_

  // Last: stopped first (the destructor stops it explicitly) while the hooks' state lives.
  FetchEngine<Task> engine_{
      "imgfs-lazy-fetch",
      options_.max_parallel_fetches,
      {[this](Task& task) { RunTask(task); },
       [this](Task& task, const Status& error) { FailUnfinished(task, error); }}};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_FETCHER_H_
