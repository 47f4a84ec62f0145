// Tests for registry/registries_conf.h: the TOML subset, containers-registries.conf(5) keys,
// merging of drop-ins, daemon.json mirrors, and which files are read.
#include "registry/registries_conf.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "tests/support/temp_dir.h"

namespace imgfs::registry {
namespace {

// The example of containers-registries.conf(5), trimmed, with comments everywhere.
constexpr std::string_view kExample = R"(# registries.conf
unqualified-search-registries = ["registry.fedoraproject.org", 'quay.io',
  # a comment inside an array
  "docker.io",   # trailing comma below
]
short-name-mode = "enforcing"  # ignored

[[registry]]
# the prefix defaults to the location
location = "example.com"
insecure = true

[[registry]]
prefix = "example.com/foo"
location = "internal-registry-for-example.com/bar"
blocked = false

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo/"
insecure = true

[[registry]]
prefix = "*.blocked.example"
blocked = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
ubi8 = "registry.access.redhat.com/ubi8"
"with\"quote" = "a.io/\u0078"
)";

TEST(RegistriesConfTest, ParsesTheManPageExample) {
  Result<RegistriesConf> conf = ParseRegistriesConf(kExample, "registries.conf");
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  ASSERT_TRUE(conf->unqualified_search_registries.has_value());
  EXPECT_EQ(*conf->unqualified_search_registries,
            (std::vector<std::string>{"registry.fedoraproject.org", "quay.io", "docker.io"}));
  ASSERT_EQ(conf->registries.size(), 3u);
  EXPECT_EQ(conf->registries[0].prefix, "example.com");
  EXPECT_EQ(conf->registries[0].location, "example.com");
  EXPECT_TRUE(conf->registries[0].insecure);
  const RegistryConf& foo = conf->registries[1];
  EXPECT_EQ(foo.prefix, "example.com/foo");
  EXPECT_EQ(foo.location, "internal-registry-for-example.com/bar");
  EXPECT_FALSE(foo.blocked);
  ASSERT_EQ(foo.mirrors.size(), 2u);
  EXPECT_EQ(foo.mirrors[0].location, "example-mirror-0.local/mirror-for-foo");
  EXPECT_EQ(foo.mirrors[0].pull_from_mirror, PullFromMirror::kDigestOnly);
  EXPECT_FALSE(foo.mirrors[0].insecure);
  EXPECT_EQ(foo.mirrors[1].location, "example-mirror-1.local/mirrors/foo");  // '/' cut
  EXPECT_EQ(foo.mirrors[1].pull_from_mirror, PullFromMirror::kAll);
  EXPECT_TRUE(foo.mirrors[1].insecure);
  EXPECT_EQ(conf->registries[2].prefix, "*.blocked.example");
  EXPECT_TRUE(conf->registries[2].location.empty());
  EXPECT_TRUE(conf->registries[2].blocked);
  EXPECT_EQ(conf->aliases.at("fedora"), "registry.fedoraproject.org/fedora");
  EXPECT_EQ(conf->aliases.at("ubi8"), "registry.access.redhat.com/ubi8");
  EXPECT_EQ(conf->aliases.at("with\"quote"), "a.io/x");
}

TEST(RegistriesConfTest, EmptyAndCommentOnlyFilesConfigureNothing) {
  for (std::string_view text : {"", "\n\n", "# nothing\n  # here\n", "\r\n"}) {
    Result<RegistriesConf> conf = ParseRegistriesConf(text, "f");
    ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
    EXPECT_TRUE(conf->registries.empty());
    EXPECT_FALSE(conf->unqualified_search_registries.has_value());
  }
}

TEST(RegistriesConfTest, UnknownKeysAndTablesAreIgnored) {
  Result<RegistriesConf> conf = ParseRegistriesConf(R"(
credential-helpers = ["containers-auth.json"]
[registries.search]
registries = ["docker.io"]
[[registry]]
location = "a.io"
some-future-key = "x"
[[something.else]]
k = true
)",
                                                    "f");
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  ASSERT_EQ(conf->registries.size(), 1u);
  EXPECT_EQ(conf->registries[0].location, "a.io");
  EXPECT_FALSE(conf->unqualified_search_registries.has_value());
}

