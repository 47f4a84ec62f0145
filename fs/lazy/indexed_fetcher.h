// imgfs — IndexedRemoteData: lazy reads of a plain tar / tar+gzip / tar+zstd layer through its
// imgfs index (stored, or published: fs/convert/index_publish.h), by Range requests.
//
// The layer's blob is not in the store; its LayerIndex (file table, per-chunk sha256,
// decompression checkpoints: gzip inflate state + 32 KiB window every few MiB, zstd frame
// starts) is. A Read needs the uncompressed bytes of the chunks it overlaps (rounded to the
// LayerReader's cache blocks); those lie between checkpoint i (the last at or before them)
// and checkpoint j (the first strictly after their end), so the compressed span
// [checkpoint_i.offset - 1, checkpoint_j.offset + 1) is needed (to the blob end after the
// last checkpoint; a plain tar needs only the bytes themselves). Strictly after: a decoder
// whose output ends exactly at a deflate block end goes on to parse the next block's header
// without needing output space, so when the end is itself a checkpoint (gzip cut by pigz or
// pgzip puts every checkpoint on a cache-block boundary, right before an empty stored
// block) the bytes past it are read too. Fetched bytes are written at their own offsets into
// an unlinked sparse copy of the blob in STORE/tmp/, which an ordinary LayerReader (no parked
// decoders, so no decoder ever holds bytes read before they were fetched) decodes from the
// checkpoint.
//
// Invariant: every compressed byte a decode for chunk c reads lies in c's pieces
// [chunk_first_piece_[c], chunk_last_piece_[c]), and those pieces are present (written, then
// marked) when the decode takes its reader (one step under mu_: ReaderIfPresent); a piece's
// bytes are never rewritten with other bytes while it is present (a refetch first marks it
// missing, and installs a fresh LayerReader in the same step). So a decode never meets a
// hole of the sparse copy, a chunk that fails verification failed on bytes of its own
// pieces, and the refetch of exactly those pieces, decoded by the fresh reader, replaces
// every byte the bad decode used: no decode that started before the refetch finished can
// leave blocks of the bad bytes in the fresh reader's cache (a decode that finds its pieces
// missing again waits for the refetch).
//
// The blob is cut into fixed *pieces*, the unit of fetching and bookkeeping: boundaries at
// every checkpoint's offset - 1 and offset + 1 (so every span above is a whole number of
// pieces), and at most kMaxPieceBytes apart (a plain tar: one LayerReader block each). A piece
// is missing, in flight or present. The rest follows LazyLayerReader (fs/lazy/fetcher.h), in
// piece terms:
//  - Chunk store: a chunk is served from the shared cache::ChunkStore (the one eStargz and
//    zstd:chunked layers use; keyed by the chunk's sha256) before anything is fetched, and
//    every chunk verified from fetched bytes is stored there: a second mount, or another
//    image with the same file, fetches nothing for it. The last verified chunks are kept in
//    memory (Options::memory_cache_bytes) so small consecutive reads of one chunk are cheap.
//  - Fetch tasks run on the layer's FetchEngine (fs/lazy/fetch_engine.h: priorities, a
//    bounded pool started on first use, background work yielding to demand). A task is up
//    to max_request_bytes of missing pieces of one read (or read-ahead window), possibly in
//    disjoint runs when pieces between them are present or in flight; the layer's
//    RangeFetcher (fs/lazy/range_fetcher.h, the fetch path every lazy format shares) reads
//    each run as one range and sends a task's runs as one multi-range request (a registry
//    that refuses multi-range gets one request per run). It also makes the attempts, runs
//    the streaming pass's GETs and counts requests and bytes; this reader writes what they
//    bring into the sparse copy.
//  - Single flight (fs/lazy/single_flight.h, key: piece number): a piece in flight has a
//    shared future; every reader needing it waits on that instead of fetching it again.
//    Read-ahead as fs/lazy/readahead.h, in pieces.
//  - Streaming switch (fs/lazy/lazy_fetch_options.h ShouldStream): the rest of the layer is
//    streamed (RangeFetcher::StreamPass over BlobSource::StreamBlobRange) into the sparse copy:
//    every missing run of pieces from the reader on (all of the layer when Range is ignored), in
//    GETs of at most kStreamSegmentBytes. Pieces are claimed before their GET, so no byte is
//    fetched twice and readers of claimed pieces wait for the stream. Chunks are verified and
//    stored as the stream completes them. StartBackgroundFetch (`--prefetch=all`) runs the same
//    pass over the whole layer at the lowest priority, claiming only max_request_bytes at a time so
//    a reader never waits long behind a paused pass.
//  - Deadline, repair, counters: the layer's ReadEngine (fs/lazy/read_engine.h, shared with
//    every lazy format). A Read waits at most Options::fetch_timeout for its pieces, then
//    fails with Unavailable (EIO) while the fetch goes on.
//  - Errors: an on-demand fetch is tried twice; read-ahead and streaming once, and a reader
//    that was waiting on them fetches the piece itself (once). An exception on a worker
//    (bad_alloc) fails the task's claimed pieces like any error; a streaming pass that
//    failed may be started again (switch or StartBackgroundFetch). A chunk that fails
//    verification has its pieces forgotten (Invalidate: a fresh LayerReader decodes them)
//    and fetched once more by the shared repair (ReadEngine::Repair) before the read fails
//    with Corrupt; a header run that does not match (below) is repaired the same way.
//
// Verification: every chunk a read returns is checked against its sha256 from the index
// (LayerReader::ReadChunk) before the read is answered (again when it left the memory
// cache), or comes verified from the chunk store or the memory cache; a mismatch is Corrupt (EIO).
// The layer digest itself cannot be checked without all of its bytes: this mode trusts the index as
// far as its chain goes (a published index: the artifact's `subject` is the image manifest, the
// index blob's digest is the artifact's, the index names this layer and carries its own checksum —
// FindPublishedIndexes checks all of that) and every file byte against the index's chunk digests.
// Chunks without a digest (none are built by imgfs) are unverified and never stored.
//
// Tar headers: the index is trusted only as far as its chain goes, so the tar headers that
// the fetched stream carries past are checked against it too. Before a regular file's bytes
// are first returned, when the pieces holding its *header run* (the headers between the
// previous regular file's padded payload and its own: directories, links, PAX/GNU records,
// its own header) are present — a read that fetches the file's first chunk fetches them too
// when they adjoin — the run is decoded and parsed (registry::TarReader) and the last entry
// must be the file: same path, regular, same size, mode, uid and gid, payload at the same
// offset (a payload that no header can precede — overlapping the previous file, off tar's
// 512-byte grid — fails before anything is fetched). A mismatch is fetched once more (header
// bytes are not covered by chunk digests), then it is a Corrupt read (EIO) with a log line,
// and the index is dropped: every later read of the layer fails the same way, and
// Options::on_index_mismatch is told once. Not checked:
// runs longer than kMaxHeaderRunBytes (said once in the log), and files whose chunks came
// from the chunk store or memory while their headers were never fetched in this mount.
//
// Thread-safety: Read, Stats, StartBackgroundFetch and WaitIdle may be called from any number
// of threads. mu_ is never held across network or disk I/O; the only lock taken under it is
// the single-flight table's (lock order: mu_, then flights_'s), whose claims and completions
// happen together with the piece state changes. The destructor stops
// the workers (waiting for requests in progress; a stream stops at its next buffer) and fails
// what is queued.
#ifndef IMGFS_FS_LAZY_INDEXED_FETCHER_H_
#define IMGFS_FS_LAZY_INDEXED_FETCHER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/mutex.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "base/unique_fd.h"
#include "cache/chunk_store.h"
#include "fs/layer/file_data_source.h"
#include "fs/layer/layer_index.h"
#include "fs/layer/layer_reader.h"
#include "fs/lazy/fetch_engine.h"
#include "fs/lazy/lazy_fetch_options.h"
#include "fs/lazy/range_fetcher.h"
#include "fs/lazy/read_engine.h"
#include "fs/lazy/readahead.h"
#include "fs/lazy/single_flight.h"
#include "fs/lazy/verified_chunk_cache.h"
#include "registry/blob_source.h"

