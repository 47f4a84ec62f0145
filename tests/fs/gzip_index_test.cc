// imgfs — tests for gzip decoding with zran-style checkpoints (fs/layer/gzip_index.h).
#include "fs/layer/gzip_index.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/fs/layer_test_util.h"

namespace imgfs::fs {
namespace {

using testing::Gzip;
using testing::TextishBytes;

// Feeds `blob` from `start` in pieces of `piece` bytes; returns all output.
Result<std::string> DecodeAll(StreamDecoder& d, std::string_view blob, size_t start, size_t piece,
                              size_t max_out = SIZE_MAX) {
  std::string out;
  std::string buf(7777, '\0');
  size_t pos = start;
  while (out.size() < max_out) {
    std::string_view in = blob.substr(pos, std::min(piece, blob.size() - pos));
    size_t consumed = 0, produced = 0;
    Status s = d.Decode(in, &consumed, buf.data(), buf.size(), &produced);
    if (!s.ok()) return s;
    pos += consumed;
    out.append(buf, 0, produced);
    if (consumed == 0 && produced == 0 && pos == blob.size()) break;
    if (consumed == 0 && produced == 0) return Status::Internal("no progress");
  }
  return out;
}

TEST(GzipIndexTest, DecodesSingleMemberAndRecordsCheckpointsEverySpan) {
  std::string data = TextishBytes(3 << 20, 1);
  std::string gz = Gzip(data);
  CheckpointRecorder rec(256 << 10);
  auto d = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  auto out = DecodeAll(**d, gz, 0, 65536);
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(*out, data);
  EXPECT_TRUE((*d)->AtEnd());
  EXPECT_EQ((*d)->compressed_offset(), gz.size());
  EXPECT_EQ((*d)->uncompressed_offset(), data.size());
  const auto& cps = rec.points();
  ASSERT_GE(cps.size(), 8u);  // 3 MiB / 256 KiB = 12 spans, block granularity loses a few
  EXPECT_EQ(cps[0].uncompressed_offset, 0u);
  EXPECT_TRUE(cps[0].window.empty());
  for (size_t i = 1; i < cps.size(); ++i) {
    EXPECT_GE(cps[i].uncompressed_offset - cps[i - 1].uncompressed_offset, 256u << 10);
    EXPECT_EQ(cps[i].window.size(), 32768u);
    EXPECT_LE(cps[i].bits, 7);
  }
}

TEST(GzipIndexTest, RestartsAtEveryCheckpoint) {
  std::string data = TextishBytes(2 << 20, 2);
  std::string gz = Gzip(data, 9);
  CheckpointRecorder rec(100 << 10);
  auto d = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(d.has_value());
  ASSERT_TRUE(DecodeAll(**d, gz, 0, 1 << 20).has_value());
  std::vector<Checkpoint> cps = rec.Take();
  ASSERT_GT(cps.size(), 5u);
  for (const Checkpoint& cp : cps) {
    uint8_t prev =
        cp.compressed_offset > 0 ? static_cast<uint8_t>(gz[cp.compressed_offset - 1]) : 0;
    auto r = NewGzipDecoder(cp, prev, nullptr);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    auto out = DecodeAll(**r, gz, cp.compressed_offset, 4096, 50000);
    ASSERT_TRUE(out.has_value()) << out.error().ToString();
    ASSERT_GE(out->size(), std::min<size_t>(50000, data.size() - cp.uncompressed_offset));
    EXPECT_EQ(out->substr(0, 50000), data.substr(cp.uncompressed_offset, 50000))
        << "checkpoint at " << cp.uncompressed_offset;
  }
}

TEST(GzipIndexTest, MultiMemberStreamsHaveMemberStartCheckpoints) {
  std::string data = TextishBytes(1 << 20, 3);
  std::string gz = Gzip(data, 6, 4);
  CheckpointRecorder rec(250 << 10);  // just below the 256 KiB members
  auto d = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(d.has_value());
  auto out = DecodeAll(**d, gz, 0, 1000);  // small pieces: cut headers and trailers
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  EXPECT_EQ(*out, data);
  EXPECT_TRUE((*d)->AtEnd());
  size_t member_starts = 0;
  for (const Checkpoint& cp : rec.points()) {
    if (cp.window.empty()) {
      ++member_starts;
      EXPECT_EQ(static_cast<uint8_t>(gz[cp.compressed_offset]), 0x1f);
    }
  }
  EXPECT_GE(member_starts, 2u);
  // From a checkpoint inside the first member, decoding crosses into the next members (the
  // raw path skips the trailer) and reaches the end.
  for (const Checkpoint& cp : rec.points()) {
    if (cp.window.empty()) continue;
    auto r = NewGzipDecoder(cp, static_cast<uint8_t>(gz[cp.compressed_offset - 1]), nullptr);
    ASSERT_TRUE(r.has_value());
    auto rest = DecodeAll(**r, gz, cp.compressed_offset, 3000);
    ASSERT_TRUE(rest.has_value()) << rest.error().ToString();
    EXPECT_EQ(*rest, data.substr(cp.uncompressed_offset));
    break;
  }
}

TEST(GzipIndexTest, TruncatedStreamIsNotAtEnd) {
  std::string gz = Gzip(TextishBytes(100000, 4));
  auto d = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  ASSERT_TRUE(d.has_value());
  ASSERT_TRUE(DecodeAll(**d, gz.substr(0, gz.size() / 2), 0, 4096).has_value());
  EXPECT_FALSE((*d)->AtEnd());
  // Cut inside the trailer too.
  auto d2 = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  ASSERT_TRUE(DecodeAll(**d2, gz.substr(0, gz.size() - 3), 0, 4096).has_value());
  EXPECT_FALSE((*d2)->AtEnd());
}

TEST(GzipIndexTest, CorruptDataAndTrailingGarbageAreCorrupt) {
  std::string gz = Gzip(TextishBytes(100000, 5));
  std::string bad = gz;
  bad[bad.size() - 6] ^= 0x55;  // CRC-32 in the trailer
  auto d = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  auto r = DecodeAll(**d, bad, 0, 4096);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().message().find("compressed offset"), std::string::npos);

