// imgfs — fuzz target for TarReader, with TarWriter as a round-trip oracle.
//
// Any input: the reader must return entries or a Status, never crash, hang or allocate
// without bound. Every entry it reports must satisfy the reader's contract (normalised name,
// block-aligned payload offset inside the input, size only for regular files). Whatever the
// reader accepted, the writer must either refuse with InvalidArgument (a value ustar/PAX
// cannot carry, e.g. a device number above 07777777) or write an archive that reads back to
// the same entries and payloads.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "registry/tar_reader.h"
#include "registry/tar_writer.h"

namespace {

using imgfs::Result;
using imgfs::Status;
using imgfs::StatusCode;
using imgfs::registry::NormalizeTarPath;
using imgfs::registry::StringTarInput;
using imgfs::registry::TarEntry;
using imgfs::registry::TarEntryType;
using imgfs::registry::TarReader;
using imgfs::registry::TarWriter;

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "tar_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

struct Item {
  TarEntry entry;
  std::string data;
};

// Reads everything; false if the reader reported an error.
bool ReadAll(std::string_view input, std::vector<Item>* items) {
  StringTarInput in(input);
  TarReader reader(&in);
  while (true) {
    Result<std::optional<TarEntry>> e = reader.Next();
    if (!e.has_value()) return false;
    if (!e->has_value()) return true;
    Item item{std::move(**e), {}};
    const TarEntry& t = item.entry;
    Result<std::string> norm = NormalizeTarPath(t.name);
    if (!norm.has_value() || *norm != t.name) Fail("name not normalised", t.name);
    if (t.payload_offset % 512 != 0 || t.payload_offset > input.size() ||
        t.header_offset >= t.payload_offset) {
      Fail("bad offsets", t.name);
    }
    if (t.type != TarEntryType::kRegular && t.size != 0) Fail("size on non-file", t.name);
    if (t.mtime_nsec >= 1000000000) Fail("nsec out of range", t.name);
    if (t.type == TarEntryType::kHardlink) {
      Result<std::string> target = NormalizeTarPath(t.link_target);
      if (!target.has_value() || *target != t.link_target) Fail("hardlink target", t.link_target);
    }
    while (true) {
      Result<std::string> chunk = reader.ReadPayload(4096);
      if (!chunk.has_value()) return false;
      if (chunk->empty()) break;
      item.data += *chunk;
    }
    if (t.type == TarEntryType::kRegular && item.data.size() != t.size) {
      Fail("payload size differs from entry size", t.name);
    }
    if (input.substr(t.payload_offset, item.data.size()) != item.data) {
      Fail("payload not at payload_offset", t.name);
    }
    items->push_back(std::move(item));
  }
}

bool SameEntry(const TarEntry& a, const TarEntry& b) {
  return a.name == b.name && a.type == b.type && a.mode == b.mode && a.uid == b.uid &&
         a.gid == b.gid && a.uname == b.uname && a.gname == b.gname && a.size == b.size &&
         a.mtime_sec == b.mtime_sec && a.mtime_nsec == b.mtime_nsec &&
         a.link_target == b.link_target && a.dev_major == b.dev_major &&
         a.dev_minor == b.dev_minor && a.xattrs == b.xattrs;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<Item> items;
  if (!ReadAll(input, &items)) return 0;

  std::string out;
  TarWriter writer(&out);
  for (const Item& item : items) {
    Status st = writer.Add(item.entry, item.data);
    if (!st.ok()) {
      if (st.code() != StatusCode::kInvalidArgument) Fail("writer error", st.ToString());
      return 0;
    }
  }
  if (!writer.Finish().ok()) Fail("finish", "");

  std::vector<Item> again;
  if (!ReadAll(out, &again)) Fail("rewritten archive does not read back", "");
  if (again.size() != items.size()) Fail("entry count changed", std::to_string(again.size()));
  for (size_t i = 0; i < items.size(); ++i) {
    if (!SameEntry(items[i].entry, again[i].entry)) Fail("entry changed", items[i].entry.name);
    if (items[i].data != again[i].data) Fail("payload changed", items[i].entry.name);
  }
  return 0;
}
