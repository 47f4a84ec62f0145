// imgfs — eStargz TOC reader (see estargz_toc.h).
#include "fs/layer/estargz_toc.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>

#include "base/base64.h"
#include "base/time.h"
#include "fs/layer/gunzip.h"
#include "fs/layer/json_events.h"
#include "registry/tar_reader.h"

namespace imgfs::fs {
namespace {

// Whiteout names (OCI image-spec layer.md, "Whiteouts"), as fs/layer/index_builder.cc.
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";
// Bytes per file (1 TiB) keep arithmetic far from overflow.
constexpr uint64_t kMaxFileBytes = 1ull << 40;

std::string LayerWhat(const registry::Digest& layer) {
  return layer.empty() ? "eStargz layer" : "eStargz layer " + layer.String();
}

// A tar stream held in memory.
class StringTarInput : public registry::TarInput {
 public:
  explicit StringTarInput(std::string_view data) : data_(data) {}
  Result<std::string> Read(size_t n) override {
    size_t k = std::min(n, data_.size() - pos_);
    std::string out(data_.substr(pos_, k));
    pos_ += k;
    return out;
  }
  std::optional<uint64_t> Size() const override { return data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

}  // namespace

namespace toc_internal {

namespace {

// Streaming reader of {"version":1,"entries":[{…},…]}, fed by ParseJson (json_events.h),
// straight into TocRecords: no DOM is built, so memory is the records themselves (at most
// kMaxTocEntries) however the text is shaped — a 256 MiB TOC of `[0,0,0,…]` under an
// unknown key costs nothing, where a DOM held 16+ bytes per value. Unknown keys (at any level) are
// skipped; field types are checked as the DOM reader did (strings or null; non-negative integers or
// null).
class TocSaxReader : public JsonEvents {
 public:
  // `expected_records`: room made ahead, so the records are not moved as they grow.
  TocSaxReader(const std::string& what, size_t expected_records) : what_(what) {
    records_.reserve(expected_records);
  }

  // Sets the first error; returning false stops the parse.
  bool Fail(std::string message) {
    if (error_.empty()) error_ = what_ + ": " + std::move(message);
    return false;
  }

  bool Null() override { return Scalar(Kind::kNull, 0, nullptr); }
  bool Boolean(bool) override { return Scalar(Kind::kOther, 0, nullptr); }
  bool Integer(int64_t v) override {
    return v >= 0 ? Scalar(Kind::kUnsigned, static_cast<uint64_t>(v), nullptr)
                  : Scalar(Kind::kOther, 0, nullptr);
  }
  bool Unsigned(uint64_t v) override { return Scalar(Kind::kUnsigned, v, nullptr); }
  bool Float(double, std::string_view) override { return Scalar(Kind::kOther, 0, nullptr); }
  bool String(std::string& v) override { return Scalar(Kind::kString, 0, &v); }

