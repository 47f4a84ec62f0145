// imgfs — unit tests of the Additional Layer Store's pure parts (fs/layer_store/layer_store.h):
// reference directory names, the info file, the overlay-format view of one layer, and the
// references that pin layers in the store (fs/layer_store/layer_references.h).
#include "fs/layer_store/layer_store.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cache/leases.h"
#include "cache/usage.h"
#include "fs/layer_store/auth_helper.h"
#include "fs/layer_store/layer_references.h"
#include "fs/layer_store/layer_store_journal.h"
#include "fs/tree/overlay.h"
#include "tests/cache/cache_test_util.h"

namespace imgfs::fs {
namespace {

FileEntry Entry(std::string path, EntryType type, uint32_t mode = 0755) {
  FileEntry e;
  e.path = std::move(path);
  e.type = type;
  e.mode = mode;
  return e;
}

std::string XattrOr(const NodeTable& table, uint64_t ino, std::string_view name) {
  Result<std::string_view> v = table.GetXattr(ino, name);
  return v.has_value() ? std::string(*v) : std::string();
}

TEST(LayerStoreNamesTest, DecodesBase64References) {
  // base64("127.0.0.1:5000/lab/app:esgz")
  Result<std::string> ref = DecodeRefElement("MTI3LjAuMC4xOjUwMDAvbGFiL2FwcDplc2d6");
  ASSERT_TRUE(ref.has_value()) << ref.error().ToString();
  EXPECT_EQ(*ref, "127.0.0.1:5000/lab/app:esgz");
  // base64("alpine"): normalised as docker does.
  ref = DecodeRefElement("YWxwaW5l");
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(*ref, "docker.io/library/alpine:latest");
}

TEST(LayerStoreNamesTest, RefusesWhatIsNotAReference) {
  EXPECT_FALSE(DecodeRefElement("").has_value());
  EXPECT_FALSE(DecodeRefElement("not base64!").has_value());
  EXPECT_FALSE(DecodeRefElement(std::string(kMaxRefElementBytes + 4, 'A')).has_value());
  // base64("a b"), base64("a//b"), base64 of a bare 64-hex image ID.
  EXPECT_FALSE(DecodeRefElement("YSBi").has_value());
  EXPECT_FALSE(DecodeRefElement("YS8vYg==").has_value());
  EXPECT_FALSE(DecodeRefElement("YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYW"
                                "FhYWFhYWFhYWFhYWFhYQ==")
                   .has_value());
}

TEST(LayerStoreInfoTest, WritesTheFieldsContainersStorageParses) {
  LayerInfo info;
  info.compressed = registry::Digest::Sha256Of("blob");
  info.compressed_size = 1234;
  info.diff_id = registry::Digest::Sha256Of("tar");
  info.toc = registry::Digest::Sha256Of("toc");
  info.compression = LayerInfo::Compression::kZstd;
  info.diff_size = 5678;
  const std::string json = LayerInfoJson(info);
  for (const char* field :
       {"\"compressed-diff-digest\"", "\"compressed-size\":1234", "\"compression\":4",
        "\"diff-digest\"", "\"toc-digest\"", "\"diff-size\":5678", "\"expected-layer-diffid\""}) {
    EXPECT_NE(json.find(field), std::string::npos) << field << " in " << json;
  }
  Result<LayerInfo> back = ParseLayerInfoJson(json);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->compressed, info.compressed);
  EXPECT_EQ(back->diff_id, info.diff_id);
  EXPECT_EQ(back->toc, info.toc);
  EXPECT_EQ(back->compression, LayerInfo::Compression::kZstd);
  EXPECT_EQ(back->diff_size, 5678u);

