// imgfs — ChunkStore: the deduplicated store of uncompressed file chunks.
#include "cache/chunk_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "base/file_util.h"
#include "base/log.h"

namespace imgfs::cache {
namespace {

// A chunk's mtime is its last use (cache/usage.h evicts least recently used chunks first);
// refreshing it at most once a minute keeps reads of a hot chunk from writing inode times
// on every access while still ordering chunks well for eviction, which works in minutes.
constexpr time_t kTouchGranularitySeconds = 60;

Status CheckSha256(const registry::Digest& digest) {
  if (digest.algorithm() != "sha256" || digest.hex().size() != 64) {
    return Status::InvalidArgument("chunk digest '" + digest.String() + "' is not sha256");
  }
  return Status::Ok();
}

}  // namespace

ChunkStore::ChunkStore(std::string root) : dir_(std::move(root) + "/chunks") {}

std::string ChunkStore::PathFor(const registry::Digest& digest) const {
  const std::string& hex = digest.hex();
  return dir_ + "/" + hex.substr(0, 2) + "/" + hex;
}

Result<std::string> ChunkStore::Get(const registry::Digest& digest) {
  IMGFS_RETURN_IF_ERROR(CheckSha256(digest));
  std::string path = PathFor(digest);
  Result<std::string> data = ReadFile(path);
  if (!data.has_value()) return data.error();
  if (registry::Digest::Sha256Of(*data) != digest) {
    corrupt_dropped_.fetch_add(1, std::memory_order_relaxed);
    IMGFS_LOG(kWarning) << "chunk store: " << path << " does not match its digest; deleting it";
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::Io("chunk store: cannot delete corrupt " + path + ": " + std::strerror(errno));
    }
    return Status::NotFound("chunk " + digest.String() + " was corrupt in the store");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && ::time(nullptr) - st.st_mtime > kTouchGranularitySeconds) {
    ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // best effort: only the LRU order suffers
  }
  return data;
}

Status ChunkStore::Put(const registry::Digest& digest, std::string_view data) {
  IMGFS_RETURN_IF_ERROR(CheckSha256(digest));
  if (registry::Digest::Sha256Of(data) != digest) {
    return Status::Corrupt("chunk does not match its digest " + digest.String());
  }
  std::string path = PathFor(digest);
  if (Has(digest)) return Status::Ok();
  // Private like the rest of the store (cache/store.h): chunks are image content.
  IMGFS_RETURN_IF_ERROR(MakeDirs(dir_ + "/" + digest.hex().substr(0, 2), 0700));
  // No fsync: Get re-hashes every chunk it reads, so a chunk a power loss truncated or lost
  // is only fetched again, and two fsyncs per chunk would bound a lazy read of many small
  // chunks by the disk's flush latency.
  return WriteFileAtomic(path, data, 0600, Durability::kUnsynced);
}

bool ChunkStore::Has(const registry::Digest& digest) const {
  if (digest.hex().size() != 64) return false;
  struct stat st {};
  return ::stat(PathFor(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace imgfs::cache
