// imgfs — fuzz target for the raw FUSE messages of fs/fuse/kernel_messages.h: any bytes as a
// request (INIT offer, kill flags), and as an INIT reply (its first 16 bytes the out header,
// the rest the body). Oracles: a reply changes at most the INIT flags' bit, and only when it
// says so; a request is never read past its end (ASan).
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <linux/fuse.h>

#include "fs/fuse/kernel_messages.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string request(reinterpret_cast<const char*>(data), size);
  // Exact-size copies: ASan sees a read past the end.
  (void)imgfs::fs::OffersHandleKillprivV2(std::string_view(request));
  (void)imgfs::fs::AsksToDropSuidSgid(std::string_view(request));

  if (size < sizeof(fuse_out_header)) return 0;
  std::string header = request.substr(0, sizeof(fuse_out_header));
  std::string body = request.substr(sizeof(fuse_out_header));
  const std::string body_before = body;
  const std::string header_before = header;
  fuse_out_header out{};
  std::memcpy(&out, header.data(), sizeof(out));
  iovec iov[2] = {{header.data(), header.size()}, {body.data(), body.size()}};
  const uint64_t unique = (size % 2 == 0) ? out.unique : out.unique + 1;
  const bool added = imgfs::fs::AddHandleKillprivV2(iov, 2, unique);
  if (header != header_before) std::abort();
  if (!added) {
    if (body != body_before) std::abort();
    return 0;
  }
  constexpr size_t kAt = offsetof(fuse_init_out, flags);
  if (out.unique != unique || out.error != 0 || body.size() < kAt + 4) std::abort();
  uint32_t before = 0;
  uint32_t after = 0;
  std::memcpy(&before, body_before.data() + kAt, 4);
  std::memcpy(&after, body.data() + kAt, 4);
  if (after != (before | FUSE_HANDLE_KILLPRIV_V2)) std::abort();
  if (body.substr(0, kAt) != body_before.substr(0, kAt) ||
      body.substr(kAt + 4) != body_before.substr(kAt + 4)) {
    std::abort();
  }
  return 0;
}
