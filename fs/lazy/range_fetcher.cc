// imgfs — RangeFetcher (see range_fetcher.h).
#include "fs/lazy/range_fetcher.h"

#include <algorithm>
#include <exception>
#include <utility>

namespace imgfs::fs {

std::vector<RangeBatch> PlanRangeBatches(const std::vector<ByteRange>& ranges, uint64_t max_bytes,
                                         size_t max_ranges) {
  max_ranges = std::max<size_t>(max_ranges, 1);
  std::vector<RangeBatch> batches;
  for (size_t first = 0; first < ranges.size();) {
    size_t last = first + 1;
    uint64_t bytes = ranges[first].length;
    while (last < ranges.size() && last - first < max_ranges &&
           bytes + ranges[last].length <= max_bytes) {
      bytes += ranges[last].length;
      ++last;
    }
    batches.push_back(RangeBatch{first, last});
    first = last;
  }
  return batches;
}

std::vector<UnitRead> JoinAdjacentUnits(const std::vector<ByteRange>& units, uint64_t max_bytes) {
  std::vector<UnitRead> reads;
  for (size_t k = 0; k < units.size(); ++k) {
    const ByteRange& u = units[k];
    if (reads.empty() || reads.back().range.end() != u.offset ||
        reads.back().range.length + u.length > max_bytes) {
      reads.push_back(UnitRead{u, {k}});
      continue;
    }
    reads.back().range.length += u.length;
    reads.back().units.push_back(k);
  }
  return reads;
}

RangeFetcher::RangeFetcher(std::shared_ptr<registry::BlobSource> source, registry::Digest digest,
                           LayerCounters* counters, uint64_t max_request_bytes, size_t max_ranges)
    : source_(std::move(source)),
      digest_(std::move(digest)),
      counters_(counters),
      max_request_bytes_(std::max<uint64_t>(max_request_bytes, 1)),
      max_ranges_(std::max<size_t>(max_ranges, 1)) {}

std::vector<Result<std::string>> RangeFetcher::Send(const std::vector<UnitRead>& reads,
                                                    RangeBatch batch) {
  std::vector<Result<std::string>> out;
  out.reserve(batch.last - batch.first);
  if (batch.last - batch.first == 1) {
    counters_->requests.fetch_add(1, std::memory_order_relaxed);
    Result<std::string> bytes = source_->ReadBlobRange(digest_, reads[batch.first].range);
    if (bytes.has_value()) {
      counters_->bytes_fetched.fetch_add(bytes->size(), std::memory_order_relaxed);
    }
    out.push_back(std::move(bytes));
    return out;
  }
  multi_batches_.fetch_add(1, std::memory_order_relaxed);
  std::vector<ByteRange> ranges;
  ranges.reserve(batch.last - batch.first);
  for (size_t r = batch.first; r < batch.last; ++r) ranges.push_back(reads[r].range);
  uint64_t made = 0;
  Result<std::vector<std::string>> got = source_->ReadBlobRanges(digest_, ranges, &made);
  counters_->requests.fetch_add(made, std::memory_order_relaxed);
  for (size_t r = 0; r < ranges.size(); ++r) {
    if (!got.has_value()) {
      out.emplace_back(got.error());
    } else if (r >= got->size()) {
      out.emplace_back(Status::Internal("the source answered " + std::to_string(got->size()) +
                                        " of " + std::to_string(ranges.size()) + " ranges"));
    } else {
      counters_->bytes_fetched.fetch_add((*got)[r].size(), std::memory_order_relaxed);
      out.emplace_back(std::move((*got)[r]));
    }
  }
  return out;
}

std::vector<size_t> RangeFetcher::Fetch(size_t count, int attempts, const FetchControl& control,
                                        const Plan& plan, const Deliver& deliver,
                                        const Failed& failed) {
  std::vector<size_t> todo(count);
  for (size_t k = 0; k < count; ++k) todo[k] = k;
  for (int attempt = 1; attempt <= std::max(1, attempts) && !todo.empty(); ++attempt) {
    attempts_.fetch_add(1, std::memory_order_relaxed);
    const std::vector<UnitRead> reads = plan(todo);
    std::vector<ByteRange> ranges;
    ranges.reserve(reads.size());
    for (const UnitRead& read : reads) ranges.push_back(read.range);
    std::vector<size_t> refused;
    for (const RangeBatch& batch : PlanRangeBatches(ranges, max_request_bytes_, max_ranges_)) {
      if (control.stopping()) {
        for (size_t r = batch.first; r < batch.last; ++r) {
          deliver(reads[r], Status::Unavailable("the mount is closing"), &refused);
        }
        continue;
      }
      std::vector<Result<std::string>> answers = Send(reads, batch);
      for (size_t r = batch.first; r < batch.last; ++r) {
        deliver(reads[r], answers[r - batch.first], &refused);
      }
    }
    std::sort(refused.begin(), refused.end());
    refused.erase(std::unique(refused.begin(), refused.end()), refused.end());
    if (!refused.empty() && failed) failed(attempt, todo.size(), refused);
    todo = std::move(refused);
    if (control.stopping()) break;
  }
  return todo;
}

Status RangeFetcher::Stream(ByteRange range, bool background, const FetchControl& control,
                            const Consume& consume) {
  uint64_t pos = range.offset;
  bool enough = false;
  Status consumer_error = Status::Ok();
  // Runs inside the HTTP client's callback: nothing may be thrown through it.
  registry::BlobSink sink = [&](std::string_view data) -> Status {
    if (control.stopping()) return Status::Unavailable("the mount is closing");
    if (background) control.YieldToDemand();
    if (data.size() > range.end() - pos) data = data.substr(0, range.end() - pos);
    if (data.empty()) return Status::Ok();
    counters_->bytes_fetched.fetch_add(data.size(), std::memory_order_relaxed);
    Result<StreamStep> step = StreamStep::kMore;
    try {
      step = consume(pos, data);
    } catch (const std::exception& e) {
      step = Status::Internal(std::string("streaming: ") + e.what());
    }
    pos += data.size();
    if (!step.has_value()) {
      consumer_error = step.error();
      return consumer_error;
    }
    if (*step == StreamStep::kEnough) {
      enough = true;
      return Status::Unavailable("the reader has what it streamed for");
    }
    return Status::Ok();
  };
  counters_->requests.fetch_add(1, std::memory_order_relaxed);
  Status st = source_->StreamBlobRange(digest_, range, sink);
  if (enough) return Status::Ok();
  if (!consumer_error.ok()) return consumer_error;
  if (!st.ok()) return st;
  if (pos < range.end()) {
    return Status::Unavailable("blob " + digest_.String() + " ended at " + std::to_string(pos) +
                               ", inside the streamed range " + std::to_string(range.offset) + "-" +
                               std::to_string(range.end()));
  }
  return Status::Ok();
}

Status RangeFetcher::StreamPass(bool background, const FetchControl& control,
                                const StreamPassHooks& hooks) {
  while (!control.stopping()) {
    Status st = Status::Ok();
    bool segment = true;
    try {
      std::optional<ByteRange> range = hooks.next();
      if (!range.has_value()) {
        segment = false;
      } else {
        st = Stream(*range, background, control, hooks.consume);
      }
    } catch (const std::exception& e) {
      st = Status::Internal(std::string("streaming pass: ") + e.what());
    }
    if (!segment && st.ok()) return Status::Ok();
    IMGFS_RETURN_IF_ERROR(hooks.done(std::move(st)));
  }
  return Status::Unavailable("the mount is closing");
}

}  // namespace imgfs::fs
