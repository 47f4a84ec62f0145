// imgfs — Store: the local image store, an OCI image layout shared by every imgfs process.
//
// Layout under ROOT (docs/FORMATS.md "Local store", format version 1):
//   oci-layout            {"imageLayoutVersion":"1.0.0"}
//   index.json            one entry per recorded image name (see ImageRecord)
//   blobs/sha256/<hex>    complete, verified blobs (content-addressed, never modified)
//   tmp/                  in-progress blob writes (BlobWriter); leftovers of a crash are
//                         removed by CleanTmp / garbage collection
//   indexes/ chunks/      derived per-layer indexes and the chunk dedup store (fs/ owns them)
//   mounts/               leases of live mounts (cache/leases.h)
//   containers/           writable upper layers
//   imgfs.json            {"format": "imgfs-store", "version": 1}
//   index.lock gc.lock    flock(2) lock files (see "Locking")
// Privacy: ROOT and the directories listed above are created 0700, and an existing store opened by
// its owner is tightened to 0700 (ROOT and those directories), so no other user reads a
// blob, chunk or index (private images) or reaches a container's upper (copied-up setuid
// files). Blob, chunk and index files are 0600 as well.
// skopeo (`oci:ROOT:<name>`) and umoci (`--layout ROOT`, `--image ROOT:<name>`) read the
// store directly; see docs/FORMATS.md for which annotation value they accept.
//
// index.json entries. Each entry is the descriptor of a *platform-specific* image manifest
// (never an index), annotated:
//   org.opencontainers.image.ref.name  the full normalised reference
//                                      ("docker.io/library/alpine:3.20",
//                                      "127.0.0.1:5000/demo/app@sha256:…"); absent on
//                                      dangling entries
//   io.imgfs.reference                 the same full reference (absent on dangling entries)
//   io.imgfs.repository                the repository name ("docker.io/library/alpine"),
//                                      kept on dangling entries for RepoDigests
//   io.imgfs.repo-digest               the digest the reference resolved to at the registry
//                                      (an index or the manifest itself)
//   io.imgfs.pulled                    RFC 3339 UTC time the entry was recorded
// Tags are mutable: RecordImage on a name whose entry points at another manifest replaces
// it; the manifest it pointed to stays as a dangling entry (no name) unless another entry
// still references that manifest.
//
// Locking (lock order: gc.lock before index.lock; never the other way round):
//   index.lock  exclusive for every read-modify-write of index.json and of leases; readers of
//               index.json take no lock (the file is replaced atomically with rename).
//   gc.lock     shared by writers (every BlobWriter holds it while open, and a pull holds a
//               WriteGuard from its first blob until RecordImage returned); exclusive while
//               garbage is collected (CollectGarbage in cache/images.h). So GC never deletes
//               a blob that a concurrent pull wrote but has not recorded yet, and everything
//               in tmp/ while GC holds the lock is a crash leftover.
//
// Thread-safety: a Store is immutable after Open; every method may be called from any thread
// and any process concurrently (coordination is through the lock files). A BlobWriter is
// used by one thread at a time.
#ifndef IMGFS_CACHE_STORE_H_
#define IMGFS_CACHE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/unique_fd.h"
#include "cache/file_lock.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace imgfs::cache {

// Version of the on-disk store format written to imgfs.json (docs/FORMATS.md).
inline constexpr int kStoreFormatVersion = 1;

// Annotation keys used in index.json (the OCI ref name is registry::kRefNameAnnotation).
inline constexpr std::string_view kAnnotationReference = "io.imgfs.reference";
inline constexpr std::string_view kAnnotationRepository = "io.imgfs.repository";
inline constexpr std::string_view kAnnotationRepoDigest = "io.imgfs.repo-digest";
inline constexpr std::string_view kAnnotationPulled = "io.imgfs.pulled";

// Largest blob ReadBlob returns (manifests and configs; layers are read through BlobPath).
inline constexpr int64_t kMaxReadBlobBytes = 64 << 20;

