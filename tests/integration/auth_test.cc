// imgfs — registry authentication end to end: a real docker-registry (distribution 2.8)
// configured for token auth, the in-process TokenServer issuing the JWTs it verifies, and
// RemoteSource (with its Authenticator) pulling through both. An image is pushed once with
// skopeo as the credentialed user.
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "registry/credentials.h"
#include "registry/http_client.h"
#include "registry/manifest.h"
#include "registry/remote_source.h"
#include "tests/support/registry_server.h"
#include "tests/support/token_server.h"

namespace imgfs::registry {
namespace {

using imgfs::testing::RegistryServer;
using imgfs::testing::RegistryServerOptions;
using imgfs::testing::TokenServer;

constexpr char kRepo[] = "demo/app";
constexpr char kUser[] = "alice";
constexpr char kPassword[] = "s3cret-pass";

// The image fixtures made by real tools (tests/fixtures/README.md).
std::string FixturesDir() { return IMGFS_FIXTURES_DIR; }

class AuthIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokens_ = new TokenServer();
    RegistryServerOptions options;
    options.token_auth = RegistryServerOptions::TokenAuth{tokens_->realm(), tokens_->service(),
                                                          tokens_->issuer(), tokens_->cert_path()};
    Result<std::unique_ptr<RegistryServer>> reg = RegistryServer::Start(options);
    if (!reg.has_value()) {
      setup_error_ = new std::string("starting docker-registry: " + reg.error().ToString());
      return;
    }
    registry_ = reg->release();
    Status pushed = registry_->PushOciLayout(FixturesDir() + "/quirks/padded-tar-gzip", "latest",
                                             std::string(kRepo) + ":1",
                                             {std::string(kUser) + ":" + kPassword, ""});
    if (!pushed.ok()) {
      setup_error_ =
          new std::string("pushing the test image: " + pushed.ToString() + "\n" + registry_->Log());
    }
  }

  static void TearDownTestSuite() {
    delete registry_;
    registry_ = nullptr;
    delete tokens_;
    tokens_ = nullptr;
    delete setup_error_;
    setup_error_ = nullptr;
  }

  void SetUp() override {
    ASSERT_EQ(setup_error_, nullptr) << *setup_error_;
    tokens_->SetAnonymous(true, {"pull"});
    tokens_->SetExpiresIn(300);
  }

  std::unique_ptr<RemoteSource> Source(std::optional<Credential> cred) {
    RemoteSourceOptions options;
    options.certs_dir = "";
    options.credential = std::move(cred);
    options.max_attempts = 1;
    options.http = &http_;
    return RemoteSource::Create(registry_->host_port(), kRepo, std::move(options));
  }

  static TokenServer* tokens_;
  static RegistryServer* registry_;
  static std::string* setup_error_;
  HttpClient http_;
};

TokenServer* AuthIntegrationTest::tokens_ = nullptr;
RegistryServer* AuthIntegrationTest::registry_ = nullptr;
std::string* AuthIntegrationTest::setup_error_ = nullptr;

TEST_F(AuthIntegrationTest, AnonymousPullAllowedByPolicy) {
  std::unique_ptr<RemoteSource> source = Source(std::nullopt);
  Result<FetchedManifest> manifest = source->GetManifest("1");
  ASSERT_TRUE(manifest.has_value()) << manifest.error().ToString();
  EXPECT_FALSE(manifest->bytes.empty());
  EXPECT_EQ(manifest->digest, Digest::Sha256Of(manifest->bytes));
}

