// imgfs — scripts/bench.sh's inflate comparison: zlib, Intel ISA-L and libdeflate on the same
// gzip data in one run, best of three rounds each, in MB/s of uncompressed output per second
// of CPU time.
//
//   inflate_bench FILE.gz      a gzip stream (a layer: `tar c DIR | gzip`), up to 1 GiB of it
//   inflate_bench FILE...      the files' bytes (256 MiB at most), gzipped here as one member
//
// Three measurements:
//   - whole stream: the stream from its start (zlib's and ISA-L's streaming inflate through
//     fs/layer/gzip_index.h; libdeflate decoding each member into one buffer);
//   - from checkpoints: the checkpoints a layer index records (every 4 MiB, zlib's Z_BLOCK
//     pass), then from each of them to the next (how reads of a mounted tar+gzip layer decode)
//     and its first 64 KiB (a small file's read: the cost of starting there). libdeflate
//     cannot start inside a member (no bit offset, no dictionary);
//   - 4 MiB members (eStargz chunks, FILE... only): fs/layer/gunzip.h (libdeflate), zlib alone,
//     ISA-L's one-shot inflate.
// The last line sums it up with the ratios to zlib.
#include <libdeflate.h>
#include <time.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <isa-l/igzip_lib.h>

#include "fs/layer/gunzip.h"
#include "fs/layer/gzip_index.h"

namespace {

using imgfs::fs::Checkpoint;
using imgfs::fs::CheckpointRecorder;
using imgfs::fs::StreamDecoder;

constexpr size_t kChunk = 4 << 20;            // eStargz's default chunk size
constexpr uint64_t kSpan = 4 << 20;           // IndexBuilderOptions::span_bytes's default
constexpr size_t kMaxFilesBytes = 256 << 20;  // enough for a stable figure, a few seconds
constexpr size_t kMaxStreamBytes = 1ull << 30;
constexpr size_t kSmallRead = 64 << 10;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "inflate_bench: %s\n", what);
  std::exit(1);
}

std::string GzipMember(std::string_view data) {
  z_stream s{};
  deflateInit2(&s, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&s, data.size()) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  if (deflate(&s, Z_FINISH) != Z_STREAM_END) Fail("deflate failed");
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

// The best of three rounds, in CPU seconds of this thread: the machine may be shared, and
// the decoders are single-threaded and do no I/O.
double BestSeconds(const std::function<void()>& run) {
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  };
  double best = 1e9;
  for (int round = 0; round < 3; ++round) {
    const double t0 = cpu_now();
    run();
    best = std::min(best, cpu_now() - t0);
  }
  return best;
}

using DecoderFactory = imgfs::Result<std::unique_ptr<StreamDecoder>> (*)(const Checkpoint&, uint8_t,
                                                                         CheckpointRecorder*);

// Decodes `gz` from `cp` until `want` bytes came out (or the stream ended); returns how many.
uint64_t DecodeFrom(DecoderFactory make, std::string_view gz, const Checkpoint& cp, uint64_t want,
                    std::string& buf, CheckpointRecorder* recorder = nullptr) {
  const uint8_t prev =
      cp.compressed_offset > 0 ? static_cast<uint8_t>(gz[cp.compressed_offset - 1]) : 0;
  auto d = make(cp, prev, recorder);
  if (!d.has_value()) Fail("decoder start failed");
  uint64_t got = 0;
  size_t pos = cp.compressed_offset;
  while (got < want) {
    size_t consumed = 0;
    size_t produced = 0;
    const size_t cap = static_cast<size_t>(std::min<uint64_t>(buf.size(), want - got));
    if (!(*d)->Decode(gz.substr(pos, 1 << 20), &consumed, buf.data(), cap, &produced).ok()) {
      Fail("decode failed");
    }
    pos += consumed;
    got += produced;
    if (consumed == 0 && produced == 0) break;
  }
  return got;
}

