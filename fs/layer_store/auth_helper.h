// imgfs — registry credentials from containers/image for the Additional Layer Store: the
// `additional-layer-store-auth-helper` protocol of registries.conf.
//
// When registries.conf names a helper, containers/image (versions that know the field; not
// the 5.23 of Debian 12's podman) runs it, with no arguments,
// each time it opens an image in a registry for a pull, and writes on its stdin one JSON
// object: the image reference (as it was resolved, e.g. "registry.example.com/ns/app:1") →
// the credential it uses for that registry:
//   {"registry.example.com/ns/app:1": {"username": "u", "password": "p"}}
// ("identityToken" instead for an OAuth2 refresh token; empty fields are left out). A helper
// that fails is logged as a warning and the pull goes on.
//
// imgfs's helper (`imgfs layer-store --auth-helper`) checks that input and hands it to the
// layer stores running on the same store over their credential sockets
// (STORE/layer-stores/<hash of the mountpoint>.sock, 0600, answered only for root and the
// daemon's user). A layer store keeps each credential for the registry host of its reference
// only, and uses it for the pulls and layer reads of images of that host (never for another
// host, a mirror or a rewritten location): the same scope as `--creds`.
//
// Thread-safety: the free functions may be called from any thread; a CredentialListener
// serves on one thread of its own and calls its callback there.
#ifndef IMGFS_FS_LAYER_STORE_AUTH_HELPER_H_
#define IMGFS_FS_LAYER_STORE_AUTH_HELPER_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "cache/store.h"
#include "registry/credentials.h"

namespace imgfs::fs {

// Bounds on the helper's input (a few credentials of a few hundred bytes in practice).
inline constexpr size_t kMaxAuthHelperInputBytes = 64 << 10;
inline constexpr size_t kMaxAuthHelperEntries = 64;
inline constexpr size_t kMaxAuthHelperFieldBytes = 8 << 10;

struct HelperCredential {
  std::string host;  // registry host of the reference (NormalizeRegistryHost)
  registry::Credential credential;
};

// The credentials of one helper input. Corrupt for anything but a JSON object (at most
// kMaxAuthHelperInputBytes, kMaxAuthHelperEntries) of references that parse → objects whose
// "username", "password", "identityToken" are strings (at most kMaxAuthHelperFieldBytes);
// other keys are ignored. Entries without a username or an identity token (anonymous pulls)
// are left out.
Result<std::vector<HelperCredential>> ParseAuthHelperInput(std::string_view json);

// Where the layer store mounted at `mountpoint` listens for credentials.
std::string CredentialSocketPath(const cache::Store& store, const std::string& mountpoint);

// Hands `json` (checked with ParseAuthHelperInput first) to every layer store listening in
// `store` (or only to the one at `mountpoint` when not empty). Returns how many took it;
// sockets nobody answers (a stopped layer store) are skipped. NotFound when none listens.
Result<size_t> SendToLayerStores(const cache::Store& store, std::string_view json,
                                 const std::string& mountpoint);

// Serves a credential socket: each connection sends one helper input and closes its writing
// side; the listener answers "OK\n" or "ERR <message>\n" and calls `on_credentials` with
// what it parsed. Connections from users other than root and this process's are refused.
class CredentialListener {
 public:
  using Callback = std::function<void(const std::vector<HelperCredential>&)>;
  // Binds `path` (a stale socket there is replaced; its directory is made 0700).
  static Result<std::unique_ptr<CredentialListener>> Start(const std::string& path,
                                                           Callback on_credentials);
  ~CredentialListener();  // stops serving and removes the socket
  CredentialListener(const CredentialListener&) = delete;
  CredentialListener& operator=(const CredentialListener&) = delete;

 private:
  CredentialListener() = default;
  void Serve();
  void Answer(int fd);

  std::string path_;
  UniqueFd listen_fd_;
  Callback on_credentials_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_LAYER_STORE_AUTH_HELPER_H_