  // Unknown parts are left out rather than written empty.
  LayerInfo bare;
  bare.compressed = info.compressed;
  const std::string minimal = LayerInfoJson(bare);
  EXPECT_EQ(minimal.find("\"diff-digest\""), std::string::npos);
  EXPECT_EQ(minimal.find("toc-digest"), std::string::npos);
  EXPECT_NE(minimal.find("\"compression\":2"), std::string::npos);
}

TEST(LayerStoreInfoTest, RefusesMalformedInfo) {
  EXPECT_FALSE(ParseLayerInfoJson("[]").has_value());
  // Every info file names its layer: without compressed-diff-digest it is not one.
  EXPECT_FALSE(ParseLayerInfoJson("{}").has_value());
  EXPECT_FALSE(ParseLayerInfoJson("{\"compression\":2}").has_value());
  const std::string named = "{\"compressed-diff-digest\":\"sha256:" + std::string(64, 'a') + "\"";
  EXPECT_TRUE(ParseLayerInfoJson(named + "}").has_value());
  EXPECT_FALSE(ParseLayerInfoJson(named + ",\"compression\":7}").has_value());
  EXPECT_FALSE(ParseLayerInfoJson(named + ",\"compressed-size\":-1}").has_value());
  EXPECT_FALSE(ParseLayerInfoJson(named + ",\"toc-digest\":\"md5:00\"}").has_value());
  EXPECT_FALSE(ParseLayerInfoJson(std::string(70000, ' ')).has_value());
}

TEST(LayerStoreOverlayTest, WhiteoutsBecomeDevicesAndOpaqueDirectoriesGetBothMarkers) {
  LayerIndex index;
  index.entries.push_back(Entry("", EntryType::kDirectory));
  index.entries.push_back(Entry("etc", EntryType::kDirectory));
  index.entries.push_back(Entry("etc/issue", EntryType::kWhiteout, 0));
  FileEntry conf = Entry("etc/conf.d", EntryType::kDirectory, 0750);
  conf.xattrs = {{"trusted.overlay.redirect", "/elsewhere"}, {"user.keep", "1"}};
  index.entries.push_back(conf);
  index.entries.push_back(Entry("etc/conf.d", EntryType::kOpaque, 0));
  index.entries.push_back(Entry("etc/conf.d/new.conf", EntryType::kRegular, 0644));
  // An opaque marker whose directory has no entry of its own in the layer.
  index.entries.push_back(Entry("var/lib", EntryType::kOpaque, 0));

  const LayerIndex overlay = ToOverlayFormat(index);
  ASSERT_EQ(overlay.entries.size(), index.entries.size());
  const LayerIndex* views[] = {&overlay};
  Result<NodeTable> table = MergeLayers(views);
  ASSERT_TRUE(table.has_value()) << table.error().ToString();

  auto ino = [&](std::vector<std::string> path) {
    uint64_t at = NodeTable::kRootIno;
    for (const std::string& name : path) {
      Result<uint64_t> next = table->Lookup(at, name);
      if (!next.has_value()) return uint64_t{0};
      at = *next;
    }
    return at;
  };
  const uint64_t issue = ino({"etc", "issue"});
  ASSERT_NE(issue, 0u);
  const Node* n = table->Get(issue);
  EXPECT_EQ(n->type, EntryType::kChar);
  EXPECT_EQ(n->dev_major, 0u);
  EXPECT_EQ(n->dev_minor, 0u);

  const uint64_t confd = ino({"etc", "conf.d"});
  ASSERT_NE(confd, 0u);
  EXPECT_EQ(table->Get(confd)->type, EntryType::kDirectory);
  EXPECT_EQ(table->Get(confd)->mode, 0750u) << "the marker keeps the directory's attributes";
  EXPECT_EQ(XattrOr(*table, confd, "trusted.overlay.opaque"), "y");
  EXPECT_EQ(XattrOr(*table, confd, "user.overlay.opaque"), "y");
  EXPECT_EQ(XattrOr(*table, confd, "user.keep"), "1");
  EXPECT_FALSE(table->GetXattr(confd, "trusted.overlay.redirect").has_value())
      << "a layer's own overlay xattrs are not served";
  EXPECT_NE(ino({"etc", "conf.d", "new.conf"}), 0u);
  EXPECT_FALSE(table->GetXattr(ino({"etc"}), "trusted.overlay.opaque").has_value());

  const uint64_t lib = ino({"var", "lib"});
  ASSERT_NE(lib, 0u);
  EXPECT_EQ(table->Get(lib)->type, EntryType::kDirectory);
  EXPECT_EQ(XattrOr(*table, lib, "user.overlay.opaque"), "y");
}

// The value of `r`, or `otherwise` when it holds an error.
template <typename T>
T ValueOr(Result<T> r, T otherwise) {
  return r.has_value() ? std::move(r).value() : otherwise;
}

// References are leases: they pin the layer's image against GC while held, a later daemon
// of the same owner adopts them, and the last Drop unpins.
TEST(LayerReferencesTest, PinTheImageUntilTheLastIsDropped) {
  cache::testing::TempDir dir;
  Result<std::unique_ptr<cache::Store>> opened = cache::Store::Open(dir.path() + "/store");
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  cache::Store& store = **opened;
  // Recorded nowhere in index.json: only the references keep it.
  const cache::testing::SyntheticImage image = cache::testing::MakeImage(store, {"layer"});
  const std::string key = "cmVm/sha256:" + std::string(64, 'a');
  LayerReferences first(&store, ::getpid(), "/als");
  ASSERT_EQ(ValueOr<int64_t>(first.Take(key, image.manifest.digest, "example.com/a:1"), 0), 1);
  ASSERT_EQ(ValueOr<int64_t>(first.Take(key, image.manifest.digest, "example.com/a:1"), 0), 2);
  EXPECT_EQ(first.Count(key), 2);
  EXPECT_EQ(first.Referenced(), 1u);
  // Another layer store (another mountpoint) has its own.
  LayerReferences other(&store, ::getpid(), "/elsewhere");
  ASSERT_EQ(ValueOr<int64_t>(other.Take(key, image.manifest.digest, "example.com/a:1"), 0), 1);
  Result<std::vector<cache::LeaseInfo>> leases = cache::ListLiveLeases(store);
  ASSERT_TRUE(leases.has_value());
  ASSERT_EQ(leases->size(), 3u);
  EXPECT_EQ(other.Drop(key), 0);

  ASSERT_TRUE(cache::CollectGarbage(store, {}).has_value());
  EXPECT_TRUE(store.HasBlob(image.manifest.digest));
  EXPECT_TRUE(store.HasBlob(image.config));
  EXPECT_TRUE(store.HasBlob(image.layers[0]));
  Result<cache::StoreUsage> usage = cache::ScanUsage(store);
  ASSERT_TRUE(usage.has_value());
  ASSERT_EQ(usage->images.size(), 1u);
  ASSERT_EQ(usage->images[0].pinned_by.size(), 2u);
  EXPECT_NE(usage->images[0].pinned_by[0].find("/als/" + key), std::string::npos);

  // The next daemon (same owner, same mountpoint) reads them back.
  LayerReferences second(&store, ::getpid(), "/als");
  ASSERT_EQ(ValueOr<size_t>(second.Recover(), 0), 2u);
  EXPECT_EQ(second.Count(key), 2);
  EXPECT_EQ(second.Drop(key), 1);
  ASSERT_TRUE(cache::CollectGarbage(store, {}).has_value());
  EXPECT_TRUE(store.HasBlob(image.manifest.digest));
  EXPECT_EQ(second.Drop(key), 0);
  EXPECT_EQ(second.Drop(key), 0) << "none held: nothing changes";
  EXPECT_EQ(second.Referenced(), 0u);
  ASSERT_TRUE(cache::CollectGarbage(store, {}).has_value());
  EXPECT_FALSE(store.HasBlob(image.manifest.digest));
  EXPECT_FALSE(store.HasBlob(image.layers[0]));

  // An image that left the store cannot be referenced.
  Result<int64_t> gone = first.Take(key, image.manifest.digest, "example.com/a:1");
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().code(), StatusCode::kNotFound);
}

