// Tests for registry/origin.h: origins, credential placement, plain-http token realms.
#include "registry/origin.h"

#include <gtest/gtest.h>

namespace imgfs::registry {
namespace {

TEST(OriginTest, EffectivePortsMakeOneOriginAndSchemesTwo) {
  std::optional<Origin> a = ParseOrigin("https://Reg.Example.com/v2/");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->scheme, "https");
  EXPECT_EQ(a->host, "reg.example.com");
  EXPECT_EQ(a->port, 443);
  EXPECT_EQ(*a, *ParseOrigin("https://reg.example.com:443/x"));
  EXPECT_NE(*a, *ParseOrigin("http://reg.example.com/x"));
  EXPECT_EQ(ParseOrigin("http://reg.example.com/x")->port, 80);
  EXPECT_EQ(ParseOrigin("http://[::1]:5000/")->host, "[::1]");
  EXPECT_FALSE(ParseOrigin("file:///etc/passwd").has_value());
  EXPECT_FALSE(ParseOrigin("not a url").has_value());
}

TEST(OriginTest, CredentialsOnlyToTheRegistryOrigin) {
  const std::string base = "https://reg.example.com";
  EXPECT_TRUE(MayCarryCredentials("https://reg.example.com/v2/x", base, false));
  EXPECT_TRUE(MayCarryCredentials("https://REG.example.com:443/v2/x", base, false));
  // The downgrade the review describes (#4): same host name, plain http.
  EXPECT_FALSE(MayCarryCredentials("http://reg.example.com/v2/x", base, false));
  EXPECT_FALSE(MayCarryCredentials("http://reg.example.com:443/v2/x", base, false));
  EXPECT_FALSE(MayCarryCredentials("https://reg.example.com:8443/v2/x", base, false));
  EXPECT_FALSE(MayCarryCredentials("https://storage.example.com/blob", base, false));
  // Same host and port, other scheme: only for loopback / insecure registries.
  EXPECT_FALSE(MayCarryCredentials("http://127.0.0.1:5000/v2/", "https://127.0.0.1:5000", false));
  EXPECT_TRUE(MayCarryCredentials("http://127.0.0.1:5000/v2/", "https://127.0.0.1:5000", true));
  EXPECT_FALSE(MayCarryCredentials("http://127.0.0.1:5001/v2/", "https://127.0.0.1:5000", true));
  EXPECT_TRUE(IsSchemeDowngrade("https://a/x", "http://a/y"));
  EXPECT_FALSE(IsSchemeDowngrade("http://a/x", "https://a/y"));
  EXPECT_TRUE(IsRegistryHostPort("http://reg.example.com:443/x", base));
  EXPECT_FALSE(IsRegistryHostPort("https://cdn.example.com/x", base));
}

TEST(OriginTest, PlainHttpAllowedForLoopbackAndListedHostsOnly) {
  EXPECT_TRUE(PlainHttpAllowed("127.0.0.1:5000", {}));
  EXPECT_TRUE(PlainHttpAllowed("localhost:5000", {}));
  EXPECT_FALSE(PlainHttpAllowed("127.0.0.1.nip.io:5000", {}));
  EXPECT_FALSE(PlainHttpAllowed("reg.localhost:5000", {}));
  EXPECT_TRUE(PlainHttpAllowed("Reg:5000", {"reg:5000"}));
  EXPECT_FALSE(PlainHttpAllowed("reg:5001", {"reg:5000"}));
}

TEST(OriginTest, PlainHttpTokenRealms) {
  // https realms are always fine.
  EXPECT_TRUE(CheckTokenRealm("https://auth.example.com/token", "reg:5000", false).ok());
  // A registry spoken to over TLS never gets a plain-http realm, not even on loopback or on
  // its own host (#10).
  for (const char* realm : {"http://127.0.0.1.example/token", "http://reg:5000/token",
                            "http://127.0.0.1:9/token", "http://localhost/token"}) {
    Status st = CheckTokenRealm(realm, "reg:5000", false);
    EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << realm;
  }
  // A plain-HTTP registry: loopback realms and its own host name only.
  EXPECT_TRUE(CheckTokenRealm("http://127.0.0.1:9/token", "reg:5000", true).ok());
  EXPECT_TRUE(CheckTokenRealm("http://reg:5001/token", "reg:5000", true).ok());
  EXPECT_EQ(CheckTokenRealm("http://127.0.0.1.example/token", "reg:5000", true).code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckTokenRealm("http://auth.example.com/token", "reg:5000", true).code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckTokenRealm("ftp://x/token", "reg:5000", true).code(), StatusCode::kCorrupt);
}

TEST(OriginTest, OtherHostsGetOnlyTheExplicitCas) {
  TlsOptions tls;
  tls.ca_files = {"/etc/imgfs/ca.pem"};
  tls.client_cert_file = "/etc/docker/certs.d/reg/client.cert";
  tls.client_key_file = "/etc/docker/certs.d/reg/client.key";
  TlsOptions other = OtherHostTls(tls);
  EXPECT_EQ(other.ca_files, tls.ca_files);
  EXPECT_TRUE(other.client_cert_file.empty());
  EXPECT_TRUE(other.client_key_file.empty());
}

}  // namespace
}  // namespace imgfs::registry
