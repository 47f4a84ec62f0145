// imgfs — gzip decoding with random-access checkpoints.
#include "fs/layer/gzip_index.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <string>

#include <isa-l/igzip_lib.h>

namespace imgfs::fs {
namespace {

constexpr int kGzipWindowBits = 15 + 16;  // gzip wrapper only (zlib manual, inflateInit2)
constexpr int kRawWindowBits = -15;       // raw deflate, 32 KiB window
constexpr size_t kGzipTrailerBytes = 8;   // CRC-32 + ISIZE (RFC 1952 section 2.3)
constexpr int kEndOfBlock = 128;          // z_stream.data_type flags with Z_BLOCK (zlib.h)
constexpr int kLastBlock = 64;
// One inflate call sees at most this much input or output (the engines count in 32 bits).
constexpr size_t kMaxStep = size_t{1} << 30;

// A gzip member header (RFC 1952 section 2.3.1), read in whatever pieces the input comes in.
// ISA-L's own header reader is not used: isal_inflate() restarts it with fresh flags when a
// header is split across calls. This one accepts what zlib accepts: method 8, no reserved
// flag, a matching header CRC when FHCRC is set; MTIME, XFL and OS are not checked.
class GzipHeaderReader {
 public:
  // Consumes header bytes from the front of `in` (*used of them); *done once the header is
  // complete. Corrupt (with the reason) when the bytes are not a gzip header.
  Status Feed(std::string_view in, size_t* used, bool* done) {
    size_t i = 0;
    size_t crc_from = 0;  // header bytes in `in` not yet added to crc_
    while (i < in.size() && field_ != Field::kDone) {
      const auto b = static_cast<uint8_t>(in[i]);
      switch (field_) {
        case Field::kFixed:
          if ((count_ == 0 && b != 0x1f) || (count_ == 1 && b != 0x8b)) {
            return Status::Corrupt("incorrect gzip header check");
          }
          if (count_ == 2 && b != kMethodDeflate) {
            return Status::Corrupt("unknown gzip compression method");
          }
          if (count_ == 3) {
            if ((b & kFlagsReserved) != 0) return Status::Corrupt("unknown gzip header flags set");
            flags_ = b;
          }
          ++i;
          if (++count_ == kFixedBytes) Next(After(Field::kFixed));
          break;
        case Field::kExtraLength:
          value_ |= static_cast<uint32_t>(b) << (8 * count_);
          ++i;
          if (++count_ == 2) {
            left_ = value_;
            Next(left_ != 0 ? Field::kExtra : After(Field::kExtra));
          }
          break;
        case Field::kExtra: {
          const size_t n = std::min<size_t>(left_, in.size() - i);
          i += n;
          left_ -= static_cast<uint32_t>(n);
          if (left_ == 0) Next(After(Field::kExtra));
          break;
        }
        case Field::kName:
        case Field::kComment: {  // zero-terminated
          const void* nul = std::memchr(in.data() + i, 0, in.size() - i);
          if (nul == nullptr) {
            i = in.size();
          } else {
            i = static_cast<size_t>(static_cast<const char*>(nul) - in.data()) + 1;
            Next(After(field_));
          }
          break;
        }
        case Field::kHeaderCrc:
          if (crc_from < i) {  // the CRC covers every header byte before it
            crc_ = crc32(crc_, reinterpret_cast<const Bytef*>(in.data() + crc_from),
                         static_cast<uInt>(i - crc_from));
          }
          crc_from = SIZE_MAX;
          value_ |= static_cast<uint32_t>(b) << (8 * count_);
          ++i;
          if (++count_ == 2) {
            if (value_ != (crc_ & 0xffff)) return Status::Corrupt("gzip header crc mismatch");
            Next(Field::kDone);
          }
          break;
        case Field::kDone:
          break;
      }
    }
    if (crc_from < i) {
      crc_ = crc32(crc_, reinterpret_cast<const Bytef*>(in.data() + crc_from),
                   static_cast<uInt>(i - crc_from));
    }
    *used = i;
    *done = field_ == Field::kDone;
    return Status::Ok();
  }

