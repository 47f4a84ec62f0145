// imgfs — LayerReader: random-access reads from a complete local layer blob.
#include "fs/layer/layer_reader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "base/file_util.h"
#include "fs/layer/stream_decoder.h"
#include "registry/digest.h"

namespace imgfs::fs {
namespace {

// Compressed bytes read per pread while decoding.
constexpr size_t kReadBlockBytes = 128 << 10;
// Scratch buffer for output that is decoded only to be skipped.
constexpr size_t kSkipBufferBytes = 64 << 10;

}  // namespace

struct LayerReader::Cursor {
  std::unique_ptr<StreamDecoder> decoder;
  std::string in;          // compressed bytes read but not yet consumed
  size_t in_pos = 0;       // consumed prefix of `in`
  uint64_t next_read = 0;  // blob offset of the next pread

  uint64_t position() const { return decoder->uncompressed_offset(); }
};

LayerReader::LayerReader(UniqueFd fd, std::shared_ptr<const LayerIndex> index, Options options)
    : fd_(std::move(fd)), index_(std::move(index)), options_(options) {}

struct LayerReader::AheadTask {
  std::unique_ptr<Cursor> cursor;  // positioned at the start of block `from`
  uint64_t from = 0;
  uint64_t to = 0;  // exclusive
};

LayerReader::~LayerReader() {
  {
    MutexLock lock(&mu_);
    ahead_stop_ = true;
  }
  ahead_cv_.SignalAll();
  if (ahead_thread_.joinable()) ahead_thread_.join();
}

Result<std::unique_ptr<LayerReader>> LayerReader::Open(const std::string& blob_path,
                                                       std::shared_ptr<const LayerIndex> index) {
  return Open(blob_path, std::move(index), Options());
}

Result<std::unique_ptr<LayerReader>> LayerReader::Open(const std::string& blob_path,
                                                       std::shared_ptr<const LayerIndex> index,
                                                       Options options) {
  if (index == nullptr) return Status::InvalidArgument("LayerReader: no index");
  if (options.block_bytes == 0) return Status::InvalidArgument("LayerReader: zero block size");
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(blob_path, O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + blob_path);
  if (static_cast<uint64_t>(st.st_size) != index->compressed_size) {
    return Status::Corrupt("layer " + index->layer_digest.String() + ": blob " + blob_path +
                           " has " + std::to_string(st.st_size) + " bytes, the index says " +
                           std::to_string(index->compressed_size));
  }
  if (index->format != LayerFormat::kTar && index->checkpoints.empty()) {
    return Status::Corrupt("layer " + index->layer_digest.String() +
                           ": compressed layer index without checkpoints");
  }
  return std::unique_ptr<LayerReader>(new LayerReader(std::move(fd), std::move(index), options));
}

std::string LayerReader::LayerName() const { return "layer " + index_->layer_digest.String(); }

Result<std::string> LayerReader::Read(const FileEntry& entry, uint64_t offset, size_t length) {
  if (entry.type != EntryType::kRegular) {
    return Status::InvalidArgument("read of " + entry.path + ": not a regular file");
  }
  return ReadFile(entry.payload_offset, entry.size, offset, length);
}

Result<std::string> LayerReader::ReadFile(uint64_t payload_offset, uint64_t size, uint64_t offset,
                                          size_t length) {
  IMGFS_ASSIGN_OR_RETURN(ByteSlices data, ReadFileSlices(payload_offset, size, offset, length));
  return std::move(data).TakeString();
}

Result<ByteSlices> LayerReader::ReadFileSlices(uint64_t payload_offset, uint64_t size,
                                               uint64_t offset, size_t length) {
  if (offset >= size) return ByteSlices();
  uint64_t n = std::min<uint64_t>(length, size - offset);
  return ReadStreamSlices(payload_offset + offset, static_cast<size_t>(n));
}

Result<std::string> LayerReader::ReadChunk(const FileEntry& entry, uint32_t chunk_index) {
  if (entry.type != EntryType::kRegular || chunk_index >= entry.chunk_count ||
      entry.first_chunk + chunk_index >= index_->chunks.size()) {
    return Status::InvalidArgument("chunk " + std::to_string(chunk_index) + " of " + entry.path +
                                   ": no such chunk");
  }
  const Chunk& chunk = index_->chunks[entry.first_chunk + chunk_index];
  IMGFS_ASSIGN_OR_RETURN(std::string data,
                         Read(entry, chunk.file_offset, static_cast<size_t>(chunk.size)));
  if (data.size() != chunk.size) {
    return Status::Corrupt(LayerName() + ": short chunk of " + entry.path);
  }
  if (!chunk.digest.empty()) {
    Status s = chunk.digest.Verify(data);
    if (!s.ok()) return s.WithContext(LayerName() + ": chunk of " + entry.path);
  }
  return data;
}

Result<std::string> LayerReader::ReadStream(uint64_t offset, size_t length) {
  IMGFS_ASSIGN_OR_RETURN(ByteSlices data, ReadStreamSlices(offset, length));
  return std::move(data).TakeString();
}

Result<ByteSlices> LayerReader::ReadStreamSlices(uint64_t offset, size_t length) {
  if (offset >= index_->uncompressed_size) return ByteSlices();
  length = static_cast<size_t>(std::min<uint64_t>(length, index_->uncompressed_size - offset));
  if (length == 0) return ByteSlices();
  if (index_->format == LayerFormat::kTar) {
    IMGFS_ASSIGN_OR_RETURN(std::string data, PreadAll(fd_.get(), offset, length));
    if (data.size() != length) {
      return Status::Corrupt(LayerName() + ": blob shorter than its index says");
    }
    return ByteSlices::Of(std::move(data));
  }
  const uint64_t bs = options_.block_bytes;
  const uint64_t first = offset / bs;
  const uint64_t last = (offset + length - 1) / bs;
  if (options_.decode_ahead_blocks > 0) WaitForPending(first, last);
  std::vector<BlockPtr> blocks(last - first + 1);
  // A sequential reader: its blocks were cached (decoded ahead), or a parked decoder went on.
  bool sequential = true;
  uint64_t missing_from = last + 1;
  for (uint64_t b = first; b <= last; ++b) {
    blocks[b - first] = LookupBlock(b);
    if (blocks[b - first] == nullptr && missing_from > last) missing_from = b;
  }
  if (missing_from <= last) {
    uint64_t missing_to = missing_from;
    for (uint64_t b = missing_from; b <= last; ++b) {
      if (blocks[b - first] == nullptr) missing_to = b;
    }
    std::vector<BlockPtr> decoded;
    IMGFS_RETURN_IF_ERROR(DecodeBlocks(missing_from, missing_to, &decoded, &sequential));
    for (uint64_t b = missing_from; b <= missing_to; ++b) {
      blocks[b - first] = decoded[b - missing_from];
    }
  }
  ByteSlices out;
  for (uint64_t b = first; b <= last; ++b) {
    const std::string_view data = blocks[b - first]->view();
    uint64_t block_start = b * bs;
    uint64_t from = std::max(offset, block_start) - block_start;
    uint64_t to = std::min<uint64_t>(offset + length, block_start + data.size()) - block_start;
    if (from > to) return Status::Internal("LayerReader: block shorter than expected");
    out.Append(data.substr(static_cast<size_t>(from), static_cast<size_t>(to - from)),
               std::move(blocks[b - first]));
  }
  if (out.size() != length) return Status::Internal("LayerReader: short read from blocks");
  if (options_.decode_ahead_blocks > 0 && sequential) MaybeDecodeAhead(last + 1);
  return out;
}

void LayerReader::WaitForPending(uint64_t first_block, uint64_t last_block) {
  MutexLock lock(&mu_);
  for (;;) {
    auto it = pending_.lower_bound(first_block);
    const bool pending = it != pending_.end() && *it <= last_block;
    // The block right after a task's window is where its decoder will be parked: wait for
    // it rather than decode from the checkpoint.
    const bool parks_here = ahead_window_end_.has_value() && *ahead_window_end_ >= first_block &&
                            *ahead_window_end_ <= last_block;
    if (!pending && !parks_here) return;
    ahead_cv_.Wait(&mu_);
  }
}

void LayerReader::MaybeDecodeAhead(uint64_t next_block) {
  const uint64_t bs = options_.block_bytes;
  const uint64_t total = (index_->uncompressed_size + bs - 1) / bs;
  const uint64_t end = std::min<uint64_t>(total, next_block + options_.decode_ahead_blocks);
  MutexLock lock(&mu_);
  if (ahead_window_end_.has_value() || ahead_stop_) return;
  // The first block of the window neither cached nor pending: nothing to do while at least
  // half the window is ready (each task is then at least half a window).
  uint64_t from = next_block;
  while (from < end && (blocks_.count(from) != 0 || pending_.count(from) != 0)) ++from;
  if (from >= end || from - next_block > options_.decode_ahead_blocks / 2) return;
  // Only from a decoder that stopped exactly there.
  auto parked = std::find_if(parked_.begin(), parked_.end(),
                             [&](const auto& c) { return c->position() == from * bs; });
  if (parked == parked_.end()) return;
  auto task = std::make_unique<AheadTask>();
  task->cursor = std::move(*parked);
  parked_.erase(parked);
  task->from = from;
  task->to = end;
  for (uint64_t b = from; b < end; ++b) pending_.insert(b);
  ahead_task_ = std::move(task);
  ahead_window_end_ = end;
  if (!ahead_thread_.joinable()) ahead_thread_ = std::thread([this] { AheadLoop(); });
  ahead_cv_.SignalAll();
}

void LayerReader::AheadLoop() {
  for (;;) {
    std::unique_ptr<AheadTask> task;
    {
      MutexLock lock(&mu_);
      while (!ahead_stop_ && ahead_task_ == nullptr) ahead_cv_.Wait(&mu_);
      if (ahead_stop_) return;
      task = std::move(ahead_task_);
    }
    bool ok = true;
    uint64_t b = task->from;
    for (; b < task->to && ok; ++b) {
      // A failure is left to the read that needs the block: it decodes it again and reports
      // the error itself.
      try {
        ok = DecodeBlock(*task->cursor, b).has_value();
      } catch (const std::exception&) {  // bad_alloc: the same
        ok = false;
      }
      {
        MutexLock lock(&mu_);
        pending_.erase(b);
      }
      ahead_cv_.SignalAll();
    }
    {
      // One step: a read waiting for the window's end finds the decoder parked there.
      MutexLock lock(&mu_);
      for (; b < task->to; ++b) pending_.erase(b);
      if (ok) ParkLocked(std::move(task->cursor));
      ahead_window_end_.reset();
    }
    ahead_cv_.SignalAll();
  }
}

Status LayerReader::DecodeBlocks(uint64_t first_block, uint64_t last_block,
                                 std::vector<BlockPtr>* blocks, bool* continued) {
  const uint64_t bs = options_.block_bytes;
  const uint64_t start = first_block * bs;
  IMGFS_ASSIGN_OR_RETURN(std::unique_ptr<Cursor> cursor, CursorFor(start, continued));
  // Skip to the first block.
  std::string scratch(kSkipBufferBytes, '\0');
  while (cursor->position() < start) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(scratch.size(), start - cursor->position()));
    IMGFS_RETURN_IF_ERROR(Produce(*cursor, scratch.data(), n));
  }
  for (uint64_t b = first_block; b <= last_block; ++b) {
    IMGFS_ASSIGN_OR_RETURN(BlockPtr data, DecodeBlock(*cursor, b));
    blocks->push_back(std::move(data));
  }
  Park(std::move(cursor));
  return Status::Ok();
}

