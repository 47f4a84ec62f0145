// imgfs — end-to-end: an image built by the test to cover every tar and overlay feature the
// mount promises (device nodes, fifos, setuid/setgid/sticky bits, sub-second and large
// values through PAX, long names and link targets, xattrs, hardlinks, duplicate entries,
// whiteouts, opaque directories before and after their layer's entries, directory ↔ file
// replacement across layers) is mounted and compared file by file with `umoci unpack` of the
// same image.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "registry/tar_writer.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

using registry::TarEntry;
using registry::TarEntryType;
using registry::TarWriter;

TarEntry Entry(std::string name, TarEntryType type, uint32_t mode, int64_t mtime = 1700000000) {
  TarEntry e;
  e.name = std::move(name);
  e.type = type;
  e.mode = mode;
  e.mtime_sec = mtime;
  return e;
}

struct Layer {
  std::vector<std::pair<TarEntry, std::string>> entries;
  void Dir(const std::string& name, uint32_t mode = 0755) {
    entries.push_back({Entry(name, TarEntryType::kDirectory, mode), ""});
  }
  void File(const std::string& name, const std::string& data, uint32_t mode = 0644) {
    TarEntry e = Entry(name, TarEntryType::kRegular, mode);
    e.size = data.size();
    entries.push_back({e, data});
  }
  void Add(TarEntry e, const std::string& data = "") { entries.push_back({std::move(e), data}); }
};

Result<std::string> Tar(const Layer& layer) {
  std::string out;
  TarWriter w(&out);
  for (const auto& [e, data] : layer.entries) IMGFS_RETURN_IF_ERROR(w.Add(e, data));
  IMGFS_RETURN_IF_ERROR(w.Finish());
  return out;
}