// libdeflate, one member at a time into a buffer of the whole output.
uint64_t LibdeflateWhole(std::string_view gz, std::string& out) {
  static libdeflate_decompressor* d = libdeflate_alloc_decompressor();
  size_t used = 0;
  uint64_t total = 0;
  while (used < gz.size()) {
    size_t in_used = 0;
    size_t produced = 0;
    if (libdeflate_gzip_decompress_ex(d, gz.data() + used, gz.size() - used, out.data() + total,
                                      out.size() - total, &in_used,
                                      &produced) != LIBDEFLATE_SUCCESS) {
      Fail("libdeflate failed");
    }
    used += in_used;
    total += produced;
  }
  return total;
}

bool IsalMember(std::string_view gz, std::string& out) {
  static auto* st = new inflate_state;
  isal_inflate_init(st);
  st->crc_flag = ISAL_GZIP;
  st->next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(gz.data()));
  st->avail_in = static_cast<uint32_t>(gz.size());
  st->next_out = reinterpret_cast<uint8_t*>(out.data());
  st->avail_out = static_cast<uint32_t>(out.size());
  return isal_inflate_stateless(st) == ISAL_DECOMP_OK;
}

std::string Ratio(double zlib_s, double other_s) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.2fx", zlib_s / other_s);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: inflate_bench FILE.gz | FILE...\n");
    return 2;
  }
  std::string gz;
  std::vector<std::string> members;  // FILE... only
  size_t files_bytes = 0;
  {
    std::ifstream first(argv[1], std::ios::binary);
    char magic[2] = {};
    first.read(magic, 2);
    if (argc == 2 && first.gcount() == 2 && magic[0] == '\x1f' && magic[1] == '\x8b') {
      first.seekg(0);
      gz.assign(std::istreambuf_iterator<char>(first), std::istreambuf_iterator<char>());
      if (gz.size() > kMaxStreamBytes) Fail("more than 1 GiB of gzip");
    } else {
      std::string all;
      for (int i = 1; i < argc && all.size() < kMaxFilesBytes; ++i) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(argv[i], ec)) continue;  // directories, dead links
        std::ifstream in(argv[i], std::ios::binary);
        all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      }
      all.resize(std::min(all.size(), kMaxFilesBytes));
      if (all.empty()) Fail("no data");
      files_bytes = all.size();
      for (size_t at = 0; at < all.size(); at += kChunk) {
        members.push_back(GzipMember(std::string_view(all).substr(at, kChunk)));
      }
      gz = GzipMember(all);
    }
  }
  std::string buf(256 << 10, '\0');

  // The checkpoints an index records (zlib pass), which also gives the stream's output size.
  CheckpointRecorder recorder(kSpan);
  const uint64_t total =
      DecodeFrom(imgfs::fs::NewZlibGzipDecoder, gz, Checkpoint{}, UINT64_MAX, buf, &recorder);
  std::vector<Checkpoint> cps = recorder.Take();
  const double mb = static_cast<double>(total) / 1e6;

  const double whole_zlib = BestSeconds([&] {
    if (DecodeFrom(imgfs::fs::NewZlibGzipDecoder, gz, Checkpoint{}, UINT64_MAX, buf) != total) {
      Fail("zlib: short");
    }
  });
  const double whole_isal = BestSeconds([&] {
    if (DecodeFrom(imgfs::fs::NewGzipDecoder, gz, Checkpoint{}, UINT64_MAX, buf) != total) {
      Fail("ISA-L: short");
    }
  });
  double whole_deflate = 0;
  {
    std::string out(total, '\0');
    whole_deflate = BestSeconds([&] {
      if (LibdeflateWhole(gz, out) != total) Fail("libdeflate: short");
    });
  }
  std::printf(
      "whole stream, %.0f MB from %.0f MB of gzip: zlib %.0f MB/s, ISA-L %.0f MB/s (%s), "
      "libdeflate %.0f MB/s (%s)\n",
      mb, static_cast<double>(gz.size()) / 1e6, mb / whole_zlib, mb / whole_isal,
      Ratio(whole_zlib, whole_isal).c_str(), mb / whole_deflate,
      Ratio(whole_zlib, whole_deflate).c_str());

  // From each checkpoint to the next, and the first 64 KiB after each.
  auto spans = [&](DecoderFactory make, bool small) {
    uint64_t n = 0;
    for (size_t i = 0; i < cps.size(); ++i) {
      const uint64_t end = i + 1 < cps.size() ? cps[i + 1].uncompressed_offset : total;
      const uint64_t want = small ? std::min<uint64_t>(kSmallRead, end - cps[i].uncompressed_offset)
                                  : end - cps[i].uncompressed_offset;
      n += DecodeFrom(make, gz, cps[i], want, buf);
    }
    return n;
  };
  uint64_t span_bytes = 0;
  uint64_t small_bytes = 0;
  const double cp_zlib =
      BestSeconds([&] { span_bytes = spans(imgfs::fs::NewZlibGzipDecoder, false); });
  const double cp_isal = BestSeconds([&] {
    if (spans(imgfs::fs::NewGzipDecoder, false) != span_bytes) Fail("ISA-L: short span");
  });
  const double small_zlib =
      BestSeconds([&] { small_bytes = spans(imgfs::fs::NewZlibGzipDecoder, true); });
  const double small_isal = BestSeconds([&] {
    if (spans(imgfs::fs::NewGzipDecoder, true) != small_bytes) Fail("ISA-L: short read");
  });
  const double span_mb = static_cast<double>(span_bytes) / 1e6;
  const double small_mb = static_cast<double>(small_bytes) / 1e6;
  std::printf(
      "from %zu checkpoints (4 MiB spans): zlib %.0f MB/s, ISA-L %.0f MB/s (%s); "
      "first 64 KiB of each: zlib %.0f MB/s, ISA-L %.0f MB/s (%s); libdeflate n/a\n",
      cps.size(), span_mb / cp_zlib, span_mb / cp_isal, Ratio(cp_zlib, cp_isal).c_str(),
      small_mb / small_zlib, small_mb / small_isal, Ratio(small_zlib, small_isal).c_str());

  std::string members_line;
  if (!members.empty()) {
    std::string out(kChunk, '\0');
    const double chunks_fast = BestSeconds([&] {
      for (const std::string& m : members) {
        if (!imgfs::fs::GunzipAll(m, kChunk, "chunk").has_value()) Fail("gunzip failed");
      }
    });
    const double chunks_zlib = BestSeconds([&] {
      for (const std::string& m : members) {
        if (!imgfs::fs::GunzipAllWithZlib(m, kChunk).has_value()) Fail("zlib failed");
      }
    });
    const double chunks_isal = BestSeconds([&] {
      for (const std::string& m : members) {
        if (!IsalMember(m, out)) Fail("ISA-L failed");
      }
    });
    const double fmb = static_cast<double>(files_bytes) / 1e6;
    std::printf(
        "4 MiB members: zlib %.0f MB/s, libdeflate (imgfs) %.0f MB/s (%s), "
        "ISA-L %.0f MB/s (%s)\n",
        fmb / chunks_zlib, fmb / chunks_fast, Ratio(chunks_zlib, chunks_fast).c_str(),
        fmb / chunks_isal, Ratio(chunks_zlib, chunks_isal).c_str());
    char b[160];
    std::snprintf(b, sizeof(b), "; 4 MiB members: libdeflate %s, ISA-L %s",
                  Ratio(chunks_zlib, chunks_fast).c_str(), Ratio(chunks_zlib, chunks_isal).c_str());
    members_line = b;
  }
  std::printf(
      "inflate of %.0f MB vs zlib (%.0f MB/s): whole stream ISA-L %s, libdeflate %s; "
      "from checkpoints ISA-L %s (first 64 KiB %s)%s\n",
      mb, mb / whole_zlib, Ratio(whole_zlib, whole_isal).c_str(),
      Ratio(whole_zlib, whole_deflate).c_str(), Ratio(cp_zlib, cp_isal).c_str(),
      Ratio(small_zlib, small_isal).c_str(), members_line.c_str());
  return 0;
}
