// imgfs — ByteRange: a half-open range [offset, offset + length) of bytes.
#ifndef IMGFS_BASE_BYTE_RANGE_H_
#define IMGFS_BASE_BYTE_RANGE_H_

#include <cstdint>

namespace imgfs {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;

  uint64_t end() const { return offset + length; }
  bool empty() const { return length == 0; }
  bool operator==(const ByteRange&) const = default;
};

}  // namespace imgfs

#endif  // IMGFS_BASE_BYTE_RANGE_H_
