// imgfs — commit: the upper directory → layer tar conversion (whiteouts, opaque directories,
// hardlinks, devices, xattrs, determinism), --change instructions, and CommitUpper writing a
// new image into a real store.
#include "fs/image_ops/commit.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/images.h"
#include "cache/store.h"
#include "fs/image_ops/pull.h"
#include "registry/manifest.h"
#include "registry/media_types.h"
#include "registry/tar_reader.h"
#include "registry/tar_writer.h"
#include "tests/support/image_builder.h"

namespace imgfs::fs {
namespace {

using registry::TarEntry;
using registry::TarEntryType;
using testing::TempDir;

void WriteText(const std::string& path, const std::string& data, mode_t mode = 0644) {
  ASSERT_TRUE(WriteFileAtomic(path, data, mode).ok()) << path;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

void SetTime(const std::string& path, int64_t sec, long nsec) {  // NOLINT(google-runtime-int)
  struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << path;
}

// An upper directory using every feature of the overlayfs conventions.
void MakeUpper(const std::string& u) {
  ASSERT_TRUE(MakeDirs(u + "/etc").ok());
  WriteText(u + "/etc/motd", "hello\n", 0640);
  ASSERT_EQ(::chown((u + "/etc/motd").c_str(), 1000, 1001), 0);
  ASSERT_EQ(::lsetxattr((u + "/etc/motd").c_str(), "user.k", "v", 1, 0), 0);
  ASSERT_EQ(::mknod((u + "/gone").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);  // whiteout
  ASSERT_TRUE(MakeDirs(u + "/opq").ok());
  ASSERT_EQ(::lsetxattr((u + "/opq").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  WriteText(u + "/opq/new", "new");
  ASSERT_EQ(::lsetxattr((u + "/etc").c_str(), "trusted.overlay.origin", "xx", 2, 0), 0);
  ASSERT_TRUE(MakeDirs(u + "/hl").ok());
  WriteText(u + "/hl/a", "linked");
  ASSERT_EQ(::link((u + "/hl/a").c_str(), (u + "/hl/b").c_str()), 0);
  ASSERT_EQ(::symlink("etc/motd", (u + "/sym").c_str()), 0);
  ASSERT_EQ(::mkfifo((u + "/fifo").c_str(), 0600), 0);
  ASSERT_EQ(::mknod((u + "/tty").c_str(), S_IFCHR | 0620, makedev(4, 5)), 0);
  ASSERT_EQ(::chmod((u + "/tty").c_str(), 0620), 0);  // whatever the umask
  int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::string sock = u + "/sock";
  ASSERT_LT(sock.size(), sizeof(addr.sun_path));
  std::strcpy(addr.sun_path, sock.c_str());
  ASSERT_EQ(::bind(s, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(s);
  SetTime(u + "/etc/motd", 1700000000, 123456789);
  SetTime(u + "/sym", 1600000000, 0);
}

std::vector<TarEntry> ReadEntries(const std::string& tar,
                                  std::map<std::string, std::string>* data) {
  std::vector<TarEntry> out;
  registry::StringTarInput input(tar);
  registry::TarReader reader(&input);
  while (true) {
    auto next = reader.Next();
    EXPECT_TRUE(next.has_value()) << next.error().ToString();
    if (!next.has_value() || !next->has_value()) break;
    TarEntry e = **next;
    if (e.type == TarEntryType::kRegular && data != nullptr) {
      auto payload = reader.ReadPayload(e.size + 1);
      EXPECT_TRUE(payload.has_value());
      (*data)[e.name] = payload.has_value() ? *payload : "";
    }
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::string> LayerTar(const std::string& upper) {
  std::string tar;
  registry::TarWriter writer(&tar);
  IMGFS_RETURN_IF_ERROR(WriteUpperLayer(upper, writer));
  return tar;
}

TEST(CommitLayerTest, UpperBecomesAnOciLayer) {
  ASSERT_EQ(geteuid(), 0u) << "whiteouts (mknod 0/0) and trusted.* xattrs need root";
  TempDir dir;
  MakeUpper(dir.Sub("u"));
  auto tar = LayerTar(dir.Sub("u"));
  ASSERT_TRUE(tar.has_value()) << tar.error().ToString();
  std::map<std::string, std::string> data;
  std::vector<TarEntry> entries = ReadEntries(*tar, &data);
  std::vector<std::string> names;
  for (const TarEntry& e : entries) names.push_back(e.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"", "etc", "etc/motd", "fifo", ".wh.gone", "hl", "hl/a",
                                      "hl/b", "opq", "opq/.wh..wh..opq", "opq/new", "sym", "tty"}));
  std::map<std::string, TarEntry> by_name;
  for (const TarEntry& e : entries) by_name[e.name] = e;

  const TarEntry& motd = by_name["etc/motd"];
  EXPECT_EQ(motd.type, TarEntryType::kRegular);
  EXPECT_EQ(motd.mode, 0640u);
  EXPECT_EQ(motd.uid, 1000u);
  EXPECT_EQ(motd.gid, 1001u);
  EXPECT_EQ(motd.mtime_sec, 1700000000);
  EXPECT_EQ(motd.mtime_nsec, 123456789u);
  EXPECT_EQ(motd.xattrs, (std::map<std::string, std::string>{{"user.k", "v"}}));
  EXPECT_EQ(data["etc/motd"], "hello\n");
  // trusted.overlay.* never leaves the upper.
  for (const TarEntry& e : entries) {
    for (const auto& [k, v] : e.xattrs) EXPECT_FALSE(k.starts_with("trusted.overlay.")) << e.name;
  }
  EXPECT_EQ(by_name[".wh.gone"].type, TarEntryType::kRegular);
  EXPECT_EQ(by_name[".wh.gone"].size, 0u);
  EXPECT_EQ(by_name["opq/.wh..wh..opq"].type, TarEntryType::kRegular);
  EXPECT_EQ(by_name["hl/a"].type, TarEntryType::kRegular);
  EXPECT_EQ(by_name["hl/b"].type, TarEntryType::kHardlink);
  EXPECT_EQ(by_name["hl/b"].link_target, "hl/a");
  EXPECT_EQ(by_name["sym"].type, TarEntryType::kSymlink);
  EXPECT_EQ(by_name["sym"].link_target, "etc/motd");
  EXPECT_EQ(by_name["sym"].mtime_sec, 1600000000);
  EXPECT_EQ(by_name["fifo"].type, TarEntryType::kFifo);
  EXPECT_EQ(by_name["tty"].type, TarEntryType::kChar);
  EXPECT_EQ(by_name["tty"].dev_major, 4u);
  EXPECT_EQ(by_name["tty"].dev_minor, 5u);
  EXPECT_EQ(by_name["tty"].mode, 0620u);
  EXPECT_EQ(by_name.count("sock"), 0u);  // sockets cannot be archived

  // Deterministic: the same upper gives the same bytes.
  auto again = LayerTar(dir.Sub("u"));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, *tar);
}

TEST(CommitLayerTest, ReservedNamesAndRedirectsAreRefused) {
  ASSERT_EQ(geteuid(), 0u);
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.Sub("a/d")).ok());
  WriteText(dir.Sub("a/d/.wh.sneaky"), "");
  auto reserved = LayerTar(dir.Sub("a"));
  ASSERT_FALSE(reserved.has_value());
  EXPECT_EQ(reserved.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(reserved.error().message().find(".wh.sneaky"), std::string::npos);

  ASSERT_TRUE(MakeDirs(dir.Sub("b/moved")).ok());
  ASSERT_EQ(::lsetxattr(dir.Sub("b/moved").c_str(), "trusted.overlay.redirect", "/old", 4, 0), 0);
  auto redirect = LayerTar(dir.Sub("b"));
  ASSERT_FALSE(redirect.has_value());
  EXPECT_EQ(redirect.error().code(), StatusCode::kUnsupported);

  auto missing = LayerTar(dir.Sub("nope"));
  EXPECT_FALSE(missing.has_value());
}

// An upper written without root marks opaque directories with user.overlay.opaque (overlayfs's
// userxattr names): commit reads it as it reads trusted.overlay.opaque, keeps user.overlay.*
// out of the layer like trusted.overlay.*, and refuses its redirects too.
TEST(CommitLayerTest, UserxattrUpperOfAnUnprivilegedMount) {
  TempDir dir;
  const std::string u = dir.Sub("u");
  ASSERT_TRUE(MakeDirs(u + "/opq").ok());
  ASSERT_EQ(::lsetxattr((u + "/opq").c_str(), "user.overlay.opaque", "y", 1, 0), 0);
  WriteText(u + "/opq/new", "new");
  ASSERT_TRUE(MakeDirs(u + "/kept").ok());
  ASSERT_EQ(::lsetxattr((u + "/kept").c_str(), "user.overlay.opaque", "n", 1, 0), 0);
  ASSERT_EQ(::lsetxattr((u + "/kept").c_str(), "user.overlay.origin", "xx", 2, 0), 0);
  ASSERT_EQ(::lsetxattr((u + "/kept").c_str(), "user.k", "v", 1, 0), 0);
  auto tar = LayerTar(u);
  ASSERT_TRUE(tar.has_value()) << tar.error().ToString();
  std::vector<TarEntry> entries = ReadEntries(*tar, nullptr);
  std::map<std::string, TarEntry> by_name;
  for (const TarEntry& e : entries) by_name[e.name] = e;
  EXPECT_EQ(by_name.count("opq/.wh..wh..opq"), 1u);
  EXPECT_EQ(by_name.count("kept/.wh..wh..opq"), 0u);
  EXPECT_EQ(by_name["kept"].xattrs, (std::map<std::string, std::string>{{"user.k", "v"}}));
  EXPECT_TRUE(by_name["opq"].xattrs.empty());

  ASSERT_TRUE(MakeDirs(dir.Sub("r/moved")).ok());
  ASSERT_EQ(::lsetxattr(dir.Sub("r/moved").c_str(), "user.overlay.redirect", "/old", 4, 0), 0);
  auto redirect = LayerTar(dir.Sub("r"));
  ASSERT_FALSE(redirect.has_value());
  EXPECT_EQ(redirect.error().code(), StatusCode::kUnsupported);
}

TEST(CommitFormatTest, ParsesFormats) {
  EXPECT_EQ(*ParseLayerCompression(""), LayerCompression::kGzip);
  EXPECT_EQ(*ParseLayerCompression("gzip"), LayerCompression::kGzip);
  EXPECT_EQ(*ParseLayerCompression("zstd"), LayerCompression::kZstd);
  EXPECT_EQ(*ParseLayerCompression("estargz"), LayerCompression::kEstargz);
  EXPECT_EQ(*ParseLayerCompression("zstd:chunked"), LayerCompression::kZstdChunked);
  EXPECT_EQ(ParseLayerCompression("bzip2").error().code(), StatusCode::kInvalidArgument);
}

TEST(CommitChangesTest, DockerfileInstructionsEditTheConfig) {
  const std::string base =
      R"({"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=0"],"Cmd":["sh"]}})";
  auto out = ApplyConfigChanges(
      base, {"ENV A=1 B=\"two words\"", "ENV C three words", "CMD [\"/app\", \"--flag\"]",
             "ENTRYPOINT run me", "WORKDIR /srv", "user nobody", "LABEL a=b 'c d'=e",
             "EXPOSE 8080 53/udp", "VOLUME /data"});
  ASSERT_TRUE(out.has_value()) << out.error().ToString();
  nlohmann::json j = nlohmann::json::parse(*out);
  const nlohmann::json& c = j["config"];
  EXPECT_EQ(c["Env"], nlohmann::json({"PATH=/bin", "A=1", "B=two words", "C=three words"}));
  EXPECT_EQ(c["Cmd"], nlohmann::json({"/app", "--flag"}));
  EXPECT_EQ(c["Entrypoint"], nlohmann::json({"/bin/sh", "-c", "run me"}));
  EXPECT_EQ(c["WorkingDir"], "/srv");
  EXPECT_EQ(c["User"], "nobody");
  EXPECT_EQ(c["Labels"], nlohmann::json({{"a", "b"}, {"c d", "e"}}));
  EXPECT_TRUE(c["ExposedPorts"].contains("8080/tcp"));
  EXPECT_TRUE(c["ExposedPorts"].contains("53/udp"));
  EXPECT_TRUE(c["Volumes"].contains("/data"));
  EXPECT_EQ(j["architecture"], "amd64");  // the rest is kept

  EXPECT_EQ(ApplyConfigChanges(base, {"RUN rm -rf /"}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigChanges(base, {"CMD [\"unterminated\""}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigChanges(base, {"ENV"}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyConfigChanges("not json", {}).error().code(), StatusCode::kCorrupt);
}

std::string Gunzip(const std::string& gz) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  std::string out;
  char buf[65536];
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  zs.avail_in = static_cast<uInt>(gz.size());
  int rc = Z_OK;
  while (true) {  // every member of a multi-member stream (eStargz)
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);
    }
  }
  inflateEnd(&zs);
  EXPECT_EQ(rc, Z_STREAM_END);
  return out;
}

class CommitUpperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::ImageBuilder builder(dir_.Sub("layout"));
    auto built = builder.Add(testing::SimpleImage({{"base.txt", "base"}}), "v1");
    ASSERT_TRUE(built.has_value()) << built.error().ToString();
    auto store = cache::Store::Open(dir_.Sub("store"));
    ASSERT_TRUE(store.has_value()) << store.error().ToString();
    store_ = std::move(store).value();
    Puller puller(store_.get(), PullOptions());
    auto pulled = puller.Pull("oci:" + dir_.Sub("layout") + ":v1");
    ASSERT_TRUE(pulled.has_value()) << pulled.error().ToString();
    source_.base_manifest = (*pulled)[0].manifest_digest;
    source_.base_reference = (*pulled)[0].reference.String();
    source_.upper = dir_.Sub("upper");
    source_.description = "test upper";
    ASSERT_TRUE(MakeDirs(source_.upper).ok());
    WriteText(source_.upper + "/added.txt", "added\n");
  }

  TempDir dir_;
  std::unique_ptr<cache::Store> store_;
  CommitSource source_;
};

TEST_F(CommitUpperTest, RecordsANewImageOnTopOfTheBase) {
  CommitOptions options;
  options.message = "my change";
  options.author = "Jane";
  options.changes = {"ENV K=V"};
  options.created = "2025-01-02T03:04:05Z";
  auto ref = registry::Reference::Parse("example.com/me/app:c1");
  ASSERT_TRUE(ref.has_value());
  auto committed = CommitUpper(*store_, source_, *ref, options);
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();

  auto image = cache::ResolveImage(*store_, "example.com/me/app:c1");
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  EXPECT_EQ(image->id, committed->config_digest);
  ASSERT_EQ(image->decoded.layers.size(), 2u);
  EXPECT_EQ(image->decoded.media_type, registry::media::kOciManifest);
  EXPECT_EQ(image->decoded.layers[1].media_type, registry::media::kOciLayerGzip);
  EXPECT_EQ(image->decoded.layers[1].digest, committed->layer.digest);
  EXPECT_EQ(image->decoded.annotations["org.opencontainers.image.base.digest"],
            source_.base_manifest.String());
  ASSERT_EQ(image->config.diff_ids.size(), 2u);
  EXPECT_EQ(image->config.diff_ids[1], committed->diff_id);
  EXPECT_EQ(image->config.created, "2025-01-02T03:04:05Z");
  EXPECT_EQ(image->config.author, "Jane");
  EXPECT_NE(std::find(image->config.env.begin(), image->config.env.end(), "K=V"),
            image->config.env.end());
  nlohmann::json raw = nlohmann::json::parse(image->config.raw);
  EXPECT_EQ(raw["history"].back()["comment"], "my change");
  EXPECT_EQ(raw["history"].back()["created"], "2025-01-02T03:04:05Z");

  // The layer blob: gzip of a tar whose sha256 is the diff_id, holding the upper's file.
  auto blob = ReadFile(store_->BlobPath(committed->layer.digest));
  ASSERT_TRUE(blob.has_value());
  std::string tar = Gunzip(*blob);
  EXPECT_EQ(registry::Digest::Sha256Of(tar), committed->diff_id);
  std::map<std::string, std::string> data;
  ReadEntries(tar, &data);
  EXPECT_EQ(data["added.txt"], "added\n");

  // Same upper, same options → the same image (deterministic layer, config and manifest).
  auto ref2 = registry::Reference::Parse("example.com/me/app:c2");
  auto again = CommitUpper(*store_, source_, *ref2, options);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->manifest_digest, committed->manifest_digest);
  // Nothing left behind in tmp/.
  EXPECT_TRUE(testing::ListFilesRecursive(store_->Subdir("tmp")).empty());
}

TEST_F(CommitUpperTest, ZstdLayers) {
  CommitOptions options;
  options.compression = LayerCompression::kZstd;
  auto ref = registry::Reference::Parse("example.com/me/app:z");
  auto committed = CommitUpper(*store_, source_, *ref, options);
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();
  EXPECT_EQ(committed->layer.media_type, registry::media::kOciLayerZstd);
  auto blob = ReadFile(store_->BlobPath(committed->layer.digest));
  ASSERT_TRUE(blob.has_value());
  ASSERT_GE(blob->size(), 4u);
  EXPECT_EQ(blob->substr(0, 4), std::string("\x28\xb5\x2f\xfd", 4));  // zstd frame magic
}

TEST_F(CommitUpperTest, LazyFormats) {
  CommitOptions options;
  options.compression = LayerCompression::kEstargz;
  auto ref = registry::Reference::Parse("example.com/me/app:estargz");
  auto estargz = CommitUpper(*store_, source_, *ref, options);
  ASSERT_TRUE(estargz.has_value()) << estargz.error().ToString();
  EXPECT_EQ(estargz->layer.media_type, registry::media::kOciLayerGzip);
  EXPECT_EQ(estargz->layer.annotations.count("containerd.io/snapshot/stargz/toc.digest"), 1u);
  auto blob = ReadFile(store_->BlobPath(estargz->layer.digest));
  ASSERT_TRUE(blob.has_value());
  std::string tar = Gunzip(*blob);
  EXPECT_EQ(registry::Digest::Sha256Of(tar), estargz->diff_id);
  std::map<std::string, std::string> data;
  ReadEntries(tar, &data);
  EXPECT_EQ(data["added.txt"], "added\n");
  EXPECT_EQ(data.count("stargz.index.json"), 1u);
  auto image = cache::ResolveImage(*store_, "example.com/me/app:estargz");
  ASSERT_TRUE(image.has_value());
  EXPECT_EQ(image->config.diff_ids.back(), estargz->diff_id);
  EXPECT_EQ(image->decoded.layers.back(), estargz->layer);  // annotations kept

  options.compression = LayerCompression::kZstdChunked;
  ref = registry::Reference::Parse("example.com/me/app:chunked");
  auto chunked = CommitUpper(*store_, source_, *ref, options);
  ASSERT_TRUE(chunked.has_value()) << chunked.error().ToString();
  EXPECT_EQ(chunked->layer.media_type, registry::media::kOciLayerZstd);
  EXPECT_EQ(chunked->layer.annotations.count("io.github.containers.zstd-chunked.manifest-checksum"),
            1u);
  EXPECT_TRUE(testing::ListFilesRecursive(store_->Subdir("tmp")).empty());
}

TEST_F(CommitUpperTest, InvalidUtf8IsRefusedNotThrown) {
  CommitOptions options;
  options.message = "bad \xff byte";
  auto ref = registry::Reference::Parse("example.com/me/app:utf8");
  auto r = CommitUpper(*store_, source_, *ref, options);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(cache::ResolveImage(*store_, "example.com/me/app:utf8").has_value());
  EXPECT_EQ(ApplyConfigChanges("{}", {"LABEL a=\xfe"}).error().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(CommitUpperTest, UnknownSourcesAreNotFound) {
  auto r = ResolveCommitSource(*store_, "no-such-container");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound);
  auto m = ResolveCommitSource(*store_, dir_.path());  // a directory, but no mount
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace imgfs::fs