// The store root: $IMGFS_ROOT if set and non-empty; else /var/lib/imgfs when running as
// root (euid 0); else $XDG_DATA_HOME/imgfs, falling back to $HOME/.local/share/imgfs.
// InvalidArgument when none of these can be determined.
Result<std::string> DefaultStoreRoot();

// One index.json entry.
struct ImageRecord {
  // Full normalised reference (Reference::String()); empty for a dangling entry.
  std::string reference;
  // "docker.io/library/alpine"; may be empty on dangling entries recorded by older tools.
  std::string repository;
  // Descriptor of the platform-specific manifest (media type, digest, size, platform).
  // `annotations` holds the entry's annotations as stored.
  registry::Descriptor manifest;
  // Digest the reference resolved to at the registry (index or manifest); may be empty.
  registry::Digest repo_digest;
  // RFC 3339 time the entry was recorded; may be empty.
  std::string pulled;

  bool dangling() const { return reference.empty(); }
};

class Store;

// A blob write in progress: bytes go to a file in tmp/ and are hashed as they arrive.
// Commit() checks the digest (and the size when it was given), fsyncs and renames the file
// to blobs/sha256/<hex>; if that blob already exists the temporary file is simply dropped
// (content addressing makes concurrent writers of one blob harmless). Destroying an
// uncommitted writer removes its temporary file: nothing becomes visible.
// Holds a shared gc.lock while open.
class BlobWriter {
 public:
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;
  BlobWriter(BlobWriter&&) noexcept;
  BlobWriter& operator=(BlobWriter&&) noexcept;
  ~BlobWriter();  // Abort() unless committed

  // Appends bytes. Io on a write error; InvalidArgument after Commit/Abort; Corrupt as soon
  // as more bytes than the expected size arrive.
  Status Write(std::string_view data);
  // Verifies and publishes the blob. Corrupt (naming both digests / sizes) on a mismatch, in
  // which case the temporary file is removed. After Commit (success or not) the writer is
  // finished.
  Status Commit();
  // Discards the temporary file (idempotent).
  void Abort();

  uint64_t bytes_written() const { return written_; }
  const registry::Digest& digest() const { return expected_; }

 private:
  friend class Store;
  BlobWriter() = default;

  std::string tmp_path_;
  std::string final_path_;
  registry::Digest expected_;
  int64_t expected_size_ = -1;
  UniqueFd fd_;
  std::unique_ptr<registry::Sha256> hasher_;
  uint64_t written_ = 0;
  bool finished_ = false;
  FileLock gc_lock_;
};