Result<LayerReader::BlockPtr> LayerReader::DecodeBlock(Cursor& cursor, uint64_t block) {
  const uint64_t bs = options_.block_bytes;
  const uint64_t block_start = block * bs;
  const size_t n =
      static_cast<size_t>(std::min<uint64_t>(bs, index_->uncompressed_size - block_start));
  auto data = std::make_shared<Block>();
  data->bytes = std::make_unique_for_overwrite<char[]>(n);
  data->size = n;
  IMGFS_RETURN_IF_ERROR(Produce(cursor, data->bytes.get(), n));
  InsertBlock(block, data);
  return BlockPtr(std::move(data));
}

LayerReader::BlockPtr LayerReader::LookupBlock(uint64_t block) {
  MutexLock lock(&mu_);
  auto it = blocks_.find(block);
  if (it == blocks_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.data;
}

void LayerReader::InsertBlock(uint64_t block, BlockPtr data) {
  size_t capacity = std::max<size_t>(1, options_.cache_bytes / options_.block_bytes);
  MutexLock lock(&mu_);
  auto it = blocks_.find(block);
  if (it != blocks_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return;
  }
  lru_.push_front(block);
  blocks_.emplace(block, CachedBlock{std::move(data), lru_.begin()});
  while (blocks_.size() > capacity) {
    blocks_.erase(lru_.back());
    lru_.pop_back();
  }
}

Result<std::unique_ptr<LayerReader::Cursor>> LayerReader::CursorFor(uint64_t offset,
                                                                    bool* parked_one) {
  *parked_one = false;
  const Checkpoint& cp = index_->checkpoints[index_->CheckpointFor(offset)];
  {
    MutexLock lock(&mu_);
    // The parked decoder closest below `offset`, if it is closer than the checkpoint.
    size_t best = parked_.size();
    for (size_t i = 0; i < parked_.size(); ++i) {
      uint64_t pos = parked_[i]->position();
      if (pos <= offset && pos >= cp.uncompressed_offset &&
          (best == parked_.size() || pos > parked_[best]->position())) {
        best = i;
      }
    }
    if (best != parked_.size()) {
      std::unique_ptr<Cursor> c = std::move(parked_[best]);
      parked_.erase(parked_.begin() + static_cast<std::ptrdiff_t>(best));
      *parked_one = true;
      return c;
    }
  }
  uint8_t prev_byte = 0;
  if (cp.bits != 0) {
    IMGFS_ASSIGN_OR_RETURN(std::string b, PreadAll(fd_.get(), cp.compressed_offset - 1, 1));
    if (b.size() != 1) return Status::Corrupt(LayerName() + ": checkpoint beyond the blob");
    prev_byte = static_cast<uint8_t>(b[0]);
  }
  auto cursor = std::make_unique<Cursor>();
  Result<std::unique_ptr<StreamDecoder>> decoder =
      NewStreamDecoder(index_->format, cp, prev_byte, nullptr);
  if (!decoder.has_value()) return decoder.error().WithContext(LayerName());
  cursor->decoder = std::move(decoder).value();
  cursor->next_read = cp.compressed_offset;
  return cursor;
}

void LayerReader::Park(std::unique_ptr<Cursor> cursor) {
  MutexLock lock(&mu_);
  ParkLocked(std::move(cursor));
}

void LayerReader::ParkLocked(std::unique_ptr<Cursor> cursor) {
  if (options_.max_parked_decoders == 0) return;
  if (parked_.size() >= options_.max_parked_decoders) parked_.erase(parked_.begin());
  parked_.push_back(std::move(cursor));
}

Status LayerReader::Produce(Cursor& c, char* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    size_t consumed = 0;
    size_t produced = 0;
    Status s = c.decoder->Decode(std::string_view(c.in).substr(c.in_pos), &consumed, out + got,
                                 n - got, &produced);
    if (!s.ok()) return s.WithContext(LayerName());
    c.in_pos += consumed;
    got += produced;
    decompressed_bytes_ += produced;
    if (consumed != 0 || produced != 0) continue;
    if (c.in_pos < c.in.size()) {
      return Status::Corrupt(LayerName() + ": decoder stuck at compressed offset " +
                             std::to_string(c.decoder->compressed_offset()));
    }
    c.in.resize(kReadBlockBytes);  // zero-filled once: the buffer is kept for the next pread
    IMGFS_ASSIGN_OR_RETURN(const size_t read,
                           PreadInto(fd_.get(), c.next_read, c.in.data(), c.in.size()));
    c.in.resize(read);
    c.in_pos = 0;
    c.next_read += c.in.size();
    if (c.in.empty()) {
      return Status::Corrupt(LayerName() + ": compressed stream ends at offset " +
                             std::to_string(c.next_read) + " before uncompressed offset " +
                             std::to_string(c.decoder->uncompressed_offset() + (n - got)));
    }
  }
  return Status::Ok();
}

}  // namespace imgfs::fs
