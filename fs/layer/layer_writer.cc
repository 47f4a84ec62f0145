// imgfs — eStargz and zstd:chunked layer writers (see layer_writer.h).
#include "fs/layer/layer_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/time.h"
#include "base/unique_fd.h"
#include "fs/layer/compressed_stream.h"
#include "fs/layer/estargz_toc.h"
#include "fs/layer/zstd_chunked_toc.h"
#include "registry/tar_reader.h"
#include "registry/tar_writer.h"

namespace imgfs::fs {
namespace {

using OrderedJson = nlohmann::ordered_json;
using registry::TarEntry;
using registry::TarEntryType;

// zlib's default level (what `gzip` uses) and zstd's default level: a balance for converting
// multi-GB images on shared CPUs; both formats decode at any level.
constexpr int kDefaultGzipLevel = 6;
constexpr int kDefaultZstdLevel = 3;
constexpr uint64_t kTarBlock = 512;
// Payload bytes copied per read.
constexpr uint64_t kCopyPieceBytes = 1 << 20;
// Headers of one entry (PAX records included) larger than this are not believable.
constexpr uint64_t kMaxHeaderBytes = 64ull << 20;
// zstd skippable frame magic (RFC 8878 §3.1.2; containers/storage uses the first one).
constexpr uint32_t kSkippableMagic = 0x184D2A50;
// Landmark content (estargz/types.go: landmarkContents).
constexpr char kLandmarkContent = 0x0f;
// tar-split entry types (vbatts/tar-split archive/tar/storage/entry.go).
constexpr int kTarSplitFileType = 1;
constexpr int kTarSplitSegmentType = 2;
// containers/storage minimal.ChunkTypeZeros.
constexpr std::string_view kZerosChunkType = "zeros";

uint64_t PadOf(uint64_t size) { return (kTarBlock - size % kTarBlock) % kTarBlock; }

Result<std::string> ReadAt(const TarBytes& tar, uint64_t offset, uint64_t length) {
  if (offset > tar.size || length > tar.size - offset) {
    return Status::Corrupt("tar ends inside an entry (offset " + std::to_string(offset) + ")");
  }
  if (tar.fd < 0) return std::string(tar.data.substr(offset, length));
  IMGFS_ASSIGN_OR_RETURN(std::string bytes, PreadAll(tar.fd, offset, length));
  if (bytes.size() != length) return Status::Corrupt("short read of the tar");
  return bytes;
}

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8) |
                 static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// CRC-64 with the ISO polynomial, as Go's hash/crc64 (crc64.ISO) computes it: tar-split
// records it for every file payload.
class Crc64Iso {
 public:
  Crc64Iso() {
    static const std::array<uint64_t, 256> table = [] {
      std::array<uint64_t, 256> t{};
      for (uint64_t i = 0; i < 256; ++i) {
        uint64_t crc = i;
        for (int j = 0; j < 8; ++j) crc = (crc & 1) ? (crc >> 1) ^ 0xD800000000000000ull : crc >> 1;
        t[i] = crc;
      }
      return t;
    }();
    table_ = &table;
  }
  void Update(std::string_view data) {
    uint64_t crc = ~crc_;
    for (char c : data)
      crc = (*table_)[static_cast<uint8_t>(crc) ^ static_cast<uint8_t>(c)] ^ (crc >> 8);
    crc_ = ~crc;
  }
  // Big-endian bytes, as hash.Hash64.Sum appends them.
  std::string Bytes() const {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(crc_ >> (56 - 8 * i));
    return out;
  }

