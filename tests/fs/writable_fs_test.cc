// imgfs — unit tests of WritableFs: the copy-on-write core driven directly (no kernel, no
// FUSE) over the fixture image `tiny`, checking both the merged view and the upper directory
// it writes (overlayfs conventions: whiteouts, opaque directories, copy-up).
#include "fs/writable/writable_fs.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "cache/store.h"
#include "fs/mount/mount.h"
#include "fs/upper/upper_dir.h"
#include "tests/support/image_builder.h"

namespace imgfs::fs {
namespace {

// The content of `path`, or `missing` when it cannot be read.
std::string ContentOr(const std::string& path, const std::string& missing) {
  Result<std::string> r = ReadFile(path);
  return r.has_value() ? *r : missing;
}

using testing::TempDir;

const std::string kFixtures = IMGFS_FIXTURES_DIR;

// The image, prepared once for the whole suite (its store lives as long as the process).
class TinyImage {
 public:
  static TinyImage& Get() {
    static TinyImage image;  // destroyed at exit: its temporary store goes with it
    return image;
  }
  const ImageFilesystem* fs() const { return prepared_.filesystem.get(); }
  const std::string& error() const { return error_; }

 private:
  TinyImage() {
    Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(dir_.Sub("store"));
    if (!store.has_value()) {
      error_ = store.error().ToString();
      return;
    }
    store_ = std::move(*store);
    Result<PreparedImage> prepared =
        PrepareImage(*store_, "oci:" + kFixtures + "/tiny-gzip:latest", PrepareOptions{});
    if (!prepared.has_value()) {
      error_ = prepared.error().ToString();
      return;
    }
    prepared_ = std::move(*prepared);
    // Its background work done and its thread joined: the killed-daemon tests fork this
    // process, whose children would otherwise exit with a thread never joined.
    prepared_.cleanup.reset();
  }
  TempDir dir_;
  std::unique_ptr<cache::Store> store_;
  PreparedImage prepared_;
  std::string error_;
};

class WritableFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "whiteouts (mknod 0/0) and trusted.* xattrs need root";
    ASSERT_TRUE(TinyImage::Get().error().empty()) << TinyImage::Get().error();
    ASSERT_TRUE(MakeDirs(Upper()).ok());
    Reopen();
  }

  void Reopen() {
    wfs_.reset();
    Result<std::unique_ptr<WritableFs>> w =
        WritableFs::Open(TinyImage::Get().fs(), Upper(), dir_.Sub("work"));
    ASSERT_TRUE(w.has_value()) << w.error().ToString();
    wfs_ = std::move(*w);
  }

  std::string Upper() const { return dir_.Sub("upper"); }

  // A daemon killed: `daemon` runs in a child process on a fresh WritableFs (wfs_) of the work
  // directory, then `size` bytes at `made` (plain data it filled) come back through a pipe and
  // the child ends with _exit, so nothing is cleaned up and its descriptors and work-directory
  // lock go as a kill's do.
  void RunKilledDaemon(const std::function<bool()>& daemon, void* made = nullptr, size_t size = 0) {
    wfs_.reset();
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(fds[0]);
      Result<std::unique_ptr<WritableFs>> w =
          WritableFs::Open(TinyImage::Get().fs(), Upper(), dir_.Sub("work"));
      bool ok = w.has_value();
      if (ok) {
        wfs_ = std::move(*w);
        ok = daemon() && write(fds[1], made, size) == static_cast<ssize_t>(size);
      }
      _exit(ok ? 0 : 1);  // no destructor runs: the daemon was killed
    }
    close(fds[1]);
    const ssize_t got = size == 0 ? 0 : read(fds[0], made, size);
    close(fds[0]);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_EQ(got, static_cast<ssize_t>(size));
  }

  // The next daemon: the work directory opened again with `takeover`, into wfs_.
  void TakeOver() {
    Result<std::unique_ptr<WritableFs>> w =
        WritableFs::Open(TinyImage::Get().fs(), Upper(), dir_.Sub("work"), /*takeover=*/true);
    ASSERT_TRUE(w.has_value()) << w.error().ToString();
    wfs_ = std::move(*w);
  }

  // A kill that cut the journal short: of the lines the killed daemon journaled, only those
  // `keep` says yes to (asked in order, each line without its newline) stay. Returns what
  // stays.
  std::string CutJournal(const std::function<bool(const std::string& line)>& keep) {
    const std::string journal = dir_.Sub("work") + "/journal";
    std::string kept;
    {
      std::ifstream lines(journal);
      std::string line;
      while (std::getline(lines, line)) {
        if (keep(line)) kept += line + "\n";
      }
    }
    std::ofstream(journal, std::ios::trunc) << kept;
    return kept;
  }

  // Resolves "a/b/c" from the root, one Lookup per component. 0 when absent.
  uint64_t Walk(const std::string& path, int* err = nullptr) {
    uint64_t id = 1;
    size_t start = 0;
    while (start < path.size()) {
      size_t slash = path.find('/', start);
      std::string part = path.substr(start, slash == std::string::npos ? slash : slash - start);
      Entry e;
      int r = wfs_->Lookup(id, part, &e);
      if (r != 0) {
        if (err != nullptr) *err = r;
        return 0;
      }
      id = e.id;
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
    if (err != nullptr) *err = 0;
    return id;
  }

  struct stat Stat(const std::string& path) {
    struct stat st {};
    bool cacheable = false;
    uint64_t id = Walk(path);
    EXPECT_NE(id, 0u) << path;
    if (id != 0) {
      EXPECT_EQ(wfs_->GetAttr(id, &st, &cacheable), 0);
    }
    return st;
  }

  std::string ReadAllOf(const std::string& path) {
    uint64_t id = Walk(path);
    if (id == 0) return "<missing>";
    uint64_t fh = 0;
    bool cacheable = false;
    if (wfs_->Open(id, O_RDONLY, &fh, &cacheable) != 0) return "<open failed>";
    std::string all;
    for (;;) {
      std::string part;
      if (wfs_->Read(fh, all.size(), 65536, &part) != 0) return "<read failed>";
      if (part.empty()) break;
      all += part;
    }
    wfs_->Release(fh);
    return all;
  }

  void WriteAt(const std::string& path, int flags, const std::string& data, uint64_t offset = 0) {
    uint64_t id = Walk(path);
    ASSERT_NE(id, 0u) << path;
    uint64_t fh = 0;
    bool cacheable = false;
    ASSERT_EQ(wfs_->Open(id, flags, &fh, &cacheable), 0) << path;
    size_t written = 0;
    ASSERT_EQ(wfs_->Write(fh, offset, data.data(), data.size(), &written), 0);
    EXPECT_EQ(written, data.size());
    wfs_->Release(fh);
  }

  std::vector<std::string> List(const std::string& path) {
    uint64_t id = path.empty() ? 1 : Walk(path);
    std::vector<MergedDirEntry> entries;
    uint64_t parent = 0;
    EXPECT_EQ(wfs_->ReadDir(id, &entries, &parent), 0) << path;
    std::vector<std::string> names;
    for (const MergedDirEntry& e : entries) names.push_back(e.name);
    return names;
  }

  struct stat UpperStat(const std::string& path) {
    struct stat st {};
    if (lstat((Upper() + "/" + path).c_str(), &st) != 0) st.st_mode = 0;
    return st;
  }

  bool UpperIsWhiteout(const std::string& path) {
    struct stat st = UpperStat(path);
    return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
  }

  bool UpperIsOpaque(const std::string& path) {
    char v[4];
    ssize_t n = lgetxattr((Upper() + "/" + path).c_str(), "trusted.overlay.opaque", v, sizeof(v));
    return n == 1 && v[0] == 'y';
  }

  TempDir dir_;
  std::unique_ptr<WritableFs> wfs_;
  Caller caller_{1000, 1000};
};

TEST_F(WritableFsTest, UnchangedLowerIsServedAsIsAndCacheable) {
  EXPECT_EQ(ReadAllOf("etc/os-release").size(), 90u);
  Entry e;
  ASSERT_EQ(wfs_->Lookup(1, "etc", &e), 0);
  EXPECT_TRUE(e.cacheable);
  Entry f;
  ASSERT_EQ(wfs_->Lookup(e.id, "passwd", &f), 0);
  EXPECT_TRUE(f.cacheable);
  Entry sh;
  ASSERT_EQ(wfs_->Lookup(Walk("bin"), "sh", &sh), 0);
  EXPECT_FALSE(sh.cacheable) << "a lower hardlink may change through another name";
  EXPECT_EQ(wfs_->Lookup(e.id, "issue", &f), ENOENT) << "whited out in the image";
  EXPECT_EQ(wfs_->Lookup(Walk("etc/passwd"), "x", &f), ENOTDIR);
  EXPECT_EQ(UpperStat("etc").st_mode, 0u) << "nothing is copied up by reading";
}

TEST_F(WritableFsTest, CreateWriteAndReadBack) {
  Entry e;
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(Walk("etc"), "new.conf", S_IFREG | 0640, O_WRONLY, caller_, &e, &fh), 0);
  EXPECT_TRUE(e.cacheable) << "a file with one name changes only through its own id";
  EXPECT_EQ(e.attr.st_mode, S_IFREG | 0640u);
  EXPECT_EQ(e.attr.st_uid, 1000u);
  size_t n = 0;
  ASSERT_EQ(wfs_->Write(fh, 0, "hello\n", 6, &n), 0);
  wfs_->Release(fh);
  EXPECT_EQ(ReadAllOf("etc/new.conf"), "hello\n");
  struct stat up = UpperStat("etc/new.conf");
  EXPECT_TRUE(S_ISREG(up.st_mode));
  EXPECT_EQ(up.st_size, 6);
  EXPECT_EQ(up.st_uid, 1000u);
  // The parent was copied up with its own metadata.
  struct stat parent = UpperStat("etc");
  EXPECT_TRUE(S_ISDIR(parent.st_mode));
  EXPECT_EQ(parent.st_mode & 07777, 0755u);
  EXPECT_EQ(
      wfs_->Create(Walk("etc"), "new.conf", S_IFREG | 0640, O_WRONLY | O_EXCL, caller_, &e, &fh),
      EEXIST);
  // Without O_EXCL, an existing name is opened (a create sent again after a takeover).
  Entry again;
  ASSERT_EQ(wfs_->Create(Walk("etc"), "new.conf", S_IFREG | 0640, O_RDONLY, caller_, &again, &fh),
            0);
  EXPECT_EQ(again.id, e.id);
  std::string data;
  ASSERT_EQ(wfs_->Read(fh, 0, 100, &data), 0);
  EXPECT_EQ(data.size(), 6u);
  wfs_->Release(fh);
}

TEST_F(WritableFsTest, CopyUpKeepsDataMetadataXattrsAndInode) {
  struct stat before = Stat("data/xattr.txt");
  struct stat etc_before = Stat("data");
  WriteAt("data/xattr.txt", O_WRONLY, "HELLO");
  struct stat after = Stat("data/xattr.txt");
  EXPECT_EQ(after.st_ino, before.st_ino) << "st_ino is stable across copy-up";
  EXPECT_EQ(after.st_size, before.st_size);
  std::string content = ReadAllOf("data/xattr.txt");
  EXPECT_EQ(content.substr(0, 5), "HELLO");
  EXPECT_EQ(content.size(), static_cast<size_t>(before.st_size));
  std::string value;
  EXPECT_EQ(wfs_->GetXattr(Walk("data/xattr.txt"), "user.fixture.comment", &value), 0);
  EXPECT_EQ(value, "hello xattr");
  char buf[64];
  ssize_t xn =
      lgetxattr((Upper() + "/data/xattr.txt").c_str(), "user.fixture.binary", buf, sizeof(buf));
  EXPECT_EQ(xn, 3) << "xattrs are copied up";
  // The copy-up did not change the parent's times (like overlayfs).
  EXPECT_EQ(Stat("data").st_mtim.tv_sec, etc_before.st_mtim.tv_sec);
  // Setuid bit and owner survive a copy-up (chmod-free write path).
  struct stat tool = Stat("usr/bin/setuid-tool");
  WriteAt("usr/bin/setuid-tool", O_WRONLY | O_APPEND, "");
  EXPECT_EQ(UpperStat("usr/bin/setuid-tool").st_mode & 07777, tool.st_mode & 07777);
  EXPECT_EQ(UpperStat("usr/bin/setuid-tool").st_mtim.tv_sec, tool.st_mtim.tv_sec);
}

