// imgfs — commit: turns the upper directory of a writable mount or a container into a new
// image layer, and prepares images of the store for a push.
//
// The upper directory uses the kernel overlayfs conventions (the contract between the
// writable filesystem, `imgfs run` and commit): a whiteout is a character device 0/0 named
// like the deleted entry; an opaque directory carries the xattr trusted.overlay.opaque="y";
// no redirect xattrs (a renamed lower directory is copied up whole and marked opaque).
// WriteUpperLayer converts it into an OCI layer tar (image-spec layer.md "Whiteouts"):
//   char device 0/0 NAME            → empty regular file `.wh.NAME` (mode 0, mtime 0)
//   directory D with opaque="y"     → D itself, then `D/.wh..wh..opq`
//   everything else                 → itself, with the upper file's own mode (07777),
//                                     uid/gid, mtime (nanoseconds through PAX), xattrs
//                                     (SCHILY.xattr.*) except trusted.overlay.*, device
//                                     numbers, symlink targets; regular files with several
//                                     names inside the upper become one file plus tar
//                                     hardlinks to its first name (in walk order)
// The walk is depth first with the entries of each directory sorted by name (bytes), the
// root itself first as "./" (the upper root's attributes are the merged root's, as in
// overlayfs), so the same upper gives the same bytes. Sockets cannot be put in a tar and are
// left out (with a warning), as docker does. An upper holding `.wh.*` names, redirect or
// metacopy xattrs (kernel overlay features the contract excludes) is refused: the layer
// would not mean what the upper means.
//
// CommitUpper writes that tar compressed (gzip by default; zstd, eStargz or zstd:chunked on
// request; deterministic: no name or time in the gzip header) as a blob of the store, appends it to
// the base image's layers with a new config — rootfs.diff_ids + the layer's uncompressed digest, a
// history entry {created, created_by, author, comment}, `created`/`author`, and docker-commit style
// --change instructions (ENV, CMD, ENTRYPOINT, WORKDIR, USER, LABEL, EXPOSE, VOLUME) — and an
// OCI image manifest (docker media types of the base layers are mapped to their OCI
// equivalents; annotations org.opencontainers.image.base.{digest,name} name the base), and
// records it in index.json under the given reference. Blobs become visible only complete and
// verified (cache::BlobWriter); the reference is recorded last.
//
// Live mounts: commit reads the upper while the mount may still be in use. It first calls
// syncfs(2) on the mountpoint and on the upper, so everything written before the commit
// started is read; a file written *during* the commit may be captured half old, half new
// (a torn file). A file that shrinks while it is read is detected and fails the commit
// ("changed while it was being committed"); one that grows is cut at the size it had when
// the walk reached it. Stop writers (or unmount) for a consistent snapshot, as with
// `docker commit --pause=false`.
// A live upper is also hostile ground: a process in the container may swap a directory for a
// symlink to a host directory at any moment. The walk never follows a link: every entry is
// opened O_PATH|O_NOFOLLOW relative to its parent's descriptor and read through that inode
// only (fs/upper_dir.h), so such a swap fails the commit or leaves the entry out, and never
// puts a host file into the layer. It needs /proc (reopening through /proc/self/fd).
//
// Thread-safety: stateless functions; the store coordinates concurrent processes.
#ifndef IMGFS_FS_IMAGE_OPS_COMMIT_H_
#define IMGFS_FS_IMAGE_OPS_COMMIT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/store.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/push.h"
#include "registry/reference.h"
#include "registry/tar_writer.h"

namespace imgfs::fs {

// The layer's format: plain tar+gzip / tar+zstd, or the lazily mountable eStargz (a
// tar+gzip layer with a TOC) and zstd:chunked (a tar+zstd layer with a TOC), written by
// fs/convert/layer_writer.h from the same tar.
enum class LayerCompression { kGzip, kZstd, kEstargz, kZstdChunked };

// Parses `--format`: "gzip" (or "" → gzip), "zstd", "estargz", "zstd:chunked"; anything
// else InvalidArgument.
Result<LayerCompression> ParseLayerCompression(std::string_view text);

// Writes the layer tar of `upper_dir` (see the file comment) into `writer`, then Finish()es
// it. Errors name the offending path.
Status WriteUpperLayer(const std::string& upper_dir, registry::TarWriter& writer);

// Applies docker-commit style `--change` instructions to the "config" object of an image
// config (the JSON bytes of an OCI/Docker image config; the result is the new document).
// InvalidArgument names an instruction that is unknown or malformed.
Result<std::string> ApplyConfigChanges(std::string_view config_json,
                                       const std::vector<std::string>& changes);

// What a commit starts from.
struct CommitSource {
  std::string upper;               // the upper directory
  registry::Digest base_manifest;  // the image below it (a platform manifest in the store)
  std::string base_reference;      // its full reference, may be empty
  std::string mountpoint;          // a live mount's mountpoint, "" for a container
  std::string description;         // "container t1" or "mount /mnt/d"
};

// Resolves `text`: the mountpoint of a live writable mount (cache/leases.h; the path is
// compared after realpath), else a container name or id (cache/containers.h). NotFound "no
// container or writable mount named TEXT"; InvalidArgument for a read-only mount.
Result<CommitSource> ResolveCommitSource(const cache::Store& store, std::string_view text);

struct CommitOptions {
  LayerCompression compression = LayerCompression::kGzip;
  std::string message;               // -m: history comment
  std::string author;                // -a
  std::vector<std::string> changes;  // --change instructions
  std::string created_by;            // history created_by; "" → "imgfs commit"
  std::string created;               // RFC 3339; "" → now (UTC)
};

struct CommittedImage {
  registry::Reference reference;
  registry::Digest manifest_digest;
  registry::Digest config_digest;  // the new image ID
  registry::Descriptor layer;      // the new layer blob
  registry::Digest diff_id;        // sha256 of its uncompressed tar
  uint64_t tar_bytes = 0;
};

// Commits `source` as a new image named `ref` (see the file comment).
Result<CommittedImage> CommitUpper(cache::Store& store, const CommitSource& source,
                                   const registry::Reference& ref, const CommitOptions& options);

// ---- push from the store ----

// Reads blobs of the store for registry::Pusher / PushToOciLayout.
class StoreBlobReader : public registry::PushBlobReader {
 public:
  explicit StoreBlobReader(const cache::Store* store) : store_(store) {}
  bool Has(const registry::Digest& digest) override;
  Result<std::string> ReadAt(const registry::Digest& digest, uint64_t offset,
                             size_t length) override;

 private:
  const cache::Store* store_;
};

// The image `text` names in the store (cache::ResolveImage) as a registry::ImageToPush:
// config first, then the layers; for every blob, mount_from lists the repositories of
// `dest_registry_host` other than `dest_repository` whose images recorded in the store
// contain it (where the blob came from: those repositories hold it).
Result<registry::ImageToPush> PrepareImagePush(const cache::Store& store, std::string_view text,
                                               const std::string& dest_registry_host,
                                               const std::string& dest_repository);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_IMAGE_OPS_COMMIT_H_