namespace imgfs::fs {

class IndexedRemoteData : public FileDataSource {
 public:
  // Largest piece of a compressed blob: the granularity of read-ahead and of the streaming
  // pass's progress. 1 MiB: a quarter of the default checkpoint span, ~40 ms at 200 Mbit.
  static constexpr uint64_t kMaxPieceBytes = 1 << 20;
  // Largest GET of the streaming pass. Readers of pieces it claimed wait for it, so it is
  // bounded: 64 MiB is ~2.7 s at 200 Mbit (well inside fetch_timeout), and one extra round
  // trip per 64 MiB costs under 1 % on a 20 ms link.
  static constexpr uint64_t kStreamSegmentBytes = 64 << 20;
  // Longest header run checked before a file (see "Tar headers"): 1 MiB is ~2000 entries'
  // headers in a row without a regular file between them; it bounds the memory and decoding
  // one check costs.
  static constexpr uint64_t kMaxHeaderRunBytes = 1 << 20;

  // The shared policy (fs/lazy/lazy_fetch_options.h) and what only indexed layers have.
  struct Options : LazyFetchOptions {
    // What the mount fetched for this layer's index (bytes, requests): counted in Stats().
    uint64_t index_bytes = 0;
    uint64_t index_requests = 0;
    // Called once, without a lock held, when the index was found not to match the layer's tar
    // headers (the Corrupt status says where): the owner drops its stored copy. May be empty.
    std::function<void(const Status&)> on_index_mismatch;
  };

