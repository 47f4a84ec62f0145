// imgfs — local image sources: see local_source.h for the contract.
#include "registry/local_source.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/media_types.h"
#include "registry/oci_layout.h"
#include "registry/reference.h"
#include "registry/tar_reader.h"

namespace imgfs::registry {
namespace {

using json = nlohmann::json;

// Manifests and indexes are small documents; registries cap them at 4 MiB
// (distribution's default maximum manifest body), so a bigger one is not a manifest.
constexpr uint64_t kMaxManifestSize = 4u << 20;
// manifest.json / index.json of an archive: same order of magnitude, some slack for many tags.
constexpr uint64_t kMaxIndexSize = 16u << 20;
// Read granularity for hashing and streaming blobs.
constexpr size_t kReadChunk = 1u << 20;
// Symlink/hardlink hops followed inside an archive before giving up (loops).
constexpr int kMaxLinkHops = 8;

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out.empty() ? "none" : out;
}

// Guesses a document's media type from its mediaType field or its shape (OCI documents may
// omit mediaType: umoci writes manifests without it).
std::string SniffMediaType(std::string_view bytes) {
  json doc = json::parse(bytes, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return std::string(media::kOciManifest);
  auto it = doc.find("mediaType");
  if (it != doc.end() && it->is_string()) return it->get<std::string>();
  if (doc.contains("manifests")) return std::string(media::kOciIndex);
  return std::string(media::kOciManifest);
}

Result<std::string> StringField(const json& obj, const char* key, bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::Corrupt(std::string("missing \"") + key + "\"");
    return std::string();
  }
  if (!it->is_string()) return Status::Corrupt(std::string("\"") + key + "\" is not a string");
  return it->get<std::string>();
}

}  // namespace

struct LocalSource::BlobLocation {
  UniqueFd owned;  // oci layout: the blob file
  int fd = -1;
  uint64_t offset = 0;
  uint64_t size = 0;
  const std::string* inline_data = nullptr;  // docker archive: the synthesised manifest
};

LocalSource::LocalSource(Kind kind, std::string path) : kind_(kind), path_(std::move(path)) {}
LocalSource::~LocalSource() = default;

std::string LocalSource::Describe() const {
  switch (kind_) {
    case Kind::kOciLayout:
      return "oci layout " + path_;
    case Kind::kOciArchive:
      return "oci archive " + path_;
    case Kind::kDockerArchive:
      return "docker archive " + path_;
  }
  return path_;
}

Status LocalSource::Context(const Status& s, const Digest* digest) const {
  std::string ctx = Describe();
  if (digest != nullptr) ctx += ", blob " + digest->String();
  return s.WithContext(ctx);
}

Result<std::unique_ptr<LocalSource>> LocalSource::OpenOciLayout(const std::string& dir,
                                                                std::string_view ref) {
  std::unique_ptr<LocalSource> src(new LocalSource(Kind::kOciLayout, dir));
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::NotFound("oci layout " + dir + " does not exist");
    return Status::FromErrno(errno, "oci layout " + dir);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("oci layout " + dir + " is not a directory");
  }
  IMGFS_RETURN_IF_ERROR(src->LoadOciIndex(ref));
  return src;
}

Result<std::unique_ptr<LocalSource>> LocalSource::OpenOciArchive(const std::string& file,
                                                                 std::string_view ref) {
  std::unique_ptr<LocalSource> src(new LocalSource(Kind::kOciArchive, file));
  IMGFS_RETURN_IF_ERROR(src->IndexArchive("not an oci archive"));
  IMGFS_RETURN_IF_ERROR(src->LoadOciIndex(ref));
  return src;
}

Result<std::unique_ptr<LocalSource>> LocalSource::OpenDockerArchive(const std::string& file,
                                                                    std::string_view selector) {
  std::unique_ptr<LocalSource> src(new LocalSource(Kind::kDockerArchive, file));
  IMGFS_RETURN_IF_ERROR(src->IndexArchive("not a docker archive"));
  IMGFS_RETURN_IF_ERROR(src->LoadDockerManifest(selector));
  return src;
}

