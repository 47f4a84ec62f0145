// imgfs — end-to-end tests of a kept mount whose keeper itself dies (fs/fuse/fd_store.h).
//
// The test plays systemd's part, honestly and by its protocol: the test machines' PID 1 is not
// systemd, and `systemd --user` refuses to start there ("the system has not been booted with
// systemd"; faking /run/systemd/system would change the machine). So a datagram socket at an
// abstract address is the NOTIFY_SOCKET of `imgfs mount -f IMAGE DIR` (the ExecStart of a
// Type=notify service). It receives the keeper's messages and descriptors (FDSTORE=1 with FDNAME,
// READY=1), keeps the descriptors as the manager's fd store does, SIGKILLs the keeper (its daemon
// dies with it) while readers run in the mount, and starts `imgfs mount -f` again with the stored
// descriptors from 3 on and LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES, as systemd restarts a service.
// Requests made while no process serves the mount queue in the kernel (the test's copies keep the
// connection alive): the readers see no failure. `imgfs umount` ends the mount and the keeper drops
// its entries (FDSTOREREMOVE=1).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/fd_passing.h"
#include "base/file_util.h"
#include "base/unique_fd.h"
#include "fs/fuse/fd_store.h"
#include "fs/fuse/takeover.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/run_support.h"
#include "tests/support/takeover_readers.h"
#include "tests/support/tree_compare.h"

extern char** environ;

namespace imgfs::testing {
namespace {

// The service manager's side of sd_notify(3) and its fd store.
class FakeServiceManager {
 public:
  FakeServiceManager() {
    address_ = "@imgfs-test-notify-" + std::to_string(getpid()) + "-" +
               std::to_string(reinterpret_cast<uintptr_t>(this));
    sock_ = UniqueFd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, address_.data() + 1, address_.size() - 1);
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
    bound_ = sock_.IsValid() && bind(sock_.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0;
  }

  bool bound() const { return bound_; }

  // The store's entries of a mount, as the manager passes them to the service started again.
  std::vector<std::pair<std::string, int>> Stored() {
    return {{"imgfs-fuse", store["imgfs-fuse"].get()},
            {"imgfs-state", store["imgfs-state"].get()},
            {"imgfs-counts", store["imgfs-counts"].get()}};
  }
  const std::string& address() const { return address_; }

  // Handles messages until `done` holds (true) or `timeout_s` passes (false).
  template <typename Pred>
  bool HandleUntil(Pred done, int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      pollfd p{sock_.get(), POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      std::string bytes;
      std::vector<UniqueFd> fds;
      if (ReceiveWithFds(sock_.get(), 4096, &bytes, &fds) < 0) continue;
      Handle(bytes, std::move(fds));
    }
    return true;
  }

  // The stored descriptors by name (systemd keeps each with its FDNAME).
  std::map<std::string, UniqueFd> store;
  std::vector<std::string> removed;  // names FDSTOREREMOVE=1 dropped
  int ready = 0;                     // READY=1 messages
  std::vector<std::string> problems;

 private:
  void Handle(const std::string& text, std::vector<UniqueFd> fds) {
    std::map<std::string, std::string> fields;
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(start, end - start);
      const size_t eq = line.find('=');
      if (eq != std::string::npos) fields[line.substr(0, eq)] = line.substr(eq + 1);
      start = end + 1;
    }
    if (fields["READY"] == "1") ++ready;
    if (fields["FDSTORE"] == "1") {
      if (fds.size() != 1 || fields["FDNAME"].empty()) {
        problems.push_back("FDSTORE with " + std::to_string(fds.size()) + " descriptors, name \"" +
                           fields["FDNAME"] + "\"");
      } else {
        store[fields["FDNAME"]] = std::move(fds.front());
      }
    }
    if (fields["FDSTOREREMOVE"] == "1") {
      store.erase(fields["FDNAME"]);
      removed.push_back(fields["FDNAME"]);
    }
  }