  // `index` (format tar, tar+gzip or tar+zstd) describes the blob index->layer_digest that
  // `source` serves. The sparse copy is created in `tmp_dir` (STORE/tmp) and unlinked at once.
  // `chunks` is the shared chunk store (may be null: nothing is looked up or stored).
  // InvalidArgument for other formats; Io when the sparse copy cannot be made.
  static Result<std::unique_ptr<IndexedRemoteData>> Create(
      std::shared_ptr<registry::BlobSource> source, std::shared_ptr<const LayerIndex> index,
      const std::string& tmp_dir, std::shared_ptr<cache::ChunkStore> chunks, Options options);
  // No chunk store, default options.
  static Result<std::unique_ptr<IndexedRemoteData>> Create(
      std::shared_ptr<registry::BlobSource> source, std::shared_ptr<const LayerIndex> index,
      const std::string& tmp_dir);

  IndexedRemoteData(const IndexedRemoteData&) = delete;
  IndexedRemoteData& operator=(const IndexedRemoteData&) = delete;
  ~IndexedRemoteData() override;

  // Up to `length` bytes of regular file `entry` (an entry of this layer's index) from
  // `offset`; fewer at the end of the file, "" at or beyond it. InvalidArgument for entries
  // that are not regular files; Unavailable when the bytes did not arrive within
  // Options::fetch_timeout (or could not be fetched); Corrupt when they fail verification.
  Result<std::string> Read(const FileEntry& entry, uint64_t offset, size_t length);
  // The entry `file` names (EntryOf), read as above.
  Result<std::string> Read(const FileRef& file, uint64_t offset, size_t length) override;
  LayerStats Stats() const override;

  // Streams every missing piece of the layer in the background at the lowest priority
  // (`--prefetch=all`), verifying and storing chunks as they complete. Returns at once; a
  // no-op when a streaming pass was already started.
  void StartBackgroundFetch();
  // Blocks until no task is queued or running (tests); false on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout);

  // Whether the streaming pass was started (switch or background fetch).
  bool streamed() const { return stream_started_.load(std::memory_order_relaxed); }
  // Chunks whose pieces were fetched again after they failed verification
  // (ReadEngine::Repair).
  uint64_t repairs() const { return reads_.repairs(); }
  // Compressed bytes of the blob present in the sparse copy.
  uint64_t present_bytes() const { return present_bytes_.load(std::memory_order_relaxed); }

  const LayerIndex& index() const { return *index_; }

 private:
  using ChunkData = std::shared_ptr<const std::string>;
  using Flights = SingleFlight<uint32_t, Status>;
  using Promise = Flights::Ticket;

  enum PieceState : uint8_t { kMissing = 0, kInFlight = 1, kPresent = 2 };
  using StreamStep = RangeFetcher::StreamStep;
  using Priority = FetchPriority;
  static constexpr Priority kDemand = FetchPriority::kDemand;
  static constexpr Priority kReadAhead = FetchPriority::kReadAhead;
  static constexpr Priority kBackground = FetchPriority::kBackground;
  struct Task {
    Priority priority = kDemand;
    bool stream = false;            // the streaming pass, from the first missing piece at or ...
    uint32_t stream_from = 0;       // ... after this one (pieces/promises unused)
    std::vector<uint32_t> pieces;   // claimed, ascending; runs of them may be disjoint
    std::vector<Promise> promises;  // one per piece
  };

  IndexedRemoteData(std::shared_ptr<registry::BlobSource> source,
                    std::shared_ptr<const LayerIndex> index, UniqueFd fd,
                    std::unique_ptr<LayerReader> reader, std::shared_ptr<cache::ChunkStore> chunks,
                    Options options);