TEST_F(AuthIntegrationTest, AnonymousPullRefusedAsksForLogin) {
  tokens_->SetAnonymous(true, {});  // tokens without access: the registry refuses them
  Result<FetchedManifest> manifest = Source(std::nullopt)->GetManifest("1");
  ASSERT_FALSE(manifest.has_value());
  EXPECT_EQ(manifest.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(manifest.error().message().find("authentication required: run `imgfs login " +
                                            registry_->host_port() + "`"),
            std::string::npos)
      << manifest.error().message();

  tokens_->SetAnonymous(false, {});  // the token server itself refuses anonymous requests
  manifest = Source(std::nullopt)->GetManifest("1");
  ASSERT_FALSE(manifest.has_value());
  EXPECT_EQ(manifest.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(manifest.error().message().find("imgfs login " + registry_->host_port()),
            std::string::npos)
      << manifest.error().message();
}

TEST_F(AuthIntegrationTest, CredentialedPullWorksWhereAnonymousIsRefused) {
  tokens_->SetAnonymous(false, {});
  std::unique_ptr<RemoteSource> source = Source(Credential{kUser, kPassword, ""});
  Result<FetchedManifest> manifest = source->GetManifest("1");
  ASSERT_TRUE(manifest.has_value()) << manifest.error().ToString();
  Result<Manifest> decoded = DecodeManifest(manifest->bytes);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  ASSERT_FALSE(decoded->layers.empty());
  // A blob through the same token, verified against its digest.
  const Descriptor& layer = decoded->layers[0];
  size_t bytes = 0;
  Status fetched = source->FetchBlob(layer.digest, layer.size, [&](std::string_view chunk) {
    bytes += chunk.size();
    return Status::Ok();
  });
  ASSERT_TRUE(fetched.ok()) << fetched.ToString();
  EXPECT_EQ(static_cast<int64_t>(bytes), layer.size);

  // The token the registry accepted was issued to the user, for this repository.
  bool saw_user_token = false;
  for (const auto& req : tokens_->requests()) {
    if (req.path == "/token" && req.Header("authorization").rfind("Basic ", 0) == 0) {
      saw_user_token = true;
    }
  }
  EXPECT_TRUE(saw_user_token);
}

TEST_F(AuthIntegrationTest, WrongPasswordIsPermissionDeniedWithClearMessage) {
  tokens_->SetAnonymous(false, {});
  Result<FetchedManifest> manifest =
      Source(Credential{kUser, "not-the-password", ""})->GetManifest("1");
  ASSERT_FALSE(manifest.has_value());
  EXPECT_EQ(manifest.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(manifest.error().message().find("unauthorized: wrong username or password for " +
                                            registry_->host_port()),
            std::string::npos)
      << manifest.error().message();
  EXPECT_EQ(manifest.error().message().find("not-the-password"), std::string::npos);
}

TEST_F(AuthIntegrationTest, TokensAreCachedAcrossRequests) {
  std::unique_ptr<RemoteSource> source = Source(Credential{kUser, kPassword, ""});
  const int before = tokens_->token_requests();
  for (int i = 0; i < 6; ++i) {
    Result<FetchedManifest> manifest = source->GetManifest("1");
    ASSERT_TRUE(manifest.has_value()) << manifest.error().ToString();
  }
  Result<std::vector<std::string>> tags = source->ListTags();
  ASSERT_TRUE(tags.has_value()) << tags.error().ToString();
  EXPECT_EQ(*tags, std::vector<std::string>{"1"});
  EXPECT_EQ(tokens_->token_requests() - before, 1);
}

TEST_F(AuthIntegrationTest, ExpiringTokensAreRefreshed) {
  tokens_->SetExpiresIn(5);  // refreshed after 80 %: 4 s
  std::unique_ptr<RemoteSource> source = Source(Credential{kUser, kPassword, ""});
  const int before = tokens_->token_requests();
  ASSERT_TRUE(source->GetManifest("1").has_value());
  ASSERT_TRUE(source->GetManifest("1").has_value());
  EXPECT_EQ(tokens_->token_requests() - before, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(4200));
  Result<FetchedManifest> manifest = source->GetManifest("1");
  ASSERT_TRUE(manifest.has_value()) << manifest.error().ToString();
  EXPECT_EQ(tokens_->token_requests() - before, 2);
  ASSERT_TRUE(source->GetManifest("1").has_value());
  EXPECT_EQ(tokens_->token_requests() - before, 2);
}

TEST_F(AuthIntegrationTest, CredentialsFromDockerConfigReachTheRegistry) {
  tokens_->SetAnonymous(false, {});
  imgfs::testing::TempDir dir;
  CredentialStoreOptions options;
  options.docker_config_path = dir.path() + "/config.json";
  CredentialStore store(options);
  ASSERT_TRUE(store.Store(registry_->host_port(), Credential{kUser, kPassword, ""}).ok());
  Result<std::optional<Credential>> cred = store.Lookup(registry_->host_port());
  ASSERT_TRUE(cred.has_value() && cred->has_value());
  Result<FetchedManifest> manifest = Source(**cred)->GetManifest("1");
  ASSERT_TRUE(manifest.has_value()) << manifest.error().ToString();
}

}  // namespace
}  // namespace imgfs::registry