  std::string address_;
  UniqueFd sock_;
  bool bound_ = false;
};

class KeeperTest : public ImgfsMountTest {
 protected:
  void TearDown() override {
    for (pid_t pid : started_) {
      if (kill(pid, 0) == 0) kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    ImgfsMountTest::TearDown();
  }

  // Starts `imgfs --root ROOT ARGS...` as the service manager does: NOTIFY_SOCKET, and the
  // stored descriptors `passed` (name, fd) from 3 on with LISTEN_PID (the shell's pid, which
  // exec keeps), LISTEN_FDS and LISTEN_FDNAMES. Output goes to `log`.
  pid_t StartService(const FakeServiceManager& manager, const std::vector<std::string>& args,
                     const std::vector<std::pair<std::string, int>>& passed,
                     const std::string& log) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view v(*e);
      if (v.rfind("NOTIFY_SOCKET=", 0) != 0 && v.rfind("LISTEN_", 0) != 0) env.emplace_back(v);
    }
    env.push_back("NOTIFY_SOCKET=" + manager.address());
    std::vector<int> sources;
    if (!passed.empty()) {
      std::string names;
      for (const auto& [name, fd] : passed) {
        names += (names.empty() ? "" : ":") + name;
        sources.push_back(fcntl(fd, F_DUPFD_CLOEXEC, 100));  // above 3.. for the dup2s
      }
      env.push_back("LISTEN_FDS=" + std::to_string(passed.size()));
      env.push_back("LISTEN_FDNAMES=" + names);
    }
    std::vector<std::string> argv = {
        "/bin/sh",
        "-c",
        passed.empty() ? "exec \"$0\" \"$@\"" : "LISTEN_PID=$$ exec \"$0\" \"$@\"",
        kImgfsBinary,
        "--root",
        Root()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::vector<char*> cenv;
    for (std::string& e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const pid_t pid = fork();
    if (pid == 0) {
      // Only async-signal-safe calls: the test has threads.
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
      for (size_t i = 0; i < sources.size(); ++i) dup2(sources[i], 3 + static_cast<int>(i));
      execve(cargv[0], cargv.data(), cenv.data());
      _exit(127);
    }
    close(out);
    for (int fd : sources) close(fd);
    if (pid > 0) started_.push_back(pid);
    return pid;
  }

  // Starts `args` as a new service (nothing stored) and waits until it tells READY=1: its
  // keeper's pid, or 0 after a test failure saying why.
  pid_t StartFirstService(FakeServiceManager& manager, const std::vector<std::string>& args,
                          const std::string& log) {
    const pid_t pid = StartService(manager, args, {}, log);
    if (pid <= 0) {
      ADD_FAILURE() << "starting the service: " << strerror(errno);
      return 0;
    }
    if (!manager.HandleUntil([&] { return manager.ready == 1; }, 120)) {
      ADD_FAILURE() << "the service never told READY=1\n" << ReadAll(log);
      return 0;
    }
    return pid;
  }

  // The exit status of `pid` (a started service), -1 when it did not end within `timeout_s`.
  int WaitExit(pid_t pid, int timeout_s) {
    int status = -1;
    bool ended = WaitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout_s);
    if (!ended) return -1;
    std::erase(started_, pid);
    return status;
  }

  // SIGKILLs the keeper `keeper` (a started service) and waits for it and for its daemon,
  // which dies with it (PR_SET_PDEATHSIG): then nobody serves the mount, and only the service
  // manager's copies hold the connection. The keeper's exit status; the daemon's pid in
  // `*killed` when given.
  int KillKeeperAndItsDaemon(pid_t keeper, pid_t* killed = nullptr) {
    const pid_t daemon = ChildOf(keeper);
    if (killed != nullptr) *killed = daemon;
    EXPECT_GT(daemon, 0);
    EXPECT_EQ(kill(keeper, SIGKILL), 0);
    const int status = WaitExit(keeper, 60);
    EXPECT_TRUE(WaitFor([&] { return daemon <= 0 || !ProcessRuns(daemon); }, 60))
        << "daemon " << daemon;
    return status;
  }

  // Starts the service again with what the manager stores (a keeper killed before); true once
  // the new keeper told READY and every reader of `reads` moved on. `*keeper`: its pid.
  bool RestartUntilServing(FakeServiceManager& manager, const std::vector<std::string>& args,
                           const std::string& log, const ReaderLog& reads, pid_t* keeper) {
    const std::vector<uint64_t> before = reads.Snapshot();
    const int ready_before = manager.ready;
    *keeper = StartService(manager, args, manager.Stored(), log);
    if (*keeper <= 0) return false;
    return manager.HandleUntil([&] { return manager.ready > ready_before; }, 120) &&
           WaitFor([&] { return reads.AllMovedOn(before); }, 120);
  }

  std::vector<pid_t> started_;
};

TEST_F(KeeperTest, ReadersNeverSeeAKilledKeeperUnderTheServiceManager) {
  FakeServiceManager manager;
  ASSERT_TRUE(manager.bound()) << strerror(errno);
  const std::string log = Sub("service.log");
  const std::vector<std::string> args = {"mount", "-f", "oci:" + FixturePath("tiny-gzip:latest"),
                                         Mnt()};
  pid_t keeper = StartFirstService(manager, args, log);
  ASSERT_GT(keeper, 0);
  EXPECT_TRUE(manager.problems.empty()) << manager.problems.front();
  ASSERT_EQ(manager.store.count("imgfs-fuse"), 1u) << ReadAll(log);
  ASSERT_EQ(manager.store.count("imgfs-state"), 1u) << ReadAll(log);
  ASSERT_EQ(manager.store.count("imgfs-counts"), 1u) << ReadAll(log);
  ASSERT_TRUE(IsMounted(Mnt()));

  const auto files = FilesOf(ParseListing(ReadAll(FixturePath("tiny.expected.txt"))));
  ASSERT_GT(files.size(), 10u);

  // Slots 0 and 1: whole files; 2: lookups of names that are nowhere (no listing).
  ReaderLog reads(3);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] { ReadFilesLoop(Mnt(), files, t, stop, &reads); });
  }
  readers.emplace_back([&] { StatLoop(Mnt(), {}, 2, stop, &reads); });
  // Frees stuck readers (the connection ends with its last holder) before failing.
  auto abandon = [&] {
    if (kill(keeper, SIGKILL) == 0) WaitExit(keeper, 30);
    manager.store.clear();
    stop = true;
    for (std::thread& t : readers) t.join();
  };

  constexpr int kKeeperKills = 3;
  for (int round = 0; round < kKeeperKills; ++round) {
    std::vector<uint64_t> before = reads.Snapshot();
    if (!WaitFor([&] { return reads.AllMovedOn(before); }, 60)) {
      abandon();
      FAIL() << "the readers do not move before kill " << round;
    }
    pid_t daemon = 0;
    const int status = KillKeeperAndItsDaemon(keeper, &daemon);
    EXPECT_TRUE(WIFSIGNALED(status)) << status;
    if (!RestartUntilServing(manager, args, log, reads, &keeper)) {
      abandon();
      FAIL() << "no keeper took the mount over after kill " << round << "\n" << ReadAll(log);
    }
    const pid_t next = ChildOf(keeper);
    EXPECT_GT(next, 0);
    EXPECT_NE(next, daemon);
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  const std::vector<std::string> failures = reads.Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  EXPECT_GT(reads.ops(), 0u);
  std::cout << "readers: " << reads.ops() << " operations across " << kKeeperKills
            << " keeper kills\n";
  // The request counts went on across the keepers (kept in the store too).
  ProcessResult r = Imgfs({"stats", "--format", "json", Mnt()}, 30);
  auto stats = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(stats.is_object() && stats.contains("fuse")) << r.Describe();
  EXPECT_EQ(stats["fuse"]["takeovers"].get<uint64_t>(), static_cast<uint64_t>(kKeeperKills));
  // Each lstat of a new missing name is one LOOKUP at least, whichever daemon served it.
  EXPECT_GE(stats["fuse"]["requests"].value("lookup", uint64_t{0}), reads.done(2));

  // `imgfs umount` ends the mount; the keeper drops its entries from the store and exits 0.
  Umount();
  EXPECT_EQ(WaitExit(keeper, 60), 0) << ReadAll(log);
  EXPECT_TRUE(manager.HandleUntil([&] { return manager.store.empty(); }, 60))
      << manager.store.size() << " entries left";
  EXPECT_NE(std::find(manager.removed.begin(), manager.removed.end(), "imgfs-fuse"),
            manager.removed.end());
}