  // Compressed span [*begin, *end) holding uncompressed stream bytes [u0, u1).
  void SpanFor(uint64_t u0, uint64_t u1, uint64_t* begin, uint64_t* end) const;
  // Pieces [*first, *last) covering compressed span [begin, end).
  void PiecesFor(uint64_t begin, uint64_t end, uint32_t* first, uint32_t* last) const;
  // Makes pieces [first, last) present for `read` (fetching the missing ones, joining flights,
  // through reads_.Await) and plans read-ahead; waits until the read's deadline.
  Status EnsurePieces(const ReadEngine::Read& read, uint32_t first, uint32_t last,
                      bool plan_readahead = true);
  // Under mu_: claims missing pieces of [first, last) into tasks of at most max_request_bytes
  // (disjoint runs share a task: one multi-range request).
  void ClaimRunsLocked(uint32_t first, uint32_t last, Priority priority, std::vector<Task>* tasks)
      IMGFS_REQUIRES(mu_);
  // Under mu_: read-ahead bookkeeping for a read of pieces [first, last]; appends tasks.
  void PlanReadAheadLocked(uint32_t first, uint32_t last, std::vector<Task>* tasks)
      IMGFS_REQUIRES(mu_);

  // Runs a task; never throws (an exception fails the task's pieces, as fs/fetcher.cc).
  void RunTask(Task& task);
  // Fetches the task's pieces into the sparse copy through fetcher_ (runs of adjacent pieces
  // are ranges of one multi-range request; tried twice on demand): the result per piece.
  void FetchPieces(const Task& task, std::vector<Status>* results);
  // The compressed bytes of piece `p`.
  ByteRange PieceRange(uint32_t p) const {
    return ByteRange{piece_begin_[p], piece_begin_[p + 1] - piece_begin_[p]};
  }
  // The streaming pass; the first error that stopped it (its claimed pieces are failed).
  Status RunStream(uint32_t from, bool background);
  // The streaming pass's consumer: writes `data` at blob `offset` (the segment ends at piece
  // `seg_last`), sets *pos after it, completes the pieces it finished through `complete`
  // (from *done on) and stores the chunks they complete.
  Status StreamSink(uint64_t offset, std::string_view data, uint32_t seg_last, uint64_t* pos,
                    const uint32_t* done,
                    const std::function<void(uint32_t, const Status&)>& complete);
  // Marks pieces [first, first + promises.size()) present (ok) or missing and completes them.
  void Finish(uint32_t first, const std::vector<Promise>& promises, const Status& status);
  // Marks pieces[k] present (results[k] ok) or missing and completes it, for every k.
  void Finish(const std::vector<uint32_t>& pieces, const std::vector<Promise>& promises,
              const std::vector<Status>& results);
  void FinishLocked(uint32_t p, const Promise& promise, const Status& status) IMGFS_REQUIRES(mu_);
  // Streaming pass: verifies and stores the unverified chunks whose pieces all lie before
  // piece `frontier` and are present, in stream order.
  void StoreReadyChunks(uint32_t frontier);
  // Verifies chunk `id` from the sparse copy, stores and remembers it. Sets *refetching (and
  // returns Unavailable) instead when one of its pieces is not present: another read sent it
  // to be fetched again since the caller made the pieces present.
  Result<ChunkData> VerifyChunk(uint32_t id, bool* refetching);

  // The reader to decode pieces [first, last) with, taken in one step with the check that
  // every one of them is present; null when one is not. A refetch marks its pieces missing
  // and installs a fresh reader in one step too (InvalidatePieces), so a decode only fills
  // the block cache of a reader that was current while the bytes it decodes were present:
  // blocks decoded from bytes that are being fetched again (a bad piece) never reach the
  // reader that decodes the refetched ones.
  std::shared_ptr<LayerReader> ReaderIfPresent(uint32_t first, uint32_t last);
  std::shared_ptr<LayerReader> ReaderIfPresentLocked(uint32_t first, uint32_t last)
      IMGFS_REQUIRES(mu_);
  // After chunk `id` failed verification: forgets its present pieces (they are fetched
  // again), unverifies every chunk that shares one of them (verified again when read) and
  // starts a fresh reader.
  void Invalidate(uint32_t id);

  // Forgets present pieces [first, last) (fetched again when needed) and starts a fresh
  // reader; chunks verified from them are unverified.
  void InvalidatePieces(uint32_t first, uint32_t last);

