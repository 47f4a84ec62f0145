// imgfs — threads that cannot take the process down.
//
// An exception escaping a std::thread's function calls std::terminate: one bad_alloc in a
// fetch worker, an index builder or the control socket thread would kill a mount daemon
// and every reader of its mount. Every thread imgfs starts goes through StartThread, whose
// body runs inside RunGuarded: std::bad_alloc and any other exception are caught, logged
// with the thread's name and handed to the owner as a Status (kInternal: a lazy read that
// hits it answers EIO, not ENOSPC) through `on_error`, so the owner fails the work the thread was
// doing instead of the process dying. Code that must keep a thread alive across one failed unit of
// work (a worker loop) calls RunGuarded around each unit.
//
// Thread-safety: free functions, callable from any thread.
#ifndef IMGFS_BASE_THREAD_H_
#define IMGFS_BASE_THREAD_H_

#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include "base/status.h"

namespace imgfs {

// Runs `fn` and returns its Status; an exception leaving `fn` becomes a Status naming
// `what` (kInternal: "out of memory" for bad_alloc, else the exception's what()),
// logged once at warning level. Never throws.
[[nodiscard]] Status RunGuarded(std::string_view what, const std::function<Status()>& fn) noexcept;

// Starts a thread named `name` (pthread_setname_np; the kernel keeps 15 characters) that
// runs `body` under RunGuarded. A non-OK Status — returned by `body` or made from an
// exception — goes to `on_error` (when set) on that thread; `on_error` must not throw (an
// exception from it is logged and dropped). The caller owns the returned thread and joins it.
// Throws std::system_error only if the thread cannot be created (as std::thread does).
std::thread StartThread(std::string name, std::function<Status()> body,
                        std::function<void(const Status&)> on_error = nullptr);

}  // namespace imgfs

#endif  // IMGFS_BASE_THREAD_H_
