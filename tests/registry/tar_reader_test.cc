// imgfs — TarReader tests: the real fixture layers (Go archive/tar, GNU tar), archives written
// by GNU tar in the test, and hand-made headers for the edge cases (base-256, PAX times,
// checksums, truncation, escapes).
#include "registry/tar_reader.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/temp_dir.h"

namespace imgfs::registry {
namespace {

std::string FixturesDir() {
  const char* env = std::getenv("IMGFS_FIXTURES");
  return env != nullptr ? env : IMGFS_FIXTURES_DIR;
}

// Layer blobs of tiny-uncompressed (plain tar; see fixtures/README.md and digests.txt).
constexpr char kLayer1[] = "38e00d1b027e96c818422989f8c660d9d7bdfd0117e81d5051b15e466eebd6b4";
constexpr char kLayer2[] = "f16a55d2a8c72d0453585bc8c3ee2850b7694b22a97b6fe80b70c1cf75ed6301";
constexpr char kLayer3[] = "947dabc3c40a9b482644ac45fe1f6e49de73a06a12fac2afcac2383339648153";

std::string LayerPath(const char* hex) {
  return FixturesDir() + "/tiny-uncompressed/blobs/sha256/" + hex;
}

struct ReadAll {
  Status status;
  std::vector<TarEntry> entries;
  std::map<std::string, std::string> data;  // name → payload of regular files
  uint64_t end_offset = 0;
};

ReadAll ReadArchive(TarInput* input) {
  ReadAll out;
  TarReader reader(input);
  while (true) {
    Result<std::optional<TarEntry>> e = reader.Next();
    if (!e.has_value()) {
      out.status = e.error();
      return out;
    }
    if (!e->has_value()) break;
    TarEntry entry = std::move(**e);
    std::string payload;
    while (true) {
      Result<std::string> chunk = reader.ReadPayload(4096);
      if (!chunk.has_value()) {
        out.status = chunk.error();
        return out;
      }
      if (chunk->empty()) break;
      payload += *chunk;
    }
    if (entry.type == TarEntryType::kRegular) out.data[entry.name] = payload;
    out.entries.push_back(std::move(entry));
  }
  out.end_offset = reader.offset();
  return out;
}

const TarEntry* Find(const ReadAll& r, const std::string& name) {
  for (const TarEntry& e : r.entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::string Hex(std::string_view s) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// A hand-made ustar header. Fields not given are zero; the checksum is computed last.
struct Hdr {
  std::string name;
  char type = '0';
  std::string size_field;  // raw 12 bytes (overrides size)
  uint64_t size = 0;
  std::string uid_field;
  std::string mtime_field;
  std::string linkname;
  std::string magic = std::string("ustar\0", 6);
  std::string version = "00";
  uint32_t major = 0;
  uint32_t minor = 0;
};

void PutOctal(std::string* b, size_t off, size_t len, uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(len - 1),
                static_cast<unsigned long long>(v));
  b->replace(off, len - 1, buf, len - 1);
}

std::string Header(const Hdr& h, bool signed_sum = false) {
  std::string b(512, '\0');
  b.replace(0, std::min<size_t>(h.name.size(), 100), h.name.substr(0, 100));
  PutOctal(&b, 100, 8, 0644);
  PutOctal(&b, 108, 8, 0);
  PutOctal(&b, 116, 8, 0);
  PutOctal(&b, 124, 12, h.size);
  if (!h.size_field.empty()) b.replace(124, 12, h.size_field);
  if (!h.uid_field.empty()) b.replace(108, 8, h.uid_field);
  PutOctal(&b, 136, 12, 1700000000);
  if (!h.mtime_field.empty()) b.replace(136, 12, h.mtime_field);
  b[156] = h.type;
  b.replace(157, h.linkname.size(), h.linkname);
  b.replace(257, 6, h.magic);
  b.replace(263, 2, h.version);
  PutOctal(&b, 329, 8, h.major);
  PutOctal(&b, 337, 8, h.minor);
  int64_t sum = 0;
  b.replace(148, 8, "        ");
  for (char c : b) sum += signed_sum ? static_cast<signed char>(c) : static_cast<unsigned char>(c);
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06llo", static_cast<unsigned long long>(sum));
  b.replace(148, 6, buf, 6);
  b[154] = '\0';
  return b;
}

std::string Pad(std::string data) {
  data.resize((data.size() + 511) / 512 * 512, '\0');
  return data;
}

std::string PaxRecord(const std::string& key, const std::string& value) {
  size_t base = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t len = base + 1;
  while (std::to_string(len).size() + base != len) ++len;
  return std::to_string(len) + " " + key + "=" + value + "\n";
}

std::string PaxEntry(const std::string& records, char type = 'x') {
  Hdr h;
  h.name = "PaxHeaders/x";
  h.type = type;
  h.size = records.size();
  return Header(h) + Pad(records);
}

std::string File(const std::string& name, const std::string& content) {
  Hdr h;
  h.name = name;
  h.size = content.size();
  return Header(h) + Pad(content);
}

const std::string kEnd(1024, '\0');

ReadAll ReadString(const std::string& tar) {
  StringTarInput in(tar);
  return ReadArchive(&in);
}

using ::imgfs::testing::TempDir;

TEST(TarReaderFixture, Layer1MatchesReadme) {
  Result<UniqueFd> fd = OpenFile(LayerPath(kLayer1), O_RDONLY);
  ASSERT_TRUE(fd.has_value()) << fd.error().ToString() << " (fixtures: " << FixturesDir() << ")";
  struct stat st;
  ASSERT_EQ(fstat(fd->get(), &st), 0);
  FdTarInput in(fd->get(), 0, static_cast<uint64_t>(st.st_size));
  ReadAll r = ReadArchive(&in);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_LE(r.end_offset, static_cast<uint64_t>(st.st_size));

  ASSERT_FALSE(r.entries.empty());
  EXPECT_EQ(r.entries[0].name, "");  // the root, written as "."
  EXPECT_EQ(r.entries[0].type, TarEntryType::kDirectory);
  EXPECT_EQ(r.entries[0].header_offset, 0u);

  const TarEntry* busybox = Find(r, "bin/busybox");
  ASSERT_NE(busybox, nullptr);
  EXPECT_EQ(busybox->type, TarEntryType::kRegular);
  EXPECT_EQ(busybox->size, 1982256u);
  EXPECT_EQ(busybox->mode, 0755u);
  EXPECT_EQ(Digest::Sha256Of(r.data["bin/busybox"]).hex(),
            "3d9f2889d6782537624a4e1a10e68a2ddd53e0ee8bac02676f27308f42ec6bf6");
  for (const char* name : {"bin/sh", "bin/ls", "bin/cat", "bin/echo", "bin/env"}) {
    const TarEntry* e = Find(r, name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->type, TarEntryType::kHardlink) << name;
    EXPECT_EQ(e->link_target, "bin/busybox") << name;
    EXPECT_EQ(e->size, 0u) << name;
  }

  // PAX path records: a 183-byte path and a UTF-8 name.
  const std::string long_path =
      "data/deep/a/b/c/d/e/f/g/h/"
      "long-file-name-long-file-name-long-file-name-long-file-name-long-file-name-long-file-"
      "name-long-file-name-long-file-name-long-file-name-long-file-name-end.txt";
  const TarEntry* deep = Find(r, long_path);
  ASSERT_NE(deep, nullptr);
  EXPECT_EQ(deep->size, 35u);
  EXPECT_EQ(Digest::Sha256Of(r.data[long_path]).hex(),
            "0ff76c03b6a0e8d1fc97bacd33016eb6a4d3701dabd18a6cbf3eebdcbb5263cb");
  const TarEntry* utf8 = Find(r, "data/h\xc3\xa9llo w\xc3\xb6rld.txt");
  ASSERT_NE(utf8, nullptr);
  EXPECT_EQ(utf8->size, 11u);

  const TarEntry* xattr = Find(r, "data/xattr.txt");
  ASSERT_NE(xattr, nullptr);
  EXPECT_EQ(xattr->xattrs.size(), 2u);
  EXPECT_EQ(xattr->xattrs.at("user.fixture.comment"), "hello xattr");
  EXPECT_EQ(xattr->xattrs.at("user.fixture.binary"), std::string("\x00\xff\x10", 3));
  const TarEntry* netcap = Find(r, "usr/bin/netcap-tool");
  ASSERT_NE(netcap, nullptr);
  EXPECT_EQ(Hex(netcap->xattrs.at("security.capability")),
            "0100000200200000000000000000000000000000");

  const TarEntry* pre = Find(r, "data/pre-epoch.txt");
  ASSERT_NE(pre, nullptr);
  EXPECT_EQ(pre->mtime_sec, -14182940);
  EXPECT_EQ(pre->mtime_nsec, 0u);
  const TarEntry* osr = Find(r, "etc/os-release");
  ASSERT_NE(osr, nullptr);
  EXPECT_EQ(osr->mtime_sec, 981173106);  // 2001-02-03T04:05:06Z

  const TarEntry* fifo = Find(r, "data/fifo");
  ASSERT_NE(fifo, nullptr);
  EXPECT_EQ(fifo->type, TarEntryType::kFifo);
  EXPECT_EQ(fifo->mode, 0644u);
  const TarEntry* null = Find(r, "dev/null");
  ASSERT_NE(null, nullptr);
  EXPECT_EQ(null->type, TarEntryType::kChar);
  EXPECT_EQ(null->dev_major, 1u);
  EXPECT_EQ(null->dev_minor, 3u);
  EXPECT_EQ(null->mode, 0666u);

  EXPECT_EQ(Find(r, "usr/bin/setuid-tool")->mode, 04755u);
  EXPECT_EQ(Find(r, "tmp")->mode, 01777u);
  EXPECT_EQ(Find(r, "tmp")->type, TarEntryType::kDirectory);
  const TarEntry* notes = Find(r, "home/user/notes.txt");
  ASSERT_NE(notes, nullptr);
  EXPECT_EQ(notes->uid, 1000u);
  EXPECT_EQ(notes->gid, 1000u);
  EXPECT_EQ(notes->mode, 0600u);

  const TarEntry* dangling = Find(r, "data/link-dangling");
  ASSERT_NE(dangling, nullptr);
  EXPECT_EQ(dangling->type, TarEntryType::kSymlink);
  EXPECT_EQ(dangling->link_target, "/nonexistent/target");
  EXPECT_EQ(Find(r, "data/link-relative")->link_target, "../etc/os-release");

  // payload_offset points at the file's bytes in the stream.
  const TarEntry* random = Find(r, "data/random.bin");
  ASSERT_NE(random, nullptr);
  EXPECT_EQ(random->payload_offset % 512, 0u);
  EXPECT_GT(random->payload_offset, random->header_offset);
  Result<std::string> direct = PreadAll(fd->get(), random->payload_offset, random->size);
  ASSERT_TRUE(direct.has_value());
  EXPECT_EQ(Digest::Sha256Of(*direct).hex(),
            "b352facbb4d47b2624c165c80047e487c3a60b0370ec4599a70d0a94f1036f9d");
}

TEST(TarReaderFixture, Layer2WhiteoutsAreEmptyFiles) {
  Result<std::string> data = ReadFile(LayerPath(kLayer2));
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  ReadAll r = ReadString(*data);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  const TarEntry* wh = Find(r, "etc/.wh.issue");
  ASSERT_NE(wh, nullptr);
  EXPECT_EQ(wh->type, TarEntryType::kRegular);
  EXPECT_EQ(wh->size, 0u);
  EXPECT_EQ(wh->mode, 0u);
  ASSERT_NE(Find(r, "usr/share/doc/.wh.x"), nullptr);
  EXPECT_EQ(Find(r, "usr"), nullptr);
  EXPECT_EQ(Find(r, "opt/app")->type, TarEntryType::kRegular);
  EXPECT_EQ(Find(r, "data/changeme.txt")->mode, 0600u);
}

TEST(TarReaderFixture, Layer3GnuLongNameAndHardlinks) {
  Result<std::string> data = ReadFile(LayerPath(kLayer3));
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  ReadAll r = ReadString(*data);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  const std::string gnu =
      "data/layer3/gnu-long-name-gnu-long-name-gnu-long-name-gnu-long-name-gnu-long-name-gnu-"
      "long-name-gnu-long-name-gnu-long-name-end.txt";
  const TarEntry* e = Find(r, gnu);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->size, 30u);
  EXPECT_EQ(Digest::Sha256Of(r.data[gnu]).hex(),
            "be58960dfc19bed9b506c5a9b1702549f68b5f157d43a438c567747a5cef5178");
  // header_offset covers the ././@LongLink header; the payload follows 3 blocks later
  // (LongLink header, its 1-block payload, the entry header).
  EXPECT_EQ(e->payload_offset - e->header_offset, 3u * 512);
  const TarEntry* b = Find(r, "data/layer3/hardlink-b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->type, TarEntryType::kHardlink);
  EXPECT_EQ(b->link_target, "data/layer3/hardlink-a");
  const TarEntry* opq = Find(r, "etc/conf.d/.wh..wh..opq");
  ASSERT_NE(opq, nullptr);
  EXPECT_EQ(opq->type, TarEntryType::kRegular);
  EXPECT_EQ(e->mtime_sec, 1709251200);  // 2024-03-01T00:00:00Z
}

TEST(TarReaderFixture, TruncatedLayerIsCorruptWithNameAndOffset) {
  Result<std::string> data = ReadFile(LayerPath(kLayer1));
  ASSERT_TRUE(data.has_value()) << data.error().ToString();
  // Cut inside busybox's payload: the reader must name the entry.
  ReadAll full = ReadString(*data);
  const TarEntry* busybox = Find(full, "bin/busybox");
  ASSERT_NE(busybox, nullptr);
  std::string cut = data->substr(0, busybox->payload_offset + 1000);
  ReadAll r = ReadString(cut);
  EXPECT_EQ(r.status.code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status.message().find("bin/busybox"), std::string::npos) << r.status.ToString();
  EXPECT_NE(r.status.message().find("offset"), std::string::npos) << r.status.ToString();
  // Skipping (no ReadPayload) over the cut fails the same way.
  StringTarInput in(cut);
  TarReader reader(&in);
  Status last;
  while (true) {
    Result<std::optional<TarEntry>> e = reader.Next();
    if (!e.has_value()) {
      last = e.error();
      break;
    }
    ASSERT_TRUE(e->has_value()) << "reached the end of a truncated archive";
  }
  EXPECT_EQ(last.code(), StatusCode::kCorrupt);
  EXPECT_NE(last.message().find("bin/busybox"), std::string::npos) << last.ToString();
  // Cut inside a header.
  ReadAll h = ReadString(data->substr(0, busybox->header_offset + 100));
  EXPECT_EQ(h.status.code(), StatusCode::kCorrupt) << h.status.ToString();
}

TEST(TarReaderGnuTar, ReadsWhatGnuTarWrites) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string root = dir.path() + "/root";
  const std::string long_name(150, 'n');
  ASSERT_TRUE(MakeDirs(root + "/sub").ok());
  ASSERT_TRUE(WriteFileAtomic(root + "/sub/" + long_name, "long\n").ok());
  ASSERT_TRUE(WriteFileAtomic(root + "/small", "hello\n").ok());
  ASSERT_EQ(symlink(("../" + std::string(120, 't')).c_str(), (root + "/sub/sym").c_str()), 0);
  // GNU format: ././@LongLink for the name and the link, base-256 for a huge uid and a
  // pre-1900 mtime; default 10 KiB records padded with zeros after the end blocks.
  std::string cmd = "cd '" + root +
                    "' && tar --format=gnu --numeric-owner --owner=3000000000 --group=7 "
                    "--mtime=@-3000000000 -cf ../gnu.tar small sub 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Result<std::string> gnu = ReadFile(dir.path() + "/gnu.tar");
  ASSERT_TRUE(gnu.has_value());
  EXPECT_EQ(gnu->size() % 10240, 0u);
  ReadAll r = ReadString(*gnu);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  const TarEntry* small = Find(r, "small");
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(small->uid, 3000000000u);
  EXPECT_EQ(small->gid, 7u);
  EXPECT_EQ(small->mtime_sec, -3000000000LL);
  EXPECT_EQ(r.data["small"], "hello\n");
  EXPECT_EQ(r.data["sub/" + long_name], "long\n");
  const TarEntry* sym = Find(r, "sub/sym");
  ASSERT_NE(sym, nullptr);
  EXPECT_EQ(sym->link_target, "../" + std::string(120, 't'));
  EXPECT_EQ(Find(r, "sub")->type, TarEntryType::kDirectory);

  // POSIX (pax) format with sub-second mtimes and xattrs from GNU tar.
  cmd = "cd '" + root +
        "' && tar --format=posix --pax-option=delete=atime,delete=ctime "
        "--mtime='@1700000000.25' -cf ../pax.tar small sub 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  Result<std::string> pax = ReadFile(dir.path() + "/pax.tar");
  ASSERT_TRUE(pax.has_value());
  ReadAll p = ReadString(*pax);
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  ASSERT_NE(Find(p, "small"), nullptr);
  EXPECT_EQ(Find(p, "small")->mtime_sec, 1700000000);
  EXPECT_EQ(Find(p, "small")->mtime_nsec, 250000000u);
  EXPECT_EQ(p.data["sub/" + long_name], "long\n");
  EXPECT_EQ(Find(p, "sub/sym")->link_target, "../" + std::string(120, 't'));
}

TEST(TarReader, PaxTimesSizesAndGlobals) {
  std::string tar = PaxEntry(PaxRecord("uname", "global-user"), 'g');
  tar += PaxEntry(PaxRecord("mtime", "-1.5") + PaxRecord("uid", "4000000000") +
                  PaxRecord("path", "dir/" + std::string(200, 'p')) +
                  PaxRecord("LIBARCHIVE.xattr.user.a%3Db", "AP8Q") +
                  PaxRecord("SCHILY.xattr.user.empty", ""));
  tar += File("ignored-name", "abc");
  tar += PaxEntry(PaxRecord("mtime", "1.000000001999"));
  tar += File("b", "");
  tar += kEnd;
  ReadAll r = ReadString(tar);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.entries.size(), 2u);
  const TarEntry& a = r.entries[0];
  EXPECT_EQ(a.name, "dir/" + std::string(200, 'p'));
  EXPECT_EQ(a.mtime_sec, -2);
  EXPECT_EQ(a.mtime_nsec, 500000000u);
  EXPECT_EQ(a.uid, 4000000000u);
  EXPECT_EQ(a.uname, "global-user");
  EXPECT_EQ(a.xattrs.at("user.a=b"), std::string("\x00\xff\x10", 3));
  EXPECT_EQ(a.xattrs.at("user.empty"), "");
  EXPECT_EQ(a.header_offset, 512u * 2);
  EXPECT_EQ(r.data[a.name], "abc");
  EXPECT_EQ(r.entries[1].mtime_sec, 1);
  EXPECT_EQ(r.entries[1].mtime_nsec, 1u);
  EXPECT_EQ(r.entries[1].uname, "global-user");
  EXPECT_EQ(r.entries[1].uid, 0u);  // per-entry PAX does not leak
}

TEST(TarReader, Base256AndSignedChecksum) {
  Hdr h;
  h.name = "caf\xc3\xa9";  // bytes > 127 make signed and unsigned sums differ
  h.size_field = std::string("\x80\0\0\0\0\0\0\0\0\0\0\x05", 12);
  h.uid_field = std::string("\x80\0\0\0\x7f\xff\xff\xff", 8);
  h.mtime_field = std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe", 12);
  std::string tar = Header(h, /*signed_sum=*/true) + Pad("12345") + kEnd;
  ReadAll r = ReadString(tar);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].size, 5u);
  EXPECT_EQ(r.entries[0].uid, 0x7fffffffu);
  EXPECT_EQ(r.entries[0].mtime_sec, -2);
  EXPECT_EQ(r.data["caf\xc3\xa9"], "12345");
}

