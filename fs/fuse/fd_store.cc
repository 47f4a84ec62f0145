// imgfs — systemd's file-descriptor store (see fd_store.h).
#include "fs/fuse/fd_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "base/fd_passing.h"
#include "base/log.h"
#include "registry/digest.h"
#include "registry/reference.h"

namespace imgfs::fs {
namespace {

// The state's first line: its format. Format 1 (the mountpoint and the handover) was written
// by imgfs before the kept configuration; it is read, never written.
constexpr std::string_view kStateTagV1 = "IMGFS-KEPT 1\n";
constexpr std::string_view kStateTag = "IMGFS-KEPT 2\n";
constexpr std::string_view kConfigTag = "CONFIG ";

// A decimal without sign or leading zeros, nullopt otherwise.
std::optional<int64_t> ParseDecimal(const char* text) {
  if (text == nullptr) return std::nullopt;
  const std::string_view s(text);
  if (s.empty() || s.size() > 10 || (s[0] == '0' && s.size() > 1)) return std::nullopt;
  int64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value < 0) return std::nullopt;
  return value;
}

}  // namespace

std::string ServiceManagerSocket() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  return socket == nullptr ? std::string() : std::string(socket);
}

Status NotifyServiceManager(const std::string& socket, std::string_view state,
                            const std::vector<int>& fds) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() < 2 || socket.size() >= sizeof(addr.sun_path) ||
      (socket[0] != '/' && socket[0] != '@')) {
    return Status::InvalidArgument("NOTIFY_SOCKET \"" + socket + "\" is not a socket address");
  }
  std::memcpy(addr.sun_path, socket.data(), socket.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket.size());
  if (socket[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract: exactly the name's bytes, no terminator
  } else {
    ++len;
  }
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.IsValid()) return Status::FromErrno(errno, "socket for NOTIFY_SOCKET");
  return SendWithFds(sock.get(), state, fds, "notifying the service manager",
                     reinterpret_cast<const sockaddr*>(&addr), len);
}

bool ValidFdName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    if (c < 0x21 || c > 0x7e || c == ':') return false;
  }
  return true;
}

Result<std::vector<std::string>> ParseListenFdNames(std::string_view names, size_t count) {
  if (count > kMaxListenFds) {
    return Status::Corrupt("LISTEN_FDS passes " + std::to_string(count) + " descriptors (at most " +
                           std::to_string(kMaxListenFds) + ")");
  }
  std::vector<std::string> out;
  if (count == 0) {
    if (!names.empty()) return Status::Corrupt("LISTEN_FDNAMES names descriptors nobody passed");
    return out;
  }
  if (names.size() > count * 256) return Status::Corrupt("LISTEN_FDNAMES is too long");
  size_t start = 0;
  for (;;) {
    const size_t colon = names.find(':', start);
    const std::string_view name = names.substr(
        start, colon == std::string_view::npos ? std::string_view::npos : colon - start);
    if (!ValidFdName(name) || out.size() == count) {
      return Status::Corrupt("malformed LISTEN_FDNAMES");
    }
    out.emplace_back(name);
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (out.size() != count) return Status::Corrupt("LISTEN_FDNAMES does not name every descriptor");
  return out;
}

Result<std::vector<std::pair<std::string, UniqueFd>>> TakeListenFds() {
  std::vector<std::pair<std::string, UniqueFd>> out;
  const char* pid_text = std::getenv("LISTEN_PID");
  if (pid_text == nullptr) return out;
  const std::optional<int64_t> pid = ParseDecimal(pid_text);
  if (!pid.has_value()) return Status::Corrupt("malformed LISTEN_PID");
  if (*pid != ::getpid()) return out;  // meant for another process (our parent's)
  const std::optional<int64_t> count = ParseDecimal(std::getenv("LISTEN_FDS"));
  if (!count.has_value()) return Status::Corrupt("malformed LISTEN_FDS");
  const char* names_text = std::getenv("LISTEN_FDNAMES");
  Result<std::vector<std::string>> names =
      ParseListenFdNames(names_text == nullptr ? "" : names_text, static_cast<size_t>(*count));
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!names.has_value()) return names.error();
  for (size_t i = 0; i < names->size(); ++i) {
    const int fd = 3 + static_cast<int>(i);  // SD_LISTEN_FDS_START
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
      return Status::Corrupt("LISTEN_FDS passes descriptor " + std::to_string(fd) +
                             ", which is not open");
    }
    out.emplace_back((*names)[i], UniqueFd(fd));
  }
  return out;
}

