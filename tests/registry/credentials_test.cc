// imgfs — CredentialStore over real files and real (scripted) credential helper processes.
#include "registry/credentials.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "tests/support/temp_dir.h"

namespace imgfs::registry {
namespace {

using json = nlohmann::json;

using ::imgfs::testing::TempDir;

void WriteText(const std::string& path, const std::string& text, mode_t mode = 0644) {
  ASSERT_TRUE(WriteFileAtomic(path, text, mode).ok()) << path;
}

std::string ReadText(const std::string& path) {
  Result<std::string> data = ReadFile(path);
  return data.has_value() ? *data : "";
}

// A docker-credential-<name> helper as a shell script: answers `get` for the hosts in
// `known` (JSON per host), "credentials not found" otherwise; logs every call.
void WriteHelper(const std::string& dir, const std::string& name, const json& known,
                 const std::string& extra = "") {
  std::string script =
      "#!/bin/sh\n"
      "dir=\"$(dirname \"$0\")\"\n"
      "input=$(cat)\n"
      "echo \"$1 $input\" >> \"$dir/" +
      name + ".log\"\n" + extra +
      "case \"$1\" in\n"
      "get)\n"
      "  case \"$input\" in\n";
  for (auto it = known.begin(); it != known.end(); ++it) {
    script += "  '" + it.key() + "') echo '" + it.value().dump() + "'; exit 0 ;;\n";
  }
  script +=
      "  esac\n"
      "  echo 'credentials not found in native keychain'; exit 1 ;;\n"
      "store) printf '%s' \"$input\" > \"$dir/" +
      name +
      ".stored\"; exit 0 ;;\n"
      "erase) exit 0 ;;\n"
      "esac\n"
      "exit 3\n";
  WriteText(dir + "/docker-credential-" + name, script, 0755);
}

CredentialStoreOptions Options(const TempDir& dir) {
  CredentialStoreOptions options;
  options.docker_config_path = dir.path() + "/docker/config.json";
  options.helper_dir = dir.path();
  return options;
}

TEST(NormalizeRegistryHostTest, Spellings) {
  EXPECT_EQ(NormalizeRegistryHost("https://index.docker.io/v1/"), "docker.io");
  EXPECT_EQ(NormalizeRegistryHost("docker.io"), "docker.io");
  EXPECT_EQ(NormalizeRegistryHost("registry-1.docker.io"), "docker.io");
  EXPECT_EQ(NormalizeRegistryHost("index.docker.io"), "docker.io");
  EXPECT_EQ(NormalizeRegistryHost("https://Registry.Example.com:5000/v2/"),
            "registry.example.com:5000");
  EXPECT_EQ(NormalizeRegistryHost("http://127.0.0.1:5000"), "127.0.0.1:5000");
  EXPECT_EQ(NormalizeRegistryHost(" quay.io "), "quay.io");
  EXPECT_EQ(NormalizeRegistryHost(""), "");
}

TEST(CredentialStoreTest, ReadsEveryAuthsForm) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/docker").ok());
  WriteText(
      dir.path() + "/docker/config.json",
      json{{"auths",
            {
                // alice:pa:ss (a ':' in the password)
                {"https://index.docker.io/v1/", {{"auth", "YWxpY2U6cGE6c3M="}}},
                {"https://reg.example.com/v2/", {{"username", "bob"}, {"password", "hunter2"}}},
                {"oauth.example.com", {{"auth", "ZGV2Og=="}, {"identitytoken", "refresh-xyz"}}},
                {"quay.io/some-org", {{"auth", "b3JnOm9ubHk="}}},
            }},
           {"psFormat", "table"}}
          .dump());
  CredentialStore store(Options(dir));
  for (const char* hub : {"docker.io", "registry-1.docker.io", "index.docker.io"}) {
    Result<std::optional<Credential>> c = store.Lookup(hub);
    ASSERT_TRUE(c.has_value()) << c.error().ToString();
    ASSERT_TRUE(c->has_value()) << hub;
    EXPECT_EQ(**c, (Credential{"alice", "pa:ss", ""})) << hub;
  }
  Result<std::optional<Credential>> bob = store.Lookup("reg.example.com");
  ASSERT_TRUE(bob.has_value() && bob->has_value());
  EXPECT_EQ(**bob, (Credential{"bob", "hunter2", ""}));
  Result<std::optional<Credential>> oauth = store.Lookup("oauth.example.com");
  ASSERT_TRUE(oauth.has_value() && oauth->has_value());
  EXPECT_EQ((*oauth)->identity_token, "refresh-xyz");
  EXPECT_EQ((*oauth)->username, "dev");
  // A per-namespace key does not apply to the whole host.
  Result<std::optional<Credential>> quay = store.Lookup("quay.io");
  ASSERT_TRUE(quay.has_value());
  EXPECT_FALSE(quay->has_value());
  Result<std::optional<Credential>> none = store.Lookup("other.example.com");
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
}

TEST(CredentialStoreTest, MissingFilesMeanNoCredential) {
  TempDir dir;
  CredentialStoreOptions options = Options(dir);
  options.auth_files_before = {dir.path() + "/nope.json"};
  options.auth_files_after = {dir.path() + "/nope2.json"};
  Result<std::optional<Credential>> c = CredentialStore(options).Lookup("docker.io");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_FALSE(c->has_value());
}

TEST(CredentialStoreTest, BrokenFilesAreCorruptWithoutSecrets) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/docker").ok());
  CredentialStore store(Options(dir));
  WriteText(dir.path() + "/docker/config.json", "{not json");
  Result<std::optional<Credential>> c = store.Lookup("reg.example.com");
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kCorrupt);

  // "no-colon-secret" has no ':' → invalid; the message must not echo it.
  WriteText(dir.path() + "/docker/config.json",
            R"({"auths":{"reg.example.com":{"auth":"bm8tY29sb24tc2VjcmV0"}}})");
  c = store.Lookup("reg.example.com");
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(c.error().message().find("reg.example.com"), std::string::npos);
  EXPECT_EQ(c.error().message().find("bm8tY29sb24tc2VjcmV0"), std::string::npos);
  EXPECT_EQ(c.error().message().find("no-colon-secret"), std::string::npos);
}

