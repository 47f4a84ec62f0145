// imgfs — IndexBuilder: one streaming pass over a layer blob.
#include "fs/layer/index_builder.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "base/file_util.h"
#include "base/thread.h"
#include "cache/index_store.h"
#include "fs/layer/stream_decoder.h"
#include "registry/media_types.h"
#include "registry/tar_reader.h"

namespace imgfs::fs {
namespace {

// Compressed bytes read per step: large enough to amortise syscalls and zlib/zstd call
// overhead, small enough to stay cache-friendly.
constexpr size_t kReadBlockBytes = 256 << 10;
// Whiteout prefixes (OCI image-spec layer.md, "Whiteouts").
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

// Where the compressed bytes come from.
class CompressedSource {
 public:
  virtual ~CompressedSource() = default;
  // Up to `cap` bytes into `buf`; 0 at end of blob.
  virtual Result<size_t> Read(char* buf, size_t cap) = 0;
};

class FdSource : public CompressedSource {
 public:
  explicit FdSource(int fd) : fd_(fd) {}
  Result<size_t> Read(char* buf, size_t cap) override {
    while (true) {
      ssize_t n = ::read(fd_, buf, cap);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) return Status::FromErrno(errno, "read layer blob");
    }
  }

 private:
  int fd_;
};

// The uncompressed tar stream, pulled through a StreamDecoder from a CompressedSource while
// hashing both sides.
class DecodingInput : public registry::TarInput {
 public:
  DecodingInput(CompressedSource* source, StreamDecoder* decoder, std::string layer_name)
      : source_(source), decoder_(decoder), layer_name_(std::move(layer_name)) {}

  Result<std::string> Read(size_t n) override {
    std::string out(n, '\0');
    size_t got = 0;
    while (got < n) {
      if (in_pos_ == in_.size() && !eof_) {
        in_.resize(kReadBlockBytes);
        Result<size_t> r = source_->Read(in_.data(), in_.size());
        if (!r.has_value()) return r.error().WithContext(layer_name_);
        in_.resize(*r);
        in_pos_ = 0;
        if (*r == 0) eof_ = true;
        blob_hash_.Update(in_);
        compressed_size_ += *r;
      }
      size_t consumed = 0;
      size_t produced = 0;
      Status s = decoder_->Decode(std::string_view(in_).substr(in_pos_), &consumed,
                                  out.data() + got, n - got, &produced);
      if (!s.ok()) return s.WithContext(layer_name_);
      in_pos_ += consumed;
      got += produced;
      if (consumed == 0 && produced == 0) {
        if (in_pos_ < in_.size()) {
          return Status::Corrupt(layer_name_ + ": decoder stuck at compressed offset " +
                                 std::to_string(decoder_->compressed_offset()));
        }
        if (eof_) break;
      }
    }
    out.resize(got);
    if (got == 0 && !decoder_->AtEnd()) {
      return Status::Corrupt(layer_name_ + ": compressed stream truncated at offset " +
                             std::to_string(decoder_->compressed_offset()) +
                             " (unexpected end of blob)");
    }
    diff_hash_.Update(out);
    return out;
  }

  registry::Digest BlobDigest() { return blob_hash_.Finish(); }
  registry::Digest DiffId() { return diff_hash_.Finish(); }
  uint64_t compressed_size() const { return compressed_size_; }