class Store {
 public:
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Opens the store at `root`, creating the layout (directories, oci-layout, empty
  // index.json, imgfs.json) when missing. Unsupported if imgfs.json names a newer format
  // version; Corrupt if oci-layout or imgfs.json is unreadable.
  static Result<std::unique_ptr<Store>> Open(const std::string& root);
  // Open(DefaultStoreRoot()).
  static Result<std::unique_ptr<Store>> OpenDefault();

  const std::string& root() const { return root_; }
  // ROOT/<name> for the side directories ("tmp", "indexes", "chunks", "mounts",
  // "containers").
  std::string Subdir(std::string_view name) const;

  // ---- Blobs ----

  // ROOT/blobs/<alg>/<hex> (whether or not it exists).
  std::string BlobPath(const registry::Digest& digest) const;
  // True when the blob file exists.
  bool HasBlob(const registry::Digest& digest) const;
  // Size of the stored blob; NotFound if absent.
  Result<int64_t> BlobSize(const registry::Digest& digest) const;
  // Whole blob, verified against its digest (Corrupt on mismatch). NotFound if absent;
  // InvalidArgument if larger than kMaxReadBlobBytes.
  Result<std::string> ReadBlob(const registry::Digest& digest) const;
  // Starts a write of the blob `expected` (sha256 only; Unsupported otherwise).
  // `expected_size` < 0 means unknown. Callers that want to skip present blobs check
  // HasBlob first.
  Result<BlobWriter> NewBlobWriter(const registry::Digest& expected, int64_t expected_size = -1);
  // Writes `data` as the blob `expected` unless it is already present. Corrupt if the data
  // does not hash to `expected`.
  Status PutBlob(const registry::Digest& expected, std::string_view data);
  // Writes `data` as a blob named by its sha256 (unless present) and returns the digest.
  Result<registry::Digest> PutBlob(std::string_view data);

  // Held by a pull from before its first blob write until RecordImage returned, so that a
  // concurrent GC does not delete blobs that are written but not yet recorded. (Shared
  // gc.lock; do not call CollectGarbage while holding one in the same thread.)
  Result<FileLock> WriteGuard() const;

  // ---- index.json ----

  // Every entry, in file order. A missing index.json reads as empty; Corrupt if it does not
  // parse.
  Result<std::vector<ImageRecord>> ListRecords() const;
  // The entry whose reference equals ref.String(); NotFound otherwise.
  Result<ImageRecord> FindRecord(const registry::Reference& ref) const;
  // Records (or updates) the entry for `ref` (stored as ref.String()) → `manifest` (a
  // platform-specific manifest descriptor; its annotations are replaced by ours).
  // `repo_digest` may be empty (then the manifest digest is used). The manifest blob should
  // already be stored. If the entry moved away from another manifest that no other entry
  // references, that manifest stays as a dangling entry. A dangling entry for `manifest`
  // is removed (the image has a name again). Exclusive index.lock; atomic write.
  Status RecordImage(const registry::Reference& ref, const registry::Descriptor& manifest,
                     const registry::Digest& repo_digest);
  // Removes the entries `pred` selects in one locked read-modify-write and returns them.
  // Does not delete blobs (see CollectGarbage).
  template <typename Pred>
  Result<std::vector<ImageRecord>> RemoveRecords(Pred pred);

  // Runs `fn(records)` on the entries under the exclusive index.lock and writes the result
  // back atomically when `fn` returns OK and changed something (vector not equal by
  // reference+digest). The building block of every index update.
  Status UpdateRecords(const std::function<Status(std::vector<ImageRecord>&)>& fn);

  // The exclusive index.lock (for callers composing their own critical sections, e.g.
  // lease acquisition and GC). Do not call other locking Store methods while holding it.
  Result<FileLock> LockIndex() const;
  // The exclusive gc.lock (blocks until no writer holds the shared one).
  Result<FileLock> LockGcExclusive() const;
  // index.json read without locking (callers holding LockIndex use this).
  Result<std::vector<ImageRecord>> ReadRecordsUnlocked() const;
  Status WriteRecordsUnlocked(const std::vector<ImageRecord>& records) const;

  // Removes everything in tmp/ (crash leftovers). Only safe while the exclusive gc.lock is
  // held (then no BlobWriter is open); returns the number of entries removed.
  Result<int> CleanTmpLocked() const;

 private:
  explicit Store(std::string root) : root_(std::move(root)) {}
  Status Init();

  std::string root_;
};

// The record-placing step of RecordImage, for callers inside their own UpdateRecords: puts
// `entry` (reference, repository, manifest, repo_digest as given; its annotations dropped,
// `pulled` set to now) in place of the entry with the same reference or at the end, drops
// the image's dangling entries, and keeps the manifest the reference moved away from as a
// dangling entry when nothing else names it.
void PlaceRecord(std::vector<ImageRecord>& records, ImageRecord entry);

template <typename Pred>
Result<std::vector<ImageRecord>> Store::RemoveRecords(Pred pred) {
  std::vector<ImageRecord> removed;
  Status st = UpdateRecords([&](std::vector<ImageRecord>& records) {
    std::vector<ImageRecord> kept;
    for (auto& r : records) {
      if (pred(static_cast<const ImageRecord&>(r))) {
        removed.push_back(std::move(r));
      } else {
        kept.push_back(std::move(r));
      }
    }
    records = std::move(kept);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return removed;
}

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_STORE_H_