// Names a copy-up left in the work directory (its temporary files): none once it is done.
std::vector<std::string> TempFilesIn(const std::string& work) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(work)) {
    if (e.path().filename().string().rfind("tmp-", 0) == 0) out.push_back(e.path().string());
  }
  return out;
}

// Holds the first chunk of a lower file's data that `wfs` copies until Release.
class FirstCopyHeld {
 public:
  explicit FirstCopyHeld(WritableFs* wfs) : wfs_(wfs) {
    wfs->set_copy_chunk_hook_for_tests([this] {
      if (!first_.exchange(false)) return;
      held_.set_value();
      go_future_.wait();
    });
  }
  ~FirstCopyHeld() { wfs_->set_copy_chunk_hook_for_tests(nullptr); }  // threads joined by then
  FirstCopyHeld(const FirstCopyHeld&) = delete;
  FirstCopyHeld& operator=(const FirstCopyHeld&) = delete;
  void WaitUntilHeld() { held_.get_future().wait(); }
  void Release() { go_.set_value(); }

 private:
  WritableFs* const wfs_;
  std::atomic<bool> first_{true};
  std::promise<void> held_;
  std::promise<void> go_;
  std::shared_future<void> go_future_ = go_.get_future().share();
};

TEST_F(WritableFsTest, ACopyUpBeingCopiedHoldsUpNoOtherRequest) {
  const std::string image_data = ReadAllOf("data/random.bin");
  ASSERT_GT(image_data.size(), 5u);
  // The first chunk copied waits until the requests below were answered.
  FirstCopyHeld held(wfs_.get());
  const uint64_t id = Walk("data/random.bin");
  uint64_t fh = 0;
  bool cacheable = false;
  std::thread writer([&] { EXPECT_EQ(wfs_->Open(id, O_WRONLY, &fh, &cacheable), 0); });
  held.WaitUntilHeld();
  // Held mid-copy. A copy made under the namespace lock would hold these up until `go`.
  auto others = std::async(std::launch::async, [&] {
    Entry e;
    bool c = false;
    struct stat st {};
    uint64_t new_fh = 0;
    Entry made;
    const bool ok = wfs_->Lookup(1, "data", &e) == 0 && wfs_->GetAttr(id, &st, &c) == 0 &&
                    st.st_size == static_cast<off_t>(image_data.size()) &&
                    wfs_->Create(e.id, "beside", 0644, O_WRONLY, Caller{}, &made, &new_fh) == 0;
    if (new_fh != 0) wfs_->Release(new_fh);
    return ok;
  });
  const bool answered = others.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  held.Release();
  writer.join();
  ASSERT_TRUE(answered) << "a request waited for another file's copy-up";
  EXPECT_TRUE(others.get());
  size_t written = 0;
  ASSERT_EQ(wfs_->Write(fh, 0, "HELLO", 5, &written), 0);
  wfs_->Release(fh);
  EXPECT_EQ(ReadAllOf("data/random.bin"), "HELLO" + image_data.substr(5));
  EXPECT_EQ(UpperStat("data/random.bin").st_size, static_cast<off_t>(image_data.size()));
  EXPECT_EQ(TempFilesIn(dir_.Sub("work")), std::vector<std::string>{});
}

TEST_F(WritableFsTest, TwoCopyUpsOfOneFileAtOnceMakeOneCopy) {
  const std::string image_data = ReadAllOf("data/random.bin");
  const uint64_t id = Walk("data/random.bin");
  // The first copier waits until the second has copied up the file and written to it.
  FirstCopyHeld held(wfs_.get());
  uint64_t fh1 = 0;
  bool cacheable = false;
  std::thread slow([&] { EXPECT_EQ(wfs_->Open(id, O_RDWR, &fh1, &cacheable), 0); });
  held.WaitUntilHeld();
  uint64_t fh2 = 0;
  auto second = std::async(std::launch::async, [&] {
    bool c = false;
    size_t written = 0;
    return wfs_->Open(id, O_WRONLY, &fh2, &c) == 0 && wfs_->Write(fh2, 0, "AB", 2, &written) == 0;
  });
  const bool done = second.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  held.Release();
  slow.join();
  ASSERT_TRUE(done) << "a copy-up waited for another copy-up of the same file";
  ASSERT_TRUE(second.get());
  // The slow one found the file copied up: it opened that copy, with the other's write in it.
  std::string got;
  ASSERT_EQ(wfs_->Read(fh1, 0, 2, &got), 0);
  EXPECT_EQ(got, "AB");
  wfs_->Release(fh1);
  wfs_->Release(fh2);
  EXPECT_EQ(ReadAllOf("data/random.bin"), "AB" + image_data.substr(2));
  EXPECT_EQ(TempFilesIn(dir_.Sub("work")), std::vector<std::string>{});
}

TEST_F(WritableFsTest, RenamesAndLinksOfImageFilesCopyOutsideTheNamespaceLock) {
  const uint64_t data = Walk("data");
  ASSERT_NE(data, 0u);
  struct Case {
    std::string file;
    std::function<int()> change;
    std::string result;  // the name the file's bytes are at afterwards
  };
  const std::vector<Case> cases = {
      {"data/zeros.bin", [&] { return wfs_->Rename(data, "zeros.bin", data, "moved.bin", 0); },
       "data/moved.bin"},
      {"data/changeme.txt",
       [&] {
         Entry e;
         return wfs_->Link(Walk("data/changeme.txt"), data, "linked.txt", &e);
       },
       "data/linked.txt"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    const std::string image_data = ReadAllOf(c.file);
    ASSERT_EQ(Walk(c.file) != 0, true);
    FirstCopyHeld held(wfs_.get());
    std::thread changer([&] { EXPECT_EQ(c.change(), 0); });
    held.WaitUntilHeld();
    auto other = std::async(std::launch::async, [&] {
      Entry e;
      return wfs_->Lookup(1, "bin", &e);
    });
    const bool answered = other.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
    held.Release();
    changer.join();
    ASSERT_TRUE(answered) << "a request waited for a rename's or link's copy-up";
    EXPECT_EQ(other.get(), 0);
    EXPECT_EQ(ReadAllOf(c.result), image_data);
    EXPECT_EQ(TempFilesIn(dir_.Sub("work")), std::vector<std::string>{});
  }
}

TEST_F(WritableFsTest, TruncatingOpenCopiesNoData) {
  WriteAt("data/random.bin", O_WRONLY | O_TRUNC, "x");
  EXPECT_EQ(ReadAllOf("data/random.bin"), "x");
  EXPECT_EQ(UpperStat("data/random.bin").st_size, 1);
}

TEST_F(WritableFsTest, UnlinkOfLowerLeavesWhiteout) {
  uint64_t etc = Walk("etc");
  EXPECT_EQ(wfs_->Unlink(etc, "group"), 0);
  EXPECT_TRUE(UpperIsWhiteout("etc/group"));
  Entry e;
  EXPECT_EQ(wfs_->Lookup(etc, "group", &e), ENOENT);
  std::vector<std::string> names = List("etc");
  EXPECT_EQ(std::count(names.begin(), names.end(), "group"), 0);
  EXPECT_EQ(wfs_->Unlink(etc, "group"), ENOENT);
  EXPECT_EQ(wfs_->Unlink(etc, "conf.d"), EISDIR);
  // An upper-only file goes without a trace.
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(1, "scratch", S_IFREG | 0600, O_WRONLY, caller_, &e, &fh), 0);
  wfs_->Release(fh);
  EXPECT_EQ(wfs_->Unlink(1, "scratch"), 0);
  EXPECT_EQ(UpperStat("scratch").st_mode, 0u);
  // Recreating a deleted lower name replaces the whiteout.
  ASSERT_EQ(wfs_->Create(etc, "group", S_IFREG | 0644, O_WRONLY, caller_, &e, &fh), 0);
  wfs_->Release(fh);
  EXPECT_TRUE(S_ISREG(UpperStat("etc/group").st_mode));
  EXPECT_EQ(ReadAllOf("etc/group"), "");
}

TEST_F(WritableFsTest, RmdirNeedsAnEmptyMergedDirectory) {
  uint64_t confd = Walk("etc/conf.d");
  EXPECT_EQ(wfs_->Rmdir(Walk("etc"), "conf.d"), ENOTEMPTY);
  EXPECT_EQ(wfs_->Rmdir(confd, "new.conf"), ENOTDIR);
  ASSERT_EQ(wfs_->Unlink(confd, "new.conf"), 0);
  uint64_t sub = Walk("etc/conf.d/sub");
  ASSERT_EQ(wfs_->Unlink(sub, "d.conf"), 0);
  EXPECT_EQ(wfs_->Rmdir(confd, "sub"), 0);
  EXPECT_TRUE(UpperIsWhiteout("etc/conf.d/sub"));
  EXPECT_EQ(wfs_->Rmdir(Walk("etc"), "conf.d"), 0);
  EXPECT_TRUE(UpperIsWhiteout("etc/conf.d"));
  EXPECT_EQ(Walk("etc/conf.d"), 0u);
}

TEST_F(WritableFsTest, MkdirOverWhiteoutIsOpaque) {
  uint64_t confd = Walk("etc/conf.d");
  uint64_t sub = Walk("etc/conf.d/sub");
  ASSERT_EQ(wfs_->Unlink(sub, "d.conf"), 0);
  ASSERT_EQ(wfs_->Rmdir(confd, "sub"), 0);
  Entry e;
  ASSERT_EQ(wfs_->Mkdir(confd, "sub", 0750, caller_, &e), 0);
  EXPECT_TRUE(S_ISDIR(e.attr.st_mode));
  EXPECT_EQ(e.attr.st_mode & 07777, 0750u);
  EXPECT_TRUE(UpperIsOpaque("etc/conf.d/sub"));
  EXPECT_TRUE(List("etc/conf.d/sub").empty());
  EXPECT_EQ(wfs_->Mkdir(confd, "sub", 0750, caller_, &e), EEXIST);
  // A new directory where the lower has nothing is not opaque.
  ASSERT_EQ(wfs_->Mkdir(1, "fresh", 0755, caller_, &e), 0);
  EXPECT_FALSE(UpperIsOpaque("fresh"));
}