 private:
  const std::array<uint64_t, 256>* table_;
  uint64_t crc_ = 0;
};

std::string TypeName(TarEntryType type) {
  switch (type) {
    case TarEntryType::kRegular:
      return "reg";
    case TarEntryType::kHardlink:
      return "hardlink";
    case TarEntryType::kSymlink:
      return "symlink";
    case TarEntryType::kChar:
      return "char";
    case TarEntryType::kBlock:
      return "block";
    case TarEntryType::kDirectory:
      return "dir";
    case TarEntryType::kFifo:
      return "fifo";
  }
  return "reg";
}

// The name a TOC records: the tar name, directories with a trailing '/', the root as ".".
std::string TocName(const TarEntry& e) {
  if (e.name.empty()) return ".";
  return e.type == TarEntryType::kDirectory ? e.name + "/" : e.name;
}

void Le32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void Le64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

std::string SkippableFrame(std::string_view data) {
  std::string out;
  Le32(&out, kSkippableMagic);
  Le32(&out, static_cast<uint32_t>(data.size()));
  out.append(data);
  return out;
}

// The 51-byte eStargz footer (estargz/types.go footerBytes): an empty gzip member whose
// extra field "SG" holds "%016x" of the TOC offset + "STARGZ".
std::string EstargzFooterBytes(uint64_t toc_offset) {
  std::string f = {'\x1f', '\x8b', '\x08', '\x04', 0, 0, 0, 0, 0, '\xff'};
  f += '\x1a';  // XLEN = 26 (LE16)
  f += '\0';
  f += "SG";
  f += '\x16';  // LEN = 22 (LE16)
  f += '\0';
  char hex[32];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(toc_offset));
  f += hex;
  f += "STARGZ";
  f += std::string("\x01\x00\x00\xff\xff", 5);  // final stored block, empty
  f += std::string(8, '\0');                    // CRC32 and ISIZE of nothing
  return f;
}

// One entry of the output, in output order.
struct Item {
  TarEntry entry;
  uint64_t raw_begin = 0;  // input bytes [raw_begin, raw_end): this entry's headers
  uint64_t raw_end = 0;    // (with any global PAX header in front); raw_end = payload start
  bool synthetic = false;  // added by the writer: headers/payload below
  std::string synthetic_headers;
  std::string synthetic_payload;
};

struct WrittenChunk {
  uint64_t file_offset = 0;
  uint64_t size = 0;
  registry::Digest digest;
  uint64_t blob_offset = 0;
  uint64_t blob_end = 0;  // zstd:chunked: end of the chunk's frame
  bool zeros = false;     // zstd:chunked: a run of zeros (chunkType "zeros")
};

bool IsUtf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

// eStargz and zstd:chunked TOCs are JSON, which holds UTF-8 text only: a name, link target,
// user/group name or xattr name of other bytes cannot be written so that it reads back the
// same. Such an entry is refused by name (InvalidArgument) before anything is written.
Status CheckTocStrings(const TarEntry& e) {
  auto bad = [&](const std::string& what) {
    nlohmann::json shown = e.name;
    return Status::InvalidArgument(
        "tar entry " + shown.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ": " +
        what + " is not valid UTF-8; eStargz and zstd:chunked TOCs (JSON) cannot hold it");
  };
  if (!IsUtf8(e.name)) return bad("the name");
  if (!IsUtf8(e.link_target)) return bad("the link target");
  if (!IsUtf8(e.uname)) return bad("the user name");
  if (!IsUtf8(e.gname)) return bad("the group name");
  for (const auto& [k, v] : e.xattrs) {
    if (!IsUtf8(k)) return bad("an xattr name");
  }
  return Status::Ok();
}