TEST(CredentialStoreTest, SourceOrder) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/docker").ok());
  auto auth_file = [&](const std::string& name, const std::string& user) {
    json doc = {{"auths", {{"reg.example.com", {{"auth", ""}}}}}};
    doc["auths"]["reg.example.com"]["auth"] =
        user == "carol" ? "Y2Fyb2w6MQ==" : (user == "dave" ? "ZGF2ZToy" : "ZXZlOjM=");
    WriteText(dir.path() + "/" + name, doc.dump());
  };
  auth_file("before.json", "carol");        // carol:1
  auth_file("docker/config.json", "dave");  // dave:2
  auth_file("after.json", "eve");           // eve:3
  CredentialStoreOptions options = Options(dir);
  options.auth_files_before = {dir.path() + "/before.json"};
  options.auth_files_after = {dir.path() + "/after.json"};
  auto user = [&](const CredentialStoreOptions& o) {
    Result<std::optional<Credential>> c = CredentialStore(o).Lookup("reg.example.com");
    return c.has_value() && c->has_value() ? (*c)->username : std::string("?");
  };
  EXPECT_EQ(user(options), "carol");
  options.auth_files_before.clear();
  EXPECT_EQ(user(options), "dave");
  options.docker_config_path.clear();
  EXPECT_EQ(user(options), "eve");
}

TEST(CredentialStoreTest, FromEnvironment) {
  TempDir dir;
  setenv("DOCKER_CONFIG", (dir.path() + "/dc").c_str(), 1);
  setenv("REGISTRY_AUTH_FILE", (dir.path() + "/raf.json").c_str(), 1);
  setenv("XDG_RUNTIME_DIR", (dir.path() + "/run").c_str(), 1);
  CredentialStore store = CredentialStore::FromEnvironment();
  unsetenv("DOCKER_CONFIG");
  unsetenv("REGISTRY_AUTH_FILE");
  unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(store.options().docker_config_path, dir.path() + "/dc/config.json");
  EXPECT_EQ(store.options().auth_files_before, std::vector<std::string>{dir.path() + "/raf.json"});
  EXPECT_EQ(store.options().auth_files_after,
            std::vector<std::string>{dir.path() + "/run/containers/auth.json"});

  CredentialStore home = CredentialStore::FromEnvironment();
  EXPECT_TRUE(home.options().auth_files_before.empty());
  EXPECT_NE(home.options().docker_config_path.find("/.docker/config.json"), std::string::npos);
}