 private:
  CompressedSource* source_;
  StreamDecoder* decoder_;
  std::string layer_name_;
  std::string in_;
  size_t in_pos_ = 0;
  bool eof_ = false;
  uint64_t compressed_size_ = 0;
  registry::Sha256 blob_hash_;
  registry::Sha256 diff_hash_;
};

std::string LayerName(const IndexOptions& options) {
  return options.expected_digest.empty() ? "layer" : "layer " + options.expected_digest.String();
}

// Fills type and path of `entry` from a tar entry, mapping whiteouts.
Status Classify(const registry::TarEntry& t, FileEntry* entry) {
  std::string_view name = t.name;
  size_t slash = name.rfind('/');
  std::string_view dir = slash == std::string_view::npos ? "" : name.substr(0, slash);
  std::string_view base = slash == std::string_view::npos ? name : name.substr(slash + 1);
  if (base.starts_with(kWhiteoutPrefix)) {
    if (base == kOpaqueMarker) {
      entry->type = EntryType::kOpaque;
      entry->path = std::string(dir);
      return Status::Ok();
    }
    std::string_view hidden = base.substr(kWhiteoutPrefix.size());
    if (hidden.empty() || hidden == "." || hidden == "..") {
      return Status::Corrupt("invalid whiteout entry " + t.name);
    }
    entry->type = EntryType::kWhiteout;
    entry->path = dir.empty() ? std::string(hidden) : std::string(dir) + "/" + std::string(hidden);
    return Status::Ok();
  }
  entry->path = t.name;
  switch (t.type) {
    case registry::TarEntryType::kRegular:
      entry->type = EntryType::kRegular;
      break;
    case registry::TarEntryType::kHardlink:
      entry->type = EntryType::kHardlink;
      break;
    case registry::TarEntryType::kSymlink:
      entry->type = EntryType::kSymlink;
      break;
    case registry::TarEntryType::kChar:
      entry->type = EntryType::kChar;
      break;
    case registry::TarEntryType::kBlock:
      entry->type = EntryType::kBlock;
      break;
    case registry::TarEntryType::kDirectory:
      entry->type = EntryType::kDirectory;
      break;
    case registry::TarEntryType::kFifo:
      entry->type = EntryType::kFifo;
      break;
  }
  return Status::Ok();
}

uint64_t MaxCheckpointGap(const std::vector<Checkpoint>& points, uint64_t end) {
  uint64_t gap = 0;
  uint64_t prev = 0;
  for (const Checkpoint& cp : points) {
    gap = std::max(gap, cp.uncompressed_offset - prev);
    prev = cp.uncompressed_offset;
  }
  return std::max(gap, end - prev);
}

// The whole pass: decode, parse, chunk, hash, verify.
Result<LayerIndex> RunPass(CompressedSource* source, std::string_view media_type,
                           const IndexOptions& options) {
  IMGFS_ASSIGN_OR_RETURN(LayerFormat format, LayerFormatForMediaType(media_type));
  std::string name = LayerName(options);
  std::optional<CheckpointRecorder> recorder;
  if (format != LayerFormat::kTar) recorder.emplace(options.span_bytes);
  IMGFS_ASSIGN_OR_RETURN(
      std::unique_ptr<StreamDecoder> decoder,
      NewStreamDecoder(format, Checkpoint{}, 0, recorder ? &*recorder : nullptr));
  DecodingInput input(source, decoder.get(), name);
  registry::TarReader tar(&input);

  LayerIndex index;
  index.media_type = std::string(media_type);
  index.format = format;
  index.chunk_size = options.chunk_size_bytes;
  index.checkpoint_span = format == LayerFormat::kTar ? 0 : options.span_bytes;
  while (true) {
    Result<std::optional<registry::TarEntry>> next = tar.Next();
    if (!next.has_value()) {
      Status s = next.error();
      if (s.message().starts_with(name)) return s;
      return s.WithContext(name + " (at uncompressed offset " + std::to_string(tar.offset()) + ")");
    }
    if (!next->has_value()) break;
    const registry::TarEntry& t = **next;
    FileEntry e;
    Status s = Classify(t, &e);
    if (!s.ok()) return s.WithContext(name);
    e.mode = t.mode & 07777;
    e.uid = t.uid;
    e.gid = t.gid;
    e.mtime_sec = t.mtime_sec;
    e.mtime_nsec = t.mtime_nsec;
    e.dev_major = t.dev_major;
    e.dev_minor = t.dev_minor;
    e.link_target = t.link_target;
    e.xattrs.assign(t.xattrs.begin(), t.xattrs.end());
    if (e.type == EntryType::kRegular) {
      e.size = t.size;
      e.payload_offset = t.payload_offset;
      e.first_chunk = static_cast<uint32_t>(index.chunks.size());
      uint64_t done = 0;
      while (done < t.size) {
        Chunk c;
        c.file_offset = done;
        c.size = std::min<uint64_t>(options.chunk_size_bytes, t.size - done);
        registry::Sha256 hash;
        uint64_t left = c.size;
        while (left > 0) {
          Result<std::string> piece =
              tar.ReadPayload(static_cast<size_t>(std::min<uint64_t>(left, kReadBlockBytes)));
          if (!piece.has_value()) return piece.error().WithContext(name);
          if (piece->empty()) {
            return Status::Corrupt(name + ": payload of " + t.name + " ends early");
          }
          hash.Update(*piece);
          left -= piece->size();
        }
        c.digest = hash.Finish();
        if (format == LayerFormat::kTar) {
          c.blob_offset = t.payload_offset + c.file_offset;
          c.blob_length = c.size;
        }
        index.chunks.push_back(std::move(c));
        done += index.chunks.back().size;
        ++e.chunk_count;
      }
      if (e.chunk_count == 0) e.first_chunk = 0;
    }
    index.entries.push_back(std::move(e));
  }
  // Consume the rest (end-of-archive blocks, padding): it counts for the diff_id, and the
  // compressed stream must end cleanly.
  while (true) {
    Result<std::string> rest = input.Read(kReadBlockBytes);
    if (!rest.has_value()) return rest.error();
    if (rest->empty()) break;
  }
  index.compressed_size = input.compressed_size();
  index.uncompressed_size = decoder->uncompressed_offset();
  index.layer_digest = input.BlobDigest();
  index.diff_id = input.DiffId();
  if (recorder) {
    index.checkpoints = recorder->Take();
    index.max_checkpoint_gap = MaxCheckpointGap(index.checkpoints, index.uncompressed_size);
  }
  if (!options.expected_digest.empty() && options.expected_digest != index.layer_digest) {
    return Status::Corrupt(name + ": digest mismatch: blob hashes to " +
                           index.layer_digest.String());
  }
  if (!options.expected_diff_id.empty() && options.expected_diff_id != index.diff_id) {
    return Status::Corrupt(name + ": diff_id mismatch: expected " +
                           options.expected_diff_id.String() + ", uncompressed stream hashes to " +
                           index.diff_id.String());
  }
  return index;
}

Status CheckOptions(const IndexOptions& options) {
  if (options.chunk_size_bytes == 0 || options.span_bytes == 0) {
    return Status::InvalidArgument("index options: chunk size and span must be positive");
  }
  return Status::Ok();
}

}  // namespace