Status LocalSource::IndexArchive(const char* what) {
  Result<UniqueFd> fd = OpenFile(path_, O_RDONLY | O_CLOEXEC);
  if (!fd.has_value()) {
    if (fd.error().code() == StatusCode::kNotFound) {
      return Status::NotFound(Describe() + " does not exist");
    }
    return fd.error();
  }
  fd_ = std::move(*fd);
  struct stat st;
  if (fstat(fd_.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path_);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(Describe() + " is not a regular file");
  }
  FdTarInput input(fd_.get(), 0, static_cast<uint64_t>(st.st_size));
  TarReader reader(&input);
  while (true) {
    Result<std::optional<TarEntry>> e = reader.Next();
    if (!e.has_value()) {
      return Status(e.error().code() == StatusCode::kIo ? StatusCode::kIo : StatusCode::kCorrupt,
                    std::string(what) + ": " + path_ + ": " + e.error().message());
    }
    if (!e->has_value()) break;
    const TarEntry& t = **e;
    Member m;
    m.offset = t.payload_offset;
    switch (t.type) {
      case TarEntryType::kRegular:
        m.type = '0';
        m.size = t.size;
        break;
      case TarEntryType::kHardlink:
        m.type = '1';
        m.link_target = t.link_target;
        break;
      case TarEntryType::kSymlink:
        m.type = '2';
        m.link_target = t.link_target;
        break;
      case TarEntryType::kDirectory:
        m.type = '5';
        break;
      default:
        m.type = '?';
        break;
    }
    members_[t.name] = std::move(m);  // duplicates: the last one wins, as on extraction
  }
  if (members_.empty()) {
    return Status::Corrupt(std::string(what) + ": " + path_ + ": empty archive");
  }
  return Status::Ok();
}

Result<const LocalSource::Member*> LocalSource::ResolveMember(const std::string& name) const {
  std::string current = name;
  for (int hop = 0; hop <= kMaxLinkHops; ++hop) {
    auto it = members_.find(current);
    if (it == members_.end()) {
      return Status::NotFound(Describe() + " has no member '" + current + "'");
    }
    const Member& m = it->second;
    if (m.type == '0') return &m;
    if (m.type == '1') {
      current = m.link_target;
      continue;
    }
    if (m.type == '2') {
      std::string target = m.link_target;
      if (!target.empty() && target[0] == '/') {
        target = target.substr(1);  // absolute links are relative to the archive root
      } else {
        size_t slash = current.rfind('/');
        target =
            (slash == std::string::npos ? std::string() : current.substr(0, slash + 1)) + target;
      }
      Result<std::string> norm = NormalizeTarPath(target);
      if (!norm.has_value()) {
        return Status::Corrupt(Describe() + ": member '" + current + "' links outside the archive");
      }
      current = *norm;
      continue;
    }
    return Status::Corrupt(Describe() + ": member '" + current + "' is not a regular file");
  }
  return Status::Corrupt(Describe() + ": too many links resolving member '" + name + "'");
}

Result<std::string> LocalSource::ReadMember(const std::string& name, uint64_t max_size) const {
  if (kind_ == Kind::kOciLayout) {
    Result<UniqueFd> fd = OpenFile(path_ + "/" + name, O_RDONLY | O_CLOEXEC);
    if (!fd.has_value()) return fd.error();
    struct stat st;
    if (fstat(fd->get(), &st) != 0) return Status::FromErrno(errno, "stat " + name);
    if (static_cast<uint64_t>(st.st_size) > max_size) {
      return Status::Corrupt(Describe() + ": " + name + " is too large (" +
                             std::to_string(st.st_size) + " bytes)");
    }
    return PreadAll(fd->get(), 0, static_cast<size_t>(st.st_size));
  }
  IMGFS_ASSIGN_OR_RETURN(const Member* m, ResolveMember(name));
  if (m->size > max_size) {
    return Status::Corrupt(Describe() + ": " + name + " is too large (" + std::to_string(m->size) +
                           " bytes)");
  }
  IMGFS_ASSIGN_OR_RETURN(std::string data,
                         PreadAll(fd_.get(), m->offset, static_cast<size_t>(m->size)));
  if (data.size() != m->size) {
    return Status::Corrupt(Describe() + ": member " + name + " is truncated");
  }
  return data;
}

Result<std::vector<LocalSource::IndexEntry>> LocalSource::ListOciArchive(const std::string& file) {
  std::unique_ptr<LocalSource> src(new LocalSource(Kind::kOciArchive, file));
  IMGFS_RETURN_IF_ERROR(src->IndexArchive("not an oci archive"));
  IMGFS_RETURN_IF_ERROR(src->ReadOciIndex());
  return src->index_;
}

