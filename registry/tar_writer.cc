// imgfs — TarWriter: see tar_writer.h for the contract.
#include "registry/tar_writer.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace imgfs::registry {
namespace {

constexpr size_t kBlockSize = 512;
// Largest values the ustar octal fields hold (POSIX.1-2001 ustar: 7 digits for ids and device
// numbers, 11 for size and mtime).
constexpr uint64_t kMaxOctal7 = 07777777;
constexpr uint64_t kMaxOctal11 = 077777777777;

void PutOctal(std::string* b, size_t off, size_t len, uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(len - 1),
                static_cast<unsigned long long>(v));
  b->replace(off, len - 1, buf, len - 1);
  (*b)[off + len - 1] = '\0';
}

void PutString(std::string* b, size_t off, size_t len, std::string_view s) {
  b->replace(off, std::min(len, s.size()), s.substr(0, len));
}

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80 && c != '\0'; });
}

std::string PaxRecord(std::string_view key, std::string_view value) {
  const size_t base = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t len = base + 1;
  while (std::to_string(len).size() + base != len) ++len;
  std::string r = std::to_string(len);
  r += ' ';
  r += key;
  r += '=';
  r += value;
  r += '\n';
  return r;
}

// Splits `name` into ustar prefix (≤155) and name (≤100) at a '/'; false if impossible.
bool SplitUstarName(std::string_view name, std::string* prefix, std::string* rest) {
  if (name.size() <= 100) {
    prefix->clear();
    *rest = std::string(name);
    return true;
  }
  if (name.size() > 256) return false;
  for (size_t i = name.size() > 101 ? name.size() - 101 : 0; i < name.size() && i <= 155; ++i) {
    if (name[i] != '/') continue;
    if (name.size() - i - 1 > 100 || name.size() - i - 1 == 0) continue;
    *prefix = std::string(name.substr(0, i));
    *rest = std::string(name.substr(i + 1));
    return true;
  }
  return false;
}

char TypeFlag(TarEntryType t) {
  switch (t) {
    case TarEntryType::kRegular:
      return '0';
    case TarEntryType::kHardlink:
      return '1';
    case TarEntryType::kSymlink:
      return '2';
    case TarEntryType::kChar:
      return '3';
    case TarEntryType::kBlock:
      return '4';
    case TarEntryType::kDirectory:
      return '5';
    case TarEntryType::kFifo:
      return '6';
  }
  return '0';
}

// A ustar header block with the checksum filled in.
std::string UstarHeader(std::string_view name, std::string_view prefix, char type, uint32_t mode,
                        uint64_t uid, uint64_t gid, uint64_t size, uint64_t mtime,
                        std::string_view link, std::string_view uname, std::string_view gname,
                        uint32_t dev_major, uint32_t dev_minor) {
  std::string b(kBlockSize, '\0');
  PutString(&b, 0, 100, name);
  PutOctal(&b, 100, 8, mode & 07777);
  PutOctal(&b, 108, 8, uid);
  PutOctal(&b, 116, 8, gid);
  PutOctal(&b, 124, 12, size);
  PutOctal(&b, 136, 12, mtime);
  b[156] = type;
  PutString(&b, 157, 100, link);
  b.replace(257, 6, "ustar\0", 6);
  b.replace(263, 2, "00");
  PutString(&b, 265, 32, uname);
  PutString(&b, 297, 32, gname);
  if (type == '3' || type == '4') {
    PutOctal(&b, 329, 8, dev_major);
    PutOctal(&b, 337, 8, dev_minor);
  }
  PutString(&b, 345, 155, prefix);
  b.replace(148, 8, "        ");
  uint64_t sum = 0;
  for (char c : b) sum += static_cast<unsigned char>(c);
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06llo", static_cast<unsigned long long>(sum));
  b.replace(148, 6, buf, 6);
  b[154] = '\0';
  b[155] = ' ';
  return b;
}

