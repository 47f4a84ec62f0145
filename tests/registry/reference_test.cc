// Tests for registry::Reference: Docker's normalisation (distribution/reference), table-driven.
#include "registry/reference.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::registry {
namespace {

const std::string kHex64 = "1fb51b9d896f2a83747de477a0e885a04b169111076bf13b7b3a4a718f37e229";
const std::string kDigest = "sha256:" + kHex64;

struct ValidCase {
  std::string input;
  std::string domain;
  std::string path;
  std::string tag;
  std::string digest;    // "" when none
  std::string full;      // String()
  std::string familiar;  // FamiliarString()
};

std::vector<ValidCase> ValidCases() {
  const std::string p250(250, 'a');
  const std::string tag128 = "T" + std::string(127, 'x');
  const std::string sha512 = "sha512:" + std::string(128, 'e');
  return {
      {"alpine", "docker.io", "library/alpine", "latest", "", "docker.io/library/alpine:latest",
       "alpine:latest"},
      {"alpine:3.20", "docker.io", "library/alpine", "3.20", "", "docker.io/library/alpine:3.20",
       "alpine:3.20"},
      {"library/alpine", "docker.io", "library/alpine", "latest", "",
       "docker.io/library/alpine:latest", "alpine:latest"},
      {"docker.io/alpine", "docker.io", "library/alpine", "latest", "",
       "docker.io/library/alpine:latest", "alpine:latest"},
      {"docker.io/library/alpine:3.20", "docker.io", "library/alpine", "3.20", "",
       "docker.io/library/alpine:3.20", "alpine:3.20"},
      {"index.docker.io/library/alpine", "docker.io", "library/alpine", "latest", "",
       "docker.io/library/alpine:latest", "alpine:latest"},
      {"index.docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", "",
       "docker.io/library/ubuntu:latest", "ubuntu:latest"},
      {"index.docker.io/user/app:1", "docker.io", "user/app", "1", "", "docker.io/user/app:1",
       "user/app:1"},
      {"user/app", "docker.io", "user/app", "latest", "", "docker.io/user/app:latest",
       "user/app:latest"},
      {"user/app/sub:v1", "docker.io", "user/app/sub", "v1", "", "docker.io/user/app/sub:v1",
       "user/app/sub:v1"},
      {"docker.io/library/a/b", "docker.io", "library/a/b", "latest", "",
       "docker.io/library/a/b:latest", "library/a/b:latest"},
      {"localhost/app", "localhost", "app", "latest", "", "localhost/app:latest",
       "localhost/app:latest"},
      {"localhost:5000/app:1.0", "localhost:5000", "app", "1.0", "", "localhost:5000/app:1.0",
       "localhost:5000/app:1.0"},
      {"127.0.0.1:5000/demo/app:1.0", "127.0.0.1:5000", "demo/app", "1.0", "",
       "127.0.0.1:5000/demo/app:1.0", "127.0.0.1:5000/demo/app:1.0"},
      {"127.0.0.1/app", "127.0.0.1", "app", "latest", "", "127.0.0.1/app:latest",
       "127.0.0.1/app:latest"},
      {"[::1]:5000/app", "[::1]:5000", "app", "latest", "", "[::1]:5000/app:latest",
       "[::1]:5000/app:latest"},
      {"[fe80::1]/app:x", "[fe80::1]", "app", "x", "", "[fe80::1]/app:x", "[fe80::1]/app:x"},
      {"ghcr.io/o/a:1@" + kDigest, "ghcr.io", "o/a", "1", kDigest, "ghcr.io/o/a:1@" + kDigest,
       "ghcr.io/o/a:1@" + kDigest},
      {"alpine@" + kDigest, "docker.io", "library/alpine", "", kDigest,
       "docker.io/library/alpine@" + kDigest, "alpine@" + kDigest},
      {"docker.io/library/alpine:3.20@" + kDigest, "docker.io", "library/alpine", "3.20", kDigest,
       "docker.io/library/alpine:3.20@" + kDigest, "alpine:3.20@" + kDigest},
      {"foo@" + sha512, "docker.io", "library/foo", "", sha512, "docker.io/library/foo@" + sha512,
       "foo@" + sha512},
      {"example.com/foo", "example.com", "foo", "latest", "", "example.com/foo:latest",
       "example.com/foo:latest"},
      // Docker keeps an upper-case registry host as written.
      {"Example.COM/foo", "Example.COM", "foo", "latest", "", "Example.COM/foo:latest",
       "Example.COM/foo:latest"},
      // An upper-case first component is taken for a host (normalize.go).
      {"Foo/bar", "Foo", "bar", "latest", "", "Foo/bar:latest", "Foo/bar:latest"},
      {"myhost:5000/x", "myhost:5000", "x", "latest", "", "myhost:5000/x:latest",
       "myhost:5000/x:latest"},
      {"sub.example.com:443/a/b/c:v", "sub.example.com:443", "a/b/c", "v", "",
       "sub.example.com:443/a/b/c:v", "sub.example.com:443/a/b/c:v"},
      {"xn--bcher-kva.example/a", "xn--bcher-kva.example", "a", "latest", "",
       "xn--bcher-kva.example/a:latest", "xn--bcher-kva.example/a:latest"},
      // Without a "/", "host:port" is a name and a tag, exactly as in Docker.
      {"localhost:5000", "docker.io", "library/localhost", "5000", "",
       "docker.io/library/localhost:5000", "localhost:5000"},
      {"example.com", "docker.io", "library/example.com", "latest", "",
       "docker.io/library/example.com:latest", "example.com:latest"},
      {"localhost", "docker.io", "library/localhost", "latest", "",
       "docker.io/library/localhost:latest", "localhost:latest"},
      {"foo:TAG_1.x-y", "docker.io", "library/foo", "TAG_1.x-y", "",
       "docker.io/library/foo:TAG_1.x-y", "foo:TAG_1.x-y"},
      {"foo:_tag", "docker.io", "library/foo", "_tag", "", "docker.io/library/foo:_tag",
       "foo:_tag"},
      {"foo:" + tag128, "docker.io", "library/foo", tag128, "", "docker.io/library/foo:" + tag128,
       "foo:" + tag128},
      {"a_b__c-d---e/f.g", "docker.io", "a_b__c-d---e/f.g", "latest", "",
       "docker.io/a_b__c-d---e/f.g:latest", "a_b__c-d---e/f.g:latest"},
      {"a", "docker.io", "library/a", "latest", "", "docker.io/library/a:latest", "a:latest"},
      {"0", "docker.io", "library/0", "latest", "", "docker.io/library/0:latest", "0:latest"},
      {"user/" + p250, "docker.io", "user/" + p250, "latest", "",
       "docker.io/user/" + p250 + ":latest", "user/" + p250 + ":latest"},
      // 63 hex digits are a name (only exactly 64 look like an image ID).
      {kHex64.substr(1), "docker.io", "library/" + kHex64.substr(1), "latest", "",
       "docker.io/library/" + kHex64.substr(1) + ":latest", kHex64.substr(1) + ":latest"},
  };
}

struct InvalidCase {
  std::string input;
  std::string error;  // substring of the message
};

std::vector<InvalidCase> InvalidCases() {
  const std::string p251(251, 'a');
  return {
      {"", "empty reference"},
      {"Alpine", "must be lowercase"},
      {"docker.io/Alpine", "must be lowercase"},
      {"user/App:1", "must be lowercase"},
      {"UPPER:tag", "must be lowercase"},
      {"foo@SHA256:" + kHex64, "must be lowercase"},
      {kHex64, "64-byte hexadecimal"},
      {"alpine:", "invalid tag"},
      {"alpine:-x", "invalid tag"},
      {"alpine:.x", "invalid tag"},
      {"alpine:" + std::string(129, 'x'), "invalid tag"},
      {"foo:bar:baz", "invalid tag"},
      {"alpine:a/b", "invalid registry host"},
      {"alpine@sha256:abc", "invalid digest"},
      {"alpine@", "invalid digest"},
      {"foo:tag@", "invalid digest"},
      {"alpine@sha256:" + std::string(64, 'A'), "lower-case"},
      {"alpine@sha256:" + kHex64.substr(2), "64 hex digits"},
      {"alpine@md5:" + std::string(32, 'a'), "unsupported digest algorithm"},
      {"foo@" + kDigest + "@x", "invalid digest"},
      {"-foo", "must start and end"},
      {"foo-", "must start and end"},
      {"foo..bar", "invalid separator"},
      {"foo___bar", "invalid separator"},
      {"foo._bar", "invalid separator"},
      {"foo bar", "invalid separator"},
      {"h\xc3\xa9llo", "invalid separator"},
      {"foo//bar", "empty path component"},
      {"user/foo/", "empty path component"},
      {"/foo", "empty path component"},
      {"example.com/", "at least one component"},
      {":tag", "at least one component"},
      {"@" + kDigest, "at least one component"},
      // Docker would take this for a domain-less path; imgfs refuses the bad host instead.
      {"a_b.com/foo", "invalid registry host"},
      {"example.com:/foo", "invalid registry host"},
      {"example.com:80a/foo", "invalid registry host"},
      {"-example.com/foo", "invalid registry host"},
      {"example..com/foo", "invalid registry host"},
      {"[::1/foo", "invalid registry host"},
      {"[::g]/foo", "invalid registry host"},
      {"[]/foo", "path component \"[]\""},
      {"[]:5000/foo", "invalid registry host"},
      {"user/" + p251, "not be more than 255"},
  };
}

TEST(ReferenceTest, ValidTable) {
  std::vector<ValidCase> cases = ValidCases();
  ASSERT_GE(cases.size(), 35u);
  for (const ValidCase& c : cases) {
    SCOPED_TRACE("input: " + c.input);
    Result<Reference> r = Reference::Parse(c.input);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    EXPECT_EQ(r->domain(), c.domain);
    EXPECT_EQ(r->path(), c.path);
    EXPECT_EQ(r->tag(), c.tag);
    if (c.digest.empty()) {
      EXPECT_FALSE(r->digest().has_value());
    } else {
      ASSERT_TRUE(r->digest().has_value());
      EXPECT_EQ(r->digest()->String(), c.digest);
    }
    EXPECT_EQ(r->String(), c.full);
    EXPECT_EQ(r->FamiliarString(), c.familiar);
    EXPECT_EQ(r->Name(), c.domain + "/" + c.path);
    // String() is a fixed point of Parse.
    Result<Reference> again = Reference::Parse(r->String());
    ASSERT_TRUE(again.has_value()) << again.error().ToString();
    EXPECT_EQ(*again, *r);
  }
}

TEST(ReferenceTest, InvalidTable) {
  std::vector<InvalidCase> cases = InvalidCases();
  ASSERT_GE(cases.size(), 35u);
  for (const InvalidCase& c : cases) {
    SCOPED_TRACE("input: " + c.input);
    Result<Reference> r = Reference::Parse(c.input);
    ASSERT_FALSE(r.has_value()) << "parsed as " << r->String();
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(c.error), std::string::npos) << r.error().message();
    // The message names the input (long inputs are shortened).
    std::string shown = c.input.substr(0, 100);
    EXPECT_NE(r.error().message().find("\"" + shown), std::string::npos) << r.error().message();
  }
}

