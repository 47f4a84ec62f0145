// Tests for registry::Digest and registry::Sha256 (OpenSSL EVP), against known vectors and the
// content-addressed blobs of the image fixtures.
#include "registry/digest.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::registry {
namespace {

constexpr char kFixtures[] = IMGFS_FIXTURES_DIR;
const std::string kEmptySha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const std::string kAbcSha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(DigestTest, KnownVectors) {
  EXPECT_EQ(Digest::Sha256Of("").String(), "sha256:" + kEmptySha);
  EXPECT_EQ(Digest::Sha256Of("abc").String(), "sha256:" + kAbcSha);
  // FIPS 180-2 two-block message.
  EXPECT_EQ(Digest::Sha256Of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").hex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(DigestTest, StreamingEqualsOneShot) {
  std::string data;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>(i * 31));
  Sha256 h;
  for (size_t off = 0; off < data.size(); off += 7919)
    h.Update(std::string_view(data).substr(off, 7919));
  Digest streamed = h.Finish();
  EXPECT_EQ(streamed, Digest::Sha256Of(data));
  h.Reset();
  h.Update("abc");
  EXPECT_EQ(h.Finish().hex(), kAbcSha);
  Sha256 moved = std::move(h);
  moved.Reset();
  EXPECT_EQ(moved.Finish().hex(), kEmptySha);
}

TEST(DigestTest, FromBytes) {
  unsigned char bytes[32];
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<unsigned char>(i * 8 + 1);
  Digest d = Digest::FromSha256Bytes(bytes);
  EXPECT_EQ(d.hex(), "0109111921293139414951596169717981899199a1a9b1b9c1c9d1d9e1e9f1f9");
  EXPECT_EQ(d.algorithm(), "sha256");
  EXPECT_EQ(d.Short(), "010911192129");
}

TEST(DigestTest, ParseValid) {
  Result<Digest> d = Digest::Parse("sha256:" + kAbcSha);
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->algorithm(), "sha256");
  EXPECT_EQ(d->hex(), kAbcSha);
  EXPECT_EQ(d->String(), "sha256:" + kAbcSha);
  EXPECT_FALSE(d->empty());
  EXPECT_TRUE(Digest::Parse("sha512:" + std::string(128, 'a')).has_value());
  EXPECT_TRUE(Digest::Parse("sha384:" + std::string(96, '0')).has_value());
  // Other algorithms follow the OCI grammar.
  EXPECT_TRUE(
      Digest::Parse("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8").has_value());
  EXPECT_TRUE(Digest::Parse("blake3:" + std::string(64, 'f')).has_value());
  EXPECT_TRUE(Digest().empty());
  EXPECT_EQ(Digest().String(), "");
}

TEST(DigestTest, ParseInvalid) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "expected \"alg:hex\""},
      {kAbcSha, "expected \"alg:hex\""},
      {"sha256:", "64 hex digits"},
      {"sha256:" + kAbcSha.substr(1), "64 hex digits"},
      {"sha256:" + kAbcSha + "0", "64 hex digits"},
      {"sha256:" + std::string(64, 'A'), "lower-case"},
      {"sha256:" + std::string(63, 'a') + "g", "lower-case"},
      {"sha512:" + std::string(64, 'a'), "128 hex digits"},
      {"SHA256:" + kAbcSha, "bad algorithm"},
      {":" + kAbcSha, "bad algorithm"},
      {"sha-:" + kAbcSha, "bad algorithm"},
      {"a..b:" + kAbcSha, "bad algorithm"},
      {"foo:short", "too short"},
      {"foo:" + std::string(40, 'a') + "/", "invalid character"},
  };
  for (const auto& [text, error] : cases) {
    Result<Digest> d = Digest::Parse(text);
    ASSERT_FALSE(d.has_value()) << text;
    EXPECT_EQ(d.error().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(d.error().message().find(error), std::string::npos) << d.error().message();
  }
}

TEST(DigestTest, Verify) {
  Digest abc = *Digest::Parse("sha256:" + kAbcSha);
  EXPECT_TRUE(abc.Verify("abc").ok());
  Status bad = abc.Verify("abd");
  EXPECT_EQ(bad.code(), StatusCode::kCorrupt);
  EXPECT_NE(bad.message().find(kAbcSha), std::string::npos);
  EXPECT_NE(bad.message().find(Digest::Sha256Of("abd").hex()), std::string::npos);
  Status unsupported = Digest::Parse("sha512:" + std::string(128, 'a'))->Verify("abc");
  EXPECT_EQ(unsupported.code(), StatusCode::kUnsupported);
  EXPECT_FALSE(Digest().Verify("").ok());
}

