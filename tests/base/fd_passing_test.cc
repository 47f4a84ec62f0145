// imgfs — tests for base/fd_passing.h.
#include "base/fd_passing.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs {
namespace {

struct Pair {
  UniqueFd a;
  UniqueFd b;
};

Pair SocketPair(int type) {
  int fds[2] = {-1, -1};
  EXPECT_EQ(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

TEST(FdPassingTest, BytesAndDescriptorsArriveTogether) {
  Pair s = SocketPair(SOCK_SEQPACKET);
  int p1[2];
  int p2[2];
  ASSERT_EQ(::pipe2(p1, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(p2, O_CLOEXEC), 0);
  UniqueFd r1(p1[0]), w1(p1[1]), r2(p2[0]), w2(p2[1]);
  const int send[] = {w1.get(), w2.get()};
  ASSERT_TRUE(SendWithFds(s.a.get(), "hello", send, "test").ok());

  std::string bytes;
  std::vector<UniqueFd> fds;
  ASSERT_EQ(ReceiveWithFds(s.b.get(), 64, &bytes, &fds), 5);
  EXPECT_EQ(bytes, "hello");
  ASSERT_EQ(fds.size(), 2u);
  EXPECT_EQ(::fcntl(fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  // The received descriptors are the pipes' write ends, in order.
  ASSERT_EQ(::write(fds[0].get(), "1", 1), 1);
  ASSERT_EQ(::write(fds[1].get(), "2", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(r1.get(), &c, 1), 1);
  EXPECT_EQ(c, '1');
  ASSERT_EQ(::read(r2.get(), &c, 1), 1);
  EXPECT_EQ(c, '2');
}

TEST(FdPassingTest, AMessageWithoutDescriptorsAndTheEndOfAStream) {
  Pair s = SocketPair(SOCK_SEQPACKET);
  ASSERT_TRUE(SendWithFds(s.a.get(), "plain", {}, "test").ok());
  s.a.Close();
  std::string bytes;
  std::vector<UniqueFd> fds;
  ASSERT_EQ(ReceiveWithFds(s.b.get(), 64, &bytes, &fds), 5);
  EXPECT_EQ(bytes, "plain");
  EXPECT_TRUE(fds.empty());
  EXPECT_EQ(ReceiveWithFds(s.b.get(), 64, &bytes, &fds), 0);
}

TEST(FdPassingTest, ATruncatedMessageIsRefusedAndItsDescriptorsClosed) {
  Pair s = SocketPair(SOCK_DGRAM);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]);
  {
    UniqueFd w(p[1]);
    const int send[] = {w.get()};
    ASSERT_TRUE(SendWithFds(s.a.get(), std::string(100, 'x'), send, "test").ok());
  }
  std::string bytes = "before";
  std::vector<UniqueFd> fds;
  errno = 0;
  EXPECT_EQ(ReceiveWithFds(s.b.get(), 10, &bytes, &fds), -1);
  EXPECT_EQ(errno, EMSGSIZE);
  EXPECT_EQ(bytes, "before");
  EXPECT_TRUE(fds.empty());
  // The only write end that was left arrived and was closed: the pipe reads its end.
  char c = 0;
  EXPECT_EQ(::read(r.get(), &c, 1), 0);
}

TEST(FdPassingTest, NothingWaitingWithDontWaitIsEagain) {
  Pair s = SocketPair(SOCK_SEQPACKET);
  std::string bytes;
  std::vector<UniqueFd> fds;
  errno = 0;
  EXPECT_EQ(ReceiveWithFds(s.b.get(), 64, &bytes, &fds, MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);
}

TEST(FdPassingTest, TooManyDescriptorsAreRefusedBeforeSending) {
  Pair s = SocketPair(SOCK_SEQPACKET);
  std::vector<int> many(kMaxPassedFds + 1, s.a.get());
  Status st = SendWithFds(s.a.get(), "x", many, "test");
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace imgfs
