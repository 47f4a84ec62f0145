// Tests for registry/pull_endpoints.h: prefix matching, mirror order and pull-from-mirror,
// blocked registries, short names (aliases, search registries, the docker.io default).
#include "registry/pull_endpoints.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::registry {
namespace {

const std::string kDigest =
    "sha256:1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229";

RegistriesConf Conf(std::string_view text) {
  Result<RegistriesConf> conf = ParseRegistriesConf(text, "test.conf");
  EXPECT_TRUE(conf.has_value()) << conf.error().ToString();
  return conf.has_value() ? std::move(conf).value() : RegistriesConf{};
}

Reference Ref(std::string_view text) {
  Result<Reference> ref = Reference::Parse(text);
  EXPECT_TRUE(ref.has_value()) << ref.error().ToString();
  return ref.has_value() ? std::move(ref).value() : Reference{};
}

// "ref[ insecure][ mirror]" per endpoint.
std::vector<std::string> Endpoints(const RegistriesConf& conf, std::string_view ref) {
  Result<std::vector<PullEndpoint>> endpoints = PullEndpoints(conf, Ref(ref));
  EXPECT_TRUE(endpoints.has_value()) << endpoints.error().ToString();
  std::vector<std::string> out;
  if (!endpoints.has_value()) return out;
  for (const PullEndpoint& e : *endpoints) {
    out.push_back(e.reference.String() + (e.insecure ? " insecure" : "") +
                  (e.mirror ? " mirror" : ""));
  }
  return out;
}

TEST(PrefixMatchTest, AsContainersImage) {
  EXPECT_EQ(PrefixMatchLength("example.com/foo:1", "example.com"), 11);
  EXPECT_EQ(PrefixMatchLength("example.com/foo:1", "example.com/foo"), 15);
  EXPECT_EQ(PrefixMatchLength("example.com/foobar:1", "example.com/foo"), -1);
  EXPECT_EQ(PrefixMatchLength("example.com.evil/x:1", "example.com"), -1);
  EXPECT_EQ(PrefixMatchLength("example.com", "example.com"), 11);
  EXPECT_EQ(PrefixMatchLength("a.example.com/x:1", "*.example.com"), 13);
  EXPECT_EQ(PrefixMatchLength("example.com/x:1", "*.example.com"), -1);
  EXPECT_EQ(PrefixMatchLength("other.io/a.example.com/x:1", "*.example.com"), -1);
  EXPECT_EQ(PrefixMatchLength("a.example.community/x:1", "*.example.com"), -1);
  EXPECT_EQ(PrefixMatchLength("x", ""), -1);
}

TEST(PullEndpointsTest, NoConfigurationIsTheReferenceItself) {
  EXPECT_EQ(Endpoints(RegistriesConf{}, "alpine:3.20"),
            std::vector<std::string>{"docker.io/library/alpine:3.20"});
}

TEST(PullEndpointsTest, MirrorsThenLocationWithPrefixRewriting) {
  const RegistriesConf conf = Conf(R"(
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5001"
[[registry.mirror]]
location = "mirror.corp/hub"
insecure = true

[[registry]]
prefix = "example.com/foo"
location = "internal.example/bar"
insecure = true
)");
  EXPECT_EQ(Endpoints(conf, "alpine:3.20"),
            (std::vector<std::string>{"127.0.0.1:5001/library/alpine:3.20 mirror",
                                      "mirror.corp/hub/library/alpine:3.20 insecure mirror",
                                      "docker.io/library/alpine:3.20"}));
  EXPECT_EQ(Endpoints(conf, "example.com/foo/app@" + kDigest),
            std::vector<std::string>{"internal.example/bar/app@" + kDigest + " insecure"});
  // "example.com/foobar" is not under the prefix "example.com/foo".
  EXPECT_EQ(Endpoints(conf, "example.com/foobar/app:1"),
            std::vector<std::string>{"example.com/foobar/app:1"});
}

TEST(PullEndpointsTest, LongestPrefixWins) {
  const RegistriesConf conf = Conf(R"(
[[registry]]
location = "q.io"
[[registry.mirror]]
location = "m1.io"
[[registry]]
prefix = "q.io/team"
location = "q.io/team"
[[registry.mirror]]
location = "m2.io/team"
)");
  EXPECT_EQ(Endpoints(conf, "q.io/team/app:1"),
            (std::vector<std::string>{"m2.io/team/app:1 mirror", "q.io/team/app:1"}));
  EXPECT_EQ(Endpoints(conf, "q.io/other/app:1"),
            (std::vector<std::string>{"m1.io/other/app:1 mirror", "q.io/other/app:1"}));
}

TEST(PullEndpointsTest, PullFromMirrorByTagOrDigest) {
  const RegistriesConf conf = Conf(R"(
[[registry]]
location = "q.io"
[[registry.mirror]]
location = "digests.io"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.io"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.io"
)");
  EXPECT_EQ(Endpoints(conf, "q.io/a:1"),
            (std::vector<std::string>{"tags.io/a:1 mirror", "all.io/a:1 mirror", "q.io/a:1"}));
  EXPECT_EQ(Endpoints(conf, "q.io/a@" + kDigest),
            (std::vector<std::string>{"digests.io/a@" + kDigest + " mirror",
                                      "all.io/a@" + kDigest + " mirror", "q.io/a@" + kDigest}));

  const RegistriesConf by_digest = Conf(R"(
[[registry]]
location = "q.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m.io"
)");
  EXPECT_EQ(Endpoints(by_digest, "q.io/a:1"), std::vector<std::string>{"q.io/a:1"});
  EXPECT_EQ(Endpoints(by_digest, "q.io/a@" + kDigest).size(), 2u);
}

TEST(PullEndpointsTest, WildcardPrefixKeepsTheHost) {
  const RegistriesConf conf = Conf(R"(
[[registry]]
prefix = "*.corp.example"
insecure = true
[[registry.mirror]]
location = "cache.local/corp"
)");
  EXPECT_EQ(
      Endpoints(conf, "a.corp.example/x/y:1"),
      (std::vector<std::string>{"cache.local/corp/x/y:1 mirror", "a.corp.example/x/y:1 insecure"}));
}

TEST(PullEndpointsTest, BlockedRegistryIsRefused) {
  const RegistriesConf conf = Conf(R"(
[[registry]]
location = "bad.io"
blocked = true
[[registry.mirror]]
location = "m.io"
[[registry]]
prefix = "good.io/ok"
location = "good.io/ok"
[[registry]]
prefix = "good.io"
location = "good.io"
blocked = true
)");
  Result<std::vector<PullEndpoint>> blocked = PullEndpoints(conf, Ref("bad.io/app:1"));
  ASSERT_FALSE(blocked.has_value());
  EXPECT_EQ(blocked.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(blocked.error().message().find("bad.io is blocked in registries.conf"),
            std::string::npos)
      << blocked.error().message();
  EXPECT_FALSE(PullEndpoints(conf, Ref("good.io/other:1")).has_value());
  EXPECT_EQ(Endpoints(conf, "good.io/ok/app:1"), std::vector<std::string>{"good.io/ok/app:1"});
}

TEST(PullEndpointsTest, RewriteToAnInvalidReferenceIsAnError) {
  const RegistriesConf conf = Conf(R"(
[[registry]]
prefix = "q.io"
location = "Not_A_Host"
)");
  Result<std::vector<PullEndpoint>> endpoints = PullEndpoints(conf, Ref("q.io/a:1"));
  ASSERT_FALSE(endpoints.has_value());
  EXPECT_NE(endpoints.error().message().find("rewriting"), std::string::npos);
}

std::vector<std::string> Candidates(const RegistriesConf& conf, std::string_view text) {
  Result<std::vector<Reference>> refs = ResolveShortName(conf, text);
  EXPECT_TRUE(refs.has_value()) << refs.error().ToString();
  std::vector<std::string> out;
  if (refs.has_value()) {
    for (const Reference& r : *refs) out.push_back(r.String());
  }
  return out;
}

TEST(ShortNameTest, IsShortName) {
  EXPECT_TRUE(IsShortName("alpine"));
  EXPECT_TRUE(IsShortName("alpine:3.20"));
  EXPECT_TRUE(IsShortName("user/app@" + kDigest));
  EXPECT_FALSE(IsShortName("localhost/app"));
  EXPECT_FALSE(IsShortName("127.0.0.1:5000/app"));
  EXPECT_FALSE(IsShortName("quay.io/app"));
  EXPECT_FALSE(IsShortName("Host/app"));
}

TEST(ShortNameTest, DefaultIsDockerHub) {
  EXPECT_EQ(Candidates(RegistriesConf{}, "alpine"),
            std::vector<std::string>{"docker.io/library/alpine:latest"});
  EXPECT_EQ(Candidates(RegistriesConf{}, "quay.io/a/b:1"),
            std::vector<std::string>{"quay.io/a/b:1"});
}

TEST(ShortNameTest, SearchRegistriesInOrderAndAliasesFirst) {
  const RegistriesConf conf = Conf(R"(
unqualified-search-registries = ["quay.io", "docker.io"]
[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
)");
  EXPECT_EQ(Candidates(conf, "alpine:3"),
            (std::vector<std::string>{"quay.io/alpine:3", "docker.io/library/alpine:3"}));
  EXPECT_EQ(Candidates(conf, "fedora:39"),
            std::vector<std::string>{"registry.fedoraproject.org/fedora:39"});
  EXPECT_EQ(Candidates(conf, "fedora@" + kDigest),
            std::vector<std::string>{"registry.fedoraproject.org/fedora@" + kDigest});
  EXPECT_EQ(Candidates(conf, "quay.io/x:1"), std::vector<std::string>{"quay.io/x:1"});
}

TEST(ShortNameTest, Errors) {
  EXPECT_FALSE(ResolveShortName(Conf("unqualified-search-registries = []"), "alpine").has_value());
  EXPECT_FALSE(ResolveShortName(Conf("[aliases]\nx = \"not-qualified\""), "x").has_value());
  EXPECT_FALSE(ResolveShortName(RegistriesConf{}, "UPPER").has_value());
}

}  // namespace
}  // namespace imgfs::registry
