// imgfs tests — RegistryServer: a real Debian `docker-registry` (distribution 2.8) on
// 127.0.0.1 for integration and e2e tests.
//
//   auto reg = RegistryServer::Start({.tls = true});
//   ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
//   ASSERT_TRUE((*reg)->PushOciLayout(fixture, "latest", "demo/app:1").ok());
//   ... talk to (*reg)->host_port(), trusting (*reg)->ca_file() ...
//
// Start() writes a config.yml into a fresh temporary directory (storage, certificates,
// htpasswd file and the registry's log live there too), starts `docker-registry serve` on a
// free port, and returns once `/v2/` answers. The destructor kills the process (SIGTERM, then
// SIGKILL), reaps it and removes the directory. The child also gets PR_SET_PDEATHSIG so a
// crashed test binary leaves no registry behind.
//
// TLS: a throw-away CA and a server certificate for IP:127.0.0.1 and DNS:localhost are made
// with the `openssl` CLI. Basic auth: an htpasswd file made with `htpasswd -Bbn`
// (apache2-utils). Token auth: the registry is told the realm/service/issuer and the
// certificate bundle that verifies the token server's signatures.
//
// A missing tool (docker-registry, openssl, htpasswd, skopeo) is an error naming the Debian
// package, so tests fail with a reason instead of skipping.
//
// Processes run through RunProcess and the directory is a TempDir (image_builder.h).
//
// Thread-safety: the accessors are const and safe from any thread; Push* run skopeo and may
// run concurrently.
#ifndef IMGFS_TESTS_SUPPORT_REGISTRY_SERVER_H_
#define IMGFS_TESTS_SUPPORT_REGISTRY_SERVER_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "tests/support/image_builder.h"

namespace imgfs::testing {

// Files of a throw-away PKI made by GenerateTestPki.
struct TestPki {
  std::string ca_cert;  // PEM; trust this
  std::string ca_key;
  std::string server_cert;  // for IP:127.0.0.1 and DNS:localhost, signed by the CA
  std::string server_key;
  std::string client_cert;  // a client certificate signed by the same CA
  std::string client_key;
};

// Writes a CA, a server certificate and a client certificate into `dir` (openssl CLI,
// EC P-256, valid for two days).
Result<TestPki> GenerateTestPki(const std::string& dir);

struct RegistryServerOptions {
  bool tls = false;
  // With TLS: also require client certificates signed by the test CA.
  bool require_client_cert = false;
  // htpasswd Basic auth for this user (empty = no htpasswd auth).
  std::string htpasswd_user;
  std::string htpasswd_password;
  // Token auth (distribution `docs/spec/auth/token.md`): the registry answers 401 with
  // `Bearer realm=…,service=…` and accepts JWTs signed by a key whose certificate is in
  // rootcertbundle (PEM path) and whose issuer matches.
  struct TokenAuth {
    std::string realm;
    std::string service;
    std::string issuer;
    std::string rootcertbundle;
  };
  std::optional<TokenAuth> token_auth;
  bool delete_enabled = true;
  // Log every answered request as a JSON line ("response completed": method, path, status,
  // body bytes written) for Accesses(). The registry does not log request headers, so the
  // Range asked for is not known; the bytes written are.
  bool access_log = false;
  // Pull-through cache mode (distribution `docs/recipes/mirror.md`): `proxy: remoteurl:`
  // this URL ("http://127.0.0.1:PORT"). Blobs fetched once from the remote are served from
  // this registry's storage afterwards; pushes are refused. "" = an ordinary registry.
  std::string proxy_remote_url;

  // A registry with htpasswd Basic auth for `user`.
  static RegistryServerOptions BasicAuth(std::string user, std::string password) {
    RegistryServerOptions options;
    options.htpasswd_user = std::move(user);
    options.htpasswd_password = std::move(password);
    return options;
  }
};

// One request the registry answered, from its log (RegistryServerOptions::access_log).
struct RegistryAccess {
  std::string method;  // "GET", "HEAD", ...
  std::string path;    // "/v2/demo/app/blobs/sha256:…" (query string included)
  int status = 0;
  uint64_t bytes = 0;  // body bytes written
  bool IsBlob() const { return path.find("/blobs/sha256:") != std::string::npos; }
  bool IsManifest() const { return path.find("/manifests/") != std::string::npos; }
};

struct PushOptions {
  // "user:password" for --dest-creds; "" = the htpasswd user's, if the registry has one
  std::string creds;
  std::string cert_dir;  // --dest-cert-dir (client.cert/client.key/ca.crt), "" = none
};

class RegistryServer {
 public:
  static Result<std::unique_ptr<RegistryServer>> Start(RegistryServerOptions options = {});
  ~RegistryServer();
  RegistryServer(const RegistryServer&) = delete;
  RegistryServer& operator=(const RegistryServer&) = delete;

  // "127.0.0.1:PORT"
  std::string host_port() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  // "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT"
  std::string url() const { return (tls_ ? "https://" : "http://") + host_port(); }
  // The CA certificate to trust ("" without TLS).
  const std::string& ca_file() const { return pki_.ca_cert; }
  // The test PKI (empty paths without TLS); client_cert/client_key pass require_client_cert.
  const TestPki& pki() const { return pki_; }
  // Directory holding config.yml, storage/, certificates and registry.log.
  const std::string& dir() const { return dir_->path(); }
  // The registry's stdout/stderr so far.
  std::string Log() const;
  // Every request answered so far, in order. Empty unless started with access_log.
  std::vector<RegistryAccess> Accesses() const;
  // Body bytes of blob GETs answered so far (with access_log): what readers fetched.
  uint64_t BlobBytesServed() const;

  // skopeo copy oci:<layout_dir>:<layout_tag> docker://<host_port>/<name_and_tag>.
  Status PushOciLayout(const std::string& layout_dir, const std::string& layout_tag,
                       const std::string& name_and_tag, const PushOptions& push = {}) const;

 private:
  RegistryServer() = default;
  Status Launch(const RegistryServerOptions& options);

  std::unique_ptr<TempDir> dir_;
  TestPki pki_;
  bool tls_ = false;
  int port_ = 0;
  std::string htpasswd_creds_;  // "user:password", "" without htpasswd auth
  pid_t pid_ = -1;
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_REGISTRY_SERVER_H_