TEST(LayerReferencesTest, TheLastOneOutRemovesItsLeases) {
  cache::testing::TempDir dir;
  Result<std::unique_ptr<cache::Store>> opened = cache::Store::Open(dir.path() + "/store");
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  const cache::testing::SyntheticImage image = cache::testing::MakeImage(**opened, {"layer"});
  {
    LayerReferences refs(opened->get(), ::getpid(), "/als");
    ASSERT_TRUE(
        refs.Take("cmVm/sha256:" + std::string(64, 'b'), image.manifest.digest, "a").has_value());
    ASSERT_EQ(ValueOr<std::vector<cache::LeaseInfo>>(cache::ListLiveLeases(**opened), {}).size(),
              1u);
  }
  EXPECT_TRUE(ValueOr<std::vector<cache::LeaseInfo>>(cache::ListLiveLeases(**opened), {}).empty());
}

// Directory numbers: handed out in lookup order, journaled, and read back by the next
// daemon, which goes on numbering where the dead one stopped.
TEST(LayerStoreJournalTest, TheNextDaemonGivesTheSameNumbers) {
  const int fd = memfd_create("journal", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string digest_a = "sha256:" + std::string(64, 'a');
  const std::string digest_b = "sha256:" + std::string(64, 'b');
  {
    LayerStoreJournal first(fd);
    ASSERT_TRUE(first.Load().ok());
    EXPECT_EQ(ValueOr<uint64_t>(first.RefDir("YWxwaW5l"), 0), 2u);
    EXPECT_EQ(ValueOr<uint64_t>(first.RefDir("YnVzeWJveA=="), 0), 3u);
    EXPECT_EQ(ValueOr<uint64_t>(first.RefDir("YWxwaW5l"), 0), 2u);
    EXPECT_EQ(ValueOr<uint64_t>(first.Slot(3, digest_a), 0), 1u);
    EXPECT_EQ(ValueOr<uint64_t>(first.Slot(2, digest_a), 0), 2u);
    EXPECT_EQ(ValueOr<uint64_t>(first.Slot(3, digest_a), 0), 1u);
    EXPECT_FALSE(first.Slot(4, digest_b).has_value()) << "no such directory";
  }
  // A daemon killed in the middle of a write: its last line has no newline.
  ASSERT_EQ(write(fd, "L 2 sha2", 8), 8);
  LayerStoreJournal second(fd);
  ASSERT_TRUE(second.Load().ok());
  EXPECT_EQ(second.ref_dir_count(), 2u);
  EXPECT_EQ(second.slot_count(), 2u);
  EXPECT_EQ(second.RefName(3).value_or(""), "YnVzeWJveA==");
  ASSERT_TRUE(second.SlotAt(2).has_value());
  EXPECT_EQ(second.SlotAt(2)->ref_element, "YWxwaW5l");
  EXPECT_EQ(second.SlotAt(2)->digest_element, digest_a);
  EXPECT_FALSE(second.SlotAt(3).has_value());
  EXPECT_EQ(ValueOr<uint64_t>(second.Slot(2, digest_b), 0), 3u);
  using Layers = std::vector<std::pair<uint64_t, std::string>>;
  EXPECT_EQ(second.LayersIn(2), (Layers{{2, digest_a}, {3, digest_b}}));
  LayerStoreJournal third(fd);
  ASSERT_TRUE(third.Load().ok());
  EXPECT_EQ(third.slot_count(), 3u) << "the cut line was replaced by a whole one";
  close(fd);
}

TEST(LayerStoreJournalTest, RefusesLinesThatAreNotItsOwn) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  for (const std::string& bad :
       {std::string("R not-base64!\n"), std::string("R YWxwaW5l\nR YWxwaW5l\n"),
        "R YWxwaW5l\nL 3 " + digest + "\n", std::string("R YWxwaW5l\nL 2 sha256:00\n"),
        "R YWxwaW5l\nL x " + digest + "\n", "L 2 " + digest + "\n", std::string("X\n")}) {
    LayerStoreJournal journal;
    Status st = journal.LoadText(bad);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << bad;
  }
  LayerStoreJournal journal;
  EXPECT_FALSE(journal.LoadText("R YWxwaW5l\nR YWxwaW5l\n").ok());
  EXPECT_EQ(journal.ref_dir_count(), 1u) << "what came before the bad line stays";
}

