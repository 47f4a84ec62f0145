// imgfs — the record of a layer store's keeper (see keeper_record.h).
#include "fs/fuse/keeper_record.h"

#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <fstream>
#include <iterator>

#include "base/file_util.h"
#include "cache/leases.h"
#include "registry/digest.h"

namespace imgfs::fs {
namespace {

constexpr size_t kMaxRecordBytes = 4096;

// A decimal without sign or leading zeros, nullopt otherwise.
std::optional<int64_t> Decimal(std::string_view s) {
  if (s.empty() || s.size() > 20 || (s[0] == '0' && s.size() > 1)) return std::nullopt;
  int64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value < 0) return std::nullopt;
  return value;
}

}  // namespace

std::string KeeperRecordPath(const cache::Store& store, const std::string& mountpoint) {
  return store.Subdir("layer-stores") + "/" +
         registry::Digest::Sha256Of(mountpoint).hex().substr(0, 16) + ".keeper";
}

std::string EncodeKeeperRecord(const KeeperRecord& record) {
  return std::to_string(record.pid) + " " + record.pid_start + "\n" + record.mountpoint;
}

Result<KeeperRecord> ParseKeeperRecord(std::string_view text) {
  auto corrupt = [] { return Status::Corrupt("malformed keeper record"); };
  if (text.size() > kMaxRecordBytes) return corrupt();
  const size_t eol = text.find('\n');
  if (eol == std::string_view::npos) return corrupt();
  const std::string_view head = text.substr(0, eol);
  const size_t space = head.find(' ');
  if (space == std::string_view::npos) return corrupt();
  const std::optional<int64_t> pid = Decimal(head.substr(0, space));
  const std::optional<int64_t> start = Decimal(head.substr(space + 1));
  if (!pid.has_value() || !start.has_value() || *pid < 1 || *pid > (1 << 22)) return corrupt();
  KeeperRecord record;
  record.pid = static_cast<pid_t>(*pid);
  record.pid_start = std::string(head.substr(space + 1));
  record.mountpoint = std::string(text.substr(eol + 1));
  if (record.mountpoint.empty() || record.mountpoint[0] != '/' ||
      record.mountpoint.find('\n') != std::string::npos ||
      record.mountpoint.find('\0') != std::string::npos) {
    return corrupt();
  }
  return record;
}

Status WriteKeeperRecord(const cache::Store& store, const std::string& mountpoint) {
  KeeperRecord record{::getpid(), cache::ProcessStartTime(::getpid()), mountpoint};
  return WriteFileAtomic(KeeperRecordPath(store, mountpoint), EncodeKeeperRecord(record), 0644);
}

void RemoveKeeperRecord(const cache::Store& store, const std::string& mountpoint) {
  std::optional<KeeperRecord> found = FindKeeperRecord(store, mountpoint);
  if (found.has_value() && found->pid == ::getpid()) {
    ::unlink(KeeperRecordPath(store, mountpoint).c_str());
  }
}

std::optional<KeeperRecord> FindKeeperRecord(const cache::Store& store,
                                             const std::string& mountpoint) {
  std::ifstream in(KeeperRecordPath(store, mountpoint), std::ios::binary);
  if (!in) return std::nullopt;
  std::string text(kMaxRecordBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  Result<KeeperRecord> record = ParseKeeperRecord(text);
  if (!record.has_value() || record->mountpoint != mountpoint ||
      !cache::ProcessIsAlive(record->pid, record->pid_start)) {
    return std::nullopt;
  }
  return *record;
}

}  // namespace imgfs::fs