  // Tar headers (see above). The position in runs_ of regular file `entry`, or -1.
  int64_t RunOf(const FileEntry& entry) const;
  // Pieces [*first, *last) holding run `run`'s headers; false when it is not checked (too long).
  bool RunPieces(size_t run, uint32_t* first, uint32_t* last) const;
  // Checks run `run` (of `entry`) when it is unchecked and its pieces are present; Corrupt
  // (and the index dropped) on a mismatch that a refetch did not cure.
  Status MaybeCheckHeaders(const FileEntry& entry, int64_t run, const ReadEngine::Read& read);
  // Parses run `run` from the sparse copy with `reader` (ReaderIfPresent of its pieces): an
  // error when it cannot be decoded, else "" when it ends with `entry`'s header, or what
  // differs.
  Result<std::string> CompareHeaders(const FileEntry& entry, size_t run, LayerReader& reader);
  // Drops the index (once): later reads fail; returns the Corrupt status for this one.
  Status Distrust(const FileEntry& entry, const std::string& why);

  std::shared_ptr<registry::BlobSource> source_;
  std::shared_ptr<const LayerIndex> index_;
  UniqueFd fd_;                                // the sparse copy, written here
  std::shared_ptr<cache::ChunkStore> chunks_;  // may be null
  const Options options_;
  VerifiedChunkCache<uint32_t> recent_{options_.memory_cache_bytes};  // by chunk id
  uint64_t block_bytes_;

  // Immutable after construction.
  std::vector<uint64_t> piece_begin_;        // piece i = [piece_begin_[i], piece_begin_[i + 1])
  std::vector<uint32_t> chunk_entry_;        // chunk id → index of its entry in index_->entries
  std::vector<uint32_t> chunk_order_;        // chunk ids by uncompressed stream offset
  std::vector<uint32_t> chunk_first_piece_;  // chunk id → first piece of its span
  std::vector<uint32_t> chunk_last_piece_;   // chunk id → one past the last piece of its span
  struct HeaderRun {
    uint64_t payload_offset;  // of the regular file
    uint64_t start;           // the previous regular file's padded end (0 for the first)
    uint32_t entry;           // index in index_->entries
  };
  std::vector<HeaderRun> runs_;  // by payload offset

  std::atomic<uint64_t> present_bytes_{0};
  // Deadline, repair (one refetch of a chunk's pieces) and the counters Stats() reports.
  ReadEngine reads_{source_, index_->layer_digest.String(), {options_.fetch_timeout, 1}};
  // Every request of this layer: batches, attempts, streams, and their counts in reads_.
  RangeFetcher fetcher_{source_, index_->layer_digest, reads_.counters(),
                        options_.max_request_bytes, RangeFetcher::kMaxRangesPerRequest};
  std::atomic<bool> stream_started_{false};
  std::atomic<bool> stream_running_{false};
  std::atomic<bool> distrusted_{false};  // the index did not match the tar headers
  std::atomic<bool> long_run_logged_{false};

  // Leaf lock; never held across I/O.
  mutable Mutex mu_;
  std::vector<uint8_t> state_ IMGFS_GUARDED_BY(mu_);  // PieceState by piece
  Flights flights_;  // by piece: exactly the pieces in state kInFlight (changed under mu_)
  std::vector<bool> verified_ IMGFS_GUARDED_BY(mu_);     // by chunk id
  std::vector<bool> run_checked_ IMGFS_GUARDED_BY(mu_);  // by position in runs_
  size_t store_cursor_ IMGFS_GUARDED_BY(mu_) = 0;        // in chunk_order_
  ReadAheadWindow window_ IMGFS_GUARDED_BY(mu_){0, 0};   // positions are piece numbers

  // Decodes the sparse copy. Replaced when a chunk failed verification: its block cache may
  // hold what the bad bytes decoded to.
  std::shared_ptr<LayerReader> reader_ IMGFS_GUARDED_BY(mu_);

  // Last: stopped first (the destructor stops it explicitly) while the hooks' state lives.
  FetchEngine<Task> engine_{"imgfs-idx-fetch",
                            options_.max_parallel_fetches,
                            {[this](Task& task) { RunTask(task); },
                             [this](Task& task, const Status& error) {
                               if (task.stream) return;
                               Finish(task.pieces, task.promises,
                                      std::vector<Status>(task.pieces.size(), error));
                             }}};
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAZY_INDEXED_FETCHER_H_