// containers/image's auth-helper input: reference → credential, each kept for its host.
TEST(AuthHelperInputTest, TakesEachCredentialForItsRegistryHost) {
  Result<std::vector<HelperCredential>> creds = ParseAuthHelperInput(
      R"({"registry.example.com:5000/ns/app:1": {"username": "u", "password": "p:w"},
          "alpine": {"identityToken": "tok"},
          "quay.io/anon/app@sha256:)" +
      std::string(64, 'a') + R"(": {}})");
  ASSERT_TRUE(creds.has_value()) << creds.error().ToString();
  ASSERT_EQ(creds->size(), 2u) << "the anonymous entry is left out";
  std::map<std::string, registry::Credential> by_host;
  for (const HelperCredential& c : *creds) by_host[c.host] = c.credential;
  EXPECT_EQ(by_host["registry.example.com:5000"].username, "u");
  EXPECT_EQ(by_host["registry.example.com:5000"].password, "p:w");
  EXPECT_EQ(by_host["docker.io"].identity_token, "tok");
}

TEST(AuthHelperInputTest, RefusesWhatContainersImageDoesNotWrite) {
  for (const std::string& bad :
       {std::string(""), std::string("[]"), std::string("{\"a b\": {}}"),
        std::string("{\"alpine\": \"u:p\"}"), std::string("{\"alpine\": {\"username\": 1}}"),
        "{\"alpine\": {\"username\": \"" + std::string(kMaxAuthHelperFieldBytes + 1, 'u') + "\"}}",
        std::string(kMaxAuthHelperInputBytes + 1, ' ')}) {
    EXPECT_FALSE(ParseAuthHelperInput(bad).has_value()) << bad.substr(0, 60);
  }
  std::string many = "{";
  for (size_t i = 0; i <= kMaxAuthHelperEntries; ++i) {
    many += (i == 0 ? "\"" : ",\"") + std::string("r") + std::to_string(i) + "\": {}";
  }
  many += "}";
  EXPECT_FALSE(ParseAuthHelperInput(many).has_value());
}

}  // namespace
}  // namespace imgfs::fs