TEST_F(WritableFsTest, RenameOfLowerDirectoryCopiesItWholeAndOpaque) {
  std::vector<std::string> before = List("etc/conf.d");
  std::string conf = ReadAllOf("etc/conf.d/sub/d.conf");
  // Change one file first: it must move along (hard-linked, not re-copied).
  WriteAt("etc/conf.d/new.conf", O_WRONLY | O_APPEND, "changed", 6);
  ASSERT_EQ(wfs_->Rename(Walk("etc"), "conf.d", 1, "moved", 0), 0);
  EXPECT_TRUE(UpperIsWhiteout("etc/conf.d"));
  EXPECT_TRUE(UpperIsOpaque("moved"));
  EXPECT_EQ(List("moved"), before);
  EXPECT_EQ(ReadAllOf("moved/sub/d.conf"), conf);
  EXPECT_EQ(ReadAllOf("moved/new.conf").substr(6), "changed");
  EXPECT_EQ(Walk("etc/conf.d"), 0u);
  // Over an existing (empty) directory; into its own subtree: EINVAL.
  Entry e;
  ASSERT_EQ(wfs_->Mkdir(1, "empty", 0755, caller_, &e), 0);
  EXPECT_EQ(wfs_->Rename(1, "moved", 1, "empty", 0), 0);
  EXPECT_EQ(List("empty"), before);
  EXPECT_EQ(wfs_->Rename(1, "empty", Walk("empty/sub"), "x", 0), EINVAL);
  EXPECT_EQ(wfs_->Rename(1, "empty", 1, "etc", 0), ENOTEMPTY);
  EXPECT_EQ(wfs_->Rename(1, "empty", 1, "etc", RENAME_NOREPLACE), EEXIST);
  EXPECT_EQ(wfs_->Rename(1, "empty", 1, "x", RENAME_EXCHANGE), EINVAL);
}

TEST_F(WritableFsTest, RenameOfFilesReplacesAndLeavesWhiteouts) {
  uint64_t etc = Walk("etc");
  std::string passwd = ReadAllOf("etc/passwd");
  ASSERT_EQ(wfs_->Rename(etc, "passwd", etc, "group", 0), 0);
  EXPECT_EQ(ReadAllOf("etc/group"), passwd);
  EXPECT_TRUE(UpperIsWhiteout("etc/passwd"));
  EXPECT_EQ(wfs_->Rename(etc, "group", etc, "conf.d", 0), EISDIR);
  EXPECT_EQ(wfs_->Rename(1, "opt", etc, "group", 0), ENOTDIR);
  EXPECT_EQ(wfs_->Rename(etc, "nothing", etc, "x", 0), ENOENT);
}

TEST_F(WritableFsTest, HardlinkGroupIsCopiedUpTogether) {
  struct stat sh = Stat("bin/sh");
  ASSERT_EQ(sh.st_nlink, 6u);
  SetAttrRequest chmod;
  chmod.set_mode = true;
  chmod.mode = 0700;
  struct stat out {};
  ASSERT_EQ(wfs_->SetAttr(Walk("bin/sh"), chmod, 0, &out), 0);
  EXPECT_EQ(out.st_mode & 07777, 0700u);
  EXPECT_EQ(out.st_ino, sh.st_ino);
  struct stat busybox = Stat("bin/busybox");
  EXPECT_EQ(busybox.st_mode & 07777, 0700u) << "every name of the group is the same inode";
  EXPECT_EQ(busybox.st_ino, sh.st_ino);
  EXPECT_EQ(busybox.st_nlink, 6u);
  EXPECT_EQ(UpperStat("bin/busybox").st_ino, UpperStat("bin/sh").st_ino);
}

TEST_F(WritableFsTest, LinksSymlinksNodesAndAttributes) {
  Entry e;
  ASSERT_EQ(wfs_->Link(Walk("etc/passwd"), 1, "passwd2", &e), 0);
  EXPECT_EQ(e.attr.st_nlink, 2u);
  EXPECT_EQ(e.attr.st_ino, Stat("etc/passwd").st_ino);
  EXPECT_EQ(wfs_->Link(Walk("etc"), 1, "etc2", &e), EPERM);
  ASSERT_EQ(wfs_->Symlink("../etc/passwd", Walk("home"), "pw", caller_, &e), 0);
  std::string target;
  EXPECT_EQ(wfs_->ReadLink(e.id, &target), 0);
  EXPECT_EQ(target, "../etc/passwd");
  ASSERT_EQ(wfs_->Mknod(1, "fifo", S_IFIFO | 0600, 0, caller_, &e), 0);
  EXPECT_TRUE(S_ISFIFO(UpperStat("fifo").st_mode));
  ASSERT_EQ(wfs_->Mknod(1, "null", S_IFCHR | 0666, makedev(1, 3), caller_, &e), 0);
  EXPECT_EQ(UpperStat("null").st_rdev, makedev(1, 3));
  SetAttrRequest r;
  r.set_uid = r.set_gid = true;
  r.uid = 12;
  r.gid = 34;
  r.set_mtime = true;
  r.mtime.tv_sec = 1000000000;
  r.mtime.tv_nsec = 5;
  struct stat out {};
  ASSERT_EQ(wfs_->SetAttr(Walk("opt/app"), r, 0, &out), 0);
  EXPECT_EQ(out.st_uid, 12u);
  EXPECT_EQ(out.st_gid, 34u);
  EXPECT_EQ(out.st_mtim.tv_sec, 1000000000);
  EXPECT_EQ(out.st_mtim.tv_nsec, 5);
  SetAttrRequest trunc;
  trunc.set_size = true;
  trunc.size = 3;
  ASSERT_EQ(wfs_->SetAttr(Walk("etc/os-release"), trunc, 0, &out), 0);
  EXPECT_EQ(out.st_size, 3);
  EXPECT_EQ(ReadAllOf("etc/os-release").size(), 3u);
  struct statvfs vfs {};
  EXPECT_EQ(wfs_->StatFs(&vfs), 0);
  EXPECT_GT(vfs.f_bavail, 0u);
}

// The kernel's kill requests (FUSE_HANDLE_KILLPRIV_V2): the daemon writes and truncates as
// root, for whom the upper's filesystem keeps the bits, so it clears them itself.
TEST_F(WritableFsTest, DropSuidSgidClearsWhatAnUnprivilegedWriteWould) {
  Entry e;
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(1, "tool", S_IFREG | 0644, O_RDWR, caller_, &e, &fh), 0);
  auto set_mode = [&](mode_t mode) {
    SetAttrRequest r;
    r.set_mode = true;
    r.mode = mode;
    struct stat out {};
    ASSERT_EQ(wfs_->SetAttr(e.id, r, 0, &out), 0);
    ASSERT_EQ(out.st_mode & 07777, mode);
  };
  ASSERT_NO_FATAL_FAILURE(set_mode(06755));
  (void)WritableFs::TakeInvalidations();
  ASSERT_EQ(wfs_->DropSuidSgid(fh), 0);
  EXPECT_EQ(UpperStat("tool").st_mode & 07777, 0755u);
  std::vector<uint64_t> stale = WritableFs::TakeInvalidations();
  EXPECT_NE(std::find(stale.begin(), stale.end(), e.id), stale.end())
      << "the kernel's cached mode goes stale";
  ASSERT_EQ(wfs_->DropSuidSgid(fh), 0);
  EXPECT_TRUE(WritableFs::TakeInvalidations().empty()) << "nothing changed the second time";

  // setgid without group-execute (a mandatory-locking mark) stays, as the kernel's rule says.
  ASSERT_NO_FATAL_FAILURE(set_mode(06745));
  ASSERT_EQ(wfs_->DropSuidSgid(fh), 0);
  EXPECT_EQ(UpperStat("tool").st_mode & 07777, 02745u);

  // A truncate that asks for it: the attributes answered are the ones after.
  ASSERT_NO_FATAL_FAILURE(set_mode(06755));
  SetAttrRequest trunc;
  trunc.set_size = true;
  trunc.size = 0;
  trunc.drop_suid_sgid = true;
  struct stat out {};
  ASSERT_EQ(wfs_->SetAttr(e.id, trunc, fh, &out), 0);
  EXPECT_EQ(out.st_mode & 07777, 0755u);
  EXPECT_EQ(UpperStat("tool").st_mode & 07777, 0755u);
  wfs_->Release(fh);

  // open(O_CREAT | O_TRUNC) that asks for it: an existing file loses the bits (its entry says
  // so), a file made now keeps the mode asked for.
  ASSERT_NO_FATAL_FAILURE(set_mode(06755));
  Entry again;
  ASSERT_EQ(wfs_->Create(1, "tool", S_IFREG | 0644, O_WRONLY | O_CREAT | O_TRUNC, caller_, &again,
                         &fh, /*drop_suid_sgid=*/true),
            0);
  EXPECT_EQ(again.attr.st_mode & 07777, 0755u);
  EXPECT_EQ(UpperStat("tool").st_mode & 07777, 0755u);
  wfs_->Release(fh);
  ASSERT_EQ(wfs_->Create(1, "made", S_IFREG | 04755, O_WRONLY | O_CREAT | O_TRUNC, caller_, &again,
                         &fh, /*drop_suid_sgid=*/true),
            0);
  EXPECT_EQ(UpperStat("made").st_mode & 07777, 04755u);
  wfs_->Release(fh);

  // A directory's setgid (inheritance of its group) is never touched.
  Entry dir;
  ASSERT_EQ(wfs_->Mkdir(1, "shared", S_IFDIR | 02775, caller_, &dir), 0);
  SetAttrRequest chown;
  chown.set_uid = true;
  chown.uid = 0;
  chown.drop_suid_sgid = true;
  ASSERT_EQ(wfs_->SetAttr(dir.id, chown, 0, &out), 0);
  EXPECT_EQ(out.st_mode & 07777, 02775u);

  // A handle on an unchanged image file has nothing of the upper to change.
  bool cacheable = false;
  ASSERT_EQ(wfs_->Open(Walk("etc/passwd"), O_RDONLY, &fh, &cacheable), 0);
  EXPECT_EQ(wfs_->DropSuidSgid(fh), 0);
  wfs_->Release(fh);
  EXPECT_EQ(wfs_->DropSuidSgid(fh), EBADF) << "a released handle";
}

