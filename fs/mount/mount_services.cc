// imgfs — background services of a mount daemon (see mount_services.h).
#include "fs/mount/mount_services.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/thread.h"
#include "base/unique_fd.h"
#include "cache/file_lock.h"
#include "cache/leases.h"
#include "fs/layer/layer_index.h"
#include "registry/manifest.h"

namespace imgfs::fs {
namespace {

using nlohmann::json;

// Longest request line a client may send (the protocol has one word).
constexpr size_t kMaxRequestBytes = 256;
// A client has this long in all, from accept to the end of its request line, however it
// trickles its bytes: the control thread serves clients one after another, so a stuck or
// slow `imgfs stats` (or a local user on the socket) holds it at most this long.
constexpr auto kClientDeadline = std::chrono::milliseconds(2000);
// How often the size-cap thread looks for a changed config.json (one stat(2)).
constexpr std::chrono::seconds kConfigPollPeriod{1};

// A sockaddr_un for `path`. sun_path holds 107 characters; a longer path is reached through
// its directory opened as `*dir_fd` (/proc/self/fd/N/NAME).
Result<sockaddr_un> UnixAddress(const std::string& path, UniqueFd* dir_fd) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string target = path;
  if (target.size() >= sizeof(addr.sun_path)) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return Status::InvalidArgument("socket path too long");
    std::string dir = slash == 0 ? "/" : path.substr(0, slash);
    int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open " + dir);
    *dir_fd = UniqueFd(fd);
    target = "/proc/self/fd/" + std::to_string(fd) + "/" + path.substr(slash + 1);
    if (target.size() >= sizeof(addr.sun_path)) {
      return Status::InvalidArgument("socket name too long: " + path);
    }
  }
  std::memcpy(addr.sun_path, target.c_str(), target.size() + 1);
  return addr;
}

// Sends all of `data` on a socket without raising SIGPIPE when the peer is gone (a daemon
// must not die because an `imgfs stats` client went away).
Status SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "send");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

bool WaitFd(int fd, decltype(pollfd::events) events, int timeout_ms) {
  pollfd p{fd, events, 0};
  int n;
  do {
    n = ::poll(&p, 1, timeout_ms);
  } while (n < 0 && errno == EINTR);
  return n > 0;
}

struct LayerInfo {
  std::string digest;
  int64_t size = 0;
};

class Services : public MountServices {
 public:
  explicit Services(const MountServicesOptions& options) : options_(options) {}