Result<std::vector<Item>> ScanTar(const TarBytes& tar) {
  std::unique_ptr<registry::TarInput> input;
  if (tar.fd >= 0) {
    input = std::make_unique<registry::FdTarInput>(tar.fd, 0, tar.size);
  } else {
    input = std::make_unique<registry::StringTarInput>(tar.data);
  }
  registry::TarReader reader(input.get());
  std::vector<Item> items;
  uint64_t prev_end = 0;
  while (true) {
    IMGFS_ASSIGN_OR_RETURN(std::optional<TarEntry> entry, reader.Next());
    if (!entry.has_value()) break;
    Item item;
    item.raw_begin = prev_end;
    item.raw_end = entry->payload_offset;
    if (item.raw_end < item.raw_begin || item.raw_end - item.raw_begin > kMaxHeaderBytes) {
      return Status::Corrupt("tar entry '" + entry->name + "': unexpected header layout");
    }
    uint64_t payload = entry->type == TarEntryType::kRegular ? entry->size : 0;
    prev_end = entry->payload_offset + payload + PadOf(payload);
    // An eStargz input (a layer converted before) brings the old landmark and TOC: the
    // writer makes its own (ctr-remote drops them too).
    if (entry->name == kEstargzTocName || entry->name == kEstargzPrefetchLandmark ||
        entry->name == kEstargzNoPrefetchLandmark) {
      continue;
    }
    IMGFS_RETURN_IF_ERROR(CheckTocStrings(*entry));
    item.entry = std::move(*entry);
    items.push_back(std::move(item));
  }
  return items;
}

// `prioritized` as tar names ("/etc/passwd" → "etc/passwd"), first occurrences in order.
Result<std::vector<std::string>> NormalizePrioritized(const std::vector<std::string>& prioritized) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const std::string& p : prioritized) {
    std::string_view s = p;
    while (!s.empty() && s.front() == '/') s.remove_prefix(1);
    Result<std::string> norm = registry::NormalizeTarPath(s);
    if (!norm.has_value() || norm->empty()) {
      return Status::InvalidArgument("bad --prioritize path \"" + p + "\"");
    }
    if (seen.insert(*norm).second) out.push_back(*norm);
  }
  return out;
}

// zstd:chunked order: each prioritized regular file (in the given order) preceded by those
// of its parent directory entries (root first) that are not written yet, then every other
// entry in layer order. A name moves only when it occurs once in the layer (so that "last
// entry wins" keeps its meaning); others stay where they are.
Result<std::vector<Item>> ZstdChunkedOrder(std::vector<Item> items,
                                           const std::vector<std::string>& prioritized, bool* any) {
  *any = false;
  IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> wanted, NormalizePrioritized(prioritized));
  if (wanted.empty()) return items;
  std::map<std::string, size_t> occurrences;
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < items.size(); ++i) {
    ++occurrences[items[i].entry.name];
    index_of[items[i].entry.name] = i;
  }
  auto single = [&](const std::string& name, TarEntryType type) -> std::optional<size_t> {
    auto it = occurrences.find(name);
    if (it == occurrences.end() || it->second != 1) return std::nullopt;
    size_t i = index_of[name];
    if (items[i].entry.type != type) return std::nullopt;
    return i;
  };
  std::vector<bool> moved(items.size(), false);
  std::vector<Item> out;
  out.reserve(items.size());
  for (const std::string& name : wanted) {
    std::optional<size_t> file = single(name, TarEntryType::kRegular);
    if (!file.has_value()) continue;
    std::vector<std::string> parents = {""};
    for (size_t pos = name.find('/'); pos != std::string::npos; pos = name.find('/', pos + 1)) {
      parents.push_back(name.substr(0, pos));
    }
    for (const std::string& parent : parents) {
      std::optional<size_t> dir = single(parent, TarEntryType::kDirectory);
      if (dir.has_value() && !moved[*dir]) {
        moved[*dir] = true;
        out.push_back(std::move(items[*dir]));
      }
    }
    moved[*file] = true;
    out.push_back(std::move(items[*file]));
    *any = true;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (!moved[i]) out.push_back(std::move(items[i]));
  }
  return out;
}

Item LandmarkItem(std::string_view name) {
  Item item;
  item.synthetic = true;
  item.entry = registry::FileEntry(std::string(name), 1, 0);
  item.entry.mtime_sec = 0;
  registry::TarWriter writer(&item.synthetic_headers);
  Status st = writer.WriteHeader(item.entry);
  (void)st;  // a fixed, valid entry: cannot fail writing to a string
  item.synthetic_payload = std::string(1, kLandmarkContent);
  return item;
}