TEST(TarReader, EntryTypesAndV7) {
  Hdr dev;
  dev.name = "dev/sda";
  dev.type = '4';
  dev.major = 8;
  dev.minor = 1;
  Hdr dir;
  dir.name = "./old-dir/";
  dir.type = '\0';
  dir.magic = std::string(6, '\0');
  dir.version = std::string(2, '\0');
  Hdr contiguous;
  contiguous.name = "c";
  contiguous.type = '7';
  Hdr sym;
  sym.name = "s";
  sym.type = '2';
  sym.linkname = "/abs/target";
  Hdr hard;
  hard.name = "h";
  hard.type = '1';
  hard.linkname = "./dir//c";
  std::string tar = Header(dev) + Header(dir) + Header(contiguous) + Header(sym) + Header(hard);
  ReadAll r = ReadString(tar);  // no end-of-archive blocks: accepted
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.entries.size(), 5u);
  EXPECT_EQ(r.entries[0].type, TarEntryType::kBlock);
  EXPECT_EQ(r.entries[0].dev_major, 8u);
  EXPECT_EQ(r.entries[0].dev_minor, 1u);
  EXPECT_EQ(r.entries[1].type, TarEntryType::kDirectory);
  EXPECT_EQ(r.entries[1].name, "old-dir");
  EXPECT_EQ(r.entries[2].type, TarEntryType::kRegular);
  EXPECT_EQ(r.entries[3].link_target, "/abs/target");
  EXPECT_EQ(r.entries[4].link_target, "dir/c");
  EXPECT_EQ(r.end_offset, tar.size());
}

