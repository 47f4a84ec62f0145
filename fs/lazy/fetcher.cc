// imgfs — LazyLayerReader: file data of an eStargz or zstd:chunked layer, fetched on demand.
#include "fs/lazy/fetcher.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <optional>
#include <unordered_map>
#include <utility>

#include "base/log.h"
#include "base/thread.h"

namespace imgfs::fs {
namespace {

constexpr uint32_t kNoPos = std::numeric_limits<uint32_t>::max();
// Compressed bytes the streaming pass claims ahead of its position: readers of chunks in
// this span wait for the stream instead of fetching them a second time. 16 MiB is under a
// second at 200 Mbit, so such a reader never waits much longer than its own request would.
constexpr uint64_t kStreamClaimAheadBytes = 16 << 20;
// A run of this many compressed bytes already present ends a streamed segment; the stream
// resumes after it with a new request (one round trip costs less than re-downloading 1 MiB
// at WAN speeds: 40 ms × 25 MB/s).
constexpr uint64_t kStreamSkipBytes = 1 << 20;
// Piece size of the streaming pass over a source that has no streamed range read (local
// sources in tests): the memory of one piece.

}  // namespace

LazyLayerReader::LazyLayerReader(std::shared_ptr<registry::BlobSource> source,
                                 std::shared_ptr<const LayerIndex> index,
                                 std::shared_ptr<cache::ChunkStore> chunks)
    : LazyLayerReader(std::move(source), std::move(index), std::move(chunks), Options()) {}

LazyLayerReader::LazyLayerReader(std::shared_ptr<registry::BlobSource> source,
                                 std::shared_ptr<const LayerIndex> index,
                                 std::shared_ptr<cache::ChunkStore> chunks, Options options)
    : source_(std::move(source)),
      index_(std::move(index)),
      chunks_(std::move(chunks)),
      options_(options) {
  const std::vector<Chunk>& all = index_->chunks;
  pos_of_.assign(all.size(), kNoPos);
  for (uint32_t id = 0; id < all.size(); ++id) {
    if (all[id].blob_length > 0) order_.push_back(id);
  }
  std::stable_sort(order_.begin(), order_.end(),
                   [&](uint32_t a, uint32_t b) { return all[a].blob_offset < all[b].blob_offset; });
  uint64_t end = 0;
  for (uint32_t pos = 0; pos < order_.size(); ++pos) {
    const Chunk& c = all[order_[pos]];
    pos_of_[order_[pos]] = pos;
    fetchable_bytes_ += c.blob_length;
    end = std::max(end, c.blob_offset + c.blob_length);
  }
  chunks_end_ = end;
  present_ = std::make_unique<std::atomic<bool>[]>(order_.size());
  window_ = ReadAheadWindow(options_.readahead_min_bytes, options_.readahead_max_bytes);
  reads_.CountSetup(options_.toc_requests, options_.toc_bytes);
}

LazyLayerReader::~LazyLayerReader() { engine_.Stop(); }

std::string LazyLayerReader::KeyOf(uint32_t id) const {
  const Chunk& c = index_->chunks[id];
  if (!c.digest.empty()) return c.digest.String();
  return "#" + std::to_string(id);  // no digest: unique within this layer only
}

std::string LazyLayerReader::FileOf(uint32_t id) const {
  for (const FileEntry& e : index_->entries) {
    if (e.type == EntryType::kRegular && id >= e.first_chunk &&
        id < uint64_t{e.first_chunk} + e.chunk_count) {
      return e.path;
    }
  }
  return "?";
}

void LazyLayerReader::MarkPresent(uint32_t id) {
  const uint32_t pos = pos_of_[id];
  if (pos == kNoPos || present_[pos].exchange(true)) return;
  present_bytes_.fetch_add(index_->chunks[id].blob_length, std::memory_order_relaxed);
}

bool LazyLayerReader::KnownPresent(uint32_t id) {
  const uint32_t pos = pos_of_[id];
  if (pos != kNoPos && present_[pos].load()) return true;
  const Chunk& c = index_->chunks[id];
  if (!c.digest.empty() && chunks_->Has(c.digest)) {
    MarkPresent(id);
    return true;
  }
  return false;
}

LayerStats LazyLayerReader::Stats() const { return reads_.Stats(index_->compressed_size); }

Result<std::string> LazyLayerReader::Read(const FileRef& file, uint64_t offset, size_t length) {
  IMGFS_ASSIGN_OR_RETURN(const FileEntry* entry, EntryOf(*index_, file));
  return Read(*entry, offset, length);
}

Result<std::string> LazyLayerReader::Read(const FileEntry& entry, uint64_t offset, size_t length) {
  if (entry.type != EntryType::kRegular) {
    return Status::InvalidArgument("/" + entry.path + " is not a regular file");
  }
  if (offset >= entry.size || length == 0) return std::string();
  uint64_t end = std::min<uint64_t>(entry.size, offset + length);
  if (uint64_t{entry.first_chunk} + entry.chunk_count > index_->chunks.size()) {
    return Status::Corrupt("/" + entry.path + ": chunk range outside the layer's chunk table");
  }
  // `covering`: every chunk of the range in file order; `ids`: those with bytes to get.
  // Zeros chunks are not fetched nor materialised: their part of the range is appended as
  // zeros, so a 1 GiB run of zeros costs a read's length, not 1 GiB.
  std::vector<uint32_t> covering;
  std::vector<uint32_t> ids;
  for (uint32_t i = 0; i < entry.chunk_count; ++i) {
    uint32_t id = entry.first_chunk + i;
    const Chunk& c = index_->chunks[id];
    if (c.file_offset + c.size <= offset || c.size == 0) continue;
    if (c.file_offset >= end) break;
    covering.push_back(id);
    if (!IsZerosChunk(c)) ids.push_back(id);
  }
  // Chunks are verified as they arrive (Fetch): a bad one comes back Corrupt and, never kept,
  // is fetched again by the next round of the repair.
  const ReadEngine::Read read = reads_.Begin(entry.path);
  std::vector<ChunkData> data(ids.size());
  std::vector<Status> bad(ids.size(), Status::Ok());
  std::vector<size_t> slots(ids.size());
  for (size_t i = 0; i < slots.size(); ++i) slots[i] = i;
  Status got = reads_.Repair(
      read, slots,
      [&](const std::vector<size_t>& need) { return GetChunks(read, ids, need, &data, &bad); },
      [&](size_t slot) {
        if (data[slot] == nullptr && bad[slot].ok()) {
          return ReadEngine::Verdict{Status::Internal("chunk " + KeyOf(ids[slot]) + " not read")};
        }
        return ReadEngine::Verdict{bad[slot]};
      },
      [&](size_t slot) { bad[slot] = Status::Ok(); });
  if (!got.ok()) return got;
  std::string out;
  out.reserve(end - offset);  // at most `length`, the caller's buffer
  size_t next_data = 0;
  for (uint32_t id : covering) {
    const Chunk& c = index_->chunks[id];
    const bool zeros = IsZerosChunk(c);
    const std::string* bytes = zeros ? nullptr : data[next_data++].get();
    if (bytes != nullptr && bytes->size() != c.size) {
      return Status::Corrupt("/" + entry.path + ": chunk at " + std::to_string(c.file_offset) +
                             " has " + std::to_string(bytes->size()) + " bytes, expected " +
                             std::to_string(c.size));
    }
    uint64_t from = std::max(offset, c.file_offset);
    uint64_t to = std::min(end, c.file_offset + c.size);
    if (from >= to) continue;
    if (from != offset + out.size()) {
      return Status::Corrupt("/" + entry.path + ": chunks leave a gap at " + std::to_string(from));
    }
    if (zeros) {
      out.append(static_cast<size_t>(to - from), '\0');
    } else {
      out.append(*bytes, from - c.file_offset, to - from);
    }
  }
  if (out.size() != end - offset) {
    return Status::Corrupt("/" + entry.path + ": chunks cover " + std::to_string(out.size()) +
                           " of " + std::to_string(end - offset) + " bytes at " +
                           std::to_string(offset));
  }
  return out;
}

LazyLayerReader::ChunkData LazyLayerReader::Available(uint32_t id) {
  const Chunk& c = index_->chunks[id];
  std::string key = KeyOf(id);
  if (ChunkData recent = recent_.Find(key); recent != nullptr) {
    reads_.CountHit();
    return recent;
  }
  if (c.digest.empty()) return nullptr;
  Result<std::string> stored = chunks_->Get(c.digest);
  if (!stored.has_value()) return nullptr;
  auto data = std::make_shared<const std::string>(std::move(stored).value());
  reads_.CountHit();
  MarkPresent(id);
  recent_.Insert(key, data);
  return data;
}

bool LazyLayerReader::Completed(uint32_t id) {
  // Not present_: it remembers what the chunk store held once, which eviction may have taken
  // since; recent_ holds what was just fetched.
  return recent_.Find(KeyOf(id)) != nullptr;
}

bool LazyLayerReader::Claim(uint32_t id, Task* task) {
  std::optional<Flights::Flight> flight = flights_.Claim(KeyOf(id));
  if (!flight.has_value()) return false;
  task->ids.push_back(id);
  task->promises.push_back(std::move(flight->ticket));
  return true;
}

Status LazyLayerReader::GetChunks(const ReadEngine::Read& read, const std::vector<uint32_t>& ids,
                                  const std::vector<size_t>& need, std::vector<ChunkData>* out,
                                  std::vector<Status>* bad) {
  return reads_.Await(
      read, [&](int) { return ClaimRound(ids, need, *bad, out); },
      [&](size_t slot, const ChunkResult& r) {
        if (r.has_value()) {
          (*out)[slot] = *r;
        } else if (r.error().code() == StatusCode::kCorrupt) {
          (*bad)[slot] = r.error();  // for the repair
        } else {
          return r.error();
        }
        return Status::Ok();
      },
      [&](size_t slot) { return "chunk " + KeyOf(ids[slot]); });
}

std::vector<LazyLayerReader::Wait> LazyLayerReader::ClaimRound(const std::vector<uint32_t>& ids,
                                                               const std::vector<size_t>& need,
                                                               const std::vector<Status>& bad,
                                                               std::vector<ChunkData>* out) {
  std::vector<size_t> missing;
  uint32_t first = kNoPos;
  uint32_t last = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint32_t pos = pos_of_[ids[i]];
    if (pos != kNoPos) {
      first = std::min(first, pos);
      last = std::max(last, pos);
    }
  }
  for (size_t i : need) {
    if ((*out)[i] != nullptr || !bad[i].ok()) continue;
    (*out)[i] = Available(ids[i]);
    if ((*out)[i] == nullptr) missing.push_back(i);
  }

