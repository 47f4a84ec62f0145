// imgfs — test helpers for the lazy layer writers (fs/convert/layer_writer.h): a tar with
// every entry kind and a check that a LayerIndex built by the project's own TOC readers
// describes exactly the entries and bytes of the input tar (blobs are served by
// tests/support/fake_blob_source.h).
#ifndef IMGFS_TESTS_SUPPORT_LAZY_LAYER_CHECK_H_
#define IMGFS_TESTS_SUPPORT_LAZY_LAYER_CHECK_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "fs/layer/chunk_decoder.h"
#include "fs/layer/layer_index.h"
#include "registry/blob_source.h"
#include "registry/tar_reader.h"
#include "registry/tar_writer.h"

namespace imgfs::fs::testing {

// Deterministic bytes that compress a little (like real binaries).
inline std::string PatternBytes(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>((i % 7 == 0) ? (x & 0xff) : ('a' + (x % 13)));
  }
  return out;
}

// A layer tar covering every entry kind the writers must carry: directories (root too),
// files of 0, 1, chunk-1, chunk, chunk+1 and 2.5 chunks bytes, a zero-filled file, long and
// non-ASCII names (PAX), xattrs, uid/gid and names, setuid and sticky modes, negative and
// sub-second mtimes, symlinks, a hardlink, char/block devices, a fifo, whiteouts.
inline std::string RichLayerTar(uint64_t chunk) {
  std::string out;
  registry::TarWriter w(&out);
  auto add = [&w](registry::TarEntry e, std::string_view data = {}) {
    Status st = w.Add(std::move(e), data);
    EXPECT_TRUE(st.ok()) << st.ToString();
  };
  registry::TarEntry root = registry::DirEntry("");
  root.mtime_sec = 1704067200;
  add(root);
  registry::TarEntry etc = registry::DirEntry("etc");
  etc.mtime_sec = 1704067200;
  add(etc);
  registry::TarEntry passwd = registry::FileEntry("etc/passwd", 0);
  passwd.mtime_sec = 1704067200;
  passwd.mtime_nsec = 250000000;
  add(passwd, "root:x:0:0:root:/root:/bin/sh\n");
  add(registry::FileEntry("etc/empty", 0));
  add(registry::FileEntry("etc/one", 0), "1");
  registry::TarEntry data = registry::DirEntry("data", 01777);
  add(data);
  add(registry::FileEntry("data/below-chunk.bin", 0), PatternBytes(chunk - 1, 1));
  add(registry::FileEntry("data/exact-chunk.bin", 0), PatternBytes(chunk, 2));
  add(registry::FileEntry("data/above-chunk.bin", 0), PatternBytes(chunk + 1, 3));
  registry::TarEntry big = registry::FileEntry("data/big.bin", 0, 0755);
  big.mtime_sec = 1580608922;
  add(big, PatternBytes(chunk * 5 / 2, 4));
  add(registry::FileEntry("data/zeros.bin", 0), std::string(chunk * 2, '\0'));
  registry::TarEntry x = registry::FileEntry("data/xattr.txt", 0);
  x.xattrs["user.comment"] = "hello xattr";
  x.xattrs["user.binary"] = std::string("\x00\xff\x10", 3);
  add(x, "a file with xattrs\n");
  registry::TarEntry old = registry::FileEntry("data/pre-epoch.txt", 0);
  old.mtime_sec = -14182940;
  add(old, "one small step\n");
  std::string long_name = "data/" + std::string(120, 'n') + "/f\xc3\xa9.txt";
  registry::TarEntry long_dir = registry::DirEntry(long_name.substr(0, long_name.rfind('/')));
  add(long_dir);
  add(registry::FileEntry(long_name, 0), "long name\n");
  registry::TarEntry home = registry::DirEntry("home/user", 0750);
  home.uid = 1000;
  home.gid = 1000;
  home.uname = "user";
  home.gname = "users";
  add(home);
  registry::TarEntry setuid = registry::FileEntry("data/setuid", 0, 04755);
  add(setuid, "#!/bin/sh\n");
  registry::TarEntry link;
  link.name = "data/link";
  link.type = registry::TarEntryType::kSymlink;
  link.mode = 0777;
  link.link_target = "../etc/passwd";
  add(link);
  registry::TarEntry hard;
  hard.name = "data/hard";
  hard.type = registry::TarEntryType::kHardlink;
  hard.mode = 0755;
  hard.link_target = "data/big.bin";
  add(hard);
  registry::TarEntry null;
  null.name = "data/null";
  null.type = registry::TarEntryType::kChar;
  null.mode = 0666;
  null.dev_major = 1;
  null.dev_minor = 3;
  add(null);
  registry::TarEntry blk = null;
  blk.name = "data/loop0";
  blk.type = registry::TarEntryType::kBlock;
  blk.dev_major = 7;
  blk.dev_minor = 0;
  add(blk);
  registry::TarEntry fifo;
  fifo.name = "data/fifo";
  fifo.type = registry::TarEntryType::kFifo;
  fifo.mode = 0644;
  add(fifo);
  add(registry::WhiteoutEntry("etc/issue"));
  add(registry::OpaqueEntry("data"));
  EXPECT_TRUE(w.Finish().ok());
  return out;
}

