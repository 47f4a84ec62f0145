// imgfs — containers: ROOT/containers/<name>/{container.json,upper/}.
#include "cache/containers.h"

#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <system_error>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/random.h"
#include "base/time.h"
#include "cache/leases.h"

namespace imgfs::cache {
namespace {

using json = nlohmann::json;

constexpr std::string_view kRecordFile = "container.json";
// Prefix of a directory being removed (never a valid container name: names start with an
// alphanumeric character).
constexpr std::string_view kRemovingPrefix = ".rm-";
// How long `rm -f` waits for a killed run process to exit.
constexpr auto kKillWait = std::chrono::seconds(10);

std::string RecordPath(const Store& store, std::string_view name) {
  return ContainerDir(store, name) + "/" + std::string(kRecordFile);
}

json Encode(const ContainerInfo& c) {
  json j = {{"version", kContainerFormatVersion},
            {"name", c.name},
            {"id", c.id},
            {"image", c.image.String()},
            {"image_id", c.image_id.String()},
            {"reference", c.reference},
            {"created", c.created},
            {"command", c.command},
            {"status", c.running ? "running" : "exited"},
            {"auto_remove", c.auto_remove}};
  if (c.running) {
    j["pid"] = c.pid;
    j["pid_start"] = c.pid_start;
  } else {
    j["exit_code"] = c.exit_code;
    j["finished"] = c.finished;
  }
  return j;
}

// The record as JSON text. The command (argv of `run`, any bytes) is shown by `imgfs ps`
// and never executed from the record, so bytes that are not UTF-8 become U+FFFD rather than
// an exception (which would abort `run` after the container directory was made).
std::string DumpRecord(const ContainerInfo& c) {
  return Encode(c).dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<ContainerInfo> Decode(std::string_view text, const std::string& where) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corrupt(where + ": not a JSON object");
  try {
    ContainerInfo c;
    c.name = j.value("name", "");
    c.id = j.value("id", "");
    if (!IsValidContainerName(c.name) || c.id.empty()) {
      return Status::Corrupt(where + ": missing or invalid name or id");
    }
    std::string image = j.value("image", "");
    if (!image.empty()) {
      Result<registry::Digest> d = registry::Digest::Parse(image);
      if (!d.has_value()) return d.error().WithContext(where + ": image");
      c.image = *d;
    }
    std::string image_id = j.value("image_id", "");
    if (!image_id.empty()) {
      Result<registry::Digest> d = registry::Digest::Parse(image_id);
      if (!d.has_value()) return d.error().WithContext(where + ": image_id");
      c.image_id = *d;
    }
    c.reference = j.value("reference", "");
    c.created = j.value("created", "");
    if (j.contains("command") && j["command"].is_array()) {
      for (const json& a : j["command"]) {
        if (a.is_string()) c.command.push_back(a.get<std::string>());
      }
    }
    c.running = j.value("status", "") == "running";
    c.exit_code = j.value("exit_code", 0);
    c.finished = j.value("finished", "");
    c.pid = j.value("pid", 0);
    c.pid_start = j.value("pid_start", "");
    c.auto_remove = j.value("auto_remove", false);
    return c;
  } catch (const json::exception& e) {
    return Status::Corrupt(where + ": " + e.what());
  }
}

// A running record whose process is gone reads as killed.
void RefreshLiveness(ContainerInfo* c) {
  if (!c->running) return;
  if (c->pid > 0 && ProcessIsAlive(c->pid, c->pid_start)) return;
  c->running = false;
  c->exit_code = kExitStatusKilled;
  c->pid = 0;
  c->pid_start.clear();
}

// Deletes a container directory: rename to a hidden name first (never listed again), then
// remove the tree.
Status DeleteContainerDir(const Store& store, const std::string& name) {
  std::string dir = ContainerDir(store, name);
  std::string hidden =
      store.Subdir("containers") + "/" + std::string(kRemovingPrefix) + name + "-" + RandomHex(4);
  if (::rename(dir.c_str(), hidden.c_str()) != 0) {
    if (errno == ENOENT) return Status::NotFound("No such container: " + name);
    return Status::FromErrno(errno, "renaming " + dir);
  }
  return RemoveTree(hidden);
}

}  // namespace

bool IsValidContainerName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [&](char c) { return alnum(c) || c == '_' || c == '.' || c == '-'; });
}

std::string ContainerDir(const Store& store, std::string_view name) {
  return store.Subdir("containers") + "/" + std::string(name);
}

std::string ContainerUpperDir(const Store& store, std::string_view name) {
  return ContainerDir(store, name) + "/upper";
}