std::string FormatPaxTime(int64_t sec, uint32_t nsec) {
  // Floor representation (sec, nsec ≥ 0) → decimal "[-]S[.F]".
  std::string out;
  if (sec < 0 && nsec != 0) {
    // value = sec + nsec/1e9 = -(|sec| - 1) - (1e9 - nsec)/1e9
    out = "-" + std::to_string(-(sec + 1));
    nsec = 1000000000 - nsec;
  } else {
    out = std::to_string(sec);
  }
  if (nsec != 0) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%09u", nsec);
    std::string frac(buf);
    while (!frac.empty() && frac.back() == '0') frac.pop_back();
    out += "." + frac;
  }
  return out;
}

std::string BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

}  // namespace

TarWriter::TarWriter(Sink sink) : sink_(std::move(sink)) {}

TarWriter::TarWriter(std::string* out)
    : sink_([out](std::string_view bytes) {
        out->append(bytes);
        return Status::Ok();
      }) {}

Status TarWriter::Emit(std::string_view bytes) {
  if (!status_.ok()) return status_;
  status_ = sink_(bytes);
  if (status_.ok()) offset_ += bytes.size();
  return status_;
}

Status TarWriter::ClosePayload() {
  if (!status_.ok()) return status_;
  if (payload_left_ != 0) {
    status_ = Status::InvalidArgument("tar writer: entry payload is " +
                                      std::to_string(payload_left_) + " bytes short");
    return status_;
  }
  const uint64_t pad = (kBlockSize - payload_size_ % kBlockSize) % kBlockSize;
  payload_size_ = 0;
  if (pad != 0) return Emit(std::string(pad, '\0'));
  return Status::Ok();
}

Status TarWriter::WriteHeader(const TarEntry& entry) {
  if (finished_) return Status::InvalidArgument("tar writer: WriteHeader after Finish");
  IMGFS_RETURN_IF_ERROR(ClosePayload());
  auto fail = [&](std::string msg) {
    status_ = Status::InvalidArgument("tar writer: entry '" + entry.name + "': " + msg);
    return status_;
  };
  Result<std::string> norm = NormalizeTarPath(entry.name);
  if (!norm.has_value() || *norm != entry.name) return fail("name is not normalised");
  if (entry.type == TarEntryType::kHardlink) {
    Result<std::string> t = NormalizeTarPath(entry.link_target);
    if (!t.has_value() || *t != entry.link_target || t->empty()) {
      return fail("hardlink target is not a normalised name");
    }
  }
  if (entry.link_target.find('\0') != std::string::npos) return fail("link target has a NUL");
  if (entry.mtime_nsec >= 1000000000) return fail("mtime_nsec out of range");
  if (entry.dev_major > kMaxOctal7 || entry.dev_minor > kMaxOctal7) {
    return fail("device number does not fit ustar");
  }

  std::string name = entry.name;
  if (entry.type == TarEntryType::kDirectory) name = name.empty() ? "./" : name + "/";
  if (name.empty()) return fail("only a directory may be the root");
  const bool has_payload = entry.type == TarEntryType::kRegular;
  const uint64_t size = has_payload ? entry.size : 0;
  const bool has_link =
      entry.type == TarEntryType::kHardlink || entry.type == TarEntryType::kSymlink;
  const std::string link = has_link ? entry.link_target : std::string();

  std::map<std::string, std::string> pax;  // sorted: deterministic
  std::string prefix;
  std::string short_name;
  if (!IsAscii(name) || !SplitUstarName(name, &prefix, &short_name)) {
    pax["path"] = name;
    prefix.clear();
    short_name = name.substr(0, 100);
  }
  if (link.size() > 100 || !IsAscii(link)) pax["linkpath"] = link;
  if (entry.uid > kMaxOctal7) pax["uid"] = std::to_string(entry.uid);
  if (entry.gid > kMaxOctal7) pax["gid"] = std::to_string(entry.gid);
  if (size > kMaxOctal11) pax["size"] = std::to_string(size);
  if (entry.mtime_sec < 0 || static_cast<uint64_t>(entry.mtime_sec) > kMaxOctal11 ||
      entry.mtime_nsec != 0) {
    pax["mtime"] = FormatPaxTime(entry.mtime_sec, entry.mtime_nsec);
  }
  if (entry.uname.size() > 31 || !IsAscii(entry.uname)) pax["uname"] = entry.uname;
  if (entry.gname.size() > 31 || !IsAscii(entry.gname)) pax["gname"] = entry.gname;
  for (const auto& [k, v] : entry.xattrs) {
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
      return fail("invalid xattr name");
    }
    pax["SCHILY.xattr." + k] = v;
  }

  if (!pax.empty()) {
    std::string records;
    for (const auto& [k, v] : pax) records += PaxRecord(k, v);
    // Fixed name (like Go archive/tar's "PaxHeaders.0/<base>") keeps the output deterministic.
    std::string base = BaseName(entry.name.empty() ? "root" : entry.name);
    std::string pax_name = ("PaxHeaders.0/" + base).substr(0, 100);
    std::string hdr =
        UstarHeader(pax_name, "", 'x', 0644, 0, 0, records.size(), 0, "", "", "", 0, 0);
    IMGFS_RETURN_IF_ERROR(Emit(hdr));
    records.resize((records.size() + kBlockSize - 1) / kBlockSize * kBlockSize, '\0');
    IMGFS_RETURN_IF_ERROR(Emit(records));
  }

  const uint64_t mtime_field = entry.mtime_sec < 0 ? 0
                               : static_cast<uint64_t>(entry.mtime_sec) > kMaxOctal11
                                   ? kMaxOctal11
                                   : static_cast<uint64_t>(entry.mtime_sec);
  std::string hdr = UstarHeader(
      short_name, prefix, TypeFlag(entry.type), entry.mode, entry.uid > kMaxOctal7 ? 0 : entry.uid,
      entry.gid > kMaxOctal7 ? 0 : entry.gid, size > kMaxOctal11 ? 0 : size, mtime_field,
      link.size() > 100 ? std::string_view(link).substr(0, 100) : std::string_view(link),
      entry.uname.size() > 31 ? std::string_view() : std::string_view(entry.uname),
      entry.gname.size() > 31 ? std::string_view() : std::string_view(entry.gname), entry.dev_major,
      entry.dev_minor);
  IMGFS_RETURN_IF_ERROR(Emit(hdr));
  payload_left_ = size;
  payload_size_ = size;
  return Status::Ok();
}

