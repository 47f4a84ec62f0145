// imgfs — libfuse plumbing shared by every mount (see lowlevel.h).
#include "fs/fuse/lowlevel.h"

#include <fuse_lowlevel.h>
#include <malloc.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "base/log.h"
#include "fs/fuse/takeover.h"

namespace imgfs::fs {
namespace {

// The last error libfuse logged, so that a failed mount can say what libfuse saw ("fuse:
// failed to open /dev/fuse: …", "fuse: failed to exec fusermount3: …").
std::mutex& LastFuseErrorMutex() {
  static std::mutex mutex;
  return mutex;
}
std::string& LastFuseError() {
  static std::string error;
  return error;
}

// libfuse's own messages go to our logger.
void FuseLog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  vsnprintf(buf, sizeof(buf), fmt, ap);
  size_t n = strlen(buf);
  while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  if (level <= FUSE_LOG_ERR) {
    std::scoped_lock lock(LastFuseErrorMutex());
    LastFuseError() = buf;
  }
  LogLevel ours = level <= FUSE_LOG_ERR       ? LogLevel::kError
                  : level <= FUSE_LOG_WARNING ? LogLevel::kWarning
                  : level <= FUSE_LOG_INFO    ? LogLevel::kInfo
                                              : LogLevel::kDebug;
  LogLine(ours, std::string("fuse: ") + buf);
}

}  // namespace

std::string EscapeFuseOption(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

Result<fuse_session*> MountLowLevel(const fuse_lowlevel_ops& ops, void* userdata,
                                    const std::string& options, bool debug,
                                    const std::string& target, const std::string& mountpoint) {
  fuse_set_log_func(FuseLog);
  std::vector<std::string> argv_storage = {"imgfs", "-o", options};
  if (debug) argv_storage.push_back("-d");
  std::vector<char*> argv;
  argv.reserve(argv_storage.size());
  for (std::string& a : argv_storage) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), userdata);
  fuse_opt_free_args(&args);
  if (se == nullptr) {
    return Status::InvalidArgument("cannot create the FUSE session (mount options: " + options +
                                   ")");
  }
  {
    std::scoped_lock lock(LastFuseErrorMutex());
    LastFuseError().clear();
  }
  if (fuse_session_mount(se, target.c_str()) != 0) {
    fuse_session_destroy(se);
    std::string seen;
    {
      std::scoped_lock lock(LastFuseErrorMutex());
      seen = LastFuseError();
    }
    return Status::Io("cannot mount at " + mountpoint +
                      (seen.empty() ? " (is it an existing directory?)" : " (" + seen + ")"));
  }
  return se;
}

Status ServeInitRequest(
    fuse_session* se, const Handover* handover,
    const std::function<void(int fuse_fd, std::string_view init_request)>& on_connection) {
  if (handover != nullptr) {
    // The kernel sent INIT to the first daemon only. libfuse answers nothing before it has
    // seen one, so it gets those bytes again (the same negotiation, the same init hook); its
    // reply goes to a request the kernel no longer has and fails with ENOENT, which libfuse
    // ignores.
    std::string request = handover->init_request;
    fuse_buf buf{};
    buf.mem = request.data();
    buf.size = request.size();
    fuse_session_process_buf(se, &buf);
    Status resent = NotifyResend(fuse_session_fd(se));
    if (!resent.ok()) IMGFS_LOG(kWarning) << "taking over: " << resent.ToString();
    return Status::Ok();
  }
  fuse_buf buf{};
  int res = 0;
  do {
    res = fuse_session_receive_buf(se, &buf);
  } while (res == -EINTR && !fuse_session_exited(se));
  if (res <= 0) {
    std::free(buf.mem);  // NOLINT(cppcoreguidelines-no-malloc): libfuse's allocation
    if (res == 0 || res == -EINTR) return Status::Ok();  // unmounted or stopped meanwhile
    return Status::Io("reading the INIT request: " + std::string(strerror(-res)));
  }
  if (on_connection) {
    on_connection(fuse_session_fd(se),
                  std::string_view(static_cast<const char*>(buf.mem), buf.size));
  }
  fuse_session_process_buf(se, &buf);
  std::free(buf.mem);  // NOLINT(cppcoreguidelines-no-malloc): libfuse's allocation
  return Status::Ok();
}

int ServeLowLevel(fuse_session* se, unsigned max_threads) {
  // Every READ reply is a fresh buffer of up to 1 MiB (fs/fuse/read_ahead.h). glibc maps
  // buffers that large anew each time (mmap threshold), and the page faults of filling them
  // cost more than the read: a warm 64 MiB file read in 1 MiB requests took 0.7 s instead of
  // 0.16 s. Buffers up to 8 MiB come from the heap and are reused; at most 8 MiB of freed
  // heap stays with each arena.
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  // glibc gives each thread that meets contention an arena of its own (up to 8 per core), and
  // each keeps its freed reply buffers: 16 workers reading 1 MiB replies grew a daemon by
  // ~45 MiB that two arenas do not (a tar of a 75 000-path image: +15 MiB).
  mallopt(M_ARENA_MAX, 2);
  // Preparing the image (decoding layer indexes, merging their trees) leaves freed heap
  // between live blocks that free() never returns: ~34 MiB of a 94 MiB daemon for a
  // 75 000-path image. Return it before serving.
  malloc_trim(0);
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, max_threads);
  const int rc = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  return rc;
}

}  // namespace imgfs::fs