Result<LayerFormat> LayerFormatForMediaType(std::string_view media_type) {
  switch (registry::media::LayerCompression(media_type)) {
    case registry::media::Compression::kNone:
      return LayerFormat::kTar;
    case registry::media::Compression::kGzip:
      return LayerFormat::kTarGzip;
    case registry::media::Compression::kZstd:
      return LayerFormat::kTarZstd;
    case registry::media::Compression::kUnknown:
      break;
  }
  return Status::Unsupported("unsupported layer media type \"" + std::string(media_type) + "\"");
}

// Push mode: Feed() appends to a bounded queue, the worker's CompressedSource pops from it.
// Lock order: only `mu`.
struct IndexBuilder::Shared : public CompressedSource {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> queue;             // guarded by mu
  size_t queued_bytes = 0;                   // guarded by mu
  size_t front_pos = 0;                      // guarded by mu: consumed bytes of queue.front()
  bool closed = false;                       // guarded by mu: no more Feed
  bool cancelled = false;                    // guarded by mu: the builder is going away
  bool done = false;                         // guarded by mu: the pass has finished
  std::optional<Result<LayerIndex>> result;  // guarded by mu; set when done
  std::thread worker;

  Result<size_t> Read(char* buf, size_t cap) override {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return !queue.empty() || closed || cancelled; });
    if (cancelled) return Status::Internal("index build cancelled");
    if (queue.empty()) return size_t{0};
    std::string& front = queue.front();
    size_t n = std::min(cap, front.size() - front_pos);
    std::copy_n(front.data() + front_pos, n, buf);
    front_pos += n;
    queued_bytes -= n;
    if (front_pos == front.size()) {
      queue.pop_front();
      front_pos = 0;
    }
    cv.notify_all();
    return n;
  }
};

IndexBuilder::IndexBuilder(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}

Result<std::unique_ptr<IndexBuilder>> IndexBuilder::Create(std::string_view media_type,
                                                           IndexOptions options) {
  IMGFS_RETURN_IF_ERROR(CheckOptions(options));
  IMGFS_RETURN_IF_ERROR(LayerFormatForMediaType(media_type).error());
  auto shared = std::make_shared<Shared>();
  // An exception in the pass (bad_alloc on a hostile layer) becomes the build's result.
  Shared* s = shared.get();
  auto finish = [s](Result<LayerIndex> r) {
    std::scoped_lock lock(s->mu);
    s->result.emplace(std::move(r));
    s->done = true;
    s->cv.notify_all();
  };
  shared->worker = StartThread(
      "imgfs-index",
      [s, finish, type = std::string(media_type), opts = std::move(options)]() -> Status {
        Result<LayerIndex> r = RunPass(s, type, opts);
        finish(std::move(r));
        return Status::Ok();
      },
      [finish](const Status& error) { finish(error); });
  return std::unique_ptr<IndexBuilder>(new IndexBuilder(std::move(shared)));
}

IndexBuilder::~IndexBuilder() {
  {
    std::scoped_lock lock(shared_->mu);
    shared_->cancelled = true;
    shared_->cv.notify_all();
  }
  if (shared_->worker.joinable()) shared_->worker.join();
}