// A writable mount of the fuse driver with a given upper is kept in the store too: the keeper
// the manager starts again takes the upper's journal over, so a descriptor held open across
// the keeper's death writes on, what was fsync'ed stays, and lookups see no failure.
TEST_F(KeeperTest, AWritableMountWithAGivenUpperSurvivesAKilledKeeper) {
  FakeServiceManager manager;
  ASSERT_TRUE(manager.bound()) << strerror(errno);
  const std::string log = Sub("service.log");
  const std::string upper = Sub("upper");
  const std::vector<std::string> args = {
      "mount", "-f",      "--rw", "--driver",
      "fuse",  "--upper", upper,  "oci:" + FixturePath("tiny-gzip:latest"),
      Mnt()};
  pid_t keeper = StartFirstService(manager, args, log);
  ASSERT_GT(keeper, 0);
  ASSERT_EQ(manager.store.count("imgfs-fuse"), 1u) << ReadAll(log);
  ASSERT_EQ(manager.store.count("imgfs-state"), 1u) << ReadAll(log);

  const int held = open((Mnt() + "/held").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(held, 0) << strerror(errno);
  ASSERT_EQ(pwrite(held, "one", 3, 0), 3) << strerror(errno);
  ASSERT_EQ(fsync(held), 0) << strerror(errno);
  ReaderLog reads(1);
  std::atomic<bool> stop{false};
  std::thread looker([&] { StatLoop(Mnt(), {}, 0, stop, &reads); });
  auto abandon = [&] {
    if (kill(keeper, SIGKILL) == 0) WaitExit(keeper, 30);
    manager.store.clear();
    stop = true;
    looker.join();
    close(held);
  };

  for (int round = 0; round < 2; ++round) {
    std::vector<uint64_t> before = reads.Snapshot();
    if (!WaitFor([&] { return reads.AllMovedOn(before); }, 60)) {
      abandon();
      FAIL() << "the lookups do not move before kill " << round;
    }
    KillKeeperAndItsDaemon(keeper);
    // Nobody serves the mount now, and a close(2) of a file on it does not wait for a daemon
    // (no FLUSH: fs/fuse/fuse_ops_rw.cc). The service started below is forked from this
    // process and closes its copy of `held` at its exec: were that a FLUSH, it would wait,
    // unkillable, for the daemon it is about to start.
    const int copy = dup(held);
    ASSERT_GE(copy, 0) << strerror(errno);
    EXPECT_EQ(close(copy), 0) << strerror(errno);
    if (!RestartUntilServing(manager, args, log, reads, &keeper)) {
      abandon();
      FAIL() << "no keeper took the writable mount over after kill " << round << "\n"
             << ReadAll(log);
    }
    // The descriptor opened before the kill, through the new daemon.
    const std::string part = "k" + std::to_string(round);
    EXPECT_EQ(pwrite(held, part.data(), part.size(), static_cast<off_t>(3 + 2 * round)),
              static_cast<ssize_t>(part.size()))
        << strerror(errno);
    EXPECT_EQ(fsync(held), 0) << strerror(errno);
  }
  stop = true;
  looker.join();
  const std::vector<std::string> failures = reads.Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  char got[16] = {};
  EXPECT_EQ(pread(held, got, sizeof(got), 0), 7) << strerror(errno);
  EXPECT_EQ(std::string(got, 7), "onek0k1");
  close(held);
  ASSERT_TRUE(WriteFileAtomic(Mnt() + "/after", "made after the kills").ok());
  Umount();
  EXPECT_EQ(WaitExit(keeper, 60), 0) << ReadAll(log);
  EXPECT_EQ(ReadAll(upper + "/held"), "onek0k1");
  EXPECT_EQ(ReadAll(upper + "/after"), "made after the kills");
  EXPECT_TRUE(manager.HandleUntil([&] { return manager.store.empty(); }, 60))
      << manager.store.size() << " entries left";
}

// A stored connection whose mount has ended since (unmounted while no keeper ran) is not
// taken over: the service mounts anew, and tells the manager to drop the old entries.
TEST_F(KeeperTest, AnEndedStoredConnectionIsMountedAnew) {
  FakeServiceManager manager;
  ASSERT_TRUE(manager.bound()) << strerror(errno);
  const std::string log = Sub("service.log");
  const std::vector<std::string> args = {"mount", "-f", "oci:" + FixturePath("tiny-gzip:latest"),
                                         Mnt()};
  pid_t keeper = StartFirstService(manager, args, log);
  ASSERT_GT(keeper, 0);
  ASSERT_EQ(manager.store.size(), 3u);
  ASSERT_EQ(kill(keeper, SIGKILL), 0);
  WaitExit(keeper, 60);
  ASSERT_EQ(umount2(Mnt().c_str(), MNT_DETACH), 0) << strerror(errno);

  keeper = StartService(manager, args, manager.Stored(), log);
  ASSERT_GT(keeper, 0);
  ASSERT_TRUE(manager.HandleUntil([&] { return manager.ready == 2; }, 120)) << ReadAll(log);
  for (const char* name : {"imgfs-fuse", "imgfs-state", "imgfs-counts"}) {
    EXPECT_EQ(std::count(manager.removed.begin(), manager.removed.end(), name), 1) << name;
  }
  EXPECT_EQ(manager.store.size(), 3u);  // the new mount's
  EXPECT_TRUE(IsMounted(Mnt()));
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  for (const auto& [path, e] : listing) {
    if (e.type != 'f') continue;
    EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + path)).hex(), e.content) << path;
    break;
  }
  Umount();
  EXPECT_EQ(WaitExit(keeper, 60), 0) << ReadAll(log);
}

