// imgfs — libfuse plumbing shared by every mount (see lowlevel.h).
#include "fs/fuse/lowlevel.h"

#include <fuse_lowlevel.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string_view>
#include <vector>

#include "base/log.h"
#include "base/mutex.h"
#include "fs/fuse/kernel_messages.h"
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

thread_local FuseRequestId current_request;

// struct fuse_in_header (include/uapi/linux/fuse.h): u32 len, u32 opcode, u64 unique, ...;
// 40 bytes. Spelled out here: the kernel's header and libfuse's cannot both be included.
constexpr size_t kInHeaderBytes = 40;
constexpr size_t kUniqueOffset = 8;

// libfuse 3.14's receive buffer (fuse_session_new: FUSE_MAX_MAX_PAGES pages +
// FUSE_BUFFER_HEADER_SIZE; INIT only ever shrinks it). A buffer allocated by the caller is
// read into at that size, so it must not be smaller.
constexpr size_t kLibfuseMaxPages = 256;
constexpr size_t kLibfuseHeaderBytes = 0x1000;

FuseRequestId RequestOf(const fuse_buf& buf) {
  // In memory unless libfuse spliced a large WRITE into a pipe (FUSE_BUF_IS_FD; the sessions'
  // custom I/O has no splice calls, so libfuse never does).
  if ((buf.flags & FUSE_BUF_IS_FD) != 0 || buf.mem == nullptr || buf.size < kInHeaderBytes) {
    return {};
  }
  const std::string_view bytes(static_cast<const char*>(buf.mem), buf.size);
  uint64_t unique = 0;
  std::memcpy(&unique, bytes.data() + kUniqueOffset, sizeof(unique));
  return FuseRequestId{unique & ~kFuseUniqueResend, (unique & kFuseUniqueResend) != 0,
                       AsksToDropSuidSgid(bytes)};
}

// The INIT reply ServeInitRequest has libfuse send on this thread, and whether it takes
// FUSE_HANDLE_KILLPRIV_V2 (libfuse 3.14 has no flag for it).
struct InitReply {
  uint64_t unique = 0;
  bool add_handle_killpriv_v2 = false;
};
thread_local const InitReply* init_reply = nullptr;

// The session's transport (fuse_session_custom_io): what libfuse does itself, plus the INIT
// reply's flag.
ssize_t ReadDevice(int fd, void* buf, size_t len, void* /*userdata*/) { return read(fd, buf, len); }
ssize_t WriteDevice(int fd, iovec* iov, int count, void* /*userdata*/) {
  const InitReply* init = init_reply;
  if (init != nullptr && init->add_handle_killpriv_v2 &&
      AddHandleKillprivV2(iov, count, init->unique)) {
    IMGFS_LOG(kDebug) << "INIT: FUSE_HANDLE_KILLPRIV_V2 negotiated";
  }
  return writev(fd, iov, count);
}
constexpr fuse_custom_io kDeviceIo{WriteDevice, ReadDevice, nullptr, nullptr};

// Has libfuse answer the INIT request in `buf`, adding FUSE_HANDLE_KILLPRIV_V2 to the reply
// when `handle_killpriv_v2` and the kernel offers it.
void ProcessInit(fuse_session* se, const fuse_buf& buf, bool handle_killpriv_v2) {
  const std::string_view request(static_cast<const char*>(buf.mem), buf.size);
  const InitReply reply{RequestOf(buf).unique,
                        handle_killpriv_v2 && OffersHandleKillprivV2(request)};
  init_reply = &reply;
  fuse_session_process_buf(se, &buf);
  init_reply = nullptr;
}

