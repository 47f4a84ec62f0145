// imgfs tests — TlsFront: one 127.0.0.1 port that speaks TLS and plain HTTP at once.
//
// A connection whose first byte opens a TLS handshake (0x16) is TLS-terminated with the
// given certificate and its plaintext relayed to 127.0.0.1:tls_upstream_port; any other
// connection is relayed byte for byte to 127.0.0.1:plain_upstream_port. With two
// HttpTestServers behind it, a test gets `https://127.0.0.1:P` (scripted) and
// `http://127.0.0.1:P` (recording) on the same host and port: what a client sees behind a
// TLS proxy that hands out http:// URLs for itself (missing X-Forwarded-Proto), the case of
// security review finding #4.
//
// The destructor stops accepting, shuts every relayed connection down and joins the threads.
//
// Thread-safety: port() and host_port() may be called from any thread.
#ifndef IMGFS_TESTS_SUPPORT_TLS_FRONT_H_
#define IMGFS_TESTS_SUPPORT_TLS_FRONT_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"

namespace imgfs::testing {

class TlsFront {
 public:
  // Listens on an ephemeral port. `cert_file`/`key_file`: PEM server certificate and key
  // (GenerateTestPki's server pair is valid for 127.0.0.1).
  static Result<std::unique_ptr<TlsFront>> Start(const std::string& cert_file,
                                                 const std::string& key_file, int tls_upstream_port,
                                                 int plain_upstream_port);
  ~TlsFront();
  TlsFront(const TlsFront&) = delete;
  TlsFront& operator=(const TlsFront&) = delete;

  int port() const { return port_; }
  std::string host_port() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  TlsFront() = default;
  void AcceptLoop();
  void Relay(int client_fd);

  struct SslCtx;
  std::unique_ptr<SslCtx> ctx_;
  int tls_upstream_port_ = 0;
  int plain_upstream_port_ = 0;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;         // guards fds_ and threads_; a leaf lock
  std::vector<int> fds_;  // client and upstream sockets, shut down on destruction
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_TLS_FRONT_H_
