// imgfs — gzip decoding with random-access checkpoints.
#include "fs/layer/gzip_index.h"

#include <zlib.h>

#include <string>

namespace imgfs::fs {
namespace {

constexpr int kGzipWindowBits = 15 + 16;  // gzip wrapper only (zlib manual, inflateInit2)
constexpr int kRawWindowBits = -15;       // raw deflate, 32 KiB window
constexpr size_t kGzipTrailerBytes = 8;   // CRC-32 + ISIZE (RFC 1952 section 2.3)
constexpr int kEndOfBlock = 128;          // z_stream.data_type flags with Z_BLOCK (zlib.h)
constexpr int kLastBlock = 64;

class GzipDecoder : public StreamDecoder {
 public:
  explicit GzipDecoder(CheckpointRecorder* recorder) : recorder_(recorder) {}
  GzipDecoder(const GzipDecoder&) = delete;
  GzipDecoder& operator=(const GzipDecoder&) = delete;
  ~GzipDecoder() override {
    if (initialized_) inflateEnd(&strm_);
  }

  Status Init(const Checkpoint& start, uint8_t prev_byte) {
    in_offset_ = start.compressed_offset;
    out_offset_ = start.uncompressed_offset;
    bool member_start = start.window.empty() && start.bits == 0;
    if (inflateInit2(&strm_, member_start ? kGzipWindowBits : kRawWindowBits) != Z_OK) {
      return Status::Internal("inflateInit2 failed");
    }
    initialized_ = true;
    if (member_start) {
      state_ = State::kBetweenMembers;
      return Status::Ok();
    }
    state_ = State::kMember;
    raw_ = true;
    if (start.bits > 7) return Status::Corrupt("gzip checkpoint with bad bit count");
    if (start.bits != 0 &&
        inflatePrime(&strm_, start.bits, prev_byte >> (8 - start.bits)) != Z_OK) {
      return Status::Corrupt("gzip checkpoint: inflatePrime failed");
    }
    if (inflateSetDictionary(&strm_, reinterpret_cast<const Bytef*>(start.window.data()),
                             static_cast<uInt>(start.window.size())) != Z_OK) {
      return Status::Corrupt("gzip checkpoint: bad window");
    }
    return Status::Ok();
  }

  Status Decode(std::string_view in, size_t* consumed, char* out, size_t out_cap,
                size_t* produced) override {
    size_t pos = 0;
    size_t prod = 0;
    while (prod < out_cap) {
      if (state_ == State::kBetweenMembers) {
        if (pos == in.size()) break;
        if (recorder_ != nullptr && recorder_->Wants(out_offset_)) {
          recorder_->Add(Checkpoint{in_offset_, out_offset_, 0, {}});
        }
        if (inflateReset2(&strm_, kGzipWindowBits) != Z_OK) {
          return Status::Internal("inflateReset2 failed");
        }
        raw_ = false;
        state_ = State::kMember;
        continue;
      }
      if (state_ == State::kTrailer) {
        size_t n = std::min(trailer_left_, in.size() - pos);
        if (n == 0) break;
        pos += n;
        in_offset_ += n;
        trailer_left_ -= n;
        if (trailer_left_ == 0) {
          state_ = State::kBetweenMembers;
          ++members_;
        }
        continue;
      }
      strm_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + pos));
      strm_.avail_in = static_cast<uInt>(std::min<size_t>(in.size() - pos, 1u << 30));
      strm_.next_out = reinterpret_cast<Bytef*>(out + prod);
      strm_.avail_out = static_cast<uInt>(std::min<size_t>(out_cap - prod, 1u << 30));
      uInt avail_in = strm_.avail_in;
      uInt avail_out = strm_.avail_out;
      int ret = inflate(&strm_, recorder_ != nullptr ? Z_BLOCK : Z_NO_FLUSH);
      size_t used = avail_in - strm_.avail_in;
      size_t made = avail_out - strm_.avail_out;
      pos += used;
      prod += made;
      in_offset_ += used;
      out_offset_ += made;
      if (ret == Z_STREAM_END) {
        if (raw_) {
          state_ = State::kTrailer;
          trailer_left_ = kGzipTrailerBytes;
        } else {
          state_ = State::kBetweenMembers;
          ++members_;
        }
        continue;
      }
      if (ret == Z_BUF_ERROR) break;  // needs more input (or output space)
      if (ret != Z_OK) {
        return Status::Corrupt(
            "gzip stream invalid at compressed offset " + std::to_string(in_offset_) + ": " +
            (strm_.msg != nullptr ? strm_.msg : "inflate error " + std::to_string(ret)));
      }
      if (recorder_ != nullptr && (strm_.data_type & kEndOfBlock) != 0 &&
          (strm_.data_type & kLastBlock) == 0 && recorder_->Wants(out_offset_)) {
        RecordBlockCheckpoint();
      }
      if (used == 0 && made == 0) break;
    }
    *consumed = pos;
    *produced = prod;
    return Status::Ok();
  }

  bool AtEnd() const override { return state_ == State::kBetweenMembers && members_ > 0; }

 private:
  enum class State { kBetweenMembers, kMember, kTrailer };

  void RecordBlockCheckpoint() {
    std::string window(32768, '\0');
    uInt len = static_cast<uInt>(window.size());
    if (inflateGetDictionary(&strm_, reinterpret_cast<Bytef*>(window.data()), &len) != Z_OK) {
      return;  // no checkpoint here; a later boundary will do
    }
    window.resize(len);
    if (window.empty()) return;  // an empty window would read as a member start
    recorder_->Add(Checkpoint{in_offset_, out_offset_, static_cast<uint8_t>(strm_.data_type & 7),
                              std::move(window)});
  }

  CheckpointRecorder* recorder_;
  z_stream strm_{};
  bool initialized_ = false;
  State state_ = State::kBetweenMembers;
  bool raw_ = false;  // decoding a member from a checkpoint inside it (no gzip header seen)
  size_t trailer_left_ = 0;
  uint64_t members_ = 0;  // members completed
};

}  // namespace

Result<std::unique_ptr<StreamDecoder>> NewGzipDecoder(const Checkpoint& start, uint8_t prev_byte,
                                                      CheckpointRecorder* recorder) {
  auto decoder = std::make_unique<GzipDecoder>(recorder);
  IMGFS_RETURN_IF_ERROR(decoder->Init(start, prev_byte));
  return std::unique_ptr<StreamDecoder>(std::move(decoder));
}

}  // namespace imgfs::fs