  auto d2 = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  auto r2 = DecodeAll(**d2, gz + "garbage!", 0, 4096);
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().code(), StatusCode::kCorrupt);

  auto d3 = NewGzipDecoder(Checkpoint{}, 0, nullptr);
  auto r3 = DecodeAll(**d3, "not gzip at all", 0, 4096);
  EXPECT_FALSE(r3.has_value());
}

// One gzip member of `data` with the optional header fields (name, comment, extra, header
// CRC) that real tools write, at compression `level`.
std::string GzipMemberWithHeader(std::string_view data, int level, bool all_fields) {
  z_stream s{};
  deflateInit2(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  gz_header h{};
  std::string name = "layer.tar";
  std::string comment = "a comment";
  std::string extra(300, 'x');
  if (all_fields) {
    h.name = reinterpret_cast<Bytef*>(name.data());
    h.comment = reinterpret_cast<Bytef*>(comment.data());
    h.extra = reinterpret_cast<Bytef*>(extra.data());
    h.extra_len = static_cast<uInt>(extra.size());
    h.hcrc = 1;
    deflateSetHeader(&s, &h);
  }
  std::string out(deflateBound(&s, data.size()) + 1024, '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  deflate(&s, Z_FINISH);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

// Bytes like a layer's: text, incompressible runs (stored blocks), long repeats.
std::string LayerLikeBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out;
  while (out.size() < n) {
    switch (rng() % 3) {
      case 0:
        out += TextishBytes(20000 + rng() % 100000, rng());
        break;
      case 1:
        for (size_t i = 0, len = 5000 + rng() % 60000; i < len; ++i) {
          out += static_cast<char>(rng());
        }
        break;
      default:
        out.append(1000 + rng() % 50000, static_cast<char>('a' + rng() % 3));
        break;
    }
  }
  out.resize(n);
  return out;
}

// A multi-member stream as layers come: members at different levels, some with every
// optional header field.
struct MultiMember {
  std::string data;
  std::string gz;
  std::vector<Checkpoint> member_starts;  // the second member's on
};
MultiMember MakeMultiMember() {
  MultiMember m;
  m.data = LayerLikeBytes(3 << 20, 11);
  const size_t cuts[] = {0, 700000, 1500000, 1500001, 2200000, m.data.size()};
  const int levels[] = {6, 1, 9, 6, 9};
  for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
    if (i > 0) m.member_starts.push_back(Checkpoint{m.gz.size(), cuts[i], 0, {}});
    m.gz += GzipMemberWithHeader(std::string_view(m.data).substr(cuts[i], cuts[i + 1] - cuts[i]),
                                 levels[i], i % 2 == 1);
  }
  return m;
}

// ISA-L (the serving engine) and zlib (the indexing engine) give the same bytes from every
// checkpoint of a multi-member stream: inside members with the leftover bits (bits != 0 among
// them), and at member starts; fed in pieces small enough to cut headers and trailers.
TEST(GzipIndexTest, IsalDecodesLikeZlibFromEveryCheckpoint) {
  const MultiMember m = MakeMultiMember();
  CheckpointRecorder rec(48 << 10);
  auto indexer = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(indexer.has_value());
  auto full = DecodeAll(**indexer, m.gz, 0, 65536);
  ASSERT_TRUE(full.has_value()) << full.error().ToString();
  ASSERT_EQ(*full, m.data);
  std::vector<Checkpoint> cps = rec.Take();
  // The recorder keeps a member start only a span after the previous checkpoint; test them all.
  cps.insert(cps.end(), m.member_starts.begin(), m.member_starts.end());
  size_t with_bits = 0;
  size_t member_starts = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    const Checkpoint& cp = cps[i];
    with_bits += cp.bits != 0 ? 1 : 0;
    member_starts += cp.window.empty() && cp.compressed_offset > 0 ? 1 : 0;
    const uint8_t prev =
        cp.compressed_offset > 0 ? static_cast<uint8_t>(m.gz[cp.compressed_offset - 1]) : 0;
    const size_t piece = std::vector<size_t>{1, 7, 100, 4096, 1 << 20}[i % 5];
    const size_t want = i % 7 == 0 ? SIZE_MAX : 200000;  // some to the end of the stream
    auto isal = NewGzipDecoder(cp, prev, nullptr);
    auto zlib = NewZlibGzipDecoder(cp, prev, nullptr);
    ASSERT_TRUE(isal.has_value() && zlib.has_value());
    auto a = DecodeAll(**isal, m.gz, cp.compressed_offset, piece, want);
    auto b = DecodeAll(**zlib, m.gz, cp.compressed_offset, piece, want);
    ASSERT_TRUE(a.has_value()) << a.error().ToString() << " at checkpoint " << i;
    ASSERT_TRUE(b.has_value()) << b.error().ToString();
    const std::string expect = m.data.substr(cp.uncompressed_offset, want);
    ASSERT_GE(a->size(), expect.size());
    EXPECT_EQ(a->substr(0, expect.size()), expect) << "checkpoint " << i << " bits " << +cp.bits;
    EXPECT_EQ(a->substr(0, expect.size()), b->substr(0, expect.size()));
    if (want == SIZE_MAX) {
      EXPECT_TRUE((*isal)->AtEnd());
      EXPECT_EQ((*isal)->compressed_offset(), m.gz.size());
      EXPECT_EQ((*isal)->uncompressed_offset(), m.data.size());
    }
  }
  EXPECT_GE(cps.size(), 40u);
  EXPECT_GE(with_bits, 10u);
  EXPECT_GE(member_starts, 4u);
}