Result<ContainerInfo> CreateContainer(const Store& store, ContainerInfo info) {
  bool generated = info.name.empty();
  if (generated) info.name = "run_" + RandomHex(6);
  if (!IsValidContainerName(info.name)) {
    return Status::InvalidArgument("Invalid container name (" + info.name +
                                   "), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
  }
  IMGFS_RETURN_IF_ERROR(MakeDirs(store.Subdir("containers"), 0700));
  std::string dir = ContainerDir(store, info.name);
  if (::mkdir(dir.c_str(), 0700) != 0) {
    int err = errno;
    if (err == EEXIST) {
      std::string other_id = "?";
      Result<std::string> text = ReadFile(RecordPath(store, info.name));
      if (text.has_value()) {
        Result<ContainerInfo> other = Decode(*text, info.name);
        if (other.has_value()) other_id = other->id;
      }
      return Status::InvalidArgument("Conflict. The container name \"/" + info.name +
                                     "\" is already in use by container \"" + other_id +
                                     "\". You have to remove (or rename) that container to be "
                                     "able to reuse that name.");
    }
    return Status::FromErrno(err, "creating " + dir);
  }
  info.id = RandomHex(32);
  info.created = NowRfc3339();
  info.running = true;
  info.exit_code = 0;
  info.finished.clear();
  info.pid = ::getpid();
  info.pid_start = ProcessStartTime(info.pid);
  Status st = WriteContainerOwner(dir);
  // 0755: under kernel overlayfs the upper root is the container's "/", which its non-root
  // users must traverse. The 0700 container directory above it is what keeps other host
  // users out of the upper (copied-up setuid files).
  if (st.ok()) st = MakeDirs(ContainerUpperDir(store, info.name), 0755);
  if (st.ok()) st = WriteFileAtomic(RecordPath(store, info.name), DumpRecord(info));
  if (!st.ok()) {
    Status removed = RemoveTree(dir);
    if (!removed.ok()) IMGFS_LOG(kWarning) << "removing " << dir << ": " << removed.ToString();
    return st.WithContext("creating container " + info.name);
  }
  return info;
}

Status WriteContainer(const Store& store, const ContainerInfo& info) {
  struct stat st {};
  if (::stat(ContainerDir(store, info.name).c_str(), &st) != 0) {
    return Status::NotFound("No such container: " + info.name);
  }
  return WriteFileAtomic(RecordPath(store, info.name), DumpRecord(info));
}

Status MarkContainerExited(const Store& store, std::string_view name, int exit_code) {
  Result<std::string> text = ReadFile(RecordPath(store, name));
  if (!text.has_value()) return text.error();
  Result<ContainerInfo> info = Decode(*text, std::string(name));
  if (!info.has_value()) return info.error();
  info->running = false;
  info->exit_code = exit_code;
  info->finished = NowRfc3339();
  info->pid = 0;
  info->pid_start.clear();
  return WriteContainer(store, *info);
}

Result<ContainerInfo> ReadContainer(const Store& store, std::string_view name) {
  if (!IsValidContainerName(name)) {
    return Status::NotFound("No such container: " + std::string(name));
  }
  Result<std::string> text = ReadFile(RecordPath(store, name));
  if (!text.has_value()) {
    if (text.error().code() == StatusCode::kNotFound) {
      return Status::NotFound("No such container: " + std::string(name));
    }
    return text.error();
  }
  Result<ContainerInfo> info = Decode(*text, RecordPath(store, name));
  if (!info.has_value()) return info.error();
  RefreshLiveness(&*info);
  return info;
}

Result<ContainerInfo> FindContainer(const Store& store, std::string_view text) {
  Result<ContainerInfo> by_name = ReadContainer(store, text);
  if (by_name.has_value() || by_name.error().code() != StatusCode::kNotFound) return by_name;
  IMGFS_ASSIGN_OR_RETURN(std::vector<ContainerInfo> all, ListContainers(store));
  std::vector<ContainerInfo> matches;
  if (!text.empty()) {
    for (ContainerInfo& c : all) {
      if (c.id.rfind(text, 0) == 0) matches.push_back(std::move(c));
    }
  }
  if (matches.size() == 1) return std::move(matches[0]);
  if (matches.size() > 1) {
    return Status::InvalidArgument("multiple containers match the id prefix " + std::string(text));
  }
  return Status::NotFound("No such container: " + std::string(text));
}

Result<std::vector<ContainerInfo>> ListContainers(const Store& store) {
  std::vector<ContainerInfo> out;
  std::string dir = store.Subdir("containers");
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return out;
    return Status::Io("listing " + dir + ": " + ec.message());
  }
  for (const auto& entry : it) {
    std::string name = entry.path().filename().string();
    if (!IsValidContainerName(name)) continue;  // hidden removals and debris
    Result<ContainerInfo> info = ReadContainer(store, name);
    if (!info.has_value()) {
      if (info.error().code() != StatusCode::kNotFound) {
        IMGFS_LOG(kWarning) << "skipping container " << name << ": " << info.error().ToString();
      }
      continue;
    }
    out.push_back(std::move(*info));
  }
  std::sort(out.begin(), out.end(), [](const ContainerInfo& a, const ContainerInfo& b) {
    if (a.created != b.created) return a.created > b.created;
    return a.name < b.name;
  });
  return out;
}

