// imgfs — end-to-end tests of `imgfs layer-store`: the Additional Layer Store that
// containers/storage (podman, CRI-O) reads lazily pulled layers from. The real binary serves a
// real FUSE mount over a real docker-registry; the contract is checked by reading the paths
// containers/storage reads, and Debian's podman 4.3.1 runs a container from it.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/run_support.h"
#include "tests/support/takeover_readers.h"

namespace imgfs::testing {
namespace {

// One layer of a fixture layout, as its manifest and config describe it.
struct FixtureLayer {
  std::string digest;
  std::string toc;  // TOC digest annotation
  std::string diff_id;
  int64_t size = 0;
};

std::vector<FixtureLayer> LayersOf(const std::string& layout) {
  auto index = nlohmann::json::parse(ReadAll(layout + "/index.json"), nullptr, false);
  std::string digest = index["manifests"][0]["digest"];
  auto blob = [&](const std::string& d) {
    return nlohmann::json::parse(ReadAll(layout + "/blobs/sha256/" + d.substr(7)), nullptr, false);
  };
  auto manifest = blob(digest);
  auto config = blob(manifest["config"]["digest"]);
  std::vector<FixtureLayer> out;
  for (size_t i = 0; i < manifest["layers"].size(); ++i) {
    const auto& l = manifest["layers"][i];
    FixtureLayer f;
    f.digest = l["digest"];
    f.size = l["size"];
    const auto& a = l.value("annotations", nlohmann::json::object());
    for (const char* key : {"containerd.io/snapshot/stargz/toc.digest",
                            "io.github.containers.zstd-chunked.manifest-checksum",
                            "io.containers.zstd-chunked.manifest-checksum"}) {
      if (a.contains(key)) f.toc = a[key];
    }
    f.diff_id = config["rootfs"]["diff_ids"][i];
    out.push_back(f);
  }
  return out;
}

RegistryServerOptions AccessLogged() {
  RegistryServerOptions options;
  options.access_log = true;
  return options;
}

int CreateErrno(const std::string& path) {
  const int fd = open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  close(fd);
  return 0;
}

int RmdirErrno(const std::string& path) { return rmdir(path.c_str()) == 0 ? 0 : errno; }

std::string Xattr(const std::string& path, const char* name) {
  char buf[256];
  const ssize_t n = lgetxattr(path.c_str(), name, buf, sizeof(buf));
  return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
}

// podman with its own storage (graphroot, runroot, libpod tmp) below `dir`, the store at
// `store_dir` as an additional layer store, and `registry` (host:port) as an insecure one.
class PodmanEnv {
 public:
  PodmanEnv(const std::string& dir, const std::string& store_dir, const std::string& registry)
      : dir_(dir) {
    for (const char* sub : {"/graph", "/run", "/tmp"}) ok_ = ok_ && MakeDirs(dir + sub).ok();
    std::ofstream storage(dir + "/storage.conf");
    storage << "[storage]\ndriver = \"overlay\"\nrunroot = \"" << dir << "/run\"\n"
            << "graphroot = \"" << dir << "/graph\"\n[storage.options]\n"
            << "additionallayerstores = [\"" << store_dir << ":ref\"]\n";
    std::ofstream registries(dir + "/registries.conf");
    registries << "[[registry]]\nlocation = \"" << registry << "\"\ninsecure = true\n";
    std::ofstream containers(dir + "/containers.conf");
    containers << "[engine]\ntmp_dir = \"" << dir << "/tmp\"\nevents_logger = \"file\"\n"
               << "events_logfile_path = \"" << dir << "/events.log\"\n"
               << "cgroup_manager = \"cgroupfs\"\n";
    ok_ = ok_ && storage.good() && registries.good() && containers.good();
  }
  bool ok() const { return ok_; }
  // `podman --log-level=debug ARGS...` (debug: the log says which blobs were skipped).
  ProcessResult Podman(std::vector<std::string> args) const {
    args.insert(args.begin(), {"podman", "--log-level=debug"});
    return RunProcess(args,
                      {"CONTAINERS_STORAGE_CONF=" + dir_ + "/storage.conf",
                       "CONTAINERS_REGISTRIES_CONF=" + dir_ + "/registries.conf",
                       "CONTAINERS_CONF=" + dir_ + "/containers.conf"},
                      {}, 300);
  }
  // `podman run --rm … IMAGE cat /etc/os-release` (runc; rlimits podman's defaults would
  // raise above what this host allows; no network).
  ProcessResult CatOsRelease(const std::string& image) const {
    return Podman({"run", "--rm", "--runtime", "runc", "--network", "none", "--ulimit",
                   "nofile=20000:20000", "--ulimit", "nproc=4096:4096", image, "cat",
                   "/etc/os-release"});
  }

