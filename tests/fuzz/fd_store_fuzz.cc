// imgfs — fuzz target for what the service manager's fd store gives back to a keeper started
// again (fs/fuse/fd_store.h): LISTEN_FDNAMES (ParseListenFdNames) and the state memfd
// (ParseKeptState, of format 2 with the kept configuration of fs/fuse/kept_config.h, and of
// format 1). The first byte picks the parser (and for names, the descriptor count).
// Oracle: what parses is exactly what the encoder makes of it (one encoding per content), and
// a parsed configuration passes CheckKeptConfig.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base/unique_fd.h"
#include "fs/fuse/fd_store.h"
#include "fs/fuse/kept_config.h"
#include "fs/fuse/takeover.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const uint8_t selector = data[0];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (selector < 128) {
    auto names = imgfs::fs::ParseListenFdNames(in, selector);
    if (!names.has_value()) return 0;
    if (names->size() != selector) std::abort();
    std::string again;
    for (size_t i = 0; i < names->size(); ++i) {
      if (!imgfs::fs::ValidFdName((*names)[i])) std::abort();
      again += (i == 0 ? "" : ":") + (*names)[i];
    }
    if (again != in) std::abort();
    return 0;
  }
  imgfs::UniqueFd fd(::fcntl(devnull, F_DUPFD_CLOEXEC, 0));
  auto state = imgfs::fs::ParseKeptState(in, std::move(fd));
  if (!state.has_value()) return 0;
  if (!state->fuse_fd.IsValid() || state->handover.fuse_fd != state->fuse_fd.get()) std::abort();
  if (!state->config.has_value()) {  // format 1
    if ("IMGFS-KEPT 1\n" + imgfs::fs::EncodeStartRecord(state->mountpoint, &state->handover) !=
        in) {
      std::abort();
    }
    return 0;
  }
  if (!imgfs::fs::CheckKeptConfig(*state->config).ok() ||
      !imgfs::fs::IsPinnedImage(state->handover.image)) {
    std::abort();
  }
  auto again = imgfs::fs::EncodeKeptState(state->mountpoint, *state->config, state->handover);
  if (!again.has_value() || *again != in) std::abort();
  return 0;
}
