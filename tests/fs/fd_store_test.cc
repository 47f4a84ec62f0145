// imgfs — unit tests of what a keeper tells and gets back from systemd's fd store
// (fs/fuse/fd_store.h) and of a layer store keeper's record (fs/fuse/keeper_record.h): the
// bounded parsers, and a real datagram exchange with a socket standing for the manager.
#include "fs/fuse/fd_store.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/fd_passing.h"
#include "base/unique_fd.h"
#include "fs/fuse/keeper_record.h"

namespace imgfs::fs {
namespace {

TEST(FdStoreTest, ListenFdNamesNameEveryDescriptorOnce) {
  auto names = ParseListenFdNames("imgfs-fuse:imgfs-state", 2);
  ASSERT_TRUE(names.has_value()) << names.error().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{"imgfs-fuse", "imgfs-state"}));
  EXPECT_TRUE(ParseListenFdNames("", 0).has_value());
  for (const auto& [text, count] :
       std::vector<std::pair<std::string, size_t>>{{"a:b", 1},
                                                   {"a", 2},
                                                   {"a::b", 3},
                                                   {"a:", 2},
                                                   {":a", 2},
                                                   {"a b", 1},
                                                   {"x", 0},
                                                   {"", 1},
                                                   {std::string(256, 'n'), 1},
                                                   {"a", kMaxListenFds + 1}}) {
    EXPECT_FALSE(ParseListenFdNames(text, count).has_value()) << text << " " << count;
  }
}

TEST(FdStoreTest, KeptStateRoundTripsAndRefusesTheRest) {
  Handover h;
  h.init_request = std::string("\x28\0\0\0\x1a", 5) + std::string(35, '\0');
  h.lease_id = "lease-1";
  h.image = "localhost/x@sha256:00";
  const std::string text = EncodeKeptState("/mnt/a b", h);
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  const int raw = fd.get();
  auto state = ParseKeptState(text, std::move(fd));
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_EQ(state->config, "/mnt/a b");
  EXPECT_EQ(state->handover.init_request, h.init_request);
  EXPECT_EQ(state->handover.lease_id, "lease-1");
  EXPECT_EQ(state->handover.image, h.image);
  EXPECT_EQ(state->handover.fuse_fd, raw);
  for (const std::string& bad :
       {text.substr(0, text.size() - 1), text + "x", text.substr(1), std::string("IMGFS-KEPT 1\n"),
        "IMGFS-KEPT 2\n" + text.substr(13), std::string("IMGFS-KEPT 1\nSTART 0 1 0 0 0\n/")}) {
    EXPECT_FALSE(
        ParseKeptState(bad, UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC))).has_value())
        << bad;
  }
  // The store's copy cannot change: the memfd is sealed.
  auto memfd = KeptStateMemfd(text);
  ASSERT_TRUE(memfd.has_value()) << memfd.error().ToString();
  EXPECT_LT(::write(memfd->get(), "x", 1), 0);
  struct stat st {};
  ASSERT_EQ(::fstat(memfd->get(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), text.size());
}

TEST(FdStoreTest, NotifiesAnAbstractSocketWithADescriptor) {
  const std::string address = "@imgfs-fd-store-test-" + std::to_string(::getpid());
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, address.data() + 1, address.size() - 1);
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr),
                   static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size())),
            0)
      << strerror(errno);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  ASSERT_TRUE(
      NotifyServiceManager(address, "FDSTORE=1\nFDNAME=imgfs-fuse", {write_end.get()}).ok());

  std::string bytes;
  std::vector<UniqueFd> fds;
  ASSERT_GT(ReceiveWithFds(sock.get(), 256, &bytes, &fds), 0);
  EXPECT_EQ(bytes, "FDSTORE=1\nFDNAME=imgfs-fuse");
  ASSERT_EQ(fds.size(), 1u);
  UniqueFd stored = std::move(fds[0]);
  ASSERT_EQ(::write(stored.get(), "k", 1), 1);  // the same pipe
  char got = 0;
  ASSERT_EQ(::read(read_end.get(), &got, 1), 1);
  EXPECT_EQ(got, 'k');

  EXPECT_FALSE(NotifyServiceManager("relative", "READY=1").ok());
  EXPECT_FALSE(NotifyServiceManager("@", "READY=1").ok());
}

TEST(KeeperRecordTest, RoundTripsAndRefusesTheRest) {
  KeeperRecord r{1234, "98765", "/var/lib/layers"};
  auto parsed = ParseKeeperRecord(EncodeKeeperRecord(r));
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  EXPECT_EQ(parsed->pid, 1234);
  EXPECT_EQ(parsed->pid_start, "98765");
  EXPECT_EQ(parsed->mountpoint, "/var/lib/layers");
  for (const char* bad : {"1234 98765", "1234 98765\nrelative", "0 1\n/a", "-1 1\n/a", "01 1\n/a",
                          "1 x\n/a", "1  1\n/a", "1 1\n/a\nb", "1 1\n"}) {
    EXPECT_FALSE(ParseKeeperRecord(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace imgfs::fs
