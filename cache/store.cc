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
#include "registry/media_types.h"

namespace imgfs::cache {
namespace {

using json = nlohmann::json;
using registry::Descriptor;
using registry::Digest;

constexpr char kOciLayoutFile[] = "oci-layout";
constexpr char kIndexFile[] = "index.json";
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

// Random hex digits from getrandom(2): unlike a seeded PRNG, distinct in forked children.
std::string RandomHex(int digits) {
  static const char kHex[] = "0123456789abcdef";
  unsigned char bytes[32] = {};
  size_t want = std::min<size_t>(sizeof(bytes), static_cast<size_t>(digits + 1) / 2);
  size_t got = 0;
  while (got < want) {
    ssize_t n = ::getrandom(bytes + got, want - got, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      break;  // fall back to pid + time below
    }
    got += static_cast<size_t>(n);
  }
  std::string s;
  for (size_t i = 0; i < want; ++i) {
    s += kHex[bytes[i] >> 4];
    s += kHex[bytes[i] & 0xf];
  }
  s.resize(static_cast<size_t>(digits));
  if (got < want) {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    s = std::to_string(::getpid()) + "-" + std::to_string(ts.tv_nsec) + "-" + s;
  }
  return s;
}

std::string NowRfc3339() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  ::gmtime_r(&ts.tv_sec, &utc);
  char buf[64];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &utc);
  char frac[16];
  std::snprintf(frac, sizeof(frac), ".%09ldZ", static_cast<long>(ts.tv_nsec));
  return std::string(buf, n) + frac;
}

