// imgfs — Store: OCI image layout on local disk, blobs and index.json.
#include "cache/store.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/random.h"
#include "base/time.h"
#include "registry/media_types.h"
#include "registry/oci_layout.h"

namespace imgfs::cache {
namespace {

using json = nlohmann::json;
using registry::Descriptor;
using registry::Digest;

constexpr char kStoreInfoFile[] = "imgfs.json";
constexpr char kIndexLock[] = "index.lock";
constexpr char kGcLock[] = "gc.lock";
constexpr const char* kSubdirs[] = {"blobs",  "blobs/sha256", "tmp",       "indexes",
                                    "chunks", "mounts",       "containers"};
// The store holds the content of private images (pulled with credentials) and the uppers of
// containers (copied-up setuid files among them): only its owner may enter it.
constexpr mode_t kPrivateDirMode = 0700;
// Blob files: the 0700 directories are what keeps them private; 0600 as well, so a blob
// stays private if it is hard-linked or moved out, or an admin loosens the root.
constexpr mode_t kBlobFileMode = 0600;

// Creates `path` 0700 if missing; an existing directory owned by this process's euid is
// tightened to 0700 (a store made by an older imgfs was 0755). One owned by someone else is
// left alone: that is not our store to change. `follow`: whether `path` itself may be a
// symlink (the root may be; the subdirectories are never followed).
Status MakePrivateDir(const std::string& path, bool follow) {
  IMGFS_RETURN_IF_ERROR(MakeDirs(path, kPrivateDirMode));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW)));
  if (!fd.IsValid()) return Status::FromErrno(errno, "open " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (st.st_uid == ::geteuid() && (st.st_mode & 07777) != kPrivateDirMode &&
      ::fchmod(fd.get(), kPrivateDirMode) != 0) {
    return Status::FromErrno(errno, "chmod " + path);
  }
  return Status::Ok();
}

// One index.json entry → ImageRecord (the descriptor is checked by registry/oci_layout.h).
ImageRecord RecordOf(Descriptor d) {
  auto ann = [&d](std::string_view key) -> std::string {
    auto it = d.annotations.find(std::string(key));
    return it == d.annotations.end() ? std::string() : it->second;
  };
  ImageRecord r;
  r.reference = ann(kAnnotationReference);
  if (r.reference.empty()) {
    // Entries written by other tools (skopeo copy oci:ROOT:NAME) carry only ref.name.
    // Kept verbatim so that rewriting index.json does not rename the entry.
    r.reference = ann(registry::kRefNameAnnotation);
  }
  r.repository = ann(kAnnotationRepository);
  if (r.repository.empty() && !r.reference.empty()) {
    auto ref = registry::Reference::Parse(r.reference);
    if (ref.has_value()) r.repository = ref->Name();
  }
  std::string repo_digest = ann(kAnnotationRepoDigest);
  if (!repo_digest.empty()) {
    auto rd = Digest::Parse(repo_digest);
    if (rd.has_value()) r.repo_digest = *rd;
  }
  r.pulled = ann(kAnnotationPulled);
  r.manifest = std::move(d);
  return r;
}

Descriptor EntryOf(const ImageRecord& r) {
  Descriptor d = r.manifest;
  if (d.media_type.empty()) d.media_type = std::string(registry::media::kOciManifest);
  for (std::string_view k : {registry::kRefNameAnnotation, kAnnotationReference,
                             kAnnotationRepository, kAnnotationRepoDigest, kAnnotationPulled}) {
    d.annotations.erase(std::string(k));
  }
  if (!r.reference.empty()) {
    d.annotations[std::string(registry::kRefNameAnnotation)] = r.reference;
    d.annotations[std::string(kAnnotationReference)] = r.reference;
  }
  if (!r.repository.empty()) d.annotations[std::string(kAnnotationRepository)] = r.repository;
  if (!r.repo_digest.empty()) {
    d.annotations[std::string(kAnnotationRepoDigest)] = r.repo_digest.String();
  }
  if (!r.pulled.empty()) d.annotations[std::string(kAnnotationPulled)] = r.pulled;
  return d;
}

registry::Index IndexOf(const std::vector<ImageRecord>& records) {
  registry::Index index;
  for (const ImageRecord& r : records) index.manifests.push_back(EntryOf(r));
  return index;
}

// Creates `path` with `content` unless it exists. Caller holds index.lock.
Status CreateIfMissing(const std::string& path, std::string_view content) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return Status::Ok();
  if (errno != ENOENT) return Status::FromErrno(errno, "stat " + path);
  return WriteFileAtomic(path, content);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// DefaultStoreRoot