 private:
  enum class Field { kFixed, kExtraLength, kExtra, kName, kComment, kHeaderCrc, kDone };
  static constexpr uint32_t kFixedBytes = 10;  // ID1 ID2 CM FLG MTIME(4) XFL OS
  static constexpr uint8_t kMethodDeflate = 8;
  static constexpr uint8_t kFlagHeaderCrc = 0x02;
  static constexpr uint8_t kFlagExtra = 0x04;
  static constexpr uint8_t kFlagName = 0x08;
  static constexpr uint8_t kFlagComment = 0x10;
  static constexpr uint8_t kFlagsReserved = 0xe0;

  // The field after `f` given the flags (the optional fields come in this order).
  Field After(Field f) const {
    switch (f) {
      case Field::kFixed:
        if ((flags_ & kFlagExtra) != 0) return Field::kExtraLength;
        [[fallthrough]];
      case Field::kExtraLength:
      case Field::kExtra:
        if ((flags_ & kFlagName) != 0) return Field::kName;
        [[fallthrough]];
      case Field::kName:
        if ((flags_ & kFlagComment) != 0) return Field::kComment;
        [[fallthrough]];
      case Field::kComment:
        if ((flags_ & kFlagHeaderCrc) != 0) return Field::kHeaderCrc;
        [[fallthrough]];
      case Field::kHeaderCrc:
      case Field::kDone:
        return Field::kDone;
    }
    return Field::kDone;
  }
  void Next(Field f) {
    field_ = f;
    count_ = 0;
    value_ = 0;
  }

  Field field_ = Field::kFixed;
  uint8_t flags_ = 0;
  uint32_t count_ = 0;  // bytes of the current fixed-size field read so far
  uint32_t value_ = 0;  // the little-endian field being read (XLEN, CRC16)
  uint32_t left_ = 0;   // extra-field bytes still to skip
  uLong crc_ = 0;       // crc32 of the header bytes read so far (for FHCRC)
};

std::string IsalError(int ret) {
  switch (ret) {
    case ISAL_INVALID_BLOCK:
      return "invalid deflate block";
    case ISAL_INVALID_SYMBOL:
      return "invalid deflate code";
    case ISAL_INVALID_LOOKBACK:
      return "invalid distance too far back";
    case ISAL_INCORRECT_CHECKSUM:
      return "CRC-32 or length mismatch in the member trailer";
    default:
      return "inflate error " + std::to_string(ret);
  }
}

// The member framing both engines share (RFC 1952 section 2.2): member starts (checkpoints
// for a recorder), headers (read here for an engine that wants them), the deflate data (the
// engine's), trailers skipped after a member entered from a checkpoint, the offsets and the
// count of members done.
class GzipFraming : public StreamDecoder {
 public:
  Status Decode(std::string_view in, size_t* consumed, char* out, size_t out_cap,
                size_t* produced) final {
    size_t pos = 0;
    size_t prod = 0;
    while (prod < out_cap) {
      if (state_ == State::kBetweenMembers) {
        if (pos == in.size()) break;
        if (recorder_ != nullptr && recorder_->Wants(out_offset_)) {
          recorder_->Add(Checkpoint{in_offset_, out_offset_, 0, {}});
        }
        raw_ = false;
        if (reads_headers_) {
          header_ = GzipHeaderReader();
          state_ = State::kHeader;
        } else {
          IMGFS_RETURN_IF_ERROR(StartMember());
          state_ = State::kMember;
        }
        continue;
      }
      if (state_ == State::kHeader) {
        size_t used = 0;
        bool done = false;
        const Status s = header_.Feed(in.substr(pos), &used, &done);
        if (!s.ok()) return Invalid(in_offset_, s.message());
        pos += used;
        in_offset_ += used;
        if (!done) break;  // all input used
        IMGFS_RETURN_IF_ERROR(StartMember());
        state_ = State::kMember;
        continue;
      }
      if (state_ == State::kTrailer) {
        const size_t n = std::min(trailer_left_, in.size() - pos);
        if (n == 0) break;
        pos += n;
        in_offset_ += n;
        trailer_left_ -= n;
        if (trailer_left_ == 0) EndMember();
        continue;
      }
      Step step;
      IMGFS_RETURN_IF_ERROR(Inflate(in.substr(pos, std::min(in.size() - pos, kMaxStep)), out + prod,
                                    std::min(out_cap - prod, kMaxStep), &step));
      pos += step.used;
      prod += step.made;
      if (step.member_end) {
        if (raw_) {
          // Entered from a checkpoint: the engine does not read this member's trailer.
          if (step.trailer_used > kGzipTrailerBytes) {
            return Status::Internal("gzip: read past a member trailer");
          }
          trailer_left_ = kGzipTrailerBytes - step.trailer_used;
          if (trailer_left_ == 0) {
            EndMember();
          } else {
            state_ = State::kTrailer;
          }
        } else {
          EndMember();
        }
        continue;
      }
      if (step.used == 0 && step.made == 0) break;  // needs more input (or output room)
    }
    *consumed = pos;
    *produced = prod;
    return Status::Ok();
  }

