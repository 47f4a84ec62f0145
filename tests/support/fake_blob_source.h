// imgfs — the one in-memory registry::BlobSource of the tests.
//
// FakeBlobSource serves the ranged reads of one blob, either held in memory or forwarded to
// another BlobSource (a fixture's LocalSource), and lets a test observe and disturb them:
//  - observe: requests, bytes answered, every range asked, the highest number of reads in
//    flight at once, multi-range calls;
//  - disturb: a delay per read, a hang until Release(), a hold of the reads of one blob
//    offset until ReleaseAt(), a hold of one read until another one is in flight (to make
//    an interleaving happen without timing), failures (Unavailable), thrown
//    std::bad_alloc, a byte flipped at a blob offset or in the middle of the next answers,
//    whole-blob fetches refused, and multi-range requests answered as one request or refused
//    (then asked range by range, as RemoteSource does after a refusal).
// Every ranged read, however it arrives, goes through one private Answer(), so a later read
// kind (a streaming read) gets the same knobs by calling it.
//
// Thread-safety: every method may be called from several threads at once; knobs may change
// while reads are running (a read sees each knob either before or after the change).
#ifndef IMGFS_TESTS_SUPPORT_FAKE_BLOB_SOURCE_H_
#define IMGFS_TESTS_SUPPORT_FAKE_BLOB_SOURCE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/byte_range.h"
#include "base/status.h"
#include "registry/blob_source.h"
#include "registry/digest.h"

namespace imgfs::testing {

class FakeBlobSource : public registry::BlobSource {
 public:
  // Serves `blob` for every digest. Manifests: NotFound; tags: Unsupported.
  explicit FakeBlobSource(std::string blob);
  // Forwards manifests, tags, whole blobs and ranged reads to `inner`; the knobs apply to the
  // ranged reads.
  explicit FakeBlobSource(std::shared_ptr<registry::BlobSource> inner);
  FakeBlobSource(const FakeBlobSource&) = delete;
  FakeBlobSource& operator=(const FakeBlobSource&) = delete;

  // registry::BlobSource.
  Result<registry::FetchedManifest> GetManifest(std::string_view tag_or_digest) override;
  Status FetchBlob(const registry::Digest& digest, int64_t expected_size,
                   const registry::BlobSink& sink) override;
  Result<std::string> ReadBlobRange(const registry::Digest& digest, ByteRange range) override;
  // With set_multi_range(true): all non-empty ranges in one request (one `requests` and one
  // multi_range_requests()). Otherwise (the default, and a registry that refuses them) one
  // request per range.
  Result<std::vector<std::string>> ReadBlobRanges(const registry::Digest& digest,
                                                  const std::vector<ByteRange>& ranges,
                                                  uint64_t* requests) override;
  Result<std::vector<std::string>> ListTags() override;
  std::string Describe() const override;

  // --- Knobs ---
  // Every ranged read sleeps `delay` before answering.
  void set_delay(std::chrono::milliseconds delay) { delay_ms_.store(delay.count()); }
  // Ranged reads block (after being recorded) until Release(), at most kMaxHang.
  void Hang();
  void Release();
  // Ranged reads holding blob byte `offset` block (after being recorded) until
  // ReleaseAt(offset), at most kMaxHang.
  void HoldAt(uint64_t offset);
  void ReleaseAt(uint64_t offset);
  // The `nth` ranged read from now on (1 = the next) blocks, after being recorded, until
  // another ranged read is in flight, at most kMaxHang: a test sees two reads in flight at
  // once whenever the reader issues the second before it needs the first.
  void HoldUntilConcurrent(int nth);
  // Blocks until `n` ranged reads were recorded since the last ResetCounts (Ranges()),
  // at most `timeout`; whether they were.
  bool WaitForReads(size_t n, std::chrono::milliseconds timeout) const;
  // Ranged reads return Unavailable while set (after delay and hang, like a dead registry).
  void set_fail(bool fail) { fail_.store(fail); }
  // The next `answers` ranged reads throw std::bad_alloc instead of answering.
  void ThrowNext(int answers) { throw_next_.store(answers); }
  // The next `answers` non-empty answers get their middle byte flipped; < 0: every answer.
  void CorruptNext(int answers) { corrupt_next_.store(answers); }
  // Flips blob byte `offset` in the next `times` answers that hold it.
  void FlipAt(uint64_t offset, int times);
  // FetchBlob (whole blob) returns Unsupported while false. Default true.
  void set_whole_blob(bool allowed) { whole_blob_.store(allowed); }
  // ReadBlobRanges answers several ranges as one request while true. Default false.
  void set_multi_range(bool accepted) { multi_range_.store(accepted); }

  // --- Observations ---
  // Ranged requests made (one per ReadBlobRange, one per multi-range call).
  int requests() const { return requests_.load(); }
  // Bytes answered to ranged reads.
  uint64_t bytes() const { return bytes_.load(); }
  int multi_range_requests() const { return multi_range_requests_.load(); }
  int whole_blob_fetches() const { return whole_blob_fetches_.load(); }
  // The most ranged reads that were in flight at the same time.
  int max_in_flight() const { return max_in_flight_.load(); }
  // Every range asked, in arrival order.
  std::vector<ByteRange> Ranges() const;
  // True when no blob byte was asked for twice.
  bool NoOverlaps() const;
  // Zeroes requests, bytes, multi-range requests, whole-blob fetches, max in flight and the
  // recorded ranges (e.g. after a test's setup read the TOC).
  void ResetCounts();

  // A hang lasts at most this long, so a test that forgets Release() fails instead of
  // wedging the suite (ctest's own timeout is far longer).
  static constexpr std::chrono::seconds kMaxHang{30};

 private:
  // One ranged read with every knob applied: record, delay, hang, fail/throw, read, flip.
  Result<std::string> Answer(const registry::Digest& digest, ByteRange range);
  Result<std::string> Read(const registry::Digest& digest, ByteRange range);

  const std::string blob_;
  const std::shared_ptr<registry::BlobSource> inner_;  // null: serve blob_

  std::atomic<int64_t> delay_ms_{0};
  std::atomic<bool> fail_{false};
  std::atomic<int> throw_next_{0};
  std::atomic<int> corrupt_next_{0};
  std::atomic<bool> whole_blob_{true};
  std::atomic<bool> multi_range_{false};

  std::atomic<int> requests_{0};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<int> multi_range_requests_{0};
  std::atomic<int> whole_blob_fetches_{0};
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};

  mutable std::mutex mu_;  // a leaf lock: held only around the fields below
  // Signalled on Release, ReleaseAt, every read recorded and every read started.
  mutable std::condition_variable hang_cv_;
  bool hang_ = false;                            // guarded by mu_
  std::vector<uint64_t> holds_;                  // guarded by mu_: HoldAt offsets
  int hold_countdown_ = 0;                       // guarded by mu_: HoldUntilConcurrent
  uint64_t reads_started_ = 0;                   // guarded by mu_: ranged reads ever begun
  std::vector<ByteRange> ranges_;                // guarded by mu_
  std::vector<std::pair<uint64_t, int>> flips_;  // guarded by mu_: offset, answers left
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_FAKE_BLOB_SOURCE_H_