TEST_F(WritableFsTest, SingleNameEntriesAreCacheableAndHardlinksAreNot) {
  Entry e;
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(1, "one", S_IFREG | 0644, O_RDWR, caller_, &e, &fh), 0);
  wfs_->Release(fh);
  EXPECT_TRUE(e.cacheable);
  Entry dir;
  ASSERT_EQ(wfs_->Mkdir(1, "d", S_IFDIR | 0755, caller_, &dir), 0);
  EXPECT_TRUE(dir.cacheable);
  // A second name: the first name's cached attributes go stale (nlink), and from now on a
  // change through either name is not seen on the other's id.
  (void)WritableFs::TakeInvalidations();
  Entry two;
  ASSERT_EQ(wfs_->Link(e.id, dir.id, "two", &two), 0);
  std::vector<uint64_t> stale = WritableFs::TakeInvalidations();
  EXPECT_NE(std::find(stale.begin(), stale.end(), e.id), stale.end());
  EXPECT_FALSE(two.cacheable);
  struct stat st {};
  bool cacheable = true;
  ASSERT_EQ(wfs_->GetAttr(e.id, &st, &cacheable), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_FALSE(cacheable);
  SetAttrRequest r;
  r.set_mode = true;
  r.mode = 0600;
  cacheable = true;
  ASSERT_EQ(wfs_->SetAttr(two.id, r, 0, &st, &cacheable), 0);
  EXPECT_FALSE(cacheable);
  // One name again.
  ASSERT_EQ(wfs_->Unlink(dir.id, "two"), 0);
  ASSERT_EQ(wfs_->GetAttr(e.id, &st, &cacheable), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_TRUE(cacheable);
}

TEST_F(WritableFsTest, CopyUpInvalidatesTheEntryAndItsParent) {
  uint64_t etc = Walk("etc");
  uint64_t passwd = Walk("etc/passwd");
  (void)WritableFs::TakeInvalidations();
  WriteAt("etc/passwd", O_WRONLY, "ROOT");
  std::vector<uint64_t> stale = WritableFs::TakeInvalidations();
  EXPECT_NE(std::find(stale.begin(), stale.end(), passwd), stale.end());
  EXPECT_NE(std::find(stale.begin(), stale.end(), etc), stale.end());
}

TEST_F(WritableFsTest, WhiteoutsAreLinksOfOneInode) {
  ASSERT_EQ(wfs_->Unlink(Walk("etc"), "passwd"), 0);
  ASSERT_EQ(wfs_->Unlink(Walk("etc"), "os-release"), 0);
  struct stat a = UpperStat("etc/passwd");
  struct stat b = UpperStat("etc/os-release");
  EXPECT_TRUE(S_ISCHR(a.st_mode));
  EXPECT_EQ(a.st_rdev, makedev(0, 0));
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_GE(b.st_nlink, 3u) << "the two whiteouts and the work directory's";
  // The shared one gone (the work directory emptied by hand): the next whiteout makes another.
  ASSERT_EQ(::unlink((wfs_->work_dir() + "/whiteout").c_str()), 0);
  ASSERT_EQ(wfs_->Unlink(Walk("etc/motd"), "README"), 0);
  struct stat c = UpperStat("etc/motd/README");
  EXPECT_TRUE(S_ISCHR(c.st_mode));
  EXPECT_NE(c.st_ino, a.st_ino);
  EXPECT_EQ(c.st_nlink, 2u);
}

TEST_F(WritableFsTest, XattrsAreCopiedUpAndOverlayOnesHidden) {
  uint64_t id = Walk("data/xattr.txt");
  std::string value;
  std::vector<std::string> names;
  ASSERT_EQ(wfs_->ListXattr(id, &names), 0);
  EXPECT_EQ(names.size(), 2u);
  EXPECT_EQ(wfs_->RemoveXattr(id, "user.none"), ENODATA);
  EXPECT_EQ(UpperStat("data/xattr.txt").st_mode, 0u) << "a failing removexattr copies nothing";
  ASSERT_EQ(wfs_->SetXattr(id, "user.new", "v", 0), 0);
  ASSERT_EQ(wfs_->RemoveXattr(id, "user.fixture.binary"), 0);
  ASSERT_EQ(wfs_->ListXattr(id, &names), 0);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"user.fixture.comment", "user.new"}));
  EXPECT_EQ(wfs_->SetXattr(id, "trusted.overlay.opaque", "y", 0), EPERM);
  // The userxattr names of an unprivileged upper are reserved as well.
  EXPECT_EQ(wfs_->SetXattr(id, "user.overlay.opaque", "y", 0), EPERM);
  EXPECT_EQ(wfs_->GetXattr(id, "user.overlay.opaque", &value), ENODATA);
  // An opaque directory does not show its marker.
  uint64_t sub = Walk("etc/conf.d/sub");
  ASSERT_EQ(wfs_->Unlink(sub, "d.conf"), 0);
  ASSERT_EQ(wfs_->Rmdir(Walk("etc/conf.d"), "sub"), 0);
  Entry e;
  ASSERT_EQ(wfs_->Mkdir(Walk("etc/conf.d"), "sub", 0755, caller_, &e), 0);
  ASSERT_EQ(wfs_->ListXattr(e.id, &names), 0);
  EXPECT_TRUE(names.empty());
  std::string v;
  EXPECT_EQ(wfs_->GetXattr(e.id, "trusted.overlay.opaque", &v), ENODATA);
  EXPECT_EQ(wfs_->GetXattr(e.id, "user.overlay.opaque", &v), ENODATA);
}

TEST_F(WritableFsTest, ForgetFreesNodes) {
  size_t base = wfs_->node_count();
  uint64_t etc = Walk("etc");
  uint64_t passwd = Walk("etc/passwd");
  EXPECT_EQ(wfs_->node_count(), base + 2);
  Entry again;
  ASSERT_EQ(wfs_->Lookup(etc, "passwd", &again), 0);
  EXPECT_EQ(again.id, passwd) << "one id per name while the kernel holds it";
  wfs_->Forget(passwd, 1);
  EXPECT_EQ(wfs_->node_count(), base + 2);
  wfs_->Forget(passwd, 1);
  wfs_->Forget(etc, 1);  // Walk looked "etc" up twice
  EXPECT_EQ(wfs_->node_count(), base + 1);
  wfs_->Forget(etc, 1);
  EXPECT_EQ(wfs_->node_count(), base);
}

TEST_F(WritableFsTest, UnlinkedOpenFileKeepsWorking) {
  Entry e;
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(1, "tmpfile", S_IFREG | 0600, O_RDWR, caller_, &e, &fh), 0);
  ASSERT_EQ(wfs_->Unlink(1, "tmpfile"), 0);
  size_t n = 0;
  ASSERT_EQ(wfs_->Write(fh, 0, "abc", 3, &n), 0);
  std::string data;
  ASSERT_EQ(wfs_->Read(fh, 0, 10, &data), 0);
  EXPECT_EQ(data, "abc");
  struct stat st {};
  bool cacheable = true;
  ASSERT_EQ(wfs_->GetAttr(e.id, &st, &cacheable), 0);
  EXPECT_EQ(st.st_size, 3);
  EXPECT_EQ(st.st_nlink, 0u);
  wfs_->Release(fh);
}

TEST_F(WritableFsTest, ReadHandleOpenedBeforeCopyUpSeesTheCopy) {
  uint64_t id = Walk("etc/passwd");
  uint64_t ro = 0;
  bool cacheable = false;
  ASSERT_EQ(wfs_->Open(id, O_RDONLY, &ro, &cacheable), 0);
  EXPECT_TRUE(cacheable);
  WriteAt("etc/passwd", O_WRONLY, "ROOT");
  std::string data;
  ASSERT_EQ(wfs_->Read(ro, 0, 4, &data), 0);
  EXPECT_EQ(data, "ROOT");
  wfs_->Release(ro);
}

TEST_F(WritableFsTest, ChangesPersistAcrossReopenAndWorkLeftoversAreRemoved) {
  Entry e;
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(Walk("home"), "kept", S_IFREG | 0644, O_WRONLY, caller_, &e, &fh), 0);
  size_t n = 0;
  ASSERT_EQ(wfs_->Write(fh, 0, "kept\n", 5, &n), 0);
  wfs_->Release(fh);
  ASSERT_EQ(wfs_->Unlink(Walk("etc/motd"), "README"), 0);
  std::vector<std::string> root = List("");
  std::vector<std::string> motd = List("etc/motd");
  // A killed daemon's half-copied file in the work directory.
  ASSERT_TRUE(WriteFileAtomic(wfs_->work_dir() + "/tmp-1-1", "partial").ok());
  std::string work = wfs_->work_dir();
  Reopen();
  EXPECT_EQ(testing::ListFilesRecursive(work), (std::vector<std::string>{"journal", "whiteout"}))
      << "only the fresh journal and shared whiteout";
  EXPECT_EQ(List(""), root);
  EXPECT_EQ(List("etc/motd"), motd);
  EXPECT_TRUE(motd.empty());
  EXPECT_EQ(ReadAllOf("home/kept"), "kept\n");
}

// Several threads changing the tree at once (each in its own directory, all reading the same
// image files and copying up the same hardlink group): no lost update, and the node table
// ends where it started once every lookup is forgotten. Run under TSan in CI.
TEST_F(WritableFsTest, ConcurrentChangesAndReads) {
  size_t base = wfs_->node_count();
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t, &errors] {
      std::string& error = errors[t];
      auto check = [&](bool ok, const std::string& what) {
        if (!ok && error.empty()) error = what;
      };
      std::vector<std::pair<uint64_t, uint64_t>> looked_up;  // (id, count)
      auto lookup = [&](uint64_t parent, const std::string& name, Entry* e) {
        int r = wfs_->Lookup(parent, name, e);
        if (r == 0) looked_up.emplace_back(e->id, 1);
        return r;
      };
      Entry dir;
      check(wfs_->Mkdir(1, "t" + std::to_string(t), 0755, caller_, &dir) == 0, "mkdir");
      looked_up.emplace_back(dir.id, 1);
      for (int i = 0; i < 40; ++i) {
        Entry f;
        uint64_t fh = 0;
        std::string name = "f" + std::to_string(i);
        check(wfs_->Create(dir.id, name, S_IFREG | 0644, O_RDWR, caller_, &f, &fh) == 0, "create");
        looked_up.emplace_back(f.id, 1);
        size_t n = 0;
        check(wfs_->Write(fh, 0, name.data(), name.size(), &n) == 0, "write");
        wfs_->Release(fh);
        if (i % 3 == 0) {
          check(wfs_->Rename(dir.id, name, dir.id, "r" + std::to_string(i), 0) == 0, "rename");
        }
        if (i % 5 == 0)
          check(wfs_->Unlink(dir.id, i % 3 == 0 ? "r" + std::to_string(i) : name) == 0, "unlink");
        Entry etc, passwd, bin, sh;
        check(lookup(1, "etc", &etc) == 0 && lookup(etc.id, "passwd", &passwd) == 0, "lookup");
        uint64_t rfh = 0;
        bool cacheable = false;
        if (wfs_->Open(passwd.id, O_RDONLY, &rfh, &cacheable) == 0) {
          std::string data;
          check(wfs_->Read(rfh, 0, 4, &data) == 0 && data == "root", "read");
          wfs_->Release(rfh);
        }
        if (i == 7 && lookup(1, "bin", &bin) == 0 && lookup(bin.id, "sh", &sh) == 0) {
          SetAttrRequest touch;
          touch.set_mtime = true;
          touch.mtime_now = true;
          struct stat st {};
          check(wfs_->SetAttr(sh.id, touch, 0, &st) == 0, "setattr");
        }
      }
      std::vector<MergedDirEntry> entries;
      uint64_t parent = 0;
      check(wfs_->ReadDir(dir.id, &entries, &parent) == 0, "readdir");
      // 40 files, 8 of them unlinked.
      check(entries.size() == 32, "listing has " + std::to_string(entries.size()) + " names");
      for (auto& [id, count] : looked_up) wfs_->Forget(id, count);
    });
  }
  for (std::thread& th : threads) th.join();
  for (const std::string& e : errors) EXPECT_TRUE(e.empty()) << e;
  EXPECT_EQ(wfs_->node_count(), base);
  EXPECT_EQ(UpperStat("bin/busybox").st_ino, UpperStat("bin/sh").st_ino);
}

TEST_F(WritableFsTest, DefaultWorkDirIsAHiddenSibling) {
  EXPECT_EQ(WritableFs::DefaultWorkDir(Upper()), dir_.path() + "/.upper.imgfs-work");
  EXPECT_EQ(WritableFs::DefaultWorkDir("/"), "");
  Result<std::unique_ptr<WritableFs>> inside =
      WritableFs::Open(TinyImage::Get().fs(), Upper(), Upper() + "/work");
  EXPECT_FALSE(inside.has_value());
}

// ---- host paths (issue 9: upper operations never follow links) ----

// A file outside the upper that nothing may change: its mode, size, owner, times, xattrs.
struct OutsideFile {
  std::string path;
  struct stat st {};
  void Make(const std::string& p) {
    path = p;
    ASSERT_TRUE(WriteFileAtomic(path, "host secret\n", 0600).ok());
    ASSERT_EQ(chmod(path.c_str(), 0600), 0);
    ASSERT_EQ(lstat(path.c_str(), &st), 0);
  }
  void ExpectUnchanged() const {
    struct stat now {};
    ASSERT_EQ(lstat(path.c_str(), &now), 0) << path;
    EXPECT_EQ(now.st_mode, st.st_mode) << path;
    EXPECT_EQ(now.st_size, st.st_size) << path;
    EXPECT_EQ(now.st_uid, st.st_uid) << path;
    EXPECT_EQ(now.st_gid, st.st_gid) << path;
    EXPECT_EQ(now.st_mtim.tv_sec, st.st_mtim.tv_sec) << path;
    EXPECT_EQ(now.st_mtim.tv_nsec, st.st_mtim.tv_nsec) << path;
    EXPECT_LT(lgetxattr(path.c_str(), "user.planted", nullptr, 0), 0) << path;
    EXPECT_EQ(ContentOr(path, "<unreadable>"), "host secret\n");
  }
};