Result<std::string> DefaultStoreRoot() {
  const char* env = std::getenv("IMGFS_ROOT");  // NOLINT(concurrency-mt-unsafe)
  if (env != nullptr && env[0] != '\0') return std::string(env);
  if (::geteuid() == 0) return std::string("/var/lib/imgfs");
  const char* xdg = std::getenv("XDG_DATA_HOME");  // NOLINT(concurrency-mt-unsafe)
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/imgfs";
  const char* home = std::getenv("HOME");  // NOLINT(concurrency-mt-unsafe)
  if (home != nullptr && home[0] == '/') return std::string(home) + "/.local/share/imgfs";
  return Status::InvalidArgument(
      "cannot determine the image store directory: set IMGFS_ROOT or HOME");
}

// ---------------------------------------------------------------------------------------
// BlobWriter

BlobWriter::BlobWriter(BlobWriter&& other) noexcept
    : tmp_path_(std::move(other.tmp_path_)),
      final_path_(std::move(other.final_path_)),
      expected_(std::move(other.expected_)),
      expected_size_(other.expected_size_),
      fd_(std::move(other.fd_)),
      hasher_(std::move(other.hasher_)),
      written_(other.written_),
      finished_(std::exchange(other.finished_, true)),
      gc_lock_(std::move(other.gc_lock_)) {}

BlobWriter& BlobWriter::operator=(BlobWriter&& other) noexcept {
  if (this != &other) {
    Abort();
    tmp_path_ = std::move(other.tmp_path_);
    final_path_ = std::move(other.final_path_);
    expected_ = std::move(other.expected_);
    expected_size_ = other.expected_size_;
    fd_ = std::move(other.fd_);
    hasher_ = std::move(other.hasher_);
    written_ = other.written_;
    finished_ = std::exchange(other.finished_, true);
    gc_lock_ = std::move(other.gc_lock_);
  }
  return *this;
}

BlobWriter::~BlobWriter() { Abort(); }

Status BlobWriter::Write(std::string_view data) {
  if (finished_)
    return Status::InvalidArgument("blob write of " + expected_.String() + " is finished");
  if (expected_size_ >= 0 && written_ + data.size() > static_cast<uint64_t>(expected_size_)) {
    return Status::Corrupt("blob " + expected_.String() + ": more than the expected " +
                           std::to_string(expected_size_) + " bytes");
  }
  IMGFS_RETURN_IF_ERROR(WriteAll(fd_.get(), data).WithContext("writing " + tmp_path_));
  hasher_->Update(data);
  written_ += data.size();
  return Status::Ok();
}

Status BlobWriter::Commit() {
  if (finished_)
    return Status::InvalidArgument("blob write of " + expected_.String() + " is finished");
  Status st;
  if (expected_size_ >= 0 && written_ != static_cast<uint64_t>(expected_size_)) {
    st = Status::Corrupt("blob " + expected_.String() + ": size " + std::to_string(written_) +
                         ", expected " + std::to_string(expected_size_));
  }
  if (st.ok()) {
    Digest got = hasher_->Finish();
    if (got != expected_) {
      st = Status::Corrupt("blob digest mismatch: expected " + expected_.String() + ", got " +
                           got.String());
    }
  }
  if (st.ok() && ::fsync(fd_.get()) != 0) st = Status::FromErrno(errno, "fsync " + tmp_path_);
  if (st.ok() && fd_.Close() != 0) st = Status::FromErrno(errno, "close " + tmp_path_);
  if (!st.ok()) {
    Abort();
    return st;
  }
  struct stat sb {};
  if (::stat(final_path_.c_str(), &sb) == 0) {
    // Already stored by someone else: same content, nothing to do.
    ::unlink(tmp_path_.c_str());
  } else if (::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
    st = Status::FromErrno(errno, "rename " + tmp_path_ + " to " + final_path_);
    Abort();
    return st;
  } else {
    st = SyncParentDir(final_path_);
  }
  finished_ = true;
  gc_lock_.Unlock();
  return st;
}

void BlobWriter::Abort() {
  if (finished_) return;
  finished_ = true;
  fd_.Close();
  if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
  gc_lock_.Unlock();
}

// ---------------------------------------------------------------------------------------
// Store

Result<std::unique_ptr<Store>> Store::Open(const std::string& root) {
  if (root.empty()) return Status::InvalidArgument("empty store root");
  std::string clean = root;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  std::unique_ptr<Store> store(new Store(clean));
  IMGFS_RETURN_IF_ERROR(store->Init().WithContext("opening image store " + clean));
  return store;
}

