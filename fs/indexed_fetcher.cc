// imgfs — IndexedRemoteData (see indexed_fetcher.h).
#include "fs/indexed_fetcher.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "base/log.h"

namespace imgfs::fs {
namespace {

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

}  // namespace

Result<std::unique_ptr<IndexedRemoteData>> IndexedRemoteData::Create(
    std::shared_ptr<registry::BlobSource> source, std::shared_ptr<const LayerIndex> index,
    const std::string& tmp_dir) {
  if (index->format != LayerFormat::kTar && index->format != LayerFormat::kTarGzip &&
      index->format != LayerFormat::kTarZstd) {
    return Status::InvalidArgument("layer " + index->layer_digest.String() +
                                   ": not a plain tar / tar+gzip / tar+zstd index");
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
  LayerReader::Options options;
  options.max_parked_decoders = 0;  // a parked decoder may hold bytes read before their fetch
  Result<std::unique_ptr<LayerReader>> reader = LayerReader::Open(path, index, options);
  ::unlink(path.c_str());
  if (!reader.has_value()) return reader.error();
  return std::unique_ptr<IndexedRemoteData>(new IndexedRemoteData(
      std::move(source), std::move(index), std::move(fd), std::move(reader).value()));
}

IndexedRemoteData::IndexedRemoteData(std::shared_ptr<registry::BlobSource> source,
                                     std::shared_ptr<const LayerIndex> index, UniqueFd fd,
                                     std::unique_ptr<LayerReader> reader)
    : source_(std::move(source)),
      index_(std::move(index)),
      fd_(std::move(fd)),
      reader_(std::move(reader)),
      block_bytes_(LayerReader::Options().block_bytes),
      verified_(index_->chunks.size(), false) {}

IndexedRemoteData::~IndexedRemoteData() = default;

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
  for (const Checkpoint& cp : cps) {
    if (cp.uncompressed_offset >= u1 && cp.compressed_offset >= *begin) {
      *end = std::min(size, cp.compressed_offset + 1);
      break;
    }
  }
}

Status IndexedRemoteData::Ensure(uint64_t begin, uint64_t end) {
  std::scoped_lock fetch(fetch_mu_);
  std::vector<std::pair<uint64_t, uint64_t>> missing;
  {
    std::scoped_lock lock(state_mu_);
    uint64_t pos = begin;
    auto it = fetched_.upper_bound(pos);
    if (it != fetched_.begin()) --it;
    for (; it != fetched_.end() && pos < end; ++it) {
      if (it->second <= pos) continue;
      if (it->first > pos) missing.emplace_back(pos, std::min(end, it->first));
      pos = std::max(pos, it->second);
    }
    if (pos < end) missing.emplace_back(pos, end);
  }
  for (auto [from, to] : missing) {
    for (uint64_t at = from; at < to;) {
      const uint64_t n = std::min(kMaxRequestBytes, to - at);
      requests_.fetch_add(1, std::memory_order_relaxed);
      Result<std::string> bytes = source_->ReadBlobRange(index_->layer_digest, ByteRange{at, n});
      if (!bytes.has_value()) {
        return bytes.error().WithContext("layer " + index_->layer_digest.String() + " bytes " +
                                         std::to_string(at) + "+" + std::to_string(n));
      }
      if (bytes->size() != n) {
        return Status::Corrupt("layer " + index_->layer_digest.String() + ": range " +
                               std::to_string(at) + "+" + std::to_string(n) + " answered " +
                               std::to_string(bytes->size()) + " bytes");
      }
      bytes_fetched_.fetch_add(n, std::memory_order_relaxed);
      IMGFS_RETURN_IF_ERROR(PwriteAll(fd_.get(), *bytes, at));
      at += n;
    }
    std::scoped_lock lock(state_mu_);
    uint64_t b = from;
    uint64_t e = to;
    // Merge with neighbours.
    auto it = fetched_.lower_bound(b);
    if (it != fetched_.begin() && std::prev(it)->second >= b) --it;
    while (it != fetched_.end() && it->first <= e) {
      b = std::min(b, it->first);
      e = std::max(e, it->second);
      it = fetched_.erase(it);
    }
    fetched_[b] = e;
  }
  return Status::Ok();
}

Result<std::string> IndexedRemoteData::Read(const FileEntry& entry, uint64_t offset,
                                            size_t length) {
  if (entry.type != EntryType::kRegular) {
    return Status::InvalidArgument(entry.path + " is not a regular file");
  }
  if (offset >= entry.size || length == 0) return std::string();
  const uint64_t end = std::min<uint64_t>(entry.size, offset + length);
  // The chunks overlapping [offset, end): all of their bytes are fetched and verified.
  uint64_t u0 = entry.payload_offset + offset;
  uint64_t u1 = entry.payload_offset + end;
  std::vector<uint32_t> chunks;
  for (uint32_t k = 0; k < entry.chunk_count; ++k) {
    const uint32_t id = entry.first_chunk + k;
    if (id >= index_->chunks.size()) break;
    const Chunk& c = index_->chunks[id];
    if (c.file_offset >= end || c.file_offset + c.size <= offset) continue;
    chunks.push_back(k);
    u0 = std::min(u0, entry.payload_offset + c.file_offset);
    u1 = std::max(u1, entry.payload_offset + c.file_offset + c.size);
  }
  uint64_t begin = 0;
  uint64_t stop = 0;
  SpanFor(u0, u1, &begin, &stop);
  Status ensured = Ensure(begin, stop);
  if (!ensured.ok()) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    IMGFS_LOG(kWarning) << "lazy read of " << entry.path << " failed: " << ensured.ToString();
    return ensured;
  }
  for (uint32_t k : chunks) {
    const uint32_t id = entry.first_chunk + k;
    {
      std::scoped_lock lock(state_mu_);
      if (verified_[id]) continue;
    }
    Result<std::string> chunk = reader_->ReadChunk(entry, k);
    if (!chunk.has_value()) {
      errors_.fetch_add(1, std::memory_order_relaxed);
      IMGFS_LOG(kWarning) << "lazy read of " << entry.path << ": " << chunk.error().ToString();
      return chunk.error();
    }
    chunks_verified_.fetch_add(1, std::memory_order_relaxed);
    std::scoped_lock lock(state_mu_);
    verified_[id] = true;
  }
  return reader_->Read(entry, offset, length);
}

LayerStats IndexedRemoteData::Stats() const {
  LayerStats s;
  s.lazy = true;
  s.blob_size = index_->compressed_size;
  s.bytes_fetched = bytes_fetched_.load(std::memory_order_relaxed);
  s.requests = requests_.load(std::memory_order_relaxed);
  s.chunks_fetched = chunks_verified_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace imgfs::fs
