// imgfs — TarReader: see tar_reader.h for the contract.
//
// Format references: POSIX.1-2001 pax (ustar header layout and extended header records),
// GNU tar manual "Basic Tar Format" (././@LongLink 'L'/'K', base-256 numbers, old GNU magic),
// Go archive/tar (what umoci and most image tools write), libarchive (LIBARCHIVE.xattr.*).
#include "registry/tar_reader.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "base/base64.h"

namespace imgfs::registry {
namespace {

constexpr size_t kBlockSize = 512;
// Larger payloads are absurd for one file of an image layer (1 TiB).
constexpr uint64_t kMaxEntrySize = uint64_t{1} << 40;
// Bounds for metadata held in memory: a PAX header or GNU long name/link bigger than this is
// not something a real tool writes (PATH_MAX is 4 KiB, xattrs are at most 64 KiB each).
constexpr uint64_t kMaxPaxSize = 16u << 20;
constexpr uint64_t kMaxLongNameSize = 1u << 20;
constexpr size_t kSkipChunk = 64 * 1024;

// ustar header field offsets and lengths (POSIX.1-2001 "ustar Interchange Format").
struct Field {
  size_t off;
  size_t len;
};
constexpr Field kName{0, 100};
constexpr Field kMode{100, 8};
constexpr Field kUid{108, 8};
constexpr Field kGid{116, 8};
constexpr Field kSize{124, 12};
constexpr Field kMtime{136, 12};
constexpr Field kChksum{148, 8};
constexpr size_t kTypeflag = 156;
constexpr Field kLinkname{157, 100};
constexpr Field kMagic{257, 6};
constexpr Field kVersion{263, 2};
constexpr Field kUname{265, 32};
constexpr Field kGname{297, 32};
constexpr Field kDevmajor{329, 8};
constexpr Field kDevminor{337, 8};
constexpr Field kPrefix{345, 155};

std::string_view FieldView(std::string_view block, Field f) { return block.substr(f.off, f.len); }

// A NUL-terminated (or full-width) string field.
std::string CString(std::string_view block, Field f) {
  std::string_view v = FieldView(block, f);
  size_t nul = v.find('\0');
  return std::string(v.substr(0, nul));
}

// Parses a numeric header field: octal (leading spaces/NULs, terminated by space or NUL) or
// GNU base-256 (first byte 0x80 positive, 0xff negative two's complement).
Result<int64_t> ParseNumber(std::string_view v, std::string_view what) {
  if (!v.empty() && (static_cast<unsigned char>(v[0]) & 0x80) != 0) {
    // Base-256: big-endian two's complement over the field with the marker bit cleared for
    // positive values (0x80 ...) and kept for negative ones (0xff ...).
    const bool negative = static_cast<unsigned char>(v[0]) == 0xff;
    uint64_t x = negative ? ~uint64_t{0} : 0;
    for (size_t i = 0; i < v.size(); ++i) {
      uint8_t b = static_cast<unsigned char>(v[i]);
      if (i == 0 && !negative) b &= 0x7f;
      if ((x >> 56) != (negative ? 0xffu : 0u)) {
        return Status::Corrupt("base-256 " + std::string(what) + " field overflows 64 bits");
      }
      x = (x << 8) | b;
    }
    int64_t result = static_cast<int64_t>(x);
    if (negative != (result < 0)) {
      return Status::Corrupt("base-256 " + std::string(what) + " field overflows 64 bits");
    }
    return result;
  }
  size_t i = 0;
  while (i < v.size() && (v[i] == ' ' || v[i] == '\0')) ++i;
  uint64_t x = 0;
  size_t digits = 0;
  for (; i < v.size() && v[i] != ' ' && v[i] != '\0'; ++i) {
    if (v[i] < '0' || v[i] > '7') {
      return Status::Corrupt("invalid octal digit in " + std::string(what) + " field");
    }
    if (++digits > 21) return Status::Corrupt(std::string(what) + " field overflows");
    x = x * 8 + static_cast<uint64_t>(v[i] - '0');
  }
  // Anything after the terminator must be padding.
  for (; i < v.size(); ++i) {
    if (v[i] != ' ' && v[i] != '\0') {
      return Status::Corrupt("garbage after the number in " + std::string(what) + " field");
    }
  }
  return static_cast<int64_t>(x);
}

Result<int64_t> ParseDecimal(std::string_view v, std::string_view what) {
  bool negative = false;
  if (!v.empty() && v[0] == '-') {
    negative = true;
    v.remove_prefix(1);
  }
  if (v.empty() || v.size() > 19) return Status::Corrupt("invalid PAX " + std::string(what));
  // Up to 2^63 - 1 (2^63 when negative).
  const uint64_t limit = negative ? uint64_t{1} << 63 : (uint64_t{1} << 63) - 1;
  uint64_t x = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return Status::Corrupt("invalid PAX " + std::string(what));
    x = x * 10 + static_cast<uint64_t>(c - '0');  // 19 digits cannot overflow uint64
  }
  if (x > limit) return Status::Corrupt("PAX " + std::string(what) + " out of range");
  return negative ? static_cast<int64_t>(~x + 1) : static_cast<int64_t>(x);
}

// PAX mtime "[-]sec[.frac]" → (sec, nsec) with 0 <= nsec < 1e9, floor semantics ("-1.5" is
// 1.5 s before the epoch: sec -2, nsec 500000000).
Status ParsePaxTime(std::string_view v, int64_t* sec, uint32_t* nsec) {
  bool negative = !v.empty() && v[0] == '-';
  size_t dot = v.find('.');
  std::string_view whole = v.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : v.substr(dot + 1);
  if (whole == "-" || whole.empty()) {
    if (frac.empty()) return Status::Corrupt("invalid PAX mtime '" + std::string(v) + "'");
    whole = negative ? "-0" : "0";
  }
  IMGFS_ASSIGN_OR_RETURN(int64_t s, ParseDecimal(whole, "mtime"));
  uint32_t ns = 0;
  uint32_t scale = 100000000;
  for (char c : frac) {
    if (c < '0' || c > '9') return Status::Corrupt("invalid PAX mtime '" + std::string(v) + "'");
    ns += static_cast<uint32_t>(c - '0') * scale;  // digits beyond nanoseconds are dropped
    scale /= 10;
  }
  if (negative && ns != 0) {
    if (s == INT64_MIN) return Status::Corrupt("PAX mtime out of range");
    s -= 1;
    ns = 1000000000 - ns;
  }
  *sec = s;
  *nsec = ns;
  return Status::Ok();
}

Result<std::string> PercentDecode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) {
      return Status::Corrupt("invalid %-escape in LIBARCHIVE.xattr name");
    }
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = hex(in[i + 1]);
    int lo = hex(in[i + 2]);
    if (hi < 0 || lo < 0) return Status::Corrupt("invalid %-escape in LIBARCHIVE.xattr name");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// Parses PAX extended header records "<len> <key>=<value>\n" into `out` (later records win).