struct BadCase {
  std::string text;
  std::string message;  // part of the error
};

TEST(RegistriesConfTest, RejectsWhatItDoesNotUnderstandWithTheLine) {
  const std::vector<BadCase> cases = {
      {"a = 1\n", "f:1: unsupported value"},
      {"\n\nx = {a = \"b\"}\n", "f:3: inline tables"},
      {"x = \"\"\"multi\"\"\"\n", "f:1: multi-line strings"},
      {"x = \"unterminated\n", "f:1: unterminated string"},
      {"x = [\"a\", [\"b\"]]\n", "f:1: only arrays of strings"},
      {"x = [\"a\"\n", "unterminated array"},
      {"[[registry]]\nlocation = \"a.io\" junk\n", "f:2: unexpected text"},
      {"[[registry]]\nlocation = true\n", "f:2: \"location\" must be a string"},
      {"[[registry]]\nlocation = \"a.io\"\ninsecure = \"yes\"\n", "f:3: \"insecure\" must be"},
      {"[[registry]]\nlocation = \"https://a.io\"\n", "URL schemes are not supported"},
      {"[[registry]]\nlocation = \"a.io\"\nlocation = \"b.io\"\n", "f:3: key \"location\" given"},
      {"[[registry.mirror]]\nlocation = \"m.io\"\n", "f:1: [[registry.mirror]] before"},
      {"[registry]\nlocation = \"a.io\"\n", "[[registry]]"},
      {"[[registry]]\ninsecure = true\n", "f:1: [[registry]]: neither location nor prefix"},
      {"[[registry]]\nprefix = \"*.a.io\"\nlocation = \"b.io\"\n", "wildcard prefix"},
      {"[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"m\"\n"
       "pull-from-mirror = \"sometimes\"\n",
       "f:5: pull-from-mirror"},
      {"[[registry]]\nlocation = \"a.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\n"
       "location = \"m\"\npull-from-mirror = \"tag-only\"\n",
       "cannot both be set"},
      {"[[registry]]\nlocation = \"a.io\"\n[[registry]]\nlocation = \"a.io\"\n",
       "configured twice"},
      {"[aliases]\n[aliases]\n", "f:2: table [aliases] defined twice"},
      {"unqualified-search-registries = \"docker.io\"\n", "must be an array"},
      {"unqualified-search-registries = [\"docker.io/library\"]\n", "not a registry host"},
      {"a.b = \"c\"\n", "dotted keys"},
      {"= \"c\"\n", "a key is missing"},
      {"x = \"\\q\"\n", "unknown escape"},
      {"x = \"\\uD800\"\n", "Unicode scalar"},
      {"x = \"a\x01\"\n", "control character"},
      {"[unterminated\n", "expected ']'"},
      {std::string("x = \"a\"\0\n", 9), "NUL"},
  };
  for (const BadCase& c : cases) {
    Result<RegistriesConf> conf = ParseRegistriesConf(c.text, "f");
    ASSERT_FALSE(conf.has_value()) << c.text;
    EXPECT_EQ(conf.error().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(conf.error().message().find(c.message), std::string::npos)
        << c.text << " → " << conf.error().message();
  }
}

TEST(RegistriesConfTest, RefusesOversizedInput) {
  const std::string big(kMaxRegistriesConfBytes + 1, '#');
  Result<RegistriesConf> conf = ParseRegistriesConf(big, "f");
  ASSERT_FALSE(conf.has_value());
  EXPECT_NE(conf.error().message().find("larger than"), std::string::npos);
  std::string many = "x = [";
  for (size_t i = 0; i <= kMaxRegistriesConfEntries; ++i) many += "\"a\",";
  many += "]\n";
  conf = ParseRegistriesConf(many, "f");
  ASSERT_FALSE(conf.has_value());
  EXPECT_NE(conf.error().message().find("array too long"), std::string::npos);
}

TEST(RegistriesConfTest, MergeReplacesByPrefixAndSearchListOnlyWhenSet) {
  Result<RegistriesConf> base = ParseRegistriesConf(R"(
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "a.io"
insecure = true
[[registry]]
location = "b.io"
[aliases]
x = "a.io/x"
y = "a.io/y"
)",
                                                    "base");
  ASSERT_TRUE(base.has_value()) << base.error().ToString();
  Result<RegistriesConf> drop_in = ParseRegistriesConf(R"(
[[registry]]
location = "a.io"
[[registry.mirror]]
location = "m.io"
[[registry]]
location = "c.io"
[aliases]
y = "c.io/y"
)",
                                                       "drop-in");
  ASSERT_TRUE(drop_in.has_value()) << drop_in.error().ToString();
  MergeRegistriesConf(&*base, std::move(drop_in).value());
  ASSERT_EQ(base->registries.size(), 3u);
  EXPECT_EQ(base->registries[0].prefix, "a.io");
  EXPECT_FALSE(base->registries[0].insecure);  // the whole entry was replaced
  ASSERT_EQ(base->registries[0].mirrors.size(), 1u);
  EXPECT_EQ(base->registries[2].prefix, "c.io");
  EXPECT_EQ(*base->unqualified_search_registries, std::vector<std::string>{"docker.io"});
  EXPECT_EQ(base->aliases.at("x"), "a.io/x");
  EXPECT_EQ(base->aliases.at("y"), "c.io/y");

  Result<RegistriesConf> clears = ParseRegistriesConf("unqualified-search-registries = []", "c");
  ASSERT_TRUE(clears.has_value());
  MergeRegistriesConf(&*base, std::move(clears).value());
  EXPECT_TRUE(base->unqualified_search_registries->empty());
}