  std::vector<Task> tasks(1);
  Task& demand = tasks[0];
  demand.priority = kDemand;
  std::vector<Wait> waits;
  for (size_t i : missing) {
    std::optional<Flights::Flight> flight =
        flights_.JoinOrClaim(KeyOf(ids[i]), [&] { return Completed(ids[i]); });
    if (!flight.has_value()) {
      // Fetched by another thread between Available() above and the claim: Complete
      // remembers a chunk (recent_) before it leaves flights_. Gone again (evicted, not
      // stored): a failure of a flight this read did not own, so the read goes round.
      ChunkData now = Available(ids[i]);
      std::promise<ChunkResult> answered;
      answered.set_value(now != nullptr
                             ? ChunkResult(std::move(now))
                             : ChunkResult(Status::Unavailable("chunk " + KeyOf(ids[i]) +
                                                               " was dropped as it arrived")));
      waits.push_back(Wait{i, answered.get_future().share(), false});
    } else if (flight->claimed()) {
      demand.ids.push_back(ids[i]);
      demand.promises.push_back(flight->ticket);
      waits.push_back(Wait{i, flight->future, true});
    } else {
      waits.push_back(Wait{i, flight->future, false});
    }
  }
  // Widening: the chunks after the last demanded one ride along in the same request.
  if (!demand.ids.empty() && options_.widen_bytes > 0 && first != kNoPos) {
    std::vector<uint32_t> candidates;
    uint64_t scanned = 0;
    for (uint32_t pos = last + 1; pos < order_.size(); ++pos) {
      scanned += index_->chunks[order_[pos]].blob_length;
      if (scanned > options_.widen_bytes) break;  // never a big neighbour for a small read
      if (!KnownPresent(order_[pos])) candidates.push_back(order_[pos]);
    }
    for (uint32_t id : candidates) Claim(id, &demand);
  }
  if (demand.ids.size() > 1) {  // ascending blob offset, promises alongside
    std::vector<size_t> order(demand.ids.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return index_->chunks[demand.ids[a]].blob_offset < index_->chunks[demand.ids[b]].blob_offset;
    });
    Task sorted;
    sorted.priority = kDemand;
    for (size_t k : order) {
      sorted.ids.push_back(demand.ids[k]);
      sorted.promises.push_back(demand.promises[k]);
    }
    demand = std::move(sorted);
  }
  if (demand.ids.empty()) tasks.clear();
  if (first != kNoPos) PlanReadAhead(first, last, &tasks);
  engine_.Submit(std::move(tasks));
  return waits;
}