// chmod of a symlink is EOPNOTSUPP (overlayfs' answer) and never reaches its target, be the
// link made through the mount, absolute or relative, or an image symlink copied up.
TEST_F(WritableFsTest, SetModeOnAnUpperSymlinkIsRefusedAndLeavesItsTargetAlone) {
  OutsideFile outside;
  outside.Make(dir_.Sub("host-file"));
  Entry abs, rel;
  ASSERT_EQ(wfs_->Symlink(outside.path, 1, "abs", caller_, &abs), 0);
  ASSERT_EQ(wfs_->Symlink("../host-file", 1, "rel", caller_, &rel), 0);
  SetAttrRequest r;
  r.set_mode = true;
  r.mode = 04777;
  struct stat out {};
  EXPECT_EQ(wfs_->SetAttr(abs.id, r, 0, &out), EOPNOTSUPP);
  EXPECT_EQ(wfs_->SetAttr(rel.id, r, 0, &out), EOPNOTSUPP);
  outside.ExpectUnchanged();
  // Other changes of a symlink apply to the link itself.
  SetAttrRequest own;
  own.set_uid = own.set_gid = true;
  own.uid = 4321;
  own.gid = 4321;
  own.set_mtime = true;
  own.mtime.tv_sec = 12345;
  ASSERT_EQ(wfs_->SetAttr(abs.id, own, 0, &out), 0);
  EXPECT_EQ(UpperStat("abs").st_uid, 4321u);
  outside.ExpectUnchanged();
}

// The owner of a user-given --upper (or a container on kernel overlayfs) swaps a directory
// of the upper for a symlink to a host directory while the mount holds names below it: no
// operation on those names reaches the host directory.
TEST_F(WritableFsTest, DirectorySwappedForASymlinkLeadsNowhere) {
  TempDir host;
  OutsideFile outside;
  outside.Make(host.Sub("f"));
  Entry d, f;
  ASSERT_EQ(wfs_->Mkdir(Walk("home"), "d", 0755, caller_, &d), 0);
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(d.id, "f", S_IFREG | 0644, O_WRONLY, caller_, &f, &fh), 0);
  wfs_->Release(fh);
  ASSERT_EQ(rename((Upper() + "/home/d").c_str(), (Upper() + "/home/d.away").c_str()), 0);
  ASSERT_EQ(symlink(host.path().c_str(), (Upper() + "/home/d").c_str()), 0);

  SetAttrRequest mode;
  mode.set_mode = true;
  mode.mode = 04777;
  SetAttrRequest size;
  size.set_size = true;
  size.size = 0;
  SetAttrRequest owner;
  owner.set_uid = true;
  owner.uid = 4321;
  SetAttrRequest times;
  times.set_mtime = true;
  times.mtime.tv_sec = 12345;
  struct stat out {};
  EXPECT_NE(wfs_->SetAttr(f.id, mode, 0, &out), 0);
  EXPECT_NE(wfs_->SetAttr(f.id, size, 0, &out), 0);
  EXPECT_NE(wfs_->SetAttr(f.id, owner, 0, &out), 0);
  EXPECT_NE(wfs_->SetAttr(f.id, times, 0, &out), 0);
  EXPECT_NE(wfs_->SetXattr(f.id, "user.planted", "x", 0), 0);
  bool cacheable = false;
  EXPECT_NE(wfs_->Open(f.id, O_WRONLY | O_TRUNC, &fh, &cacheable), 0);
  std::string target;
  EXPECT_NE(wfs_->Unlink(d.id, "f"), 0);
  Entry made;
  EXPECT_NE(wfs_->Mknod(d.id, "planted", S_IFREG | 0644, 0, caller_, &made), 0);
  EXPECT_NE(wfs_->Rename(d.id, "f", 1, "stolen", 0), 0);
  outside.ExpectUnchanged();
  EXPECT_EQ(testing::ListFilesRecursive(host.path()), std::vector<std::string>{"f"});
}

// The same on kernels without openat2 (the per-component O_NOFOLLOW walk).
TEST_F(WritableFsTest, DirectorySwappedForASymlinkLeadsNowhereWithoutOpenat2) {
  DisableOpenat2ForTesting();
  TempDir host;
  OutsideFile outside;
  outside.Make(host.Sub("f"));
  Entry d, f;
  ASSERT_EQ(wfs_->Mkdir(1, "d", 0755, caller_, &d), 0);
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(d.id, "f", S_IFREG | 0644, O_WRONLY, caller_, &f, &fh), 0);
  wfs_->Release(fh);
  ASSERT_EQ(rename((Upper() + "/d").c_str(), (Upper() + "/d.away").c_str()), 0);
  ASSERT_EQ(symlink(host.path().c_str(), (Upper() + "/d").c_str()), 0);
  SetAttrRequest mode;
  mode.set_mode = true;
  mode.mode = 04777;
  SetAttrRequest size;
  size.set_size = true;
  size.size = 0;
  struct stat out {};
  EXPECT_NE(wfs_->SetAttr(f.id, mode, 0, &out), 0);
  EXPECT_NE(wfs_->SetAttr(f.id, size, 0, &out), 0);
  EXPECT_NE(wfs_->SetXattr(f.id, "user.planted", "x", 0), 0);
  outside.ExpectUnchanged();
}

// The work directory beside a user-given upper: made 0700 and ours; one that exists but
// belongs to someone else (or is not a directory) is refused and left as it is.
TEST_F(WritableFsTest, WorkDirIsPrivateAndAForeignOneIsNotTouched) {
  struct stat st {};
  ASSERT_EQ(lstat(wfs_->work_dir().c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(st.st_uid, geteuid());

  std::string foreign = dir_.Sub("foreign-work");
  ASSERT_TRUE(MakeDirs(foreign + "/keep", 0755).ok());
  ASSERT_TRUE(WriteFileAtomic(foreign + "/keep/data", "theirs").ok());
  ASSERT_EQ(lchown(foreign.c_str(), 1000, 1000), 0);
  Result<std::unique_ptr<WritableFs>> w = WritableFs::Open(TinyImage::Get().fs(), Upper(), foreign);
  EXPECT_FALSE(w.has_value());
  EXPECT_EQ(ContentOr(foreign + "/keep/data", "<gone>"), "theirs");

  TempDir host;
  ASSERT_TRUE(WriteFileAtomic(host.Sub("data"), "host").ok());
  std::string link = dir_.Sub("link-work");
  ASSERT_EQ(symlink(host.path().c_str(), link.c_str()), 0);
  w = WritableFs::Open(TinyImage::Get().fs(), Upper(), link);
  EXPECT_FALSE(w.has_value());
  EXPECT_EQ(ContentOr(host.Sub("data"), "<gone>"), "host");
}

// A change deep below image directories copies them up: what stat says of them stays the
// same (a merged directory: nlink 1, size 0), and their ids are handed to the FUSE adapter to
// drop the kernel's cached attributes.
TEST_F(WritableFsTest, CopiedUpDirectoryKeepsItsAttributesAndIsInvalidated) {
  const std::vector<std::string> dirs = {"etc", "etc/conf.d", "etc/conf.d/sub"};
  std::vector<struct stat> before;
  std::vector<uint64_t> ids;
  for (const std::string& d : dirs) {
    before.push_back(Stat(d));
    ids.push_back(Walk(d));
  }
  (void)WritableFs::TakeInvalidations();
  Entry e;
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Create(ids.back(), "new.conf", S_IFREG | 0644, O_WRONLY, caller_, &e, &fh), 0);
  wfs_->Release(fh);
  std::vector<uint64_t> invalidated = WritableFs::TakeInvalidations();
  for (size_t i = 0; i < dirs.size(); ++i) {
    struct stat after = Stat(dirs[i]);
    EXPECT_EQ(after.st_nlink, 1u) << dirs[i];
    EXPECT_EQ(after.st_nlink, before[i].st_nlink) << dirs[i];
    EXPECT_EQ(after.st_size, before[i].st_size) << dirs[i];
    EXPECT_EQ(after.st_ino, before[i].st_ino) << dirs[i];
    EXPECT_NE(std::find(invalidated.begin(), invalidated.end(), ids[i]), invalidated.end())
        << dirs[i] << " copied up without an invalidation";
  }
  EXPECT_TRUE(WritableFs::TakeInvalidations().empty());
}

// What a daemon handed the kernel, observed by the daemon itself just before it dies.
struct Handed {
  uint64_t node_count = 0;
  uint64_t ids[6] = {};  // etc, etc/passwd, d, moved (was d/f), d/g (unlinked), etc/os-release
  uint64_t lookups[6] = {};
  uint64_t st_inos[6] = {};
  uint64_t fhs[4] = {};  // moved (rw), d/g (rw, unlinked), etc/passwd (ro), etc/os-release (rw)
};

// A daemon killed (here: a child process ending with _exit, so nothing is cleaned up and its
// descriptors and work-directory lock go as a kill's do), and the next one opening the same
// work directory with `takeover`: every id, lookup count, st_ino and handle resolves the same,
// an unlinked open file's data is still there, and the counts end at zero.
TEST_F(WritableFsTest, TakeoverRestoresIdsCountsInodesAndHandles) {
  const std::string work = dir_.Sub("work");
  Handed h;
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon(
      [&]() -> bool {
        Entry e;
        h.ids[0] = Walk("etc");
        h.ids[1] = Walk("etc/passwd");
        if (wfs_->Mkdir(1, "d", 0755, caller_, &e) != 0) return false;
        h.ids[2] = e.id;
        size_t n = 0;
        if (wfs_->Create(h.ids[2], "f", 0644, O_RDWR, caller_, &e, &h.fhs[0]) != 0) return false;
        h.ids[3] = e.id;
        if (wfs_->Write(h.fhs[0], 0, "hello", 5, &n) != 0) return false;
        if (wfs_->Create(h.ids[2], "g", 0644, O_RDWR, caller_, &e, &h.fhs[1]) != 0) return false;
        h.ids[4] = e.id;
        if (wfs_->Write(h.fhs[1], 0, "gone data", 9, &n) != 0) return false;
        if (wfs_->Unlink(h.ids[2], "g") != 0) return false;
        if (wfs_->Rename(h.ids[2], "f", 1, "moved", 0) != 0) return false;
        bool cacheable = false;
        if (wfs_->Open(h.ids[1], O_RDONLY, &h.fhs[2], &cacheable) != 0) return false;
        h.ids[5] = Walk("etc/os-release");
        if (wfs_->Open(h.ids[5], O_RDWR, &h.fhs[3], &cacheable) != 0) return false;
        if (wfs_->Write(h.fhs[3], 0, "X", 1, &n) != 0) return false;
        const uint64_t home = Walk("home");
        wfs_->Forget(home, 1);
        for (int i = 0; i < 6; ++i) {
          struct stat st {};
          if (wfs_->GetAttr(h.ids[i], &st, &cacheable) != 0) return false;
          h.st_inos[i] = st.st_ino;
          h.lookups[i] = wfs_->lookup_count(h.ids[i]);
        }
        h.node_count = wfs_->node_count();
        return true;
      },
      &h, sizeof(h)));
  ASSERT_NO_FATAL_FAILURE(TakeOver());
  // One WritableFs per work directory.
  Result<std::unique_ptr<WritableFs>> second =
      WritableFs::Open(TinyImage::Get().fs(), Upper(), work, /*takeover=*/true);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), StatusCode::kUnavailable);

  EXPECT_EQ(wfs_->node_count(), h.node_count);
  for (int i = 0; i < 6; ++i) {
    struct stat st {};
    bool cacheable = false;
    ASSERT_EQ(wfs_->GetAttr(h.ids[i], &st, &cacheable), 0) << i;
    EXPECT_EQ(st.st_ino, h.st_inos[i]) << i;
    EXPECT_EQ(wfs_->lookup_count(h.ids[i]), h.lookups[i]) << i;
  }
  const std::map<uint64_t, uint64_t> handles = wfs_->handle_ids();
  EXPECT_EQ(
      handles,
      (std::map<uint64_t, uint64_t>{
          {h.fhs[0], h.ids[3]}, {h.fhs[1], h.ids[4]}, {h.fhs[2], h.ids[1]}, {h.fhs[3], h.ids[5]}}));
  std::string data;
  ASSERT_EQ(wfs_->Read(h.fhs[0], 0, 100, &data), 0);
  EXPECT_EQ(data, "hello");
  ASSERT_EQ(wfs_->Read(h.fhs[1], 0, 100, &data), 0);
  EXPECT_EQ(data, "gone data") << "the unlinked open file's data";
  ASSERT_EQ(wfs_->Read(h.fhs[2], 0, 5, &data), 0);
  EXPECT_EQ(data, ReadAllOf("etc/passwd").substr(0, 5)) << "a handle reading the image";
  size_t n = 0;
  ASSERT_EQ(wfs_->Write(h.fhs[3], 1, "Y", 1, &n), 0);
  ASSERT_EQ(wfs_->Fsync(h.fhs[3], false), 0);
  ASSERT_EQ(wfs_->Read(h.fhs[3], 0, 2, &data), 0);
  EXPECT_EQ(data, "XY");
  Entry e;
  ASSERT_EQ(wfs_->Lookup(1, "moved", &e), 0);
  EXPECT_EQ(e.id, h.ids[3]);
  EXPECT_EQ(e.attr.st_ino, h.st_inos[3]);
  wfs_->Forget(e.id, 1);
  EXPECT_EQ(wfs_->Lookup(h.ids[2], "g", &e), ENOENT);
  Entry fresh;
  ASSERT_EQ(wfs_->Mkdir(1, "new", 0755, caller_, &fresh), 0);
  EXPECT_GT(fresh.id, *std::max_element(std::begin(h.ids), std::end(h.ids)));
  EXPECT_NE(fresh.attr.st_ino, h.st_inos[2]);
  uint64_t fh = 0;
  bool cacheable = false;
  ASSERT_EQ(wfs_->Open(h.ids[3], O_RDONLY, &fh, &cacheable), 0);
  EXPECT_GT(fh, h.fhs[3]);
  wfs_->Release(fh);

  // The last release of the unlinked file removes its data; forgetting every lookup frees
  // every id (nothing leaked, nothing went below zero).
  const std::string orphan = work + "/" + WritableJournal::OrphanName(h.ids[4]);
  EXPECT_TRUE(std::filesystem::exists(orphan));
  for (int i = 0; i < 4; ++i) wfs_->Release(h.fhs[i]);
  EXPECT_FALSE(std::filesystem::exists(orphan));
  wfs_->Forget(fresh.id, 1);
  for (int i = 5; i >= 0; --i) wfs_->Forget(h.ids[i], wfs_->lookup_count(h.ids[i]));
  EXPECT_EQ(wfs_->node_count(), 1u);
  EXPECT_EQ(ReadAllOf("moved"), "hello");
}