Status LocalSource::ReadOciIndex() {
  Result<std::string> layout = ReadMember(std::string(kOciLayoutFile), kMaxOciIndexBytes);
  if (!layout.has_value()) {
    if (layout.error().code() == StatusCode::kNotFound) {
      return Status::Corrupt(Describe() + " is not an OCI image layout (no oci-layout file)");
    }
    return Context(layout.error(), nullptr);
  }
  IMGFS_RETURN_IF_ERROR(CheckOciLayoutFile(*layout).WithContext(Describe()));
  Result<std::string> bytes = ReadMember(std::string(kOciIndexFile), kMaxOciIndexBytes);
  if (!bytes.has_value()) {
    if (bytes.error().code() == StatusCode::kNotFound) {
      return Status::Corrupt(Describe() + " is not an OCI image layout (no index.json)");
    }
    return Context(bytes.error(), nullptr);
  }
  Result<Index> index = DecodeOciIndex(*bytes);
  if (!index.has_value()) return index.error().WithContext(Describe());
  for (Descriptor& d : index->manifests) {
    IndexEntry e;
    e.media_type = std::move(d.media_type);
    e.digest = std::move(d.digest);
    e.size = d.size;
    if (auto r = d.annotations.find(std::string(kRefNameAnnotation)); r != d.annotations.end()) {
      e.ref_name = r->second;
    }
    index_.push_back(std::move(e));
  }
  return Status::Ok();
}

Status LocalSource::LoadOciIndex(std::string_view ref) {
  IMGFS_RETURN_IF_ERROR(ReadOciIndex());
  std::vector<std::string> refs;
  for (const IndexEntry& e : index_)
    refs.push_back(e.ref_name.empty() ? e.digest.String() : e.ref_name);
  if (ref.empty()) {
    if (index_.size() != 1) {
      return Status::InvalidArgument(Describe() + " holds " + std::to_string(index_.size()) +
                                     " images; choose one with :REF (refs: " + Join(refs) + ")");
    }
    selected_ = index_[0];
  } else if (ref[0] == '@') {
    Result<Digest> digest = Digest::Parse(ref.substr(1));
    if (!digest.has_value()) {
      return Status::InvalidArgument(Describe() + ": " + digest.error().message());
    }
    selected_ = IndexEntry{};
    selected_.digest = *digest;
    for (const IndexEntry& e : index_) {
      if (e.digest == *digest) selected_ = e;
    }
    IMGFS_ASSIGN_OR_RETURN(BlobLocation loc, Locate(*digest));  // must exist
    (void)loc;
  } else {
    const IndexEntry* found = nullptr;
    for (const IndexEntry& e : index_) {
      if (e.ref_name == ref) {
        if (found != nullptr) {
          return Status::Corrupt(Describe() + ": ref '" + std::string(ref) +
                                 "' names more than one image in index.json");
        }
        found = &e;
      }
    }
    if (found == nullptr) {
      return Status::NotFound(Describe() + " has no image '" + std::string(ref) +
                              "' (refs: " + Join(refs) + ")");
    }
    selected_ = *found;
  }
  ref_name_ = selected_.ref_name;
  return Status::Ok();
}