void LazyLayerReader::PlanReadAhead(uint32_t first, uint32_t last, std::vector<Task>* tasks) {
  if (!options_.readahead && !options_.streaming) return;
  uint32_t scan_from = 0;
  uint32_t scan_to = 0;
  uint32_t ahead_end_snapshot = 0;
  bool start_stream = false;
  {
    MutexLock lock(&mu_);
    auto length = [this](uint32_t p) { return index_->chunks[order_[p]].blob_length; };
    const bool sequential = window_.Record(first, last, length);
    ahead_end_snapshot = window_.ahead_end();
    if (!stream_started_.load() &&
        ShouldStream(options_, present_bytes_.load(), fetchable_bytes_, window_, *source_)) {
      stream_started_.store(true);
      start_stream = true;
    }
    // Read-ahead only for sequential reads: a first or random read fetches what it needs
    // (and its widened neighbourhood), nothing more.
    if (options_.readahead && sequential && !stream_running_.load() && !start_stream) {
      window_.Ahead(last, static_cast<uint32_t>(order_.size()), length, &scan_from, &scan_to);
    }
  }
  if (start_stream) {
    IMGFS_LOG(kInfo) << "layer " << index_->layer_digest.String()
                     << ": most of it is being read; streaming the rest";
    Task stream;
    stream.priority = kReadAhead;
    stream.stream = true;
    // From the reader on (what lies behind it was read or skipped), after what read-ahead
    // has already fetched or claimed.
    stream.stream_from = std::max(first, ahead_end_snapshot);
    tasks->push_back(std::move(stream));
    return;
  }
  if (scan_to <= scan_from) return;
  std::vector<uint32_t> candidates;
  for (uint32_t pos = scan_from; pos < scan_to; ++pos) {
    if (!KnownPresent(order_[pos])) candidates.push_back(order_[pos]);
  }
  ClaimInTasks(candidates, kReadAhead, tasks);
}

