// imgfs — CompressedStream: writes a blob as a sequence of independently decodable units
// (gzip members or zstd frames), the building block of the eStargz and zstd:chunked writers
// (fs/convert/layer_writer.h).
//
// Uncompressed bytes go in through Write; EndUnit() closes the current gzip member / zstd
// frame so that the next byte starts a new one at a known blob offset (a unit with no input
// is not written: no empty members). WriteRaw appends bytes that are not compressed (the
// eStargz footer, zstd skippable frames). Everything emitted goes to the sink in pieces of
// about 1 MiB. The stream counts blob bytes (offset()) and uncompressed bytes and hashes both
// (blob digest, diff_id). Output is deterministic: the same calls give the same bytes (gzip
// headers carry no name and mtime 0).
//
// Thread-safety: one stream per thread.
#ifndef IMGFS_FS_LAYER_COMPRESSED_STREAM_H_
#define IMGFS_FS_LAYER_COMPRESSED_STREAM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "registry/blob_source.h"
#include "registry/digest.h"

namespace imgfs::fs {

class CompressedStream {
 public:
  enum class Codec { kGzip, kZstd };

  // `sink` (not owned) must outlive the stream. `level`: zlib 1..9 or zstd 1..19.
  CompressedStream(Codec codec, int level, const registry::BlobSink* sink);
  ~CompressedStream();
  CompressedStream(const CompressedStream&) = delete;
  CompressedStream& operator=(const CompressedStream&) = delete;

  // Compresses `data` into the current unit (opening one if none is open).
  Status Write(std::string_view data);
  // Closes the current unit, if one is open.
  Status EndUnit();
  // Appends uncompressed-format bytes to the blob. REQUIRES: no unit open (call EndUnit).
  Status WriteRaw(std::string_view data);
  // Flushes buffered output to the sink. REQUIRES: no unit open.
  Status Finish();

  // Blob offset of the next byte to be emitted (all units so far are closed: the start of
  // the next unit).
  uint64_t offset() const { return offset_; }
  // Uncompressed bytes written so far.
  uint64_t uncompressed_bytes() const { return uncompressed_; }
  bool unit_open() const { return open_; }
  // Only after Finish.
  registry::Digest blob_digest() { return blob_hash_.Finish(); }
  registry::Digest diff_id() { return diff_hash_.Finish(); }

  // Compresses `data` as one complete unit in memory (used for TOCs). Internal errors only.
  static Result<std::string> CompressOne(Codec codec, int level, std::string_view data);

 private:
  struct State;
  Status Emit(std::string_view bytes);
  Status Drain(bool end);

  Codec codec_;
  int level_;
  const registry::BlobSink* sink_;
  std::unique_ptr<State> state_;
  std::string pending_;  // output not yet handed to the sink
  uint64_t offset_ = 0;
  uint64_t uncompressed_ = 0;
  bool open_ = false;
  registry::Sha256 blob_hash_;
  registry::Sha256 diff_hash_;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_COMPRESSED_STREAM_H_
