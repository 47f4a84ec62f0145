// imgfs — TarWriter tests: round trips through TarReader, and GNU tar as an oracle
// (`tar -tvf` listing and `tar -x` extraction of what we write).
#include "registry/tar_writer.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "registry/tar_reader.h"
#include "tests/support/temp_dir.h"

namespace imgfs::registry {
namespace {

using ::imgfs::testing::TempDir;

// Runs a shell command, returns its stdout (and exit status through *rc).
std::string RunShell(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    *rc = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *rc = pclose(p);
  return out;
}

struct Item {
  TarEntry entry;
  std::string data;
};

const std::string kLongDir = "deep/" + std::string(120, 'd');
const std::string kLongName = kLongDir + "/" + std::string(140, 'f') + ".txt";
const std::string kLongLink = "../" + std::string(150, 'l');

std::vector<Item> SampleItems() {
  std::vector<Item> items;
  auto add = [&](TarEntry e, std::string data = "") {
    items.push_back({std::move(e), std::move(data)});
  };
  TarEntry root = DirEntry("");
  root.mtime_sec = 1704067200;
  add(root);
  add(DirEntry("deep"));
  add(DirEntry(kLongDir));
  TarEntry f = FileEntry(kLongName, 0);
  f.mtime_sec = 1704067200;
  f.mtime_nsec = 123456789;
  add(f, "long name content\n");
  TarEntry big_ids = FileEntry("ids", 0, 04755);
  big_ids.uid = 3000000000u;
  big_ids.gid = 2500000000u;
  big_ids.uname = "a-user-name-that-is-longer-than-thirty-two-bytes";
  big_ids.gname = "g";
  add(big_ids, std::string(1000, 'x'));
  TarEntry pre = FileEntry("pre-epoch.txt", 0);
  pre.mtime_sec = -14182940;
  add(pre, "before 1970\n");
  TarEntry frac_neg = FileEntry("neg-frac", 0);
  frac_neg.mtime_sec = -2;
  frac_neg.mtime_nsec = 500000000;  // -1.5 s
  add(frac_neg);
  TarEntry x = FileEntry("xattr.txt", 0);
  x.xattrs["user.comment"] = "hello xattr";
  x.xattrs["user.binary"] = std::string("\x00\xff\x10", 3);
  add(x, "with xattrs\n");
  TarEntry utf8 = FileEntry("h\xc3\xa9llo w\xc3\xb6rld.txt", 0);
  add(utf8, "utf8\n");
  TarEntry sym;
  sym.name = "long-link";
  sym.type = TarEntryType::kSymlink;
  sym.mode = 0777;
  sym.link_target = kLongLink;
  add(sym);
  TarEntry hard;
  hard.name = "hard";
  hard.type = TarEntryType::kHardlink;
  hard.mode = 0644;
  hard.link_target = "ids";
  add(hard);
  TarEntry fifo;
  fifo.name = "fifo";
  fifo.type = TarEntryType::kFifo;
  fifo.mode = 0600;
  add(fifo);
  TarEntry chr;
  chr.name = "null";
  chr.type = TarEntryType::kChar;
  chr.mode = 0666;
  chr.dev_major = 1;
  chr.dev_minor = 3;
  add(chr);
  TarEntry tmp = DirEntry("tmp", 01777);
  add(tmp);
  add(WhiteoutEntry("etc/issue"));
  add(OpaqueEntry("etc/conf.d"));
  return items;
}

std::string WriteItems(const std::vector<Item>& items) {
  std::string out;
  TarWriter w(&out);
  for (const Item& it : items) {
    Status st = w.Add(it.entry, it.data);
    EXPECT_TRUE(st.ok()) << it.entry.name << ": " << st.ToString();
  }
  EXPECT_TRUE(w.Finish().ok());
  EXPECT_EQ(w.offset(), out.size());
  return out;
}

TEST(TarWriter, RoundTripThroughTarReader) {
  std::vector<Item> items = SampleItems();
  std::string tar = WriteItems(items);
  EXPECT_EQ(tar.size() % 512, 0u);
  StringTarInput in(tar);
  TarReader reader(&in);
  for (const Item& it : items) {
    Result<std::optional<TarEntry>> e = reader.Next();
    ASSERT_TRUE(e.has_value()) << it.entry.name << ": " << e.error().ToString();
    ASSERT_TRUE(e->has_value()) << "missing " << it.entry.name;
    const TarEntry& got = **e;
    const TarEntry& want = it.entry;
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.type, want.type) << want.name;
    EXPECT_EQ(got.mode, want.mode) << want.name;
    EXPECT_EQ(got.uid, want.uid) << want.name;
    EXPECT_EQ(got.gid, want.gid) << want.name;
    EXPECT_EQ(got.uname, want.uname) << want.name;
    EXPECT_EQ(got.gname, want.gname) << want.name;
    EXPECT_EQ(got.mtime_sec, want.mtime_sec) << want.name;
    EXPECT_EQ(got.mtime_nsec, want.mtime_nsec) << want.name;
    EXPECT_EQ(got.link_target, want.link_target) << want.name;
    EXPECT_EQ(got.dev_major, want.dev_major) << want.name;
    EXPECT_EQ(got.dev_minor, want.dev_minor) << want.name;
    EXPECT_EQ(got.xattrs, want.xattrs) << want.name;
    EXPECT_EQ(got.size, it.data.size()) << want.name;
    Result<std::string> data = reader.ReadPayload(1 << 20);
    ASSERT_TRUE(data.has_value());
    EXPECT_EQ(*data, it.data) << want.name;
  }
  Result<std::optional<TarEntry>> end = reader.Next();
  ASSERT_TRUE(end.has_value()) << end.error().ToString();
  EXPECT_FALSE(end->has_value());
  EXPECT_EQ(reader.offset(), tar.size());
}

TEST(TarWriter, Deterministic) {
  EXPECT_EQ(WriteItems(SampleItems()), WriteItems(SampleItems()));
  // Plain short entries need no PAX header: header + one data block.
  std::string out;
  TarWriter w(&out);
  ASSERT_TRUE(w.Add(FileEntry("a", 0), "x").ok());
  ASSERT_TRUE(w.Finish().ok());
  EXPECT_EQ(out.size(), 512u * 4);
}

TEST(TarWriter, GnuTarListsAndExtractsIt) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string tar_path = dir.path() + "/out.tar";
  ASSERT_TRUE(WriteFileAtomic(tar_path, WriteItems(SampleItems())).ok());