  bool StartObject() override {
    if (skip_depth_ > 0) return ++skip_depth_, true;
    switch (where_) {
      case Where::kTop:
        where_ = Where::kRoot;
        return true;
      case Where::kRootValue:
        if (key_ == "entries") entries_ok_ = false;
        where_ = Where::kRoot;
        return Skip();
      case Where::kEntries:
        if (records_.size() >= kMaxTocEntries) {
          return Fail("TOC has more than " + std::to_string(kMaxTocEntries) +
                      " entries (kMaxTocEntries)");
        }
        records_.emplace_back();
        entry_ = Checks();
        where_ = Where::kEntry;
        return true;
      case Where::kEntryValue:
        if (field_ == Field::kXattrs) {
          records_.back().xattrs.clear();
          entry_.bad_xattrs = false;
          where_ = Where::kXattrs;
          return true;
        }
        if (field_ != Field::kUnknown) entry_.bad_type = true;
        where_ = Where::kEntry;
        return Skip();
      case Where::kXattrValue:
        entry_.bad_xattr_value = true;
        where_ = Where::kXattrs;
        return Skip();
      default:
        return Fail("TOC is not a JSON object");
    }
  }
  bool Key(std::string_view k) override {
    if (skip_depth_ > 0) return true;
    if (where_ == Where::kRoot) {
      key_ = k;
      where_ = Where::kRootValue;
    } else if (where_ == Where::kEntry) {
      field_ = FieldOf(k);
      where_ = Where::kEntryValue;
    } else if (where_ == Where::kXattrs) {
      xattr_key_ = k;
      where_ = Where::kXattrValue;
    }
    return true;
  }
  bool EndObject() override {
    if (skip_depth_ > 0) return --skip_depth_, true;
    switch (where_) {
      case Where::kRoot:
        where_ = Where::kDone;
        return true;
      case Where::kEntry:
        where_ = Where::kEntries;
        return FinishEntry();
      case Where::kXattrs:
        std::sort(records_.back().xattrs.begin(), records_.back().xattrs.end());
        where_ = Where::kEntry;
        return true;
      default:
        return true;
    }
  }
  bool StartArray() override {
    if (skip_depth_ > 0) return ++skip_depth_, true;
    switch (where_) {
      case Where::kRootValue:
        if (key_ != "entries") {
          where_ = Where::kRoot;
          return Skip();
        }
        records_.clear();  // a repeated key: the last one counts, as in a DOM
        entries_ok_ = true;
        where_ = Where::kEntries;
        return true;
      case Where::kEntries:
        return Fail("TOC entry is not an object");
      case Where::kEntryValue:
        if (field_ != Field::kUnknown) {
          if (field_ == Field::kXattrs) {
            entry_.bad_xattrs = true;
          } else {
            entry_.bad_type = true;
          }
        }
        where_ = Where::kEntry;
        return Skip();
      case Where::kXattrValue:
        entry_.bad_xattr_value = true;
        where_ = Where::kXattrs;
        return Skip();
      default:
        return Fail("TOC is not a JSON object");
    }
  }
  bool EndArray() override {
    if (skip_depth_ > 0) return --skip_depth_, true;
    if (where_ == Where::kEntries) where_ = Where::kRoot;
    return true;
  }
  Result<std::vector<TocRecord>> Finish(bool parsed) {
    if (!error_.empty()) return Status::Corrupt(error_);
    if (!parsed || where_ != Where::kDone) {
      return Status::Corrupt(what_ + ": TOC is not a JSON object");
    }
    if (!entries_ok_) return Status::Corrupt(what_ + ": TOC has no entries array");
    return std::move(records_);
  }

 private:
  enum class Where {
    kTop,
    kRoot,
    kRootValue,
    kEntries,
    kEntry,
    kEntryValue,
    kXattrs,
    kXattrValue,
    kDone
  };
  enum class Kind { kNull, kUnsigned, kString, kOther };
  enum class Field {
    kUnknown,
    kName,
    kType,
    kLinkName,
    kSize,
    kModtime,
    kDigest,
    kOffset,
    kEndOffset,
    kInnerOffset,
    kChunkOffset,
    kChunkSize,
    kChunkDigest,
    kChunkType,
    kMode,
    kUid,
    kGid,
    kDevMajor,
    kDevMinor,
    kXattrs
  };
  // What is wrong with the current entry, reported when it closes (its name known) in the
  // order the DOM reader checked: field types, mode, ids, xattrs.
  struct Checks {
    bool bad_type = false;
    bool bad_mode = false;
    const char* bad_id = nullptr;
    bool bad_xattrs = false;
    bool bad_xattr_value = false;
    std::string xattr_error;
  };