struct TarItem {
  registry::TarEntry entry;
  std::string content;
};

// Every entry of `tar` with its payload. Fails the test on a malformed tar.
inline std::vector<TarItem> ReadTarItems(std::string_view tar) {
  std::vector<TarItem> out;
  registry::StringTarInput in(tar);
  registry::TarReader reader(&in);
  while (true) {
    auto next = reader.Next();
    EXPECT_TRUE(next.has_value()) << next.error().ToString();
    if (!next.has_value() || !next->has_value()) break;
    TarItem item{std::move(**next), {}};
    while (true) {
      auto piece = reader.ReadPayload(1 << 20);
      EXPECT_TRUE(piece.has_value());
      if (!piece.has_value() || piece->empty()) break;
      item.content += *piece;
    }
    out.push_back(std::move(item));
  }
  return out;
}

// Checks that `index` (built from the TOC of a blob served by `source`) lists every
// non-whiteout entry of `input` with equal metadata, and that every regular file's bytes read
// through its chunks (fetched, decoded and digest-verified by ReadChunks) equal the input.
// Returns the number of chunks read.
inline size_t ExpectIndexMatchesTar(const LayerIndex& index, registry::BlobSource& source,
                                    const std::vector<TarItem>& input) {
  std::map<std::string, const FileEntry*> by_path;
  for (const FileEntry& e : index.entries) {
    if (e.type != EntryType::kWhiteout && e.type != EntryType::kOpaque) by_path[e.path] = &e;
  }
  size_t chunks_read = 0;
  size_t whiteouts = 0;
  for (const TarItem& item : input) {
    const registry::TarEntry& t = item.entry;
    std::string base =
        t.name.substr(t.name.rfind('/') == std::string::npos ? 0 : t.name.rfind('/') + 1);
    if (base.rfind(".wh.", 0) == 0) {
      ++whiteouts;
      continue;
    }
    auto it = by_path.find(t.name);
    if (it == by_path.end()) {
      ADD_FAILURE() << "missing from the index: '" << t.name << "'";
      continue;
    }
    const FileEntry& e = *it->second;
    SCOPED_TRACE("entry " + t.name);
    EXPECT_EQ(e.mode, t.mode);
    EXPECT_EQ(e.uid, t.uid);
    EXPECT_EQ(e.gid, t.gid);
    EXPECT_EQ(e.mtime_sec, t.mtime_sec);
    switch (t.type) {
      case registry::TarEntryType::kRegular: {
        EXPECT_EQ(e.type, EntryType::kRegular);
        EXPECT_EQ(e.size, item.content.size());
        std::vector<uint32_t> ids;
        for (uint32_t c = e.first_chunk; c < e.first_chunk + e.chunk_count; ++c) ids.push_back(c);
        auto got = ReadChunks(source, index, ids);
        EXPECT_TRUE(got.has_value()) << got.error().ToString();
        if (!got.has_value()) break;
        std::string bytes;
        for (const std::string& piece : *got) bytes += piece;
        EXPECT_TRUE(bytes == item.content)
            << "content differs (" << bytes.size() << " vs " << item.content.size() << " bytes)";
        chunks_read += ids.size();
        break;
      }
      case registry::TarEntryType::kDirectory:
        EXPECT_EQ(e.type, EntryType::kDirectory);
        break;
      case registry::TarEntryType::kSymlink:
        EXPECT_EQ(e.type, EntryType::kSymlink);
        EXPECT_EQ(e.link_target, t.link_target);
        break;
      case registry::TarEntryType::kHardlink:
        EXPECT_EQ(e.type, EntryType::kHardlink);
        EXPECT_EQ(e.link_target, t.link_target);
        break;
      case registry::TarEntryType::kChar:
      case registry::TarEntryType::kBlock:
        EXPECT_EQ(e.type,
                  t.type == registry::TarEntryType::kChar ? EntryType::kChar : EntryType::kBlock);
        EXPECT_EQ(e.dev_major, t.dev_major);
        EXPECT_EQ(e.dev_minor, t.dev_minor);
        break;
      case registry::TarEntryType::kFifo:
        EXPECT_EQ(e.type, EntryType::kFifo);
        break;
    }
    std::vector<std::pair<std::string, std::string>> xattrs(t.xattrs.begin(), t.xattrs.end());
    EXPECT_EQ(e.xattrs, xattrs);
  }
  size_t index_whiteouts = 0;
  for (const FileEntry& e : index.entries) {
    if (e.type == EntryType::kWhiteout || e.type == EntryType::kOpaque) ++index_whiteouts;
  }
  EXPECT_EQ(index_whiteouts, whiteouts);
  return chunks_read;
}

}  // namespace imgfs::fs::testing

#endif  // IMGFS_TESTS_SUPPORT_LAZY_LAYER_CHECK_H_
