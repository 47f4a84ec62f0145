// imgfs — FUSE_HANDLE_KILLPRIV_V2 in raw FUSE messages (see kernel_messages.h).
#include "fs/fuse/kernel_messages.h"

#include <cstddef>
#include <cstring>

#include <linux/fuse.h>

namespace imgfs::fs {
namespace {

// The field of type T at `offset` of the body after the fuse_in_header, if the message holds it.
template <typename T>
bool BodyField(std::string_view message, size_t offset, T* out) {
  const size_t at = sizeof(fuse_in_header) + offset;
  if (message.size() < at + sizeof(T)) return false;
  std::memcpy(out, message.data() + at, sizeof(T));
  return true;
}

uint32_t OpcodeOf(std::string_view message) {
  uint32_t opcode = 0;
  if (message.size() >= sizeof(fuse_in_header)) {
    std::memcpy(&opcode, message.data() + offsetof(fuse_in_header, opcode), sizeof(opcode));
  }
  return opcode;
}

// The flag bits of one field of the body; 0 when the message is too short for it.
uint32_t BodyFlags(std::string_view message, size_t offset) {
  uint32_t flags = 0;
  return BodyField(message, offset, &flags) ? flags : 0;
}

}  // namespace

bool OffersHandleKillprivV2(std::string_view init_request) {
  if (OpcodeOf(init_request) != FUSE_INIT) return false;
  return (BodyFlags(init_request, offsetof(fuse_init_in, flags)) & FUSE_HANDLE_KILLPRIV_V2) != 0;
}

bool AddHandleKillprivV2(iovec* iov, int count, uint64_t init_unique) {
  constexpr size_t kFlagsAt = offsetof(fuse_init_out, flags);
  if (count < 2 || iov[0].iov_len != sizeof(fuse_out_header) ||
      iov[1].iov_len < kFlagsAt + sizeof(uint32_t)) {
    return false;
  }
  fuse_out_header out{};
  std::memcpy(&out, iov[0].iov_base, sizeof(out));
  if (out.unique != init_unique || out.error != 0) return false;
  char* body = static_cast<char*>(iov[1].iov_base);
  uint32_t flags = 0;
  std::memcpy(&flags, body + kFlagsAt, sizeof(flags));
  flags |= FUSE_HANDLE_KILLPRIV_V2;
  std::memcpy(body + kFlagsAt, &flags, sizeof(flags));
  return true;
}

bool AsksToDropSuidSgid(std::string_view request) {
  switch (OpcodeOf(request)) {
    case FUSE_WRITE:
      return (BodyFlags(request, offsetof(fuse_write_in, write_flags)) & FUSE_WRITE_KILL_SUIDGID) !=
             0;
    case FUSE_SETATTR:
      return (BodyFlags(request, offsetof(fuse_setattr_in, valid)) & FATTR_KILL_SUIDGID) != 0;
    case FUSE_OPEN:
      return (BodyFlags(request, offsetof(fuse_open_in, open_flags)) & FUSE_OPEN_KILL_SUIDGID) != 0;
    case FUSE_CREATE:
      return (BodyFlags(request, offsetof(fuse_create_in, open_flags)) & FUSE_OPEN_KILL_SUIDGID) !=
             0;
    default:
      return false;
  }
}

}  // namespace imgfs::fs