// A file with other names, unlinked or renamed over while open: its name moves to the work
// directory like a single-name file's, so the next daemon opens its handle again; stat does
// not count that name (the link count drops as the kernel's would), and the names that stay
// are not cached for long while an open handle of another id can change them.
TEST_F(WritableFsTest, AnOpenFileWithOtherNamesStaysReachableAfterATakeover) {
  struct Made {
    uint64_t a = 0, b = 0, c = 0, d = 0, fh_a = 0, fh_c = 0;
    uint64_t b_ino = 0, b_nlink = 0, a_nlink = 0, a_ino = 0;
    bool b_cacheable = true;
  } m;
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon(
      [&]() -> bool {
        Entry e;
        size_t n = 0;
        if (wfs_->Create(1, "a", 0644, O_RDWR, caller_, &e, &m.fh_a) != 0) return false;
        m.a = e.id;
        if (wfs_->Write(m.fh_a, 0, "one", 3, &n) != 0) return false;
        if (wfs_->Link(m.a, 1, "b", &e) != 0) return false;
        m.b = e.id;
        if (wfs_->Unlink(1, "a") != 0) return false;
        if (wfs_->Create(1, "c", 0644, O_RDWR, caller_, &e, &m.fh_c) != 0) return false;
        m.c = e.id;
        if (wfs_->Write(m.fh_c, 0, "two", 3, &n) != 0) return false;
        if (wfs_->Link(m.c, 1, "d", &e) != 0) return false;
        m.d = e.id;
        uint64_t fh = 0;
        if (wfs_->Create(1, "e", 0644, O_RDWR, caller_, &e, &fh) != 0) return false;
        if (wfs_->Write(fh, 0, "new", 3, &n) != 0) return false;
        wfs_->Release(fh);
        if (wfs_->Rename(1, "e", 1, "c", 0) != 0) return false;
        struct stat st {};
        if (wfs_->GetAttr(m.b, &st, &m.b_cacheable) != 0) return false;
        m.b_ino = st.st_ino;
        m.b_nlink = st.st_nlink;
        bool cacheable = false;
        if (wfs_->GetAttr(m.a, &st, &cacheable) != 0) return false;
        m.a_ino = st.st_ino;
        m.a_nlink = st.st_nlink;
        return true;
      },
      &m, sizeof(m)));
  EXPECT_EQ(m.b_nlink, 1u) << "the name in the work directory is not counted";
  EXPECT_EQ(m.a_nlink, 1u) << "the unlinked name's inode has one name left";
  EXPECT_EQ(m.a_ino, m.b_ino);
  EXPECT_FALSE(m.b_cacheable) << "the open handle of the unlinked name can change it";
  const std::string work = dir_.Sub("work");
  EXPECT_TRUE(std::filesystem::exists(work + "/" + WritableJournal::OrphanName(m.a)));
  EXPECT_TRUE(std::filesystem::exists(work + "/" + WritableJournal::OrphanName(m.c)));

  ASSERT_NO_FATAL_FAILURE(TakeOver());
  std::string data;
  ASSERT_EQ(wfs_->Read(m.fh_a, 0, 100, &data), 0) << "the handle of the unlinked name";
  EXPECT_EQ(data, "one");
  size_t n = 0;
  ASSERT_EQ(wfs_->Write(m.fh_a, 0, "ONE", 3, &n), 0);
  EXPECT_EQ(ReadAllOf("b"), "ONE") << "one inode";
  ASSERT_EQ(wfs_->Read(m.fh_c, 0, 100, &data), 0) << "the handle of the renamed-over name";
  EXPECT_EQ(data, "two");
  EXPECT_EQ(ReadAllOf("d"), "two");
  EXPECT_EQ(ReadAllOf("c"), "new");
  struct stat st {};
  bool cacheable = true;
  ASSERT_EQ(wfs_->GetAttr(m.b, &st, &cacheable), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_ino, m.b_ino);
  EXPECT_FALSE(cacheable);
  ASSERT_EQ(wfs_->GetAttr(m.a, &st, &cacheable), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_size, 3);

  // The last releases remove the names in the work directory; the other names stay whole.
  wfs_->Release(m.fh_a);
  wfs_->Release(m.fh_c);
  EXPECT_FALSE(std::filesystem::exists(work + "/" + WritableJournal::OrphanName(m.a)));
  EXPECT_FALSE(std::filesystem::exists(work + "/" + WritableJournal::OrphanName(m.c)));
  ASSERT_EQ(wfs_->GetAttr(m.b, &st, &cacheable), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(st.st_ino, m.b_ino);
  EXPECT_TRUE(cacheable);
  EXPECT_EQ(ReadAllOf("b"), "ONE");
  EXPECT_EQ(ReadAllOf("d"), "two");
}

// A full upper filesystem does not cut the journal short: it keeps room allocated ahead, so
// requests that make something are refused (ENOSPC) before it runs out, while lookups (of
// long names, again and again), forgets and unlinks go on, `rm` frees space, and the next
// daemon takes the mount over with everything the dead one handed out.
TEST_F(WritableFsTest, AFullUpperRefusesWhatMakesButKeepsTheJournalWhole) {
  wfs_.reset();
  ASSERT_EQ(mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, "size=4m"), 0) << strerror(errno);
  struct Unmount {
    std::string at;
    ~Unmount() { umount2(at.c_str(), MNT_DETACH); }
  } unmount{dir_.path()};
  ASSERT_TRUE(MakeDirs(Upper()).ok());
  struct Made {
    uint64_t ids[8] = {};
    int full_mkdir = 0, full_create = 0, lookups_failed = 0, unlink = 0, mkdir_after = 0;
    uint64_t journal_bytes = 0;
  } m;
  const std::string long_name(200, 'n');
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon(
      [&]() -> bool {
        Entry e;
        uint64_t fh = 0;
        size_t n = 0;
        for (int i = 0; i < 8; ++i) {
          if (wfs_->Create(1, long_name + std::to_string(i), 0644, O_RDWR, caller_, &e, &fh) != 0) {
            return false;
          }
          m.ids[i] = e.id;
          wfs_->Release(fh);
        }
        if (wfs_->Create(1, "big", 0644, O_RDWR, caller_, &e, &fh) != 0) return false;
        const uint64_t big = e.id;
        const std::string block(4096, 'x');
        uint64_t off = 0;
        while (wfs_->Write(fh, off, block.data(), block.size(), &n) == 0 && n == block.size()) {
          off += n;
        }
        wfs_->Release(fh);
        // Each round frees an id and names it again: a line with the name's 400 hex digits,
        // written into the journal's reserve: 1 500 of them take more than half of it.
        for (int round = 0; round < 1500; ++round) {
          const int i = round % 8;
          wfs_->Forget(m.ids[i], wfs_->lookup_count(m.ids[i]));
          if (wfs_->Lookup(1, long_name + std::to_string(i), &e) != 0) ++m.lookups_failed;
          m.ids[i] = e.id;
        }
        Entry x;
        m.full_mkdir = wfs_->Mkdir(1, "more", 0755, caller_, &x);
        m.full_create = wfs_->Create(1, "more", 0644, O_RDWR, caller_, &x, &fh);
        m.unlink = wfs_->Unlink(1, "big");
        wfs_->Forget(big, 1);  // as the kernel does once the unlinked file is unused
        m.mkdir_after = wfs_->Mkdir(1, "after", 0755, caller_, &x);
        struct stat st {};
        if (stat((dir_.Sub("work") + "/journal").c_str(), &st) == 0) m.journal_bytes = st.st_size;
        return true;
      },
      &m, sizeof(m)));
  EXPECT_EQ(m.full_mkdir, ENOSPC);
  EXPECT_EQ(m.full_create, ENOSPC);
  EXPECT_EQ(m.lookups_failed, 0);
  EXPECT_GT(m.journal_bytes, 600000u) << "the lookups were journaled while the upper was full";
  EXPECT_EQ(m.unlink, 0);
  EXPECT_EQ(m.mkdir_after, 0);
  ASSERT_NO_FATAL_FAILURE(TakeOver());
  for (int i = 0; i < 8; ++i) {
    Entry e;
    ASSERT_EQ(wfs_->Lookup(1, long_name + std::to_string(i), &e), 0) << i;
    EXPECT_EQ(e.id, m.ids[i]) << "the id the dead daemon handed out";
    EXPECT_EQ(wfs_->lookup_count(m.ids[i]), 2u) << i;
  }
  Entry e;
  EXPECT_EQ(wfs_->Lookup(1, "after", &e), 0);
  EXPECT_EQ(wfs_->Lookup(1, "big", &e), ENOENT);
  wfs_.reset();
}