void LazyLayerReader::ClaimInTasks(const std::vector<uint32_t>& ids, Priority priority,
                                   std::vector<Task>* tasks) {
  Task current;
  current.priority = priority;
  uint64_t bytes = 0;
  for (uint32_t id : ids) {
    const uint64_t len = index_->chunks[id].blob_length;
    if (!current.ids.empty() && bytes + len > options_.max_request_bytes) {
      tasks->push_back(std::move(current));
      current = Task();
      current.priority = priority;
      bytes = 0;
    }
    if (Claim(id, &current)) bytes += len;
  }
  if (!current.ids.empty()) tasks->push_back(std::move(current));
}

void LazyLayerReader::PrefetchBefore(uint64_t blob_offset) {
  std::vector<uint32_t> candidates;
  for (uint32_t id : order_) {
    if (index_->chunks[id].blob_offset >= blob_offset) break;
    if (!KnownPresent(id)) candidates.push_back(id);
  }
  std::vector<Task> tasks;
  ClaimInTasks(candidates, kReadAhead, &tasks);
  engine_.Submit(std::move(tasks));
}

void LazyLayerReader::StartBackgroundFetch() {
  if (stream_started_.exchange(true)) return;
  std::vector<Task> tasks(1);
  tasks[0].priority = kBackground;
  tasks[0].stream = true;
  engine_.Submit(std::move(tasks));
}