TEST(TarReader, RejectsBadInput) {
  struct Case {
    const char* what;
    std::string tar;
    StatusCode code;
  };
  Hdr bad_sum;
  bad_sum.name = "x";
  std::string corrupted = Header(bad_sum);
  corrupted[0] = 'y';
  Hdr escape_link;
  escape_link.name = "l";
  escape_link.type = '1';
  escape_link.linkname = "../../etc/shadow";
  Hdr huge;
  huge.name = "huge";
  huge.size_field = std::string("\x80\0\0\0\0\0\x01\0\0\0\0\0", 12);  // 2^48
  Hdr past_end;
  past_end.name = "past";
  past_end.size = 1 << 20;
  Hdr neg;
  neg.name = "neg";
  neg.size_field = std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe", 12);
  Hdr sparse;
  sparse.name = "sp";
  sparse.type = 'S';
  std::vector<Case> cases = {
      {"dotdot", File("../escape", "x") + kEnd, StatusCode::kCorrupt},
      {"dotdot-deep", File("a/../../escape", "x") + kEnd, StatusCode::kCorrupt},
      {"absolute", File("/etc/passwd", "x") + kEnd, StatusCode::kCorrupt},
      {"nul in pax path", PaxEntry(PaxRecord("path", std::string("a\0b", 3))) + File("a", ""),
       StatusCode::kCorrupt},
      {"checksum", corrupted + kEnd, StatusCode::kCorrupt},
      {"hardlink escape", Header(escape_link) + kEnd, StatusCode::kCorrupt},
      {"absurd size", Header(huge) + kEnd, StatusCode::kCorrupt},
      {"size past end", Header(past_end) + kEnd, StatusCode::kCorrupt},
      {"negative size", Header(neg) + kEnd, StatusCode::kCorrupt},
      {"pax absurd size", PaxEntry(PaxRecord("size", "9999999999999999")) + File("a", ""),
       StatusCode::kCorrupt},
      {"bad pax record", PaxEntry("7 a=b\n") + File("a", ""), StatusCode::kCorrupt},
      {"pax bad mtime", PaxEntry(PaxRecord("mtime", "12x")) + File("a", ""), StatusCode::kCorrupt},
      {"pax then eof", PaxEntry(PaxRecord("path", "z")), StatusCode::kCorrupt},
      {"partial header", std::string(100, 'a'), StatusCode::kCorrupt},
      {"sparse", Header(sparse) + kEnd, StatusCode::kUnsupported},
      {"not a tar", std::string(1024, 'z'), StatusCode::kCorrupt},
  };
  for (const Case& c : cases) {
    ReadAll r = ReadString(c.tar);
    EXPECT_EQ(r.status.code(), c.code) << c.what << ": " << r.status.ToString();
  }
  // The offending entry is named.
  ReadAll r = ReadString(File("../escape", "x") + kEnd);
  EXPECT_NE(r.status.message().find("../escape"), std::string::npos) << r.status.ToString();
}