  int rc = 0;
  std::string listing =
      RunShell("LC_ALL=C TZ=UTC tar --quoting-style=literal --numeric-owner --full-time -tvf '" +
                   tar_path + "' 2>&1",
               &rc);
  ASSERT_EQ(rc, 0) << listing;
  auto has = [&](const std::string& s) { return listing.find(s) != std::string::npos; };
  EXPECT_TRUE(has(kLongName)) << listing;
  EXPECT_TRUE(has("long-link -> " + kLongLink)) << listing;
  EXPECT_TRUE(has("hard link to ids")) << listing;
  EXPECT_TRUE(has("3000000000/2500000000")) << listing;
  EXPECT_TRUE(has("-rwsr-xr-x")) << listing;
  EXPECT_TRUE(has("1969-07-20 20:17:40")) << listing;
  EXPECT_TRUE(has("2024-01-01 00:00:00.123456789")) << listing;
  EXPECT_TRUE(has("crw-rw-rw-")) << listing;
  EXPECT_TRUE(has("prw-------")) << listing;
  EXPECT_TRUE(has("drwxrwxrwt")) << listing;
  EXPECT_TRUE(has("etc/.wh.issue")) << listing;
  EXPECT_TRUE(has("etc/conf.d/.wh..wh..opq")) << listing;
  EXPECT_TRUE(has("h\xc3\xa9llo w\xc3\xb6rld.txt")) << listing;
  EXPECT_FALSE(has("PaxHeaders")) << listing;