TEST(RegistriesConfTest, DockerDaemonMirrors) {
  Result<std::vector<MirrorConf>> mirrors = ParseDockerDaemonMirrors(
      R"({"registry-mirrors": ["https://mirror.gcr.io/", "http://127.0.0.1:5001"], "x": 1})");
  ASSERT_TRUE(mirrors.has_value()) << mirrors.error().ToString();
  ASSERT_EQ(mirrors->size(), 2u);
  EXPECT_EQ((*mirrors)[0].location, "mirror.gcr.io");
  EXPECT_FALSE((*mirrors)[0].insecure);
  EXPECT_EQ((*mirrors)[1].location, "127.0.0.1:5001");
  EXPECT_TRUE((*mirrors)[1].insecure);
  EXPECT_TRUE(ParseDockerDaemonMirrors(R"({"debug": true})")->empty());
  EXPECT_FALSE(ParseDockerDaemonMirrors("{").has_value());
  EXPECT_FALSE(ParseDockerDaemonMirrors(R"({"registry-mirrors": "x"})").has_value());
  EXPECT_FALSE(ParseDockerDaemonMirrors(R"({"registry-mirrors": ["ftp://x"]})").has_value());
  EXPECT_FALSE(ParseDockerDaemonMirrors(R"({"registry-mirrors": ["https://"]})").has_value());
}

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    paths_.root = dir_.Sub("root");
    paths_.home = dir_.Sub("home");
  }
  void Write(const std::string& relative, std::string_view text) {
    const std::string path = dir_.Sub(relative);
    ASSERT_TRUE(MakeDirs(path.substr(0, path.rfind('/'))).ok());
    ASSERT_TRUE(WriteFileAtomic(path, text).ok());
  }

  testing::TempDir dir_;
  RegistriesConfPaths paths_;
};

TEST_F(LoadTest, NoFilesConfigureNothing) {
  Result<RegistriesConf> conf = LoadRegistriesConf(paths_);
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  EXPECT_TRUE(conf->registries.empty());
  EXPECT_TRUE(conf->files.empty());
}

TEST_F(LoadTest, SystemFileThenDropInsInLexicalOrder) {
  Write("root/etc/containers/registries.conf",
        "unqualified-search-registries = [\"a.io\"]\n[[registry]]\nlocation = \"a.io\"\n");
  Write("root/etc/containers/registries.conf.d/20-b.conf",
        "unqualified-search-registries = [\"b.io\"]\n");
  Write("root/etc/containers/registries.conf.d/10-a.conf",
        "unqualified-search-registries = [\"x.io\"]\n[[registry]]\nlocation = \"a.io\"\n"
        "blocked = true\n");
  Write("root/etc/containers/registries.conf.d/30-ignored.txt", "this is not toml");
  Write("home/.config/containers/registries.conf.d/99-user.conf",
        "[aliases]\n\"app\" = \"u.io/app\"\n");
  Result<RegistriesConf> conf = LoadRegistriesConf(paths_);
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  EXPECT_EQ(*conf->unqualified_search_registries, std::vector<std::string>{"b.io"});
  ASSERT_EQ(conf->registries.size(), 1u);
  EXPECT_TRUE(conf->registries[0].blocked);
  EXPECT_EQ(conf->aliases.at("app"), "u.io/app");
  EXPECT_EQ(conf->files.size(), 4u);
}

TEST_F(LoadTest, UserFileReplacesTheSystemFileAndItsDropIns) {
  Write("root/etc/containers/registries.conf", "[[registry]]\nlocation = \"sys.io\"\n");
  Write("root/etc/containers/registries.conf.d/1.conf", "[[registry]]\nlocation = \"d.io\"\n");
  Write("home/.config/containers/registries.conf", "[[registry]]\nlocation = \"user.io\"\n");
  Result<RegistriesConf> conf = LoadRegistriesConf(paths_);
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  ASSERT_EQ(conf->registries.size(), 1u);
  EXPECT_EQ(conf->registries[0].location, "user.io");
}

TEST_F(LoadTest, ExplicitFileAloneAndMustExist) {
  Write("root/etc/containers/registries.conf", "[[registry]]\nlocation = \"sys.io\"\n");
  Write("root/etc/docker/daemon.json", R"({"registry-mirrors": ["https://m.io"]})");
  Write("mine.conf", "[[registry]]\nlocation = \"mine.io\"\n");
  paths_.explicit_file = dir_.Sub("mine.conf");
  Result<RegistriesConf> conf = LoadRegistriesConf(paths_);
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  ASSERT_EQ(conf->registries.size(), 1u);
  EXPECT_EQ(conf->registries[0].location, "mine.io");

  paths_.explicit_file = dir_.Sub("missing.conf");
  conf = LoadRegistriesConf(paths_);
  ASSERT_FALSE(conf.has_value());
  EXPECT_NE(conf.error().message().find("missing.conf"), std::string::npos);
}

TEST_F(LoadTest, ABrokenFileFailsTheLoadNamingFileAndLine) {
  Write("root/etc/containers/registries.conf.d/5.conf", "[[registry]]\n\nlocation = 5\n");
  Result<RegistriesConf> conf = LoadRegistriesConf(paths_);
  ASSERT_FALSE(conf.has_value());
  EXPECT_NE(conf.error().message().find("5.conf:3:"), std::string::npos) << conf.error().message();
}

TEST_F(LoadTest, DaemonJsonMirrorsDockerIoUnlessRegistriesConfDoes) {
  Write("root/etc/docker/daemon.json", R"({"registry-mirrors": ["https://m.io"]})");
  Result<RegistriesConf> conf = LoadRegistriesConf(paths_);
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  ASSERT_EQ(conf->registries.size(), 1u);
  EXPECT_EQ(conf->registries[0].prefix, "docker.io");
  ASSERT_EQ(conf->registries[0].mirrors.size(), 1u);
  EXPECT_EQ(conf->registries[0].mirrors[0].location, "m.io");

  Write("root/etc/containers/registries.conf", "[[registry]]\nlocation = \"docker.io\"\n");
  conf = LoadRegistriesConf(paths_);
  ASSERT_TRUE(conf.has_value()) << conf.error().ToString();
  ASSERT_EQ(conf->registries.size(), 1u);
  EXPECT_TRUE(conf->registries[0].mirrors.empty());
}

}  // namespace
}  // namespace imgfs::registry
