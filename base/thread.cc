// imgfs — guarded threads (see thread.h).
#include "base/thread.h"

#include <pthread.h>

#include <exception>
#include <new>
#include <utility>

#include "base/log.h"

namespace imgfs {

Status RunGuarded(std::string_view what, const std::function<Status()>& fn) noexcept {
  // Building the Status can itself run out of memory: the catch blocks keep to small
  // strings, and a second exception there ends in the outer catch-all.
  try {
    try {
      return fn();
    } catch (const std::bad_alloc&) {
      IMGFS_LOG(kError) << what << ": out of memory";
      return Status::Internal(std::string(what) + ": out of memory");
    } catch (const std::exception& e) {
      IMGFS_LOG(kError) << what << ": unexpected exception: " << e.what();
      return Status::Internal(std::string(what) + ": unexpected exception: " + e.what());
    } catch (...) {
      IMGFS_LOG(kError) << what << ": unexpected exception";
      return Status::Internal(std::string(what) + ": unexpected exception");
    }
  } catch (...) {
    return Status::Internal("exception while reporting an exception");
  }
}

std::thread StartThread(std::string name, std::function<Status()> body,
                        std::function<void(const Status&)> on_error) {
  return std::thread(
      [name = std::move(name), body = std::move(body), on_error = std::move(on_error)]() noexcept {
        // Best effort: a name longer than 15 characters is cut (ERANGE otherwise).
        ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
        Status st = RunGuarded(name, body);
        if (st.ok() || !on_error) return;
        Status reported = RunGuarded(name + " error handler", [&]() -> Status {
          on_error(st);
          return Status::Ok();
        });
        (void)reported;  // logged by RunGuarded
      });
}

}  // namespace imgfs