// A create over an existing name that truncated it, by a daemon killed before it cleared the
// setuid bits the kernel asked it to: sent again after the takeover, it clears them.
TEST_F(WritableFsTest, CreateSentAgainAfterATakeoverStillClearsSetuidBits) {
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon([&]() -> bool {
    Entry e;
    uint64_t fh = 0;
    if (wfs_->Create(1, "tool", 06755, O_WRONLY, caller_, &e, &fh) != 0) return false;
    wfs_->Release(fh);
    const auto scope = WritableFs::RequestScope(RequestId{30, false});
    // Killed after the truncating open, before the bits were cleared.
    return wfs_->Create(1, "tool", 0644, O_WRONLY | O_TRUNC, caller_, &e, &fh) == 0;
  }));
  ASSERT_NO_FATAL_FAILURE(TakeOver());
  ASSERT_EQ(UpperStat("tool").st_mode & 07777, 06755u);
  Entry e;
  uint64_t fh = 0;
  {
    const auto scope = WritableFs::RequestScope(RequestId{30, true});
    ASSERT_EQ(wfs_->Create(1, "tool", 0644, O_WRONLY | O_TRUNC, caller_, &e, &fh,
                           /*drop_suid_sgid=*/true),
              0);
  }
  EXPECT_EQ(e.attr.st_mode & 07777, 0755u);
  EXPECT_EQ(UpperStat("tool").st_mode & 07777, 0755u);
  wfs_->Release(fh);
}

// A listing's lookups (READDIRPLUS: many names under one request number) are journaled as
// counts but never as the request's answer: the dead daemon's counts survive the takeover, and
// the listing sent again is done for real, each name answered with its own id.
TEST_F(WritableFsTest, ListingLookupsCountAcrossATakeoverAndAreNeverAnsweredAsSentAgain) {
  struct Made {
    uint64_t etc = 0, bin = 0, etc_lookups = 0, bin_lookups = 0;
  } made;
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon(
      [&]() -> bool {
        const auto scope = WritableFs::RequestScope(RequestId{50, false});
        Entry e;
        if (wfs_->LookupListed(1, "etc", &e) != 0) return false;
        made.etc = e.id;
        if (wfs_->LookupListed(1, "bin", &e) != 0) return false;
        made.bin = e.id;
        made.etc_lookups = wfs_->lookup_count(made.etc);
        made.bin_lookups = wfs_->lookup_count(made.bin);
        return made.etc != made.bin && made.etc_lookups == 1 && made.bin_lookups == 1;
      },
      &made, sizeof(made)));
  ASSERT_NO_FATAL_FAILURE(TakeOver());
  EXPECT_EQ(wfs_->lookup_count(made.etc), made.etc_lookups);
  EXPECT_EQ(wfs_->lookup_count(made.bin), made.bin_lookups);
  const auto scope = WritableFs::RequestScope(RequestId{50, true});
  Entry e;
  ASSERT_EQ(wfs_->LookupListed(1, "etc", &e), 0);
  EXPECT_EQ(e.id, made.etc);
  ASSERT_EQ(wfs_->LookupListed(1, "bin", &e), 0);
  EXPECT_EQ(e.id, made.bin);
  EXPECT_EQ(wfs_->lookup_count(made.bin), made.bin_lookups + 1) << "counted again";
  // A plain lookup with that number finds no answer recorded either: done for real.
  ASSERT_EQ(wfs_->Lookup(1, "etc", &e), 0);
  EXPECT_EQ(e.id, made.etc);
  EXPECT_EQ(wfs_->lookup_count(made.etc), made.etc_lookups + 2);
  EXPECT_EQ(wfs_->LookupListed(1, "absent", &e), ENOENT);
}

// Requests the dead daemon had done (and journaled) but not answered come again after the
// takeover, marked as sent again and with their first numbers: they are answered from the
// journal — the same ids and handles, counted once — while the same requests with new numbers
// (or a number the journal does not know) are done for real.
TEST_F(WritableFsTest, RequestsSentAgainAfterATakeoverAreAnsweredFromTheJournal) {
  struct Made {
    uint64_t dir = 0, dir_lookups = 0, excl = 0, excl_fh = 0, etc = 0, etc_lookups = 0;
    uint64_t passwd = 0, passwd_fh = 0, plain = 0, plain_fh = 0, plain_lookups = 0;
  } made;
  auto as = [](uint64_t unique, bool resent) {
    return WritableFs::RequestScope(RequestId{unique, resent});
  };
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon(
      [&]() -> bool {
        Entry e;
        uint64_t fh = 0;
        bool cacheable = false;
        if (wfs_->Create(1, "gone", 0644, O_WRONLY, caller_, &e, &fh) != 0) return false;
        wfs_->Release(fh);
        if (wfs_->Create(1, "moving", 0644, O_WRONLY, caller_, &e, &fh) != 0) return false;
        wfs_->Release(fh);
        {
          const auto scope = as(10, false);
          if (wfs_->Mkdir(1, "made", 0755, caller_, &e) != 0) return false;
        }
        made.dir = e.id;
        made.dir_lookups = wfs_->lookup_count(e.id);
        {
          const auto scope = as(12, false);
          if (wfs_->Create(1, "excl", 0644, O_WRONLY | O_EXCL, caller_, &e, &made.excl_fh) != 0) {
            return false;
          }
        }
        made.excl = e.id;
        {
          const auto scope = as(14, false);
          if (wfs_->Unlink(1, "gone") != 0) return false;
        }
        {
          const auto scope = as(16, false);
          if (wfs_->Rename(1, "moving", 1, "moved", 0) != 0) return false;
        }
        {
          const auto scope = as(18, false);
          if (wfs_->Lookup(1, "etc", &e) != 0) return false;
        }
        made.etc = e.id;
        made.passwd = Walk("etc/passwd");  // looks etc up once more
        made.etc_lookups = wfs_->lookup_count(made.etc);
        {
          const auto scope = as(20, false);
          if (wfs_->Open(made.passwd, O_RDONLY, &made.passwd_fh, &cacheable) != 0) return false;
        }
        {
          // Without O_EXCL over an existing name: a lookup and an open.
          const auto scope = as(22, false);
          if (wfs_->Create(1, "moved", 0644, O_RDWR, caller_, &e, &made.plain_fh) != 0) {
            return false;
          }
        }
        made.plain = e.id;
        made.plain_lookups = wfs_->lookup_count(e.id);
        return true;
      },
      &made, sizeof(made)));
  ASSERT_NO_FATAL_FAILURE(TakeOver());
  const size_t handles_before = wfs_->handle_ids().size();

  Entry e;
  uint64_t fh = 0;
  bool cacheable = false;
  {
    const auto scope = as(10, true);
    ASSERT_EQ(wfs_->Mkdir(1, "made", 0755, caller_, &e), 0);
    EXPECT_EQ(e.id, made.dir);
    EXPECT_TRUE(S_ISDIR(e.attr.st_mode));
    EXPECT_EQ(wfs_->lookup_count(made.dir), made.dir_lookups) << "counted once";
  }
  {
    const auto scope = as(12, true);
    ASSERT_EQ(wfs_->Create(1, "excl", 0644, O_WRONLY | O_EXCL, caller_, &e, &fh), 0);
    EXPECT_EQ(e.id, made.excl);
    EXPECT_EQ(fh, made.excl_fh) << "the handle the dead daemon opened";
  }
  {
    const auto scope = as(14, true);
    EXPECT_EQ(wfs_->Unlink(1, "gone"), 0);
  }
  {
    const auto scope = as(16, true);
    EXPECT_EQ(wfs_->Rename(1, "moving", 1, "moved", 0), 0);
  }
  {
    const auto scope = as(18, true);
    ASSERT_EQ(wfs_->Lookup(1, "etc", &e), 0);
    EXPECT_EQ(e.id, made.etc);
    EXPECT_EQ(wfs_->lookup_count(made.etc), made.etc_lookups) << "counted once";
  }
  {
    const auto scope = as(20, true);
    ASSERT_EQ(wfs_->Open(made.passwd, O_RDONLY, &fh, &cacheable), 0);
    EXPECT_EQ(fh, made.passwd_fh);
  }
  {
    const auto scope = as(22, true);
    ASSERT_EQ(wfs_->Create(1, "moved", 0644, O_RDWR, caller_, &e, &fh), 0);
    EXPECT_EQ(e.id, made.plain);
    EXPECT_EQ(fh, made.plain_fh);
    EXPECT_EQ(wfs_->lookup_count(made.plain), made.plain_lookups) << "counted once";
  }
  EXPECT_EQ(wfs_->handle_ids().size(), handles_before) << "no handle opened twice";

  // Sent again but not journaled: done for real; a name already gone is taken as removed by
  // the dead daemon before it could journal that.
  {
    const auto scope = as(99, true);
    EXPECT_EQ(wfs_->Unlink(1, "gone"), 0);
  }
  {
    const auto scope = as(103, true);
    EXPECT_EQ(wfs_->Rename(1, "moving", 1, "moved", 0), 0);
  }
  {
    const auto scope = as(105, true);
    EXPECT_EQ(wfs_->Mkdir(1, "made", 0755, caller_, &e), EEXIST);
  }
  {
    const auto scope = as(40, false);
    ASSERT_EQ(wfs_->Mkdir(1, "fresh", 0755, caller_, &e), 0);
  }
  {
    const auto scope = as(41, false);
    ASSERT_EQ(wfs_->Rmdir(1, "fresh"), 0);
  }
  {
    const auto scope = as(101, true);
    EXPECT_EQ(wfs_->Rmdir(1, "fresh"), 0);
  }
  {
    const auto scope = as(42, false);
    EXPECT_EQ(wfs_->Rmdir(1, "fresh"), ENOENT);
  }
  // New requests (identical ones included) are always done for real.
  {
    const auto scope = as(30, false);
    EXPECT_EQ(wfs_->Mkdir(1, "made", 0755, caller_, &e), EEXIST);
    EXPECT_EQ(wfs_->Create(1, "excl", 0644, O_WRONLY | O_EXCL, caller_, &e, &fh), EEXIST);
    EXPECT_EQ(wfs_->Unlink(1, "gone"), ENOENT);
    EXPECT_EQ(wfs_->Rename(1, "moving", 1, "moved", 0), ENOENT);
  }
  {
    const auto scope = as(32, false);
    ASSERT_EQ(wfs_->Lookup(1, "etc", &e), 0);
    EXPECT_EQ(wfs_->lookup_count(made.etc), made.etc_lookups + 1);
  }
  EXPECT_EQ(ReadAllOf("moved"), "");
}

