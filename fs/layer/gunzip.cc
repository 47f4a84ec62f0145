// imgfs — whole-buffer gunzip (see gunzip.h).
#include "fs/layer/gunzip.h"

#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <memory>

#include "fs/layer/gzip_index.h"

namespace imgfs::fs {
namespace {

// The largest output one libdeflate call is given room for; larger members stream (zlib).
constexpr uint64_t kMaxGunzipStep = 64ull << 20;
// Deflate cannot expand more than 1032:1 (a 258-byte match per 2 bits, RFC 1951), so a member
// is never given room beyond that however large its trailer says it is.
constexpr uint64_t kMaxDeflateRatio = 1032;
constexpr size_t kGzipTrailerBytes = 8;  // CRC32, ISIZE (RFC 1952)

struct DecompressorDeleter {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

// One per thread: allocating it costs more than decoding a small chunk.
libdeflate_decompressor* ThreadDecompressor() {
  thread_local std::unique_ptr<libdeflate_decompressor, DecompressorDeleter> d(
      libdeflate_alloc_decompressor());
  return d.get();
}

// Appends the part of `piece` (output at stream position *pos) in [begin, end) to *out.
void Keep(const char* piece, size_t n, uint64_t* pos, uint64_t begin, uint64_t end,
          std::string* out) {
  const uint64_t from = std::max(*pos, begin);
  const uint64_t to = std::min(*pos + n, end);
  if (from < to) out->append(piece + (from - *pos), static_cast<size_t>(to - from));
  *pos += n;
}

// Output room of one streaming step.
constexpr size_t kStreamStepBytes = 64 << 10;

// ISA-L's streaming inflate (fs/layer/gzip_index.h) of the members in `in` from output
// position *pos on: the path for members too large for one buffer, and for bad data (whose
// error it words). About 2.1x zlib's speed here (tests/bench/inflate_bench.cc), same memory.
Status InflateStreamingIsal(std::string_view in, uint64_t begin, uint64_t end, uint64_t* pos,
                            GunzipResult* result, std::string* out) {
  IMGFS_ASSIGN_OR_RETURN(std::unique_ptr<StreamDecoder> d,
                         NewGzipDecoder(Checkpoint{}, 0, nullptr));
  std::unique_ptr<char[]> buf(new char[kStreamStepBytes]);
  size_t used = 0;
  while (*pos < end) {
    size_t consumed = 0;
    size_t produced = 0;
    IMGFS_RETURN_IF_ERROR(
        d->Decode(in.substr(used), &consumed, buf.get(), kStreamStepBytes, &produced));
    used += consumed;
    Keep(buf.get(), produced, pos, begin, end, out);
    if (consumed == 0 && produced == 0) break;  // input used up
  }
  if (*pos < end && !d->AtEnd()) return Status::Corrupt("gzip data cut short inside a member");
  result->input_ended = used == in.size() && d->AtEnd();
  return Status::Ok();
}

// zlib's streaming inflate of the same: GunzipAllWithZlib's engine.
Status InflateStreaming(std::string_view in, uint64_t begin, uint64_t end, uint64_t* pos,
                        GunzipResult* result, std::string* out) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return Status::Internal("inflateInit2 failed");
  struct Ender {
    z_stream* z;
    ~Ender() { inflateEnd(z); }
  } ender{&zs};
  size_t used = 0;
  char buf[kStreamStepBytes];
  while (*pos < end) {
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + used));
    zs.avail_in = static_cast<uInt>(std::min<size_t>(in.size() - used, 1 << 30));
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    const size_t before = zs.avail_in;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    used += before - zs.avail_in;
    const size_t produced = sizeof(buf) - zs.avail_out;
    Keep(buf, produced, pos, begin, end, out);
    if (rc == Z_STREAM_END) {
      if (used >= in.size()) {
        result->input_ended = true;
        break;
      }
      if (inflateReset(&zs) != Z_OK) return Status::Internal("inflateReset failed");
      continue;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return Status::Corrupt(std::string("bad gzip data: ") +
                             (zs.msg != nullptr ? zs.msg : "inflate error"));
    }
    if (produced == 0 && before - zs.avail_in == 0) {  // input exhausted inside a member
      if (*pos < end) return Status::Corrupt("gzip data cut short inside a member");
      break;
    }
  }
  return Status::Ok();
}

uint32_t LittleEndian32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | static_cast<uint32_t>(u[1]) << 8 |
         static_cast<uint32_t>(u[2]) << 16 | static_cast<uint32_t>(u[3]) << 24;
}

}  // namespace

Result<GunzipResult> GunzipRange(std::string_view in, uint64_t begin, uint64_t end,
                                 std::string* out) {
  GunzipResult result;
  uint64_t pos = 0;
  size_t used = 0;
  libdeflate_decompressor* d = ThreadDecompressor();
  while (pos < end && used < in.size() && d != nullptr) {
    const std::string_view rest = in.substr(used);
    // Room for the member: what the caller still wants, bounded by deflate's ratio and the
    // step, and by the last member's ISIZE when the rest is one member (the usual case).
    uint64_t room = std::min(
        {end - pos, kMaxGunzipStep, kMaxDeflateRatio * static_cast<uint64_t>(rest.size()) + 1024});
    if (rest.size() >= kGzipTrailerBytes) {
      room = std::min<uint64_t>(room, LittleEndian32(rest.data() + rest.size() - 4));
    }
    if (room == 0) break;  // an empty member (or a lying trailer): let the streaming path decide
    std::unique_ptr<char[]> buf(new char[room]);
    size_t in_used = 0;
    size_t produced = 0;
    const libdeflate_result rc = libdeflate_gzip_decompress_ex(
        d, rest.data(), rest.size(), buf.get(), room, &in_used, &produced);
    if (rc != LIBDEFLATE_SUCCESS) break;  // larger than the room, or bad: streaming takes over
    Keep(buf.get(), produced, &pos, begin, end, out);
    used += in_used;
    if (used == in.size()) result.input_ended = true;
  }
  if (pos < end && used < in.size()) {
    result.input_ended = false;
    Status st = InflateStreamingIsal(in.substr(used), begin, end, &pos, &result, out);
    if (!st.ok()) return st;
  }
  result.decoded = std::min(pos, end);
  return result;
}

Result<std::string> GunzipAll(std::string_view in, uint64_t max_out, std::string_view what) {
  std::string out;
  IMGFS_ASSIGN_OR_RETURN(GunzipResult r, GunzipRange(in, 0, max_out + 1, &out));
  if (out.size() > max_out) {
    return Status::Corrupt(std::string(what) + " decompresses to more than " +
                           std::to_string(max_out) + " bytes");
  }
  if (!r.input_ended) return Status::Corrupt(std::string(what) + ": truncated gzip data");
  return out;
}

Result<std::string> GunzipAllWithZlib(std::string_view in, uint64_t max_out) {
  std::string out;
  GunzipResult result;
  uint64_t pos = 0;
  Status st = InflateStreaming(in, 0, max_out + 1, &pos, &result, &out);
  if (!st.ok()) return st;
  if (out.size() > max_out) return Status::Corrupt("decompresses to more than the bound");
  if (!result.input_ended) return Status::Corrupt("truncated gzip data");
  return out;
}

}  // namespace imgfs::fs
