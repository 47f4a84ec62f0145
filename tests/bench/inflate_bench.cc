// imgfs — scripts/bench.sh's inflate comparison: the files named on the command line, cut into
// eStargz-sized chunks (4 MiB; 256 MiB at most) and gzipped one member each, decoded by
// fs/layer/gunzip.h's fast path (libdeflate) and by zlib alone, best of three rounds each. Prints
// one line.
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fs/layer/gunzip.h"

namespace {

std::string GzipMember(const std::string& data) {
  z_stream s{};
  deflateInit2(&s, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&s, data.size()) + 64, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

template <class Decode>
double BestSeconds(const std::vector<std::string>& members, Decode decode) {
  double best = 1e9;
  for (int round = 0; round < 3; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (const std::string& m : members) {
      if (!decode(m)) {
        std::fprintf(stderr, "inflate_bench: decode failed\n");
        std::exit(1);
      }
    }
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr size_t kChunk = 4 << 20;
  std::vector<std::string> members;
  std::string pending;
  size_t total = 0;
  constexpr size_t kMaxTotal = 256 << 20;  // enough for a stable figure, a few seconds
  for (int i = 1; i < argc && total < kMaxTotal; ++i) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(argv[i], ec)) continue;  // directories, dead links
    std::ifstream in(argv[i], std::ios::binary);
    pending.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    while (pending.size() >= kChunk) {
      members.push_back(GzipMember(pending.substr(0, kChunk)));
      pending.erase(0, kChunk);
      total += kChunk;
    }
  }
  if (!pending.empty()) {
    members.push_back(GzipMember(pending));
    total += pending.size();
  }
  if (members.empty()) {
    std::fprintf(stderr, "usage: inflate_bench FILE...\n");
    return 2;
  }
  const double fast = BestSeconds(members, [](const std::string& m) {
    return imgfs::fs::GunzipAll(m, kChunk, "chunk").has_value();
  });
  const double zlib = BestSeconds(members, [](const std::string& m) {
    return imgfs::fs::GunzipAllWithZlib(m, kChunk).has_value();
  });
  const double mb = static_cast<double>(total) / 1e6;
  std::printf(
      "inflate of %.0f MB in 4 MiB gzip members: zlib %.0f MB/s, imgfs (libdeflate) "
      "%.0f MB/s, %.2fx\n",
      mb, mb / zlib, mb / fast, zlib / fast);
  return 0;
}