// eStargz order: prioritized files (with their parent directories) first, then the
// `.prefetch.landmark`; or `.no.prefetch.landmark` first when nothing is prioritized.
Result<std::vector<Item>> EstargzOrder(std::vector<Item> items,
                                       const std::vector<std::string>& prioritized, bool* any) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> normalized, NormalizePrioritized(prioritized));
  const std::set<std::string> wanted(normalized.begin(), normalized.end());
  std::set<std::string> front_names;
  for (const Item& item : items) {
    if (item.entry.type == TarEntryType::kRegular && wanted.count(item.entry.name) > 0) {
      front_names.insert(item.entry.name);
      front_names.insert("");  // the root directory entry, when the tar has one
      for (size_t pos = item.entry.name.find('/'); pos != std::string::npos;
           pos = item.entry.name.find('/', pos + 1)) {
        front_names.insert(item.entry.name.substr(0, pos));
      }
    }
  }
  *any = false;
  for (const Item& item : items) {
    if (item.entry.type == TarEntryType::kRegular && wanted.count(item.entry.name) > 0) *any = true;
  }
  std::vector<Item> out;
  out.reserve(items.size() + 1);
  if (!*any) {
    out.push_back(LandmarkItem(kEstargzNoPrefetchLandmark));
    for (Item& item : items) out.push_back(std::move(item));
    return out;
  }
  std::vector<Item> rest;
  for (Item& item : items) {
    bool front = front_names.count(item.entry.name) > 0 &&
                 (item.entry.type == TarEntryType::kDirectory || wanted.count(item.entry.name) > 0);
    (front ? out : rest).push_back(std::move(item));
  }
  out.push_back(LandmarkItem(kEstargzPrefetchLandmark));
  for (Item& item : rest) out.push_back(std::move(item));
  return out;
}

// Fields every TOC entry shares, in the order of each format's Go struct.
OrderedJson EstargzEntry(const TarEntry& e) {
  OrderedJson j;
  j["name"] = TocName(e);
  j["type"] = TypeName(e.type);
  if (e.type == TarEntryType::kRegular && e.size > 0) j["size"] = e.size;
  if (e.mtime_sec != 0) j["modtime"] = FormatRfc3339(e.mtime_sec);
  if (e.type == TarEntryType::kSymlink || e.type == TarEntryType::kHardlink) {
    j["linkName"] = e.link_target;
  }
  if (e.mode != 0) j["mode"] = e.mode;
  if (e.uid != 0) j["uid"] = e.uid;
  if (e.gid != 0) j["gid"] = e.gid;
  if (!e.uname.empty()) j["userName"] = e.uname;
  if (!e.gname.empty()) j["groupName"] = e.gname;
  return j;
}

void EstargzDevAndXattrs(const TarEntry& e, OrderedJson* j) {
  if (e.type == TarEntryType::kChar || e.type == TarEntryType::kBlock) {
    if (e.dev_major != 0) (*j)["devMajor"] = e.dev_major;
    if (e.dev_minor != 0) (*j)["devMinor"] = e.dev_minor;
  }
  if (!e.xattrs.empty()) {
    OrderedJson x = OrderedJson::object();
    for (const auto& [k, v] : e.xattrs) x[k] = Base64(v);
    (*j)["xattrs"] = std::move(x);
  }
}