// From the start of the stream, ISA-L reads every header field, verifies every trailer and
// ends exactly at the end, whatever the pieces (1 byte: every header and trailer is cut).
TEST(GzipIndexTest, IsalReadsWholeStreamsInAnyPieces) {
  const std::string data = LayerLikeBytes(200000, 12);
  std::string gz = GzipMemberWithHeader(std::string_view(data).substr(0, 90000), 6, true) +
                   GzipMemberWithHeader(std::string_view(data).substr(90000), 9, false) +
                   GzipMemberWithHeader("", 6, true);  // an empty member
  for (size_t piece : {size_t{1}, size_t{3}, size_t{8}, size_t{333}, gz.size()}) {
    auto d = NewGzipDecoder(Checkpoint{}, 0, nullptr);
    ASSERT_TRUE(d.has_value());
    auto out = DecodeAll(**d, gz, 0, piece);
    ASSERT_TRUE(out.has_value()) << out.error().ToString() << " piece " << piece;
    EXPECT_EQ(*out, data);
    EXPECT_TRUE((*d)->AtEnd());
    EXPECT_EQ((*d)->compressed_offset(), gz.size());
  }
}

// Header faults zlib rejects are Corrupt on the ISA-L path too.
TEST(GzipIndexTest, IsalRejectsBadHeaders) {
  const std::string good = GzipMemberWithHeader(TextishBytes(5000, 13), 6, true);
  auto decode = [](const std::string& gz) {
    auto d = NewGzipDecoder(Checkpoint{}, 0, nullptr);
    return DecodeAll(**d, gz, 0, 5);
  };
  ASSERT_TRUE(decode(good).has_value());
  std::string bad_method = good;
  bad_method[2] = 7;
  std::string reserved_flag = good;
  reserved_flag[3] = static_cast<char>(reserved_flag[3] | 0x20);
  std::string bad_header_crc = good;
  bad_header_crc[20] ^= 1;  // inside the extra field, covered by the header CRC
  std::string bad_length = good;
  bad_length[bad_length.size() - 1] ^= 1;  // ISIZE
  for (const std::string* gz : {&bad_method, &reserved_flag, &bad_header_crc, &bad_length}) {
    auto r = decode(*gz);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << r.error().ToString();
  }
}