TEST(TarReader, StopsAtEndBlocksAndIgnoresPadding) {
  std::string tar = File("a", "1") + kEnd + std::string(8192, '\0') + File("after", "2");
  ReadAll r = ReadString(tar);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.end_offset, 1024u + 1024u);
  // After the end, Next keeps returning nullopt.
  StringTarInput in(tar);
  TarReader reader(&in);
  ASSERT_TRUE(reader.Next()->has_value());
  EXPECT_FALSE(reader.Next()->has_value());
  EXPECT_FALSE(reader.Next()->has_value());
}

TEST(TarReader, NormalizeTarPath) {
  std::vector<std::pair<std::string, std::string>> ok = {
      {".", ""},          {"./", ""},        {"./a", "a"},    {"a/", "a"},
      {"a//b", "a/b"},    {"a/./b/", "a/b"}, {"a/../b", "b"}, {"./a/b/..", "a"},
      {".wh.x", ".wh.x"}, {"..a/b", "..a/b"}};
  for (const auto& [in, want] : ok) {
    Result<std::string> got = NormalizeTarPath(in);
    ASSERT_TRUE(got.has_value()) << in << ": " << got.error().ToString();
    EXPECT_EQ(*got, want) << in;
  }
  for (std::string bad : {std::string(".."), std::string("../a"), std::string("a/../../b"),
                          std::string("/a"), std::string("a\0b", 3)}) {
    Result<std::string> got = NormalizeTarPath(bad);
    EXPECT_FALSE(got.has_value()) << bad;
    EXPECT_EQ(got.error().code(), StatusCode::kCorrupt) << bad;
  }
}