// Issue 12: a mount whose kept state the service started again cannot read (here a state
// that is no state) cannot come back. The service says so in its log, tells READY, and
// answers every request with EIO, those that waited while nobody served too: nothing hangs.
// `imgfs umount` ends the mount; the service then exits and the store's entries go.
TEST_F(KeeperTest, Issue12AnUnreadableKeptStateFailsRequestsWithEioNeverAHang) {
  FakeServiceManager manager;
  ASSERT_TRUE(manager.bound()) << strerror(errno);
  const std::string log = Sub("service.log");
  const std::vector<std::string> args = {"mount", "-f", "oci:" + FixturePath("tiny-gzip:latest"),
                                         Mnt()};
  pid_t keeper = StartFirstService(manager, args, log);
  ASSERT_GT(keeper, 0);
  ASSERT_EQ(manager.store.size(), 3u);
  std::vector<std::string> files;
  for (const auto& [path, e] : ParseListing(ReadAll(FixturePath("tiny.expected.txt")))) {
    if (e.type == 'f') files.push_back(Mnt() + path);
  }
  ASSERT_GE(files.size(), 2u);
  KillKeeperAndItsDaemon(keeper);
  Result<UniqueFd> garbage = fs::KeptStateMemfd("IMGFS-KEPT 9\nnot a state imgfs wrote\n");
  ASSERT_TRUE(garbage.has_value()) << garbage.error().ToString();
  manager.store["imgfs-state"] = std::move(*garbage);

  // A reader whose request waits while nobody serves (a file never looked up before).
  std::atomic<int> waited_errno{-1};
  std::thread waiter([&] {
    struct stat st {};
    waited_errno = stat(files[0].c_str(), &st) == 0 ? 0 : errno;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  keeper = StartService(manager, args, manager.Stored(), log);
  ASSERT_GT(keeper, 0);
  const bool ready = manager.HandleUntil([&] { return manager.ready == 2; }, 120);
  const bool answered = WaitFor([&] { return waited_errno.load() != -1; }, 60);
  if (!answered) {
    umount2(Mnt().c_str(), MNT_DETACH);  // lets the waiter go, so the test ends
    for (const auto& conn : std::filesystem::directory_iterator("/sys/fs/fuse/connections")) {
      std::ofstream(conn.path() / "abort") << 1;
    }
  }
  waiter.join();
  ASSERT_TRUE(ready) << ReadAll(log);
  ASSERT_TRUE(answered) << "a request waited while the service ran\n" << ReadAll(log);
  EXPECT_EQ(waited_errno.load(), EIO) << strerror(waited_errno.load()) << "\n" << ReadAll(log);
  const int fd = open(files[1].c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EIO) << strerror(errno);
  if (fd >= 0) close(fd);
  const std::string text = ReadAll(log);
  EXPECT_NE(text.find("not a state imgfs can take it over with"), std::string::npos) << text;
  EXPECT_NE(text.find("every request fails with EIO"), std::string::npos) << text;

  ProcessResult r = Imgfs({"umount", Mnt()}, 60);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(IsMounted(Mnt()));
  const int status = WaitExit(keeper, 60);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << "\n" << ReadAll(log);
  EXPECT_TRUE(manager.HandleUntil([&] { return manager.store.empty(); }, 60))
      << manager.store.size() << " entries left";
}

// The state the keeper stored (FDNAME=imgfs-state), parsed as the keeper started again
// parses it; its connection descriptor is a copy of the stored one.
Result<fs::KeptState> StoredState(FakeServiceManager& manager) {
  const int state_fd = manager.store["imgfs-state"].get();
  std::string text(fs::kMaxKeptStateBytes + 1, '\0');
  const ssize_t n = pread(state_fd, text.data(), text.size(), 0);
  if (n < 0) return Status::FromErrno(errno, "reading the stored state");
  text.resize(static_cast<size_t>(n));
  return fs::ParseKeptState(text,
                            UniqueFd(fcntl(manager.store["imgfs-fuse"].get(), F_DUPFD_CLOEXEC, 3)));
}

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

// `size` deterministic bytes that differ with `seed`.
std::string SomeBytes(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  for (char& c : out) {
    seed = seed * 1664525u + 1013904223u;
    c = static_cast<char>(seed >> 24);
  }
  return out;
}

// Issue 12: a service whose unit file changed while its mount lives (another image, --rw
// added) is started again with the kept connection. The kernel holds node ids, lookups and
// open files of the tree the mount served: the restarted keeper goes on serving exactly that
// tree (the state in the fd store records it, the image pinned by its digest), and one warning
// says what the command line asked instead. Readers and a descriptor held open across the
// restarts see the first image's bytes, every one.
TEST_F(KeeperTest, Issue12AMountRestartedWithAnotherCommandLineServesWhatItServed) {
  FakeServiceManager manager;
  ASSERT_TRUE(manager.bound()) << strerror(errno);
  ImageBuilder builder(Sub("layout"));
  const std::map<std::string, std::string> a_files = {{"same-name", "image A, version 1\n"},
                                                      {"only-in-a", "A alone\n"},
                                                      {"big", SomeBytes(300 << 10, 1)}};
  const std::map<std::string, std::string> b_files = {{"same-name", "image B, version 2!\n"},
                                                      {"only-in-b", "B alone\n"},
                                                      {"big", SomeBytes(300 << 10, 2)}};
  Result<BuiltImage> a = builder.Add(SimpleImage(a_files), "a");
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  ASSERT_TRUE(builder.Add(SimpleImage(b_files), "b").has_value());
  const std::string log = Sub("service.log");
  const std::string image_a = "oci:" + builder.dir() + ":a";
  const std::string image_b = "oci:" + builder.dir() + ":b";
  const std::vector<std::string> args = {"mount", "-f", image_a, Mnt()};
  pid_t keeper = StartFirstService(manager, args, log);
  ASSERT_GT(keeper, 0);
  ASSERT_EQ(manager.store.count("imgfs-state"), 1u) << ReadAll(log);
  {
    // What the state records: the configuration as asked, the image pinned by its digest.
    Result<fs::KeptState> state = StoredState(manager);
    ASSERT_TRUE(state.has_value()) << state.error().ToString();
    EXPECT_EQ(state->mountpoint, Mnt());
    ASSERT_TRUE(state->config.has_value());
    EXPECT_EQ(state->config->image, image_a);
    EXPECT_FALSE(state->config->writable);
    EXPECT_EQ(state->config->upper, "");
    EXPECT_EQ(state->config->root, Root());
    const std::string pin = "@" + a->manifest_digest.String();
    EXPECT_TRUE(state->handover.image.size() > pin.size() && state->handover.image.ends_with(pin))
        << state->handover.image;
  }

  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& [name, content] : a_files) {
    files.emplace_back("/" + name, registry::Digest::Sha256Of(content).hex());
  }
  // Every byte of image A, and nothing of B, through a fresh lookup of every name.
  auto expect_image_a = [&](const std::string& when) {
    for (const auto& [name, content] : a_files) {
      EXPECT_EQ(ReadAll(Mnt() + "/" + name), content) << name << " " << when;
    }
    struct stat st {};
    EXPECT_NE(lstat((Mnt() + "/only-in-b").c_str(), &st), 0) << when;
    EXPECT_EQ(errno, ENOENT) << when;
  };
  expect_image_a("before the restarts");
  const int held = open((Mnt() + "/big").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held, 0) << strerror(errno);
  ReaderLog reads(2);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  readers.emplace_back([&] { ReadFilesLoop(Mnt(), files, 0, stop, &reads); });
  readers.emplace_back([&] { StatLoop(Mnt(), {}, 1, stop, &reads); });
  auto abandon = [&] {
    if (kill(keeper, SIGKILL) == 0) WaitExit(keeper, 30);
    manager.store.clear();
    stop = true;
    for (std::thread& t : readers) t.join();
    close(held);
  };

  const std::string upper = Sub("upper");
  struct Restart {
    std::vector<std::string> args;
    std::vector<std::string> named;  // in the warning
  };
  const std::vector<Restart> restarts = {
      // Another image.
      {{"mount", "-f", image_b, Mnt()}, {"image: kept " + image_a + ", asked " + image_b}},
      // A writable mount asked of a read-only one.
      {{"mount", "-f", "--rw", "--driver", "fuse", "--upper", upper, image_a, Mnt()},
       {"--rw: kept no, asked yes", "--driver: kept none, asked fuse",
        "--upper: kept none, asked " + upper}},
  };
  for (size_t round = 0; round < restarts.size(); ++round) {
    const std::vector<uint64_t> before = reads.Snapshot();
    if (!WaitFor([&] { return reads.AllMovedOn(before); }, 60)) {
      abandon();
      FAIL() << "the readers do not move before kill " << round;
    }
    KillKeeperAndItsDaemon(keeper);
    if (!RestartUntilServing(manager, restarts[round].args, log, reads, &keeper)) {
      abandon();
      FAIL() << "no keeper took the mount over after kill " << round << "\n" << ReadAll(log);
    }
    const std::string text = ReadAll(log);
    EXPECT_EQ(Occurrences(text, "the command line differs from the mount at " + Mnt()), round + 1)
        << text;
    for (const std::string& named : restarts[round].named) {
      EXPECT_NE(text.find(named), std::string::npos) << named << "\n" << text;
    }
    EXPECT_NE(text.find("the kept mount is served as it was"), std::string::npos) << text;
    expect_image_a("after restart " + std::to_string(round));
    std::string data(300 << 10, '\0');
    EXPECT_EQ(pread(held, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()))
        << strerror(errno);
    EXPECT_TRUE(data == a_files.at("big")) << "the descriptor held open reads other bytes";
  }
  // Still the read-only mount it was: no write reaches an upper, which was never made.
  EXPECT_LT(open((Mnt() + "/new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), 0);
  EXPECT_EQ(errno, EROFS);
  struct stat st {};
  EXPECT_NE(stat(upper.c_str(), &st), 0) << upper << " was made";

  // The tag moves to image B; the same command line as at first: the pinned digest is served
  // (and nothing differs, so nothing is logged).
  ASSERT_TRUE(builder.Add(SimpleImage(b_files), "a").has_value());
  KillKeeperAndItsDaemon(keeper);
  if (!RestartUntilServing(manager, args, log, reads, &keeper)) {
    abandon();
    FAIL() << "no keeper took the mount over after the tag moved\n" << ReadAll(log);
  }
  EXPECT_EQ(Occurrences(ReadAll(log), "the command line differs"), restarts.size());
  expect_image_a("after the tag moved");

  stop = true;
  for (std::thread& t : readers) t.join();
  close(held);
  const std::vector<std::string> failures = reads.Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  EXPECT_GT(reads.done(0), 0u);
  Umount();
  EXPECT_EQ(WaitExit(keeper, 60), 0) << ReadAll(log);
  EXPECT_TRUE(manager.HandleUntil([&] { return manager.store.empty(); }, 60))
      << manager.store.size() << " entries left";
}

// Issue 12, writable: the journal of a kept writable mount belongs to its upper. A restarted
// service whose command line names another upper, or no --rw at all, goes on with the kept
// upper: a descriptor held open writes on into it, and the other upper is never made.
TEST_F(KeeperTest, Issue12AWritableMountKeepsItsUpperWhateverTheCommandLineSays) {
  FakeServiceManager manager;
  ASSERT_TRUE(manager.bound()) << strerror(errno);
  const std::string log = Sub("service.log");
  const std::string upper = Sub("upper");
  const std::string other_upper = Sub("other-upper");
  const std::string image = "oci:" + FixturePath("tiny-gzip:latest");
  pid_t keeper = StartFirstService(
      manager, {"mount", "-f", "--rw", "--driver", "fuse", "--upper", upper, image, Mnt()}, log);
  ASSERT_GT(keeper, 0);
  ASSERT_EQ(manager.store.count("imgfs-state"), 1u) << ReadAll(log);
  {
    Result<fs::KeptState> state = StoredState(manager);
    ASSERT_TRUE(state.has_value()) << state.error().ToString();
    ASSERT_TRUE(state->config.has_value());
    EXPECT_TRUE(state->config->writable);
    EXPECT_EQ(state->config->driver, "fuse");
    EXPECT_EQ(state->config->upper, upper);
  }
  const int held = open((Mnt() + "/held").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(held, 0) << strerror(errno);
  ASSERT_EQ(pwrite(held, "one", 3, 0), 3) << strerror(errno);
  ASSERT_EQ(fsync(held), 0) << strerror(errno);
  ReaderLog reads(1);
  std::atomic<bool> stop{false};
  std::thread looker([&] { StatLoop(Mnt(), {}, 0, stop, &reads); });
  auto abandon = [&] {
    if (kill(keeper, SIGKILL) == 0) WaitExit(keeper, 30);
    manager.store.clear();
    stop = true;
    looker.join();
    close(held);
  };

  const std::vector<std::pair<std::vector<std::string>, std::string>> restarts = {
      {{"mount", "-f", "--rw", "--driver", "fuse", "--upper", other_upper, image, Mnt()},
       "--upper: kept " + upper + ", asked " + other_upper},
      {{"mount", "-f", image, Mnt()}, "--rw: kept yes, asked no"},
      // The same upper spelled otherwise is no difference: no warning.
      {{"mount", "-f", "--rw", "--driver", "fuse", "--upper", Sub(".") + "/./upper/", image, Mnt()},
       ""},
  };
  size_t warnings = 0;
  for (size_t round = 0; round < restarts.size(); ++round) {
    const std::vector<uint64_t> before = reads.Snapshot();
    if (!WaitFor([&] { return reads.AllMovedOn(before); }, 60)) {
      abandon();
      FAIL() << "the lookups do not move before kill " << round;
    }
    KillKeeperAndItsDaemon(keeper);
    if (!RestartUntilServing(manager, restarts[round].first, log, reads, &keeper)) {
      abandon();
      FAIL() << "no keeper took the writable mount over after kill " << round << "\n"
             << ReadAll(log);
    }
    const std::string text = ReadAll(log);
    if (!restarts[round].second.empty()) ++warnings;
    EXPECT_EQ(Occurrences(text, "the command line differs"), warnings) << text;
    EXPECT_NE(text.find(restarts[round].second), std::string::npos) << text;
    const std::string part = "k" + std::to_string(round);
    EXPECT_EQ(pwrite(held, part.data(), part.size(), static_cast<off_t>(3 + 2 * round)),
              static_cast<ssize_t>(part.size()))
        << strerror(errno);
    EXPECT_EQ(fsync(held), 0) << strerror(errno);
    EXPECT_TRUE(WriteFileAtomic(Mnt() + "/after" + std::to_string(round), "round " + part).ok());
  }
  stop = true;
  looker.join();
  const std::vector<std::string> failures = reads.Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  close(held);
  Umount();
  EXPECT_EQ(WaitExit(keeper, 60), 0) << ReadAll(log);
  EXPECT_EQ(ReadAll(upper + "/held"), "onek0k1k2");
  EXPECT_EQ(ReadAll(upper + "/after0"), "round k0");
  EXPECT_EQ(ReadAll(upper + "/after1"), "round k1");
  EXPECT_EQ(ReadAll(upper + "/after2"), "round k2");
  struct stat st {};
  EXPECT_NE(stat(other_upper.c_str(), &st), 0) << other_upper << " was made";
  EXPECT_TRUE(manager.HandleUntil([&] { return manager.store.empty(); }, 60))
      << manager.store.size() << " entries left";
}

// Issue 12, upgrade in place: a state an older imgfs stored (format 1: the mountpoint alone)
// is still taken over, with the command line's configuration as that imgfs did, and a log
// line says so. The keeper started again leaves the stored state as it found it.
TEST_F(KeeperTest, Issue12AStateOfTheFormerFormatIsTakenOverWithTheCommandLine) {
  FakeServiceManager manager;
  ASSERT_TRUE(manager.bound()) << strerror(errno);
  const std::string log = Sub("service.log");
  const std::vector<std::string> args = {"mount", "-f", "oci:" + FixturePath("tiny-gzip:latest"),
                                         Mnt()};
  pid_t keeper = StartFirstService(manager, args, log);
  ASSERT_GT(keeper, 0);
  ASSERT_EQ(manager.store.count("imgfs-state"), 1u) << ReadAll(log);
  // The state as the imgfs before this one wrote it.
  Result<fs::KeptState> state = StoredState(manager);
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  const std::string old_text =
      "IMGFS-KEPT 1\n" + fs::EncodeStartRecord(state->mountpoint, &state->handover);
  Result<UniqueFd> old_state = fs::KeptStateMemfd(old_text);
  ASSERT_TRUE(old_state.has_value()) << old_state.error().ToString();
  manager.store["imgfs-state"] = std::move(*old_state);

  const auto files = FilesOf(ParseListing(ReadAll(FixturePath("tiny.expected.txt"))));
  ReaderLog reads(1);
  std::atomic<bool> stop{false};
  std::thread reader([&] { ReadFilesLoop(Mnt(), files, 0, stop, &reads); });
  // Once the reader moved on, its close(2)s send no FLUSH any more (the daemon said it has
  // none): the service forked below then closes its copies at exec without waiting for a
  // daemon.
  const std::vector<uint64_t> before = reads.Snapshot();
  const bool moved = WaitFor([&] { return reads.AllMovedOn(before); }, 60);
  if (moved) KillKeeperAndItsDaemon(keeper);
  if (!moved || !RestartUntilServing(manager, args, log, reads, &keeper)) {
    if (kill(keeper, SIGKILL) == 0) WaitExit(keeper, 30);
    manager.store.clear();
    stop = true;
    reader.join();
    FAIL() << "no keeper took the mount over from a state of format 1\n" << ReadAll(log);
  }
  stop = true;
  reader.join();
  const std::string text = ReadAll(log);
  EXPECT_NE(text.find("in the state an older imgfs wrote (the mountpoint alone): it is served "
                      "with this command line's configuration"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("the command line differs"), std::string::npos) << text;
  const std::vector<std::string> failures = reads.Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  for (const auto& [path, sha] : files) {
    EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + path)).hex(), sha) << path;
  }
  Result<fs::KeptState> kept = StoredState(manager);
  ASSERT_TRUE(kept.has_value()) << kept.error().ToString();
  EXPECT_FALSE(kept->config.has_value());
  Umount();
  EXPECT_EQ(WaitExit(keeper, 60), 0) << text;
  EXPECT_TRUE(manager.HandleUntil([&] { return manager.store.empty(); }, 60))
      << manager.store.size() << " entries left";
}

// `imgfs mount --restart DIR` upgrades a layer store as it does a mount: its keeper (found by
// its record: a layer store has no mount lease) starts a daemon of the binary installed now,
// which takes the live mount over; readers of every file see no failure.
TEST_F(KeeperTest, ReadersOfALayerStoreNeverSeeARestart) {
  RegistryServer* reg = SharedRegistry();
  ASSERT_NE(reg, nullptr);
  const std::string name = "lab/keeper-restart:1";
  ASSERT_TRUE(reg->PushOciLayout(FixturePath("tiny-estargz"), "latest", name).ok());
  ProcessResult started = Imgfs({"layer-store", Mnt()});
  ASSERT_EQ(started.exit_code, 0) << started.Describe();
  ASSERT_TRUE(IsMounted(Mnt()));
  const std::string ref_dir = Mnt() + "/" + Base64(reg->host_port() + "/" + name);

  // The layers, by their TOC digests (names are resolved on lookup, never listed).
  const std::string layout = FixturePath("tiny-estargz");
  auto blob = [&](const std::string& digest) {
    return nlohmann::json::parse(ReadAll(layout + "/blobs/sha256/" + digest.substr(7)), nullptr,
                                 false);
  };
  auto index = nlohmann::json::parse(ReadAll(layout + "/index.json"), nullptr, false);
  const auto manifest = blob(index["manifests"][0]["digest"]);
  std::map<std::string, std::string> files;  // path → content
  std::string layer_dir;
  for (const auto& l : manifest["layers"]) {
    const std::string dir =
        ref_dir + "/" +
        l["annotations"]["containerd.io/snapshot/stargz/toc.digest"].get<std::string>();
    if (layer_dir.empty()) layer_dir = dir;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
      if (e.is_regular_file() && !e.is_symlink()) files[e.path()] = ReadAll(e.path());
    }
  }
  ASSERT_GT(files.size(), 8u);
  // A reference: its lease names the keeper.
  ASSERT_EQ(open((layer_dir + "/use").c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644), -1);
  ASSERT_EQ(errno, ENOENT);
  const pid_t keeper = MountDaemonPid(Root(), layer_dir);
  ASSERT_GT(keeper, 0);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      while (!stop) {
        for (const auto& [path, content] : files) {
          const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
          std::string error = fd < 0 ? std::string("open: ") + strerror(errno) : "";
          const std::string data = fd < 0 ? "" : ReadFromDaemon(fd, &error);
          if (fd >= 0) close(fd);
          if (!error.empty() || data != content) {
            std::scoped_lock lock(mu);
            if (failures.size() < 20) failures.push_back(path + ": " + error);
          }
          ++ops;
        }
      }
    });
  }
  char binary[PATH_MAX];
  ASSERT_NE(realpath(kImgfsBinary, binary), nullptr);
  constexpr int kRestarts = 3;
  for (int i = 0; i < kRestarts; ++i) {
    const uint64_t before = ops.load();
    ASSERT_TRUE(WaitFor([&] { return ops.load() > before + 3; }, 120));
    const pid_t daemon = ChildOf(keeper);
    ASSERT_GT(daemon, 0);
    ProcessResult r = Imgfs({"mount", "--restart", Mnt()}, 300);
    EXPECT_EQ(r.exit_code, 0) << "restart " << i << ": " << r.Describe();
    EXPECT_FALSE(ProcessRuns(daemon)) << "the old daemon still runs after restart " << i;
    const pid_t next = ChildOf(keeper);
    EXPECT_NE(next, daemon);
    std::error_code ec;
    EXPECT_EQ(std::filesystem::read_symlink("/proc/" + std::to_string(next) + "/exe", ec).string(),
              binary);
    const uint64_t after = ops.load();
    if (!WaitFor([&] { return ops.load() > after + 3; }, 120)) {
      kill(keeper, SIGKILL);  // frees the readers: the connection ends with its last holder
      stop = true;
      for (std::thread& t : readers) t.join();
      FAIL() << "the readers are stuck after restart " << i;
    }
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  {
    std::scoped_lock lock(mu);
    EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  }
  std::cout << "readers: " << ops.load() << " reads across " << kRestarts << " restarts\n";
  EXPECT_EQ(rmdir(layer_dir.c_str()) == 0 ? 0 : errno, ENOENT);  // drops the reference
  Umount();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 30)) << "keeper " << keeper;
  // The keeper's record went with it.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(Root() + "/layer-stores", ec)) {
    EXPECT_NE(e.path().extension(), ".keeper") << e.path();
  }
}

