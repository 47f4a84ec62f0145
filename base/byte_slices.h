// imgfs — ByteSlices: bytes held where they already are, as views into buffers that the
// value keeps alive, so a reader's cached blocks reach a reply (writev) without being gathered
// into one string first.
//
// Thread-safety: a value type; the buffers it views are immutable while it holds them.
#ifndef IMGFS_BASE_BYTE_SLICES_H_
#define IMGFS_BASE_BYTE_SLICES_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace imgfs {

class ByteSlices {
 public:
  ByteSlices() = default;
  // One slice holding all of `data`.
  static ByteSlices Of(std::string data) {
    ByteSlices out;
    out.whole_ = std::make_shared<std::string>(std::move(data));
    out.Append(*out.whole_, out.whole_);
    return out;
  }

  // Adds `part` (empty parts are dropped), kept valid by `owner`.
  void Append(std::string_view part, std::shared_ptr<const void> owner) {
    if (part.empty()) return;
    parts_.push_back(part);
    size_ += part.size();
    if (owners_.empty() || owners_.back() != owner) owners_.push_back(std::move(owner));
  }

  const std::vector<std::string_view>& parts() const { return parts_; }
  size_t size() const { return size_; }

  // The bytes as one string: the string itself when made by Of and not copied since, else a
  // copy gathered from the parts. Leaves this value empty.
  std::string TakeString() && {
    std::string out;
    if (whole_ != nullptr && whole_.use_count() == 2) {  // 2: whole_ and its owner entry
      out = std::move(*whole_);
    } else {
      out.reserve(size_);
      for (std::string_view p : parts_) out.append(p);
    }
    *this = ByteSlices();
    return out;
  }

 private:
  std::shared_ptr<std::string> whole_;  // set by Of
  std::vector<std::string_view> parts_;
  std::vector<std::shared_ptr<const void>> owners_;
  size_t size_ = 0;
};

}  // namespace imgfs

#endif  // IMGFS_BASE_BYTE_SLICES_H_