bool LazyLayerReader::WaitIdle(std::chrono::milliseconds timeout) {
  return engine_.WaitIdle(timeout);
}

void LazyLayerReader::FailUnfinished(Task& task, const Status& error) {
  for (size_t k = 0; k < task.ids.size(); ++k) {
    // A chunk completed before the exception is left alone (Complete returns false).
    (void)flights_.Complete(KeyOf(task.ids[k]), task.promises[k], ChunkResult(error));
  }
}

void LazyLayerReader::RunTask(Task& task) {
  if (task.stream) {
    stream_running_.store(true);
    Status st;
    try {
      st = RunStream(task.stream_from, task.priority == kBackground);
    } catch (const std::exception& e) {
      st = Status::Internal(std::string("streaming pass: ") + e.what());
    }
    stream_running_.store(false);
    if (!st.ok()) {
      IMGFS_LOG(kWarning) << "layer " << index_->layer_digest.String()
                          << ": streaming pass stopped: " << st.ToString();
      stream_started_.store(false);  // a later read may start it again
    }
    return;
  }
  // A chunk may have been stored between the reader's look and the claim (another task
  // completed it): look again before going to the network.
  std::vector<uint32_t> ids;
  std::vector<Promise> promises;
  for (size_t k = 0; k < task.ids.size(); ++k) {
    const Chunk& c = index_->chunks[task.ids[k]];
    if (!c.digest.empty() && chunks_->Has(c.digest)) {
      Result<std::string> stored = chunks_->Get(c.digest);
      if (stored.has_value()) {
        auto data = std::make_shared<const std::string>(std::move(stored).value());
        MarkPresent(task.ids[k]);
        recent_.Insert(KeyOf(task.ids[k]), data);
        flights_.Complete(KeyOf(task.ids[k]), task.promises[k], ChunkResult(std::move(data)));
        continue;
      }
    }
    ids.push_back(task.ids[k]);
    promises.push_back(task.promises[k]);
  }
  if (ids.empty()) return;
  std::vector<ChunkResult> results;
  try {
    results = Fetch(ids, task.priority == kDemand ? options_.max_attempts : 1);
  } catch (const std::exception& e) {
    results.assign(ids.size(), ChunkResult(Status::Internal(e.what())));
  }
  for (size_t k = 0; k < ids.size(); ++k) Complete(ids[k], promises[k], std::move(results[k]));
}

std::vector<LazyLayerReader::ChunkResult> LazyLayerReader::Fetch(const std::vector<uint32_t>& ids,
                                                                 int attempts) {
  std::vector<ChunkResult> results(ids.size(), ChunkResult(Status::Internal("not fetched")));
  // Chunks separated by at most max_gap_bytes share a ranged read; the shared fetcher sends
  // the reads in multi-range batches and fetches the chunks that failed again.
  auto plan = [&](const std::vector<size_t>& todo) {
    std::vector<Chunk> list;
    list.reserve(todo.size());
    for (size_t k : todo) list.push_back(index_->chunks[ids[k]]);
    std::vector<UnitRead> reads;
    for (CoalescedRead& read : CoalesceChunkReads(list, options_.max_gap_bytes)) {
      UnitRead unit{read.range, {}};
      unit.units.reserve(read.chunks.size());
      for (size_t j : read.chunks) unit.units.push_back(todo[j]);
      reads.push_back(std::move(unit));
    }
    return reads;
  };
  auto deliver = [&](const UnitRead& read, const Result<std::string>& bytes,
                     std::vector<size_t>* failed) {
    for (size_t k : read.units) {
      if (!bytes.has_value()) {
        results[k] = bytes.error();
        failed->push_back(k);
        continue;
      }
      const Chunk& c = index_->chunks[ids[k]];
      const std::string_view slice = SliceChunk(CoalescedRead{read.range, {}}, *bytes, c);
      Result<std::string> data = DecodeChunk(index_->format, c, slice, index_->layer_digest, "");
      if (!data.has_value()) {
        // Again with the file's name, for the error the reader answers. Not fetched again
        // here: the read that needs the chunk repairs it (ReadEngine::Repair).
        results[k] =
            DecodeChunk(index_->format, c, slice, index_->layer_digest, FileOf(ids[k])).error();
        continue;
      }
      results[k] = ChunkResult(std::make_shared<const std::string>(std::move(data).value()));
    }
  };
  auto log = [&](int attempt, size_t tried, const std::vector<size_t>& failed) {
    const size_t first = failed.front();
    IMGFS_LOG(kWarning) << "lazy fetch of /" << FileOf(ids[first]) << " in layer "
                        << index_->layer_digest.String() << " (chunk " << KeyOf(ids[first]) << ", "
                        << failed.size() << " of " << tried << " chunks) failed, attempt "
                        << attempt << ": " << results[first].error().ToString();
  };
  fetcher_.Fetch(ids.size(), attempts, engine_, plan, deliver, log);
  return results;
}