// Writes an OCI layout with `layers` (gzip) under tag "features".
Status WriteImage(const std::string& dir, const std::vector<Layer>& layers) {
  ImageBuilder builder(dir);
  nlohmann::json manifest_layers = nlohmann::json::array();
  nlohmann::json diff_ids = nlohmann::json::array();
  for (const Layer& layer : layers) {
    IMGFS_ASSIGN_OR_RETURN(std::string tar, Tar(layer));
    diff_ids.push_back(registry::Digest::Sha256Of(tar).String());
    std::string gz = GzipBytes(tar);
    IMGFS_ASSIGN_OR_RETURN(registry::Digest d, builder.WriteBlob(gz));
    manifest_layers.push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                               {"digest", d.String()},
                               {"size", gz.size()}});
  }
  nlohmann::json config = {{"architecture", "amd64"},
                           {"os", "linux"},
                           {"created", "2024-01-01T00:00:00Z"},
                           {"config", {{"Cmd", {"/bin/sh"}}}},
                           {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  std::string config_bytes = config.dump();
  IMGFS_ASSIGN_OR_RETURN(registry::Digest config_digest, builder.WriteBlob(config_bytes));
  nlohmann::json manifest = {{"schemaVersion", 2},
                             {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                             {"config",
                              {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                               {"digest", config_digest.String()},
                               {"size", config_bytes.size()}}},
                             {"layers", manifest_layers}};
  std::string manifest_bytes = manifest.dump();
  IMGFS_ASSIGN_OR_RETURN(registry::Digest manifest_digest, builder.WriteBlob(manifest_bytes));
  registry::Descriptor desc;
  desc.media_type = "application/vnd.oci.image.manifest.v1+json";
  desc.digest = manifest_digest;
  desc.size = static_cast<int64_t>(manifest_bytes.size());
  return builder.SetIndexEntry("features", desc);
}

std::vector<Layer> FeatureLayers() {
  std::vector<Layer> layers(3);
  Layer& l1 = layers[0];
  l1.Dir("");
  l1.Dir("etc");
  TarEntry precise = Entry("etc/precise.txt", TarEntryType::kRegular, 0644);
  precise.mtime_nsec = 123456789;  // PAX mtime with a fraction
  precise.size = 7;
  l1.Add(precise, "precise");
  l1.File("etc/removed.txt", "gone in layer 2");
  l1.Dir("dev");
  TarEntry blk = Entry("dev/sda", TarEntryType::kBlock, 0660);
  blk.dev_major = 8;
  blk.dev_minor = 0;
  l1.Add(blk);
  TarEntry chr = Entry("dev/tty5", TarEntryType::kChar, 0620);
  chr.dev_major = 4;
  chr.dev_minor = 5;
  chr.gid = 5;
  l1.Add(chr);
  l1.Add(Entry("dev/pipe", TarEntryType::kFifo, 0600));
  TarEntry shared = Entry("shared", TarEntryType::kDirectory, 02775);
  shared.uid = 1000;
  shared.gid = 1000;
  l1.Add(shared);
  l1.File("shared/old.txt", "old");
  l1.Dir("tmp", 01777);
  l1.File("usr-setuid", "#!/bin/sh\n", 04755);
  TarEntry big_ids = Entry("bigids.txt", TarEntryType::kRegular, 0640);
  big_ids.uid = 4000000;  // beyond ustar's 7 octal digits: PAX uid/gid
  big_ids.gid = 3000000;
  big_ids.size = 3;
  l1.Add(big_ids, "ids");
  std::string long_dir(90, 'd');
  l1.Dir(long_dir);
  l1.File(long_dir + "/" + std::string(80, 'f') + ".txt", "long path");  // PAX path
  TarEntry long_link = Entry("long-link", TarEntryType::kSymlink, 0777);
  long_link.link_target = "/" + long_dir + "/" + std::string(80, 'f') + ".txt";  // PAX linkpath
  l1.Add(long_link);
  TarEntry x = Entry("xattrs.txt", TarEntryType::kRegular, 0644);
  x.xattrs["user.imgfs.text"] = "hello";
  x.xattrs["user.imgfs.binary"] = std::string("\x00\xff\x10", 3);
  x.size = 6;
  l1.Add(x, "xattrs");
  l1.Dir("opt");
  l1.Dir("opt/was-dir");
  l1.File("opt/was-dir/child", "child");
  l1.File("opt/was-file", "file");
  l1.Dir("hl");
  l1.File("hl/orig", "hardlinked data\n");
  TarEntry link = Entry("hl/link1", TarEntryType::kHardlink, 0644);
  link.link_target = "hl/orig";
  l1.Add(link);
  TarEntry link2 = Entry("hl/link2", TarEntryType::kHardlink, 0644);
  link2.link_target = "hl/orig";
  l1.Add(link2);
  l1.File("dup.txt", "first");
  l1.File("dup.txt", "second wins");  // duplicate entry: last wins
  l1.Dir("gone");
  l1.File("gone/a", "a");
  l1.Dir("gone/sub");
  l1.File("gone/sub/b", "b");

  Layer& l2 = layers[1];
  l2.Dir("etc");
  l2.Add(registry::WhiteoutEntry("etc/removed.txt"));
  l2.File("opt/was-dir", "now a file");  // directory replaced by a file, no whiteout
  l2.Dir("opt/was-file");                // file replaced by a directory
  l2.File("opt/was-file/inside", "inside");
  l2.Dir("shared", 02775);
  l2.File("shared/new.txt", "new");
  l2.Add(registry::OpaqueEntry("shared"));  // opaque marker AFTER the layer's own entries
  l2.Add(registry::WhiteoutEntry("gone"));  // a whole directory

  Layer& l3 = layers[2];
  l3.Add(registry::OpaqueEntry("hl"));  // opaque marker BEFORE the layer's own entries
  l3.Dir("hl");
  l3.File("hl/fresh", "fresh");
  l3.File("etc/precise.txt", "replaced in layer 3\n", 0600);
  return layers;
}

TEST(TarFeaturesTest, MountEqualsUmociUnpack) {
  ASSERT_EQ(geteuid(), 0u) << "mount tests run as root";
  TempDir dir;
  ASSERT_TRUE(WriteImage(dir.Sub("layout"), FeatureLayers()).ok());
  ProcessResult unpack = RunProcess(
      {"umoci", "unpack", "--image", dir.Sub("layout") + ":features", dir.Sub("bundle")});
  ASSERT_EQ(unpack.exit_code, 0) << unpack.Describe();
  ASSERT_TRUE(MakeDirs(dir.Sub("mnt")).ok());
  // However the test ends, nothing stays mounted (the TempDir is removed after this runs).
  struct UnmountGuard {
    std::string dir;
    ~UnmountGuard() {
      if (IsMounted(dir)) RunProcess({"umount", "-l", dir});
    }
  } guard{dir.Sub("mnt")};
  ProcessResult mount =
      RunProcess({kImgfsBinary, "mount", "oci:" + dir.Sub("layout") + ":features", dir.Sub("mnt")},
                 {"IMGFS_ROOT=" + dir.Sub("store")});
  ASSERT_EQ(mount.exit_code, 0) << mount.Describe();

  TreeOptions options;
  std::string error;
  auto expected = ListTree(dir.Sub("bundle/rootfs"), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  auto actual = ListTree(dir.Sub("mnt"), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  std::vector<std::string> diffs = CompareTrees(actual, expected, options);
  std::string all;
  for (const std::string& d : diffs) all += d + "\n";
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences:\n" << all;

  // Spot checks that the oracle itself shows the features (so equality means something).
  EXPECT_EQ(expected.count("/etc/removed.txt"), 0u);
  EXPECT_EQ(expected.count("/gone"), 0u);
  EXPECT_EQ(expected.count("/shared/old.txt"), 0u);
  EXPECT_EQ(expected.count("/hl/orig"), 0u);
  ASSERT_EQ(actual.count("/dev/sda"), 1u);
  EXPECT_EQ(actual["/dev/sda"].type, 'b');
  EXPECT_EQ(actual["/dev/sda"].content, "8:0");
  EXPECT_EQ(actual["/tmp"].mode, 01777u);
  EXPECT_EQ(actual["/shared"].mode, 02775u);
  EXPECT_EQ(actual["/usr-setuid"].mode, 04755u);
  EXPECT_EQ(actual["/bigids.txt"].uid, 4000000u);
  EXPECT_EQ(actual["/opt/was-dir"].type, 'f');
  EXPECT_EQ(actual["/opt/was-file"].type, 'd');
  EXPECT_EQ(actual["/dup.txt"].size, "11");
  EXPECT_NE(actual["/xattrs.txt"].xattrs.find("user.imgfs.binary=0x00ff10"), std::string::npos);

  ProcessResult umount =
      RunProcess({kImgfsBinary, "umount", dir.Sub("mnt")}, {"IMGFS_ROOT=" + dir.Sub("store")});
  EXPECT_EQ(umount.exit_code, 0) << umount.Describe();
  EXPECT_FALSE(IsMounted(dir.Sub("mnt")));
}

}  // namespace
}  // namespace imgfs::testing