// A daemon killed in a rename over an open file, after it moved that file to the work
// directory (its orphan journaled) and renamed the source over its name, before the rest was
// journaled: the open handle still reads the replaced file's data, and the name's id follows
// the renamed file when the kernel sends the rename again.
TEST_F(WritableFsTest, ARenameOverAnOpenFileCutShortByAKillKeepsBothFiles) {
  const std::string work = dir_.Sub("work");
  struct Made {
    uint64_t dst = 0, src = 0, dst_fh = 0;
  } made;
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon(
      [&]() -> bool {
        Entry e;
        size_t n = 0;
        if (wfs_->Create(1, "dst", 0644, O_RDWR, caller_, &e, &made.dst_fh) != 0) return false;
        made.dst = e.id;
        if (wfs_->Write(made.dst_fh, 0, "old data", 8, &n) != 0) return false;
        uint64_t fh = 0;
        if (wfs_->Create(1, "src", 0644, O_WRONLY, caller_, &e, &fh) != 0) return false;
        made.src = e.id;
        if (wfs_->Write(fh, 0, "new data!", 9, &n) != 0) return false;
        wfs_->Release(fh);
        const WritableFs::RequestScope scope(RequestId{120, false});
        return wfs_->Rename(1, "src", 1, "dst", 0) == 0;
      },
      &made, sizeof(made)));
  // Killed right after the orphan line: what followed it is cut off.
  const std::string orphan_line = "O " + std::to_string(made.dst);
  bool past_orphan_line = false;
  const std::string kept = CutJournal([&](const std::string& line) {
    if (past_orphan_line) return false;
    past_orphan_line = line == orphan_line;
    return true;
  });
  ASSERT_NE(kept.find(orphan_line + "\n"), std::string::npos) << kept;
  ASSERT_NO_FATAL_FAILURE(TakeOver());

  std::string data;
  EXPECT_EQ(wfs_->Read(made.dst_fh, 0, 100, &data), 0);
  EXPECT_EQ(data, "old data") << "the held handle reads the replaced file";
  {
    const WritableFs::RequestScope scope(RequestId{120, true});
    EXPECT_EQ(wfs_->Rename(1, "src", 1, "dst", 0), 0);
  }
  Entry e;
  ASSERT_EQ(wfs_->Lookup(1, "dst", &e), 0);
  EXPECT_EQ(e.id, made.src) << "the name's id follows the renamed file";
  EXPECT_EQ(e.attr.st_size, 9);
  EXPECT_EQ(ReadAllOf("dst"), "new data!");
  EXPECT_EQ(wfs_->Lookup(1, "src", &e), ENOENT);
  struct stat st {};
  bool cacheable = false;
  ASSERT_EQ(wfs_->GetAttr(made.dst, &st, &cacheable), 0);
  EXPECT_EQ(st.st_size, 8);
  const std::string orphan = work + "/" + WritableJournal::OrphanName(made.dst);
  EXPECT_TRUE(std::filesystem::exists(orphan));
  wfs_->Release(made.dst_fh);
  EXPECT_FALSE(std::filesystem::exists(orphan)) << "removed at the last release";
}

// A daemon killed after making a name in the upper but before journaling its entry: it had
// journaled that the request started (the name was free then), so the request sent again finds
// the name made and answers with it — even for O_EXCL — with the caller's owner and mode set
// again; a name that was there before (no start journaled) is still EEXIST.
TEST_F(WritableFsTest, NamesMadeButNotJournaledByADeadDaemonAreAnsweredWhenSentAgain) {
  auto as = [](uint64_t unique) { return WritableFs::RequestScope(RequestId{unique, false}); };
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon([&]() -> bool {
    Entry e;
    uint64_t fh = 0;
    if (wfs_->Mkdir(1, "before", 0755, caller_, &e) != 0) return false;
    if (wfs_->Create(1, "src", 0644, O_WRONLY, caller_, &e, &fh) != 0) return false;
    wfs_->Release(fh);
    const uint64_t src = e.id;
    {
      const auto scope = as(80);
      if (wfs_->Mkdir(1, "made", 0755, caller_, &e) != 0) return false;
    }
    {
      const auto scope = as(82);
      if (wfs_->Symlink("target", 1, "link", caller_, &e) != 0) return false;
    }
    {
      const auto scope = as(84);
      if (wfs_->Create(1, "excl", 0600, O_WRONLY | O_EXCL, caller_, &e, &fh) != 0) return false;
    }
    {
      const auto scope = as(86);
      if (wfs_->Mknod(1, "fifo", S_IFIFO | 0640, 0, caller_, &e) != 0) return false;
    }
    {
      const auto scope = as(88);
      if (wfs_->Link(src, 1, "hard", &e) != 0) return false;
    }
    // Killed before it set the owner and mode of "made".
    const std::string made = Upper() + "/made";
    return chown(made.c_str(), 0, 0) == 0 && chmod(made.c_str(), 0700) == 0;
  }));
  // Killed before the entry lines: the journal keeps only the starts of those requests.
  const std::string kept = CutJournal([](const std::string& line) {
    const std::string last = line.substr(line.rfind(' ') + 1);
    const bool entry = line.size() > 2 && std::string("ANLH").find(line[0]) != std::string::npos;
    return !(entry &&
             (last == "80" || last == "82" || last == "84" || last == "86" || last == "88"));
  });
  ASSERT_NE(kept.find("U 84 0 0"), std::string::npos) << kept;
  ASSERT_NO_FATAL_FAILURE(TakeOver());
  auto resent = [](uint64_t unique) { return WritableFs::RequestScope(RequestId{unique, true}); };
  Entry e;
  uint64_t fh = 0;
  {
    const auto scope = resent(80);
    ASSERT_EQ(wfs_->Mkdir(1, "made", 0755, caller_, &e), 0);
    EXPECT_TRUE(S_ISDIR(e.attr.st_mode));
    EXPECT_EQ(e.attr.st_mode & 07777, 0755u) << "mode set again";
    EXPECT_EQ(e.attr.st_uid, caller_.uid) << "owner set again";
  }
  {
    const auto scope = resent(82);
    ASSERT_EQ(wfs_->Symlink("target", 1, "link", caller_, &e), 0);
    EXPECT_TRUE(S_ISLNK(e.attr.st_mode));
  }
  {
    const auto scope = resent(84);
    ASSERT_EQ(wfs_->Create(1, "excl", 0600, O_WRONLY | O_EXCL, caller_, &e, &fh), 0);
    EXPECT_TRUE(S_ISREG(e.attr.st_mode));
    size_t written = 0;
    EXPECT_EQ(wfs_->Write(fh, 0, "x", 1, &written), 0);
    wfs_->Release(fh);
  }
  {
    const auto scope = resent(86);
    ASSERT_EQ(wfs_->Mknod(1, "fifo", S_IFIFO | 0640, 0, caller_, &e), 0);
    EXPECT_TRUE(S_ISFIFO(e.attr.st_mode));
  }
  {
    const auto scope = resent(88);
    ASSERT_EQ(wfs_->Link(Walk("src"), 1, "hard", &e), 0);
    EXPECT_EQ(e.attr.st_nlink, 2u);
  }
  // Journaled now: the same requests sent again once more get the same ids.
  const uint64_t made = Walk("made");
  {
    const auto scope = resent(80);
    ASSERT_EQ(wfs_->Mkdir(1, "made", 0755, caller_, &e), 0);
    EXPECT_EQ(e.id, made);
  }
  // Not started in the journal: a name that exists is EEXIST, O_EXCL too.
  {
    const auto scope = resent(90);
    EXPECT_EQ(wfs_->Mkdir(1, "before", 0755, caller_, &e), EEXIST);
    EXPECT_EQ(wfs_->Create(1, "src", 0644, O_WRONLY | O_EXCL, caller_, &e, &fh), EEXIST);
  }
  // New requests are done for real.
  {
    const auto scope = as(92);
    EXPECT_EQ(wfs_->Mkdir(1, "made", 0755, caller_, &e), EEXIST);
  }
}

// A daemon killed after changing a name in the upper but before journaling it: the kernel
// sends the request again, and the names it gave ids to must follow the upper — the renamed
// file's id answers at its new name, removed names are gone (the 20-kill e2e test once read
// ENOENT through the id of a file renamed this way).
TEST_F(WritableFsTest, ChangesMadeButNotJournaledByADeadDaemonAreFollowedWhenSentAgain) {
  struct Made {
    uint64_t moving = 0, gone = 0, dir = 0;
  } made;
  ASSERT_NO_FATAL_FAILURE(RunKilledDaemon(
      [&]() -> bool {
        Entry e;
        uint64_t fh = 0;
        if (wfs_->Create(1, "moving", 0644, O_WRONLY, caller_, &e, &fh) != 0) return false;
        made.moving = e.id;
        size_t written = 0;
        if (wfs_->Write(fh, 0, "moved data", 10, &written) != 0 || written != 10) return false;
        wfs_->Release(fh);
        if (wfs_->Create(1, "gone", 0644, O_WRONLY, caller_, &e, &fh) != 0) return false;
        made.gone = e.id;
        wfs_->Release(fh);
        if (wfs_->Mkdir(1, "dir", 0755, caller_, &e) != 0) return false;
        made.dir = e.id;
        // What the daemon did in the upper before it died, without a journal line.
        const std::string u = Upper();
        if (rename((u + "/moving").c_str(), (u + "/moved").c_str()) != 0) return false;
        if (unlink((u + "/gone").c_str()) != 0 || rmdir((u + "/dir").c_str()) != 0) return false;
        return true;
      },
      &made, sizeof(made)));
  ASSERT_NO_FATAL_FAILURE(TakeOver());

  {
    const WritableFs::RequestScope scope(RequestId{70, true});
    ASSERT_EQ(wfs_->Rename(1, "moving", 1, "moved", 0), 0);
  }
  struct stat st {};
  bool cacheable = false;
  ASSERT_EQ(wfs_->GetAttr(made.moving, &st, &cacheable), 0) << "the id of the renamed file";
  EXPECT_EQ(st.st_size, 10);
  uint64_t fh = 0;
  ASSERT_EQ(wfs_->Open(made.moving, O_RDONLY, &fh, &cacheable), 0);
  std::string data;
  EXPECT_EQ(wfs_->Read(fh, 0, 100, &data), 0);
  EXPECT_EQ(data, "moved data");
  wfs_->Release(fh);
  Entry e;
  ASSERT_EQ(wfs_->Lookup(1, "moved", &e), 0);
  EXPECT_EQ(e.id, made.moving) << "one id for the one name";
  EXPECT_EQ(wfs_->Lookup(1, "moving", &e), ENOENT);
  {
    const WritableFs::RequestScope scope(RequestId{72, true});
    EXPECT_EQ(wfs_->Unlink(1, "gone"), 0);
  }
  {
    const WritableFs::RequestScope scope(RequestId{74, true});
    EXPECT_EQ(wfs_->Rmdir(1, "dir"), 0);
  }
  EXPECT_EQ(wfs_->Lookup(1, "gone", &e), ENOENT);
  EXPECT_EQ(wfs_->Lookup(1, "dir", &e), ENOENT);
  // A name created again gets a new id, not the removed one's.
  uint64_t fh2 = 0;
  ASSERT_EQ(wfs_->Create(1, "gone", 0644, O_WRONLY, caller_, &e, &fh2), 0);
  EXPECT_NE(e.id, made.gone);
  wfs_->Release(fh2);
  // Sent yet again (another takeover): answered from the journal now.
  {
    const WritableFs::RequestScope scope(RequestId{70, true});
    EXPECT_EQ(wfs_->Rename(1, "moving", 1, "moved", 0), 0);
  }
  ASSERT_EQ(wfs_->Lookup(1, "moved", &e), 0);
  EXPECT_EQ(e.id, made.moving);
}

}  // namespace
}  // namespace imgfs::fs