void LazyLayerReader::Complete(uint32_t id, const Promise& promise, ChunkResult result) {
  const std::string key = KeyOf(id);
  if (result.has_value()) {
    reads_.CountFetched();
    const Chunk& c = index_->chunks[id];
    if (!c.digest.empty()) {
      Status put = chunks_->Put(c.digest, **result);
      if (!put.ok()) {
        IMGFS_LOG(kWarning) << "chunk store: cannot keep " << c.digest.String() << ": "
                            << put.ToString();
      } else {
        MarkPresent(id);
      }
    }
    recent_.Insert(key, *result);  // before it leaves flights_: see Completed
  }
  flights_.Complete(key, promise, std::move(result));
}

Status LazyLayerReader::RunStream(uint32_t from, bool background) {
  const std::vector<Chunk>& all = index_->chunks;
  const uint32_t n = static_cast<uint32_t>(order_.size());

  std::unordered_map<uint32_t, Promise> claimed;  // position → promise of a claimed chunk
  uint32_t claim_to = from;                       // positions below were considered
  auto claim_ahead = [&](uint64_t upto, uint32_t limit) {
    std::vector<uint32_t> candidates;
    while (claim_to < limit && all[order_[claim_to]].blob_offset < upto) {
      if (!KnownPresent(order_[claim_to])) candidates.push_back(claim_to);
      ++claim_to;
    }
    for (uint32_t pos : candidates) {
      // Not when in flight, nor when a demand read finished it meanwhile.
      std::optional<Flights::Flight> flight =
          flights_.JoinOrClaim(KeyOf(order_[pos]), [&] { return Completed(order_[pos]); });
      if (flight.has_value() && flight->claimed()) claimed.emplace(pos, std::move(flight->ticket));
    }
  };

  // buf holds the received blob bytes [buf_start, buf_start + buf.size()); received_end is
  // the blob offset after the last byte received. Dropping a decoded chunk may move
  // buf_start past received_end (the next chunk starts after a gap not yet received: the
  // tar-header frames between zstd:chunked payloads); the gap's bytes are then discarded as
  // they arrive instead of being taken for the next chunk's.
  std::string buf;
  uint64_t buf_start = 0;     // blob offset of buf[0]
  uint64_t received_end = 0;  // blob offset after the last byte received in this segment
  uint32_t next = 0;          // next position to decode
  uint32_t seg_end = 0;       // end position of the current segment
  uint64_t decode_failures = 0;
  // The shared fetcher stops at a closing mount, yields to demand and counts the bytes.
  auto consume = [&](uint64_t data_start, std::string_view data) -> Result<StreamStep> {
    received_end = data_start + data.size();
    if (received_end <= buf_start) return StreamStep::kMore;  // all of it inside a gap
    if (data_start < buf_start) data.remove_prefix(buf_start - data_start);
    buf.append(data);
    while (next < seg_end) {
      const Chunk& c = all[order_[next]];
      if (c.blob_offset + c.blob_length > buf_start + buf.size()) break;
      auto it = claimed.find(next);
      if (it != claimed.end()) {
        std::string_view bytes =
            std::string_view(buf).substr(c.blob_offset - buf_start, c.blob_length);
        Result<std::string> decoded =
            DecodeChunk(index_->format, c, bytes, index_->layer_digest, "");
        if (!decoded.has_value() && decode_failures++ == 0) {
          IMGFS_LOG(kWarning) << "streaming pass of layer " << index_->layer_digest.String()
                              << ": chunk " << KeyOf(order_[next]) << " of /"
                              << FileOf(order_[next]) << ": " << decoded.error().ToString()
                              << " (its readers fetch it themselves)";
        }
        ChunkResult result =
            decoded.has_value()
                ? ChunkResult(std::make_shared<const std::string>(std::move(decoded).value()))
                : ChunkResult(decoded.error());
        Complete(order_[next], it->second, std::move(result));
        claimed.erase(it);
      }
      ++next;
      if (next < seg_end) {
        const uint64_t keep_from = std::max(buf_start, all[order_[next]].blob_offset);
        if (keep_from - buf_start >= buf.size()) {
          buf.clear();  // the rest (if any) of the gap is dropped as it arrives
        } else {
          buf.erase(0, keep_from - buf_start);
        }
        buf_start = keep_from;
        claim_ahead(keep_from + kStreamClaimAheadBytes, seg_end);
        // Readers that ran ahead of the stream fetched (or are fetching) what comes next:
        // rather than download it a second time, end this request and resume after it.
        if (claimed.count(next) == 0) {
          uint64_t run = 0;
          for (uint32_t p = next; p < seg_end && p < claim_to && claimed.count(p) == 0; ++p) {
            run += all[order_[p]].blob_length;
            if (run >= kStreamSkipBytes) break;
          }
          if (run >= kStreamSkipBytes) {
            seg_end = next;
            break;
          }
        }
      }
    }
    return next >= seg_end ? StreamStep::kEnough : StreamStep::kMore;
  };

  // Segments: from the first missing chunk to the next run of kStreamSkipBytes of present
  // chunks (read-ahead and earlier reads leave such runs), then on after it.
  // Present, or being fetched by a reader or the read-ahead.
  auto taken = [&](uint32_t p) {
    if (KnownPresent(order_[p])) return true;
    return flights_.InFlight(KeyOf(order_[p])) && claimed.count(p) == 0;
  };
  uint32_t pos = from;
  RangeFetcher::StreamPassHooks hooks;
  hooks.next = [&]() -> std::optional<ByteRange> {
    while (pos < n && taken(pos)) ++pos;
    if (pos >= n) return std::nullopt;
    uint32_t end = pos;
    uint64_t run = 0;
    uint32_t run_start = pos;
    for (; end < n; ++end) {
      if (!taken(end)) {
        run = 0;
        continue;
      }
      if (run == 0) run_start = end;
      run += all[order_[end]].blob_length;
      if (run >= kStreamSkipBytes) break;
    }
    seg_end = end < n ? run_start : n;
    next = pos;
    claim_to = std::max(claim_to, pos);
    buf.clear();
    buf_start = all[order_[pos]].blob_offset;
    received_end = buf_start;
    uint64_t seg_bytes_end = 0;
    for (uint32_t p = pos; p < seg_end; ++p) {
      seg_bytes_end =
          std::max(seg_bytes_end, all[order_[p]].blob_offset + all[order_[p]].blob_length);
    }
    claim_ahead(buf_start + kStreamClaimAheadBytes, seg_end);
    return ByteRange{buf_start, seg_bytes_end - buf_start};
  };
  hooks.consume = consume;
  hooks.done = [&](Status result) {
    if (next >= seg_end) result = Status::Ok();  // ended early on purpose (kEnough)
    if (result.ok() && next < seg_end) {
      result = Status::Unavailable("the blob ended inside the streamed range");
    }
    pos = seg_end;
    return result;
  };
  Status st = fetcher_.StreamPass(background, engine_, hooks);
  for (auto& [p, promise] : claimed) {
    Complete(order_[p], promise,
             Status::Unavailable("streaming pass of layer " + index_->layer_digest.String() +
                                 " ended before this chunk" +
                                 (st.ok() ? std::string() : ": " + st.ToString())));
  }
  return st;
}

}  // namespace imgfs::fs