  bool AtEnd() const final { return state_ == State::kBetweenMembers && members_ > 0; }

 protected:
  // `reads_headers`: member headers are read here (the engine starts after them) rather than
  // by the engine.
  GzipFraming(CheckpointRecorder* recorder, bool reads_headers)
      : recorder_(recorder), reads_headers_(reads_headers) {}

  // Decoding starts at `start`; *in_member is true when that is inside a member (a raw
  // deflate resume: the engine primes itself with the bits and window()), false at a member
  // start. Corrupt for a checkpoint no engine can resume from.
  Status Begin(const Checkpoint& start, bool* in_member) {
    in_offset_ = start.compressed_offset;
    out_offset_ = start.uncompressed_offset;
    *in_member = !start.window.empty() || start.bits != 0;
    if (!*in_member) {
      state_ = State::kBetweenMembers;
      return Status::Ok();
    }
    if (start.bits > 7) return Status::Corrupt("gzip checkpoint with bad bit count");
    IMGFS_RETURN_IF_ERROR(start.window.Unpack(&window_));
    state_ = State::kMember;
    raw_ = true;
    return Status::Ok();
  }
  // The unpacked window of the checkpoint Begin started at.
  const std::string& window() const { return window_; }

  // What one Inflate call did: input used, output made, whether the member's deflate data
  // (and, for a member started at its header, its trailer) ended, and for a member entered
  // from a checkpoint how many trailer bytes the engine had already taken.
  struct Step {
    size_t used = 0;
    size_t made = 0;
    bool member_end = false;
    size_t trailer_used = 0;
  };
  // Starts a member: after its header when the framing reads headers, at its first byte
  // otherwise.
  virtual Status StartMember() = 0;
  // Inflates from `in` into `out` (at most `cap` bytes), advancing the offsets (Advance).
  virtual Status Inflate(std::string_view in, char* out, size_t cap, Step* step) = 0;

  void Advance(const Step& step) {
    in_offset_ += step.used;
    out_offset_ += step.made;
  }
  static Status Invalid(uint64_t offset, std::string_view why) {
    return Status::Corrupt("gzip stream invalid at compressed offset " + std::to_string(offset) +
                           ": " + std::string(why));
  }

  CheckpointRecorder* const recorder_;

 private:
  enum class State { kBetweenMembers, kHeader, kMember, kTrailer };
  void EndMember() {
    state_ = State::kBetweenMembers;
    ++members_;
  }

