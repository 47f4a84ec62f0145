// imgfs tests — TlsFront (see tls_front.h).
#include "tests/support/tls_front.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace imgfs::testing {
namespace {

// First byte of a TLS record carrying a handshake (RFC 8446 §5.1, ContentType.handshake).
constexpr unsigned char kTlsHandshake = 0x16;
// How long a new connection may stay silent before it is dropped.
constexpr int kFirstByteTimeoutMs = 10000;

int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool WriteAllFd(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};

}  // namespace

struct TlsFront::SslCtx {
  SSL_CTX* ctx = nullptr;
  ~SslCtx() { SSL_CTX_free(ctx); }
};

Result<std::unique_ptr<TlsFront>> TlsFront::Start(const std::string& cert_file,
                                                  const std::string& key_file,
                                                  int tls_upstream_port, int plain_upstream_port) {
  std::unique_ptr<TlsFront> front(new TlsFront());
  front->ctx_ = std::make_unique<SslCtx>();
  front->ctx_->ctx = SSL_CTX_new(TLS_server_method());
  if (front->ctx_->ctx == nullptr ||
      SSL_CTX_use_certificate_chain_file(front->ctx_->ctx, cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(front->ctx_->ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Status::Internal("TlsFront: cannot load " + cert_file + " / " + key_file);
  }
  front->tls_upstream_port_ = tls_upstream_port;
  front->plain_upstream_port_ = plain_upstream_port;
  front->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (front->listen_fd_ < 0) return Status::FromErrno(errno, "TlsFront: socket");
  int one = 1;
  setsockopt(front->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(front->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(front->listen_fd_, 64) != 0 ||
      getsockname(front->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Status::FromErrno(errno, "TlsFront: bind/listen");
  }
  front->port_ = ntohs(addr.sin_port);
  front->accept_thread_ = std::thread([f = front.get()] { f->AcceptLoop(); });
  return front;
}

TlsFront::~TlsFront() {
  stop_ = true;
  if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::thread> threads;
  {
    std::scoped_lock lock(mu_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
  if (listen_fd_ >= 0) close(listen_fd_);
}

void TlsFront::AcceptLoop() {
  while (!stop_) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return;  // shut down
    }
    std::scoped_lock lock(mu_);
    if (stop_) {
      close(fd);
      return;
    }
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { Relay(fd); });
  }
}

void TlsFront::Relay(int client_fd) {
  // Closes both sockets when the relay ends (their numbers stay in fds_ until destruction;
  // shutdown() on a closed, reused number is harmless for a test).
  int upstream_fd = -1;
  auto finish = [&] {
    std::scoped_lock lock(mu_);
    std::erase(fds_, client_fd);
    if (upstream_fd >= 0) std::erase(fds_, upstream_fd);
    close(client_fd);
    if (upstream_fd >= 0) close(upstream_fd);
  };
  pollfd first{client_fd, POLLIN, 0};
  unsigned char byte = 0;
  if (poll(&first, 1, kFirstByteTimeoutMs) != 1 || recv(client_fd, &byte, 1, MSG_PEEK) != 1) {
    finish();
    return;
  }
  const bool tls = byte == kTlsHandshake;
  upstream_fd = ConnectLoopback(tls ? tls_upstream_port_ : plain_upstream_port_);
  if (upstream_fd < 0) {
    finish();
    return;
  }
  {
    std::scoped_lock lock(mu_);
    fds_.push_back(upstream_fd);
  }
  std::unique_ptr<SSL, SslDeleter> ssl;
  if (tls) {
    ssl.reset(SSL_new(ctx_->ctx));
    if (!ssl || SSL_set_fd(ssl.get(), client_fd) != 1 || SSL_accept(ssl.get()) != 1) {
      ERR_clear_error();
      finish();
      return;
    }
  }
  char buf[16384];
  while (!stop_) {
    pollfd fds[2] = {{client_fd, POLLIN, 0}, {upstream_fd, POLLIN, 0}};
    const bool pending = ssl && SSL_pending(ssl.get()) > 0;
    if (!pending && poll(fds, 2, 1000) < 0 && errno != EINTR) break;
    if (pending || (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n =
          ssl ? SSL_read(ssl.get(), buf, sizeof(buf)) : recv(client_fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      if (!WriteAllFd(upstream_fd, buf, static_cast<size_t>(n))) break;
    }
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n = recv(upstream_fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      if (ssl) {
        if (SSL_write(ssl.get(), buf, static_cast<int>(n)) <= 0) break;
      } else if (!WriteAllFd(client_fd, buf, static_cast<size_t>(n))) {
        break;
      }
    }
  }
  if (ssl) SSL_shutdown(ssl.get());
  ERR_clear_error();
  ssl.reset();
  finish();
}

}  // namespace imgfs::testing
