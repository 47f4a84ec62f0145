// imgfs — FUSE_HANDLE_KILLPRIV_V2 in raw FUSE messages: the INIT offer, the reply's flag and
// the kill flags of WRITE, SETATTR, OPEN and CREATE, built with the kernel's own structs.
#include "fs/fuse/kernel_messages.h"

#include <fcntl.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

#include <gtest/gtest.h>
#include <linux/fuse.h>

namespace imgfs::fs {
namespace {

// A request as the kernel writes it: the header, then `body`.
template <typename Body>
std::string Request(uint32_t opcode, const Body& body, uint64_t unique = 7) {
  fuse_in_header in{};
  in.len = sizeof(in) + sizeof(body);
  in.opcode = opcode;
  in.unique = unique;
  std::string out(reinterpret_cast<const char*>(&in), sizeof(in));
  out.append(reinterpret_cast<const char*>(&body), sizeof(body));
  return out;
}

TEST(KernelMessagesTest, InitOfferIsReadFromTheInitFlags) {
  fuse_init_in init{};
  init.major = 7;
  init.minor = 45;
  init.flags = FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV_V2;
  EXPECT_TRUE(OffersHandleKillprivV2(Request(FUSE_INIT, init)));
  init.flags = FUSE_ASYNC_READ | FUSE_HANDLE_KILLPRIV;  // the first version only
  EXPECT_FALSE(OffersHandleKillprivV2(Request(FUSE_INIT, init)));
  init.flags = FUSE_HANDLE_KILLPRIV_V2;
  EXPECT_FALSE(OffersHandleKillprivV2(Request(FUSE_LOOKUP, init))) << "not an INIT";
  const std::string full = Request(FUSE_INIT, init);
  EXPECT_FALSE(OffersHandleKillprivV2(full.substr(0, sizeof(fuse_in_header) + 14)))
      << "cut inside the flags";
  EXPECT_FALSE(OffersHandleKillprivV2(""));
}

TEST(KernelMessagesTest, FlagIsAddedToTheInitReplyOnly) {
  fuse_out_header out{};
  out.unique = 42;
  fuse_init_out init{};
  init.major = 7;
  init.minor = 31;
  init.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES;
  iovec iov[2] = {{&out, sizeof(out)}, {&init, sizeof(init)}};

  EXPECT_FALSE(AddHandleKillprivV2(iov, 2, 41)) << "another request's reply";
  EXPECT_EQ(init.flags, uint32_t{FUSE_ASYNC_READ | FUSE_BIG_WRITES});
  out.error = -EPROTO;
  EXPECT_FALSE(AddHandleKillprivV2(iov, 2, 42)) << "an error reply";
  out.error = 0;
  EXPECT_FALSE(AddHandleKillprivV2(iov, 1, 42)) << "a reply without a body";
  iovec short_body[2] = {{&out, sizeof(out)}, {&init, 12}};
  EXPECT_FALSE(AddHandleKillprivV2(short_body, 2, 42)) << "a body without the flags";

  ASSERT_TRUE(AddHandleKillprivV2(iov, 2, 42));
  EXPECT_EQ(init.flags, uint32_t{FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_HANDLE_KILLPRIV_V2});
  EXPECT_EQ(init.major, 7u);
  EXPECT_EQ(init.minor, 31u) << "nothing else changes";
}

TEST(KernelMessagesTest, KillFlagsOfWriteSetattrOpenAndCreate) {
  fuse_write_in write{};
  write.size = 4096;
  EXPECT_FALSE(AsksToDropSuidSgid(Request(FUSE_WRITE, write)));
  write.write_flags = FUSE_WRITE_KILL_SUIDGID;
  EXPECT_TRUE(AsksToDropSuidSgid(Request(FUSE_WRITE, write)));

  fuse_setattr_in setattr{};
  setattr.valid = FATTR_SIZE;
  EXPECT_FALSE(AsksToDropSuidSgid(Request(FUSE_SETATTR, setattr)));
  setattr.valid = FATTR_SIZE | FATTR_KILL_SUIDGID;
  EXPECT_TRUE(AsksToDropSuidSgid(Request(FUSE_SETATTR, setattr)));

  fuse_open_in open{};
  open.flags = O_WRONLY | O_TRUNC;
  EXPECT_FALSE(AsksToDropSuidSgid(Request(FUSE_OPEN, open)));
  open.open_flags = FUSE_OPEN_KILL_SUIDGID;
  EXPECT_TRUE(AsksToDropSuidSgid(Request(FUSE_OPEN, open)));

  fuse_create_in create{};
  create.flags = O_WRONLY | O_CREAT | O_TRUNC;
  EXPECT_FALSE(AsksToDropSuidSgid(Request(FUSE_CREATE, create)));
  create.open_flags = FUSE_OPEN_KILL_SUIDGID;
  EXPECT_TRUE(AsksToDropSuidSgid(Request(FUSE_CREATE, create)));
}

TEST(KernelMessagesTest, OtherRequestsAndShortOnesAskNothing) {
  // The same bit in the same place of other requests means something else.
  fuse_open_in bits{};
  bits.flags = ~0u;
  bits.open_flags = ~0u;
  EXPECT_FALSE(AsksToDropSuidSgid(Request(FUSE_OPENDIR, bits)));
  EXPECT_FALSE(AsksToDropSuidSgid(Request(FUSE_READ, bits)));
  fuse_write_in write{};
  write.write_flags = FUSE_WRITE_KILL_SUIDGID;
  const std::string full = Request(FUSE_WRITE, write);
  EXPECT_FALSE(AsksToDropSuidSgid(
      full.substr(0, sizeof(fuse_in_header) + offsetof(fuse_write_in, write_flags) + 3)));
  EXPECT_FALSE(AsksToDropSuidSgid(full.substr(0, sizeof(fuse_in_header) - 1)));
  EXPECT_FALSE(AsksToDropSuidSgid(""));
}

}  // namespace
}  // namespace imgfs::fs
