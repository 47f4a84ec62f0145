// imgfs — `imgfs save` and `imgfs load` (also `imgfs image save|load`): images of the store
// to and from a tar archive.
//
// `save` writes one archive that is both a docker archive and an OCI archive, as
// `docker save` does since docker 25: an OCI image layout (oci-layout, index.json,
// blobs/sha256/… holding each image's manifest, config and layers exactly as stored) plus
// docker's manifest.json ({"Config", "RepoTags", "Layers"} per image, paths into blobs/) and
// the legacy `repositories` file. `docker load`, `skopeo copy docker-archive:` and `oci-archive:`
// read it. `--format oci-archive` leaves the two docker files out. Layers keep their stored
// compression: docker load and skopeo decompress docker-archive layers they find compressed.
//
// `load` pulls every image of a docker or OCI archive (registry/local_source.h reads both)
// through the same path as `imgfs pull docker-archive:FILE` / `oci-archive:FILE`: each image of
// manifest.json or entry of index.json, under each name the archive gives it, like docker load.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "cache/images.h"
#include "cache/store.h"
#include "fs/image_ops/pull.h"
#include "registry/local_source.h"
#include "registry/reference.h"
#include "registry/tar_writer.h"
#include "registry/transport.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

using nlohmann::json;

constexpr std::string_view kSaveUsage =
    "Usage: imgfs save [OPTIONS] IMAGE [IMAGE...]\n\n"
    "Save one or more images to a tar archive (streamed to stdout by default). The archive is\n"
    "a docker archive (docker load, skopeo docker-archive:) and an OCI image layout in a tar\n"
    "(oci-archive:) at once; layers keep the compression they have in the store.";

constexpr std::string_view kLoadUsage =
    "Usage: imgfs load [OPTIONS]\n\n"
    "Load every image of a tar archive (docker archive or OCI archive) from a file or stdin.";

// Block size of blob copies into the archive.
constexpr size_t kCopyBlockBytes = 1 << 20;

// The annotations an OCI archive names its images by: the full reference (what imgfs and
// skopeo's oci-archive:FILE:REF select by) and containerd's image name (what docker reads).
constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";
constexpr std::string_view kContainerdNameAnnotation = "io.containerd.image.name";

std::string BlobMember(const registry::Digest& d) { return "blobs/sha256/" + d.hex(); }

// One image to save, with the names it is saved under.
struct SavedImage {
  cache::ResolvedImage image;
  std::vector<registry::Reference> names;
};

// Writes the archive into `writer`.
class ArchiveWriter {
 public:
  ArchiveWriter(const cache::Store& store, registry::TarWriter* writer)
      : store_(store), writer_(writer) {}

  Status Begin() {
    IMGFS_RETURN_IF_ERROR(writer_->Add(registry::DirEntry("blobs")));
    IMGFS_RETURN_IF_ERROR(writer_->Add(registry::DirEntry("blobs/sha256")));
    return writer_->Add(registry::FileEntry("oci-layout", 0), R"({"imageLayoutVersion":"1.0.0"})");
  }