// `chunkSize` is written for full-size chunks only (a short last chunk, or a file smaller
// than one chunk, omits it), as estargz.go does.
void AppendEstargzEntries(const TarEntry& e, const registry::Digest& file_digest,
                          const std::vector<WrittenChunk>& chunks, uint64_t chunk_size,
                          OrderedJson* entries) {
  OrderedJson j = EstargzEntry(e);
  if (e.type != TarEntryType::kRegular) {
    EstargzDevAndXattrs(e, &j);
    entries->push_back(std::move(j));
    return;
  }
  if (!chunks.empty()) j["offset"] = chunks[0].blob_offset;
  EstargzDevAndXattrs(e, &j);
  j["digest"] = file_digest.String();
  if (!chunks.empty()) {
    if (chunks[0].size == chunk_size) j["chunkSize"] = chunks[0].size;
    j["chunkDigest"] = chunks[0].digest.String();
  }
  entries->push_back(std::move(j));
  for (size_t i = 1; i < chunks.size(); ++i) {
    OrderedJson c;
    c["name"] = TocName(e);
    c["type"] = "chunk";
    c["offset"] = chunks[i].blob_offset;
    c["chunkOffset"] = chunks[i].file_offset;
    if (chunks[i].size == chunk_size) c["chunkSize"] = chunks[i].size;
    c["chunkDigest"] = chunks[i].digest.String();
    entries->push_back(std::move(c));
  }
}

void AppendZstdEntries(const TarEntry& e, const registry::Digest& file_digest,
                       const std::vector<WrittenChunk>& chunks, OrderedJson* entries) {
  OrderedJson j;
  j["type"] = TypeName(e.type);
  j["name"] = TocName(e);
  if (e.type == TarEntryType::kSymlink || e.type == TarEntryType::kHardlink) {
    j["linkName"] = e.link_target;
  }
  if (e.mode != 0) j["mode"] = e.mode;
  if (e.type == TarEntryType::kRegular && e.size > 0) j["size"] = e.size;
  if (e.uid != 0) j["uid"] = e.uid;
  if (e.gid != 0) j["gid"] = e.gid;
  j["modtime"] = FormatRfc3339Nanos(e.mtime_sec, e.mtime_nsec, /*go_style=*/true);
  if (e.type == TarEntryType::kChar || e.type == TarEntryType::kBlock) {
    if (e.dev_major != 0) j["devMajor"] = e.dev_major;
    if (e.dev_minor != 0) j["devMinor"] = e.dev_minor;
  }
  if (!e.xattrs.empty()) {
    OrderedJson x = OrderedJson::object();
    for (const auto& [k, v] : e.xattrs) x[k] = Base64(v);
    j["xattrs"] = std::move(x);
  }
  if (e.type == TarEntryType::kRegular && !chunks.empty()) {
    j["digest"] = file_digest.String();
    j["offset"] = chunks.front().blob_offset;
    j["endOffset"] = chunks.back().blob_end;
    if (chunks.size() > 1) {
      j["chunkSize"] = chunks[0].size;
      j["chunkDigest"] = chunks[0].digest.String();
      if (chunks[0].zeros) j["chunkType"] = kZerosChunkType;
    }
  }
  entries->push_back(std::move(j));
  for (size_t i = 1; i < chunks.size(); ++i) {
    OrderedJson c;
    c["type"] = "chunk";
    c["name"] = TocName(e);
    c["offset"] = chunks[i].blob_offset;
    c["chunkSize"] = chunks[i].size;
    c["chunkOffset"] = chunks[i].file_offset;
    c["chunkDigest"] = chunks[i].digest.String();
    if (chunks[i].zeros) c["chunkType"] = kZerosChunkType;
    entries->push_back(std::move(c));
  }
}

// Appends one tar-split record (JSON line) to *out.
void TarSplitRecord(int type, const std::string& name, uint64_t size, const std::string* payload,
                    int64_t* position, std::string* out) {
  OrderedJson j;
  j["type"] = type;
  if (!name.empty()) j["name"] = name;
  if (size != 0) j["size"] = size;
  if (payload != nullptr && !payload->empty()) {
    j["payload"] = Base64(*payload);
  } else {
    j["payload"] = nullptr;
  }
  j["position"] = (*position)++;
  *out += j.dump();
  *out += '\n';
}

}  // namespace

Result<LazyFormat> ParseLazyFormat(std::string_view text) {
  if (text == "estargz") return LazyFormat::kEstargz;
  if (text == "zstd:chunked" || text == "zstd-chunked" || text == "zstdchunked") {
    return LazyFormat::kZstdChunked;
  }
  return Status::InvalidArgument("unknown format \"" + std::string(text) +
                                 "\" (want estargz or zstd:chunked)");
}

