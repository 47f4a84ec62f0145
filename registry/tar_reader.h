// imgfs — TarReader: a streaming reader of tar archives as found in image layers and
// `docker save` archives.
//
// Formats: ustar, GNU (././@LongLink long names 'L' and long link targets 'K', base-256
// numeric fields), PAX ('x' per-entry and 'g' global headers: path, linkpath, size, uid, gid,
// uname, gname, mtime with sub-second precision and negative values, SCHILY.xattr.*,
// LIBARCHIVE.xattr.* (base64)), old v7 headers. Entry types: regular ('0' and '\0',
// contiguous '7'), hardlink '1', symlink '2', char '3', block '4', dir '5', fifo '6'.
//
// Names are normalised: "./a", "a/", "a//b" → "a", "a/b"; the root itself ("." or "./") is
// the empty name "". A name or link target containing NUL, a name that is absolute after
// normalisation or has a ".." component that escapes the root is rejected (Corrupt, message
// names the entry). Absurd sizes (negative, > 2^40, or beyond the archive when the archive
// size is known) are rejected. A truncated archive (EOF inside a header or payload) is
// Corrupt; an archive ending without the two zero blocks is accepted (many tools do that),
// and trailing padding/zero blocks after the end are ignored.
//
// The reader pulls bytes from a TarInput and reports each entry with the absolute offset of
// its payload inside the uncompressed stream (what layer indexes record). Payload bytes may
// be consumed through ReadPayload; any unread payload is skipped on the next Next().
//
// Header checksums are verified (the sum of the header bytes with the checksum field read as
// spaces, as unsigned or as signed bytes: old Sun tars used signed sums). Unknown typeflags
// are read as regular files (POSIX), GNU 'D' dump directories as directories, GNU volume
// labels 'V' are skipped; GNU sparse files ('S' or GNU.sparse.* PAX keys) are Unsupported.
//
// Bounded memory for any archive (issue 9): what the reader keeps between blocks is capped
// by the limits below, so a few-MB gzip layer cannot make it (or an index built from it)
// hold gigabytes. Each limit, when exceeded, is a Corrupt status naming the limit:
//  - the extended headers ('x', 'L', 'K') pending for one entry, all together;
//  - the global ('g') attributes in effect, which are applied to every later entry;
//    xattrs (SCHILY.xattr.*, LIBARCHIVE.xattr.*) in a global header are refused outright:
//    no tool writes them there (GNU tar, bsdtar and Go's archive/tar write xattrs per file),
//    and honouring them would copy one value into every entry of the layer;
//  - xattrs of one entry: count, name and value length (Linux's XATTR_NAME_MAX and
//    XATTR_SIZE_MAX, so nothing is accepted that Linux could not hold);
//  - xattr bytes, and name + link target + xattr bytes, of the whole archive.
//
// Thread-safety: one reader per thread.
#ifndef IMGFS_REGISTRY_TAR_READER_H_
#define IMGFS_REGISTRY_TAR_READER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace imgfs::registry {

// Bytes of the extended headers ('x' PAX records, GNU 'L'/'K' long names) that describe one
// entry, summed over a chain of them. 16 MiB: a path (PATH_MAX 4 KiB), a link target and
// the entry's xattrs (at most kMaxXattrsPerEntry × 64 KiB) fit many times over.
inline constexpr uint64_t kMaxPendingHeaderBytes = 16u << 20;
// Bytes (keys + values) of the global PAX attributes in effect. Real archives carry a
// `comment` (git archive's commit id) or nothing; 64 KiB is generous and bounds the copy
// every later entry starts from.
inline constexpr uint64_t kMaxGlobalPaxBytes = 64u << 10;
// Xattrs of one entry. Real files carry a handful (security.capability, security.selinux,
// user.*); 256 leaves room while bounding the per-entry map.
inline constexpr size_t kMaxXattrsPerEntry = 256;
// Longest xattr name and value: Linux XATTR_NAME_MAX (255) and XATTR_SIZE_MAX (64 KiB).
inline constexpr size_t kMaxXattrNameBytes = 255;
inline constexpr size_t kMaxXattrValueBytes = 64u << 10;
// Xattr bytes (names + values) of all entries of one archive: what a layer index holds for
// them. 64 MiB: a million files with a 40-byte SELinux label each need 60 MB.
inline constexpr uint64_t kMaxXattrBytesPerArchive = 64u << 20;
// Names, link targets and xattr bytes of all entries of one archive (a layer index holds
// them all). 256 MiB: a million entries with 200-byte paths need a fifth of it.
inline constexpr uint64_t kMaxMetadataBytesPerArchive = 256u << 20;