Result<ContainerInfo> RemoveContainer(const Store& store, std::string_view text, bool force) {
  IMGFS_ASSIGN_OR_RETURN(ContainerInfo info, FindContainer(store, text));
  if (info.running) {
    if (!force) {
      return Status::InvalidArgument("You cannot remove a running container " + info.id +
                                     ". Stop the container before attempting removal or force "
                                     "remove");
    }
    if (::kill(info.pid, SIGKILL) != 0 && errno != ESRCH) {
      return Status::FromErrno(errno, "killing the run process " + std::to_string(info.pid) +
                                          " of container " + info.name);
    }
    auto deadline = std::chrono::steady_clock::now() + kKillWait;
    while (ProcessIsAlive(info.pid, info.pid_start)) {
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::Unavailable("container " + info.name + ": its run process " +
                                   std::to_string(info.pid) + " did not exit");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  Status st = DeleteContainerDir(store, info.name);
  if (!st.ok()) return st.WithContext("removing container " + info.name);
  return info;
}

Result<int> RemoveAbandonedContainers(const Store& store) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<ContainerInfo> all, ListContainers(store));
  int removed = 0;
  for (const ContainerInfo& c : all) {
    if (!c.auto_remove || c.running) continue;
    Status st = DeleteContainerDir(store, c.name);
    if (st.ok()) {
      ++removed;
    } else if (st.code() != StatusCode::kNotFound) {
      IMGFS_LOG(kWarning) << "removing abandoned container " << c.name << ": " << st.ToString();
    }
  }
  return removed;
}

Status WriteContainerOwner(const std::string& dir) {
  pid_t pid = ::getpid();
  json j = {{"pid", pid}, {"pid_start", ProcessStartTime(pid)}};
  return WriteFileAtomic(dir + "/" + std::string(kContainerOwnerFile), j.dump() + "\n");
}

std::vector<AbandonedContainerDir> ListAbandonedContainerDirs(
    const Store& store, const std::vector<LeaseInfo>& live_leases) {
  std::vector<AbandonedContainerDir> out;
  const std::string dir = store.Subdir("containers");
  std::vector<std::string> names;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  const int64_t now = ::time(nullptr);
  for (const std::string& name : names) {
    std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (name.starts_with(kRemovingPrefix)) {
      int64_t idle = now - st.st_ctim.tv_sec;
      if (idle > kOwnerlessGraceSeconds) out.push_back({name, path, "interrupted removal"});
      continue;
    }
    struct stat record {};
    if (::lstat((path + "/" + std::string(kRecordFile)).c_str(), &record) == 0) continue;
    bool leased = std::any_of(live_leases.begin(), live_leases.end(), [&](const LeaseInfo& l) {
      return l.upper.size() > path.size() && l.upper.starts_with(path) &&
             l.upper[path.size()] == '/';
    });
    if (leased) continue;
    Result<std::string> owner_text = ReadFile(path + "/" + std::string(kContainerOwnerFile));
    if (owner_text.has_value()) {
      json j = json::parse(*owner_text, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.contains("pid") && j["pid"].is_number_integer() &&
          j.contains("pid_start") && j["pid_start"].is_string()) {
        auto pid = j["pid"].get<int64_t>();
        auto pid_start = j["pid_start"].get<std::string>();
        if (pid <= 0 || !ProcessIsAlive(static_cast<pid_t>(pid), pid_start)) {
          out.push_back({name, path, "owner " + std::to_string(pid) + " is gone"});
        }
        continue;
      }
    }
    // No usable owner record: only the directory's age tells.
    int64_t idle = now - st.st_mtim.tv_sec;
    if (idle > kOwnerlessGraceSeconds) {
      out.push_back({name, path, "no owner, idle " + std::to_string(idle) + " s"});
    }
  }
  return out;
}

int RemoveAbandonedContainerDirs(const Store& store, const std::vector<LeaseInfo>& live_leases) {
  int removed = 0;
  for (const AbandonedContainerDir& d : ListAbandonedContainerDirs(store, live_leases)) {
    std::string target = d.path;
    if (!d.name.starts_with(kRemovingPrefix)) {
      target = store.Subdir("containers") + "/" + std::string(kRemovingPrefix) + d.name + "-" +
               RandomHex(4);
      if (::rename(d.path.c_str(), target.c_str()) != 0) {
        if (errno != ENOENT) {
          IMGFS_LOG(kWarning) << "removing abandoned " << d.path << ": "
                              << Status::FromErrno(errno, "rename").ToString();
        }
        continue;
      }
    }
    Status st = RemoveTree(target);
    if (!st.ok()) {
      IMGFS_LOG(kWarning) << "removing abandoned " << d.path << ": " << st.ToString();
      continue;
    }
    IMGFS_LOG(kInfo) << "removed abandoned " << d.path << " (" << d.reason << ")";
    ++removed;
  }
  return removed;
}

}  // namespace imgfs::cache
