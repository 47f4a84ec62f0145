// imgfs — mounts that outlive their daemon: a keeper process holds the FUSE connection, and a
// new daemon takes it over when the one serving it dies.
//
// The kernel keeps a FUSE connection alive while any file descriptor of its /dev/fuse file is
// open; while nobody reads it, requests just queue (the processes that made them wait). So a
// small keeper process, which loads no image, holds a copy of the descriptor for the whole
// life of the mount and starts the daemons that serve it:
//
//   keeper ── forks ──> daemon 1: mounts, reads the kernel's INIT request and hands the keeper
//      │                 the /dev/fuse descriptor and the INIT bytes (SendConnection) before
//      │                 answering it; serves.
//      └── daemon 1 dies by a signal (kill -9, a crash) ──> forks daemon 2 with the
//          descriptor and the INIT bytes (a Handover): it prepares the same image, feeds libfuse
//          the INIT bytes again (the kernel sends INIT once per connection; libfuse answers
//          nothing before it has seen one, and its reply to this one fails with ENOENT, which
//          libfuse ignores), then asks the kernel to send again every request daemon 1 had
//          read but not answered (NotifyResend) and serves; and so on for every later death.
//
// What the kernel holds stays valid in the new daemon: node ids are the merged tree's inode
// numbers, a function of the stored layer indexes (fs/tree/node_table.h, tests/fs/
// node_ids_test.cc); read-only mounts keep no per-open state (fh is unused, or the kernel opens
// by itself: no_open); lookup counts need no bookkeeping because the read-only tree is never
// freed (FORGET only counts); so a request sent again is simply answered again. Writable
// mounts of the fuse driver (fs/writable/) journal the ids, lookup counts, handles and st_ino
// numbers they hand out in their work directory, and a new daemon restores them
// (fs/writable/writable_journal.h); on a restart it ends the old daemon before it opens the
// upper, since two must never change one upper at once. A request sent again keeps its
// number (fuse_in_header.unique) with kFuseUniqueResend set (fs/fuse/lowlevel.h
// CurrentRequest): the writable journal records the number with what each request counted,
// opened or changed, so one the dead daemon had done is answered from the journal, neither
// counted nor done twice; one it had not journaled is done for real. Exact but for FORGET:
// it has no reply, the kernel does not send it again, and the lookups a dead daemon read a
// FORGET for but did not apply stay counted until unmount (fs/writable/writable_fs.h).
//
// Daemons are new programs (KeeperOptions::daemon_argv; `imgfs mount` and `imgfs layer-store`
// use it): the keeper forks and execs the binary recorded at mount time, so a daemon started
// after a crash or on request runs the imgfs installed now. Only daemon 1 of a new mount may
// skip the exec (KeeperOptions::serve, as `imgfs mount` does): nothing can have been
// installed since the command started, and the exec was ~5 ms of every mount. The daemon's end of
// its channel is inherited; everything else — the /dev/fuse descriptor (SCM_RIGHTS), INIT bytes,
// lease, pinned image and the daemon's configuration — comes as the channel's first record
// (ReceiveStart), never on the command line. The keeper also shares the daemons' request counts
// with them (an inherited memfd, fs/fuse/request_counts.h), so `imgfs stats` counts across daemons
// and takeovers.
//
// An upgrade without unmounting: kRestartSignal (SIGUSR1; `imgfs mount --restart DIR`) to the
// keeper starts a new daemon, a takeover, while the old one goes on serving (both read the
// same connection: every read-only request is answered the same by either). Once the new one
// serves, the keeper SIGKILLs the old one and asks the kernel to send again the requests it
// had read (NotifyResend): the same path as a crash, so nothing is lost that a crash would not
// lose. A new daemon that fails before serving leaves the old one serving (logged). Only root
// or the mount's owner may ask: the kernel's rule for kill(2) (the keeper runs as the owner).
//
// A daemon that exits (unmount, SIGTERM) ends the keeper with its status. A signal to the
// keeper (SIGTERM, SIGINT, SIGHUP) is passed to the daemon, which then unmounts and exits, and
// the keeper does not start another. The daemon dies with the keeper (PR_SET_PDEATHSIG), so a
// killed keeper leaves the mount answering ENOTCONN, as a killed daemon did without one —
// unless a service manager holds the connection too: under systemd (NOTIFY_SOCKET), once a
// daemon serves, the keeper hands the manager's fd store the /dev/fuse descriptor, a memfd with
// the Handover and what the mount serves (KeeperOptions::kept_config), and
// KeeperOptions::kept_fds (fs/fuse/fd_store.h), then sends READY=1; the keeper the manager
// starts again with them (RecoverStoredConnection → KeeperOptions::resume) starts its first
// daemon as a takeover of that configuration; a keeper whose mount ended drops its entries.
// When no daemon can serve again — a new daemon fails before it serves (store or image gone),
// or daemons keep dying (more than kMaxRestarts in kRestartWindow) — the keeper answers every
// request itself with EIO (logged once) until the mount is unmounted, and then exits.
//
// Requirements on the kernel: FUSE_NOTIFY_RESEND (Linux 6.9). On an older kernel the requests
// the dead daemon had read stay unanswered (their processes wait until the mount goes away);
// every later request is served.
//
// `imgfs mount -f` runs the keeper in the foreground process (KeeperOptions::foreground: its
// stdio stays, log lines on stderr); the daemons are its children.
//
// Thread-safety: the keeper is single-threaded (RunKeeper owns its process, its signal
// handlers and mask); the other functions may be called from any thread.
#ifndef IMGFS_FS_FUSE_TAKEOVER_H_
#define IMGFS_FS_FUSE_TAKEOVER_H_

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "fs/fuse/kept_config.h"

