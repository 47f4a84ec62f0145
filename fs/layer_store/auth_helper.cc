// imgfs — the additional-layer-store-auth-helper protocol: input, sockets, listener.
#include "fs/layer_store/auth_helper.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "registry/digest.h"
#include "registry/reference.h"

namespace imgfs::fs {
namespace {

// A helper or a layer store that does not finish its side by then is given up on.
constexpr int kSocketTimeoutMs = 10000;

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("credential socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

void SetTimeouts(int fd) {
  timeval tv{kSocketTimeoutMs / 1000, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Everything the peer sends until it closes its side, at most kMaxAuthHelperInputBytes.
Result<std::string> ReadToEnd(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading the credential socket");
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > kMaxAuthHelperInputBytes) {
      return Status::InvalidArgument("credentials larger than " +
                                     std::to_string(kMaxAuthHelperInputBytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

Status SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "writing the credential socket");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<HelperCredential>> ParseAuthHelperInput(std::string_view json) {
  if (json.size() > kMaxAuthHelperInputBytes) {
    return Status::Corrupt("auth helper input larger than " +
                           std::to_string(kMaxAuthHelperInputBytes) + " bytes");
  }
  const nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Corrupt("auth helper input is not a JSON object");
  if (j.size() > kMaxAuthHelperEntries) return Status::Corrupt("auth helper input: too many");
  std::vector<HelperCredential> out;
  for (const auto& [key, value] : j.items()) {
    Result<registry::Reference> ref = registry::Reference::Parse(key);
    if (!ref.has_value()) return Status::Corrupt("auth helper input: a key is not a reference");
    if (!value.is_object()) return Status::Corrupt("auth helper input: not an object");
    HelperCredential c;
    c.host = registry::NormalizeRegistryHost(ref->domain());
    for (auto [name, field] :
         {std::pair<const char*, std::string*>{"username", &c.credential.username},
          {"password", &c.credential.password},
          {"identityToken", &c.credential.identity_token}}) {
      auto it = value.find(name);
      if (it == value.end()) continue;
      if (!it->is_string()) return Status::Corrupt(std::string("auth helper input: ") + name);
      *field = it->get<std::string>();
      if (field->size() > kMaxAuthHelperFieldBytes) {
        return Status::Corrupt(std::string("auth helper input: ") + name + " too long");
      }
    }
    if (c.credential.username.empty() && c.credential.identity_token.empty()) continue;
    out.push_back(std::move(c));
  }
  return out;
}

std::string CredentialSocketPath(const cache::Store& store, const std::string& mountpoint) {
  return store.Subdir("layer-stores") + "/" +
         registry::Digest::Sha256Of(mountpoint).hex().substr(0, 16) + ".sock";
}

Result<size_t> SendToLayerStores(const cache::Store& store, std::string_view json,
                                 const std::string& mountpoint) {
  if (Result<std::vector<HelperCredential>> parsed = ParseAuthHelperInput(json);
      !parsed.has_value()) {
    return parsed.error();
  }
  std::vector<std::string> sockets;
  if (!mountpoint.empty()) {
    sockets.push_back(CredentialSocketPath(store, mountpoint));
  } else {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(store.Subdir("layer-stores"), ec)) {
      if (e.path().extension() == ".sock") sockets.push_back(e.path());
    }
  }
  size_t taken = 0;
  for (const std::string& path : sockets) {
    IMGFS_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
    UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock.IsValid()) return Status::FromErrno(errno, "socket");
    SetTimeouts(sock.get());
    if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      continue;  // nobody serves it (any more)
    }
    Status sent = SendAll(sock.get(), json);
    if (sent.ok()) ::shutdown(sock.get(), SHUT_WR);
    Result<std::string> answer = sent.ok() ? ReadToEnd(sock.get()) : Result<std::string>(sent);
    if (!answer.has_value()) return answer.error().WithContext(path);
    if (*answer != "OK\n") {
      return Status::Unavailable("the layer store at " + path +
                                 " refused the credentials: " + *answer);
    }
    ++taken;
  }
  if (taken == 0) return Status::NotFound("no layer store serves the store " + store.root());
  return taken;
}

Result<std::unique_ptr<CredentialListener>> CredentialListener::Start(const std::string& path,
                                                                      Callback on_credentials) {
  std::unique_ptr<CredentialListener> l(new CredentialListener());
  l->path_ = path;
  l->on_credentials_ = std::move(on_credentials);
  const std::string dir = path.substr(0, path.rfind('/'));
  IMGFS_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  IMGFS_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path));
  l->listen_fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!l->listen_fd_.IsValid()) return Status::FromErrno(errno, "socket");
  ::unlink(path.c_str());  // a dead daemon's
  const mode_t old_mask = ::umask(0177);
  const int bound =
      ::bind(l->listen_fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  ::umask(old_mask);
  if (bound != 0) return Status::FromErrno(errno, "bind " + path);
  if (::listen(l->listen_fd_.get(), 16) != 0) return Status::FromErrno(errno, "listen " + path);
  l->thread_ = std::thread([raw = l.get()] { raw->Serve(); });
  return l;
}

CredentialListener::~CredentialListener() {
  stop_ = true;
  ::shutdown(listen_fd_.get(), SHUT_RDWR);  // wakes the accept
  if (thread_.joinable()) thread_.join();
  ::unlink(path_.c_str());
}

void CredentialListener::Serve() {
  while (!stop_) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, 1000);
    if (stop_) return;
    if (ready <= 0) continue;
    UniqueFd conn(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn.IsValid()) continue;
    Answer(conn.get());
  }
}

void CredentialListener::Answer(int fd) {
  SetTimeouts(fd);
  ucred peer{};
  socklen_t len = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
      (peer.uid != 0 && peer.uid != ::geteuid())) {
    (void)SendAll(fd, "ERR permission denied\n");
    return;
  }
  Result<std::string> input = ReadToEnd(fd);
  Result<std::vector<HelperCredential>> creds =
      input.has_value() ? ParseAuthHelperInput(*input)
                        : Result<std::vector<HelperCredential>>(input.error());
  if (!creds.has_value()) {
    IMGFS_LOG(kWarning) << "layer store: credentials refused: " << creds.error().ToString();
    (void)SendAll(fd, "ERR " + creds.error().message() + "\n");
    return;
  }
  on_credentials_(*creds);
  (void)SendAll(fd, "OK\n");
}

}  // namespace imgfs::fs