Result<std::unique_ptr<Store>> Store::OpenDefault() {
  IMGFS_ASSIGN_OR_RETURN(std::string root, DefaultStoreRoot());
  return Open(root);
}

Status Store::Init() {
  IMGFS_RETURN_IF_ERROR(MakePrivateDir(root_, /*follow=*/true));
  for (const char* sub : kSubdirs) {
    IMGFS_RETURN_IF_ERROR(MakePrivateDir(root_ + "/" + sub, /*follow=*/false));
  }
  IMGFS_ASSIGN_OR_RETURN(FileLock lock, LockIndex());
  // oci-layout and index.json
  IMGFS_RETURN_IF_ERROR(registry::InitOciLayout(root_));
  // imgfs.json
  std::string info_path = root_ + "/" + kStoreInfoFile;
  json info = {{"format", "imgfs-store"}, {"version", kStoreFormatVersion}};
  IMGFS_RETURN_IF_ERROR(CreateIfMissing(info_path, info.dump() + "\n"));
  IMGFS_ASSIGN_OR_RETURN(std::string info_text, ReadFile(info_path));
  json ij = json::parse(info_text, nullptr, false);
  if (ij.is_discarded() || !ij.is_object() || !ij.contains("version") ||
      !ij["version"].is_number_integer()) {
    return Status::Corrupt(info_path + ": not an imgfs store description");
  }
  int version = ij["version"].get<int>();
  if (version > kStoreFormatVersion) {
    return Status::Unsupported(info_path + ": store format version " + std::to_string(version) +
                               " is newer than this imgfs supports (" +
                               std::to_string(kStoreFormatVersion) + "); upgrade imgfs");
  }
  return Status::Ok();
}

std::string Store::Subdir(std::string_view name) const { return root_ + "/" + std::string(name); }

std::string Store::BlobPath(const Digest& digest) const {
  return root_ + "/blobs/" + digest.algorithm() + "/" + digest.hex();
}