  const bool reads_headers_;
  GzipHeaderReader header_;
  State state_ = State::kBetweenMembers;
  bool raw_ = false;  // decoding a member entered from a checkpoint (no header seen)
  std::string window_;
  size_t trailer_left_ = 0;
  uint64_t members_ = 0;  // members completed
};

// zlib: reads member headers and trailers itself (gzip wrapper), and with a recorder stops at
// every block boundary (Z_BLOCK) to record checkpoints.
class ZlibGzipDecoder final : public GzipFraming {
 public:
  explicit ZlibGzipDecoder(CheckpointRecorder* recorder)
      : GzipFraming(recorder, /*reads_headers=*/false) {}
  ZlibGzipDecoder(const ZlibGzipDecoder&) = delete;
  ZlibGzipDecoder& operator=(const ZlibGzipDecoder&) = delete;
  ~ZlibGzipDecoder() override {
    if (initialized_) inflateEnd(&strm_);
  }

  Status Init(const Checkpoint& start, uint8_t prev_byte) {
    bool in_member = false;
    IMGFS_RETURN_IF_ERROR(Begin(start, &in_member));
    if (inflateInit2(&strm_, in_member ? kRawWindowBits : kGzipWindowBits) != Z_OK) {
      return Status::Internal("inflateInit2 failed");
    }
    initialized_ = true;
    if (!in_member) return Status::Ok();
    if (start.bits != 0 &&
        inflatePrime(&strm_, start.bits, prev_byte >> (8 - start.bits)) != Z_OK) {
      return Status::Corrupt("gzip checkpoint: inflatePrime failed");
    }
    if (inflateSetDictionary(&strm_, reinterpret_cast<const Bytef*>(window().data()),
                             static_cast<uInt>(window().size())) != Z_OK) {
      return Status::Corrupt("gzip checkpoint: bad window");
    }
    return Status::Ok();
  }

 private:
  Status StartMember() override {
    if (inflateReset2(&strm_, kGzipWindowBits) != Z_OK) {
      return Status::Internal("inflateReset2 failed");
    }
    return Status::Ok();
  }

  Status Inflate(std::string_view in, char* out, size_t cap, Step* step) override {
    strm_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    strm_.avail_in = static_cast<uInt>(in.size());
    strm_.next_out = reinterpret_cast<Bytef*>(out);
    strm_.avail_out = static_cast<uInt>(cap);
    const int ret = inflate(&strm_, recorder_ != nullptr ? Z_BLOCK : Z_NO_FLUSH);
    step->used = in.size() - strm_.avail_in;
    step->made = cap - strm_.avail_out;
    Advance(*step);
    if (ret == Z_STREAM_END) {
      step->member_end = true;
      return Status::Ok();
    }
    if (ret == Z_BUF_ERROR) return Status::Ok();  // no progress: needs more input or room
    if (ret != Z_OK) {
      return Invalid(in_offset_,
                     strm_.msg != nullptr ? strm_.msg : "inflate error " + std::to_string(ret));
    }
    if (recorder_ != nullptr && (strm_.data_type & kEndOfBlock) != 0 &&
        (strm_.data_type & kLastBlock) == 0 && recorder_->Wants(out_offset_)) {
      RecordBlockCheckpoint();
    }
    return Status::Ok();
  }

  void RecordBlockCheckpoint() {
    std::string window(32768, '\0');
    uInt len = static_cast<uInt>(window.size());
    if (inflateGetDictionary(&strm_, reinterpret_cast<Bytef*>(window.data()), &len) != Z_OK) {
      return;  // no checkpoint here; a later boundary will do
    }
    window.resize(len);
    if (window.empty()) return;  // an empty window would read as a member start
    recorder_->Add(Checkpoint{in_offset_, out_offset_, static_cast<uint8_t>(strm_.data_type & 7),
                              PackedWindow::Pack(window)});
  }

