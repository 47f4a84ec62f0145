// imgfs — the kernel's read-ahead window of a FUSE mount.
//
// The kernel sizes the READ requests of a sequential read by the mount's read-ahead window,
// and caps that window at the backing-device info's read_ahead_kb: 128 KiB by default, which
// INIT can only lower. A large file is then read in 128 KiB requests. As root, INIT raises
// the bdi's value (/sys/class/bdi/MAJ:MIN/read_ahead_kb of the mount's anonymous device)
// before answering with the same max_readahead, so reads come in requests of up to 1 MiB
// (libfuse 3.14 negotiates max_pages for 1 MiB requests). Unprivileged mounts keep the
// default: sysfs is root's.
//
// Thread-safety: stateless functions.
#ifndef IMGFS_FS_FUSE_READ_AHEAD_H_
#define IMGFS_FS_FUSE_READ_AHEAD_H_

#include <cstdint>
#include <string>

namespace imgfs::fs {

inline constexpr uint32_t kMountReadAheadKib = 1024;

// Raises the read-ahead of the FUSE mount at `mountpoint` (absolute) to `kib`; returns the
// value to answer INIT's max_readahead with (bytes): `kib` KiB when it was raised, else
// `offered` (what the kernel offered). Logs at debug level why not, when not.
uint32_t RaiseMountReadAhead(const std::string& mountpoint, uint32_t kib, uint32_t offered);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_READ_AHEAD_H_