 private:
  std::string dir_;
  bool ok_ = true;
};

class LayerStoreTest : public ImgfsMountTest, public ::testing::WithParamInterface<std::string> {
 protected:
  // Starts `imgfs layer-store Mnt()`.
  void StartStore() {
    ProcessResult r = Imgfs({"layer-store", Mnt()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    ASSERT_TRUE(IsMounted(Mnt()));
  }
};

TEST_P(LayerStoreTest, ServesTheContainersStorageContract) {
  const std::string layout = FixturePath(GetParam());
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  const std::string name = "lab/contract-" + GetParam() + ":1";
  ASSERT_TRUE(reg->PushOciLayout(layout, "latest", name).ok());
  const std::vector<FixtureLayer> layers = LayersOf(layout);
  ASSERT_EQ(layers.size(), 3u);
  ASSERT_NO_FATAL_FAILURE(StartStore());

  const std::string ref_dir = Mnt() + "/" + Base64(reg->host_port() + "/" + name);
  // Nothing is listed in the root: names are resolved on lookup. Only the daemon's user
  // may look names up (a lookup fetches with the daemon's credentials).
  EXPECT_TRUE(ListFilesRecursive(Mnt()).empty());
  struct stat root {};
  ASSERT_EQ(stat(Mnt().c_str(), &root), 0);
  EXPECT_EQ(root.st_mode, S_IFDIR | 0700u);
  EXPECT_EQ(root.st_uid, geteuid());

  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    const FixtureLayer& l = layers[i];
    ASSERT_FALSE(l.toc.empty());
    for (const std::string& digest : {l.toc, l.digest}) {
      const std::string dir = ref_dir + "/" + digest;
      struct stat st {};
      ASSERT_EQ(stat((dir + "/diff").c_str(), &st), 0) << dir << ": " << strerror(errno);
      EXPECT_TRUE(S_ISDIR(st.st_mode));
      ASSERT_EQ(stat((dir + "/blob").c_str(), &st), 0);
      EXPECT_EQ(st.st_size, l.size);
      auto info = nlohmann::json::parse(ReadAll(dir + "/info"), nullptr, false);
      ASSERT_TRUE(info.is_object()) << ReadAll(dir + "/info");
      EXPECT_EQ(info["compressed-diff-digest"], l.digest);
      EXPECT_EQ(info["compressed-size"], l.size);
      EXPECT_EQ(info["toc-digest"], l.toc);
      EXPECT_EQ(info["diff-digest"], l.diff_id);
      EXPECT_EQ(info["flags"]["expected-layer-diffid"], l.diff_id);
      EXPECT_EQ(info["compression"], GetParam() == "tiny-estargz" ? 2 : 4);
      // `use` takes a reference and is never made; rmdir drops it.
      EXPECT_EQ(Xattr(dir, "user.imgfs.references"), "0");
      EXPECT_EQ(CreateErrno(dir + "/use"), ENOENT);
      EXPECT_EQ(CreateErrno(dir + "/use"), ENOENT);
      EXPECT_EQ(Xattr(dir, "user.imgfs.references"), "2");
      EXPECT_EQ(RmdirErrno(dir), ENOENT);
      EXPECT_EQ(Xattr(dir, "user.imgfs.references"), "1");
      EXPECT_EQ(RmdirErrno(dir), ENOENT);
      EXPECT_EQ(RmdirErrno(dir), ENOENT);
      EXPECT_EQ(Xattr(dir, "user.imgfs.references"), "0");
      EXPECT_EQ(stat((dir + "/diff").c_str(), &st), 0) << "the layer is still served";
      // Same inode on a second lookup.
      struct stat again {};
      ASSERT_EQ(stat((dir + "/diff").c_str(), &again), 0);
      EXPECT_EQ(st.st_ino, again.st_ino);
    }
  }
  // The blob reads back as the registry's bytes (sha256 = the layer digest).
  const std::string blob = ReadAll(ref_dir + "/" + layers[2].toc + "/blob");
  EXPECT_EQ(registry::Digest::Sha256Of(blob).String(), layers[2].digest);

  // Layer 1: its own files.
  const std::string diff1 = ref_dir + "/" + layers[0].toc + "/diff";
  EXPECT_NE(ReadAll(diff1 + "/etc/os-release").find("ID=tiny"), std::string::npos);
  // Layer 2: etc/.wh.issue is a 0/0 character device named issue; nothing of layer 1.
  const std::string diff2 = ref_dir + "/" + layers[1].toc + "/diff";
  struct stat st {};
  ASSERT_EQ(lstat((diff2 + "/etc/issue").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(0, 0));
  EXPECT_NE(lstat((diff2 + "/etc/passwd").c_str(), &st), 0) << "the diff is not merged";
  ASSERT_EQ(lstat((diff2 + "/usr/share/doc/x").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  // Layer 3: etc/conf.d is opaque in both xattr spaces; its own files are there.
  const std::string diff3 = ref_dir + "/" + layers[2].toc + "/diff";
  EXPECT_EQ(Xattr(diff3 + "/etc/conf.d", "trusted.overlay.opaque"), "y");
  EXPECT_EQ(Xattr(diff3 + "/etc/conf.d", "user.overlay.opaque"), "y");
  EXPECT_EQ(Xattr(diff3 + "/etc", "trusted.overlay.opaque"), "");
  EXPECT_EQ(lstat((diff3 + "/etc/conf.d/new.conf").c_str(), &st), 0);
  EXPECT_NE(lstat((diff3 + "/etc/conf.d/.wh..wh..opq").c_str(), &st), 0);

  // Names that are not layers of the image, or not references.
  EXPECT_NE(stat((ref_dir + "/sha256:" + std::string(64, '0') + "/diff").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_NE(stat((Mnt() + "/not-base64!/x").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_NE(stat((Mnt() + "/" + Base64(std::string(64, 'a'))).c_str(), &st), 0);
  Umount();
}

// Debian 12's podman 4.3.1 (containers/storage 1.43, containers/image 5.23) runs a container
// whose layers come from the store: it looks them up by compressed digest.
TEST_P(LayerStoreTest, PodmanRunsFromTheStore) {
  const std::string layout = FixturePath(GetParam());
  auto reg = RegistryServer::Start(AccessLogged());
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  const std::string tag = GetParam() == "tiny-estargz" ? "esgz" : "zstdchunked";
  ASSERT_TRUE((*reg)->PushOciLayout(layout, "latest", "lab/app:" + tag).ok());
  const std::vector<FixtureLayer> layers = LayersOf(layout);
  uint64_t image_bytes = 0;
  for (const FixtureLayer& l : layers) image_bytes += static_cast<uint64_t>(l.size);
  ASSERT_NO_FATAL_FAILURE(StartStore());
  const uint64_t before = (*reg)->BlobBytesServed();

  PodmanEnv podman(Sub("podman"), Mnt(), (*reg)->host_port());
  ASSERT_TRUE(podman.ok());
  const std::string image = (*reg)->host_port() + "/lab/app:" + tag;
  ProcessResult r = podman.CatOsRelease(image);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("ID=tiny"), std::string::npos) << r.out;
  // Blob bytes by layer. podman fetched no layer itself: what was read is what the store's
  // lazy readers asked for — the TOCs of every layer, then the chunks `cat` needed in layer 1
  // (busybox, 2 MB uncompressed and exec'd, and what the read-ahead took beside it; past half
  // of a layer the reader may switch to streaming the rest, so layer 1 is not bounded here).
  std::map<std::string, uint64_t> by_layer;
  for (const RegistryAccess& a : (*reg)->Accesses()) {
    if (a.method != "GET" || !a.IsBlob()) continue;
    by_layer[a.path.substr(a.path.find("/blobs/") + 7)] += a.bytes;
  }
  const uint64_t fetched = (*reg)->BlobBytesServed() - before;
  std::cerr << "podman run: " << fetched << " of " << image_bytes << " layer bytes fetched, "
            << by_layer[layers[1].digest] << " and " << by_layer[layers[2].digest]
            << " of layers 2 and 3\n";
  EXPECT_NE(r.err.find("Skipping blob " + layers[0].digest + " (already present)"),
            std::string::npos)
      << "podman did not take layer 1 from the store:\n"
      << r.err;
  // Layers 2 and 3 (no file of theirs read): footer and TOC only, never the whole blob.
  for (size_t i = 1; i < layers.size(); ++i) {
    EXPECT_LT(by_layer[layers[i].digest], 16u << 10) << "layer " << i;
    EXPECT_GT(by_layer[layers[i].digest], 0u) << "layer " << i << ": its TOC was not read";
  }

  // podman keeps a reference on each layer of the stored image (`use` at lookup and when
  // the layer is created, rmdir when its lookup handle is released).
  const std::string ref_dir = Mnt() + "/" + Base64(image);
  for (const FixtureLayer& l : layers) {
    EXPECT_NE(Xattr(ref_dir + "/" + l.digest, "user.imgfs.references"), "0") << l.digest;
  }
  r = podman.Podman({"rmi", image});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  // Removing the image released every layer.
  for (const FixtureLayer& l : layers) {
    EXPECT_EQ(Xattr(ref_dir + "/" + l.digest, "user.imgfs.references"), "0") << l.digest;
  }
  Umount();
}

// A tag that moved in the registry after the store recorded it: a digest of the new manifest
// is found (the manifest is fetched again), the old image's layers stay served.
TEST_P(LayerStoreTest, FollowsATagThatMoved) {
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  const std::string name = "lab/moving-" + GetParam() + ":1";
  const std::string other = GetParam() == "tiny-estargz" ? "tiny-zstdchunked" : "tiny-estargz";
  ASSERT_TRUE(reg->PushOciLayout(FixturePath(other), "latest", name).ok());
  ASSERT_NO_FATAL_FAILURE(StartStore());
  const std::string ref_dir = Mnt() + "/" + Base64(reg->host_port() + "/" + name);
  const std::vector<FixtureLayer> before = LayersOf(FixturePath(other));
  struct stat st {};
  ASSERT_EQ(stat((ref_dir + "/" + before[0].digest + "/diff").c_str(), &st), 0);

  ASSERT_TRUE(reg->PushOciLayout(FixturePath(GetParam()), "latest", name).ok());
  const std::vector<FixtureLayer> after = LayersOf(FixturePath(GetParam()));
  const std::string diff = ref_dir + "/" + after[0].toc + "/diff";
  ASSERT_EQ(stat(diff.c_str(), &st), 0) << diff << ": " << strerror(errno);
  EXPECT_NE(ReadAll(diff + "/etc/os-release").find("ID=tiny"), std::string::npos);
  EXPECT_EQ(stat((ref_dir + "/" + before[0].digest + "/diff").c_str(), &st), 0);
  Umount();
}

// Regular files below `dir` (0 when it does not exist).
size_t CountFiles(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec)) ++n;
  }
  return n;
}

// The kernel's page cache, dentries and inodes dropped: the next read asks the daemon.
void DropCaches() {
  sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
}

// A `use` reference pins what the layer reads from (a lease in the store): `imgfs rmi`
// refuses the image, `imgfs cache prune` down to nothing and `imgfs cache gc` keep its
// manifest, config, index and chunks, and diff/ reads from them once the registry is gone.
// rmdir drops the reference and the pin: prune then removes the image.
TEST_P(LayerStoreTest, AReferencePinsTheLayerAgainstPruneGcAndRmi) {
  const std::string layout = FixturePath(GetParam());
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(layout, "latest", "lab/pinned:1").ok());
  const std::string image = (*reg)->host_port() + "/lab/pinned:1";
  const std::vector<FixtureLayer> layers = LayersOf(layout);
  ASSERT_NO_FATAL_FAILURE(StartStore());
  const std::string dir = Mnt() + "/" + Base64(image) + "/" + layers[0].digest;
  ASSERT_EQ(CreateErrno(dir + "/use"), ENOENT);
  EXPECT_EQ(Xattr(dir, "user.imgfs.references"), "1");
  const std::string os_release = ReadAll(dir + "/diff/etc/os-release");
  ASSERT_NE(os_release.find("ID=tiny"), std::string::npos);
  const size_t chunks = CountFiles(Root() + "/chunks");
  ASSERT_GT(chunks, 0u) << "the read cached nothing";

  ProcessResult r = Imgfs({"rmi", image});
  EXPECT_NE(r.exit_code, 0) << "rmi of a referenced layer's image: " << r.Describe();
  reg->reset();  // no registry from now on
  // (The layer's read-ahead may still be adding chunks: what the commands deleted is what
  // they say, and the count can only have grown.)
  r = Imgfs({"cache", "prune", "--max-size", "1"});
  EXPECT_NE(r.err.find("pinned"), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("Garbage: 0 blobs, 0 indexes, 0 chunks"), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("Chunks evicted: 0,"), std::string::npos) << r.Describe();
  EXPECT_NE(r.out.find("Images removed: 0"), std::string::npos) << r.Describe();
  r = Imgfs({"cache", "gc"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("Deleted 0 blobs, 0 indexes, 0 chunks"), std::string::npos) << r.Describe();
  EXPECT_GE(CountFiles(Root() + "/chunks"), chunks);
  DropCaches();
  EXPECT_EQ(ReadAll(dir + "/diff/etc/os-release"), os_release) << "read from the store";

  EXPECT_EQ(RmdirErrno(dir), ENOENT);
  EXPECT_EQ(Xattr(dir, "user.imgfs.references"), "0");
  // The last reference freed the layer's tree: the next read loads it again, from the store.
  DropCaches();
  EXPECT_EQ(ReadAll(dir + "/diff/etc/os-release"), os_release) << "loaded again from the store";
  r = Imgfs({"cache", "prune", "--max-size", "1"});
  EXPECT_NE(r.out.find("Images removed: 1"), std::string::npos) << r.Describe();
  EXPECT_EQ(CountFiles(Root() + "/chunks"), 0u);
  // A reference that cannot be pinned (the image left the store) is refused, never ENOENT.
  EXPECT_EQ(CreateErrno(dir + "/use"), EIO);
  EXPECT_EQ(Xattr(dir, "user.imgfs.references"), "0");
  Umount();
}

// ReadFromDaemon of the file at `path` (opened and closed here).
std::string ReadPathFromDaemon(const std::string& path, std::string* error) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "open " + path + ": " + strerror(errno);
    return {};
  }
  std::string data = ReadFromDaemon(fd, error);
  close(fd);
  if (!error->empty()) *error = path + ": " + *error;
  return data;
}

// The layer store outlives its daemon (fs/fuse/takeover.h): readers of diff/ files, of info
// and blob, stats, lookups of missing names and listings go on while the daemon is killed
// again and again, with no failed call and no wrong byte; a descriptor held open reads on;
// the reference taken before the kills is still counted (and pins) after them.
TEST_P(LayerStoreTest, ReadersNeverSeeAKilledDaemon) {
  constexpr int kKills = 6;
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  const std::string name = "lab/kept-" + GetParam() + ":1";
  ASSERT_TRUE(reg->PushOciLayout(FixturePath(GetParam()), "latest", name).ok());
  const std::vector<FixtureLayer> layers = LayersOf(FixturePath(GetParam()));
  ASSERT_NO_FATAL_FAILURE(StartStore());
  const std::string ref_dir = Mnt() + "/" + Base64(reg->host_port() + "/" + name);
  const std::string used = ref_dir + "/" + layers[0].toc;
  ASSERT_EQ(CreateErrno(used + "/use"), ENOENT);
  const pid_t keeper = MountDaemonPid(Root(), used);  // the reference's lease names the keeper
  ASSERT_GT(keeper, 0);
  pid_t daemon = ChildOf(keeper);
  ASSERT_GT(daemon, 0);

  // What is read, and what it must read as.
  std::map<std::string, std::string> files;  // path → content
  std::vector<std::string> paths;            // everything, for lstat
  for (const FixtureLayer& l : layers) {
    const std::string dir = ref_dir + "/" + l.toc;
    files[dir + "/info"] = ReadAll(dir + "/info");
    files[dir + "/blob"] = ReadAll(dir + "/blob");
    ASSERT_EQ(registry::Digest::Sha256Of(files[dir + "/blob"]).String(), l.digest);
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir + "/diff")) {
      paths.push_back(e.path());
      if (e.is_regular_file() && !e.is_symlink()) files[e.path()] = ReadAll(e.path());
    }
  }
  ASSERT_GT(files.size(), 8u);
  const std::string held_path = ref_dir + "/" + layers[0].toc + "/diff/etc/os-release";
  const int held = open(held_path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held, 0) << strerror(errno);