TEST(CredentialStoreTest, CredentialHelpers) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/docker").ok());
  WriteHelper(dir.path(), "perhost",
              {{"reg.example.com",
                {{"ServerURL", "reg.example.com"},
                 {"Username", "helper-user"},
                 {"Secret", "helper-secret"}}}});
  WriteHelper(dir.path(), "global",
              {{"https://index.docker.io/v1/",
                {{"ServerURL", "https://index.docker.io/v1/"},
                 {"Username", "<token>"},
                 {"Secret", "identity-abc"}}}});
  WriteText(dir.path() + "/docker/config.json",
            R"({"credsStore":"global","credHelpers":{"reg.example.com":"perhost"},)"
            R"("auths":{"fallback.example.com":{"auth":"ZmFsbDpiYWNr"},"reg.example.com":{}}})");
  CredentialStore store(Options(dir));

  Result<std::optional<Credential>> c = store.Lookup("https://reg.example.com/v2/");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ(**c, (Credential{"helper-user", "helper-secret", ""}));
  EXPECT_EQ(ReadText(dir.path() + "/perhost.log"), "get reg.example.com\n");

  Result<std::optional<Credential>> hub = store.Lookup("docker.io");
  ASSERT_TRUE(hub.has_value() && hub->has_value()) << hub.error().ToString();
  EXPECT_EQ(**hub, (Credential{"", "", "identity-abc"}));
  EXPECT_EQ(ReadText(dir.path() + "/global.log"), "get https://index.docker.io/v1/\n");

  // The store does not know this host: "credentials not found" → the auths entry.
  Result<std::optional<Credential>> fb = store.Lookup("fallback.example.com");
  ASSERT_TRUE(fb.has_value() && fb->has_value()) << fb.error().ToString();
  EXPECT_EQ(**fb, (Credential{"fall", "back", ""}));

  Result<std::optional<Credential>> none = store.Lookup("nothing.example.com");
  ASSERT_TRUE(none.has_value()) << none.error().ToString();
  EXPECT_FALSE(none->has_value());
}

TEST(CredentialStoreTest, HelperFailuresAndTimeouts) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/docker").ok());
  WriteHelper(dir.path(), "slow", json::object(), "sleep 5\n");
  WriteHelper(dir.path(), "broken", json::object(), "echo 'keychain locked'; exit 2\n");
  CredentialStoreOptions options = Options(dir);
  options.helper_timeout = std::chrono::milliseconds(300);
  CredentialStore store(options);

  WriteText(dir.path() + "/docker/config.json", R"({"credsStore":"slow"})");
  auto start = std::chrono::steady_clock::now();
  Result<std::optional<Credential>> c = store.Lookup("reg.example.com");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(c.error().message().find("timed out"), std::string::npos);

  WriteText(dir.path() + "/docker/config.json", R"({"credsStore":"broken"})");
  c = store.Lookup("reg.example.com");
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(c.error().message().find("keychain locked"), std::string::npos);

  // A helper that is not installed does not block anonymous access.
  WriteText(dir.path() + "/docker/config.json", R"({"credsStore":"not-installed"})");
  c = store.Lookup("reg.example.com");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_FALSE(c->has_value());

  WriteText(dir.path() + "/docker/config.json", R"({"credsStore":"../evil"})");
  EXPECT_FALSE(store.Lookup("reg.example.com").has_value());
}