bool IsPinnedImage(std::string_view image) {
  if (registry::Digest::Parse(image).has_value()) return true;
  Result<registry::Reference> ref = registry::Reference::Parse(image);
  return ref.has_value() && ref->digest().has_value();
}

Result<std::string> EncodeKeptState(std::string_view mountpoint, const KeptConfig& config,
                                    const Handover& handover) {
  if (!IsPinnedImage(handover.image)) {
    return Status::InvalidArgument("the image \"" + handover.image +
                                   "\" is not pinned by a manifest digest");
  }
  IMGFS_ASSIGN_OR_RETURN(std::string encoded, EncodeKeptConfig(config));
  std::string text = std::string(kStateTag) + std::string(kConfigTag) +
                     std::to_string(encoded.size()) + "\n" + encoded +
                     EncodeStartRecord(mountpoint, &handover);
  if (text.size() > kMaxKeptStateBytes) {
    return Status::InvalidArgument("the kept state exceeds " + std::to_string(kMaxKeptStateBytes) +
                                   " bytes");
  }
  return text;
}

Result<KeptState> ParseKeptState(std::string_view text, UniqueFd fuse_fd) {
  auto corrupt = [] { return Status::Corrupt("malformed kept state"); };
  if (text.size() > kMaxKeptStateBytes) return corrupt();
  std::optional<KeptConfig> config;
  std::string_view record;
  if (text.rfind(kStateTagV1, 0) == 0) {
    record = text.substr(kStateTagV1.size());
  } else if (text.rfind(kStateTag, 0) == 0) {
    // "CONFIG <n>\n": n without sign or leading zeros, then the configuration's n bytes.
    std::string_view rest = text.substr(kStateTag.size());
    const size_t eol = rest.find('\n');
    if (rest.rfind(kConfigTag, 0) != 0 || eol == std::string_view::npos) return corrupt();
    const std::string_view digits = rest.substr(kConfigTag.size(), eol - kConfigTag.size());
    size_t size = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), size);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
        (digits[0] == '0' && digits.size() > 1) || size > rest.size() - eol - 1) {
      return corrupt();
    }
    Result<KeptConfig> parsed = ParseKeptConfig(rest.substr(eol + 1, size));
    if (!parsed.has_value()) return parsed.error().WithContext("malformed kept state");
    config = std::move(*parsed);
    record = rest.substr(eol + 1 + size);
  } else {
    return corrupt();
  }
  Result<DaemonStart> start = ParseStartRecord(record, std::move(fuse_fd));
  if (!start.has_value()) return corrupt();
  if (!start->takeover) return Status::Corrupt("a kept state without its connection");
  if (config.has_value() && !IsPinnedImage(start->handover.image)) {
    return Status::Corrupt("a kept state whose image is not pinned by a manifest digest");
  }
  KeptState state;
  state.mountpoint = std::move(start->config);
  state.config = std::move(config);
  state.fuse_fd = std::move(start->fuse_fd);
  state.handover = std::move(start->handover);
  state.handover.fuse_fd = state.fuse_fd.get();
  return state;
}

Result<UniqueFd> KeptStateMemfd(std::string_view text) {
  UniqueFd fd(::memfd_create("imgfs-kept-state", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.IsValid()) return Status::FromErrno(errno, "memfd_create");
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::FromErrno(errno, "writing the kept state");
    done += static_cast<size_t>(n);
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) !=
      0) {
    return Status::FromErrno(errno, "sealing the kept state");
  }
  return fd;
}

