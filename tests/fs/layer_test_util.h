// imgfs — helpers for the fs/layer tests: the real image fixtures (OCI layouts made by umoci
// and skopeo, see tests/fixtures/README.md), a minimal ustar writer and in-memory
// gzip/zstd compressors for generated layers.
#ifndef IMGFS_TESTS_FS_LAYER_TEST_UTIL_H_
#define IMGFS_TESTS_FS_LAYER_TEST_UTIL_H_

#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry/digest.h"

namespace imgfs::fs::testing {

// The image fixtures made by real tools (tests/fixtures): $IMGFS_FIXTURES_DIR, else the committed
// ones.
inline std::string FixturesDir() {
  const char* env = std::getenv("IMGFS_FIXTURES_DIR");  // NOLINT(concurrency-mt-unsafe)
  if (env != nullptr && *env != '\0') return env;
  return IMGFS_FIXTURES_DIR;
}

inline const std::string kFixtures = FixturesDir();

inline std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct FixtureLayer {
  std::string path;  // the blob file
  std::string media_type;
  registry::Digest digest;
  registry::Digest diff_id;
};

// The layers of the single image of the OCI layout `dir`, bottom first. Empty on any problem
// (tests assert on the size).
inline std::vector<FixtureLayer> FixtureLayers(const std::string& dir) {
  std::vector<FixtureLayer> out;
  auto blob = [&](const std::string& digest) {
    return dir + "/blobs/sha256/" + digest.substr(digest.find(':') + 1);
  };
  auto index = nlohmann::json::parse(ReadWhole(dir + "/index.json"), nullptr, false);
  if (index.is_discarded()) return out;
  std::string manifest_digest = index["manifests"][0]["digest"];
  auto manifest = nlohmann::json::parse(ReadWhole(blob(manifest_digest)), nullptr, false);
  if (manifest.is_discarded()) return out;
  auto config =
      nlohmann::json::parse(ReadWhole(blob(manifest["config"]["digest"])), nullptr, false);
  if (config.is_discarded()) return out;
  const auto& layers = manifest["layers"];
  const auto& diff_ids = config["rootfs"]["diff_ids"];
  for (size_t i = 0; i < layers.size(); ++i) {
    FixtureLayer l;
    std::string digest = layers[i]["digest"];
    l.path = blob(digest);
    l.media_type = layers[i]["mediaType"];
    l.digest = registry::Digest::Parse(digest).value();
    if (i < diff_ids.size()) l.diff_id = registry::Digest::Parse(std::string(diff_ids[i])).value();
    out.push_back(std::move(l));
  }
  return out;
}

// A minimal ustar writer (names < 100 bytes).
class TarWriter {
 public:
  void File(const std::string& name, const std::string& data, char type = '0',
            const std::string& link = "") {
    Header(name, data.size(), type, link, 0644);
    out_ += data;
    out_.append((512 - data.size() % 512) % 512, '\0');
  }
  void Dir(const std::string& name) { Header(name, 0, '5', "", 0755); }
  void Hardlink(const std::string& name, const std::string& target) {
    Header(name, 0, '1', target, 0644);
  }
  std::string Finish() {
    out_.append(1024, '\0');
    return std::move(out_);
  }

 private:
  void Header(const std::string& name, size_t size, char type, const std::string& link, int mode) {
    char h[512] = {};
    std::snprintf(h, 100, "%s", name.c_str());
    std::snprintf(h + 100, 8, "%07o", mode);
    std::snprintf(h + 108, 8, "%07o", 0);
    std::snprintf(h + 116, 8, "%07o", 0);
    std::snprintf(h + 124, 12, "%011llo", static_cast<unsigned long long>(size));
    std::snprintf(h + 136, 12, "%011o", 1700000000);
    h[156] = type;
    std::snprintf(h + 157, 100, "%s", link.c_str());
    std::memcpy(h + 257,
                "ustar\0"
                "00",
                8);
    std::memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum);
    out_.append(h, sizeof(h));
  }
  std::string out_;
};

// gzip of `data` as one member (or `members` members of about equal size).
inline std::string Gzip(std::string_view data, int level = 6, int members = 1) {
  std::string out;
  size_t per = std::max<size_t>(1, (data.size() + members - 1) / std::max(1, members));
  size_t start = 0;
  do {
    std::string_view part = data.substr(start, per);
    z_stream s{};
    deflateInit2(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    std::string buf(deflateBound(&s, part.size()) + 64, '\0');
    s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(part.data()));
    s.avail_in = static_cast<uInt>(part.size());
    s.next_out = reinterpret_cast<Bytef*>(buf.data());
    s.avail_out = static_cast<uInt>(buf.size());
    deflate(&s, Z_FINISH);
    buf.resize(s.total_out);
    deflateEnd(&s);
    out += buf;
    start += per;
  } while (start < data.size());
  return out;
}

// zstd of `data` as `frames` frames, optionally with a skippable frame between them.
inline std::string Zstd(std::string_view data, int frames = 1, bool skippable = false) {
  std::string out;
  size_t per = (data.size() + frames - 1) / std::max(1, frames);
  for (size_t start = 0; start < data.size(); start += per) {
    std::string_view part = data.substr(start, per);
    std::string buf(ZSTD_compressBound(part.size()), '\0');
    size_t n = ZSTD_compress(buf.data(), buf.size(), part.data(), part.size(), 3);
    buf.resize(n);
    out += buf;
    if (skippable) {
      static const char kSkip[] = {0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 'x', 'y', 'z', 'w'};
      out.append(kSkip, sizeof(kSkip));
    }
  }
  return out;
}

// Deterministic, moderately compressible bytes (text-like lines with pseudo-random numbers).
inline std::string TextishBytes(size_t n, uint64_t seed) {
  std::string out;
  out.reserve(n + 64);
  uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
  char line[64];
  while (out.size() < n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    int len = std::snprintf(line, sizeof(line), "line %016llx %u\n",
                            static_cast<unsigned long long>(x), static_cast<unsigned>(x >> 50));
    out.append(line, static_cast<size_t>(len));
  }
  out.resize(n);
  return out;
}

inline bool WriteWhole(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(f);
}

}  // namespace imgfs::fs::testing

#endif  // IMGFS_TESTS_FS_LAYER_TEST_UTIL_H_