TEST(CredentialStoreTest, StoreAndEraseRewriteConfigPreservingOtherKeys) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/docker").ok());
  const std::string config = dir.path() + "/docker/config.json";
  WriteText(config,
            R"({"auths":{"docker.io":{"auth":"b2xkOm9sZA=="},"keep.example.com":{"auth":"azp2"}},)"
            R"("proxies":{"default":{"httpProxy":"http://proxy:3128"}},"detachKeys":"ctrl-e,e"})");
  CredentialStore store(Options(dir));
  ASSERT_TRUE(store.Store("registry-1.docker.io", Credential{"alice", "pw1", ""}).ok());
  ASSERT_TRUE(store.Store("https://reg.example.com:5000/v2/", Credential{"bob", "pw2", ""}).ok());

  struct stat st {};
  ASSERT_EQ(stat(config.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  json doc = json::parse(ReadText(config), nullptr, false);
  ASSERT_FALSE(doc.is_discarded());
  EXPECT_EQ(doc["proxies"]["default"]["httpProxy"], "http://proxy:3128");
  EXPECT_EQ(doc["detachKeys"], "ctrl-e,e");
  EXPECT_EQ(doc["auths"]["keep.example.com"]["auth"], "azp2");
  EXPECT_FALSE(doc["auths"].contains("docker.io"));  // the alias was replaced
  EXPECT_EQ(doc["auths"]["https://index.docker.io/v1/"]["auth"], "YWxpY2U6cHcx");
  EXPECT_EQ(doc["auths"]["reg.example.com:5000"]["auth"], "Ym9iOnB3Mg==");

  Result<std::optional<Credential>> c = store.Lookup("docker.io");
  ASSERT_TRUE(c.has_value() && c->has_value());
  EXPECT_EQ(**c, (Credential{"alice", "pw1", ""}));

  ASSERT_TRUE(store.Erase("docker.io").ok());
  c = store.Lookup("docker.io");
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->has_value());
  doc = json::parse(ReadText(config), nullptr, false);
  EXPECT_EQ(doc["detachKeys"], "ctrl-e,e");
  EXPECT_TRUE(doc["auths"].contains("reg.example.com:5000"));
  EXPECT_EQ(store.Erase("docker.io").code(), StatusCode::kNotFound);

  EXPECT_EQ(store.Store("x.example.com", Credential{"user", "", ""}).code(),
            StatusCode::kInvalidArgument);
}

TEST(CredentialStoreTest, StoreCreatesConfigDirectory) {
  TempDir dir;
  CredentialStore store(Options(dir));
  ASSERT_TRUE(store.Store("127.0.0.1:5000", Credential{"u", "p", ""}).ok());
  Result<std::optional<Credential>> c = store.Lookup("127.0.0.1:5000");
  ASSERT_TRUE(c.has_value() && c->has_value());
  EXPECT_EQ((*c)->password, "p");
}

TEST(CredentialStoreTest, StoreAndEraseThroughCredsStore) {
  TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.path() + "/docker").ok());
  const std::string config = dir.path() + "/docker/config.json";
  WriteHelper(dir.path(), "vault", json::object());
  WriteText(config, R"({"credsStore":"vault"})");
  CredentialStore store(Options(dir));
  ASSERT_TRUE(store.Store("reg.example.com", Credential{"carol", "top-secret", ""}).ok());

  json sent = json::parse(ReadText(dir.path() + "/vault.stored"), nullptr, false);
  EXPECT_EQ(sent["ServerURL"], "reg.example.com");
  EXPECT_EQ(sent["Username"], "carol");
  EXPECT_EQ(sent["Secret"], "top-secret");
  std::string written = ReadText(config);
  EXPECT_EQ(written.find("top-secret"), std::string::npos);  // the secret stays in the helper
  json doc = json::parse(written, nullptr, false);
  EXPECT_EQ(doc["credsStore"], "vault");
  EXPECT_TRUE(doc["auths"]["reg.example.com"].empty());

  ASSERT_TRUE(store.Erase("reg.example.com").ok());
  EXPECT_NE(ReadText(dir.path() + "/vault.log").find("erase reg.example.com"), std::string::npos);
  EXPECT_FALSE(json::parse(ReadText(config), nullptr, false)["auths"].contains("reg.example.com"));
}

}  // namespace
}  // namespace imgfs::registry