Status ParsePaxRecords(std::string_view data, std::map<std::string, std::string>* out) {
  while (!data.empty()) {
    // Some writers pad the payload with NULs.
    if (data[0] == '\0') break;
    size_t sp = data.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp > 20) {
      return Status::Corrupt("malformed PAX record (no length)");
    }
    uint64_t len = 0;
    for (size_t i = 0; i < sp; ++i) {
      if (data[i] < '0' || data[i] > '9') return Status::Corrupt("malformed PAX record length");
      len = len * 10 + static_cast<uint64_t>(data[i] - '0');
    }
    if (len <= sp + 1 || len > data.size() || data[len - 1] != '\n') {
      return Status::Corrupt("malformed PAX record (bad length)");
    }
    std::string_view record = data.substr(sp + 1, len - sp - 2);
    size_t eq = record.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return Status::Corrupt("malformed PAX record (no key)");
    }
    (*out)[std::string(record.substr(0, eq))] = std::string(record.substr(eq + 1));
    data.remove_prefix(len);
  }
  return Status::Ok();
}

bool AllZero(std::string_view block) {
  return std::all_of(block.begin(), block.end(), [](char c) { return c == '\0'; });
}

// Verifies the header checksum (unsigned or signed byte sum, checksum field as spaces).
Status VerifyChecksum(std::string_view block, uint64_t offset) {
  Result<int64_t> stored = ParseNumber(FieldView(block, kChksum), "checksum");
  if (!stored.has_value()) {
    return Status::Corrupt("not a tar header at offset " + std::to_string(offset) + ": " +
                           stored.error().message());
  }
  int64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (size_t i = 0; i < kBlockSize; ++i) {
    if (i >= kChksum.off && i < kChksum.off + kChksum.len) {
      unsigned_sum += ' ';
      signed_sum += ' ';
    } else {
      unsigned_sum += static_cast<unsigned char>(block[i]);
      signed_sum += static_cast<signed char>(block[i]);
    }
  }
  if (*stored != unsigned_sum && *stored != signed_sum) {
    return Status::Corrupt("tar header checksum mismatch at offset " + std::to_string(offset));
  }
  return Status::Ok();
}