  // Writes a stored blob once.
  Status Blob(const registry::Digest& digest) {
    if (!written_.insert(digest).second) return Status::Ok();
    IMGFS_ASSIGN_OR_RETURN(int64_t size, store_.BlobSize(digest));
    IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(store_.BlobPath(digest), O_RDONLY | O_CLOEXEC));
    IMGFS_RETURN_IF_ERROR(
        writer_->WriteHeader(registry::FileEntry(BlobMember(digest), static_cast<uint64_t>(size))));
    std::string buf(kCopyBlockBytes, '\0');
    int64_t left = size;
    while (left > 0) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return n < 0 ? Status::FromErrno(errno, "reading blob " + digest.String())
                     : Status::Corrupt("blob " + digest.String() + " is shorter than its size");
      }
      size_t take = static_cast<size_t>(std::min<int64_t>(n, left));
      IMGFS_RETURN_IF_ERROR(writer_->WriteData(std::string_view(buf.data(), take)));
      left -= static_cast<int64_t>(take);
    }
    return Status::Ok();
  }

  Status Image(const SavedImage& saved, bool docker_files) {
    const cache::ResolvedImage& img = saved.image;
    for (const registry::Descriptor& l : img.decoded.layers) {
      if (!store_.HasBlob(l.digest)) {
        return Status::Unsupported("layer " + l.digest.String() +
                                   " is not in the store (the image was pulled with --lazy); "
                                   "`imgfs pull` it first");
      }
    }
    IMGFS_RETURN_IF_ERROR(Blob(img.manifest.digest));
    IMGFS_RETURN_IF_ERROR(Blob(img.decoded.config.digest));
    json layers = json::array();
    for (const registry::Descriptor& l : img.decoded.layers) {
      IMGFS_RETURN_IF_ERROR(Blob(l.digest));
      layers.push_back(BlobMember(l.digest));
    }
    json tags = json::array();
    auto add_index_entry = [&](const registry::Reference* name) {
      json d = {{"mediaType", img.manifest.media_type},
                {"digest", img.manifest.digest.String()},
                {"size", img.manifest.size}};
      if (name != nullptr) {
        d["annotations"] = {{std::string(kRefNameAnnotation), name->String()},
                            {std::string(kContainerdNameAnnotation), name->String()}};
      }
      index_.push_back(std::move(d));
    };
    for (const registry::Reference& name : saved.names) {
      add_index_entry(&name);
      tags.push_back(name.FamiliarString());
      // docker's legacy file: repository → tag → the top layer (no v1 layer directories are
      // written; readers since docker 1.10 use manifest.json).
      if (!img.decoded.layers.empty()) {
        repositories_[name.FamiliarName()][name.tag()] = img.decoded.layers.back().digest.hex();
      }
    }
    if (saved.names.empty()) add_index_entry(nullptr);
    if (docker_files) {
      manifest_.push_back({{"Config", BlobMember(img.decoded.config.digest)},
                           {"RepoTags", tags.empty() ? json(nullptr) : tags},
                           {"Layers", layers}});
    }
    return Status::Ok();
  }

  Status Finish(bool docker_files) {
    json index = {{"schemaVersion", 2},
                  {"mediaType", "application/vnd.oci.image.index.v1+json"},
                  {"manifests", index_}};
    IMGFS_RETURN_IF_ERROR(Text("index.json", index.dump()));
    if (docker_files) {
      IMGFS_RETURN_IF_ERROR(Text("manifest.json", manifest_.dump()));
      if (!repositories_.empty()) {
        IMGFS_RETURN_IF_ERROR(Text("repositories", json(repositories_).dump()));
      }
    }
    return writer_->Finish();
  }

 private:
  Status Text(const std::string& name, const std::string& text) {
    return writer_->Add(registry::FileEntry(name, text.size()), text);
  }

  const cache::Store& store_;
  registry::TarWriter* writer_;
  std::set<registry::Digest> written_;
  json index_ = json::array();
  json manifest_ = json::array();
  std::map<std::string, std::map<std::string, std::string>> repositories_;
};

// A file removed when this goes out of scope.
class TempFile {
 public:
  TempFile() = default;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  // Creates DIR/<prefix>XXXXXX (0600).
  Result<UniqueFd> Create(const std::string& dir, const std::string& prefix) {
    std::string templ = dir + "/" + prefix + "XXXXXX";
    int fd = ::mkstemp(templ.data());
    if (fd < 0) return Status::FromErrno(errno, "creating a temporary file in " + dir);
    path_ = templ;
    return UniqueFd(fd);
  }
  const std::string& path() const { return path_; }
  // The file stays (renamed away by the caller).
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// `load`'s output, as docker prints it: "Loaded image: NAME" per name, "Loaded image ID: ID"
// for an image the archive gives no name; -q prints names only.
class LoadPrinter {
 public:
  explicit LoadPrinter(bool quiet) : quiet_(quiet) {}
  void Named(const fs::PulledImage& img) const {
    std::cout << (quiet_ ? "" : "Loaded image: ") << img.reference.FamiliarString() << "\n";
  }
  void Unnamed(const fs::PulledImage& img) const {
    if (!quiet_) std::cout << "Loaded image ID: " << img.config_digest.String() << "\n";
  }

