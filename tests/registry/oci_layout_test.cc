// imgfs — registry/oci_layout.h on real directories: a new layout, naming images in
// index.json, and hostile index.json files (too large, not JSON, bad descriptors).
#include "registry/oci_layout.h"

#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "tests/support/temp_dir.h"

namespace imgfs::registry {
namespace {

using imgfs::testing::TempDir;

Descriptor Image(std::string_view content) {
  Descriptor d;
  d.media_type = "application/vnd.oci.image.manifest.v1+json";
  d.digest = Digest::Sha256Of(content);
  d.size = static_cast<int64_t>(content.size());
  return d;
}

std::string RefName(const Descriptor& d) {
  auto it = d.annotations.find(std::string(kRefNameAnnotation));
  return it == d.annotations.end() ? std::string() : it->second;
}

TEST(OciLayoutTest, InitMakesAnEmptyLayoutAndKeepsAnExistingOne) {
  TempDir dir;
  ASSERT_TRUE(InitOciLayout(dir.path()).ok());
  Result<std::string> layout = ReadFile(dir.path() + "/oci-layout");
  ASSERT_TRUE(layout.has_value());
  EXPECT_TRUE(CheckOciLayoutFile(*layout).ok());
  Result<Index> empty = ReadOciIndex(dir.path());
  ASSERT_TRUE(empty.has_value()) << empty.error().ToString();
  EXPECT_TRUE(empty->manifests.empty());

  Index index;
  NameInOciIndex(&index, Image("one"), "v1");
  ASSERT_TRUE(WriteOciIndex(dir.path(), index).ok());
  ASSERT_TRUE(InitOciLayout(dir.path()).ok());  // does not reset index.json
  Result<Index> again = ReadOciIndex(dir.path());
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  ASSERT_EQ(again->manifests.size(), 1u);
  EXPECT_EQ(RefName(again->manifests[0]), "v1");
  EXPECT_EQ(again->media_type, "application/vnd.oci.image.index.v1+json");
}

TEST(OciLayoutTest, NamingAnImageReplacesTheEntryOfThatNameOnly) {
  Index index;
  NameInOciIndex(&index, Image("one"), "v1");
  NameInOciIndex(&index, Image("two"), "v2");
  NameInOciIndex(&index, Image("unnamed"), "");
  NameInOciIndex(&index, Image("three"), "v1");
  ASSERT_EQ(index.manifests.size(), 3u);
  EXPECT_EQ(RefName(index.manifests[0]), "v2");
  EXPECT_EQ(RefName(index.manifests[1]), "");
  EXPECT_EQ(RefName(index.manifests[2]), "v1");
  EXPECT_EQ(index.manifests[2].digest, Digest::Sha256Of("three"));
}

TEST(OciLayoutTest, HostileIndexJsonIsCorruptNamingTheFile) {
  TempDir dir;
  ASSERT_TRUE(InitOciLayout(dir.path()).ok());
  const std::string valid_digest = Digest::Sha256Of("x").String();
  const std::string cases[] = {
      "not json",
      "[]",
      R"({"schemaVersion":2})",
      R"({"schemaVersion":2,"manifests":[{"digest":")" + valid_digest + R"(","size":1}]})",
      R"({"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha256:zz","size":1}]})",
      R"({"schemaVersion":2,"manifests":[{"mediaType":"m","digest":")" + valid_digest +
          R"(","size":-1}]})",
      R"({"schemaVersion":2,"manifests":[{"mediaType":"m","digest":")" + valid_digest +
          R"(","size":1,"annotations":{"k":7}}]})",
  };
  for (const std::string& text : cases) {
    ASSERT_TRUE(WriteFileAtomic(dir.path() + "/index.json", text).ok());
    Result<Index> index = ReadOciIndex(dir.path());
    ASSERT_FALSE(index.has_value()) << text;
    EXPECT_EQ(index.error().code(), StatusCode::kCorrupt) << text;
    EXPECT_NE(index.error().message().find("index.json"), std::string::npos)
        << index.error().ToString();
  }
  // Larger than kMaxOciIndexBytes: refused before it is read.
  std::string huge = R"({"schemaVersion":2,"manifests":[]})";
  huge.resize(kMaxOciIndexBytes + 1, ' ');
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/index.json", huge).ok());
  Result<Index> index = ReadOciIndex(dir.path());
  ASSERT_FALSE(index.has_value());
  EXPECT_EQ(index.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(index.error().message().find("index.json"), std::string::npos)
      << index.error().ToString();
  EXPECT_EQ(DecodeOciIndex(huge).error().code(), StatusCode::kCorrupt);
}

TEST(OciLayoutTest, ABrokenOciLayoutFileIsRefused) {
  TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/oci-layout", R"({"imageLayoutVersion":1})").ok());
  Status st = InitOciLayout(dir.path());
  EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.ToString();
  EXPECT_EQ(CheckOciLayoutFile("[]").code(), StatusCode::kCorrupt);
  EXPECT_TRUE(CheckOciLayoutFile(EncodeOciLayoutFile()).ok());
}

}  // namespace
}  // namespace imgfs::registry
