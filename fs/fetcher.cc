// imgfs — LazyLayerReader: file data of an eStargz or zstd:chunked layer, fetched on demand.
#include "fs/fetcher.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "base/log.h"

namespace imgfs::fs {

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
      options_(options) {}

std::string LazyLayerReader::KeyOf(uint32_t id) const {
  const Chunk& c = index_->chunks[id];
  if (!c.digest.empty()) return c.digest.String();
  return "#" + std::to_string(id);  // no digest: unique within this layer only
}

LazyLayerReader::ChunkData LazyLayerReader::Recent(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = recent_.find(key);
  if (it == recent_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return it->second.data;
}

void LazyLayerReader::Remember(const std::string& key, const ChunkData& data) {
  if (data == nullptr || data->size() > options_.memory_cache_bytes) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (recent_.count(key) > 0) return;
  lru_.push_front(key);
  recent_.emplace(key, RecentChunk{data, lru_.begin()});
  recent_bytes_ += data->size();
  while (recent_bytes_ > options_.memory_cache_bytes && !lru_.empty()) {
    auto victim = recent_.find(lru_.back());
    recent_bytes_ -= victim->second.data->size();
    recent_.erase(victim);
    lru_.pop_back();
  }
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
  std::vector<uint32_t> ids;
  for (uint32_t i = 0; i < entry.chunk_count; ++i) {
    uint32_t id = entry.first_chunk + i;
    const Chunk& c = index_->chunks[id];
    if (c.file_offset + c.size <= offset || c.size == 0) continue;
    if (c.file_offset >= end) break;
    ids.push_back(id);
  }
  IMGFS_ASSIGN_OR_RETURN(std::vector<ChunkData> data, GetChunks(entry, ids));
  std::string out;
  out.reserve(end - offset);
  for (size_t i = 0; i < ids.size(); ++i) {
    const Chunk& c = index_->chunks[ids[i]];
    const std::string& bytes = *data[i];
    if (bytes.size() != c.size) {
      return Status::Corrupt("/" + entry.path + ": chunk at " + std::to_string(c.file_offset) +
                             " has " + std::to_string(bytes.size()) + " bytes, expected " +
                             std::to_string(c.size));
    }
    uint64_t from = std::max(offset, c.file_offset);
    uint64_t to = std::min(end, c.file_offset + c.size);
    if (from >= to) continue;
    if (from != offset + out.size()) {
      return Status::Corrupt("/" + entry.path + ": chunks leave a gap at " + std::to_string(from));
    }
    out.append(bytes, from - c.file_offset, to - from);
  }
  if (out.size() != end - offset) {
    return Status::Corrupt("/" + entry.path + ": chunks cover " + std::to_string(out.size()) +
                           " of " + std::to_string(end - offset) + " bytes at " +
                           std::to_string(offset));
  }
  return out;
}

Result<std::vector<LazyLayerReader::ChunkData>> LazyLayerReader::GetChunks(
    const FileEntry& entry, const std::vector<uint32_t>& ids) {
  std::vector<ChunkData> out(ids.size());
  std::vector<size_t> owned;  // positions in ids
  std::vector<std::promise<ChunkResult>> promises;
  std::vector<std::pair<size_t, std::shared_future<ChunkResult>>> waits;

  for (size_t i = 0; i < ids.size(); ++i) {
    const Chunk& c = index_->chunks[ids[i]];
    if (IsZerosChunk(c)) {
      out[i] = std::make_shared<const std::string>(c.size, '\0');
      continue;
    }
    std::string key = KeyOf(ids[i]);
    if (ChunkData recent = Recent(key); recent != nullptr) {
      out[i] = std::move(recent);
      continue;
    }
    if (!c.digest.empty()) {
      Result<std::string> stored = chunks_->Get(c.digest);
      if (stored.has_value()) {
        out[i] = std::make_shared<const std::string>(std::move(stored).value());
        Remember(key, out[i]);
        continue;
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = inflight_.find(key);
    if (it != inflight_.end()) {
      waits.emplace_back(i, it->second);
      continue;
    }
    promises.emplace_back();
    inflight_.emplace(std::move(key), promises.back().get_future().share());
    owned.push_back(i);
  }

  if (!owned.empty()) {
    std::vector<ChunkResult> results(owned.size(), ChunkResult(Status::Internal("unset")));
    // Every owned entry must be completed and erased even if this throws (bad_alloc), or
    // later readers of those chunks would wait forever.
    try {
      FillOwned(entry, ids, owned, &results);
    } catch (const std::exception& e) {
      for (ChunkResult& r : results) r = ChunkResult(Status::Internal(e.what()));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t k = 0; k < owned.size(); ++k) inflight_.erase(KeyOf(ids[owned[k]]));
    }
    for (size_t k = 0; k < owned.size(); ++k) {
      promises[k].set_value(results[k]);
      if (results[k].has_value()) {
        out[owned[k]] = *results[k];
        Remember(KeyOf(ids[owned[k]]), *results[k]);
      }
    }
    for (size_t k = 0; k < owned.size(); ++k) {
      if (!results[k].has_value()) return results[k].error();
    }
  }

  for (auto& [i, future] : waits) {
    const ChunkResult& r = future.get();
    if (!r.has_value()) return r.error();
    out[i] = *r;
  }
  return out;
}

void LazyLayerReader::FillOwned(const FileEntry& entry, const std::vector<uint32_t>& ids,
                                const std::vector<size_t>& owned,
                                std::vector<ChunkResult>* results) {
  // Another reader may have completed a chunk between our store lookup and taking
  // ownership: look again before going to the network.
  std::vector<uint32_t> to_fetch;
  std::vector<size_t> to_fetch_slot;  // position in `owned`
  for (size_t k = 0; k < owned.size(); ++k) {
    const Chunk& c = index_->chunks[ids[owned[k]]];
    if (!c.digest.empty()) {
      Result<std::string> stored = chunks_->Get(c.digest);
      if (stored.has_value()) {
        (*results)[k] = ChunkResult(std::make_shared<const std::string>(std::move(stored).value()));
        continue;
      }
    }
    to_fetch.push_back(ids[owned[k]]);
    to_fetch_slot.push_back(k);
  }
  if (to_fetch.empty()) return;
  std::vector<ChunkResult> fetched = FetchOwned(entry, to_fetch);
  for (size_t j = 0; j < fetched.size(); ++j) (*results)[to_fetch_slot[j]] = std::move(fetched[j]);
}

std::vector<LazyLayerReader::ChunkResult> LazyLayerReader::FetchOwned(
    const FileEntry& entry, const std::vector<uint32_t>& ids) {
  // ReadChunks coalesces chunks sorted by blob offset; sort a copy and map back.
  std::vector<size_t> order(ids.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return index_->chunks[ids[a]].blob_offset < index_->chunks[ids[b]].blob_offset;
  });
  std::vector<uint32_t> sorted;
  sorted.reserve(ids.size());
  for (size_t i : order) sorted.push_back(ids[i]);

  Result<std::vector<std::string>> decoded = Status::Internal("not fetched");
  for (int attempt = 1; attempt <= std::max(1, options_.max_attempts); ++attempt) {
    fetch_batches_.fetch_add(1, std::memory_order_relaxed);
    try {
      decoded = ReadChunks(*source_, *index_, sorted, options_.max_gap_bytes);
    } catch (const std::exception& e) {
      decoded = Status::Internal(std::string("fetching chunks: ") + e.what());
    }
    if (decoded.has_value() && decoded->size() == sorted.size()) break;
    if (decoded.has_value()) decoded = Status::Internal("chunk reader returned a short list");
    const Chunk& first = index_->chunks[sorted.front()];
    IMGFS_LOG(kWarning) << "lazy fetch of /" << entry.path << " in layer "
                        << index_->layer_digest.String() << " (chunk "
                        << (first.digest.empty() ? "#" + std::to_string(sorted.front())
                                                 : first.digest.String())
                        << ", " << sorted.size() << " chunks) failed, attempt " << attempt << ": "
                        << decoded.error().ToString();
  }

  std::vector<ChunkResult> out(ids.size(), ChunkResult(Status::Internal("unset")));
  for (size_t j = 0; j < sorted.size(); ++j) {
    size_t pos = order[j];
    if (!decoded.has_value()) {
      out[pos] = ChunkResult(decoded.error());
      continue;
    }
    const Chunk& c = index_->chunks[sorted[j]];
    auto data = std::make_shared<const std::string>(std::move((*decoded)[j]));
    chunks_fetched_.fetch_add(1, std::memory_order_relaxed);
    if (!c.digest.empty()) {
      Status put = chunks_->Put(c.digest, *data);
      if (!put.ok()) {
        IMGFS_LOG(kWarning) << "chunk store: cannot keep " << c.digest.String() << " of /"
                            << entry.path << ": " << put.ToString();
      }
    }
    out[pos] = ChunkResult(std::move(data));
  }
  return out;
}

}  // namespace imgfs::fs