  // Extract (no devices/owners so it works anywhere) and compare contents and xattrs.
  const std::string out = dir.path() + "/x";
  ASSERT_TRUE(MakeDirs(out).ok());
  std::string log = RunShell("cd '" + out + "' && tar --xattrs --xattrs-include='user.*' " +
                                 "--no-same-owner --exclude=null -xf '" + tar_path + "' 2>&1",
                             &rc);
  ASSERT_EQ(rc, 0) << log;
  Result<std::string> content = ReadFile(out + "/" + kLongName);
  ASSERT_TRUE(content.has_value()) << content.error().ToString();
  EXPECT_EQ(*content, "long name content\n");
  struct stat st;
  ASSERT_EQ(lstat((out + "/hard").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(st.st_size, 1000);
  ASSERT_EQ(lstat((out + "/pre-epoch.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtime, -14182940);
  ASSERT_EQ(lstat((out + "/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  char target[512] = {};
  ASSERT_GT(readlink((out + "/long-link").c_str(), target, sizeof target - 1), 0);
  EXPECT_EQ(std::string(target), kLongLink);
  char value[64] = {};
  ssize_t n = getxattr((out + "/xattr.txt").c_str(), "user.comment", value, sizeof value);
  if (n < 0 && errno == ENOTSUP) {
    GTEST_LOG_(INFO) << "user xattrs unsupported on " << out << ": not checked";
  } else {
    ASSERT_EQ(n, 11) << strerror(errno);
    EXPECT_EQ(std::string(value, 11), "hello xattr");
  }
  ASSERT_EQ(lstat((out + "/etc/.wh.issue").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 0);
}

TEST(TarWriter, GnuTarOutputRoundTripsThroughReaderAndWriter) {
  // Read what GNU tar made, write it again, and let GNU tar compare: the listing must match.
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string root = dir.path() + "/root";
  ASSERT_TRUE(MakeDirs(root + "/a/b").ok());
  ASSERT_TRUE(WriteFileAtomic(root + "/a/b/" + std::string(130, 'n'), "n\n").ok());
  ASSERT_TRUE(WriteFileAtomic(root + "/a/file", std::string(70000, 'z')).ok());
  ASSERT_EQ(symlink("b", (root + "/a/sym").c_str()), 0);
  int rc = 0;
  std::string log = RunShell("cd '" + root +
                                 "' && tar --format=gnu --sort=name --mtime=@1000 --owner=0 "
                                 "--group=0 --numeric-owner -cf ../in.tar a 2>&1",
                             &rc);
  ASSERT_EQ(rc, 0) << log;
  Result<std::string> in_tar = ReadFile(dir.path() + "/in.tar");
  ASSERT_TRUE(in_tar.has_value());
  StringTarInput in(*in_tar);
  TarReader reader(&in);
  std::string copy;
  TarWriter writer(&copy);
  while (true) {
    Result<std::optional<TarEntry>> e = reader.Next();
    ASSERT_TRUE(e.has_value()) << e.error().ToString();
    if (!e->has_value()) break;
    ASSERT_TRUE(writer.WriteHeader(**e).ok());
    while (true) {
      Result<std::string> chunk = reader.ReadPayload(4096);
      ASSERT_TRUE(chunk.has_value());
      if (chunk->empty()) break;
      ASSERT_TRUE(writer.WriteData(*chunk).ok());
    }
  }
  ASSERT_TRUE(writer.Finish().ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/copy.tar", copy).ok());
  std::string a = RunShell("LC_ALL=C tar --numeric-owner -tvf '" + dir.path() + "/in.tar'", &rc);
  ASSERT_EQ(rc, 0);
  std::string b = RunShell("LC_ALL=C tar --numeric-owner -tvf '" + dir.path() + "/copy.tar'", &rc);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(a, b);
  EXPECT_NE(a.find(std::string(130, 'n')), std::string::npos);
}

TEST(TarWriter, RejectsContractViolations) {
  {
    std::string out;
    TarWriter w(&out);
    EXPECT_EQ(w.Add(FileEntry("../x", 0), "").code(), StatusCode::kInvalidArgument);
    // The writer stays failed.
    EXPECT_FALSE(w.Add(FileEntry("ok", 0), "").ok());
  }
  {
    std::string out;
    TarWriter w(&out);
    EXPECT_EQ(w.Add(FileEntry("/abs", 0), "").code(), StatusCode::kInvalidArgument);
  }
  {
    std::string out;
    TarWriter w(&out);
    ASSERT_TRUE(w.WriteHeader(FileEntry("short", 10)).ok());
    ASSERT_TRUE(w.WriteData("12345").ok());
    EXPECT_EQ(w.Finish().code(), StatusCode::kInvalidArgument);
  }
  {
    std::string out;
    TarWriter w(&out);
    ASSERT_TRUE(w.WriteHeader(FileEntry("long", 2)).ok());
    EXPECT_EQ(w.WriteData("123").code(), StatusCode::kInvalidArgument);
  }
  {
    TarWriter w([](std::string_view) { return Status::NoSpace("disk full"); });
    EXPECT_EQ(w.Add(FileEntry("a", 0), "x").code(), StatusCode::kNoSpace);
  }
}

TEST(TarWriter, WhiteoutNames) {
  EXPECT_EQ(WhiteoutEntry("a/b/c").name, "a/b/.wh.c");
  EXPECT_EQ(WhiteoutEntry("top").name, ".wh.top");
  EXPECT_EQ(OpaqueEntry("a/b").name, "a/b/.wh..wh..opq");
  EXPECT_EQ(OpaqueEntry("").name, ".wh..wh..opq");
  TarEntry wh = WhiteoutEntry("x");
  EXPECT_EQ(wh.type, TarEntryType::kRegular);
  EXPECT_EQ(wh.size, 0u);
  EXPECT_EQ(wh.mode, 0u);
}

}  // namespace
}  // namespace imgfs::registry