// `size` bytes ending right before an inaccessible page: a read or write past the end faults
// (ISA-L's decoding loops are assembly, which AddressSanitizer does not see).
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t size) : size_(size) {
    const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    map_size_ = (size + page - 1) / page * page + page;
    map_ = mmap(nullptr, map_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map_ == MAP_FAILED) std::abort();
    if (mprotect(static_cast<char*>(map_) + map_size_ - page, page, PROT_NONE) != 0) {
      std::abort();
    }
  }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  ~GuardedBuffer() { munmap(map_, map_size_); }
  char* data() const {
    const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return static_cast<char*>(map_) + map_size_ - page - size_;
  }

 private:
  size_t size_;
  size_t map_size_ = 0;
  void* map_ = nullptr;
};

// Corrupt or cut-short compressed data read from a checkpoint (and from member starts) gives
// a Corrupt status or stops short, never a crash or wrong bytes from intact data, with input
// and output buffers that end at an inaccessible page. Deterministic mutations of the stream
// from the checkpoint on: flipped bytes, zeroed runs, truncations.
TEST(GzipIndexTest, IsalOnCorruptOrTruncatedInputFailsCleanly) {
  const MultiMember m = MakeMultiMember();
  CheckpointRecorder rec(256 << 10);
  auto indexer = NewGzipDecoder(Checkpoint{}, 0, &rec);
  ASSERT_TRUE(DecodeAll(**indexer, m.gz, 0, 1 << 20).has_value());
  std::vector<Checkpoint> cps = rec.Take();
  cps.insert(cps.end(), m.member_starts.begin(), m.member_starts.end());
  ASSERT_GE(cps.size(), 6u);
  std::mt19937 rng(14);
  size_t errors = 0;
  size_t undetected = 0;
  constexpr int kRounds = 150;
  for (int round = 0; round < kRounds; ++round) {
    const Checkpoint& cp = cps[rng() % cps.size()];
    const size_t begin = cp.compressed_offset;
    std::string part = m.gz.substr(begin);
    const bool truncated = round % 3 == 2;
    switch (round % 3) {
      case 0:
        for (int k = 0; k < 3; ++k) {
          const size_t at = rng() % part.size();
          part[at] ^= static_cast<char>(1 + rng() % 255);
        }
        break;
      case 1: {
        const size_t at = rng() % part.size();
        std::memset(part.data() + at, 0, std::min<size_t>(part.size() - at, 1 + rng() % 64));
        break;
      }
      default:
        part.resize(rng() % part.size());
        break;
    }
    GuardedBuffer in(part.size());
    std::memcpy(in.data(), part.data(), part.size());
    const size_t out_cap = 1 + rng() % 100000;
    GuardedBuffer out(out_cap);
    const uint8_t prev = begin > 0 ? static_cast<uint8_t>(m.gz[begin - 1]) : 0;
    auto d = NewGzipDecoder(cp, prev, nullptr);
    ASSERT_TRUE(d.has_value());
    std::string_view rest(in.data(), part.size());
    std::string got;
    Status status = Status::Ok();
    while (got.size() <= m.data.size()) {
      size_t consumed = 0;
      size_t produced = 0;
      status = (*d)->Decode(rest.substr(0, 1 + rng() % 200000), &consumed, out.data(), out_cap,
                            &produced);
      if (!status.ok()) break;
      rest.remove_prefix(consumed);
      got.append(out.data(), produced);
      if (consumed == 0 && produced == 0) break;
    }
    const bool intact = got == std::string_view(m.data).substr(cp.uncompressed_offset, got.size());
    if (!status.ok()) {
      EXPECT_EQ(status.code(), StatusCode::kCorrupt) << status.ToString();
      ++errors;
    } else if (truncated) {
      EXPECT_TRUE(intact) << "round " << round;
      EXPECT_FALSE((*d)->AtEnd() && got.size() == m.data.size() - cp.uncompressed_offset);
    } else if (!intact || !(*d)->AtEnd()) {
      ++undetected;  // a change the deflate structure allows, in a member not verified here
    }
  }
  // Damage after the member the checkpoint is in meets a verified trailer at the latest.
  EXPECT_GE(errors, static_cast<size_t>(kRounds / 3));
  std::printf("%zu of %d damaged streams reported Corrupt, %zu stopped short or decoded\n", errors,
              kRounds, undetected);
}

TEST(GzipIndexTest, RejectsBadCheckpoint) {
  Checkpoint cp;
  cp.compressed_offset = 10;
  cp.bits = 9;
  cp.window = PackedWindow::Pack("x");
  EXPECT_FALSE(NewGzipDecoder(cp, 0, nullptr).has_value());
}

}  // namespace
}  // namespace imgfs::fs
