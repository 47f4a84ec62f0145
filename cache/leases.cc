// imgfs — leases: mounts/<id>.json files pinning images for live mounts.
#include "cache/leases.h"

#include <signal.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string_view>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/random.h"
#include "base/time.h"

namespace imgfs::cache {
namespace {

using json = nlohmann::json;

constexpr int kLeaseVersion = 1;

std::string LeaseDir(const Store& store) { return store.Subdir("mounts"); }

std::string LeasePath(const Store& store, const std::string& id) {
  return LeaseDir(store) + "/" + id + ".json";
}

// 16 random hex digits (base/random.h: distinct in forked children), prefixed by the pid.
std::string NewLeaseId() { return std::to_string(::getpid()) + "-" + RandomHex(8); }

// The fields of /proc/PID/stat after the command name (field 3 onwards), or empty.
std::vector<std::string> StatFields(pid_t pid) {
  auto text = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!text.has_value()) return {};
  size_t close = text->rfind(')');
  if (close == std::string::npos) return {};
  std::vector<std::string> fields;
  std::string cur;
  for (size_t i = close + 1; i < text->size(); ++i) {
    char c = (*text)[i];
    if (c == ' ' || c == '\n') {
      if (!cur.empty()) fields.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) fields.push_back(std::move(cur));
  return fields;
}

bool IsUtf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

std::string ToHex(std::string_view bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

std::optional<std::string> FromHex(std::string_view hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = digit(hex[i]);
    int lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi << 4 | lo);
  }
  return out;
}

// A host path field: as text when it is UTF-8, else also as "<key>_hex" (see leases.h).
void PutPath(json* j, const std::string& key, const std::string& path) {
  if (IsUtf8(path)) {
    (*j)[key] = path;
    return;
  }
  (*j)[key] = json(path).dump(-1, ' ', false, json::error_handler_t::replace);
  (*j)[key] = json::parse((*j)[key].get<std::string>());  // the replaced text, unquoted
  (*j)[key + "_hex"] = ToHex(path);
}

json EncodeLease(const LeaseInfo& l) {
  json j{{"version", kLeaseVersion},
         {"id", l.id},
         {"pid", l.pid},
         {"pid_start", l.pid_start},
         {"manifest", l.manifest.String()},
         {"started", l.started}};
  PutPath(&j, "mountpoint", l.mountpoint);
  PutPath(&j, "upper", l.upper);
  if (!l.pid_ns.empty()) j["pid_ns"] = l.pid_ns;
  // The reference was parsed (ASCII) by the caller; a stray byte becomes U+FFFD at dump.
  j["reference"] = l.reference;
  return j;
}

Result<LeaseInfo> DecodeLease(std::string_view text, const std::string& path) {
  json j = json::parse(text, nullptr, false);
  auto bad = [&path](const std::string& what) { return Status::Corrupt(path + ": " + what); };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  LeaseInfo l;
  auto str = [&j](const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto pid = j.find("pid");
  if (pid == j.end() || !pid->is_number_integer() || pid->get<int64_t>() <= 0) {
    return bad("missing pid");
  }
  l.pid = static_cast<pid_t>(pid->get<int64_t>());
  l.id = str("id");
  l.pid_start = str("pid_start");
  auto host_path = [&](const char* key) {
    if (std::optional<std::string> raw = FromHex(str((std::string(key) + "_hex").c_str()));
        raw.has_value() && !raw->empty()) {
      return *raw;
    }
    return str(key);
  };
  l.mountpoint = host_path("mountpoint");
  l.pid_ns = str("pid_ns");
  auto digest = registry::Digest::Parse(str("manifest"));
  if (!digest.has_value()) return bad(digest.error().message());
  l.manifest = *digest;
  l.reference = str("reference");
  l.started = str("started");
  l.upper = host_path("upper");
  return l;
}

bool EndsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix.data(), suffix.size()) == 0;
}

}  // namespace

std::string PidNamespaceOf(pid_t pid) {
  std::string link = pid == 0 ? "/proc/self/ns/pid" : "/proc/" + std::to_string(pid) + "/ns/pid";
  char buf[128];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf));
  if (n <= 0 || static_cast<size_t>(n) >= sizeof(buf)) return std::string();
  return std::string(buf, static_cast<size_t>(n));
}

std::string ProcessStartTime(pid_t pid) {
  std::vector<std::string> f = StatFields(pid);
  // Field 22 (starttime) is index 19 counting from field 3.
  return f.size() > 19 ? f[19] : std::string();
}

bool ProcessIsAlive(pid_t pid, const std::string& pid_start) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  std::vector<std::string> f = StatFields(pid);
  if (f.empty()) return true;                    // no /proc: trust kill(2)
  if (f[0] == "Z" || f[0] == "X") return false;  // exited, not yet reaped
  if (!pid_start.empty() && f.size() > 19 && f[19] != pid_start) return false;  // pid reused
  return true;
}