bool Store::HasBlob(const Digest& digest) const {
  if (digest.empty()) return false;
  struct stat st {};
  return ::stat(BlobPath(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Result<int64_t> Store::BlobSize(const Digest& digest) const {
  struct stat st {};
  std::string path = BlobPath(digest);
  if (digest.empty() || ::stat(path.c_str(), &st) != 0) {
    if (digest.empty() || errno == ENOENT) {
      return Status::NotFound("blob " + digest.String() + " is not in the store");
    }
    return Status::FromErrno(errno, "stat " + path);
  }
  return static_cast<int64_t>(st.st_size);
}

Result<std::string> Store::ReadBlob(const Digest& digest) const {
  IMGFS_ASSIGN_OR_RETURN(int64_t size, BlobSize(digest));
  if (size > kMaxReadBlobBytes) {
    return Status::InvalidArgument("blob " + digest.String() + " is too large to read whole (" +
                                   std::to_string(size) + " bytes)");
  }
  auto data = ReadFile(BlobPath(digest));
  if (!data.has_value()) {
    if (data.error().code() == StatusCode::kNotFound) {
      return Status::NotFound("blob " + digest.String() + " is not in the store");
    }
    return data.error();
  }
  IMGFS_RETURN_IF_ERROR(digest.Verify(*data).WithContext("stored blob " + BlobPath(digest)));
  return data;
}

Result<BlobWriter> Store::NewBlobWriter(const Digest& expected, int64_t expected_size) {
  if (expected.algorithm() != "sha256") {
    return Status::Unsupported("cannot store blob " + expected.String() +
                               ": only sha256 digests are supported");
  }
  BlobWriter w;
  IMGFS_ASSIGN_OR_RETURN(w.gc_lock_,
                         FileLock::Acquire(root_ + "/" + kGcLock, FileLock::Mode::kShared));
  w.expected_ = expected;
  w.expected_size_ = expected_size;
  w.final_path_ = BlobPath(expected);
  w.tmp_path_ = root_ + "/tmp/blob-" + expected.hex().substr(0, 16) + "-" + RandomHex(6);
  IMGFS_ASSIGN_OR_RETURN(
      w.fd_, OpenFile(w.tmp_path_, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kBlobFileMode));
  w.hasher_ = std::make_unique<registry::Sha256>();
  return w;
}

Status Store::PutBlob(const Digest& expected, std::string_view data) {
  if (HasBlob(expected)) return Status::Ok();
  IMGFS_ASSIGN_OR_RETURN(BlobWriter w, NewBlobWriter(expected, static_cast<int64_t>(data.size())));
  IMGFS_RETURN_IF_ERROR(w.Write(data));
  return w.Commit();
}

Result<Digest> Store::PutBlob(std::string_view data) {
  Digest d = Digest::Sha256Of(data);
  IMGFS_RETURN_IF_ERROR(PutBlob(d, data));
  return d;
}

Result<FileLock> Store::WriteGuard() const {
  return FileLock::Acquire(root_ + "/" + kGcLock, FileLock::Mode::kShared);
}

Result<FileLock> Store::LockIndex() const {
  return FileLock::Acquire(root_ + "/" + kIndexLock, FileLock::Mode::kExclusive);
}

Result<FileLock> Store::LockGcExclusive() const {
  return FileLock::Acquire(root_ + "/" + kGcLock, FileLock::Mode::kExclusive);
}

Result<std::vector<ImageRecord>> Store::ReadRecordsUnlocked() const {
  Result<registry::Index> index = registry::ReadOciIndex(root_);
  if (!index.has_value()) {
    if (index.error().code() == StatusCode::kNotFound) return std::vector<ImageRecord>();
    return index.error();
  }
  std::vector<ImageRecord> records;
  for (Descriptor& d : index->manifests) records.push_back(RecordOf(std::move(d)));
  return records;
}

Status Store::WriteRecordsUnlocked(const std::vector<ImageRecord>& records) const {
  return registry::WriteOciIndex(root_, IndexOf(records));
}

Result<std::vector<ImageRecord>> Store::ListRecords() const { return ReadRecordsUnlocked(); }

Result<ImageRecord> Store::FindRecord(const registry::Reference& ref) const {
  IMGFS_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, ReadRecordsUnlocked());
  std::string want = ref.String();
  for (auto& r : records) {
    if (r.reference == want) return std::move(r);
  }
  return Status::NotFound("No such image: " + ref.FamiliarString());
}

Status Store::UpdateRecords(const std::function<Status(std::vector<ImageRecord>&)>& fn) {
  IMGFS_ASSIGN_OR_RETURN(FileLock lock, LockIndex());
  IMGFS_ASSIGN_OR_RETURN(std::vector<ImageRecord> records, ReadRecordsUnlocked());
  const std::string before = registry::EncodeOciIndex(IndexOf(records));
  IMGFS_RETURN_IF_ERROR(fn(records));
  const std::string after = registry::EncodeOciIndex(IndexOf(records));
  if (after == before) return Status::Ok();
  return WriteFileAtomic(root_ + "/" + std::string(registry::kOciIndexFile), after);
}

Status Store::RecordImage(const registry::Reference& ref, const Descriptor& manifest,
                          const Digest& repo_digest) {
  if (manifest.digest.empty()) return Status::InvalidArgument("RecordImage: empty manifest digest");
  ImageRecord entry;
  entry.reference = ref.String();
  entry.repository = ref.Name();
  entry.manifest = manifest;
  entry.repo_digest = repo_digest.empty() ? manifest.digest : repo_digest;
  return UpdateRecords([&](std::vector<ImageRecord>& records) {
    PlaceRecord(records, entry);
    return Status::Ok();
  });
}

void PlaceRecord(std::vector<ImageRecord>& records, ImageRecord entry) {
  entry.manifest.annotations.clear();
  if (entry.manifest.media_type.empty()) {
    entry.manifest.media_type = std::string(registry::media::kOciManifest);
  }
  entry.pulled = NowRfc3339Nanos();
  std::optional<ImageRecord> previous;
  size_t pos = records.size();
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].reference == entry.reference) {
      previous = records[i];
      records[i] = entry;
      pos = i;
      break;
    }
  }
  if (pos == records.size()) records.push_back(entry);
  // The image has a name again: drop its dangling entries.
  std::erase_if(records, [&](const ImageRecord& r) {
    return r.dangling() && r.manifest.digest == entry.manifest.digest;
  });
  if (previous.has_value() && previous->manifest.digest != entry.manifest.digest) {
    bool still_referenced = false;
    for (const auto& r : records) {
      if (r.manifest.digest == previous->manifest.digest) still_referenced = true;
    }
    if (!still_referenced) {
      ImageRecord dangling = *previous;
      dangling.reference.clear();
      records.push_back(std::move(dangling));
    }
  }
}

Result<int> Store::CleanTmpLocked() const {
  std::string tmp = root_ + "/tmp";
  std::vector<std::string> names;
  std::error_code ec;
  std::filesystem::directory_iterator it(tmp, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().string());
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return Status::FromErrno(ec.value(), "list " + tmp);
  }
  for (const auto& name : names) IMGFS_RETURN_IF_ERROR(RemoveTree(name));
  return static_cast<int>(names.size());
}

}  // namespace imgfs::cache