std::string_view LazyFormatName(LazyFormat format) {
  return format == LazyFormat::kEstargz ? "estargz" : "zstd:chunked";
}

Result<WrittenLayer> WriteLazyLayer(const TarBytes& tar, const LayerWriterOptions& options,
                                    const registry::BlobSink& sink) {
  if (options.chunk_size_bytes == 0) return Status::InvalidArgument("chunk size must be > 0");
  const bool estargz = options.format == LazyFormat::kEstargz;
  const bool content_defined = !estargz && options.zstd_chunking == ZstdChunking::kContentDefined;
  if (content_defined) IMGFS_RETURN_IF_ERROR(ValidateContentChunking(options.content_chunking));
  int level = options.compression_level;
  if (level == 0) level = estargz ? kDefaultGzipLevel : kDefaultZstdLevel;
  if (level < 1 || level > (estargz ? 9 : 19)) {
    return Status::InvalidArgument("compression level " + std::to_string(level) + " out of range");
  }
  IMGFS_ASSIGN_OR_RETURN(std::vector<Item> items, ScanTar(tar));
  WrittenLayer out;
  if (estargz) {
    IMGFS_ASSIGN_OR_RETURN(
        items, EstargzOrder(std::move(items), options.prioritized_files, &out.prioritized));
  } else {
    IMGFS_ASSIGN_OR_RETURN(
        items, ZstdChunkedOrder(std::move(items), options.prioritized_files, &out.prioritized));
  }

  const auto codec = estargz ? CompressedStream::Codec::kGzip : CompressedStream::Codec::kZstd;
  CompressedStream stream(codec, level, &sink);
  OrderedJson entries = OrderedJson::array();
  std::string tar_split;
  int64_t split_position = 0;
  std::string pending;  // padding of the previous payload, then this entry's headers

  for (const Item& item : items) {
    const TarEntry& e = item.entry;
    if (item.synthetic) {
      pending += item.synthetic_headers;
    } else {
      IMGFS_ASSIGN_OR_RETURN(std::string headers,
                             ReadAt(tar, item.raw_begin, item.raw_end - item.raw_begin));
      pending += headers;
    }
    IMGFS_RETURN_IF_ERROR(stream.Write(pending));
    if (!estargz)
      TarSplitRecord(kTarSplitSegmentType, "", 0, &pending, &split_position, &tar_split);
    pending.clear();

    std::vector<WrittenChunk> chunks;
    registry::Sha256 file_hash;
    Crc64Iso crc;
    const uint64_t size = e.type == TarEntryType::kRegular ? e.size : 0;
    auto read_payload = [&](uint64_t off, uint64_t n) -> Result<std::string> {
      if (item.synthetic) return item.synthetic_payload.substr(off, n);
      return ReadAt(tar, item.raw_end + off, n);
    };
    if (content_defined && size > 0) {
      // Every chunk is a frame of its own: the headers' frame ends here.
      IMGFS_RETURN_IF_ERROR(stream.EndUnit());
      WrittenChunk current;
      current.blob_offset = stream.offset();
      registry::Sha256 chunk_hash;
      ContentChunker chunker(
          options.content_chunking,
          [&](std::string_view bytes) -> Status {
            chunk_hash.Update(bytes);
            file_hash.Update(bytes);
            crc.Update(bytes);
            current.size += bytes.size();
            return stream.Write(bytes);
          },
          [&](ChunkKind kind) -> Status {
            current.digest = chunk_hash.Finish();
            chunk_hash.Reset();
            current.zeros = kind == ChunkKind::kZeros;
            IMGFS_RETURN_IF_ERROR(stream.EndUnit());
            current.blob_end = stream.offset();
            const uint64_t next_offset = current.file_offset + current.size;
            chunks.push_back(std::move(current));
            current = WrittenChunk{};
            current.file_offset = next_offset;
            current.blob_offset = stream.offset();
            return Status::Ok();
          });
      chunker.Reset();
      for (uint64_t off = 0; off < size; off += kCopyPieceBytes) {
        IMGFS_ASSIGN_OR_RETURN(std::string piece,
                               read_payload(off, std::min(kCopyPieceBytes, size - off)));
        IMGFS_RETURN_IF_ERROR(chunker.Feed(piece));
      }
      IMGFS_RETURN_IF_ERROR(chunker.Finish());
    }
    for (uint64_t off = 0; !content_defined && off < size; off += options.chunk_size_bytes) {
      WrittenChunk chunk;
      chunk.file_offset = off;
      chunk.size = std::min(options.chunk_size_bytes, size - off);
      IMGFS_RETURN_IF_ERROR(stream.EndUnit());
      chunk.blob_offset = stream.offset();
      registry::Sha256 chunk_hash;
      for (uint64_t done = 0; done < chunk.size;) {
        uint64_t n = std::min(kCopyPieceBytes, chunk.size - done);
        IMGFS_ASSIGN_OR_RETURN(std::string piece, read_payload(off + done, n));
        chunk_hash.Update(piece);
        file_hash.Update(piece);
        if (!estargz) crc.Update(piece);
        IMGFS_RETURN_IF_ERROR(stream.Write(piece));
        done += n;
      }
      chunk.digest = chunk_hash.Finish();
      if (!estargz) IMGFS_RETURN_IF_ERROR(stream.EndUnit());
      chunk.blob_end = stream.offset();
      chunks.push_back(std::move(chunk));
    }
    registry::Digest file_digest = file_hash.Finish();
    if (!chunks.empty()) {
      ++out.files;
      out.chunks += chunks.size();
      for (const WrittenChunk& c : chunks) out.zeros_chunks += c.zeros ? 1 : 0;
    }
    pending.assign(PadOf(size), '\0');
    if (estargz) {
      AppendEstargzEntries(e, file_digest, chunks, options.chunk_size_bytes, &entries);
    } else {
      std::string sum = size > 0 ? crc.Bytes() : std::string();
      TarSplitRecord(kTarSplitFileType, TocName(e), size, &sum, &split_position, &tar_split);
      AppendZstdEntries(e, file_digest, chunks, &entries);
    }
  }

  std::string end_of_archive(2 * kTarBlock, '\0');
  if (estargz) {
    // Padding of the last payload stays in its member; the TOC gets a member of its own.
    IMGFS_RETURN_IF_ERROR(stream.Write(pending));
    IMGFS_RETURN_IF_ERROR(stream.EndUnit());
    OrderedJson toc;
    toc["version"] = 1;
    toc["entries"] = std::move(entries);
    std::string toc_json = toc.dump(1, '\t');
    out.toc_digest = registry::Digest::Sha256Of(toc_json);
    out.toc_offset = stream.offset();
    std::string toc_tar;
    registry::TarWriter writer(&toc_tar);
    TarEntry toc_entry = registry::FileEntry(std::string(kEstargzTocName), toc_json.size(), 0);
    toc_entry.mtime_sec = 0;
    IMGFS_RETURN_IF_ERROR(writer.Add(toc_entry, toc_json));
    IMGFS_RETURN_IF_ERROR(writer.Finish());
    IMGFS_RETURN_IF_ERROR(stream.Write(toc_tar));
    IMGFS_RETURN_IF_ERROR(stream.EndUnit());
    IMGFS_RETURN_IF_ERROR(stream.WriteRaw(EstargzFooterBytes(out.toc_offset)));
  } else {
    pending += end_of_archive;
    IMGFS_RETURN_IF_ERROR(stream.Write(pending));
    TarSplitRecord(kTarSplitSegmentType, "", 0, &pending, &split_position, &tar_split);
    IMGFS_RETURN_IF_ERROR(stream.EndUnit());
    IMGFS_ASSIGN_OR_RETURN(std::string split_z,
                           CompressedStream::CompressOne(codec, level, tar_split));
    OrderedJson toc;
    toc["version"] = 1;
    toc["entries"] = std::move(entries);
    toc["tarSplitDigest"] = registry::Digest::Sha256Of(split_z).String();
    std::string toc_json = toc.dump();
    IMGFS_ASSIGN_OR_RETURN(std::string toc_z,
                           CompressedStream::CompressOne(codec, level, toc_json));
    out.toc_digest = registry::Digest::Sha256Of(toc_z);
    out.toc_offset = stream.offset() + 8;
    IMGFS_RETURN_IF_ERROR(stream.WriteRaw(SkippableFrame(toc_z)));
    const uint64_t split_offset = stream.offset() + 8;
    IMGFS_RETURN_IF_ERROR(stream.WriteRaw(SkippableFrame(split_z)));
    std::string footer;
    Le64(&footer, out.toc_offset);
    Le64(&footer, toc_z.size());
    Le64(&footer, toc_json.size());
    Le64(&footer, kZstdChunkedManifestType);
    Le64(&footer, split_offset);
    Le64(&footer, split_z.size());
    Le64(&footer, tar_split.size());
    footer += kZstdChunkedFooterMagic;
    IMGFS_RETURN_IF_ERROR(stream.WriteRaw(SkippableFrame(footer)));
    auto& a = out.descriptor.annotations;
    a[std::string(kZstdChunkedChecksumAnnotation)] = out.toc_digest.String();
    a[std::string(kZstdChunkedPositionAnnotation)] =
        std::to_string(out.toc_offset) + ":" + std::to_string(toc_z.size()) + ":" +
        std::to_string(toc_json.size()) + ":" + std::to_string(kZstdChunkedManifestType);
    a[std::string(kZstdChunkedTarSplitAnnotation)] = std::to_string(split_offset) + ":" +
                                                     std::to_string(split_z.size()) + ":" +
                                                     std::to_string(tar_split.size());
  }
  IMGFS_RETURN_IF_ERROR(stream.Finish());
  out.uncompressed_size = stream.uncompressed_bytes();
  out.diff_id = stream.diff_id();
  out.descriptor.media_type = estargz ? kOciLayerGzipMediaType : kOciLayerZstdMediaType;
  out.descriptor.digest = stream.blob_digest();
  out.descriptor.size = static_cast<int64_t>(stream.offset());
  if (estargz) {
    out.descriptor.annotations[std::string(kEstargzTocDigestAnnotation)] = out.toc_digest.String();
    out.descriptor.annotations[std::string(kEstargzUncompressedSizeAnnotation)] =
        std::to_string(out.uncompressed_size);
  }
  return out;
}