Status TarWriter::WriteData(std::string_view data) {
  if (!status_.ok()) return status_;
  if (data.size() > payload_left_) {
    status_ = Status::InvalidArgument("tar writer: payload longer than the entry's size");
    return status_;
  }
  payload_left_ -= data.size();
  return Emit(data);
}

Status TarWriter::Add(TarEntry entry, std::string_view data) {
  if (entry.type == TarEntryType::kRegular && entry.size == 0) entry.size = data.size();
  if (entry.type != TarEntryType::kRegular && !data.empty()) {
    status_ = Status::InvalidArgument("tar writer: entry '" + entry.name +
                                      "' is not a regular file but has data");
    return status_;
  }
  IMGFS_RETURN_IF_ERROR(WriteHeader(entry));
  return WriteData(data);
}

Status TarWriter::Finish() {
  if (finished_) return status_;
  IMGFS_RETURN_IF_ERROR(ClosePayload());
  finished_ = true;
  return Emit(std::string(2 * kBlockSize, '\0'));
}

TarEntry FileEntry(std::string name, uint64_t size, uint32_t mode) {
  TarEntry e;
  e.name = std::move(name);
  e.type = TarEntryType::kRegular;
  e.size = size;
  e.mode = mode;
  return e;
}

TarEntry DirEntry(std::string name, uint32_t mode) {
  TarEntry e;
  e.name = std::move(name);
  e.type = TarEntryType::kDirectory;
  e.mode = mode;
  return e;
}

TarEntry WhiteoutEntry(std::string_view path) {
  size_t slash = path.rfind('/');
  std::string name =
      slash == std::string_view::npos
          ? ".wh." + std::string(path)
          : std::string(path.substr(0, slash + 1)) + ".wh." + std::string(path.substr(slash + 1));
  return FileEntry(std::move(name), 0, 0);
}

TarEntry OpaqueEntry(std::string_view dir) {
  return FileEntry(dir.empty() ? ".wh..wh..opq" : std::string(dir) + "/.wh..wh..opq", 0, 0);
}

}  // namespace imgfs::registry