TEST(ReferenceTest, UppercaseMessageIsClear) {
  Result<Reference> r = Reference::Parse("Ubuntu:22.04");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(),
            "invalid reference \"Ubuntu:22.04\": repository name \"Ubuntu\" must be lowercase");
}

TEST(ReferenceTest, FamiliarName) {
  EXPECT_EQ(Reference::Parse("alpine:3.20")->FamiliarName(), "alpine");
  EXPECT_EQ(Reference::Parse("docker.io/user/app")->FamiliarName(), "user/app");
  EXPECT_EQ(Reference::Parse("127.0.0.1:5000/demo/app:1.0")->FamiliarName(),
            "127.0.0.1:5000/demo/app");
}

TEST(ReferenceTest, EndpointMapsDockerHub) {
  EXPECT_EQ(Reference::Parse("alpine")->Endpoint(), "registry-1.docker.io");
  EXPECT_EQ(Reference::Parse("index.docker.io/x/y")->Endpoint(), "registry-1.docker.io");
  EXPECT_EQ(Reference::Parse("ghcr.io/o/a")->Endpoint(), "ghcr.io");
  EXPECT_EQ(Reference::Parse("[::1]:5000/a")->Endpoint(), "[::1]:5000");
}

TEST(ReferenceTest, TagOrDigestPrefersDigest) {
  Result<Reference> tagged = Reference::Parse("alpine:3.20");
  EXPECT_EQ(tagged->TagOrDigest(), "3.20");
  Result<Reference> both = Reference::Parse("alpine:3.20@" + kDigest);
  EXPECT_EQ(both->TagOrDigest(), kDigest);
}