Result<WrittenLayer> WriteLazyLayerFile(const std::string& tar_path, const std::string& blob_path,
                                        const LayerWriterOptions& options) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd in, OpenFile(tar_path, O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (fstat(in.get(), &st) != 0) return Status::FromErrno(errno, "stat " + tar_path);
  std::string tmp = blob_path + ".tmp.XXXXXX";
  int raw = mkostemp(tmp.data(), O_CLOEXEC);
  if (raw < 0) return Status::FromErrno(errno, "creating a temporary file beside " + blob_path);
  UniqueFd out(raw);
  registry::BlobSink sink = [&out](std::string_view bytes) { return WriteAll(out.get(), bytes); };
  Result<WrittenLayer> written =
      WriteLazyLayer(TarBytes::FromFd(in.get(), static_cast<uint64_t>(st.st_size)), options, sink);
  Status done = written.status();
  if (done.ok() && fsync(out.get()) != 0) done = Status::FromErrno(errno, "fsync " + tmp);
  if (done.ok() && rename(tmp.c_str(), blob_path.c_str()) != 0) {
    done = Status::FromErrno(errno, "rename to " + blob_path);
  }
  if (!done.ok()) {
    unlink(tmp.c_str());
    return done.WithContext("converting " + tar_path);
  }
  return written;
}

}  // namespace imgfs::fs