Lease::Lease(Lease&& other) noexcept
    : root_(std::move(other.root_)),
      path_(std::exchange(other.path_, std::string())),
      info_(std::move(other.info_)) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Status st = Release();
    if (!st.ok()) {
      IMGFS_LOG(kWarning) << "releasing lease: " << st.ToString();
    }
    root_ = std::move(other.root_);
    path_ = std::exchange(other.path_, std::string());
    info_ = std::move(other.info_);
  }
  return *this;
}

Lease::~Lease() {
  Status st = Release();
  if (!st.ok()) {
    IMGFS_LOG(kWarning) << "releasing lease: " << st.ToString();
  }
}

Result<Lease> Lease::Acquire(const Store& store, const registry::Digest& manifest,
                             const std::string& mountpoint, const std::string& reference,
                             const std::string& upper) {
  return AcquireFor(store, ::getpid(), manifest, mountpoint, reference, upper);
}

Result<Lease> Lease::AcquireFor(const Store& store, pid_t pid, const registry::Digest& manifest,
                                const std::string& mountpoint, const std::string& reference,
                                const std::string& upper) {
  LeaseInfo info;
  info.id = NewLeaseId();
  info.pid = pid;
  info.pid_start = ProcessStartTime(pid);
  info.mountpoint = mountpoint;
  info.manifest = manifest;
  info.reference = reference;
  info.started = NowRfc3339();
  info.upper = upper;
  info.pid_ns = PidNamespaceOf(pid);
  if (!ProcessIsAlive(pid, info.pid_start)) {
    return Status::InvalidArgument("lease for process " + std::to_string(pid) +
                                   ", which is not running");
  }
  IMGFS_RETURN_IF_ERROR(MakeDirs(LeaseDir(store)));
  IMGFS_ASSIGN_OR_RETURN(FileLock lock, store.LockIndex());
  if (!store.HasBlob(manifest)) {
    return Status::NotFound("image manifest " + manifest.String() +
                            " is no longer in the store (removed concurrently?)");
  }
  std::string path = LeasePath(store, info.id);
  // Every string is UTF-8 by now (paths escaped above); replace guards the rest.
  IMGFS_RETURN_IF_ERROR(WriteFileAtomic(
      path, EncodeLease(info).dump(-1, ' ', false, json::error_handler_t::replace) + "\n"));
  Lease lease;
  lease.root_ = store.root();
  lease.path_ = std::move(path);
  lease.info_ = std::move(info);
  return lease;
}

Status Lease::Release() {
  if (path_.empty()) return Status::Ok();
  std::string path = std::exchange(path_, std::string());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "remove lease " + path);
  }
  return Status::Ok();
}

void Lease::Detach() { path_.clear(); }

Result<std::vector<LeaseInfo>> ListLiveLeases(const Store& store) {
  IMGFS_ASSIGN_OR_RETURN(FileLock lock, store.LockIndex());
  int stale = 0;
  return ListLiveLeasesLocked(store, &stale);
}

Result<std::vector<LeaseInfo>> ListLiveLeasesLocked(const Store& store, int* stale_removed) {
  std::string dir = LeaseDir(store);
  std::vector<std::string> paths;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    paths.push_back(it->path().string());
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Status::FromErrno(ec.value(), "list " + dir);
  }
  const std::string own_ns = PidNamespaceOf(0);
  std::vector<LeaseInfo> live;
  for (const auto& path : paths) {
    bool stale = false;
    if (!EndsWith(path, ".json")) {
      // A temporary file of an interrupted lease write (writers hold index.lock, as we do).
      stale = true;
    } else {
      auto text = ReadFile(path);
      if (!text.has_value()) {
        if (text.error().code() == StatusCode::kNotFound) continue;
        return text.error();
      }
      auto lease = DecodeLease(*text, path);
      if (!lease.has_value()) {
        IMGFS_LOG(kWarning) << "removing unreadable lease: " << lease.error().ToString();
        stale = true;
      } else if (!lease->pid_ns.empty() && !own_ns.empty() && lease->pid_ns != own_ns) {
        // Another pid namespace: its pid means nothing here (see leases.h); kept.
        live.push_back(std::move(*lease));
      } else if (!ProcessIsAlive(lease->pid, lease->pid_start)) {
        IMGFS_LOG(kInfo) << "removing stale lease " << path << " (pid " << lease->pid
                         << " is gone)";
        stale = true;
      } else {
        live.push_back(std::move(*lease));
      }
    }
    if (stale) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return Status::FromErrno(errno, "remove stale lease " + path);
      }
      if (stale_removed != nullptr) ++*stale_removed;
    }
  }
  return live;
}

Status RemoveLease(const Store& store, const std::string& id) {
  if (id.empty() || id.find('/') != std::string::npos || id[0] == '.') {
    return Status::InvalidArgument("invalid lease id '" + id + "'");
  }
  std::string path = LeasePath(store, id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "remove lease " + path);
  }
  return Status::Ok();
}

}  // namespace imgfs::cache