Status LocalSource::LoadDockerManifest(std::string_view selector) {
  Result<std::string> text = ReadMember("manifest.json", kMaxIndexSize);
  if (!text.has_value()) {
    if (text.error().code() == StatusCode::kNotFound) {
      return Status::Corrupt("not a docker archive: " + path_ + ": no manifest.json");
    }
    return Context(text.error(), nullptr);
  }
  json doc = json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_array()) {
    return Status::Corrupt("not a docker archive: " + path_ +
                           ": manifest.json is not a JSON array");
  }
  if (doc.empty()) return Status::Corrupt(Describe() + ": manifest.json lists no image");

  struct Image {
    std::string config;
    std::vector<std::string> tags;
    std::vector<std::string> layers;
  };
  std::vector<Image> images;
  for (const json& item : doc) {
    if (!item.is_object()) {
      return Status::Corrupt(Describe() + ": manifest.json entry is not an object");
    }
    Image img;
    Result<std::string> config = StringField(item, "Config", true);
    if (!config.has_value()) {
      return Status::Corrupt(Describe() + ": manifest.json: " + config.error().message());
    }
    img.config = *config;
    for (const char* key : {"RepoTags", "Layers"}) {
      auto it = item.find(key);
      if (it == item.end() || it->is_null()) continue;
      if (!it->is_array()) {
        return Status::Corrupt(Describe() + ": manifest.json: \"" + key + "\" is not an array");
      }
      for (const json& s : *it) {
        if (!s.is_string()) {
          return Status::Corrupt(Describe() + ": manifest.json: \"" + key +
                                 "\" holds a non-string");
        }
        (std::string_view(key) == "Layers" ? img.layers : img.tags).push_back(s.get<std::string>());
      }
    }
    repo_tags_.insert(repo_tags_.end(), img.tags.begin(), img.tags.end());
    images.push_back(std::move(img));
  }

  const Image* chosen = nullptr;
  if (selector.empty()) {
    if (images.size() != 1) {
      return Status::InvalidArgument(
          Describe() + " holds " + std::to_string(images.size()) +
          " images; choose one with :REPO:TAG or :@N (tags: " + Join(repo_tags_) + ")");
    }
    chosen = &images[0];
  } else if (selector[0] == '@') {
    std::string_view num = selector.substr(1);
    size_t n = 0;
    bool ok = !num.empty() && num.size() < 10;
    for (char c : num) {
      ok = ok && c >= '0' && c <= '9';
      if (ok) n = n * 10 + static_cast<size_t>(c - '0');
    }
    if (!ok) {
      return Status::InvalidArgument(Describe() + ": invalid image index '" +
                                     std::string(selector) + "' (use @N)");
    }
    if (n >= images.size()) {
      return Status::NotFound(Describe() + " has " + std::to_string(images.size()) +
                              " images; no image " + std::string(selector));
    }
    chosen = &images[n];
  } else {
    std::string want(selector);
    size_t slash = want.rfind('/');
    if (want.find(':', slash == std::string::npos ? 0 : slash) == std::string::npos) {
      want += ":latest";
    }
    // Exact RepoTag first, then the same image name after normalisation ("alpine:3.20" ==
    // "docker.io/library/alpine:3.20").
    std::string matched;
    for (const Image& img : images) {
      if (std::find(img.tags.begin(), img.tags.end(), want) != img.tags.end()) {
        chosen = &img;
        matched = want;
      }
    }
    Result<Reference> want_ref = Reference::Parse(want);
    for (const Image& img : images) {
      if (chosen != nullptr || !want_ref.has_value()) break;
      for (const std::string& tag : img.tags) {
        Result<Reference> r = Reference::Parse(tag);
        if (r.has_value() && r->String() == want_ref->String()) {
          chosen = &img;
          matched = tag;
          break;
        }
      }
    }
    if (chosen == nullptr) {
      return Status::NotFound(Describe() + " has no image '" + want +
                              "' (tags: " + Join(repo_tags_) + ")");
    }
    ref_name_ = matched;
  }
  if (ref_name_.empty() && !chosen->tags.empty()) ref_name_ = chosen->tags[0];

  // Config: any JSON document; hashed as stored.
  Result<std::string> config = ReadMember(chosen->config, kMaxIndexSize);
  if (!config.has_value()) return Context(config.error(), nullptr);
  Digest config_digest = Digest::Sha256Of(*config);
  Result<const Member*> config_member = ResolveMember(chosen->config);
  if (!config_member.has_value()) return config_member.error();
  docker_blobs_[config_digest] = chosen->config;

  json manifest = json::object();
  manifest["schemaVersion"] = 2;
  manifest["mediaType"] = std::string(media::kOciManifest);
  manifest["config"] = {{"mediaType", std::string(media::kOciConfig)},
                        {"digest", config_digest.String()},
                        {"size", config->size()}};
  json layers = json::array();
  for (const std::string& name : chosen->layers) {
    IMGFS_ASSIGN_OR_RETURN(const Member* m, ResolveMember(name));
    Sha256 hasher;
    std::string magic;
    for (uint64_t off = 0; off < m->size;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kReadChunk, m->size - off));
      IMGFS_ASSIGN_OR_RETURN(std::string chunk, PreadAll(fd_.get(), m->offset + off, n));
      if (chunk.size() != n) return Status::Corrupt(Describe() + ": layer " + name + " truncated");
      if (off == 0) magic = chunk.substr(0, 4);
      hasher.Update(chunk);
      off += n;
    }
    std::string_view media_type = media::kOciLayerTar;
    if (magic.size() >= 2 && magic[0] == '\x1f' && magic[1] == '\x8b') {
      media_type = media::kOciLayerGzip;
    } else if (magic == std::string("\x28\xb5\x2f\xfd", 4)) {
      media_type = media::kOciLayerZstd;
    }
    Digest d = hasher.Finish();
    docker_blobs_[d] = name;
    layers.push_back(
        {{"mediaType", std::string(media_type)}, {"digest", d.String()}, {"size", m->size}});
  }
  manifest["layers"] = std::move(layers);
  synthetic_manifest_ = manifest.dump();
  selected_ = IndexEntry{};
  selected_.media_type = std::string(media::kOciManifest);
  selected_.digest = Digest::Sha256Of(synthetic_manifest_);
  selected_.size = static_cast<int64_t>(synthetic_manifest_.size());
  selected_.ref_name = ref_name_;
  return Status::Ok();
}