namespace {

// At most kMaxKeptStateBytes + 1 bytes of `fd` from offset 0.
Result<std::string> ReadBounded(int fd) {
  std::string out(kMaxKeptStateBytes + 1, '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading the kept state");
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

// Tells the manager to drop the entries `names` (a mount that ended: nothing to take over).
void DropFromStore(const std::vector<std::string>& names) {
  const std::string socket = ServiceManagerSocket();
  if (socket.empty()) return;
  for (const std::string& name : names) {
    Status st = NotifyServiceManager(socket, "FDSTOREREMOVE=1\nFDNAME=" + name);
    if (!st.ok()) IMGFS_LOG(kWarning) << st.ToString();
  }
}

}  // namespace

Result<std::optional<StoredConnection>> RecoverStoredConnection(const std::string& mountpoint) {
  IMGFS_ASSIGN_OR_RETURN(auto fds, TakeListenFds());
  UniqueFd fuse_fd;
  UniqueFd state_fd;
  StoredConnection stored;
  for (auto& [name, fd] : fds) {
    stored.names.push_back(name);
    if (name == kFuseFdName && !fuse_fd.IsValid()) {
      fuse_fd = std::move(fd);
    } else if (name == kStateFdName && !state_fd.IsValid()) {
      state_fd = std::move(fd);
    } else if (name == kCountsFdName && !stored.counts.IsValid()) {
      stored.counts = std::move(fd);
    } else {
      stored.extra.emplace_back(name, std::move(fd));
    }
  }
  if (!fuse_fd.IsValid() && !state_fd.IsValid()) return std::optional<StoredConnection>();
  if (!fuse_fd.IsValid()) {
    return Status::Corrupt("the service manager passed back " + std::string(kStateFdName) +
                           " without " + std::string(kFuseFdName));
  }
  if (ConnectionGone(fuse_fd.get())) {
    IMGFS_LOG(kInfo) << "the kept connection of " << mountpoint << " has ended: mounting anew";
    DropFromStore(stored.names);
    return std::optional<StoredConnection>();
  }
  Result<KeptState> state =
      Status::Corrupt("the service manager passed back " + std::string(kFuseFdName) + " without " +
                      std::string(kStateFdName));
  if (state_fd.IsValid()) {
    Result<std::string> text = ReadBounded(state_fd.get());
    // A copy of the descriptor: a state that does not parse keeps the connection.
    UniqueFd copy(fcntl(fuse_fd.get(), F_DUPFD_CLOEXEC, 3));
    if (!text.has_value()) {
      state = text.error();
    } else if (!copy.IsValid()) {
      state = Status::FromErrno(errno, "copying the kept connection's descriptor");
    } else {
      state = ParseKeptState(*text, std::move(copy));
    }
  }
  if (!state.has_value()) {
    stored.unusable = state.error().WithContext("the service manager's fd store");
    stored.state.mountpoint = mountpoint;
    stored.state.fuse_fd = std::move(fuse_fd);
    return std::optional<StoredConnection>(std::move(stored));
  }
  if (state->mountpoint != mountpoint) {
    IMGFS_LOG(kWarning) << "the service manager kept the connection of " << state->mountpoint
                        << ", not of " << mountpoint << ": it is dropped";
    DropFromStore(stored.names);
    return std::optional<StoredConnection>();
  }
  stored.state = std::move(*state);
  return std::optional<StoredConnection>(std::move(stored));
}

int ServeUnusableConnection(StoredConnection stored) {
  const std::string& mountpoint = stored.state.mountpoint;
  IMGFS_LOG(kError) << "the service manager passed back the live connection of " << mountpoint
                    << ", but not a state imgfs can take it over with ("
                    << stored.unusable.ToString() << ")";
  const std::string socket = ServiceManagerSocket();
  if (!socket.empty()) {
    Status st = NotifyServiceManager(socket, "READY=1");
    if (!st.ok()) IMGFS_LOG(kWarning) << st.ToString();
  }
  ServeErrorsUntilUnmounted(stored.state.fuse_fd.get(), mountpoint);
  DropFromStore(stored.names);
  return kKeeperFailed;
}

}  // namespace imgfs::fs