// A source of the uncompressed tar stream. Read returns up to `n` bytes, "" at end of stream.
class TarInput {
 public:
  virtual ~TarInput() = default;
  virtual Result<std::string> Read(size_t n) = 0;
  // Discards up to `n` bytes and returns how many were discarded (< n only at end of stream).
  // The default reads and drops; inputs that can seek override it.
  virtual Result<uint64_t> Skip(uint64_t n);
  // Total length of the stream when it is known (then sizes beyond it are rejected early).
  virtual std::optional<uint64_t> Size() const { return std::nullopt; }
};

// A TarInput over bytes in memory (not owned; must outlive the reader).
class StringTarInput : public TarInput {
 public:
  explicit StringTarInput(std::string_view data) : data_(data) {}
  Result<std::string> Read(size_t n) override;
  Result<uint64_t> Skip(uint64_t n) override;
  std::optional<uint64_t> Size() const override { return data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// A TarInput over [offset, offset + length) of an open file, read with pread(2) (the fd is
// not owned and must outlive the input). Skip only moves the position.
class FdTarInput : public TarInput {
 public:
  FdTarInput(int fd, uint64_t offset, uint64_t length)
      : fd_(fd), begin_(offset), end_(offset + length), pos_(offset) {}
  Result<std::string> Read(size_t n) override;
  Result<uint64_t> Skip(uint64_t n) override;
  std::optional<uint64_t> Size() const override { return end_ - begin_; }

 private:
  int fd_;
  uint64_t begin_;
  uint64_t end_;
  uint64_t pos_;
};

enum class TarEntryType { kRegular, kHardlink, kSymlink, kChar, kBlock, kDirectory, kFifo };

struct TarEntry {
  std::string name;  // normalised, no leading "/" or "./", no trailing "/"; "" = root
  TarEntryType type = TarEntryType::kRegular;
  uint32_t mode = 0;  // permission bits incl. setuid/setgid/sticky (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string uname;
  std::string gname;
  uint64_t size = 0;        // payload size (regular files only; 0 otherwise)
  int64_t mtime_sec = 0;    // may be negative
  uint32_t mtime_nsec = 0;  // from PAX mtime
  std::string link_target;  // symlink target verbatim; hardlink target normalised like name
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::map<std::string, std::string> xattrs;  // name → raw value bytes
  uint64_t header_offset = 0;   // offset of the first header block of this entry (incl. PAX/GNU)
  uint64_t payload_offset = 0;  // offset of the payload in the uncompressed stream
};

class TarReader {
 public:
  // `input` is not owned and must outlive the reader.
  explicit TarReader(TarInput* input);

  // Advances to the next entry. Returns nullopt at the end of the archive.
  Result<std::optional<TarEntry>> Next();

  // Reads up to `n` bytes of the current entry's remaining payload ("" when exhausted).
  Result<std::string> ReadPayload(size_t n);

  // Offset just past everything consumed so far (end of archive after Next() → nullopt).
  uint64_t offset() const { return offset_; }

 private:
  Result<std::string> ReadExact(size_t n);
  Status Skip(uint64_t n);
  Result<std::optional<TarEntry>> NextImpl();

  std::string current_name_;  // for error messages about the current payload

  TarInput* input_;
  uint64_t offset_ = 0;
  uint64_t payload_left_ = 0;
  uint64_t padding_left_ = 0;
  std::map<std::string, std::string> global_pax_;
  uint64_t xattr_bytes_ = 0;     // kMaxXattrBytesPerArchive
  uint64_t metadata_bytes_ = 0;  // kMaxMetadataBytesPerArchive
  bool done_ = false;
};

// Normalises a tar member name as described above. Corrupt for NUL bytes or escapes.
Result<std::string> NormalizeTarPath(std::string_view name);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_TAR_READER_H_