 private:
  bool quiet_;
};

// docker archive: every image of manifest.json in order (`first` is image 0), recorded under
// its first RepoTag or, untagged, by manifest digest; then each further RepoTag.
Status LoadDockerArchive(const std::string& input, std::unique_ptr<registry::LocalSource> first,
                         fs::Puller& puller, const LoadPrinter& print) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> tags, first->ListTags());
  std::set<std::string> more_tags(tags.begin(), tags.end());
  std::unique_ptr<registry::LocalSource> source = std::move(first);
  for (size_t n = 1; source != nullptr; ++n) {
    const std::string& name = source->ref_name();
    IMGFS_ASSIGN_OR_RETURN(registry::SourceSpec spec,
                           registry::ParseSourceSpec(
                               "docker-archive:" + input + ":" +
                               (name.empty() ? "@" + source->manifest_digest().String() : name)));
    IMGFS_ASSIGN_OR_RETURN(registry::Reference record_as,
                           registry::LocalImageReference(spec, *source));
    IMGFS_ASSIGN_OR_RETURN(fs::PulledImage img, puller.PullFrom(*source, record_as, ""));
    if (name.empty()) {
      print.Unnamed(img);
    } else {
      print.Named(img);
      more_tags.erase(name);
    }
    // The next image; the end of manifest.json is NotFound "… has N images; no image @N".
    Result<std::unique_ptr<registry::LocalSource>> next =
        registry::LocalSource::OpenDockerArchive(input, "@" + std::to_string(n));
    if (!next.has_value()) {
      const Status& err = next.error();
      if (err.code() != StatusCode::kNotFound ||
          err.message().find(" images; no image @") == std::string::npos) {
        return err;
      }
      source = nullptr;
    } else {
      source = std::move(next).value();
    }
  }
  for (const std::string& tag : more_tags) {
    IMGFS_ASSIGN_OR_RETURN(std::vector<fs::PulledImage> pulled,
                           puller.Pull("docker-archive:" + input + ":" + tag));
    for (const fs::PulledImage& img : pulled) print.Named(img);
  }
  return Status::Ok();
}

// OCI archive: every entry of index.json, by its ref name, or by digest when it has none (a
// lone unnamed image keeps the name `imgfs pull oci-archive:FILE` gives it).
Status LoadOciArchive(const std::string& input, fs::Puller& puller, const LoadPrinter& print) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<registry::LocalSource::IndexEntry> entries,
                         registry::LocalSource::ListOciArchive(input));
  if (entries.empty()) return Status::InvalidArgument("oci archive " + input + " holds no image");
  std::set<std::string> done;
  for (const registry::LocalSource::IndexEntry& e : entries) {
    std::string selector;
    if (!e.ref_name.empty()) {
      selector = e.ref_name;
    } else if (entries.size() > 1) {
      selector = "@" + e.digest.String();
    }
    if (!done.insert(selector).second) continue;
    IMGFS_ASSIGN_OR_RETURN(
        std::vector<fs::PulledImage> pulled,
        puller.Pull("oci-archive:" + input + (selector.empty() ? "" : ":" + selector)));
    for (const fs::PulledImage& img : pulled) {
      if (selector.empty() || !e.ref_name.empty()) {
        print.Named(img);
      } else {
        print.Unnamed(img);
      }
    }
  }
  return Status::Ok();
}

}  // namespace