std::string Quote(std::string_view name) {
  std::string out = "'";
  for (char c : name.substr(0, 256)) {
    if (c == '\0') {
      out += "\\0";
    } else {
      out.push_back(c);
    }
  }
  if (name.size() > 256) out += "...";
  return out + "'";
}

// Trailing NULs of a GNU long name/link payload are terminators.
std::string TrimNuls(std::string s) {
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

}  // namespace

Result<uint64_t> TarInput::Skip(uint64_t n) {
  uint64_t done = 0;
  while (done < n) {
    IMGFS_ASSIGN_OR_RETURN(std::string chunk,
                           Read(static_cast<size_t>(std::min<uint64_t>(n - done, kSkipChunk))));
    if (chunk.empty()) break;
    done += chunk.size();
  }
  return done;
}

Result<std::string> StringTarInput::Read(size_t n) {
  n = std::min(n, data_.size() - pos_);
  std::string out(data_.substr(pos_, n));
  pos_ += n;
  return out;
}

Result<uint64_t> StringTarInput::Skip(uint64_t n) {
  uint64_t k = std::min<uint64_t>(n, data_.size() - pos_);
  pos_ += static_cast<size_t>(k);
  return k;
}

Result<std::string> FdTarInput::Read(size_t n) {
  n = static_cast<size_t>(std::min<uint64_t>(n, end_ - pos_));
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd_, out.data() + got, n - got, static_cast<off_t>(pos_ + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pread tar input at offset " + std::to_string(pos_ + got));
    }
    if (r == 0) break;  // the file is shorter than announced
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  pos_ += got;
  return out;
}

Result<uint64_t> FdTarInput::Skip(uint64_t n) {
  uint64_t k = std::min<uint64_t>(n, end_ - pos_);
  pos_ += k;
  return k;
}

TarReader::TarReader(TarInput* input) : input_(input) {}

Result<std::string> TarReader::ReadExact(size_t n) {
  std::string out;
  while (out.size() < n) {
    IMGFS_ASSIGN_OR_RETURN(std::string chunk, input_->Read(n - out.size()));
    if (chunk.empty()) break;
    if (chunk.size() > n - out.size()) return Status::Internal("TarInput returned too many bytes");
    if (out.empty()) {
      out = std::move(chunk);
    } else {
      out += chunk;
    }
  }
  offset_ += out.size();
  return out;
}

Status TarReader::Skip(uint64_t n) {
  uint64_t done = 0;
  while (done < n) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t k, input_->Skip(n - done));
    if (k == 0) break;
    done += k;
    offset_ += k;
  }
  if (done < n) {
    return Status::Corrupt("truncated tar: unexpected end of archive at offset " +
                           std::to_string(offset_) + " in entry " + Quote(current_name_));
  }
  return Status::Ok();
}

