// imgfs — fuzz target for the start record a keeper sends the daemons it starts
// (fs/fuse/takeover.h ParseStartRecord). Oracle: a record that parses is exactly what
// EncodeStartRecord makes of the parsed fields (one encoding per content).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "base/unique_fd.h"
#include "fs/fuse/takeover.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // A descriptor comes with every record here (a takeover needs one).
  imgfs::UniqueFd fd(::fcntl(devnull, F_DUPFD_CLOEXEC, 0));
  auto start = imgfs::fs::ParseStartRecord(in, std::move(fd));
  if (!start.has_value()) return 0;
  if (start->takeover && start->handover.fuse_fd != start->fuse_fd.get()) std::abort();
  const std::string again =
      imgfs::fs::EncodeStartRecord(start->config, start->takeover ? &start->handover : nullptr);
  if (again != in) std::abort();
  return 0;
}
