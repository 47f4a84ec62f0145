// imgfs tests — helpers for tests of `imgfs run`: images whose config sets Entrypoint, Cmd,
// Env, WorkingDir and User, a busybox-based image layer, and a child process that runs in the
// background (to be signalled, killed and waited for).
//
// Thread-safety: the functions are thread-safe; a BackgroundProcess belongs to one thread.
#ifndef IMGFS_TESTS_SUPPORT_RUN_SUPPORT_H_
#define IMGFS_TESTS_SUPPORT_RUN_SUPPORT_H_

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "tests/support/image_builder.h"

namespace imgfs::testing {

// Config fields ImageBuilder leaves at their defaults; unset ones stay as built.
struct ConfigOverrides {
  std::optional<std::vector<std::string>> entrypoint;
  std::optional<std::vector<std::string>> cmd;
  std::optional<std::vector<std::string>> env;
  std::optional<std::string> working_dir;
  std::optional<std::string> user;
};

// Adds `spec` under `tag` (ImageBuilder::Add), then rewrites its config with `overrides`
// (new config blob, new manifest, index.json entry `tag` pointing at it).
Result<BuiltImage> AddImageWithConfig(ImageBuilder& builder, const TestImageSpec& spec,
                                      const std::string& tag, const ConfigOverrides& overrides);

// A layer with the host's static busybox as /bin/busybox, symlinks for `applets` in /bin,
// /etc/passwd (root 0:0, app 1234:1234 home /home/app, user 1000:1000) and /etc/group (root,
// app, user, and "extra" 5000 with member app), plus `extra` files. NotFound when the host
// has no /bin/busybox (Debian: busybox-static).
Result<TestLayer> BusyboxLayer(const std::vector<std::string>& applets,
                               const std::vector<TestFile>& extra = {});

// A process started with fork/exec (argv[0] searched in PATH), stdout and stderr captured in
// files; killed with SIGKILL and reaped in the destructor if still running.
class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv,
                    const std::vector<std::string>& env_overrides);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits up to `timeout_s` for the exit; returns the exit status (128+N for a signal) or
  // -1 on timeout.
  int Wait(int timeout_s);
  void Signal(int sig) const;
  std::string out() const;
  std::string err() const;

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;
};

// Polls `predicate` every 10 ms for up to `timeout_s`; true once it held.
bool WaitFor(const std::function<bool()>& predicate, double timeout_s);

// True when `pid` exists and is not a zombie.
bool ProcessRuns(pid_t pid);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_RUN_SUPPORT_H_