namespace imgfs::fs {

// What a daemon taking over a connection gets from the keeper.
struct Handover {
  int fuse_fd = -1;          // the keeper's /dev/fuse descriptor (inherited by the fork)
  std::string init_request;  // the kernel's INIT request, as daemon 1 read it
  std::string lease_id;      // the previous daemon's mount lease, "" if unknown
  // The image exactly as the first daemon prepared it (reference@manifest digest, or the
  // manifest digest): a tag moved since must not change what the mount shows.
  std::string image;
};

// A descriptor with a name (an entry of the service manager's fd store).
struct NamedFd {
  std::string name;
  int fd = -1;
};

// Asks a keeper to replace its daemon by a new one from the installed binary.
inline constexpr int kRestartSignal = SIGUSR1;

// The keeper's exit status when the mount ended without a daemon (or never served).
inline constexpr int kKeeperFailed = 1;

// Messages a daemon sends its keeper over the channel (SOCK_SEQPACKET, one per record):
//   the connection (SendConnection), "OK" once it serves, "ERR <message>" when it fails
//   before serving, "LEASE <id>" once it holds its mount lease, "IMAGE <text>" (what a
//   takeover prepares: Handover::image).
// Sends the /dev/fuse descriptor `fuse_fd` (SCM_RIGHTS) and the INIT request bytes.
Status SendConnection(int channel, int fuse_fd, std::string_view init_request);
// Sends one text message.
Status SendMessage(int channel, std::string_view message);

// What a daemon started as a new program (KeeperOptions::daemon_argv) gets first on its
// channel.
struct DaemonStart {
  std::string config;     // KeeperOptions::daemon_config
  bool takeover = false;  // a live mount to serve: `handover` is set
  Handover handover;      // its fuse_fd is fuse_fd.get()
  UniqueFd fuse_fd;
};

// Reads the start record from `channel` (blocks until the keeper sent it). Corrupt when the
// record is malformed or lacks the descriptor of a takeover.
Result<DaemonStart> ReceiveStart(int channel);

// The start record's bytes: "START <takeover 0|1> <n1> <n2> <n3> <n4>\n", then the
// configuration, the INIT bytes, the lease id and the image (n1..n4 bytes; the last three
// empty unless a takeover). The /dev/fuse descriptor travels beside it (SCM_RIGHTS).
std::string EncodeStartRecord(std::string_view config, const Handover* handover);
// Decodes a start record and takes `fuse_fd` (the descriptor that came with it; required for
// a takeover, which then refers to it). Corrupt on anything else than EncodeStartRecord's
// form, at most 64 KiB.
Result<DaemonStart> ParseStartRecord(std::string_view text, UniqueFd fuse_fd);

// Asks the kernel to queue again every request of this connection that was read but not
// answered (FUSE_NOTIFY_RESEND); they come again with FUSE_UNIQUE_RESEND set in their
// unique. Unsupported when the kernel does not know the notification (before Linux 6.9).
Status NotifyResend(int fuse_fd);

// Whether the connection of `fuse_fd` has ended (unmounted or aborted).
bool ConnectionGone(int fuse_fd);

// For a live connection no daemon can serve: answers every request with EIO (after a log
// line saying so, and asking the kernel to send the unanswered ones again) until the mount
// ends; SIGTERM, SIGINT or SIGHUP unmount it lazily first. Installs the keeper's signal
// handlers; call it from a single-threaded process (a keeper).
void ServeErrorsUntilUnmounted(int fuse_fd, const std::string& mountpoint);

struct KeeperOptions {
  // The daemon: runs in a child process the keeper forked (that dies with the keeper, with
  // default signal dispositions), serves the mount (a takeover when `handover` is set),
  // reports on `channel`, and returns the child's exit status.
  std::function<int(int channel, const Handover* handover)> serve;
  // Where `imgfs mount` waits for "OK" or "ERR <message>" (one line); closed once answered.
  int status_fd = -1;
  std::string mountpoint;  // absolute, canonical (for log lines and the unmount on a stop)
  // Daemons that die within kRestartWindow beyond this many end the restarts.
  int max_restarts = 30;
  std::chrono::seconds restart_window{60};
  // When set, each daemon is a new program (`serve` runs only daemon 1 of a new mount, when
  // set too): the forked child execs daemon_argv(channel) (argv[0] is the path run;
  // `channel`, the daemon's end of its channel, is inherited), and the keeper sends it a
  // DaemonStart first: `daemon_config` and, for a takeover, the handover.
  std::function<std::vector<std::string>(int channel)> daemon_argv;
  std::string daemon_config;
  // The keeper keeps its stdio (its log lines go to stderr: `imgfs mount -f`); otherwise it
  // points them at /dev/null once daemon 1 is started.
  bool foreground = false;
  // Descriptors the keeper also hands the service manager's fd store (fs/fuse/fd_store.h),
  // beside the connection, under their names (ValidFdName; not kFuseFdName or kStateFdName):
  // a keeper the manager starts again gets them back by name (StoredConnection::extra). Not
  // owned; open for the keeper's life.
  std::vector<NamedFd> kept_fds;
  // Whether the keeper speaks to a service manager (fs/fuse/fd_store.h) when NOTIFY_SOCKET
  // names one: only a keeper that is the service's main process (`imgfs mount -f`, read-only
  // or writable with a given upper).
  bool service_manager = false;
  // With service_manager: what the daemons serve, recorded in the state the keeper stores
  // beside the connection (with `mountpoint` and the image daemon 1 pinned), so that a keeper
  // the manager starts again serves the same. A state that cannot be encoded (EncodeKeptState)
  // is not stored: the mount then does not outlive its keeper (logged).
  KeptConfig kept_config;
  // A live connection to take over (a keeper the service manager started again: its first
  // daemon is a takeover); not owned, outlives RunKeeper. Its entries are in the store
  // already.
  const Handover* resume = nullptr;
  // With `resume`: the request counts the previous keeper shared with its daemons
  // (StoredConnection::counts), -1 for new ones. Not owned.
  int resume_counts_fd = -1;
};

// Runs the keeper until the mount ends; returns the process exit status: the last daemon's
// when it exited, non-zero when the first daemon failed before serving (its message went to
// `status_fd`) or the mount ended without a daemon.
int RunKeeper(const KeeperOptions& options);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_TAKEOVER_H_