  // Called for every key of every entry: a scan of 19 views mostly stops at the length
  // compare, where a std::map<std::string> lookup compared ~5 strings (issue 11).
  static Field FieldOf(std::string_view k) {
    static constexpr std::pair<std::string_view, Field> kFields[] = {
        {"name", Field::kName},
        {"type", Field::kType},
        {"linkName", Field::kLinkName},
        {"size", Field::kSize},
        {"modtime", Field::kModtime},
        {"digest", Field::kDigest},
        {"offset", Field::kOffset},
        {"endOffset", Field::kEndOffset},
        {"innerOffset", Field::kInnerOffset},
        {"chunkOffset", Field::kChunkOffset},
        {"chunkSize", Field::kChunkSize},
        {"chunkDigest", Field::kChunkDigest},
        {"chunkType", Field::kChunkType},
        {"mode", Field::kMode},
        {"uid", Field::kUid},
        {"gid", Field::kGid},
        {"devMajor", Field::kDevMajor},
        {"devMinor", Field::kDevMinor},
        {"xattrs", Field::kXattrs}};
    for (const auto& [name, field] : kFields) {
      if (name == k) return field;
    }
    return Field::kUnknown;
  }

  bool Skip() {
    skip_depth_ = 1;
    return true;
  }

  bool Scalar(Kind kind, uint64_t u, std::string* text) {
    if (skip_depth_ > 0) return true;
    switch (where_) {
      case Where::kTop:
        return Fail("TOC is not a JSON object");
      case Where::kRootValue:
        if (key_ == "entries") entries_ok_ = false;
        where_ = Where::kRoot;
        return true;
      case Where::kEntries:
        return Fail("TOC entry is not an object");
      case Where::kEntryValue:
        where_ = Where::kEntry;
        Assign(kind, u, text);
        return true;
      case Where::kXattrValue:
        where_ = Where::kXattrs;
        if (kind != Kind::kString) {
          entry_.bad_xattr_value = true;
        } else if (Result<std::string> v = DecodeBase64(*text); !v.has_value()) {
          if (entry_.xattr_error.empty()) {
            entry_.xattr_error = "xattr " + xattr_key_ + " of TOC %s: " + v.error().message();
          }
        } else {
          records_.back().xattrs.emplace_back(xattr_key_, std::move(*v));
        }
        return true;
      default:
        return true;
    }
  }

  void Assign(Kind kind, uint64_t u, std::string* text) {
    TocRecord& r = records_.back();
    auto str = [&](std::string* dst) {
      if (kind == Kind::kString) {
        *dst = std::move(*text);
      } else if (kind == Kind::kNull) {
        dst->clear();
      } else {
        entry_.bad_type = true;
      }
    };
    // Returns false for a value that is not a non-negative integer or null.
    auto num = [&](uint64_t* dst, bool* present) {
      if (kind == Kind::kUnsigned) {
        *dst = u;
        if (present) *present = true;
        return true;
      }
      if (kind == Kind::kNull) {
        *dst = 0;
        if (present) *present = false;
        return true;
      }
      return false;
    };
    auto id = [&](uint32_t* dst, const char* key) {
      uint64_t v = 0;
      if (!num(&v, nullptr) || v > std::numeric_limits<uint32_t>::max()) {
        if (entry_.bad_id == nullptr) entry_.bad_id = key;
        return;
      }
      *dst = static_cast<uint32_t>(v);
    };
    switch (field_) {
      case Field::kUnknown:
        return;
      case Field::kName:
        return str(&r.name);
      case Field::kType:
        return str(&r.type);
      case Field::kLinkName:
        return str(&r.link_name);
      case Field::kModtime:
        return str(&r.modtime);
      case Field::kDigest:
        return str(&r.digest);
      case Field::kChunkDigest:
        return str(&r.chunk_digest);
      case Field::kChunkType:
        return str(&r.chunk_type);
      case Field::kSize:
        if (!num(&r.size, nullptr)) entry_.bad_type = true;
        return;
      case Field::kOffset:
        if (!num(&r.offset, &r.has_offset)) entry_.bad_type = true;
        return;
      case Field::kEndOffset:
        if (!num(&r.end_offset, &r.has_end_offset)) entry_.bad_type = true;
        return;
      case Field::kInnerOffset:
        if (!num(&r.inner_offset, nullptr)) entry_.bad_type = true;
        return;
      case Field::kChunkOffset:
        if (!num(&r.chunk_offset, nullptr)) entry_.bad_type = true;
        return;
      case Field::kChunkSize:
        if (!num(&r.chunk_size, nullptr)) entry_.bad_type = true;
        return;
      case Field::kMode: {
        uint64_t v = 0;
        if (!num(&v, nullptr) || v > std::numeric_limits<uint32_t>::max()) {
          entry_.bad_mode = true;
        } else {
          r.mode = static_cast<int64_t>(v);
        }
        return;
      }
      case Field::kUid:
        return id(&r.uid, "uid");
      case Field::kGid:
        return id(&r.gid, "gid");
      case Field::kDevMajor:
        return id(&r.dev_major, "devMajor");
      case Field::kDevMinor:
        return id(&r.dev_minor, "devMinor");
      case Field::kXattrs:
        if (kind == Kind::kNull) {
          r.xattrs.clear();
        } else {
          entry_.bad_xattrs = true;
        }
        return;
    }
  }