Result<LocalSource::BlobLocation> LocalSource::Locate(const Digest& digest) const {
  if (digest.empty()) return Status::InvalidArgument("empty digest");
  BlobLocation loc;
  if (kind_ == Kind::kDockerArchive) {
    if (digest == selected_.digest) {
      loc.inline_data = &synthetic_manifest_;
      loc.size = synthetic_manifest_.size();
      return loc;
    }
    auto it = docker_blobs_.find(digest);
    if (it == docker_blobs_.end()) {
      return Status::NotFound(Describe() + " has no blob " + digest.String());
    }
    IMGFS_ASSIGN_OR_RETURN(const Member* m, ResolveMember(it->second));
    loc.fd = fd_.get();
    loc.offset = m->offset;
    loc.size = m->size;
    return loc;
  }
  // Digest::Parse guarantees algorithm and hex hold no '/' or "..".
  const std::string name = "blobs/" + digest.algorithm() + "/" + digest.hex();
  if (kind_ == Kind::kOciLayout) {
    Result<UniqueFd> fd = OpenFile(path_ + "/" + name, O_RDONLY | O_CLOEXEC);
    if (!fd.has_value()) {
      if (fd.error().code() == StatusCode::kNotFound) {
        return Status::NotFound(Describe() + " has no blob " + digest.String());
      }
      return Context(fd.error(), &digest);
    }
    struct stat st;
    if (fstat(fd->get(), &st) != 0) return Status::FromErrno(errno, "stat " + name);
    loc.owned = std::move(*fd);
    loc.fd = loc.owned.get();
    loc.size = static_cast<uint64_t>(st.st_size);
    return loc;
  }
  Result<const Member*> m = ResolveMember(name);
  if (!m.has_value()) {
    if (m.error().code() == StatusCode::kNotFound) {
      return Status::NotFound(Describe() + " has no blob " + digest.String());
    }
    return m.error();
  }
  loc.fd = fd_.get();
  loc.offset = (*m)->offset;
  loc.size = (*m)->size;
  return loc;
}

Result<FetchedManifest> LocalSource::ReadManifestBlob(const Digest& digest, std::string media_type,
                                                      int64_t size) {
  IMGFS_ASSIGN_OR_RETURN(BlobLocation loc, Locate(digest));
  if (loc.size > kMaxManifestSize) {
    return Context(
        Status::Corrupt("manifest of " + std::to_string(loc.size) + " bytes is too large"),
        &digest);
  }
  FetchedManifest out;
  if (loc.inline_data != nullptr) {
    out.bytes = *loc.inline_data;
  } else {
    IMGFS_ASSIGN_OR_RETURN(out.bytes, PreadAll(loc.fd, loc.offset, static_cast<size_t>(loc.size)));
  }
  if (out.bytes.size() != loc.size) {
    return Context(Status::Corrupt("manifest blob is truncated"), &digest);
  }
  if (size >= 0 && static_cast<uint64_t>(size) != loc.size) {
    return Context(Status::Corrupt("manifest size " + std::to_string(loc.size) +
                                   " differs from the descriptor's " + std::to_string(size)),
                   &digest);
  }
  Status verify = digest.Verify(out.bytes);
  if (!verify.ok()) return Context(verify, &digest);
  out.digest = digest;
  out.media_type = media_type.empty() ? SniffMediaType(out.bytes) : std::move(media_type);
  return out;
}