Status IndexBuilder::Feed(std::string_view bytes) {
  std::unique_lock lock(shared_->mu);
  if (shared_->closed) return Status::Internal("IndexBuilder::Feed after Finish");
  while (!bytes.empty()) {
    shared_->cv.wait(lock,
                     [&] { return shared_->done || shared_->queued_bytes < kMaxQueuedBytes; });
    if (shared_->done) {
      if (!shared_->result->has_value()) return shared_->result->error();
      return Status::Corrupt("layer: data after the end of the stream");
    }
    size_t n = std::min(bytes.size(), kMaxQueuedBytes - shared_->queued_bytes);
    shared_->queue.emplace_back(bytes.substr(0, n));
    shared_->queued_bytes += n;
    bytes.remove_prefix(n);
    shared_->cv.notify_all();
  }
  return Status::Ok();
}

Result<LayerIndex> IndexBuilder::Finish() {
  {
    std::unique_lock lock(shared_->mu);
    if (shared_->closed) return Status::Internal("IndexBuilder::Finish called twice");
    shared_->closed = true;
    shared_->cv.notify_all();
  }
  shared_->worker.join();
  std::scoped_lock lock(shared_->mu);
  return std::move(*shared_->result);
}

Result<LayerIndex> IndexBuilder::BuildFromFd(int fd, std::string_view media_type,
                                             const IndexOptions& options) {
  IMGFS_RETURN_IF_ERROR(CheckOptions(options));
  FdSource source(fd);
  return RunPass(&source, media_type, options);
}

Result<LayerIndex> IndexBuilder::BuildFromFile(const std::string& path, std::string_view media_type,
                                               const IndexOptions& options) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_CLOEXEC));
  return BuildFromFd(fd.get(), media_type, options);
}

Result<cache::IndexKey> StoreKeyOf(const LayerIndex& index) {
  if (index.layer_digest.empty()) return Status::InvalidArgument("index without a layer digest");
  switch (index.provenance) {
    case IndexProvenance::kLayerBlob:
      return cache::IndexKey::LayerBlob(index.layer_digest);
    case IndexProvenance::kToc:
      if (index.origin.empty()) break;
      return cache::IndexKey::Toc(index.layer_digest, index.origin);
    case IndexProvenance::kPublished:
      if (index.subject.empty()) break;
      return cache::IndexKey::Image(index.layer_digest, index.subject);
    case IndexProvenance::kUnverified:
      break;
  }
  return Status::InvalidArgument("the index of " + index.layer_digest.String() +
                                 " has no provenance to be stored under");
}

Result<LayerIndex> LoadOrBuildIndex(cache::IndexStore& store, const std::string& blob_path,
                                    std::string_view media_type, const IndexOptions& options,
                                    registry::Digest* encoding) {
  if (options.expected_digest.empty()) {
    return Status::InvalidArgument("LoadOrBuildIndex needs the layer digest");
  }
  Result<MappedFile> bytes = store.Map(options.expected_digest);
  if (bytes.has_value()) {
    Result<LayerIndex> index =
        LayerIndex::Decode(bytes->bytes(), options.chunk_table, options.file_table);
    // Only an index built from this blob: layer_digest, diff_id, chunk size and span are
    // fields anyone can write into an index, the provenance is what this function stamps.
    if (index.has_value() && index->provenance == IndexProvenance::kLayerBlob &&
        index->layer_digest == options.expected_digest &&
        (options.expected_diff_id.empty() || index->diff_id == options.expected_diff_id) &&
        index->chunk_size == options.chunk_size_bytes &&
        (index->format == LayerFormat::kTar || index->checkpoint_span == options.span_bytes)) {
      if (encoding != nullptr) *encoding = EncodedIndexDigest(bytes->bytes());
      return index;
    }
  } else if (bytes.error().code() != StatusCode::kNotFound &&
             bytes.error().code() != StatusCode::kCorrupt) {
    return bytes.error();
  }
  IMGFS_ASSIGN_OR_RETURN(LayerIndex index,
                         IndexBuilder::BuildFromFile(blob_path, media_type, options));
  // The pass checked the blob's sha256 against options.expected_digest.
  index.provenance = IndexProvenance::kLayerBlob;
  index.origin = registry::Digest();
  index.subject = registry::Digest();
  const std::string encoded = index.Encode();
  IMGFS_RETURN_IF_ERROR(store.Put(options.expected_digest, encoded));
  if (encoding != nullptr) *encoding = EncodedIndexDigest(encoded);
  if (options.chunk_table == LayerIndex::ChunkTable::kSkip) index.DropChunks();
  if (options.file_table == LayerIndex::FileTable::kSkip) index.DropEntries();
  return index;
}

}  // namespace imgfs::fs