  z_stream strm_{};
  bool initialized_ = false;
};

// ISA-L (see the file comment of gzip_index.h): member headers are read by the framing
// (GzipHeaderReader), deflate data and trailers by isal_inflate (ISAL_GZIP_NO_HDR_VER: it
// checks the trailer's CRC-32 and ISIZE and consumes exactly the trailer).
class IsalGzipDecoder final : public GzipFraming {
 public:
  IsalGzipDecoder() : GzipFraming(nullptr, /*reads_headers=*/true) {}
  IsalGzipDecoder(const IsalGzipDecoder&) = delete;
  IsalGzipDecoder& operator=(const IsalGzipDecoder&) = delete;
  ~IsalGzipDecoder() override = default;

  Status Init(const Checkpoint& start, uint8_t prev_byte) {
    isal_inflate_init(&st_);
    bool in_member = false;
    IMGFS_RETURN_IF_ERROR(Begin(start, &in_member));
    if (!in_member) return Status::Ok();
    st_.crc_flag = ISAL_DEFLATE;
    if (!window().empty() &&
        isal_inflate_set_dict(&st_, reinterpret_cast<uint8_t*>(const_cast<char*>(window().data())),
                              static_cast<uint32_t>(std::min<size_t>(
                                  window().size(), ISAL_DEF_HIST_SIZE))) != COMP_OK) {
      return Status::Corrupt("gzip checkpoint: bad window");
    }
    // The deflate stream resumes `bits` bits before the byte at compressed_offset: the top
    // bits of the byte before it, which go first into ISA-L's bit buffer (low bits first).
    if (start.bits != 0) {
      st_.read_in = static_cast<uint64_t>(prev_byte >> (8 - start.bits));
      st_.read_in_length = start.bits;
    }
    return Status::Ok();
  }

 private:
  Status StartMember() override {
    isal_inflate_reset(&st_);
    st_.crc_flag = ISAL_GZIP_NO_HDR_VER;
    return Status::Ok();
  }

  Status Inflate(std::string_view in, char* out, size_t cap, Step* step) override {
    st_.next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(in.data()));
    st_.avail_in = static_cast<uint32_t>(in.size());
    st_.next_out = reinterpret_cast<uint8_t*>(out);
    st_.avail_out = static_cast<uint32_t>(cap);
    const int ret = isal_inflate(&st_);
    step->used = in.size() - st_.avail_in;
    step->made = cap - st_.avail_out;
    Advance(*step);
    if (ret != ISAL_DECOMP_OK) return Invalid(in_offset_, IsalError(ret));
    if (st_.block_state == ISAL_BLOCK_FINISH) {
      step->member_end = true;
      // Entered from a checkpoint (raw deflate), ISA-L has read ahead into its bit buffer: the
      // whole bytes there are the first bytes of the trailer (at most 8: it holds 64 bits).
      step->trailer_used =
          static_cast<size_t>(std::max(st_.read_in_length, 0) / 8) + st_.tmp_in_size;
    }
    return Status::Ok();
  }

  inflate_state st_{};
};

}  // namespace

Result<std::unique_ptr<StreamDecoder>> NewGzipDecoder(const Checkpoint& start, uint8_t prev_byte,
                                                      CheckpointRecorder* recorder) {
  if (recorder != nullptr) return NewZlibGzipDecoder(start, prev_byte, recorder);
  auto decoder = std::make_unique<IsalGzipDecoder>();
  IMGFS_RETURN_IF_ERROR(decoder->Init(start, prev_byte));
  return std::unique_ptr<StreamDecoder>(std::move(decoder));
}

Result<std::unique_ptr<StreamDecoder>> NewZlibGzipDecoder(const Checkpoint& start,
                                                          uint8_t prev_byte,
                                                          CheckpointRecorder* recorder) {
  auto decoder = std::make_unique<ZlibGzipDecoder>(recorder);
  IMGFS_RETURN_IF_ERROR(decoder->Init(start, prev_byte));
  return std::unique_ptr<StreamDecoder>(std::move(decoder));
}

}  // namespace imgfs::fs