Result<FetchedManifest> LocalSource::GetManifest(std::string_view tag_or_digest) {
  if (tag_or_digest.empty()) {
    return ReadManifestBlob(selected_.digest, selected_.media_type, selected_.size);
  }
  if (tag_or_digest.find(':') != std::string_view::npos && tag_or_digest.rfind("sha256:", 0) == 0) {
    Result<Digest> digest = Digest::Parse(tag_or_digest);
    if (!digest.has_value()) return digest.error();
    std::string media_type;
    int64_t size = -1;
    for (const IndexEntry& e : index_) {
      if (e.digest == *digest) {
        media_type = e.media_type;
        size = e.size;
      }
    }
    if (kind_ == Kind::kDockerArchive && *digest != selected_.digest) {
      return Status::NotFound(Describe() + " has no manifest " + digest->String());
    }
    return ReadManifestBlob(*digest, media_type, size);
  }
  if (kind_ == Kind::kDockerArchive) {
    if (!ref_name_.empty() && tag_or_digest == ref_name_) {
      return ReadManifestBlob(selected_.digest, selected_.media_type, selected_.size);
    }
    if (std::find(repo_tags_.begin(), repo_tags_.end(), tag_or_digest) != repo_tags_.end()) {
      return Status::NotFound(
          Describe() + ": image '" + std::string(tag_or_digest) +
          "' is not the one opened (open it with :" + std::string(tag_or_digest) + ")");
    }
    return Status::NotFound(Describe() + " has no image '" + std::string(tag_or_digest) + "'");
  }
  for (const IndexEntry& e : index_) {
    if (e.ref_name == tag_or_digest) return ReadManifestBlob(e.digest, e.media_type, e.size);
  }
  return Status::NotFound(Describe() + " has no image '" + std::string(tag_or_digest) + "'");
}

Status LocalSource::FetchBlob(const Digest& digest, int64_t expected_size, const BlobSink& sink) {
  if (digest.algorithm() != "sha256") {
    return Status::Unsupported("cannot verify " + digest.String() + ": only sha256 is supported");
  }
  IMGFS_ASSIGN_OR_RETURN(BlobLocation loc, Locate(digest));
  if (expected_size >= 0 && static_cast<uint64_t>(expected_size) != loc.size) {
    return Context(Status::Corrupt("size " + std::to_string(loc.size) + " differs from the " +
                                   "expected " + std::to_string(expected_size)),
                   &digest);
  }
  Sha256 hasher;
  if (loc.inline_data != nullptr) {
    hasher.Update(*loc.inline_data);
    IMGFS_RETURN_IF_ERROR(sink(*loc.inline_data));
  } else {
    for (uint64_t off = 0; off < loc.size;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kReadChunk, loc.size - off));
      Result<std::string> chunk = PreadAll(loc.fd, loc.offset + off, n);
      if (!chunk.has_value()) return Context(chunk.error(), &digest);
      if (chunk->size() != n) return Context(Status::Corrupt("blob is truncated"), &digest);
      hasher.Update(*chunk);
      IMGFS_RETURN_IF_ERROR(sink(*chunk));
      off += n;
    }
  }
  Digest got = hasher.Finish();
  if (got != digest) {
    return Context(Status::Corrupt("digest mismatch: content hashes to " + got.String()), &digest);
  }
  return Status::Ok();
}

Result<std::string> LocalSource::ReadBlobRange(const Digest& digest, ByteRange range) {
  IMGFS_ASSIGN_OR_RETURN(BlobLocation loc, Locate(digest));
  if (range.offset > loc.size) {
    return Context(Status::InvalidArgument("range starts at " + std::to_string(range.offset) +
                                           ", past the end (" + std::to_string(loc.size) + ")"),
                   &digest);
  }
  const uint64_t len = std::min(range.length, loc.size - range.offset);
  if (loc.inline_data != nullptr) {
    return loc.inline_data->substr(static_cast<size_t>(range.offset), static_cast<size_t>(len));
  }
  Result<std::string> data = PreadAll(loc.fd, loc.offset + range.offset, static_cast<size_t>(len));
  if (!data.has_value()) return Context(data.error(), &digest);
  return data;
}

Result<std::vector<std::string>> LocalSource::ListTags() {
  std::set<std::string> tags;
  if (kind_ == Kind::kDockerArchive) {
    tags.insert(repo_tags_.begin(), repo_tags_.end());
  } else {
    for (const IndexEntry& e : index_) {
      if (!e.ref_name.empty()) tags.insert(e.ref_name);
    }
  }
  return std::vector<std::string>(tags.begin(), tags.end());
}

}  // namespace imgfs::registry
