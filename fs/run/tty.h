// imgfs — the terminal of `imgfs run -t`: a pseudo-terminal on the container's own devpts,
// the command's controlling terminal, and the relay between it and the caller.
//
// With -t, imgfs opens a new pty on the devpts instance mounted at the rootfs's /dev/pts
// (before the container's init is cloned, so the master stays with imgfs); the command, after
// pivot_root, opens the slave as /dev/pts/N, starts a session with it as controlling
// terminal (setsid + TIOCSCTTY) and makes it its stdin, stdout and stderr (AttachTerminal),
// so `tty` inside names /dev/pts/N. imgfs then relays: the master's output to the caller's
// stdout, and with -i the caller's stdin to the master (TtyRelay). The pty's window size
// follows the caller's terminal, copied at the start and on every SIGWINCH; with -i on a
// terminal the caller's terminal is in raw mode meanwhile (RawTerminal restores it).
// Without a terminal on the caller's side the pty is still made (docker's behaviour) and
// the caller's termios is left alone.
//
// Thread-safety: Pty, RawTerminal and TtyRelay belong to one thread. AttachTerminal runs in
// the forked command process only.
#ifndef IMGFS_FS_RUN_TTY_H_
#define IMGFS_FS_RUN_TTY_H_

#include <sys/types.h>
#include <termios.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

#include "base/status.h"
#include "base/unique_fd.h"

namespace imgfs::fs::run {

// The most one read takes from either side of the relay, and the most caller input held
// for a terminal that is not reading (then the caller's stdin is not read: backpressure).
// 64 KiB is a pipe's default capacity: one read empties a full pipe.
inline constexpr size_t kRelayChunkBytes = 64 << 10;

// The master side of a new pseudo-terminal, unlocked.
class Pty {
 public:
  // Opens "ptmx" in `pts_dir_fd` (a directory descriptor of a devpts mount, O_PATH allowed).
  static Result<Pty> Open(int pts_dir_fd);

  int master() const { return master_.get(); }
  // N of the slave /dev/pts/N.
  int number() const { return number_; }
  // The slave's path where the devpts instance is mounted at /dev/pts.
  std::string SlavePath() const { return "/dev/pts/" + std::to_string(number_); }

 private:
  Pty(UniqueFd master, int number) : master_(std::move(master)), number_(number) {}

  UniqueFd master_;
  int number_ = -1;
};

// In the command's process, before it changes user: opens the slave `path`, gives it to
// `uid`:`gid` (the command's user can reopen it, as runc does), starts a new session with
// it as the controlling terminal and makes it fds 0, 1 and 2. Returns 0, or an errno with
// `*what` naming the step that failed.
int AttachTerminal(const char* path, uid_t uid, gid_t gid, const char** what);

// The first of stdout, stdin and stderr that is a terminal (docker takes the size from its
// output stream), or -1.
int CallerTerminal();

// Sets the window size of the pty `master_fd` to that of the terminal `from_fd`. False
// when `from_fd` is not a terminal (then nothing changes).
bool CopyWindowSize(int from_fd, int master_fd);

// Puts the terminal `fd` in raw mode (cfmakeraw) for the object's lifetime and restores the
// termios it had when destroyed. Nothing happens when `fd` is not a terminal.
class RawTerminal {
 public:
  explicit RawTerminal(int fd);
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  ~RawTerminal();

  // True when the terminal was switched (and will be restored).
  bool active() const { return active_; }

 private:
  int fd_ = -1;
  bool active_ = false;
  termios saved_{};
};

// Copies bytes between a pty master and the caller's stdin and stdout.
class TtyRelay {
 public:
  // `master`: the pty master (made non-blocking; not owned). `in`: the caller's input to
  // pass on (-i), or -1 to read nothing. `out`: where the terminal's output goes. All three
  // stay open; `in` and `out` keep their file status flags (they are shared with the
  // caller's shell).
  TtyRelay(int master, int in, int out);

  // Serves both directions until `control_fd` is readable and `on_control` (which reads
  // it) returns a value; then copies what the terminal still holds to `out` and returns
  // that value. `control_fd` is checked before the two data sources in each round, so a
  // signal that arrived before some input is handled first.
  //
  // End of the caller's input: if the terminal is in canonical mode, its end-of-file
  // character (VEOF) is passed on, as script(1) does; stdin is not read again. A failed
  // write to `out` (the caller went away) drops the rest of the output; the terminal is
  // still read so the command never blocks on it. When every slave descriptor is closed
  // (the command ended), the master is no longer polled.
  // nullopt when poll(2) fails (the caller then waits without relaying).
  std::optional<int> Run(int control_fd, const std::function<std::optional<int>()>& on_control);

 private:
  void ReadInput();
  void WriteToTerminal();
  void ReadOutput();
  void WriteOut(const char* data, size_t size);
  void Drain();

  int master_;
  int in_;
  int out_;
  bool in_open_;
  bool out_open_;
  bool master_open_ = true;
  bool send_eof_ = false;
  std::string to_terminal_;  // caller input not yet accepted by the terminal
};

}  // namespace imgfs::fs::run

#endif  // IMGFS_FS_RUN_TTY_H_