// Issue 9, finding 7: PAX amplification. Each limit is a Corrupt status naming it.
TEST(TarReaderLimits, XattrInAGlobalHeaderIsRefused) {
  // Before: copied into every later entry (1 MiB × each entry).
  std::string tar = PaxEntry(PaxRecord("SCHILY.xattr.user.big", std::string(1 << 20, 'v')), 'g');
  for (int i = 0; i < 3; ++i) tar += File("f" + std::to_string(i), "");
  ReadAll r = ReadString(tar + kEnd);
  EXPECT_EQ(r.status.code(), StatusCode::kCorrupt) << r.status.ToString();
  EXPECT_NE(r.status.message().find("global PAX header carries xattr"), std::string::npos)
      << r.status.ToString();
  EXPECT_TRUE(r.entries.empty());
  // LIBARCHIVE.xattr.* too.
  ReadAll l = ReadString(PaxEntry(PaxRecord("LIBARCHIVE.xattr.user.a", "dg=="), 'g') +
                         File("f", "") + kEnd);
  EXPECT_EQ(l.status.code(), StatusCode::kCorrupt) << l.status.ToString();
}

TEST(TarReaderLimits, GlobalAttributesAreBounded) {
  std::string tar = PaxEntry(PaxRecord("comment", std::string(kMaxGlobalPaxBytes, 'c')), 'g');
  ReadAll r = ReadString(tar + File("f", "") + kEnd);
  EXPECT_EQ(r.status.code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status.message().find("kMaxGlobalPaxBytes"), std::string::npos)
      << r.status.ToString();
  // A git-archive style comment is fine and applies to no file attribute.
  ReadAll ok =
      ReadString(PaxEntry(PaxRecord("comment", std::string(40, 'a')), 'g') + File("f", "x") + kEnd);
  ASSERT_TRUE(ok.status.ok()) << ok.status.ToString();
  EXPECT_EQ(ok.data["f"], "x");
}