  std::atomic<bool> stop{false};
  ReaderLog log(3);  // slots 0 and 1: files read; 2: stats, lookups and listings
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      while (!stop) {
        for (const auto& [path, content] : files) {
          std::string error;
          const std::string data = ReadPathFromDaemon(path, &error);
          if (!error.empty()) {
            log.Fail(error);
          } else if (data != content) {
            log.Fail(path + ": wrong bytes (" + std::to_string(data.size()) + ")");
          }
          log.Done(t);
        }
      }
    });
  }
  readers.emplace_back([&] {
    for (uint64_t i = 0; !stop; ++i) {
      for (const std::string& path : paths) {
        struct stat st {};
        if (lstat(path.c_str(), &st) != 0) log.Fail("lstat " + path + ": " + strerror(errno));
      }
      const std::string missing = used + "/diff/etc/missing-" + std::to_string(i);
      struct stat st {};
      if (lstat(missing.c_str(), &st) == 0 || errno != ENOENT) {
        log.Fail("lstat " + missing + ": " + strerror(errno));
      }
      std::error_code ec;
      for (auto it = std::filesystem::recursive_directory_iterator(ref_dir, ec);
           !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      }
      if (ec) log.Fail("listing " + ref_dir + ": " + ec.message());
      log.Done(2);
    }
  });

  std::mt19937 rng(std::random_device{}());
  for (int kill_no = 0; kill_no < kKills; ++kill_no) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
    const uint64_t before = log.ops();
    ASSERT_EQ(kill(daemon, SIGKILL), 0) << "kill " << kill_no;
    pid_t next = 0;
    const bool served =
        WaitFor([&] { return (next = ChildOf(keeper)) != 0 && next != daemon; }, 120) &&
        WaitFor([&] { return log.ops() > before + 3; }, 120);
    if (!served) {
      kill(keeper, SIGKILL);  // frees the readers: the connection ends with its last holder
      stop = true;
      for (std::thread& t : readers) t.join();
      close(held);
      FAIL() << "no daemon took the layer store over after kill " << kill_no;
    }
    daemon = next;
    std::string error;
    EXPECT_EQ(ReadFromDaemon(held, &error), files[held_path]) << "after kill " << kill_no;
    EXPECT_EQ(error, "");
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  close(held);
  const std::vector<std::string> failures = log.Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  std::cout << "readers: " << log.ops() << " operations across " << kKills << " takeovers\n";
  EXPECT_EQ(Xattr(used, "user.imgfs.references"), "1") << "the reference outlived the daemons";
  EXPECT_EQ(RmdirErrno(used), ENOENT);
  EXPECT_EQ(Xattr(used, "user.imgfs.references"), "0");
  EXPECT_EQ(MountDaemonPid(Root(), used), 0) << "the lease is gone";
  Umount();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper) && !ProcessRuns(daemon); }, 30))
      << "keeper " << keeper << " or daemon " << daemon << " still runs";
}