  ~Services() override {
    {
      std::scoped_lock lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (wake_.IsValid()) {
      uint64_t one = 1;
      ssize_t ignored = ::write(wake_.get(), &one, sizeof(one));
      (void)ignored;
    }
    if (control_.joinable()) control_.join();
    if (cap_.joinable()) cap_.join();
    if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
  }

  Status Init() {
    // The image this mount serves: last use, and the layer list for stats.
    Result<std::vector<cache::LeaseInfo>> leases = cache::ListLiveLeases(*options_.store);
    if (leases.has_value()) {
      for (const cache::LeaseInfo& l : *leases) {
        if (l.id == options_.lease_id) manifest_ = l.manifest;
      }
    }
    if (!manifest_.empty()) {
      Status touched = cache::TouchImage(*options_.store, manifest_);
      if (!touched.ok()) IMGFS_LOG(kInfo) << "recording last use: " << touched.ToString();
      auto bytes = options_.store->ReadBlob(manifest_);
      if (bytes.has_value()) {
        auto m = registry::DecodeManifest(*bytes);
        if (m.has_value()) {
          for (const auto& l : m->layers) layers_.push_back({l.digest.String(), l.size});
        }
      }
    }
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return Status::FromErrno(errno, "eventfd");
    wake_ = UniqueFd(efd);
    Status listening = Listen();
    if (listening.ok()) {
      control_ = StartThread("imgfs-control", [this] {
        ControlLoop();
        return Status::Ok();
      });
    } else {
      IMGFS_LOG(kWarning) << "imgfs stats will not see this mount: " << listening.ToString();
    }
    cap_ = StartThread("imgfs-size-cap", [this] {
      CapLoop();
      return Status::Ok();
    });
    return Status::Ok();
  }

 private:
  Status Listen() {
    if (options_.lease_id.empty()) return Status::InvalidArgument("no lease id");
    std::string path = ControlSocketPath(*options_.store, options_.lease_id);
    IMGFS_RETURN_IF_ERROR(MakeDirs(options_.store->Subdir("control")));
    UniqueFd dir_fd;
    IMGFS_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(path, &dir_fd));
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket");
    listen_ = UniqueFd(fd);
    ::unlink(path.c_str());
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
      return Status::FromErrno(errno, "bind " + path);
    }
    socket_path_ = path;
    if (::listen(fd, 8) != 0) return Status::FromErrno(errno, "listen " + path);
    return Status::Ok();
  }

  void ControlLoop() {
    for (;;) {
      pollfd fds[2] = {{listen_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      int n = ::poll(fds, 2, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        IMGFS_LOG(kWarning) << "control socket: poll: " << std::strerror(errno);
        return;
      }
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      int c = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      // One client's failure (an exception while answering it) never ends the thread.
      UniqueFd client(c);
      Status served = RunGuarded("control socket", [&] {
        Serve(std::move(client));
        return Status::Ok();
      });
      (void)served;  // logged by RunGuarded
    }
  }

  void Serve(UniqueFd client) {
    const auto deadline = std::chrono::steady_clock::now() + kClientDeadline;
    std::string request;
    char buf[64];
    while (request.find('\n') == std::string::npos && request.size() < kMaxRequestBytes) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0 || !WaitFd(client.get(), POLLIN, static_cast<int>(left))) return;
      ssize_t n = ::read(client.get(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string word = request.substr(0, request.find('\n'));
    json reply;
    if (word == "stats" || word.empty()) {
      reply = StatsJson();
    } else {
      // The word is the client's bytes, maybe not UTF-8: dump() replaces what is not.
      reply = {{"error", "unknown request '" + word + "' (known: stats)"}};
    }
    // Diagnostics, not data: bytes that are not UTF-8 (a request, a Latin-1 mountpoint)
    // become U+FFFD instead of an exception.
    std::string text = reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    Status st = SendAll(client.get(), text);
    if (!st.ok()) IMGFS_LOG(kInfo) << "control socket: " << st.ToString();
  }

  json StatsJson() const {
    json j;
    j["version"] = 1;
    j["mountpoint"] = options_.mountpoint;
    j["reference"] = options_.reference;
    j["lease"] = options_.lease_id;
    j["pid"] = ::getpid();
    j["manifest"] = manifest_.String();
    j["tree"] = options_.tree_stored ? "stored" : "merged";
    const ImageFilesystem* fs = options_.filesystem;
    j["bytes_read"] = fs != nullptr ? fs->bytes_read() : 0;
    j["read_errors"] = fs != nullptr ? fs->read_errors() : 0;
    json layers = json::array();
    if (fs != nullptr) {
      std::vector<LayerStats> stats = fs->layer_stats();
      for (size_t i = 0; i < stats.size(); ++i) {
        const LayerStats& s = stats[i];
        json l;
        l["digest"] = i < layers_.size() ? layers_[i].digest : std::string();
        int64_t size = i < layers_.size() ? layers_[i].size : 0;
        if (size <= 0) size = static_cast<int64_t>(s.blob_size);
        l["size"] = size;
        l["lazy"] = s.lazy;
        l["bytes_fetched"] = s.bytes_fetched;
        l["requests"] = s.requests;
        l["chunks_fetched"] = s.chunks_fetched;
        l["cache_hits"] = s.cache_hits;
        l["errors"] = s.errors;
        layers.push_back(std::move(l));
      }
    }
    j["layers"] = std::move(layers);
    if (options_.fuse_stats) {
      FuseSessionStats f = options_.fuse_stats();
      json requests = json::object();
      for (const auto& [name, n] : f.requests) requests[name] = n;
      j["fuse"] = {{"requests", std::move(requests)},
                   {"no_open", f.no_open},
                   {"no_opendir", f.no_opendir},
                   {"largest_read_bytes", f.largest_read_bytes},
                   {"takeovers", f.takeovers}};
    }
    return j;
  }

  // The size cap (see the header): checked every prune_interval_seconds, and at once when
  // config.json changes (a cheap stat per second), so `imgfs cache set` applies to running
  // mounts without waiting for a long interval.
  void CapLoop() {
    const std::string config_path =
        options_.store->root() + "/" + std::string(cache::kCacheConfigFile);
    auto config_stamp = [&config_path] {
      struct stat st {};
      if (::stat(config_path.c_str(), &st) != 0) return std::pair<int64_t, int64_t>{0, 0};
      return std::pair<int64_t, int64_t>{st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
    };
    auto last_stamp = config_stamp();
    auto next_check = std::chrono::steady_clock::now();
    for (;;) {
      auto now = std::chrono::steady_clock::now();
      auto stamp = config_stamp();
      if (now >= next_check || stamp != last_stamp) {
        last_stamp = stamp;
        int interval = 60;
        Result<cache::CacheConfig> config = cache::LoadCacheConfig(*options_.store);
        if (config.has_value()) {
          interval = config->prune_interval_seconds;
          if (config->max_size_bytes.has_value()) EnforceCap(*config->max_size_bytes);
        } else {
          IMGFS_LOG(kWarning) << "size cap: " << config.error().ToString();
        }
        next_check = std::chrono::steady_clock::now() + std::chrono::seconds(interval);
      }
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, kConfigPollPeriod, [this] { return stopping_; })) return;
    }
  }

  void EnforceCap(int64_t max_bytes) {
    Result<int64_t> size = cache::StoreSizeBytes(*options_.store);
    if (!size.has_value()) {
      IMGFS_LOG(kWarning) << "size cap: " << size.error().ToString();
      return;
    }
    if (*size <= max_bytes) return;
    // Skip this round while a pull or another collection holds gc.lock, rather than block
    // (and delay the daemon's exit at umount) behind it; the next check tries again.
    Result<std::optional<cache::FileLock>> probe = cache::FileLock::TryAcquire(
        options_.store->root() + "/gc.lock", cache::FileLock::Mode::kExclusive);
    if (!probe.has_value() || !probe->has_value()) {
      IMGFS_LOG(kInfo) << "size cap: the store is busy; pruning at the next check";
      return;
    }
    probe->reset();
    cache::UsageOptions usage;
    usage.chunk_lister = LayerIndexChunkLister();
    Result<cache::PruneReport> pruned = cache::Prune(*options_.store, max_bytes, usage);
    if (!pruned.has_value()) {
      IMGFS_LOG(kWarning) << "size cap: prune: " << pruned.error().ToString();
      return;
    }
    IMGFS_LOG(kInfo) << "size cap " << max_bytes << " bytes: store " << pruned->before_bytes
                     << " -> " << pruned->after_bytes << " bytes (" << pruned->chunks_deleted
                     << " chunks, " << pruned->layers_evicted << " layer blobs, "
                     << pruned->images_removed.size() << " images evicted)";
    if (!pruned->under_limit) {
      IMGFS_LOG(kWarning) << "size cap: the store stays above " << max_bytes
                          << " bytes: the rest is pinned by mounts and containers";
    }
  }

  MountServicesOptions options_;
  registry::Digest manifest_;
  std::vector<LayerInfo> layers_;
  UniqueFd listen_;
  UniqueFd wake_;
  std::string socket_path_;
  std::thread control_;
  std::thread cap_;
  // Leaf lock: guards only stopping_, never held across I/O or a prune.
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
};

}  // namespace