Result<std::optional<TarEntry>> TarReader::Next() {
  if (done_) return std::optional<TarEntry>();
  Result<std::optional<TarEntry>> r = NextImpl();
  if (!r.has_value()) done_ = true;  // an archive is not read past its first error
  return r;
}

Result<std::optional<TarEntry>> TarReader::NextImpl() {
  IMGFS_RETURN_IF_ERROR(Skip(payload_left_ + padding_left_));
  payload_left_ = 0;
  padding_left_ = 0;
  current_name_.clear();

  std::map<std::string, std::string> pax;
  bool have_pax = false;
  std::optional<std::string> long_name;
  std::optional<std::string> long_link;
  uint64_t pending_bytes = 0;        // kMaxPendingHeaderBytes
  uint64_t header_offset = offset_;  // global headers and volume labels are not part of it
  const std::optional<uint64_t> archive_size = input_->Size();

  while (true) {
    const uint64_t block_offset = offset_;
    IMGFS_ASSIGN_OR_RETURN(std::string block, ReadExact(kBlockSize));
    const bool pending = have_pax || long_name || long_link;
    if (block.empty()) {
      if (pending) {
        return Status::Corrupt("truncated tar: archive ends after an extended header at offset " +
                               std::to_string(block_offset));
      }
      done_ = true;  // no end-of-archive blocks: accepted
      return std::optional<TarEntry>();
    }
    if (block.size() < kBlockSize) {
      return Status::Corrupt("truncated tar: partial header at offset " +
                             std::to_string(block_offset));
    }
    if (AllZero(block)) {
      if (pending) {
        return Status::Corrupt(
            "tar: end-of-archive marker right after an extended header at offset " +
            std::to_string(block_offset));
      }
      // End of archive. Consume the second zero block if present; ignore any padding after.
      IMGFS_ASSIGN_OR_RETURN(std::string second, ReadExact(kBlockSize));
      (void)second;
      done_ = true;
      return std::optional<TarEntry>();
    }
    IMGFS_RETURN_IF_ERROR(VerifyChecksum(block, block_offset));

    const std::string_view magic = FieldView(block, kMagic);
    const bool is_ustar = magic == std::string_view("ustar\0", 6) &&
                          FieldView(block, kVersion) == std::string_view("00", 2);
    const bool is_gnu = magic == std::string_view("ustar ", 6);
    (void)is_gnu;

    std::string raw_name = CString(block, kName);
    if (is_ustar) {
      std::string prefix = CString(block, kPrefix);
      if (!prefix.empty()) raw_name = prefix + "/" + raw_name;
    }
    current_name_ = long_name ? *long_name : raw_name;
    auto context = [&](const Status& s) {
      return s.WithContext("tar entry " + Quote(current_name_) + " at offset " +
                           std::to_string(block_offset));
    };

    Result<int64_t> size_r = ParseNumber(FieldView(block, kSize), "size");
    if (!size_r.has_value()) return context(size_r.error());
    int64_t size = *size_r;
    if (auto it = pax.find("size"); it != pax.end()) {
      Result<int64_t> s = ParseDecimal(it->second, "size");
      if (!s.has_value()) return context(s.error());
      size = *s;
    }
    if (size < 0 || static_cast<uint64_t>(size) > kMaxEntrySize) {
      return context(Status::Corrupt("absurd size " + std::to_string(size)));
    }
    const uint64_t payload_offset = offset_;
    if (archive_size &&
        static_cast<uint64_t>(size) > *archive_size - std::min(*archive_size, payload_offset)) {
      return context(Status::Corrupt("size " + std::to_string(size) + " runs past the end of the " +
                                     "archive (" + std::to_string(*archive_size) + " bytes)"));
    }
    const uint64_t usize = static_cast<uint64_t>(size);
    const uint64_t padding = (kBlockSize - usize % kBlockSize) % kBlockSize;
    const char typeflag = block[kTypeflag];

    // Extended headers that describe the next entry.
    if (typeflag == 'x' || typeflag == 'g' || typeflag == 'L' || typeflag == 'K') {
      const uint64_t limit = (typeflag == 'x' || typeflag == 'g') ? kMaxPaxSize : kMaxLongNameSize;
      if (usize > limit) {
        return context(Status::Corrupt(std::string("extended header of ") + std::to_string(usize) +
                                       " bytes is too large"));
      }
      if (typeflag != 'g') {
        pending_bytes += usize;
        if (pending_bytes > kMaxPendingHeaderBytes) {
          return context(Status::Corrupt("extended headers of one entry exceed " +
                                         std::to_string(kMaxPendingHeaderBytes) +
                                         " bytes (kMaxPendingHeaderBytes)"));
        }
      }
      IMGFS_ASSIGN_OR_RETURN(std::string data, ReadExact(static_cast<size_t>(usize)));
      if (data.size() < usize) {
        return context(Status::Corrupt("truncated tar: extended header payload ends at offset " +
                                       std::to_string(offset_)));
      }
      IMGFS_RETURN_IF_ERROR(Skip(padding));
      if (typeflag == 'x') {
        Status st = ParsePaxRecords(data, &pax);
        if (!st.ok()) return context(st);
        have_pax = true;
      } else if (typeflag == 'g') {
        std::map<std::string, std::string> g;
        Status st = ParsePaxRecords(data, &g);
        if (!st.ok()) return context(st);
        for (auto& [k, v] : g) {
          if (k.rfind("SCHILY.xattr.", 0) == 0 || k.rfind("LIBARCHIVE.xattr.", 0) == 0) {
            return context(Status::Corrupt(
                "global PAX header carries xattr record " + Quote(k) +
                " (xattrs are per file; a global one would be copied into every entry)"));
          }
          if (v.empty()) {
            global_pax_.erase(k);
          } else {
            global_pax_[k] = v;
          }
        }
        uint64_t global_bytes = 0;
        for (const auto& [k, v] : global_pax_) global_bytes += k.size() + v.size();
        if (global_bytes > kMaxGlobalPaxBytes) {
          return context(Status::Corrupt("global PAX attributes exceed " +
                                         std::to_string(kMaxGlobalPaxBytes) +
                                         " bytes (kMaxGlobalPaxBytes)"));
        }
        if (!pending) header_offset = offset_;
      } else if (typeflag == 'L') {
        long_name = TrimNuls(std::move(data));
      } else {
        long_link = TrimNuls(std::move(data));
      }
      continue;
    }
    if (typeflag == 'V') {  // GNU volume label: not a file
      IMGFS_RETURN_IF_ERROR(Skip(usize + padding));
      if (!pending) header_offset = offset_;
      continue;
    }
    if (typeflag == 'S') {
      return context(Status::Unsupported("GNU sparse files are not supported"));
    }

    // Effective attributes: global PAX, then per-entry PAX (an empty value unsets a key).
    std::map<std::string, std::string> attrs = global_pax_;
    for (auto& [k, v] : pax) {
      if (v.empty() && k.rfind("SCHILY.xattr.", 0) != 0) {
        attrs.erase(k);
      } else {
        attrs[k] = v;
      }
    }
    for (const auto& [k, v] : attrs) {
      if (k.rfind("GNU.sparse.", 0) == 0) {
        return context(Status::Unsupported("GNU sparse files are not supported"));
      }
    }

    TarEntry e;
    std::string name = long_name ? *long_name : raw_name;
    if (auto it = attrs.find("path"); it != attrs.end()) name = it->second;
    current_name_ = name;
    if (name.empty()) return context(Status::Corrupt("empty entry name"));
    const bool trailing_slash = name.back() == '/';
    Result<std::string> norm = NormalizeTarPath(name);
    if (!norm.has_value()) return context(norm.error());
    e.name = std::move(*norm);
    current_name_ = e.name;

    switch (typeflag) {
      case '0':
      case '7':
        e.type = TarEntryType::kRegular;
        break;
      case '\0':
        // Pre-POSIX tars mark directories only by the trailing slash.
        e.type = trailing_slash ? TarEntryType::kDirectory : TarEntryType::kRegular;
        break;
      case '1':
        e.type = TarEntryType::kHardlink;
        break;
      case '2':
        e.type = TarEntryType::kSymlink;
        break;
      case '3':
        e.type = TarEntryType::kChar;
        break;
      case '4':
        e.type = TarEntryType::kBlock;
        break;
      case '5':
      case 'D':
        e.type = TarEntryType::kDirectory;
        break;
      case '6':
        e.type = TarEntryType::kFifo;
        break;
      default:
        e.type = TarEntryType::kRegular;  // POSIX: unknown types are read as regular files
        break;
    }

    Result<int64_t> mode = ParseNumber(FieldView(block, kMode), "mode");
    if (!mode.has_value()) return context(mode.error());
    e.mode = static_cast<uint32_t>(*mode & 07777);

    auto id_field = [&](Field f, const char* key, uint32_t* out) -> Status {
      Result<int64_t> v = ParseNumber(FieldView(block, f), key);
      if (!v.has_value()) return v.error();
      int64_t x = *v;
      if (auto it = attrs.find(key); it != attrs.end()) {
        Result<int64_t> p = ParseDecimal(it->second, key);
        if (!p.has_value()) return p.error();
        x = *p;
      }
      if (x < 0 || x > 0xffffffffLL) {
        return Status::Corrupt(std::string(key) + " " + std::to_string(x) + " out of range");
      }
      *out = static_cast<uint32_t>(x);
      return Status::Ok();
    };
    if (Status st = id_field(kUid, "uid", &e.uid); !st.ok()) return context(st);
    if (Status st = id_field(kGid, "gid", &e.gid); !st.ok()) return context(st);

    e.uname = CString(block, kUname);
    e.gname = CString(block, kGname);
    if (auto it = attrs.find("uname"); it != attrs.end()) e.uname = it->second;
    if (auto it = attrs.find("gname"); it != attrs.end()) e.gname = it->second;

    Result<int64_t> mtime = ParseNumber(FieldView(block, kMtime), "mtime");
    if (!mtime.has_value()) return context(mtime.error());
    e.mtime_sec = *mtime;
    if (auto it = attrs.find("mtime"); it != attrs.end()) {
      Status st = ParsePaxTime(it->second, &e.mtime_sec, &e.mtime_nsec);
      if (!st.ok()) return context(st);
    }

    std::string link = long_link ? *long_link : CString(block, kLinkname);
    if (auto it = attrs.find("linkpath"); it != attrs.end()) link = it->second;
    if (link.find('\0') != std::string::npos) {
      return context(Status::Corrupt("link target contains a NUL byte"));
    }
    if (e.type == TarEntryType::kHardlink) {
      if (link.empty()) return context(Status::Corrupt("hardlink without a target"));
      Result<std::string> t = NormalizeTarPath(link);
      if (!t.has_value()) return context(t.error().WithContext("hardlink target"));
      e.link_target = std::move(*t);
    } else if (e.type == TarEntryType::kSymlink) {
      e.link_target = std::move(link);
    }

    if (e.type == TarEntryType::kChar || e.type == TarEntryType::kBlock) {
      Result<int64_t> major = ParseNumber(FieldView(block, kDevmajor), "devmajor");
      if (!major.has_value()) return context(major.error());
      Result<int64_t> minor = ParseNumber(FieldView(block, kDevminor), "devminor");
      if (!minor.has_value()) return context(minor.error());
      if (*major < 0 || *major > 0xffffffffLL || *minor < 0 || *minor > 0xffffffffLL) {
        return context(Status::Corrupt("device number out of range"));
      }
      e.dev_major = static_cast<uint32_t>(*major);
      e.dev_minor = static_cast<uint32_t>(*minor);
    }

    for (const auto& [k, v] : attrs) {
      if (k.rfind("SCHILY.xattr.", 0) == 0) {
        std::string xname = k.substr(13);
        if (xname.empty()) return context(Status::Corrupt("empty xattr name"));
        e.xattrs[xname] = v;
      } else if (k.rfind("LIBARCHIVE.xattr.", 0) == 0) {
        Result<std::string> xname = PercentDecode(std::string_view(k).substr(17));
        if (!xname.has_value()) return context(xname.error());
        if (xname->empty()) return context(Status::Corrupt("empty xattr name"));
        Result<std::string> value = DecodeBase64(v);
        if (!value.has_value()) return context(value.error());
        // SCHILY wins when both are present (they carry the same value).
        e.xattrs.emplace(std::move(*xname), std::move(*value));
      }
    }

    if (e.xattrs.size() > kMaxXattrsPerEntry) {
      return context(Status::Corrupt(std::to_string(e.xattrs.size()) + " xattrs, more than " +
                                     std::to_string(kMaxXattrsPerEntry) + " (kMaxXattrsPerEntry)"));
    }
    uint64_t entry_xattr_bytes = 0;
    for (const auto& [xname, value] : e.xattrs) {
      if (xname.size() > kMaxXattrNameBytes) {
        return context(Status::Corrupt("xattr name of " + std::to_string(xname.size()) +
                                       " bytes, longer than " + std::to_string(kMaxXattrNameBytes) +
                                       " (kMaxXattrNameBytes, Linux XATTR_NAME_MAX)"));
      }
      if (value.size() > kMaxXattrValueBytes) {
        return context(Status::Corrupt("xattr " + Quote(xname) + " has a value of " +
                                       std::to_string(value.size()) + " bytes, more than " +
                                       std::to_string(kMaxXattrValueBytes) +
                                       " (kMaxXattrValueBytes, Linux XATTR_SIZE_MAX)"));
      }
      entry_xattr_bytes += xname.size() + value.size();
    }
    xattr_bytes_ += entry_xattr_bytes;
    if (xattr_bytes_ > kMaxXattrBytesPerArchive) {
      return context(Status::Corrupt("xattrs of the archive exceed " +
                                     std::to_string(kMaxXattrBytesPerArchive) +
                                     " bytes (kMaxXattrBytesPerArchive)"));
    }
    metadata_bytes_ += e.name.size() + e.link_target.size() + entry_xattr_bytes;
    if (metadata_bytes_ > kMaxMetadataBytesPerArchive) {
      return context(Status::Corrupt("names, link targets and xattrs of the archive exceed " +
                                     std::to_string(kMaxMetadataBytesPerArchive) +
                                     " bytes (kMaxMetadataBytesPerArchive)"));
    }

    e.header_offset = header_offset;
    e.payload_offset = payload_offset;
    e.size = e.type == TarEntryType::kRegular ? usize : 0;
    payload_left_ = usize;
    padding_left_ = padding;
    return std::optional<TarEntry>(std::move(e));
  }
}