  bool FinishEntry() {
    const TocRecord& r = records_.back();
    const std::string label = r.name.empty() ? "an entry" : "entry '" + r.name + "'";
    if (entry_.bad_type) return Fail("bad field type in TOC " + label);
    if (entry_.bad_mode) return Fail("bad mode of TOC " + label);
    if (entry_.bad_id != nullptr)
      return Fail(std::string("bad ") + entry_.bad_id + " of TOC " + label);
    if (entry_.bad_xattrs) return Fail("bad xattrs of TOC " + label);
    if (entry_.bad_xattr_value) return Fail("bad xattr value of TOC " + label);
    if (!entry_.xattr_error.empty()) {
      std::string m = entry_.xattr_error;
      m.replace(m.find("%s"), 2, label);
      return Fail(std::move(m));
    }
    return true;
  }

  const std::string& what_;
  std::string error_;
  Where where_ = Where::kTop;
  int skip_depth_ = 0;  // > 0: inside a value being skipped
  std::string key_;     // current key of the root object
  Field field_ = Field::kUnknown;
  std::string xattr_key_;
  bool entries_ok_ = false;
  Checks entry_;
  std::vector<TocRecord> records_;
};

}  // namespace

Result<std::vector<TocRecord>> ParseTocJson(std::string_view text, const std::string& what) {
  if (text.size() > kMaxTocUncompressedBytes) {
    return Status::Corrupt(what + ": TOC of " + std::to_string(text.size()) +
                           " bytes is larger than " + std::to_string(kMaxTocUncompressedBytes) +
                           " (kMaxTocUncompressedBytes)");
  }
  // A record takes ~370 bytes of JSON in the TOCs imgfs and stargz write; room for a few
  // more (untouched room costs no memory).
  TocSaxReader reader(what, std::min<size_t>(text.size() / 256, kMaxTocEntries));
  const JsonParseResult parsed = ParseJson(text, reader);
  if (!parsed.ok() && parsed.outcome != JsonOutcome::kStopped) {
    (void)reader.Fail("TOC is not a JSON object: " + std::string(parsed.reason) + " at byte " +
                      std::to_string(parsed.offset));
  }
  return reader.Finish(parsed.ok());
}

namespace {

// The entry type of a TOC record's "type" (not "chunk"), nullopt for an unknown one.
std::optional<EntryType> TocEntryType(std::string_view type) {
  if (type == "reg") return EntryType::kRegular;
  if (type == "dir") return EntryType::kDirectory;
  if (type == "symlink") return EntryType::kSymlink;
  if (type == "hardlink") return EntryType::kHardlink;
  if (type == "char") return EntryType::kChar;
  if (type == "block") return EntryType::kBlock;
  if (type == "fifo") return EntryType::kFifo;
  return std::nullopt;
}

}  // namespace

Result<LayerIndex> AssembleIndex(std::vector<TocRecord>& records, const std::string& what,
                                 const std::function<Result<ChunkPlace>(size_t record)>& place,
                                 const std::function<bool(const TocRecord&)>& skip) {
  LayerIndex index;
  FileEntry* current = nullptr;  // the regular file whose chunks may follow
  std::string current_name;
  std::vector<size_t> pending;  // record indexes of the current file's chunks

  // Closes the current file: sizes, digests and locations of its chunks, then validation.
  auto finish = [&]() -> Status {
    if (current == nullptr) return Status::Ok();
    FileEntry& f = *current;
    f.first_chunk = f.size == 0 ? 0 : static_cast<uint32_t>(index.chunks.size());
    f.chunk_count = 0;
    uint64_t expect = 0;
    for (size_t k = 0; k < pending.size(); ++k) {
      const TocRecord& r = records[pending[k]];
      auto label = [&] { return what + ": entry '" + r.name + "'"; };  // errors only
      if (f.size == 0) {
        if (k > 0) return Status::Corrupt(label() + ": chunk of an empty file");
        continue;
      }
      uint64_t end = k + 1 < pending.size() ? records[pending[k + 1]].chunk_offset : f.size;
      uint64_t size = r.chunk_size;
      if (size == 0) {
        if (end < r.chunk_offset) return Status::Corrupt(label() + ": chunks out of order");
        size = end - r.chunk_offset;
      }
      if (r.chunk_offset != expect || size == 0 || size > f.size - r.chunk_offset) {
        return Status::Corrupt(label() + ": chunk at file offset " +
                               std::to_string(r.chunk_offset) +
                               " does not continue the previous chunk or exceeds the file size");
      }
      Chunk c;
      c.file_offset = r.chunk_offset;
      c.size = size;
      std::string_view digest = r.chunk_digest;
      if (digest.empty() && pending.size() == 1) digest = r.digest;
      if (digest.empty()) return Status::Corrupt(label() + ": chunk without a digest");
      Result<registry::Digest> d = registry::Digest::Parse(digest);
      if (!d.has_value() || d->algorithm() != "sha256") {
        return Status::Corrupt(label() + ": bad chunk digest '" + std::string(digest) + "'");
      }
      c.digest = *d;
      Result<ChunkPlace> p = place(pending[k]);
      if (!p.has_value()) return p.error().WithContext(label());
      c.blob_offset = p->blob_offset;
      c.blob_length = p->blob_length;
      c.inner_offset = p->inner_offset;
      // Geometry: what one fetch of this chunk downloads and decodes in memory is bounded,
      // whatever the TOC claims.
      if (Status g = CheckLazyChunkGeometry(c); !g.ok()) return g.WithContext(label());
      index.chunks.push_back(std::move(c));
      ++f.chunk_count;
      expect = r.chunk_offset + size;
    }
    if (f.size != 0 && expect != f.size) {
      return Status::Corrupt(what + ": entry '" + current_name + "': chunks cover " +
                             std::to_string(expect) + " of " + std::to_string(f.size) + " bytes");
    }
    index.uncompressed_size = std::max(index.uncompressed_size, f.size);
    current = nullptr;
    pending.clear();
    return Status::Ok();
  };

  // Entries are pushed while `current` points into index.entries: reserve so it stays valid.
  index.entries.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    TocRecord& r = records[i];
    if (r.type == "chunk") {
      if (current == nullptr || r.name != current_name) {
        if (skip(r)) continue;
        return Status::Corrupt(what + ": chunk entry '" + r.name +
                               "' does not follow its regular file");
      }
      pending.push_back(i);
      continue;
    }
    IMGFS_RETURN_IF_ERROR(finish());
    if (skip(r)) continue;
    Result<std::string> norm = registry::NormalizeTarPath(r.name);
    if (!norm.has_value()) return norm.error().WithContext(what);
    FileEntry e;
    std::string_view name = *norm;
    size_t slash = name.rfind('/');
    std::string_view dir = slash == std::string_view::npos ? "" : name.substr(0, slash);
    std::string_view base = slash == std::string_view::npos ? name : name.substr(slash + 1);
    bool whiteout = false;
    if (base.starts_with(kWhiteoutPrefix)) {
      whiteout = true;
      if (base == kOpaqueMarker) {
        e.type = EntryType::kOpaque;
        e.path = std::string(dir);
      } else {
        std::string_view hidden = base.substr(kWhiteoutPrefix.size());
        if (hidden.empty() || hidden == "." || hidden == "..") {
          return Status::Corrupt(what + ": invalid whiteout entry " + r.name);
        }
        e.type = EntryType::kWhiteout;
        e.path = dir.empty() ? std::string(hidden) : std::string(dir) + "/" + std::string(hidden);
      }
    } else {
      e.path = *norm;
      std::optional<EntryType> type = TocEntryType(r.type);
      if (!type.has_value()) {
        return Status::Corrupt(what + ": entry '" + r.name + "' has unknown type '" + r.type + "'");
      }
      e.type = *type;
    }
    e.mode = static_cast<uint32_t>(r.mode) & 07777;
    e.uid = r.uid;
    e.gid = r.gid;
    Status ts = ParseRfc3339(r.modtime, &e.mtime_sec, &e.mtime_nsec);
    if (!ts.ok()) return ts.WithContext(what + ": entry '" + r.name + "'");
    e.dev_major = r.dev_major;
    e.dev_minor = r.dev_minor;
    e.xattrs = std::move(r.xattrs);
    if (r.type == "hardlink") {
      Result<std::string> target = registry::NormalizeTarPath(r.link_name);
      if (!target.has_value()) {
        return target.error().WithContext(what + ": link target of '" + r.name + "'");
      }
      e.link_target = std::move(*target);
    } else if (r.type == "symlink") {
      e.link_target = std::move(r.link_name);
    }
    bool regular = r.type == "reg";
    if (regular && !whiteout) {
      if (r.size > kMaxFileBytes) {
        return Status::Corrupt(what + ": entry '" + r.name + "' has an absurd size " +
                               std::to_string(r.size));
      }
      e.size = r.size;
    }
    index.entries.push_back(std::move(e));
    if (regular) {
      current = &index.entries.back();
      current_name = r.name;
      if (whiteout) current->size = 0;
      pending.push_back(i);
    }
  }
  IMGFS_RETURN_IF_ERROR(finish());
  return index;
}

}  // namespace toc_internal

Result<EstargzFooter> ParseEstargzFooter(std::string_view tail) {
  auto check = [](std::string_view f, size_t xlen, bool subfield) -> std::optional<uint64_t> {
    // gzip header (RFC 1952): magic, CM=8, FLG with FEXTRA, then XLEN.
    const auto* b = reinterpret_cast<const unsigned char*>(f.data());
    if (b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 || (b[3] & 0x04) == 0) return std::nullopt;
    if (static_cast<size_t>(b[10] | (b[11] << 8)) != xlen) return std::nullopt;
    std::string_view payload = f.substr(12, xlen);
    if (subfield) {
      // SI1 'S', SI2 'G', LEN = 22.
      if (payload[0] != 'S' || payload[1] != 'G' || (payload[2] | (payload[3] << 8)) != 22) {
        return std::nullopt;
      }
      payload = payload.substr(4);
    }
    if (payload.size() != 22 || payload.substr(16) != "STARGZ") return std::nullopt;
    uint64_t off = 0;
    for (char c : payload.substr(0, 16)) {
      int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (v < 0) return std::nullopt;
      off = off << 4 | static_cast<uint64_t>(v);
    }
    return off;
  };
  if (tail.size() >= kEstargzFooterBytes) {
    if (auto off = check(tail.substr(tail.size() - kEstargzFooterBytes), 26, true)) {
      return EstargzFooter{*off, kEstargzFooterBytes};
    }
  }
  if (tail.size() >= kEstargzLegacyFooterBytes) {
    if (auto off = check(tail.substr(tail.size() - kEstargzLegacyFooterBytes), 22, false)) {
      return EstargzFooter{*off, kEstargzLegacyFooterBytes};
    }
  }
  return Status::Corrupt("no eStargz footer at the end of the blob");
}

Result<std::string> ExtractEstargzTocJson(std::string_view toc_member) {
  IMGFS_ASSIGN_OR_RETURN(std::string tar, GunzipAll(toc_member, kMaxTocUncompressedBytes, "TOC"));
  StringTarInput input(tar);
  registry::TarReader reader(&input);
  while (true) {
    IMGFS_ASSIGN_OR_RETURN(std::optional<registry::TarEntry> entry, reader.Next());
    if (!entry.has_value()) break;
    if (entry->name != kEstargzTocName) continue;
    std::string json_text;
    while (true) {
      IMGFS_ASSIGN_OR_RETURN(std::string piece, reader.ReadPayload(1 << 20));
      if (piece.empty()) break;
      json_text += piece;
    }
    return json_text;
  }
  return Status::Corrupt("TOC tar has no " + std::string(kEstargzTocName));
}

Result<LayerIndex> BuildEstargzIndexFromToc(std::string_view toc_json,
                                            const registry::Digest& layer, uint64_t blob_size,
                                            uint64_t toc_offset, uint64_t uncompressed_size_hint,
                                            uint64_t* landmark) {
  const std::string what = LayerWhat(layer);
  if (toc_offset > blob_size) return Status::Corrupt(what + ": TOC offset beyond the blob");
  IMGFS_ASSIGN_OR_RETURN(std::vector<toc_internal::TocRecord> records,
                         toc_internal::ParseTocJson(toc_json, what));
  if (landmark != nullptr) {
    *landmark = 0;
    for (const toc_internal::TocRecord& r : records) {
      if (r.name == kEstargzPrefetchLandmark && r.has_offset) *landmark = r.offset;
    }
  }
  // Gzip members start at the distinct payload offsets; each ends where the next starts,
  // the last one at the TOC.
  std::vector<uint64_t> starts;
  starts.reserve(records.size() + 1);
  for (const auto& r : records) {
    if ((r.type == "reg" && r.size > 0) || r.type == "chunk") {
      if (!r.has_offset || r.offset >= toc_offset) {
        return Status::Corrupt(what + ": entry '" + r.name + "' has offset " +
                               std::to_string(r.offset) + " outside the data part of the blob (" +
                               std::to_string(toc_offset) + " bytes)");
      }
      starts.push_back(r.offset);
    }
  }
  starts.push_back(toc_offset);
  // Usually in order already (the blob is written in TOC order).
  if (!std::is_sorted(starts.begin(), starts.end())) std::sort(starts.begin(), starts.end());
  starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
  auto place = [&](size_t i) -> Result<toc_internal::ChunkPlace> {
    const auto& r = records[i];
    // exists: toc_offset > r.offset
    auto next = std::upper_bound(starts.begin(), starts.end(), r.offset);
    toc_internal::ChunkPlace p;
    p.blob_offset = r.offset;
    p.blob_length = *next - r.offset;
    p.inner_offset = r.inner_offset;
    return p;
  };
  auto skip = [](const toc_internal::TocRecord& r) {
    return r.name == kEstargzPrefetchLandmark || r.name == kEstargzNoPrefetchLandmark;
  };
  IMGFS_ASSIGN_OR_RETURN(LayerIndex index, toc_internal::AssembleIndex(records, what, place, skip));
  index.layer_digest = layer;
  index.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  index.format = LayerFormat::kEstargz;
  index.compressed_size = blob_size;
  index.uncompressed_size = std::max(index.uncompressed_size, uncompressed_size_hint);
  return index;
}

Result<LayerIndex> LoadEstargzIndex(registry::BlobSource& source, const registry::Descriptor& layer,
                                    bool allow_missing_toc_digest, EstargzTocLoad* load) {
  EstargzTocLoad ignored;
  if (load == nullptr) load = &ignored;
  const std::string what = LayerWhat(layer.digest);
  if (layer.size < static_cast<int64_t>(kEstargzLegacyFooterBytes)) {
    return Status::Corrupt(what + ": blob of " + std::to_string(layer.size) +
                           " bytes is too small for an eStargz footer");
  }
  const uint64_t blob_size = static_cast<uint64_t>(layer.size);
  registry::Digest want;
  auto ann = layer.annotations.find(std::string(kEstargzTocDigestAnnotation));
  if (ann != layer.annotations.end()) {
    Result<registry::Digest> d = registry::Digest::Parse(ann->second);
    if (!d.has_value()) return Status::Corrupt(what + ": bad TOC digest annotation");
    want = *d;
  } else if (!allow_missing_toc_digest) {
    return Status::Corrupt(what + ": no " + std::string(kEstargzTocDigestAnnotation) +
                           " annotation to verify the TOC against");
  }
  const uint64_t tail_len = std::min<uint64_t>(blob_size, kEstargzTailReadBytes);
  const uint64_t tail_start = blob_size - tail_len;
  IMGFS_ASSIGN_OR_RETURN(std::string tail,
                         source.ReadBlobRange(layer.digest, {tail_start, tail_len}));
  ++load->requests;
  load->bytes += tail.size();
  if (tail.size() != tail_len) return Status::Corrupt(what + ": short read of the footer");
  Result<EstargzFooter> footer = ParseEstargzFooter(
      std::string_view(tail).substr(tail_len - std::min<uint64_t>(tail_len, kEstargzFooterBytes)));
  if (!footer.has_value()) return footer.error().WithContext(what);
  const uint64_t toc_end = blob_size - footer->footer_bytes;
  if (footer->toc_offset >= toc_end) {
    return Status::Corrupt(what + ": TOC offset " + std::to_string(footer->toc_offset) +
                           " outside the blob");
  }
  if (toc_end - footer->toc_offset > kMaxTocCompressedBytes) {
    return Status::Corrupt(what + ": TOC of " + std::to_string(toc_end - footer->toc_offset) +
                           " bytes is larger than " + std::to_string(kMaxTocCompressedBytes) +
                           " (kMaxTocCompressedBytes)");
  }
  std::string member;
  if (footer->toc_offset >= tail_start) {
    member = tail.substr(footer->toc_offset - tail_start, toc_end - footer->toc_offset);
  } else {
    IMGFS_ASSIGN_OR_RETURN(
        member,
        source.ReadBlobRange(layer.digest, {footer->toc_offset, toc_end - footer->toc_offset}));
    ++load->requests;
    load->bytes += member.size();
    if (member.size() != toc_end - footer->toc_offset) {
      return Status::Corrupt(what + ": short read of the TOC");
    }
  }
  Result<std::string> toc = ExtractEstargzTocJson(member);
  if (!toc.has_value()) return toc.error().WithContext(what);
  if (!want.empty()) {
    Status v = want.Verify(*toc);
    if (!v.ok()) return Status::Corrupt(what + ": TOC digest mismatch: " + v.message());
  }
  uint64_t hint = 0;
  auto usize = layer.annotations.find(std::string(kEstargzUncompressedSizeAnnotation));
  if (usize != layer.annotations.end()) {
    hint = std::strtoull(usize->second.c_str(), nullptr, 10);
  }
  IMGFS_ASSIGN_OR_RETURN(LayerIndex index,
                         BuildEstargzIndexFromToc(*toc, layer.digest, blob_size, footer->toc_offset,
                                                  hint, &load->landmark));
  if (!layer.media_type.empty()) index.media_type = layer.media_type;
  return index;
}

}  // namespace imgfs::fs
