// imgfs — one message on a Unix socket with descriptors beside it.
#include "base/fd_passing.h"

#include <cerrno>
#include <cstring>
#include <utility>

namespace imgfs {

Status SendWithFds(int sock, std::string_view bytes, std::span<const int> fds, const char* what,
                   const sockaddr* to, socklen_t to_len) {
  if (fds.size() > kMaxPassedFds) {
    return Status::InvalidArgument(std::string(what) + ": " + std::to_string(fds.size()) +
                                   " descriptors in one message");
  }
  std::string text(bytes);  // sendmsg's iovec wants a mutable pointer
  iovec iov{text.data(), text.size()};
  std::vector<char> control(fds.empty() ? 0 : CMSG_SPACE(sizeof(int) * fds.size()));
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(to);  // NOLINT(cppcoreguidelines-pro-type-const-cast)
  msg.msg_namelen = to != nullptr ? to_len : 0;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    if (::sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return Status::Ok();
    if (errno != EINTR) return Status::FromErrno(errno, what);
  }
}

ssize_t ReceiveWithFds(int sock, size_t max_bytes, std::string* bytes, std::vector<UniqueFd>* fds,
                       int flags) {
  std::vector<char> buf(max_bytes);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxPassedFds));
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  const ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
  if (n < 0) return n;
  std::vector<UniqueFd> received;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      received.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    errno = EMSGSIZE;  // `received` closes what did arrive
    return -1;
  }
  bytes->assign(buf.data(), static_cast<size_t>(n));
  for (UniqueFd& fd : received) fds->push_back(std::move(fd));
  return n;
}

}  // namespace imgfs