Result<std::unique_ptr<MountServices>> MountServices::Start(const MountServicesOptions& options) {
  if (options.store == nullptr) return Status::InvalidArgument("mount services need a store");
  auto services = std::make_unique<Services>(options);
  IMGFS_RETURN_IF_ERROR(services->Init());
  return std::unique_ptr<MountServices>(std::move(services));
}

std::string ControlSocketPath(const cache::Store& store, const std::string& lease_id) {
  return store.Subdir("control") + "/" + lease_id + ".sock";
}

Result<std::string> RequestMountStats(const std::string& socket_path, int timeout_ms) {
  UniqueFd dir_fd;
  IMGFS_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddress(socket_path, &dir_fd));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  UniqueFd sock(fd);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Status::Unavailable("the mount daemon does not answer at " + socket_path + ": " +
                               std::strerror(errno));
  }
  IMGFS_RETURN_IF_ERROR(SendAll(fd, "stats\n"));
  std::string reply;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0 || !WaitFd(fd, POLLIN, static_cast<int>(left))) {
      return Status::Unavailable("the mount daemon did not answer in time at " + socket_path);
    }
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + socket_path);
    }
    if (n == 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  if (reply.empty()) return Status::Unavailable("empty reply from " + socket_path);
  return reply;
}

cache::IndexChunkLister LayerIndexChunkLister() {
  return [](std::string_view encoded) -> Result<std::vector<registry::Digest>> {
    IMGFS_ASSIGN_OR_RETURN(LayerIndex index, LayerIndex::Decode(encoded));
    std::vector<registry::Digest> out;
    out.reserve(index.chunks.size());
    for (const Chunk& c : index.chunks) {
      if (!c.digest.empty()) out.push_back(c.digest);
    }
    return out;
  };
}

}  // namespace imgfs::fs