// The worker threads of one ServeLowLevel call, made the way libfuse 3.14's
// fuse_session_loop_mt makes them (lib/fuse_loop_mt.c): a worker reads a request and, when
// no other is left waiting for one, starts another (up to max_threads); the calling thread
// only waits, and termination signals are blocked in the workers so that they reach it.
// When the session exits, the workers are cancelled: cancellation is enabled only while a
// worker waits in fuse_session_receive_buf, so a request being answered is finished first.
class WorkerPool {
 public:
  WorkerPool(fuse_session* se, unsigned max_threads)
      : se_(se), max_threads_(max_threads == 0 ? 1 : max_threads) {
    sem_init(&finished_, 0, 0);
  }
  ~WorkerPool() { sem_destroy(&finished_); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int Run() {
    {
      MutexLock lock(&mu_);
      if (!StartWorker()) return -EAGAIN;
    }
    // A termination signal's handler (fuse_set_signal_handlers) calls fuse_session_exit on
    // this thread and interrupts the wait; a worker that sees the end posts. The timeout
    // covers a signal that lands between the check and the wait.
    while (!fuse_session_exited(se_)) {
      timespec until{};
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_sec += 1;
      sem_timedwait(&finished_, &until);
    }
    std::vector<pthread_t> threads;
    {
      MutexLock lock(&mu_);
      stopping_ = true;
      threads = threads_;
    }
    for (pthread_t t : threads) pthread_cancel(t);
    for (pthread_t t : threads) pthread_join(t, nullptr);
    fuse_session_reset(se_);  // as libfuse's loop leaves the session
    return error_.load();
  }

 private:
  // Not noexcept: a cancelled worker unwinds through these frames (running destructors).
  static void* Work(void* arg) {
    static_cast<WorkerPool*>(arg)->Serve();
    return nullptr;
  }

  void Serve() {
    fuse_buf buf{};  // reused for every request of this worker
    // The kernel copies a request into this buffer after taking it off its queue; a page
    // fault in that copy while the daemon is being killed fails the copy, and the kernel then
    // answers that request EIO itself instead of resending it to the next daemon
    // (fs/fuse/dev.c, fuse_dev_do_read). So the buffer is allocated here, at the size
    // libfuse reads into, and every page touched before the first request.
    const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t size = kLibfuseMaxPages * page + kLibfuseHeaderBytes;
    buf.mem = std::malloc(size);  // NOLINT(cppcoreguidelines-no-malloc): libfuse frees/grows it
    if (buf.mem != nullptr) std::memset(buf.mem, 0, size);
    struct BufferOwner {
      fuse_buf* buf;
      ~BufferOwner() {
        std::free(buf->mem);  // NOLINT(cppcoreguidelines-no-malloc): libfuse's allocation
      }
    } owner{&buf};
    while (!fuse_session_exited(se_)) {
      pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, nullptr);
      const int res = fuse_session_receive_buf(se_, &buf);
      pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
      if (res == -EINTR) continue;
      if (res <= 0) {  // 0: unmounted (libfuse saw ENODEV and exited the session) or exited
        if (res < 0) {
          error_.store(res);
          fuse_session_exit(se_);
        }
        break;
      }
      {
        MutexLock lock(&mu_);
        if (--idle_ == 0 && !stopping_ && threads_.size() < max_threads_) StartWorker();
      }
      current_request = RequestOf(buf);
      fuse_session_process_buf(se_, &buf);
      current_request = FuseRequestId{};
      MutexLock lock(&mu_);
      ++idle_;
    }
    sem_post(&finished_);
  }

  bool StartWorker() IMGFS_REQUIRES(mu_) {
    sigset_t blocked;
    sigset_t old;
    sigemptyset(&blocked);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT}) sigaddset(&blocked, sig);
    pthread_sigmask(SIG_BLOCK, &blocked, &old);
    pthread_t thread{};
    const int rc = pthread_create(&thread, nullptr, &WorkerPool::Work, this);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (rc != 0) {
      IMGFS_LOG(kWarning) << "cannot start a FUSE worker thread: " << strerror(rc);
      return false;
    }
    threads_.push_back(thread);
    ++idle_;
    return true;
  }

  fuse_session* const se_;
  const unsigned max_threads_;
  Mutex mu_;
  std::vector<pthread_t> threads_ IMGFS_GUARDED_BY(mu_);
  unsigned idle_ IMGFS_GUARDED_BY(mu_) = 0;  // workers waiting for a request
  bool stopping_ IMGFS_GUARDED_BY(mu_) = false;
  std::atomic<int> error_{0};
  sem_t finished_{};  // posted by each worker that leaves its loop
};

}  // namespace

FuseRequestId CurrentRequest() { return current_request; }

bool NegotiatingHandleKillprivV2() {
  return init_reply != nullptr && init_reply->add_handle_killpriv_v2;
}

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
  // Only allocates; the descriptor is the one fuse_session_mount opened.
  if (fuse_session_custom_io(se, &kDeviceIo, fuse_session_fd(se)) != 0) {
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return Status::Internal("cannot set the FUSE session's I/O at " + mountpoint);
  }
  return se;
}

Status ServeInitRequest(
    fuse_session* se, const Handover* handover,
    const std::function<void(int fuse_fd, std::string_view init_request)>& on_connection,
    bool handle_killpriv_v2) {
  if (handover != nullptr) {
    // The kernel sent INIT to the first daemon only. libfuse answers nothing before it has
    // seen one, so it gets those bytes again (the same negotiation, the same init hook); its
    // reply goes to a request the kernel no longer has and fails with ENOENT, which libfuse
    // ignores.
    std::string request = handover->init_request;
    fuse_buf buf{};
    buf.mem = request.data();
    buf.size = request.size();
    // The init callback decides as the first daemon's did (NegotiatingHandleKillprivV2).
    ProcessInit(se, buf, handle_killpriv_v2);
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
  const std::string_view request(static_cast<const char*>(buf.mem), buf.size);
  if (on_connection) on_connection(fuse_session_fd(se), request);
  ProcessInit(se, buf, handle_killpriv_v2);
  std::free(buf.mem);  // NOLINT(cppcoreguidelines-no-malloc): libfuse's allocation
  return Status::Ok();
}

int ServeLowLevel(fuse_session* se, unsigned max_threads) {
  // The malloc settings (at most two arenas, blocks up to 32 MiB from the heap): set in main()
  // (tools/imgfs_main.cc), before any thread.
  // Preparing the image (decoding layer indexes, merging their trees) leaves freed heap
  // between live blocks that free() never returns: ~34 MiB of a 94 MiB daemon for a
  // 75 000-path image. Return it before serving.
  malloc_trim(0);
  // Not fuse_session_loop_mt: the operations need each request's header (CurrentRequest).
  WorkerPool pool(se, max_threads);
  return pool.Run();
}

}  // namespace imgfs::fs
