// imgfs — IndexedRemoteData (see indexed_fetcher.h).
#include "fs/lazy/indexed_fetcher.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <utility>

#include "base/log.h"
#include "base/thread.h"
#include "registry/tar_reader.h"

namespace imgfs::fs {
namespace {

constexpr uint32_t kNoEntry = std::numeric_limits<uint32_t>::max();

Status PwriteAll(int fd, std::string_view data, uint64_t offset) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Io(std::string("pwrite: ") + std::strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

// Tar's record size: headers and payloads start at multiples of it.
constexpr uint64_t kTarBlockBytes = 512;

// A header run's bytes as a TarInput of unknown size, so that the run's last header (whose
// payload lies past the run) is not refused as reaching beyond the input.
class RunInput : public registry::TarInput {
 public:
  explicit RunInput(std::string_view data) : data_(data) {}
  Result<std::string> Read(size_t n) override {
    n = std::min(n, data_.size() - pos_);
    std::string out(data_.substr(pos_, n));
    pos_ += n;
    return out;
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// `cache_bytes`: the layer's share of the mount's memory budget (LazyFetchOptions).
LayerReader::Options ReaderOptions(size_t cache_bytes) {
  LayerReader::Options options;
  options.max_parked_decoders = 0;  // a parked decoder may hold bytes read before a fetch
  options.cache_bytes = std::max(cache_bytes, options.block_bytes);
  return options;
}

}  // namespace

Result<std::unique_ptr<IndexedRemoteData>> IndexedRemoteData::Create(
    std::shared_ptr<registry::BlobSource> source, std::shared_ptr<const LayerIndex> index,
    const std::string& tmp_dir) {
  return Create(std::move(source), std::move(index), tmp_dir, nullptr, Options());
}

Result<std::unique_ptr<IndexedRemoteData>> IndexedRemoteData::Create(
    std::shared_ptr<registry::BlobSource> source, std::shared_ptr<const LayerIndex> index,
    const std::string& tmp_dir, std::shared_ptr<cache::ChunkStore> chunks, Options options) {
  if (index->format != LayerFormat::kTar && index->format != LayerFormat::kTarGzip &&
      index->format != LayerFormat::kTarZstd) {
    return Status::InvalidArgument("layer " + index->layer_digest.String() +
                                   ": not a plain tar / tar+gzip / tar+zstd index");
  }
  for (const FileEntry& e : index->entries) {
    if (e.type == EntryType::kRegular &&
        uint64_t{e.first_chunk} + e.chunk_count > index->chunks.size()) {
      return Status::Corrupt("layer " + index->layer_digest.String() + ": /" + e.path +
                             " has chunks outside the chunk table");
    }
  }
  ::mkdir(tmp_dir.c_str(), 0700);
  std::string path = tmp_dir + "/lazy-" + index->layer_digest.hex().substr(0, 12) + "-XXXXXX";
  int raw = ::mkstemp(path.data());
  if (raw < 0) {
    return Status::Io("cannot create a sparse copy in " + tmp_dir + ": " + std::strerror(errno));
  }
  UniqueFd fd(raw);
  if (::ftruncate(fd.get(), static_cast<off_t>(index->compressed_size)) != 0) {
    int err = errno;
    ::unlink(path.c_str());
    return Status::Io("ftruncate " + path + ": " + std::strerror(err));
  }
  Result<std::unique_ptr<LayerReader>> reader =
      LayerReader::Open(path, index, ReaderOptions(options.memory_cache_bytes));
  ::unlink(path.c_str());
  if (!reader.has_value()) return reader.error();
  options.max_parallel_fetches = std::max(1, options.max_parallel_fetches);
  options.max_request_bytes = std::max<uint64_t>(options.max_request_bytes, 1);
  options.readahead_min_bytes = std::max<uint64_t>(options.readahead_min_bytes, 1);
  options.readahead_max_bytes = std::max(options.readahead_max_bytes, options.readahead_min_bytes);
  return std::unique_ptr<IndexedRemoteData>(
      new IndexedRemoteData(std::move(source), std::move(index), std::move(fd),
                            std::move(reader).value(), std::move(chunks), options));
}

IndexedRemoteData::IndexedRemoteData(std::shared_ptr<registry::BlobSource> source,
                                     std::shared_ptr<const LayerIndex> index, UniqueFd fd,
                                     std::unique_ptr<LayerReader> reader,
                                     std::shared_ptr<cache::ChunkStore> chunks, Options options)
    : source_(std::move(source)),
      index_(std::move(index)),
      fd_(std::move(fd)),
      chunks_(std::move(chunks)),
      options_(std::move(options)),
      block_bytes_(LayerReader::Options().block_bytes),
      reader_(std::move(reader)) {
  const uint64_t size = index_->compressed_size;
  // Piece boundaries.
  std::vector<uint64_t> cuts{0};
  if (index_->format == LayerFormat::kTar) {
    for (uint64_t b = block_bytes_; b < size; b += block_bytes_) cuts.push_back(b);
  } else {
    for (const Checkpoint& cp : index_->checkpoints) {
      if (cp.compressed_offset >= 1) cuts.push_back(cp.compressed_offset - 1);
      cuts.push_back(cp.compressed_offset + 1);
    }
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  while (!cuts.empty() && cuts.back() >= size && cuts.size() > 1) cuts.pop_back();
  for (size_t i = 0; i < cuts.size(); ++i) {
    const uint64_t next = i + 1 < cuts.size() ? cuts[i + 1] : size;
    for (uint64_t at = cuts[i]; at < next; at += kMaxPieceBytes) piece_begin_.push_back(at);
  }
  piece_begin_.push_back(size);  // sentinel
  const size_t pieces = piece_begin_.size() - 1;
  state_.assign(pieces, kMissing);

  // Chunks: owner entry, span in pieces, stream order.
  chunk_entry_.assign(index_->chunks.size(), kNoEntry);
  chunk_first_piece_.assign(index_->chunks.size(), 0);
  chunk_last_piece_.assign(index_->chunks.size(), 0);
  verified_.assign(index_->chunks.size(), false);
  std::vector<std::pair<uint64_t, uint32_t>> by_offset;
  for (uint32_t e = 0; e < index_->entries.size(); ++e) {
    const FileEntry& entry = index_->entries[e];
    if (entry.type != EntryType::kRegular) continue;
    for (uint32_t k = 0; k < entry.chunk_count; ++k) {
      const uint32_t id = entry.first_chunk + k;
      if (chunk_entry_[id] != kNoEntry) continue;
      const Chunk& c = index_->chunks[id];
      chunk_entry_[id] = e;
      const uint64_t u0 = entry.payload_offset + c.file_offset;
      uint64_t begin = 0;
      uint64_t end = 0;
      SpanFor(u0, u0 + c.size, &begin, &end);
      PiecesFor(begin, end, &chunk_first_piece_[id], &chunk_last_piece_[id]);
      by_offset.emplace_back(u0, id);
    }
  }
  std::sort(by_offset.begin(), by_offset.end());
  for (const auto& [offset, id] : by_offset) chunk_order_.push_back(id);

  // Header runs: from the previous regular file's padded end (tar order) to each payload.
  uint64_t prev_end = 0;
  for (uint32_t e = 0; e < index_->entries.size(); ++e) {
    const FileEntry& entry = index_->entries[e];
    if (entry.type != EntryType::kRegular) continue;
    runs_.push_back(HeaderRun{entry.payload_offset, prev_end, e});
    const uint64_t end =
        entry.size > std::numeric_limits<uint64_t>::max() / 2 - entry.payload_offset
            ? std::numeric_limits<uint64_t>::max() / 2  // absurd: no room anyway
            : entry.payload_offset + entry.size;
    prev_end = std::max(prev_end, (end + kTarBlockBytes - 1) / kTarBlockBytes * kTarBlockBytes);
  }
  std::stable_sort(runs_.begin(), runs_.end(), [](const HeaderRun& a, const HeaderRun& b) {
    return a.payload_offset < b.payload_offset;
  });
  run_checked_.assign(runs_.size(), false);

  window_ = ReadAheadWindow(options_.readahead_min_bytes, options_.readahead_max_bytes);
  reads_.CountSetup(options_.index_requests, options_.index_bytes);
}

IndexedRemoteData::~IndexedRemoteData() { engine_.Stop(); }

void IndexedRemoteData::SpanFor(uint64_t u0, uint64_t u1, uint64_t* begin, uint64_t* end) const {
  const uint64_t size = index_->compressed_size;
  // The LayerReader decodes whole cache blocks.
  u0 = u0 / block_bytes_ * block_bytes_;
  u1 = std::min<uint64_t>((u1 + block_bytes_ - 1) / block_bytes_ * block_bytes_,
                          index_->uncompressed_size);
  if (index_->format == LayerFormat::kTar) {
    *begin = std::min(u0, size);
    *end = std::min(u1, size);
    return;
  }
  const std::vector<Checkpoint>& cps = index_->checkpoints;
  if (cps.empty()) {
    *begin = 0;
    *end = size;
    return;
  }
  const Checkpoint& first = cps[index_->CheckpointFor(u0)];
  *begin = first.compressed_offset > 0 ? first.compressed_offset - 1 : 0;  // the `bits` byte
  *end = size;  // past the last checkpoint: to the end (trailer included)
  // The first checkpoint strictly after u1 (binary search: this runs per chunk at mount), and
  // not before `begin`. Both offsets grow with the checkpoint number. Strictly: a decoder
  // whose output ends exactly at a deflate block end goes on to parse the next block's
  // header (zlib does, without needing output space: an empty stored block's LEN/NLEN lie up
  // to 5 bytes past the checkpoint, a dynamic block's header further), so when u1 is a
  // checkpoint's offset (gzip cut by pigz/pgzip puts every checkpoint on a cache-block
  // boundary) the bytes up to the next checkpoint must be here too. Past a checkpoint the
  // decoder stops at the first symbol that needs output, which lies before the next one.
  auto it = std::upper_bound(cps.begin(), cps.end(), u1, [](uint64_t off, const Checkpoint& cp) {
    return off < cp.uncompressed_offset;
  });
  while (it != cps.end() && it->compressed_offset < *begin) ++it;
  if (it != cps.end()) *end = std::min(size, it->compressed_offset + 1);
}

void IndexedRemoteData::PiecesFor(uint64_t begin, uint64_t end, uint32_t* first,
                                  uint32_t* last) const {
  const size_t pieces = piece_begin_.size() - 1;
  if (begin >= end || pieces == 0) {
    *first = *last = 0;
    return;
  }
  // The piece holding `begin`; one past the last piece starting before `end`.
  auto f = std::upper_bound(piece_begin_.begin(), piece_begin_.end() - 1, begin);
  auto l = std::lower_bound(piece_begin_.begin(), piece_begin_.end() - 1, end);
  *first = static_cast<uint32_t>(f - piece_begin_.begin()) - 1;
  *last = static_cast<uint32_t>(l - piece_begin_.begin());
}

std::shared_ptr<LayerReader> IndexedRemoteData::ReaderIfPresent(uint32_t first, uint32_t last) {
  MutexLock lock(&mu_);
  return ReaderIfPresentLocked(first, last);
}

std::shared_ptr<LayerReader> IndexedRemoteData::ReaderIfPresentLocked(uint32_t first,
                                                                      uint32_t last) {
  for (uint32_t p = first; p < last; ++p) {
    if (state_[p] != kPresent) return nullptr;
  }
  return reader_;
}

void IndexedRemoteData::Invalidate(uint32_t id) {
  InvalidatePieces(chunk_first_piece_[id], chunk_last_piece_[id]);
}

void IndexedRemoteData::InvalidatePieces(uint32_t first, uint32_t last) {
  // The sparse copy is unlinked: open it again through this process's descriptor.
  Result<std::unique_ptr<LayerReader>> fresh =
      LayerReader::Open("/proc/self/fd/" + std::to_string(fd_.get()), index_,
                        ReaderOptions(options_.memory_cache_bytes));
  if (!fresh.has_value()) {
    IMGFS_LOG(kWarning) << "layer " << index_->layer_digest.String()
                        << ": cannot reopen the sparse copy: " << fresh.error().ToString();
  }
  MutexLock lock(&mu_);
  for (uint32_t p = first; p < last; ++p) {
    if (state_[p] != kPresent) continue;
    state_[p] = kMissing;
    present_bytes_.fetch_sub(piece_begin_[p + 1] - piece_begin_[p]);
  }
  // Chunks between two checkpoints share pieces: every chunk verified from the pieces reset
  // here is unverified again (its bytes in the sparse copy are about to be rewritten).
  for (uint32_t other = 0; other < verified_.size(); ++other) {
    if (verified_[other] && chunk_first_piece_[other] < last && chunk_last_piece_[other] > first) {
      verified_[other] = false;
    }
  }
  if (fresh.has_value()) reader_ = std::move(fresh).value();
}

Result<std::string> IndexedRemoteData::Read(const FileRef& file, uint64_t offset, size_t length) {
  IMGFS_ASSIGN_OR_RETURN(const FileEntry* entry, EntryOf(*index_, file));
  return Read(*entry, offset, length);
}

Result<std::string> IndexedRemoteData::Read(const FileEntry& entry, uint64_t offset,
                                            size_t length) {
  if (entry.type != EntryType::kRegular) {
    return Status::InvalidArgument("/" + entry.path + " is not a regular file");
  }
  if (distrusted_.load()) {
    return Status::Corrupt("layer " + index_->layer_digest.String() +
                           ": its index does not match its tar headers; /" + entry.path +
                           " is not served");
  }
  if (offset >= entry.size || length == 0) return std::string();
  const uint64_t end = std::min<uint64_t>(entry.size, offset + length);
  if (uint64_t{entry.first_chunk} + entry.chunk_count > index_->chunks.size()) {
    return Status::Corrupt("/" + entry.path + ": chunk range outside the layer's chunk table");
  }
  // The file's header run, while it is unchecked (see "Tar headers" in the header).
  int64_t run = RunOf(entry);
  if (run >= 0) {
    MutexLock lock(&mu_);
    if (run_checked_[static_cast<size_t>(run)]) run = -1;
  }
  if (run >= 0) {
    const HeaderRun& r = runs_[static_cast<size_t>(run)];
    if (r.start + kTarBlockBytes > r.payload_offset || r.payload_offset % kTarBlockBytes != 0) {
      // No room for a header before the payload, or a payload off tar's record grid.
      return Distrust(entry, "its payload offset " + std::to_string(r.payload_offset) +
                                 " cannot follow a tar header (the previous file ends at " +
                                 std::to_string(r.start) + ")");
    }
  }
  // The chunks overlapping [offset, end), and whether they cover it.
  std::vector<uint32_t> ids;
  uint64_t covered_to = offset;
  bool gap = false;
  for (uint32_t k = 0; k < entry.chunk_count; ++k) {
    const uint32_t id = entry.first_chunk + k;
    const Chunk& c = index_->chunks[id];
    if (c.size == 0 || c.file_offset >= end || c.file_offset + c.size <= offset) continue;
    if (c.file_offset > covered_to) gap = true;
    covered_to = std::max(covered_to, c.file_offset + c.size);
    ids.push_back(id);
  }
  const ReadEngine::Read read = reads_.Begin(entry.path);
  if (gap || covered_to < end || ids.empty()) {
    // No chunk table for these bytes (imgfs never builds such an index): unverified.
    uint64_t begin = 0;
    uint64_t stop = 0;
    SpanFor(entry.payload_offset + offset, entry.payload_offset + end, &begin, &stop);
    uint32_t first = 0;
    uint32_t last = 0;
    PiecesFor(begin, stop, &first, &last);
    if (Status st = EnsurePieces(read, first, last); !st.ok()) return reads_.Failed(st);
    // A failed check is counted by its repair.
    IMGFS_RETURN_IF_ERROR(MaybeCheckHeaders(entry, run, read));
    std::shared_ptr<LayerReader> reader = ReaderIfPresent(first, last);
    if (reader == nullptr) {
      return reads_.Failed(
          Status::Unavailable("/" + entry.path + ": its bytes are being fetched again"));
    }
    return reader->Read(entry, offset, length);
  }

  std::vector<ChunkData> data(ids.size());
  std::vector<size_t> need;
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint32_t id = ids[i];
    if ((data[i] = recent_.Find(id)) != nullptr) {
      reads_.CountHit();
      continue;
    }
    // A chunk verified earlier and no longer in memory is verified again from the sparse
    // copy (its pieces are present: no fetch) or comes from the chunk store: no byte is
    // served unchecked, even when a neighbour's refetch rewrote shared pieces.
    const Chunk& c = index_->chunks[id];
    if (chunks_ != nullptr && !c.digest.empty()) {
      Result<std::string> stored = chunks_->Get(c.digest);
      if (stored.has_value()) {
        data[i] = std::make_shared<const std::string>(std::move(stored).value());
        reads_.CountHit();
        recent_.Insert(id, data[i]);
        continue;
      }
    }
    need.push_back(i);
  }
  // The shared repair (ReadEngine::Repair): make the pieces of `need` present, verify each
  // chunk from them; a chunk that fails verification has its pieces forgotten and fetched
  // again (a fresh LayerReader decodes them: see the invariant in the header).
  bool first_round = true;
  auto ensure = [&](const std::vector<size_t>& todo) {
    uint32_t first = std::numeric_limits<uint32_t>::max();
    uint32_t last = 0;
    for (size_t i : todo) {
      first = std::min(first, chunk_first_piece_[ids[i]]);
      last = std::max(last, chunk_last_piece_[ids[i]]);
    }
    // A read of the file's first chunk fetches the header run along with it (its pieces
    // adjoin, mostly they are the same); other reads check it only when it is here already.
    uint32_t run_first = 0;
    uint32_t run_last = 0;
    const bool head = std::any_of(todo.begin(), todo.end(),
                                  [&](size_t i) { return ids[i] == entry.first_chunk; });
    if (first_round && head && run >= 0 &&
        RunPieces(static_cast<size_t>(run), &run_first, &run_last) && run_last >= first) {
      first = std::min(first, run_first);
    }
    first_round = false;
    return EnsurePieces(read, first, last);
  };
  auto verify = [&](size_t i) {
    bool refetching = false;
    Result<ChunkData> chunk = VerifyChunk(ids[i], &refetching);
    if (!chunk.has_value()) return ReadEngine::Verdict{chunk.error(), refetching};
    data[i] = std::move(chunk).value();
    return ReadEngine::Verdict{};
  };
  if (Status st = reads_.Repair(read, need, ensure, verify, [&](size_t i) { Invalidate(ids[i]); });
      !st.ok()) {
    return st;
  }
  // A failed check is counted by its repair.
  IMGFS_RETURN_IF_ERROR(MaybeCheckHeaders(entry, run, read));

  std::string out;
  out.reserve(end - offset);
  for (size_t i = 0; i < ids.size(); ++i) {
    const Chunk& c = index_->chunks[ids[i]];
    const uint64_t from = std::max(offset + out.size(), c.file_offset);
    const uint64_t to = std::min(end, c.file_offset + c.size);
    if (from >= to) continue;
    if (data[i] != nullptr) {
      if (data[i]->size() != c.size) {
        return Status::Corrupt("/" + entry.path + ": chunk at " + std::to_string(c.file_offset) +
                               " has " + std::to_string(data[i]->size()) + " bytes, expected " +
                               std::to_string(c.size));
      }
      out.append(*data[i], from - c.file_offset, to - from);
    } else {
      return reads_.Failed(Status::Internal("/" + entry.path + ": chunk at " +
                                            std::to_string(c.file_offset) + " was not read"));
    }
  }
  if (out.size() != end - offset) {
    return Status::Corrupt("/" + entry.path + ": chunks cover " + std::to_string(out.size()) +
                           " of " + std::to_string(end - offset) + " bytes at " +
                           std::to_string(offset));
  }
  return out;
}

Result<IndexedRemoteData::ChunkData> IndexedRemoteData::VerifyChunk(uint32_t id, bool* refetching) {
  const FileEntry& entry = index_->entries[chunk_entry_[id]];
  std::shared_ptr<LayerReader> reader =
      ReaderIfPresent(chunk_first_piece_[id], chunk_last_piece_[id]);
  if (reader == nullptr) {
    *refetching = true;
    return Status::Unavailable("/" + entry.path + ": a piece of its chunk is being fetched again");
  }
  Result<std::string> bytes = reader->ReadChunk(entry, id - entry.first_chunk);
  if (!bytes.has_value()) return bytes.error();
  auto data = std::make_shared<const std::string>(std::move(bytes).value());
  bool counted = false;
  {
    MutexLock lock(&mu_);
    counted = !verified_[id];
    verified_[id] = true;
  }
  if (counted) reads_.CountFetched();
  const Chunk& c = index_->chunks[id];
  if (chunks_ != nullptr && !c.digest.empty()) {
    Status stored = chunks_->Put(c.digest, *data);
    if (!stored.ok()) {
      IMGFS_LOG(kWarning) << "chunk " << c.digest.String() << " of /" << entry.path
                          << " not stored: " << stored.ToString();
    }
  }
  recent_.Insert(id, data);
  return data;
}

Status IndexedRemoteData::EnsurePieces(const ReadEngine::Read& read, uint32_t first, uint32_t last,
                                       bool plan_readahead) {
  using Wait = ReadEngine::Wait<Status>;
  auto round = [&](int pass) {
    std::vector<Task> tasks;
    std::vector<Wait> waits;
    {
      MutexLock lock(&mu_);
      for (uint32_t p = first; p < last; ++p) {
        if (state_[p] != kInFlight) continue;
        std::optional<Flights::Flight> flight = flights_.Find(p);
        if (flight.has_value()) waits.push_back(Wait{p, flight->future, false});
      }
      ClaimRunsLocked(first, last, kDemand, &tasks);
      for (const Task& t : tasks) {
        for (size_t k = 0; k < t.pieces.size(); ++k) {
          // Still in flight: the task is submitted only below.
          std::optional<Flights::Flight> flight = flights_.Find(t.pieces[k]);
          if (flight.has_value()) waits.push_back(Wait{t.pieces[k], flight->future, true});
        }
      }
      if (plan_readahead && pass == 0 && last > first) {
        PlanReadAheadLocked(first, last - 1, &tasks);
      }
    }
    engine_.Submit(std::move(tasks));
    return waits;
  };
  return reads_.Await(
      read, round, [](size_t, const Status& st) { return st; },
      [](size_t) { return std::string("data"); });
}

int64_t IndexedRemoteData::RunOf(const FileEntry& entry) const {
  auto it = std::lower_bound(
      runs_.begin(), runs_.end(), entry.payload_offset,
      [](const HeaderRun& r, uint64_t offset) { return r.payload_offset < offset; });
  for (; it != runs_.end() && it->payload_offset == entry.payload_offset; ++it) {
    const FileEntry& e = index_->entries[it->entry];
    if (e.path == entry.path && e.size == entry.size) return it - runs_.begin();
  }
  return -1;
}

bool IndexedRemoteData::RunPieces(size_t run, uint32_t* first, uint32_t* last) const {
  const HeaderRun& r = runs_[run];
  if (r.start >= r.payload_offset || r.payload_offset - r.start > kMaxHeaderRunBytes) return false;
  uint64_t begin = 0;
  uint64_t end = 0;
  SpanFor(r.start, r.payload_offset, &begin, &end);
  PiecesFor(begin, end, first, last);
  return true;
}

Status IndexedRemoteData::MaybeCheckHeaders(const FileEntry& entry, int64_t run,
                                            const ReadEngine::Read& read) {
  if (run < 0) return Status::Ok();
  const size_t at = static_cast<size_t>(run);
  const HeaderRun& r = runs_[at];
  auto mark_checked = [&] {
    MutexLock lock(&mu_);
    run_checked_[at] = true;
  };
  uint32_t first = 0;
  uint32_t last = 0;
  if (!RunPieces(at, &first, &last)) {
    if (!long_run_logged_.exchange(true)) {
      IMGFS_LOG(kInfo) << "layer " << index_->layer_digest.String() << ": /" << entry.path
                       << " follows " << (r.payload_offset - r.start)
                       << " bytes of tar headers, more than the " << kMaxHeaderRunBytes / 1024
                       << " KiB checked against the index";
    }
    mark_checked();
    return Status::Ok();
  }
  std::shared_ptr<LayerReader> reader;
  {
    MutexLock lock(&mu_);
    if (run_checked_[at]) return Status::Ok();
    reader = ReaderIfPresentLocked(first, last);
    if (reader == nullptr) return Status::Ok();  // not streamed past (yet)
  }
  // Header bytes are covered by no chunk digest: bad bytes are fetched once more (the shared
  // repair: forgotten, fetched anew, decoded by a fresh reader) before the index is blamed.
  // What the last check found, cleared before each fetch: a mismatch, or why the headers
  // could not be read.
  std::string mismatch;
  Status unreadable = Status::Ok();
  bool first_check = true;  // of pieces present already: nothing to fetch
  auto ensure = [&](const std::vector<size_t>&) {
    mismatch.clear();
    unreadable = Status::Ok();
    return first_check ? Status::Ok() : EnsurePieces(read, first, last, false);
  };
  auto verify = [&](size_t) {
    std::shared_ptr<LayerReader> now = first_check ? reader : ReaderIfPresent(first, last);
    first_check = false;
    // Null: another read sent them to be fetched once more in between; wait for that.
    if (now == nullptr) return ReadEngine::Verdict{Status::Ok(), true};
    Result<std::string> differs = CompareHeaders(entry, at, *now);
    if (differs.has_value() && differs->empty()) return ReadEngine::Verdict{};
    if (differs.has_value()) {
      mismatch = *differs;
    } else {
      unreadable = differs.error();
    }
    return ReadEngine::Verdict{
        Status::Corrupt("the tar headers before it " +
                        (differs.has_value() ? "do not match the index (" + *differs + ")"
                                             : "cannot be read: " + differs.error().ToString()))};
  };
  Status st =
      reads_.Repair(read, {0}, ensure, verify, [&](size_t) { InvalidatePieces(first, last); });
  if (st.ok()) {
    mark_checked();
    return st;
  }
  if (!mismatch.empty()) return Distrust(entry, mismatch);
  if (!unreadable.ok()) return unreadable;
  return st;
}

Result<std::string> IndexedRemoteData::CompareHeaders(const FileEntry& entry, size_t run,
                                                      LayerReader& reader) {
  const HeaderRun& r = runs_[run];
  IMGFS_ASSIGN_OR_RETURN(
      std::string bytes,
      reader.ReadStream(r.start, static_cast<size_t>(r.payload_offset - r.start)));
  if (bytes.size() != r.payload_offset - r.start) {
    return Status::Corrupt("layer " + index_->layer_digest.String() + ": tar stream ends at " +
                           std::to_string(r.start + bytes.size()) + ", before /" + entry.path);
  }
  RunInput input(bytes);
  registry::TarReader tar(&input);
  for (;;) {
    Result<std::optional<registry::TarEntry>> next = tar.Next();
    if (!next.has_value()) return "the tar headers there are invalid: " + next.error().message();
    if (!next->has_value()) return std::string("no tar header for it");
    const registry::TarEntry& t = **next;
    const uint64_t payload = r.start + t.payload_offset;
    if (payload < r.payload_offset) continue;  // an entry before it (directory, link, ...)
    if (payload > r.payload_offset) return std::string("no tar header ends at its payload offset");
    std::string why;
    auto differ = [&why](const std::string& field, const std::string& index_value,
                         const std::string& tar_value) {
      if (index_value == tar_value) return;
      why += (why.empty() ? "" : ", ") + field + " " + index_value + " in the index, " + tar_value +
             " in the tar";
    };
    differ("path", "/" + entry.path, "/" + t.name);
    differ("type", "regular", t.type == registry::TarEntryType::kRegular ? "regular" : "other");
    differ("size", std::to_string(entry.size), std::to_string(t.size));
    auto octal = [](uint32_t mode) {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "0%o", mode);
      return std::string(buf);
    };
    differ("mode", octal(entry.mode), octal(t.mode & 07777));
    differ("uid", std::to_string(entry.uid), std::to_string(t.uid));
    differ("gid", std::to_string(entry.gid), std::to_string(t.gid));
    return why;
  }
}

Status IndexedRemoteData::Distrust(const FileEntry& entry, const std::string& why) {
  Status st =
      Status::Corrupt("layer " + index_->layer_digest.String() +
                      ": its index does not match its tar headers at /" + entry.path + ": " + why);
  if (!distrusted_.exchange(true)) {
    IMGFS_LOG(kError) << st.message()
                      << "; the index is dropped: reads of this layer fail (EIO) from now on";
    if (options_.on_index_mismatch) {
      try {
        options_.on_index_mismatch(st);
      } catch (const std::exception& e) {
        IMGFS_LOG(kWarning) << "dropping the index of layer " << index_->layer_digest.String()
                            << " failed: " << e.what();
      }
    }
  }
  return st;
}

void IndexedRemoteData::ClaimRunsLocked(uint32_t first, uint32_t last, Priority priority,
                                        std::vector<Task>* tasks) {
  // Disjoint runs of missing pieces share a task up to max_request_bytes: the shared fetcher
  // sends them as one multi-range request. A larger span is cut into several tasks, fetched
  // in parallel.
  bool open = false;
  uint64_t bytes = 0;
  for (uint32_t p = first; p < last; ++p) {
    if (state_[p] != kMissing) continue;
    const uint64_t len = piece_begin_[p + 1] - piece_begin_[p];
    if (!open || bytes + len > options_.max_request_bytes) {
      tasks->emplace_back();
      tasks->back().priority = priority;
      open = true;
      bytes = 0;
    }
    std::optional<Flights::Flight> flight = flights_.Claim(p);
    if (!flight.has_value()) {  // kMissing pieces are never in flight
      IMGFS_LOG(kError) << "layer " << index_->layer_digest.String() << ": piece " << p
                        << " missing and in flight";
      std::abort();
    }
    state_[p] = kInFlight;
    tasks->back().pieces.push_back(p);
    tasks->back().promises.push_back(std::move(flight->ticket));
    bytes += len;
  }
}

void IndexedRemoteData::PlanReadAheadLocked(uint32_t first, uint32_t last,
                                            std::vector<Task>* tasks) {
  if (!options_.readahead && !options_.streaming) return;
  const uint32_t pieces = static_cast<uint32_t>(piece_begin_.size() - 1);
  auto length = [this](uint32_t p) { return piece_begin_[p + 1] - piece_begin_[p]; };
  const bool sequential = window_.Record(first, last, length);
  if (!stream_started_.load() &&
      ShouldStream(options_, present_bytes_.load(), index_->compressed_size, window_, *source_)) {
    const bool ranges_ignored = source_->ignores_ranges();
    stream_started_.store(true);
    stream_running_.store(true);
    IMGFS_LOG(kInfo) << "layer " << index_->layer_digest.String()
                     << (ranges_ignored ? ": the registry ignores Range; streaming the rest"
                                        : ": most of it is being read; streaming the rest");
    Task stream;
    stream.priority = kReadAhead;
    stream.stream = true;
    // Every ranged read costs the whole blob when ranges are ignored: stream all of it.
    stream.stream_from = ranges_ignored ? 0 : first;
    tasks->push_back(std::move(stream));
    return;
  }
  // Read-ahead only for sequential reads: a first or random read fetches what it needs.
  if (!options_.readahead || !sequential || stream_running_.load()) return;
  uint32_t from = 0;
  uint32_t to = 0;
  if (!window_.Ahead(last, pieces, length, &from, &to)) return;
  ClaimRunsLocked(from, to, kReadAhead, tasks);
}

void IndexedRemoteData::RunTask(Task& task) {
  if (task.stream) {
    Status st = RunGuarded("streaming pass", [&] {
      return RunStream(task.stream_from, task.priority == kBackground);
    });
    stream_running_.store(false);
    if (!st.ok()) {
      if (!engine_.stopping()) {
        IMGFS_LOG(kWarning) << "layer " << index_->layer_digest.String()
                            << ": streaming pass stopped: " << st.ToString() << " ("
                            << source_->Describe() << ")";
      }
      stream_started_.store(false);  // a later read (or StartBackgroundFetch) starts it again
    }
    return;
  }
  std::vector<Status> results(task.pieces.size(), Status::Ok());
  Status st = RunGuarded("fetch", [&] {
    FetchPieces(task, &results);
    return Status::Ok();
  });
  if (!st.ok()) results.assign(task.pieces.size(), st);
  for (const Status& r : results) {
    if (r.ok()) continue;
    IMGFS_LOG(kWarning) << "fetch failed: " << r.ToString() << " (" << source_->Describe() << ")";
    break;
  }
  Finish(task.pieces, task.promises, results);
}

void IndexedRemoteData::FetchPieces(const Task& task, std::vector<Status>* results) {
  std::vector<ByteRange> units;
  units.reserve(task.pieces.size());
  for (uint32_t p : task.pieces) units.push_back(PieceRange(p));
  auto plan = [&](const std::vector<size_t>& todo) {
    std::vector<ByteRange> ranges;
    ranges.reserve(todo.size());
    for (size_t k : todo) ranges.push_back(units[k]);
    std::vector<UnitRead> reads = JoinAdjacentUnits(ranges, options_.max_request_bytes);
    for (UnitRead& read : reads) {
      for (size_t& u : read.units) u = todo[u];
    }
    return reads;
  };
  // A read's bytes go to their own offsets in the sparse copy; the pieces become present
  // only in Finish, after the whole task.
  auto deliver = [&](const UnitRead& read, const Result<std::string>& bytes,
                     std::vector<size_t>* failed) {
    const ByteRange r = read.range;
    Status st = Status::Ok();
    if (!bytes.has_value()) {
      st = bytes.error().WithContext("layer " + index_->layer_digest.String() + " bytes " +
                                     std::to_string(r.offset) + "+" + std::to_string(r.length));
    } else if (bytes->size() != r.length) {
      st = Status::Corrupt("layer " + index_->layer_digest.String() + ": range " +
                           std::to_string(r.offset) + "+" + std::to_string(r.length) +
                           " answered " + std::to_string(bytes->size()) + " bytes");
    } else {
      st = PwriteAll(fd_.get(), *bytes, r.offset);
    }
    for (size_t k : read.units) {
      (*results)[k] = st;
      if (!st.ok()) failed->push_back(k);
    }
  };
  fetcher_.Fetch(task.pieces.size(), task.priority == kDemand ? 2 : 1, engine_, plan, deliver);
}

void IndexedRemoteData::Finish(const std::vector<uint32_t>& pieces,
                               const std::vector<Promise>& promises,
                               const std::vector<Status>& results) {
  MutexLock lock(&mu_);
  for (size_t k = 0; k < pieces.size(); ++k) FinishLocked(pieces[k], promises[k], results[k]);
}

void IndexedRemoteData::Finish(uint32_t first, const std::vector<Promise>& promises,
                               const Status& status) {
  MutexLock lock(&mu_);
  for (uint32_t k = 0; k < promises.size(); ++k) FinishLocked(first + k, promises[k], status);
}

void IndexedRemoteData::FinishLocked(uint32_t p, const Promise& promise, const Status& status) {
  // The state changes and the flight ends in one step: a piece is kInFlight exactly while
  // it is in flights_. A ticket completed before (the engine's fail hook after a throw)
  // changes nothing.
  if (!flights_.Complete(p, promise, status)) return;
  state_[p] = status.ok() ? kPresent : kMissing;
  if (status.ok()) present_bytes_.fetch_add(piece_begin_[p + 1] - piece_begin_[p]);
}

Status IndexedRemoteData::RunStream(uint32_t from, bool background) {
  stream_running_.store(true);
  const uint32_t pieces = static_cast<uint32_t>(piece_begin_.size() - 1);
  uint32_t p = from;
  bool failed = false;
  // A background pass yields to on-demand fetches, and readers of pieces it claimed wait for
  // it: it claims one request's worth at a time.
  const uint64_t segment_cap = background ? options_.max_request_bytes : kStreamSegmentBytes;
  // The current segment: pieces [seg_first, seg_first + promises.size()), claimed; those
  // before `done` are completed; the stream has written the blob up to `pos`.
  uint32_t seg_first = p;
  std::vector<Promise> promises;
  uint32_t done = p;
  uint64_t pos = 0;
  // Completes the claimed pieces [done, upto) with `status`.
  const std::function<void(uint32_t, const Status&)> complete = [&](uint32_t upto,
                                                                    const Status& status) {
    std::vector<Promise> part(promises.begin() + (done - seg_first),
                              promises.begin() + (upto - seg_first));
    Finish(done, part, status);
    done = upto;
  };
  RangeFetcher::StreamPassHooks hooks;
  // Claims the next run of missing pieces, at most segment_cap bytes.
  hooks.next = [&]() -> std::optional<ByteRange> {
    promises.clear();
    {
      MutexLock lock(&mu_);
      while (p < pieces && state_[p] != kMissing) ++p;
      seg_first = p;
      done = p;
      uint64_t bytes = 0;
      while (p < pieces && state_[p] == kMissing) {
        const uint64_t len = piece_begin_[p + 1] - piece_begin_[p];
        if (bytes > 0 && bytes + len > segment_cap) break;
        std::optional<Flights::Flight> flight = flights_.Claim(p);
        if (!flight.has_value()) break;  // never: kMissing pieces are not in flight
        state_[p] = kInFlight;
        promises.push_back(std::move(flight->ticket));
        bytes += len;
        ++p;
      }
    }
    if (promises.empty()) return std::nullopt;
    pos = piece_begin_[seg_first];
    return ByteRange{pos, piece_begin_[p] - pos};
  };
  hooks.consume = [&](uint64_t offset, std::string_view data) -> Result<StreamStep> {
    const uint32_t seg_last = seg_first + static_cast<uint32_t>(promises.size());
    IMGFS_RETURN_IF_ERROR(StreamSink(offset, data, seg_last, &pos, &done, complete));
    return StreamStep::kMore;
  };
  hooks.done = [&](Status st) {
    const uint32_t seg_last = seg_first + static_cast<uint32_t>(promises.size());
    const uint64_t begin = piece_begin_[seg_first];
    const uint64_t end = piece_begin_[seg_last];
    if (st.ok() && pos < end) {
      st = Status::Unavailable("the stream ended at " + std::to_string(pos) + " of " +
                               std::to_string(end));
    }
    if (!st.ok()) {
      // Every piece this segment claimed and did not complete fails now: its readers fetch
      // it themselves instead of waiting for a stream that is gone.
      st = st.WithContext("layer " + index_->layer_digest.String() + ": streaming bytes " +
                          std::to_string(begin) + "-" + std::to_string(end));
      done = std::max(done, seg_first);
      complete(seg_last, st);
      failed = true;
    }
    return st;
  };
  Status result = fetcher_.StreamPass(background, engine_, hooks);
  StoreReadyChunks(failed ? p : pieces);
  return result;
}

Status IndexedRemoteData::StreamSink(uint64_t offset, std::string_view data, uint32_t seg_last,
                                     uint64_t* pos, const uint32_t* done,
                                     const std::function<void(uint32_t, const Status&)>& complete) {
  IMGFS_RETURN_IF_ERROR(PwriteAll(fd_.get(), data, offset));
  *pos = offset + data.size();
  uint32_t upto = *done;
  while (upto < seg_last && piece_begin_[upto + 1] <= *pos) ++upto;
  if (upto > *done) {
    complete(upto, Status::Ok());
    StoreReadyChunks(*done);
  }
  return Status::Ok();
}

void IndexedRemoteData::StoreReadyChunks(uint32_t frontier) {
  if (chunks_ == nullptr) return;  // verified when read
  for (;;) {
    uint32_t id = 0;
    {
      MutexLock lock(&mu_);
      bool found = false;
      while (store_cursor_ < chunk_order_.size() && !found) {
        id = chunk_order_[store_cursor_];
        if (chunk_last_piece_[id] > frontier) return;  // the stream has not reached it yet
        ++store_cursor_;
        if (verified_[id] || index_->chunks[id].digest.empty()) continue;
        found = true;
        for (uint32_t p = chunk_first_piece_[id]; p < chunk_last_piece_[id]; ++p) {
          // Not all here (before the stream's start, or another fetch is still running):
          // verified when read.
          if (state_[p] != kPresent) found = false;
        }
      }
      if (!found) return;
    }
    bool refetching = false;
    Result<ChunkData> chunk = VerifyChunk(id, &refetching);
    if (!chunk.has_value() && !refetching) {
      reads_.CountError();
      IMGFS_LOG(kWarning) << "layer " << index_->layer_digest.String() << ": "
                          << chunk.error().ToString();
    }
  }
}

void IndexedRemoteData::StartBackgroundFetch() {
  if (stream_started_.exchange(true)) return;
  Task stream;
  stream.priority = kBackground;
  stream.stream = true;
  stream.stream_from = 0;
  std::vector<Task> tasks;
  tasks.push_back(std::move(stream));
  engine_.Submit(std::move(tasks));
}

bool IndexedRemoteData::WaitIdle(std::chrono::milliseconds timeout) {
  return engine_.WaitIdle(timeout);
}

LayerStats IndexedRemoteData::Stats() const { return reads_.Stats(index_->compressed_size); }

}  // namespace imgfs::fs
