// imgfs — TarWriter: writes PAX-extended ustar archives (image layers, OCI archives).
//
// Every entry is a ustar header; whatever ustar cannot hold goes into a PAX 'x' header in
// front of it (POSIX.1-2001 pax): names that do not fit name/prefix or are not ASCII, link
// targets over 100 bytes, uid/gid above 07777777, sizes of 8 GiB and more, negative or
// sub-second mtimes, long user/group names, and every xattr (SCHILY.xattr.<name>, the key GNU
// tar, Go archive/tar and containers tools read). Output is deterministic: the same entries
// give the same bytes (no atime/ctime, PAX records sorted by key, fixed PAX header names).
//
// Entries are TarEntry values (registry/tar_reader.h), the same shape the reader returns, so
// a read/write round trip is lossless for everything the reader reports. Whiteouts are
// ordinary empty regular files named `.wh.NAME` / `.wh..wh..opq` (OCI image-spec layer.md
// "Whiteouts"); WhiteoutEntry/OpaqueEntry build them. Directories get a trailing "/" in the
// archive, the root "" is written as "./".
//
// The writer pushes bytes to a sink; nothing is buffered beyond one entry's header. A failed
// sink call or a contract violation (payload shorter/longer than the entry's size, a name the
// reader would reject) makes that call and every later one fail; the output is then unusable.
//
// Thread-safety: one writer per thread.
#ifndef IMGFS_REGISTRY_TAR_WRITER_H_
#define IMGFS_REGISTRY_TAR_WRITER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "registry/tar_reader.h"

namespace imgfs::registry {

class TarWriter {
 public:
  using Sink = std::function<Status(std::string_view bytes)>;

  explicit TarWriter(Sink sink);
  // A writer that appends to `*out` (not owned; must outlive the writer).
  explicit TarWriter(std::string* out);

  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  // Writes the header(s) of `entry`. For regular files exactly `entry.size` payload bytes must
  // follow through WriteData before the next WriteHeader/Finish; other types carry none.
  // `name` must be normalised as NormalizeTarPath returns it (InvalidArgument otherwise);
  // header_offset/payload_offset are ignored. Hardlink targets are names in the archive.
  Status WriteHeader(const TarEntry& entry);
  // Appends payload bytes of the current entry.
  Status WriteData(std::string_view data);
  // WriteHeader + WriteData(data) for small entries; `data.size()` must equal `entry.size`
  // for regular files (the size is taken from `data` when `entry.size` is 0).
  Status Add(TarEntry entry, std::string_view data = {});
  // Pads the last entry and writes the two zero blocks that end the archive.
  Status Finish();

  // Bytes written so far.
  uint64_t offset() const { return offset_; }

 private:
  Status Emit(std::string_view bytes);
  Status ClosePayload();

  Sink sink_;
  Status status_;
  uint64_t offset_ = 0;
  uint64_t payload_left_ = 0;
  uint64_t payload_size_ = 0;
  bool finished_ = false;
};

// A regular file entry with defaults (mode 0644, root-owned, mtime 0).
TarEntry FileEntry(std::string name, uint64_t size, uint32_t mode = 0644);
// A directory entry (mode 0755).
TarEntry DirEntry(std::string name, uint32_t mode = 0755);
// The whiteout for `path` ("a/b" → "a/.wh.b"): an empty regular file, mode 0, mtime 0.
TarEntry WhiteoutEntry(std::string_view path);
// The opaque marker for directory `dir` ("a" → "a/.wh..wh..opq").
TarEntry OpaqueEntry(std::string_view dir);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_TAR_WRITER_H_
