// imgfs — references on Additional Layer Store layers, kept as mount leases.
#include "fs/layer_store/layer_references.h"

#include <algorithm>
#include <utility>

#include "base/log.h"
#include "cache/leases.h"

namespace imgfs::fs {

LayerReferences::LayerReferences(const cache::Store* store, pid_t owner, std::string mountpoint)
    : store_(store), owner_(owner), mountpoint_(std::move(mountpoint)) {}

LayerReferences::~LayerReferences() {
  std::map<std::string, std::vector<std::string>, std::less<>> leases;
  {
    MutexLock lock(&mu_);
    leases.swap(leases_);
  }
  for (const auto& [key, ids] : leases) {
    for (const std::string& id : ids) {
      Status removed = cache::RemoveLease(*store_, id);
      if (!removed.ok()) IMGFS_LOG(kWarning) << "layer store: " << removed.ToString();
    }
  }
}

std::string LayerReferences::LayerPath(std::string_view key) const {
  return mountpoint_ + "/" + std::string(key);
}

Result<size_t> LayerReferences::Recover() {
  IMGFS_ASSIGN_OR_RETURN(std::vector<cache::LeaseInfo> live, cache::ListLiveLeases(*store_));
  const std::string prefix = mountpoint_ + "/";
  size_t adopted = 0;
  MutexLock lock(&mu_);
  for (const cache::LeaseInfo& lease : live) {
    if (lease.pid != owner_ || !lease.mountpoint.starts_with(prefix)) continue;
    const std::string key = lease.mountpoint.substr(prefix.size());
    // "<reference element>/<digest element>": what Take recorded, nothing deeper.
    if (key.find('/') == std::string::npos || key.find('/') != key.rfind('/')) continue;
    std::vector<std::string>& ids = leases_[key];
    if (std::find(ids.begin(), ids.end(), lease.id) != ids.end()) continue;
    ids.push_back(lease.id);
    ++adopted;
  }
  return adopted;
}

Result<int64_t> LayerReferences::Take(std::string_view key, const registry::Digest& manifest,
                                      const std::string& reference) {
  IMGFS_ASSIGN_OR_RETURN(cache::Lease lease, cache::Lease::AcquireFor(*store_, owner_, manifest,
                                                                      LayerPath(key), reference));
  lease.Detach();  // owned by this object (and the next daemon's) from now on
  MutexLock lock(&mu_);
  std::vector<std::string>& ids = leases_[std::string(key)];
  ids.push_back(lease.info().id);
  return static_cast<int64_t>(ids.size());
}

int64_t LayerReferences::Drop(std::string_view key) {
  std::string id;
  int64_t left = 0;
  {
    MutexLock lock(&mu_);
    auto it = leases_.find(key);
    if (it == leases_.end()) return 0;
    id = std::move(it->second.back());
    it->second.pop_back();
    left = static_cast<int64_t>(it->second.size());
    if (left == 0) leases_.erase(it);
  }
  Status removed = cache::RemoveLease(*store_, id);
  if (!removed.ok()) IMGFS_LOG(kWarning) << "layer store: " << removed.ToString();
  return left;
}

int64_t LayerReferences::Count(std::string_view key) const {
  MutexLock lock(&mu_);
  auto it = leases_.find(key);
  return it == leases_.end() ? 0 : static_cast<int64_t>(it->second.size());
}

size_t LayerReferences::Referenced() const {
  MutexLock lock(&mu_);
  return leases_.size();
}

}  // namespace imgfs::fs