// containers' additional-layer-store-auth-helper: `imgfs layer-store --auth-helper` hands
// the credentials containers/image writes on its stdin to the running layer store, which
// uses each for its own registry host only. (Debian 12's podman does not run such a helper:
// the helper is run here with the JSON containers/image writes.)
TEST_P(LayerStoreTest, TakesCredentialsFromTheAuthHelperForTheirHostOnly) {
  auto reg = RegistryServer::Start(RegistryServerOptions::BasicAuth("alice", "s3cret"));
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(FixturePath(GetParam()), "latest", "lab/private:1").ok());
  const std::vector<FixtureLayer> layers = LayersOf(FixturePath(GetParam()));
  ASSERT_NO_FATAL_FAILURE(StartStore());
  const std::string image = (*reg)->host_port() + "/lab/private:1";
  const std::string diff = Mnt() + "/" + Base64(image) + "/" + layers[0].toc + "/diff";
  auto helper = [&](const std::string& json) {
    return RunImgfs(Root(), {"layer-store", "--auth-helper"}, {}, json);
  };
  struct stat st {};
  EXPECT_NE(stat(diff.c_str(), &st), 0) << "served without a credential";

  // The credential of another registry (the same repository on another port) is not used.
  ProcessResult r =
      helper(R"({"127.0.0.1:1/lab/private:1":{"username":"alice","password":"s3cret"}})");
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(stat(diff.c_str(), &st), 0) << "another host's credential was used";
  // What is not containers/image's input is refused before it reaches the store.
  r = helper("{\"not a reference\": {\"username\": \"alice\"}}");
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  r = helper(std::string(70000, '{'));
  EXPECT_NE(r.exit_code, 0) << r.Describe();

  r = helper("{\"" + image + R"(":{"username":"alice","password":"s3cret"}})");
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_EQ(stat(diff.c_str(), &st), 0) << strerror(errno);
  EXPECT_NE(ReadAll(diff + "/etc/os-release").find("ID=tiny"), std::string::npos);
  Umount();
  // No layer store listens any more once its daemon, told by the kernel, has stopped (`imgfs
  // umount` returns when the mount is gone; the daemon exits right after).
  EXPECT_TRUE(WaitFor(
      [&] {
        return helper("{\"" + image + R"(":{"username":"alice","password":"s3cret"}})").exit_code !=
               0;
      },
      30))
      << "a layer store still takes credentials 30 s after its unmount";
}