std::string GetString(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// One index.json entry → ImageRecord. Corrupt on a malformed descriptor.
Result<ImageRecord> DecodeEntry(const json& e, size_t pos) {
  auto bad = [pos](const std::string& what) {
    return Status::Corrupt("index.json: entry " + std::to_string(pos) + ": " + what);
  };
  if (!e.is_object()) return bad("not an object");
  ImageRecord r;
  Descriptor& d = r.manifest;
  d.media_type = GetString(e, "mediaType");
  auto digest = Digest::Parse(GetString(e, "digest"));
  if (!digest.has_value()) return bad(digest.error().message());
  d.digest = *digest;
  auto size = e.find("size");
  if (size == e.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return bad("missing or invalid size");
  }
  d.size = size->get<int64_t>();
  d.artifact_type = GetString(e, "artifactType");
  if (auto it = e.find("urls"); it != e.end() && it->is_array()) {
    for (const auto& u : *it) {
      if (u.is_string()) d.urls.push_back(u.get<std::string>());
    }
  }
  if (auto it = e.find("platform"); it != e.end() && it->is_object()) {
    registry::Platform p;
    p.os = GetString(*it, "os");
    p.architecture = GetString(*it, "architecture");
    p.variant = GetString(*it, "variant");
    p.os_version = GetString(*it, "os.version");
    d.platform = p;
  }
  if (auto it = e.find("annotations"); it != e.end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      if (v.is_string()) d.annotations[k] = v.get<std::string>();
    }
  }
  auto ann = [&d](std::string_view key) -> std::string {
    auto it = d.annotations.find(std::string(key));
    return it == d.annotations.end() ? std::string() : it->second;
  };
  r.reference = ann(kAnnotationReference);
  if (r.reference.empty()) {
    // Entries written by other tools (skopeo copy oci:ROOT:NAME) carry only ref.name.
    // Kept verbatim so that rewriting index.json does not rename the entry.
    r.reference = ann(kAnnotationRefName);
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
  return r;
}

json EncodeEntry(const ImageRecord& r) {
  const Descriptor& d = r.manifest;
  json e = json::object();
  e["mediaType"] = d.media_type.empty() ? std::string(registry::media::kOciManifest) : d.media_type;
  e["digest"] = d.digest.String();
  e["size"] = d.size;
  if (!d.artifact_type.empty()) e["artifactType"] = d.artifact_type;
  if (!d.urls.empty()) e["urls"] = d.urls;
  if (d.platform.has_value()) {
    json p = json::object();
    p["architecture"] = d.platform->architecture;
    p["os"] = d.platform->os;
    if (!d.platform->os_version.empty()) p["os.version"] = d.platform->os_version;
    if (!d.platform->variant.empty()) p["variant"] = d.platform->variant;
    e["platform"] = p;
  }
  std::map<std::string, std::string> ann = d.annotations;
  for (std::string_view k : {kAnnotationRefName, kAnnotationReference, kAnnotationRepository,
                             kAnnotationRepoDigest, kAnnotationPulled}) {
    ann.erase(std::string(k));
  }
  if (!r.reference.empty()) {
    ann[std::string(kAnnotationRefName)] = r.reference;
    ann[std::string(kAnnotationReference)] = r.reference;
  }
  if (!r.repository.empty()) ann[std::string(kAnnotationRepository)] = r.repository;
  if (!r.repo_digest.empty()) ann[std::string(kAnnotationRepoDigest)] = r.repo_digest.String();
  if (!r.pulled.empty()) ann[std::string(kAnnotationPulled)] = r.pulled;
  if (!ann.empty()) e["annotations"] = ann;
  return e;
}

std::string EncodeIndexJson(const std::vector<ImageRecord>& records) {
  json idx = json::object();
  idx["schemaVersion"] = 2;
  idx["mediaType"] = std::string(registry::media::kOciIndex);
  json list = json::array();
  for (const auto& r : records) list.push_back(EncodeEntry(r));
  idx["manifests"] = std::move(list);
  return idx.dump() + "\n";
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
  // oci-layout
  std::string layout_path = root_ + "/" + kOciLayoutFile;
  IMGFS_RETURN_IF_ERROR(CreateIfMissing(layout_path, "{\"imageLayoutVersion\":\"1.0.0\"}"));
  IMGFS_ASSIGN_OR_RETURN(std::string layout, ReadFile(layout_path));
  json lj = json::parse(layout, nullptr, false);
  if (lj.is_discarded() || !lj.is_object() || GetString(lj, "imageLayoutVersion").empty()) {
    return Status::Corrupt(layout_path + ": not an OCI layout file");
  }
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
  // index.json
  IMGFS_RETURN_IF_ERROR(CreateIfMissing(root_ + "/" + kIndexFile, EncodeIndexJson({})));
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
  w.tmp_path_ = root_ + "/tmp/blob-" + expected.hex().substr(0, 16) + "-" + RandomHex(12);
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
  std::string path = root_ + "/" + kIndexFile;
  auto text = ReadFile(path);
  if (!text.has_value()) {
    if (text.error().code() == StatusCode::kNotFound) return std::vector<ImageRecord>();
    return text.error();
  }
  json idx = json::parse(*text, nullptr, false);
  if (idx.is_discarded() || !idx.is_object()) return Status::Corrupt(path + ": not a JSON object");
  std::vector<ImageRecord> records;
  auto it = idx.find("manifests");
  if (it == idx.end() || it->is_null()) return records;
  if (!it->is_array()) return Status::Corrupt(path + ": \"manifests\" is not an array");
  for (size_t i = 0; i < it->size(); ++i) {
    auto r = DecodeEntry((*it)[i], i);
    if (!r.has_value()) return r.error().WithContext(root_);
    records.push_back(std::move(*r));
  }
  return records;
}

Status Store::WriteRecordsUnlocked(const std::vector<ImageRecord>& records) const {
  return WriteFileAtomic(root_ + "/" + kIndexFile, EncodeIndexJson(records));
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
  std::string before = EncodeIndexJson(records);
  IMGFS_RETURN_IF_ERROR(fn(records));
  std::string after = EncodeIndexJson(records);
  if (after == before) return Status::Ok();
  return WriteFileAtomic(root_ + "/" + kIndexFile, after);
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
  entry.pulled = NowRfc3339();
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
