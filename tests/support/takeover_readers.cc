// imgfs tests — reader threads of the takeover tests (see takeover_readers.h).
#include "tests/support/takeover_readers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "registry/digest.h"
#include "tests/support/mount_support.h"

namespace imgfs::testing {

void ReaderLog::Fail(const std::string& what) {
  std::scoped_lock lock(mu_);
  if (failures_.size() < 20) failures_.push_back(what);
}

size_t ReaderLog::FailureCount() const {
  std::scoped_lock lock(mu_);
  return failures_.size();
}

std::vector<std::string> ReaderLog::Failures() const {
  std::scoped_lock lock(mu_);
  return failures_;
}

std::vector<uint64_t> ReaderLog::Snapshot() const {
  std::vector<uint64_t> out;
  for (const auto& d : done_) out.push_back(d.load());
  return out;
}

bool ReaderLog::AllMovedOn(const std::vector<uint64_t>& before) const {
  for (int i = 0; i < slots_; ++i) {
    if (done_[i].load() <= before[static_cast<size_t>(i)]) return false;
  }
  return true;
}

std::vector<std::pair<std::string, std::string>> FilesOf(
    const std::map<std::string, TreeEntry>& listing) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& [path, e] : listing) {
    if (e.type == 'f') files.emplace_back(path, e.content);
  }
  return files;
}

void ReadFilesLoop(const std::string& top,
                   const std::vector<std::pair<std::string, std::string>>& files, int slot,
                   const std::atomic<bool>& stop, ReaderLog* log) {
  for (size_t i = static_cast<size_t>(slot); !stop; ++i) {
    const auto& [path, sha] = files[i % files.size()];
    const int fd = open((top + path).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      log->Fail("open " + path + ": " + strerror(errno));
      continue;
    }
    std::string error;
    const std::string data = ReadFromDaemon(fd, &error);
    close(fd);
    if (!error.empty()) {
      log->Fail(path + ": " + error);
    } else if (registry::Digest::Sha256Of(data).hex() != sha) {
      log->Fail(path + ": wrong bytes (" + std::to_string(data.size()) + " bytes)");
    }
    log->Done(slot);
  }
}

void StatLoop(const std::string& top, const std::map<std::string, TreeEntry>& listing, int slot,
              const std::atomic<bool>& stop, ReaderLog* log) {
  for (uint64_t i = 0; !stop; ++i) {
    for (const auto& [path, e] : listing) {
      struct stat st {};
      if (lstat((top + path).c_str(), &st) != 0) {
        log->Fail("lstat " + path + ": " + strerror(errno));
      }
    }
    const std::string missing = top + "/etc/missing-" + std::to_string(i);
    struct stat st {};
    if (lstat(missing.c_str(), &st) == 0 || errno != ENOENT) {
      log->Fail("lstat " + missing + ": " + strerror(errno));
    }
    log->Done(slot);
  }
}

void WalkLoop(const std::string& top, const std::string& skip, int slot,
              const std::atomic<bool>& stop, ReaderLog* log) {
  while (!stop) {
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(top, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (!skip.empty() && it->path() == skip) it.disable_recursion_pending();
    }
    if (ec) log->Fail("walking the tree: " + ec.message());
    log->Done(slot);
  }
}

}  // namespace imgfs::testing