// Incompressible, deterministic bytes (xorshift64).
std::string NoiseBytes(size_t n) {
  std::string out(n, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    for (size_t b = 0; b < 8 && i + b < n; ++b) out[i + b] = static_cast<char>(x >> (8 * b));
  }
  return out;
}

// An image whose size is mostly data the container never reads: busybox and /etc/os-release
// in one layer, 24 MiB of noise in another, converted by `imgfs convert` and pushed to the
// registry. podman's `cat /etc/os-release` fetches a small share of it.
TEST_P(LayerStoreTest, PodmanRunOfALargeImageFetchesASmallShare) {
  Result<TestLayer> base =
      BusyboxLayer({"sh", "cat"}, {{"etc/os-release", "ID=big\nNAME=\"layer store test\"\n"}});
  ASSERT_TRUE(base.has_value()) << base.error().ToString();
  TestImageSpec spec;
  spec.layers.push_back(*base);
  TestLayer data;
  data.files = {{"data", "", TestFile::Kind::kDir, 0755},
                {"data/noise.bin", NoiseBytes(24u << 20), TestFile::Kind::kFile, 0644}};
  spec.layers.push_back(std::move(data));
  ImageBuilder builder(Sub("src"));
  ASSERT_TRUE(builder.Add(spec, "src").ok());

  auto reg = RegistryServer::Start(AccessLogged());
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  const std::string format = GetParam() == "tiny-estargz" ? "estargz" : "zstd:chunked";
  const std::string image = (*reg)->host_port() + "/lab/big:1";
  ProcessResult r =
      RunImgfs(Sub("convert-store"),
               {"convert", "--format", format, "oci:" + Sub("src") + ":src", "docker://" + image});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_NO_FATAL_FAILURE(StartStore());
  const uint64_t before = (*reg)->BlobBytesServed();

  PodmanEnv podman(Sub("podman"), Mnt(), (*reg)->host_port());
  ASSERT_TRUE(podman.ok());
  r = podman.CatOsRelease(image);
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("ID=big"), std::string::npos) << r.out;
  const uint64_t fetched = (*reg)->BlobBytesServed() - before;
  const uint64_t image_bytes = 24u << 20;  // at least: the noise does not compress
  std::cerr << "podman run of a " << (image_bytes >> 20) << "+ MiB image: " << fetched
            << " bytes fetched\n";
  EXPECT_LT(fetched, image_bytes / 5) << r.err;
  EXPECT_NE(r.err.find("Skipping blob"), std::string::npos)
      << "podman did not take the layers from the store";
  r = podman.Podman({"rmi", image});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  Umount();
}

INSTANTIATE_TEST_SUITE_P(Formats, LayerStoreTest,
                         ::testing::Values("tiny-estargz", "tiny-zstdchunked"),
                         [](const auto& param_info) {
                           return param_info.param == "tiny-estargz" ? "Estargz" : "ZstdChunked";
                         });

}  // namespace
}  // namespace imgfs::testing