TEST(DigestTest, OrderingAndHash) {
  Digest a = Digest::Sha256Of("a");
  Digest b = Digest::Sha256Of("b");
  EXPECT_NE(a, b);
  EXPECT_EQ(a, Digest::Sha256Of("a"));
  EXPECT_TRUE((a < b) != (b < a));
  std::unordered_set<Digest> set{a, b, Digest::Sha256Of("a")};
  EXPECT_EQ(set.size(), 2u);
}

// A sha256 digest is held as raw bytes and other algorithms as text: equality, order (that of
// the text) and hashing must not depend on which.
TEST(DigestTest, OrderFollowsTheTextWhateverTheAlgorithm) {
  std::vector<Digest> all = {
      Digest(),
      Digest::Sha256Of("a"),
      Digest::Sha256Of("b"),
      *Digest::Parse("sha256:" + std::string(64, '0')),
      *Digest::Parse("sha256:" + std::string(64, 'f')),
      *Digest::Parse("sha512:" + std::string(128, 'a')),
      *Digest::Parse("blake3:" + std::string(64, 'A')),
      *Digest::Parse("multihash+base58:" + std::string(40, 'z')),
  };
  for (const Digest& x : all) {
    Result<Digest> again = x.empty() ? Digest() : Digest::Parse(x.String());
    ASSERT_TRUE(again.has_value()) << x.String();
    EXPECT_EQ(*again, x);
    EXPECT_EQ(std::hash<Digest>()(*again), std::hash<Digest>()(x));
    EXPECT_EQ(again->hex(), x.hex());
    EXPECT_EQ(again->algorithm(), x.algorithm());
    for (const Digest& y : all) {
      EXPECT_EQ(x == y, x.String() == y.String()) << x.String() << " " << y.String();
      auto text_order =
          std::make_pair(x.algorithm(), x.hex()) <=> std::make_pair(y.algorithm(), y.hex());
      EXPECT_EQ(x <=> y, text_order) << x.String() << " " << y.String();
    }
  }
  EXPECT_EQ(Digest().algorithm(), "");
  EXPECT_EQ(Digest().hex(), "");
  EXPECT_EQ(Digest().sha256_bytes(), nullptr);
  EXPECT_EQ(all[5].sha256_bytes(), nullptr);
  ASSERT_NE(all[1].sha256_bytes(), nullptr);
  EXPECT_EQ(Digest::FromSha256Bytes(all[1].sha256_bytes()), all[1]);
}

// Every blob of every fixture layout is named by its sha256; the layer-digest-mismatch
// fixture is the one whose layer blob does not match its name.
TEST(DigestTest, FixtureBlobsHashToTheirNames) {
  namespace fs = std::filesystem;
  ASSERT_TRUE(fs::is_directory(kFixtures)) << "missing fixtures at " << kFixtures;
  int verified = 0;
  int mismatched = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kFixtures)) {
    if (!entry.is_regular_file() || entry.path().parent_path().filename() != "sha256") continue;
    if (entry.file_size() > (1 << 20)) continue;  // keep the test fast: small blobs only
    Result<Digest> name = Digest::Parse("sha256:" + entry.path().filename().string());
    ASSERT_TRUE(name.has_value()) << entry.path();
    Status s = name->Verify(ReadFile(entry.path()));
    if (entry.path().string().find("layer-digest-mismatch") != std::string::npos &&
        name->hex() == "ee62a5ec5f244731337172f8adefa88dab4df474b9687d74eab0bbe4004727b1") {
      EXPECT_EQ(s.code(), StatusCode::kCorrupt) << entry.path();
      ++mismatched;
    } else {
      EXPECT_TRUE(s.ok()) << entry.path() << ": " << s.ToString();
      ++verified;
    }
  }
  EXPECT_GT(verified, 30);
  EXPECT_EQ(mismatched, 1);
}

TEST(DigestTest, LargeFixtureLayerStreamed) {
  const std::string path = std::string(kFixtures) +
                           "/tiny-gzip/blobs/sha256/"
                           "e7dd87d87aa1a43634ce074f0795fb3dcc6afbe8fae3d8dabcd3df934270ae15";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << path;
  Sha256 h;
  char buf[65536];
  size_t total = 0;
  while (in) {
    in.read(buf, sizeof(buf));
    h.Update(std::string_view(buf, static_cast<size_t>(in.gcount())));
    total += static_cast<size_t>(in.gcount());
  }
  EXPECT_EQ(total, 2670629u);
  EXPECT_EQ(h.Finish().hex(), "e7dd87d87aa1a43634ce074f0795fb3dcc6afbe8fae3d8dabcd3df934270ae15");
}

}  // namespace
}  // namespace imgfs::registry
