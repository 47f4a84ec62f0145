#include "tests/support/fake_blob_source.h"

#include <algorithm>
#include <new>
#include <thread>

namespace imgfs::testing {
namespace {

// Takes one from a countdown `n`: true when it was positive (and is now one less), or
// negative (meaning "always").
bool TakeOne(std::atomic<int>& n) {
  int left = n.load();
  while (left > 0 && !n.compare_exchange_weak(left, left - 1)) {
  }
  return left != 0;
}

}  // namespace

FakeBlobSource::FakeBlobSource(std::string blob) : blob_(std::move(blob)) {}

FakeBlobSource::FakeBlobSource(std::shared_ptr<registry::BlobSource> inner)
    : inner_(std::move(inner)) {}

Result<registry::FetchedManifest> FakeBlobSource::GetManifest(std::string_view tag_or_digest) {
  if (inner_ != nullptr) return inner_->GetManifest(tag_or_digest);
  return Status::NotFound("no manifests in a memory blob (test)");
}

Status FakeBlobSource::FetchBlob(const registry::Digest& digest, int64_t expected_size,
                                 const registry::BlobSink& sink) {
  if (!whole_blob_.load()) return Status::Unsupported("no whole blobs (test)");
  whole_blob_fetches_.fetch_add(1);
  if (inner_ != nullptr) return inner_->FetchBlob(digest, expected_size, sink);
  return sink(blob_);
}

Result<std::string> FakeBlobSource::ReadBlobRange(const registry::Digest& digest, ByteRange range) {
  requests_.fetch_add(1);
  return Answer(digest, range);
}

Result<std::vector<std::string>> FakeBlobSource::ReadBlobRanges(
    const registry::Digest& digest, const std::vector<ByteRange>& ranges, uint64_t* requests) {
  if (!multi_range_.load()) return BlobSource::ReadBlobRanges(digest, ranges, requests);
  requests_.fetch_add(1);
  multi_range_requests_.fetch_add(1);
  if (requests != nullptr) ++*requests;
  std::vector<std::string> out;
  out.reserve(ranges.size());
  for (const ByteRange& range : ranges) {
    if (range.empty()) {
      out.emplace_back();
      continue;
    }
    IMGFS_ASSIGN_OR_RETURN(std::string bytes, Answer(digest, range));
    out.push_back(std::move(bytes));
  }
  return out;
}

Result<std::vector<std::string>> FakeBlobSource::ListTags() {
  if (inner_ != nullptr) return inner_->ListTags();
  return Status::Unsupported("no tags in a memory blob (test)");
}

std::string FakeBlobSource::Describe() const {
  return inner_ != nullptr ? inner_->Describe() : "memory blob (test)";
}

void FakeBlobSource::Hang() {
  std::scoped_lock lock(mu_);
  hang_ = true;
}

void FakeBlobSource::Release() {
  {
    std::scoped_lock lock(mu_);
    hang_ = false;
  }
  hang_cv_.notify_all();
}

void FakeBlobSource::HoldAt(uint64_t offset) {
  std::scoped_lock lock(mu_);
  holds_.push_back(offset);
}

void FakeBlobSource::ReleaseAt(uint64_t offset) {
  {
    std::scoped_lock lock(mu_);
    holds_.erase(std::remove(holds_.begin(), holds_.end(), offset), holds_.end());
  }
  hang_cv_.notify_all();
}

void FakeBlobSource::HoldUntilConcurrent(int nth) {
  std::scoped_lock lock(mu_);
  hold_countdown_ = nth;
}

bool FakeBlobSource::WaitForReads(size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return hang_cv_.wait_for(lock, timeout, [&] { return ranges_.size() >= n; });
}

void FakeBlobSource::FlipAt(uint64_t offset, int times) {
  std::scoped_lock lock(mu_);
  flips_.emplace_back(offset, times);
}

std::vector<ByteRange> FakeBlobSource::Ranges() const {
  std::scoped_lock lock(mu_);
  return ranges_;
}

bool FakeBlobSource::NoOverlaps() const {
  std::vector<ByteRange> r = Ranges();
  std::sort(r.begin(), r.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < r.size(); ++i) {
    if (r[i - 1].end() > r[i].offset) return false;
  }
  return true;
}

void FakeBlobSource::ResetCounts() {
  requests_.store(0);
  bytes_.store(0);
  multi_range_requests_.store(0);
  whole_blob_fetches_.store(0);
  max_in_flight_.store(0);
  std::scoped_lock lock(mu_);
  ranges_.clear();
}

Result<std::string> FakeBlobSource::Answer(const registry::Digest& digest, ByteRange range) {
  const int now = in_flight_.fetch_add(1) + 1;
  int seen = max_in_flight_.load();
  while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
  }
  struct InFlight {
    std::atomic<int>& n;
    ~InFlight() { n.fetch_sub(1); }
  } in_flight{in_flight_};
  {
    std::unique_lock<std::mutex> lock(mu_);
    ranges_.push_back(range);
    const uint64_t mine = ++reads_started_;
    hang_cv_.notify_all();  // WaitForReads, and a read held until another one starts
    const bool wait_for_another = hold_countdown_ > 0 && --hold_countdown_ == 0;
    auto held = [&] {
      for (uint64_t at : holds_) {
        if (at >= range.offset && at - range.offset < range.length) return true;
      }
      return false;
    };
    hang_cv_.wait_for(lock, kMaxHang, [&] {
      // Another read started since this one (it counted both in max_in_flight), even if
      // it is over by the time this thread wakes.
      return !hang_ && !held() && (!wait_for_another || reads_started_ > mine);
    });
  }
  const int64_t delay_ms = delay_ms_.load();
  if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  if (fail_.load()) return Status::Unavailable("registry unreachable (test)");
  if (TakeOne(throw_next_)) throw std::bad_alloc();
  IMGFS_ASSIGN_OR_RETURN(std::string out, Read(digest, range));
  bytes_.fetch_add(out.size());
  if (!out.empty() && TakeOne(corrupt_next_)) {
    out[out.size() / 2] = static_cast<char>(out[out.size() / 2] ^ 0x5a);
  }
  std::scoped_lock lock(mu_);
  for (auto& [at, times] : flips_) {
    if (times != 0 && at >= range.offset && at < range.offset + out.size()) {
      out[at - range.offset] = static_cast<char>(out[at - range.offset] ^ 0x5a);
      if (times > 0) --times;
    }
  }
  return out;
}

Result<std::string> FakeBlobSource::Read(const registry::Digest& digest, ByteRange range) {
  if (inner_ != nullptr) return inner_->ReadBlobRange(digest, range);
  if (range.offset >= blob_.size()) return std::string();
  return blob_.substr(range.offset, range.length);
}

}  // namespace imgfs::testing
