// imgfs tests — ClosedPort: a loopback TCP port with nothing listening on it, bound (so no
// other process takes it) but never listening, so a connection to it is refused at once: a
// registry, mirror or proxy that is down.
#ifndef IMGFS_TESTS_SUPPORT_CLOSED_PORT_H_
#define IMGFS_TESTS_SUPPORT_CLOSED_PORT_H_

#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include <netinet/in.h>

namespace imgfs::testing {

class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  ClosedPort(const ClosedPort&) = delete;
  ClosedPort& operator=(const ClosedPort&) = delete;

  int port() const { return port_; }
  std::string host_port() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_CLOSED_PORT_H_