Result<std::string> TarReader::ReadPayload(size_t n) {
  n = static_cast<size_t>(std::min<uint64_t>(n, payload_left_));
  if (n == 0) return std::string();
  IMGFS_ASSIGN_OR_RETURN(std::string data, ReadExact(n));
  payload_left_ -= data.size();
  if (data.size() < n) {
    done_ = true;
    return Status::Corrupt("truncated tar: unexpected end of archive at offset " +
                           std::to_string(offset_) + " in the payload of entry " +
                           Quote(current_name_));
  }
  return data;
}

Result<std::string> NormalizeTarPath(std::string_view name) {
  if (name.find('\0') != std::string_view::npos) {
    return Status::Corrupt("name " + Quote(name) + " contains a NUL byte");
  }
  std::string_view rest = name;
  // A leading "./" (or "." alone) is relative to the root; a leading "/" is not allowed.
  if (!rest.empty() && rest[0] == '/') {
    return Status::Corrupt("name " + Quote(name) + " is an absolute path");
  }
  std::vector<std::string_view> parts;
  while (!rest.empty()) {
    size_t slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (parts.empty()) {
        return Status::Corrupt("name " + Quote(name) + " escapes the root with '..'");
      }
      parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out.push_back('/');
    out.append(p);
  }
  return out;
}

}  // namespace imgfs::registry
