// imgfs — the FUSE mount of an Additional Layer Store (fs/layer_store/layer_store.h): inode
// numbers for its tree and the libfuse low-level operations that answer the kernel.
//
// Inodes are stable for the life of the mount: 1 is the root, a reference directory gets the
// next small number the first time it is looked up, a layer directory gets a slot s (from 1)
// and the numbers s << 32 + k: k = 0 the layer directory, 1 `info`, 2 `blob`, and 15 + i the
// inode i of the layer's diff/ tree (a function of its stored index, fs/tree/node_table.h).
// Nothing is listed in the root (containers/storage only looks names up); a reference
// directory lists the layers looked up below it.
//
// Daemons that die (fs/fuse/takeover.h): the directory numbers are journaled
// (fs/layer_store/layer_store_journal.h) and the references are leases in the store
// (fs/layer_store/layer_references.h), so a daemon taking the mount over answers every node
// id the kernel holds as the dead one did. No per-open state: open and opendir hand out no
// handle (a directory is listed again on each readdir), so a request the kernel resends to
// the new daemon needs nothing the old one had.
//
// A layer directory has the xattr user.imgfs.references: the references held on it now.
//
// Mounted read-write at the VFS level (`use` must reach the create operation, which answers
// ENOENT after counting the reference; a read-only mount would answer EROFS first), but every
// change other than creating `use` and removing a layer directory is refused (EROFS / EPERM).
// Options: default_permissions, allow_other, subtype imgfs-layer-store. The root is 0700 and
// owned by the daemon's user: a lookup below it makes the daemon fetch an image with its own
// credentials, so other users are kept out (the kernel checks the mode).
//
// Thread-safety: Mount and Run on one thread; the operations run on libfuse's worker
// threads and take the store's locks.
#ifndef IMGFS_FS_FUSE_LAYER_STORE_OPS_H_
#define IMGFS_FS_FUSE_LAYER_STORE_OPS_H_

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "fs/layer_store/layer_store.h"

namespace imgfs::fs {

struct Handover;

struct LayerStoreSessionOptions {
  std::vector<std::string> mount_options;  // extra -o options
  unsigned max_threads = 16;
  bool debug = false;
  // Called once the kernel's INIT request has been answered.
  std::function<void()> on_ready;
  // The journal of directory numbers (fs/layer_store/layer_store_journal.h; not owned, -1:
  // none). Read back at Mount: a takeover's predecessor wrote it.
  int journal_fd = -1;
  // A kept mount: called with the /dev/fuse descriptor and the INIT request before it is
  // answered (fs/fuse/takeover.h SendConnection).
  std::function<void(int fuse_fd, std::string_view init_request)> on_connection;
  // A takeover: Mount serves the live connection of this handover (not owned; outlives the
  // session) instead of mounting.
  const Handover* handover = nullptr;
};

class LayerStoreSession {
 public:
  // Mounts `store` (not owned; outlives the session) at `mountpoint`, or takes the mount
  // there over (options.handover). Corrupt when the journal does not read back.
  static Result<std::unique_ptr<LayerStoreSession>> Mount(LayerStore* store,
                                                          const std::string& mountpoint,
                                                          LayerStoreSessionOptions options);
  ~LayerStoreSession();  // unmounts if still mounted
  LayerStoreSession(const LayerStoreSession&) = delete;
  LayerStoreSession& operator=(const LayerStoreSession&) = delete;

  // Serves until unmounted or SIGTERM/SIGINT/SIGHUP.
  Status Run();

  struct State;  // the tree's inode tables (fs/fuse/layer_store_ops.cc)

 private:
  LayerStoreSession() = default;
  std::unique_ptr<State> state_;
  std::string mountpoint_;
  unsigned max_threads_ = 16;
  bool mounted_ = false;
};

}  // namespace imgfs::fs

#endif  // IMGFS_FS_FUSE_LAYER_STORE_OPS_H_