TEST(ReferenceTest, WithTagDropsDigestAndWithDigestKeepsTag) {
  Result<Reference> both = Reference::Parse("ghcr.io/o/a:1@" + kDigest);
  ASSERT_TRUE(both.has_value());
  Reference t = both->WithTag("2").value();
  EXPECT_EQ(t.String(), "ghcr.io/o/a:2");
  EXPECT_FALSE(t.digest().has_value());
  Result<Reference> plain = Reference::Parse("ghcr.io/o/a:1");
  Reference d = plain->WithDigest(*Digest::Parse(kDigest));
  EXPECT_EQ(d.String(), "ghcr.io/o/a:1@" + kDigest);
  EXPECT_EQ(d, *both);
}

TEST(ReferenceTest, LoopbackHosts) {
  for (const char* h : {"localhost", "localhost:5000", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:5000",
                        "127.1.2.3:80", "[::1]", "[::1]:5000", "::1", "[::ffff:127.0.0.1]:5000"}) {
    EXPECT_TRUE(IsLoopbackHost(h)) << h;
  }
  for (const char* h :
       {"docker.io", "registry-1.docker.io", "10.0.0.1:5000", "128.0.0.1", "[::2]:5000",
        "localhost.example.com", "127.0.0.1.example.com", "", "[::1", "[::1]x", "0.0.0.0:5000",
        // glibc resolves *.localhost through DNS: not loopback (security review #10).
        "registry.localhost:5000", "127.0.0.1.nip.io"}) {
    EXPECT_FALSE(IsLoopbackHost(h)) << h;
  }
}

}  // namespace
}  // namespace imgfs::registry