// `imgfs stats` of a kept mount goes on across takeovers: the request counts live in memory
// the keeper shares with every daemon, and the takeovers are counted.
TEST_F(KeeperTest, StatsSurviveATakeover) {
  MountOrDie({"oci:" + FixturePath("tiny-gzip:latest")});
  auto stats = [&] {
    ProcessResult r = Imgfs({"stats", "--format", "json", Mnt()}, 30);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return r.exit_code == 0 && j.is_object() && j.contains("fuse") ? j : nlohmann::json();
  };
  auto listing = ParseListing(ReadAll(FixturePath("tiny.expected.txt")));
  for (const auto& [path, e] : listing) {
    if (e.type == 'f') {
      EXPECT_EQ(registry::Digest::Sha256Of(ReadAll(Mnt() + path)).hex(), e.content) << path;
    }
  }
  const nlohmann::json before = stats();
  ASSERT_TRUE(before.is_object());
  const pid_t keeper = DaemonPid();
  const pid_t daemon = before.value("pid", 0);
  ASSERT_GT(daemon, 0);
  ASSERT_EQ(daemon, ChildOf(keeper));
  ASSERT_GT(before["fuse"]["requests"].value("read", 0), 0);

  ASSERT_EQ(kill(daemon, SIGKILL), 0);
  nlohmann::json after;
  ASSERT_TRUE(WaitFor(
      [&] {
        after = stats();
        return after.is_object() && after.value("pid", 0) != daemon && after.value("pid", 0) != 0;
      },
      120));
  for (const auto& [name, n] : before["fuse"]["requests"].items()) {
    EXPECT_GE(after["fuse"]["requests"].value(name, 0), n.get<uint64_t>()) << name;
  }
  EXPECT_GE(after["fuse"]["largest_read_bytes"].get<uint64_t>(),
            before["fuse"]["largest_read_bytes"].get<uint64_t>());
  EXPECT_EQ(after["fuse"]["takeovers"].get<uint64_t>(),
            before["fuse"]["takeovers"].get<uint64_t>() + 1);
  std::cout << "before: " << before["fuse"].dump() << "\nafter: " << after["fuse"].dump() << "\n";
  Umount();
  EXPECT_TRUE(WaitFor([&] { return !ProcessRuns(keeper); }, 30)) << "keeper " << keeper;
}

}  // namespace
}  // namespace imgfs::testing