int RunSave(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"output", 'o', true, "FILE", "write to FILE instead of stdout"},
      {"format", 0, true, "FORMAT", "docker-archive (default) or oci-archive"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kSaveUsage, specs, &args, &code)) return code;
  if (args.positional().empty()) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" requires at least 1 argument");
  }
  const std::string format = args.Get("format", "docker-archive");
  if (format != "docker-archive" && format != "oci-archive") {
    return UsageError(ctx.name, "unknown format '" + format + "' (docker-archive or oci-archive)");
  }
  const bool docker_files = format == "docker-archive";
  const std::string output = args.Get("output");
  if (output.empty() && isatty(STDOUT_FILENO) == 1) {
    return Fail("cowardly refusing to save to a terminal. Use the -o flag or redirect");
  }

  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  // Keeps garbage collection from deleting blobs while they are copied.
  Result<cache::FileLock> guard = (*store)->WriteGuard();
  if (!guard.has_value()) return Fail(guard.error());

  // The images, one entry per image ID; named by each reference that names them (docker:
  // an image given by ID is saved without a name).
  std::vector<SavedImage> images;
  for (const std::string& text : args.positional()) {
    Result<cache::ResolvedImage> img = cache::ResolveImage(**store, text);
    if (!img.has_value()) return Fail(img.error().message());
    SavedImage* saved = nullptr;
    for (SavedImage& s : images) {
      if (s.image.id == img->id) saved = &s;
    }
    if (saved == nullptr) {
      images.push_back({*img, {}});
      saved = &images.back();
    }
    if (img->by_reference.has_value()) {
      Result<registry::Reference> ref = registry::Reference::Parse(img->by_reference->reference);
      if (ref.has_value() && !ref->tag().empty() &&
          std::find(saved->names.begin(), saved->names.end(), *ref) == saved->names.end()) {
        saved->names.push_back(*ref);
      }
    }
  }

  TempFile temp;
  UniqueFd out_fd;
  int fd = STDOUT_FILENO;
  if (!output.empty()) {
    Result<UniqueFd> created = temp.Create(DirOf(output), ".imgfs-save-");
    if (!created.has_value()) return Fail(created.error());
    out_fd = std::move(created).value();
    fd = out_fd.get();
  }
  registry::TarWriter tar([fd](std::string_view bytes) { return WriteAll(fd, bytes); });
  ArchiveWriter writer(**store, &tar);
  Status st = writer.Begin();
  for (const SavedImage& s : images) {
    if (st.ok()) st = writer.Image(s, docker_files);
  }
  if (st.ok()) st = writer.Finish(docker_files);
  if (st.ok() && !output.empty()) {
    if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
      st = Status::FromErrno(errno, "writing " + output);
    } else if (::rename(temp.path().c_str(), output.c_str()) != 0) {
      st = Status::FromErrno(errno, "renaming the archive to " + output);
    } else {
      temp.Release();
    }
  }
  if (!st.ok()) return Fail(st.WithContext("saving"));
  return kExitOk;
}

int RunLoad(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"input", 'i', true, "FILE", "read from FILE instead of stdin"},
      {"quiet", 'q', false, "", "print only the loaded names"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kLoadUsage, specs, &args, &code)) return code;
  if (!args.positional().empty()) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" accepts no arguments");
  }
  std::string input = args.Get("input");
  TempFile temp;
  if (input.empty()) {
    if (isatty(STDIN_FILENO) == 1) {
      return Fail("requested load from stdin, but stdin is a terminal (use -i FILE or redirect)");
    }
    // Archives are read with pread (registry/local_source.h): stdin goes to a file first.
    const char* tmpdir = std::getenv("TMPDIR");
    Result<UniqueFd> fd =
        temp.Create(tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp", "imgfs-load-");
    if (!fd.has_value()) return Fail(fd.error());
    std::string buf(kCopyBlockBytes, '\0');
    for (;;) {
      ssize_t n = ::read(STDIN_FILENO, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Fail(Status::FromErrno(errno, "reading stdin"));
      if (n == 0) break;
      Status w = WriteAll(fd->get(), std::string_view(buf.data(), static_cast<size_t>(n)));
      if (!w.ok()) return Fail(w.WithContext("buffering stdin"));
    }
    input = temp.path();
  }

  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  LoadPrinter print(args.Has("quiet"));
  fs::Puller puller(store->get(), fs::PullOptions{});

  // A docker archive has manifest.json; anything else is read as an OCI archive.
  Result<std::unique_ptr<registry::LocalSource>> first =
      registry::LocalSource::OpenDockerArchive(input, "@0");
  Status st;
  if (first.has_value()) {
    st = LoadDockerArchive(input, std::move(first).value(), puller, print);
  } else if (first.error().message().find("no manifest.json") != std::string::npos) {
    st = LoadOciArchive(input, puller, print);
  } else {
    st = first.error();
  }
  std::cout << std::flush;
  if (!st.ok()) return Fail(st.WithContext("loading " + input));
  return kExitOk;
}

}  // namespace imgfs::tools
