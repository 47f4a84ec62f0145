// imgfs — registry credentials: docker-style config files and credential helpers.
//
// CredentialStore answers "which username/password (or identity token) do I send to HOST?"
// the way docker, podman and skopeo do, and implements `imgfs login` / `imgfs logout`.
//
// Sources, in lookup order (the first one that has an entry for the host wins):
//   1. $REGISTRY_AUTH_FILE (containers auth.json format), when set;
//   2. the docker config: $DOCKER_CONFIG/config.json, else ~/.docker/config.json:
//        credHelpers{host: helper}  → `docker-credential-<helper> get`
//        credsStore: helper         → `docker-credential-<helper> get`
//        auths{host: {auth = base64(user:pass) | username, password | identitytoken}}
//      (a helper answering "credentials not found" falls through to `auths`);
//   3. ${XDG_RUNTIME_DIR}/containers/auth.json (podman's login file, same `auths` format).
//
// Keys are compared after NormalizeRegistryHost: scheme and path are dropped
// ("https://host:5000/v2/" → "host:5000"), case is folded, and every Docker Hub alias
// (docker.io, index.docker.io, registry-1.docker.io, https://index.docker.io/v1/) means
// "docker.io". Store/Erase write Docker Hub under the key docker writes:
// "https://index.docker.io/v1/".
//
// Credential helpers run through fork/exec (no shell) with the host on stdin and a timeout;
// `<token>` as Username means Secret is an identity (OAuth2 refresh) token.
//
// Secrets never appear in a log line or in a Status message.
//
// Thread-safety: Lookup is const and may run concurrently; Store/Erase must not run
// concurrently with anything else on the same object (they rewrite the file atomically, so
// other processes always see the old or the new file).
#ifndef IMGFS_REGISTRY_CREDENTIALS_H_
#define IMGFS_REGISTRY_CREDENTIALS_H_

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace imgfs::registry {

struct Credential {
  std::string username;
  std::string password;
  // OAuth2 refresh token ("identitytoken" in config.json, Username "<token>" from a helper).
  // When set, the token endpoint is asked with grant_type=refresh_token.
  std::string identity_token;

  bool operator==(const Credential& other) const = default;
};

// "docker.io" for every Docker Hub spelling; otherwise the lower-cased host[:port] with any
// scheme and path removed. "" for an empty key.
std::string NormalizeRegistryHost(std::string_view key);

struct CredentialStoreOptions {
  // The docker config.json read by Lookup and rewritten by Store/Erase ("" = none).
  std::string docker_config_path;
  // Read-only containers auth.json files consulted before the docker config (in order).
  std::vector<std::string> auth_files_before;
  // Read-only containers auth.json files consulted after the docker config (in order).
  std::vector<std::string> auth_files_after;
  // Directory holding docker-credential-* helpers; "" = search $PATH.
  std::string helper_dir;
  // A helper that has not finished by then is killed and the lookup fails (Unavailable).
  std::chrono::milliseconds helper_timeout{10000};
};

class CredentialStore {
 public:
  explicit CredentialStore(CredentialStoreOptions options);

  // The sources docker and podman use, from the environment (see the file comment).
  static CredentialStore FromEnvironment();

  // The credential for `registry_host` (any spelling NormalizeRegistryHost accepts), or
  // nullopt when no source has one. Errors: Corrupt (a config file is not valid JSON, a bad
  // `auth` value), Unavailable (a helper failed or timed out), Io.
  Result<std::optional<Credential>> Lookup(const std::string& registry_host) const;

  // `imgfs login`: saves `cred` for the host. With credHelpers[host] or credsStore set, the
  // secret goes to `docker-credential-<helper> store` and config.json keeps only the host
  // entry; otherwise auths[host].auth = base64(user:pass) (or identitytoken). Every other key
  // of config.json is preserved; the file is replaced atomically with mode 0600.
  Status Store(const std::string& registry_host, const Credential& cred);

  // `imgfs logout`: removes the host's entry (and asks the helper to erase it). NotFound if
  // there was nothing to remove anywhere.
  Status Erase(const std::string& registry_host);

  const CredentialStoreOptions& options() const { return options_; }

 private:
  CredentialStoreOptions options_;
};

// The credential for `registry_host` as the command line asks: `creds_flag` ("USER:PASSWORD",
// from --creds or the first stdin line of --creds-stdin; the password may contain ':') when
// not empty, else CredentialStore::FromEnvironment().Lookup(registry_host).
// InvalidArgument "--creds must be USER:PASSWORD" without a ':' or with an empty user.
Result<std::optional<Credential>> ResolveCredential(std::string_view creds_flag,
                                                    const std::string& registry_host);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_CREDENTIALS_H_