TEST(TarReaderLimits, ChainOfExtendedHeadersIsBoundedInTotal) {
  // 1000 stacked 'x' headers of 20 KiB each (distinct keys): 20 MB pending for one entry.
  // Before: all accumulated (each header alone is under the 16 MiB per-header limit).
  std::string tar;
  const std::string value(20 << 10, 'v');
  for (int i = 0; i < 1000; ++i) {
    tar += PaxEntry(PaxRecord("SCHILY.xattr.user.k" + std::to_string(i), value));
  }
  tar += File("victim", "") + kEnd;
  ReadAll r = ReadString(tar);
  EXPECT_EQ(r.status.code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status.message().find("kMaxPendingHeaderBytes"), std::string::npos)
      << r.status.ToString();
  EXPECT_TRUE(r.entries.empty());
}

TEST(TarReaderLimits, XattrsPerEntryCountNameAndValue) {
  std::string many;
  for (size_t i = 0; i <= kMaxXattrsPerEntry; ++i) {
    many += PaxRecord("SCHILY.xattr.user." + std::to_string(i), "v");
  }
  ReadAll count = ReadString(PaxEntry(many) + File("f", "") + kEnd);
  EXPECT_NE(count.status.message().find("kMaxXattrsPerEntry"), std::string::npos)
      << count.status.ToString();

  ReadAll name = ReadString(PaxEntry(PaxRecord("SCHILY.xattr.user." + std::string(251, 'n'), "v")) +
                            File("f", "") + kEnd);
  EXPECT_NE(name.status.message().find("kMaxXattrNameBytes"), std::string::npos)
      << name.status.ToString();

  ReadAll value = ReadString(
      PaxEntry(PaxRecord("SCHILY.xattr.user.v", std::string(kMaxXattrValueBytes + 1, 'v'))) +
      File("f", "") + kEnd);
  EXPECT_NE(value.status.message().find("kMaxXattrValueBytes"), std::string::npos)
      << value.status.ToString();

  // At the limits: accepted.
  ReadAll ok = ReadString(PaxEntry(PaxRecord("SCHILY.xattr.user." + std::string(250, 'n'),
                                             std::string(kMaxXattrValueBytes, 'v'))) +
                          File("f", "") + kEnd);
  ASSERT_TRUE(ok.status.ok()) << ok.status.ToString();
  EXPECT_EQ(ok.entries[0].xattrs.begin()->second.size(), kMaxXattrValueBytes);
}

TEST(TarReaderLimits, XattrBytesOfTheArchiveAreBounded) {
  // 64 KiB values on 1100 files: 70 MB of xattrs in total, each entry within its limits.
  const std::string one = PaxEntry(PaxRecord("SCHILY.xattr.user.v", std::string(60 << 10, 'v')));
  std::string tar;
  const size_t files = kMaxXattrBytesPerArchive / (60 << 10) + 2;
  for (size_t i = 0; i < files; ++i) tar += one + File("f" + std::to_string(i), "");
  ReadAll r = ReadString(tar + kEnd);
  EXPECT_EQ(r.status.code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status.message().find("kMaxXattrBytesPerArchive"), std::string::npos)
      << r.status.ToString();
}

}  // namespace
}  // namespace imgfs::registry
