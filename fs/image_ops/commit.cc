// imgfs — commit: an upper directory becomes a new image layer; images prepared for a push.
#include "fs/image_ops/commit.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/time.h"
#include "base/unique_fd.h"
#include "cache/containers.h"
#include "cache/images.h"
#include "cache/leases.h"
#include "fs/layer/layer_writer.h"
#include "fs/upper/upper_dir.h"
#include "registry/media_types.h"

namespace imgfs::fs {
namespace {

using nlohmann::json;
using registry::Descriptor;
using registry::Digest;
using registry::TarEntry;
using registry::TarEntryType;

// image-spec layer.md "Whiteouts": names with this prefix are reserved.
constexpr std::string_view kWhiteoutPrefix = ".wh.";

// File data is read and compressed in pieces of this size (bounded memory per commit).
constexpr size_t kPieceBytes = 1 << 20;

// zstd level 3 is zstd's own default and what containers/storage uses for layers.
constexpr int kZstdLevel = 3;

std::string Join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

// ---- the upper walk ----

// The walk never follows a link: each entry is opened O_PATH|O_NOFOLLOW relative to its
// parent's descriptor, described by fstat of that descriptor, and read (directories listed,
// files read, xattrs listed) through a descriptor of that same inode (reopened through
// /proc/self/fd, fs/upper_dir.h), never through a path. A container swapping a directory for
// a symlink while commit runs can make the walk fail or miss the entry, never read a host
// file. Holds one descriptor per directory level.
class UpperWalker {
 public:
  UpperWalker(std::string root, registry::TarWriter* writer)
      : root_(std::move(root)), writer_(writer) {}

  // Walks the whole upper. The root path is the caller's (resolved once, as given).
  Status Run() {
    UniqueFd root(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root.IsValid()) return Status::FromErrno(errno, "upper directory " + root_);
    return Walk(std::move(root), "");
  }

 private:
  // `fd`: an O_PATH descriptor of the entry `rel` ("" for the root).
  Status Walk(UniqueFd fd, const std::string& rel) {
    const std::string path = rel.empty() ? root_ : root_ + "/" + rel;
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
    std::string base = rel.substr(rel.rfind('/') + 1);
    if (!rel.empty() && base.starts_with(kWhiteoutPrefix)) {
      return Status::InvalidArgument("the upper holds " + path + ", a name reserved for " +
                                     "whiteouts: it cannot be committed");
    }
    if (IsWhiteout(st)) {
      if (rel.empty()) return Status::InvalidArgument("the upper root is a whiteout");
      return writer_->Add(registry::WhiteoutEntry(rel));
    }
    if (S_ISSOCK(st.st_mode)) {
      IMGFS_LOG(kWarning) << "commit: " << path << " is a socket; sockets are not committed";
      return Status::Ok();
    }

    TarEntry e;
    e.name = rel;
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime_sec = st.st_mtim.tv_sec;
    e.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    bool opaque = false;
    std::vector<std::string> names;
    if (int err = ListXattrsFd(fd.get(), &names); err != 0) {
      return Status::FromErrno(err, "listxattr " + path);
    }
    for (const std::string& name : names) {
      if (IsRedirectOrMetacopyXattr(name)) {
        return Status::Unsupported(path + " carries " + name +
                                   " (an overlayfs redirect/metacopy upper): commit needs "
                                   "uppers written without redirect_dir and metacopy");
      }
      std::string value;
      if (IsOverlayXattr(name) && !(IsOpaqueXattr(name) && S_ISDIR(st.st_mode))) continue;
      if (int err = GetXattrFd(fd.get(), name, &value); err != 0) {
        return Status::FromErrno(err, "getxattr " + name + " of " + path);
      }
      if (IsOpaqueXattr(name)) {
        opaque = opaque || value == "y";
      } else {
        e.xattrs[name] = std::move(value);
      }
    }

    if (S_ISDIR(st.st_mode)) {
      e.type = TarEntryType::kDirectory;
      IMGFS_RETURN_IF_ERROR(writer_->Add(e));
      if (opaque) IMGFS_RETURN_IF_ERROR(writer_->Add(registry::OpaqueEntry(rel)));
      IMGFS_ASSIGN_OR_RETURN(UniqueFd dir, Reopen(fd.get(), O_RDONLY | O_DIRECTORY, path));
      fd.Close();
      IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> children, ListDir(dir.get(), path));
      for (const std::string& child : children) {
        UniqueFd cfd(::openat(dir.get(), child.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!cfd.IsValid()) {
          return Status::FromErrno(errno, "open " + path + "/" + child)
              .WithContext("the upper changed while it was being committed");
        }
        IMGFS_RETURN_IF_ERROR(Walk(std::move(cfd), Join(rel, child)));
      }
      return Status::Ok();
    }
    if (S_ISLNK(st.st_mode)) {
      e.type = TarEntryType::kSymlink;
      std::string target(static_cast<size_t>(std::max<off_t>(st.st_size, 0)) + 1, '\0');
      while (true) {
        // The O_PATH descriptor of the link itself, with an empty name: its own target.
        ssize_t n = ::readlinkat(fd.get(), "", target.data(), target.size());
        if (n < 0) return Status::FromErrno(errno, "readlink " + path);
        if (static_cast<size_t>(n) < target.size()) {
          target.resize(static_cast<size_t>(n));
          break;
        }
        target.resize(target.size() * 2);
      }
      e.link_target = std::move(target);
      return writer_->Add(e);
    }
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      e.type = S_ISCHR(st.st_mode) ? TarEntryType::kChar : TarEntryType::kBlock;
      e.dev_major = major(st.st_rdev);
      e.dev_minor = minor(st.st_rdev);
      return writer_->Add(e);
    }
    if (S_ISFIFO(st.st_mode)) {
      e.type = TarEntryType::kFifo;
      return writer_->Add(e);
    }
    if (!S_ISREG(st.st_mode)) return Status::Unsupported("unknown file type at " + path);

    if (st.st_nlink > 1) {
      auto key = std::make_pair(st.st_dev, st.st_ino);
      auto it = links_.find(key);
      if (it != links_.end()) {
        e.type = TarEntryType::kHardlink;
        e.link_target = it->second;
        return writer_->Add(e);
      }
      links_.emplace(key, rel);
    }
    e.type = TarEntryType::kRegular;
    e.size = static_cast<uint64_t>(st.st_size);
    IMGFS_ASSIGN_OR_RETURN(UniqueFd file, Reopen(fd.get(), O_RDONLY, path));
    IMGFS_RETURN_IF_ERROR(writer_->WriteHeader(e));
    uint64_t offset = 0;
    while (offset < e.size) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kPieceBytes, e.size - offset));
      IMGFS_ASSIGN_OR_RETURN(std::string piece, PreadAll(file.get(), offset, want));
      if (piece.size() != want) {
        return Status::Unavailable(path + " changed while it was being committed (it shrank); " +
                                   "stop writers and commit again");
      }
      IMGFS_RETURN_IF_ERROR(writer_->WriteData(piece));
      offset += piece.size();
    }
    return Status::Ok();
  }

  // A readable descriptor of the inode an O_PATH descriptor holds (the same inode, whatever
  // happened to its name since), through its /proc/self/fd name.
  static Result<UniqueFd> Reopen(int path_fd, int flags, const std::string& path) {
    std::string proc = "/proc/self/fd/" + std::to_string(path_fd);
    UniqueFd fd(::open(proc.c_str(), flags | O_CLOEXEC));
    if (!fd.IsValid()) return Status::FromErrno(errno, "open " + path + " (through " + proc + ")");
    return fd;
  }

  static Result<std::vector<std::string>> ListDir(int dir_fd, const std::string& path) {
    int fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "opendir " + path);
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd), &::closedir);
    if (!dir) {
      ::close(fd);
      return Status::FromErrno(errno, "opendir " + path);
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* d = ::readdir(dir.get())) {
      std::string name = d->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
      errno = 0;
    }
    if (errno != 0) return Status::FromErrno(errno, "readdir " + path);
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string root_;
  registry::TarWriter* writer_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // inode → first name
};

// ---- compression ----

// Compresses a stream into `out`, hashing the compressed bytes.
class Compressor {
 public:
  using Sink = std::function<Status(std::string_view)>;
  Compressor(LayerCompression kind, Sink out) : kind_(kind), out_(std::move(out)) {}
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;
  ~Compressor() {
    if (zinit_) deflateEnd(&zs_);
  }

  Status Init() {
    if (kind_ == LayerCompression::kGzip) {
      // windowBits 15 + 16: a gzip wrapper with no name and mtime 0 (deterministic).
      if (deflateInit2(&zs_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
          Z_OK) {
        return Status::Internal("deflateInit2 failed");
      }
      zinit_ = true;
      return Status::Ok();
    }
    zc_.reset(ZSTD_createCCtx());
    if (!zc_) return Status::Internal("ZSTD_createCCtx failed");
    ZSTD_CCtx_setParameter(zc_.get(), ZSTD_c_compressionLevel, kZstdLevel);
    ZSTD_CCtx_setParameter(zc_.get(), ZSTD_c_checksumFlag, 1);
    return Status::Ok();
  }

  Status Write(std::string_view data) { return Run(data, false); }
  Status Finish() { return Run({}, true); }

 private:
  struct ZstdDeleter {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  };

  Status Run(std::string_view data, bool finish) {
    std::string buf(kPieceBytes / 4, '\0');
    if (kind_ == LayerCompression::kGzip) {
      zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
      zs_.avail_in = static_cast<uInt>(data.size());
      while (true) {
        zs_.next_out = reinterpret_cast<Bytef*>(buf.data());
        zs_.avail_out = static_cast<uInt>(buf.size());
        int rc = deflate(&zs_, finish ? Z_FINISH : Z_NO_FLUSH);
        if (rc == Z_STREAM_ERROR) return Status::Internal("deflate failed");
        size_t produced = buf.size() - zs_.avail_out;
        if (produced > 0) IMGFS_RETURN_IF_ERROR(out_(std::string_view(buf.data(), produced)));
        if (finish ? rc == Z_STREAM_END : (zs_.avail_in == 0 && zs_.avail_out != 0)) break;
      }
      return Status::Ok();
    }
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (true) {
      ZSTD_outBuffer out{buf.data(), buf.size(), 0};
      size_t rc = ZSTD_compressStream2(zc_.get(), &out, &in, finish ? ZSTD_e_end : ZSTD_e_continue);
      if (ZSTD_isError(rc)) {
        return Status::Internal(std::string("zstd compression failed: ") + ZSTD_getErrorName(rc));
      }
      if (out.pos > 0) IMGFS_RETURN_IF_ERROR(out_(std::string_view(buf.data(), out.pos)));
      if (finish ? rc == 0 : in.pos == in.size) break;
    }
    return Status::Ok();
  }

  LayerCompression kind_;
  Sink out_;
  z_stream zs_{};
  bool zinit_ = false;
  std::unique_ptr<ZSTD_CCtx, ZstdDeleter> zc_;
};

// ---- config changes ----

std::string_view TrimView(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// Splits "a=1 b="two words" c='x'" into words, honouring quotes and backslash escapes
// (Dockerfile word rules, simplified: no variable expansion).
Result<std::vector<std::string>> SplitWords(std::string_view s) {
  std::vector<std::string> words;
  std::string cur;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote != 0) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < s.size()) {
        cur += s[++i];
      } else {
        cur += c;
      }
      continue;
    }
    if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(std::move(cur));
      cur.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
    } else {
      cur += c;
    }
  }
  if (quote != 0)
    return Status::InvalidArgument("unterminated quote in \"" + std::string(s) + "\"");
  if (in_word) words.push_back(std::move(cur));
  return words;
}

// KEY=VALUE pairs, or the legacy "KEY VALUE…" form when the first word has no '='.
Result<std::vector<std::pair<std::string, std::string>>> ParsePairs(std::string_view args,
                                                                    std::string_view what) {
  std::vector<std::pair<std::string, std::string>> pairs;
  IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> words, SplitWords(args));
  if (words.empty()) return Status::InvalidArgument(std::string(what) + " needs an argument");
  if (words[0].find('=') == std::string::npos) {
    std::string_view rest = TrimView(args);
    size_t space = rest.find_first_of(" \t");
    if (space == std::string_view::npos) {
      return Status::InvalidArgument(std::string(what) + " " + std::string(rest) +
                                     " needs a value");
    }
    IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> key, SplitWords(rest.substr(0, space)));
    IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> value, SplitWords(rest.substr(space)));
    std::string joined;
    for (const std::string& v : value) joined += (joined.empty() ? "" : " ") + v;
    pairs.emplace_back(key.empty() ? std::string() : key[0], joined);
    return pairs;
  }
  for (const std::string& w : words) {
    size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0) {
      return Status::InvalidArgument(std::string(what) + ": \"" + w + "\" is not KEY=VALUE");
    }
    pairs.emplace_back(w.substr(0, eq), w.substr(eq + 1));
  }
  return pairs;
}

// CMD/ENTRYPOINT: exec form (JSON array of strings) or shell form (→ /bin/sh -c).
Result<json> ParseCommand(std::string_view args, std::string_view what) {
  args = TrimView(args);
  if (args.starts_with('[')) {
    json j = json::parse(args, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_array()) {
      return Status::InvalidArgument(std::string(what) +
                                     ": not a JSON array: " + std::string(args));
    }
    for (const json& e : j) {
      if (!e.is_string()) {
        return Status::InvalidArgument(std::string(what) + ": array elements must be strings");
      }
    }
    return j;
  }
  if (args.empty()) return json::array();
  return json::array({"/bin/sh", "-c", std::string(args)});
}

Status ApplyChange(std::string_view instruction, json& cfg) {
  instruction = TrimView(instruction);
  size_t space = instruction.find_first_of(" \t");
  std::string keyword(instruction.substr(0, space));
  std::transform(keyword.begin(), keyword.end(), keyword.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  std::string_view args =
      space == std::string_view::npos ? std::string_view() : TrimView(instruction.substr(space));
  auto need_args = [&]() -> Status {
    if (args.empty()) return Status::InvalidArgument(keyword + " needs an argument");
    return Status::Ok();
  };
  if (keyword == "ENV") {
    IMGFS_ASSIGN_OR_RETURN(auto pairs, ParsePairs(args, "ENV"));
    json env = cfg.contains("Env") && cfg["Env"].is_array() ? cfg["Env"] : json::array();
    for (const auto& [k, v] : pairs) {
      bool replaced = false;
      for (json& e : env) {
        if (!e.is_string()) continue;
        std::string s = e.get<std::string>();
        if (s.substr(0, s.find('=')) == k) {
          e = k + "=" + v;
          replaced = true;
        }
      }
      if (!replaced) env.push_back(k + "=" + v);
    }
    cfg["Env"] = env;
    return Status::Ok();
  }
  if (keyword == "LABEL") {
    IMGFS_ASSIGN_OR_RETURN(auto pairs, ParsePairs(args, "LABEL"));
    if (!cfg.contains("Labels") || !cfg["Labels"].is_object()) cfg["Labels"] = json::object();
    for (const auto& [k, v] : pairs) cfg["Labels"][k] = v;
    return Status::Ok();
  }
  if (keyword == "CMD" || keyword == "ENTRYPOINT") {
    IMGFS_RETURN_IF_ERROR(need_args());
    IMGFS_ASSIGN_OR_RETURN(json cmd, ParseCommand(args, keyword));
    cfg[keyword == "CMD" ? "Cmd" : "Entrypoint"] = cmd;
    return Status::Ok();
  }
  if (keyword == "WORKDIR" || keyword == "USER") {
    IMGFS_RETURN_IF_ERROR(need_args());
    IMGFS_ASSIGN_OR_RETURN(std::vector<std::string> words, SplitWords(args));
    if (words.size() != 1) return Status::InvalidArgument(keyword + " takes one argument");
    cfg[keyword == "USER" ? "User" : "WorkingDir"] = words[0];
    return Status::Ok();
  }
  if (keyword == "EXPOSE" || keyword == "VOLUME") {
    IMGFS_RETURN_IF_ERROR(need_args());
    std::vector<std::string> items;
    if (args.starts_with('[')) {
      IMGFS_ASSIGN_OR_RETURN(json arr, ParseCommand(args, keyword));
      for (const json& e : arr) items.push_back(e.get<std::string>());
    } else {
      IMGFS_ASSIGN_OR_RETURN(items, SplitWords(args));
    }
    const char* field = keyword == "EXPOSE" ? "ExposedPorts" : "Volumes";
    if (!cfg.contains(field) || !cfg[field].is_object()) cfg[field] = json::object();
    for (std::string item : items) {
      if (keyword == "EXPOSE" && item.find('/') == std::string::npos) item += "/tcp";
      cfg[field][item] = json::object();
    }
    return Status::Ok();
  }
  return Status::InvalidArgument("unsupported --change instruction \"" + std::string(instruction) +
                                 "\" (supported: ENV, CMD, ENTRYPOINT, WORKDIR, USER, LABEL, "
                                 "EXPOSE, VOLUME)");
}

// Serialises `j`; strings that are not valid UTF-8 (from user input) are InvalidArgument
// rather than nlohmann's exception.
Result<std::string> DumpJson(const json& j, std::string_view what) {
  try {
    return j.dump();
  } catch (const json::exception&) {
    return Status::InvalidArgument(std::string(what) + " is not valid UTF-8");
  }
}

// The OCI equivalent of a Docker layer media type (same bytes).
std::string OciLayerMediaType(const std::string& mt) {
  if (mt == registry::media::kDockerLayerGzip) return std::string(registry::media::kOciLayerGzip);
  if (mt == registry::media::kDockerLayerForeignGzip) {
    return std::string(registry::media::kOciLayerNondistGzip);
  }
  return mt;
}

// Streams a file into a blob writer.
Status CopyFileToBlob(const std::string& path, cache::BlobWriter& writer) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY | O_CLOEXEC));
  uint64_t offset = 0;
  while (true) {
    IMGFS_ASSIGN_OR_RETURN(std::string piece, PreadAll(fd.get(), offset, kPieceBytes));
    if (piece.empty()) break;
    IMGFS_RETURN_IF_ERROR(writer.Write(piece));
    offset += piece.size();
  }
  return Status::Ok();
}

// syncfs(2) of the filesystem holding `path` (best effort: logged on failure).
void SyncFs(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  UniqueFd owner(fd);
  if (::syncfs(fd) != 0) {
    IMGFS_LOG(kInfo) << "commit: syncfs " << path << ": " << std::strerror(errno);
  }
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return path;
  return buf;
}

}  // namespace

Result<LayerCompression> ParseLayerCompression(std::string_view text) {
  if (text.empty() || text == "gzip") return LayerCompression::kGzip;
  if (text == "zstd") return LayerCompression::kZstd;
  if (text == "estargz") return LayerCompression::kEstargz;
  if (text == "zstd:chunked") return LayerCompression::kZstdChunked;
  return Status::InvalidArgument("unknown layer format \"" + std::string(text) +
                                 "\" (gzip, zstd, estargz, zstd:chunked)");
}

Status WriteUpperLayer(const std::string& upper_dir, registry::TarWriter& writer) {
  struct stat st;
  if (::stat(upper_dir.c_str(), &st) != 0) {
    return Status::FromErrno(errno, "upper directory " + upper_dir);
  }
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(upper_dir + " is not a directory");
  UpperWalker walker(upper_dir, &writer);
  IMGFS_RETURN_IF_ERROR(walker.Run());
  return writer.Finish();
}

Result<std::string> ApplyConfigChanges(std::string_view config_json,
                                       const std::vector<std::string>& changes) {
  json doc = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Corrupt("the image config is not a JSON object");
  }
  try {
    if (!doc.contains("config") || !doc["config"].is_object()) doc["config"] = json::object();
    for (const std::string& change : changes) {
      Status st = ApplyChange(change, doc["config"]);
      if (!st.ok()) return st.WithContext("--change");
    }
  } catch (const json::exception& e) {
    return Status::InvalidArgument(std::string("--change: ") + e.what());
  }
  return DumpJson(doc, "--change");
}

Result<CommitSource> ResolveCommitSource(const cache::Store& store, std::string_view text) {
  std::string arg(text);
  struct stat st;
  if (::stat(arg.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    std::string real = RealPath(arg);
    IMGFS_ASSIGN_OR_RETURN(std::vector<cache::LeaseInfo> leases, cache::ListLiveLeases(store));
    for (const cache::LeaseInfo& lease : leases) {
      if (RealPath(lease.mountpoint) != real) continue;
      if (lease.upper.empty()) {
        return Status::InvalidArgument("the mount at " + arg +
                                       " is read-only: nothing to commit (mount it with --rw)");
      }
      CommitSource source;
      source.upper = lease.upper;
      source.base_manifest = lease.manifest;
      source.base_reference = lease.reference;
      source.mountpoint = real;
      source.description = "mount " + real;
      return source;
    }
  }
  if (arg.find('/') == std::string::npos) {
    Result<cache::ContainerInfo> container = cache::FindContainer(store, arg);
    if (container.has_value()) {
      CommitSource source;
      source.upper = cache::ContainerUpperDir(store, container->name);
      source.base_manifest = container->image;
      source.base_reference = container->reference;
      source.description = "container " + container->name;
      return source;
    }
    if (container.error().code() != StatusCode::kNotFound) return container.error();
  }
  return Status::NotFound("no container or writable mount named " + arg);
}

Result<CommittedImage> CommitUpper(cache::Store& store, const CommitSource& source,
                                   const registry::Reference& ref, const CommitOptions& options) {
  const std::string what = "committing " + source.description;
  auto fail = [&](const Status& st) { return st.WithContext(what); };

  // Base image.
  Result<std::string> base_bytes = store.ReadBlob(source.base_manifest);
  if (!base_bytes.has_value()) {
    return fail(base_bytes.error().WithContext("base manifest " + source.base_manifest.String()));
  }
  Result<registry::Manifest> base = registry::DecodeManifest(*base_bytes);
  if (!base.has_value()) return fail(base.error());
  Result<std::string> base_config = store.ReadBlob(base->config.digest);
  if (!base_config.has_value()) {
    return fail(base_config.error().WithContext("base config " + base->config.digest.String()));
  }

  if (!source.mountpoint.empty()) SyncFs(source.mountpoint);
  SyncFs(source.upper);

  // Layer: tar → compressor → temporary file, hashing both streams. The lazy formats are
  // written from the finished tar (a temporary file) by the layer writer of fs/convert.
  Result<cache::FileLock> guard = store.WriteGuard();
  if (!guard.has_value()) return fail(guard.error());
  const bool lazy = options.compression == LayerCompression::kEstargz ||
                    options.compression == LayerCompression::kZstdChunked;
  struct TempFile {
    std::string path;
    UniqueFd fd;
    ~TempFile() {
      if (!path.empty()) ::unlink(path.c_str());
    }
  };
  auto make_temp = [&](TempFile& t, const char* kind) -> Status {
    t.path = store.Subdir("tmp") + "/commit-" + kind + "-" + std::to_string(::getpid()) + "-" +
             std::to_string(std::time(nullptr));
    IMGFS_ASSIGN_OR_RETURN(t.fd, OpenFile(t.path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    return Status::Ok();
  };
  TempFile first;  // the blob (gzip, zstd) or the plain tar (lazy formats)
  TempFile lazy_blob;
  IMGFS_RETURN_IF_ERROR(make_temp(first, lazy ? "tar" : "blob"));

  registry::Sha256 tar_hash;
  registry::Sha256 blob_hash;
  uint64_t blob_bytes = 0;
  Compressor compressor(options.compression == LayerCompression::kZstd ? LayerCompression::kZstd
                                                                       : LayerCompression::kGzip,
                        [&](std::string_view bytes) -> Status {
                          blob_hash.Update(bytes);
                          blob_bytes += bytes.size();
                          return WriteAll(first.fd.get(), bytes);
                        });
  if (!lazy) IMGFS_RETURN_IF_ERROR(compressor.Init());
  uint64_t tar_bytes = 0;
  registry::TarWriter writer([&](std::string_view bytes) -> Status {
    tar_hash.Update(bytes);
    tar_bytes += bytes.size();
    return lazy ? WriteAll(first.fd.get(), bytes) : compressor.Write(bytes);
  });
  Status walked = WriteUpperLayer(source.upper, writer);
  if (!walked.ok()) return fail(walked);

  CommittedImage out;
  out.reference = ref;
  std::string blob_path = first.path;
  if (!lazy) {
    IMGFS_RETURN_IF_ERROR(compressor.Finish());
    out.diff_id = tar_hash.Finish();
    out.tar_bytes = tar_bytes;
    out.layer.media_type = options.compression == LayerCompression::kGzip
                               ? std::string(registry::media::kOciLayerGzip)
                               : std::string(registry::media::kOciLayerZstd);
    out.layer.digest = blob_hash.Finish();
    out.layer.size = static_cast<int64_t>(blob_bytes);
  } else {
    IMGFS_RETURN_IF_ERROR(make_temp(lazy_blob, "blob"));
    LayerWriterOptions lw;
    lw.format = options.compression == LayerCompression::kEstargz ? LazyFormat::kEstargz
                                                                  : LazyFormat::kZstdChunked;
    registry::BlobSink sink = [&](std::string_view bytes) -> Status {
      blob_hash.Update(bytes);
      blob_bytes += bytes.size();
      return WriteAll(lazy_blob.fd.get(), bytes);
    };
    Result<WrittenLayer> written =
        WriteLazyLayer(TarBytes::FromFd(first.fd.get(), tar_bytes), lw, sink);
    if (!written.has_value()) return fail(written.error());
    out.layer = written->descriptor;
    out.diff_id = written->diff_id;
    out.tar_bytes = written->uncompressed_size;
    Digest hashed = blob_hash.Finish();
    if (hashed != out.layer.digest || static_cast<int64_t>(blob_bytes) != out.layer.size) {
      return fail(Status::Internal("the layer writer reported " + out.layer.digest.String() +
                                   " but wrote " + hashed.String()));
    }
    blob_path = lazy_blob.path;
  }
  if (!store.HasBlob(out.layer.digest)) {
    Result<cache::BlobWriter> blob = store.NewBlobWriter(out.layer.digest, out.layer.size);
    if (!blob.has_value()) return fail(blob.error());
    Status copied = CopyFileToBlob(blob_path, *blob);
    if (!copied.ok()) return fail(copied);
    Status committed = blob->Commit();
    if (!committed.ok()) return fail(committed);
  }

  // Config.
  Result<std::string> changed = ApplyConfigChanges(*base_config, options.changes);
  if (!changed.has_value()) return changed.error();
  json cfg = json::parse(*changed, nullptr, /*allow_exceptions=*/false);
  std::string created = options.created.empty() ? NowRfc3339() : options.created;
  try {
    cfg["created"] = created;
    if (!options.author.empty()) cfg["author"] = options.author;
    if (!cfg.contains("rootfs") || !cfg["rootfs"].is_object()) {
      cfg["rootfs"] = {{"type", "layers"}, {"diff_ids", json::array()}};
    }
    if (!cfg["rootfs"].contains("diff_ids") || !cfg["rootfs"]["diff_ids"].is_array()) {
      cfg["rootfs"]["diff_ids"] = json::array();
    }
    cfg["rootfs"]["diff_ids"].push_back(out.diff_id.String());
    json history = {{"created", created},
                    {"created_by", options.created_by.empty() ? std::string("imgfs commit")
                                                              : options.created_by}};
    if (!options.author.empty()) history["author"] = options.author;
    if (!options.message.empty()) history["comment"] = options.message;
    if (!cfg.contains("history") || !cfg["history"].is_array()) cfg["history"] = json::array();
    cfg["history"].push_back(history);
  } catch (const json::exception& e) {
    return fail(Status::Corrupt(std::string("base config: ") + e.what()));
  }
  Result<std::string> dumped = DumpJson(cfg, "the commit message, author or --change");
  if (!dumped.has_value()) return fail(dumped.error());
  const std::string config_bytes = std::move(dumped).value();
  Result<Digest> config_digest = store.PutBlob(config_bytes);
  if (!config_digest.has_value()) return fail(config_digest.error());
  out.config_digest = *config_digest;

  // Manifest.
  registry::Manifest m;
  m.schema_version = 2;
  m.media_type = std::string(registry::media::kOciManifest);
  m.config.media_type = std::string(registry::media::kOciConfig);
  m.config.digest = out.config_digest;
  m.config.size = static_cast<int64_t>(config_bytes.size());
  for (Descriptor layer : base->layers) {
    layer.media_type = OciLayerMediaType(layer.media_type);
    m.layers.push_back(std::move(layer));
  }
  m.layers.push_back(out.layer);
  m.annotations["org.opencontainers.image.base.digest"] = source.base_manifest.String();
  if (!source.base_reference.empty()) {
    m.annotations["org.opencontainers.image.base.name"] = source.base_reference;
  }
  const std::string manifest_bytes = registry::EncodeManifest(m);
  Result<Digest> manifest_digest = store.PutBlob(manifest_bytes);
  if (!manifest_digest.has_value()) return fail(manifest_digest.error());
  out.manifest_digest = *manifest_digest;

  Descriptor desc;
  desc.media_type = m.media_type;
  desc.digest = out.manifest_digest;
  desc.size = static_cast<int64_t>(manifest_bytes.size());
  registry::Platform platform;
  platform.os = cfg.value("os", std::string());
  platform.architecture = cfg.value("architecture", std::string());
  platform.variant = cfg.value("variant", std::string());
  if (!platform.os.empty() && !platform.architecture.empty()) desc.platform = platform;
  Status recorded = store.RecordImage(ref, desc, out.manifest_digest);
  if (!recorded.ok()) return fail(recorded);
  return out;
}

// ---- push from the store ----

bool StoreBlobReader::Has(const Digest& digest) { return store_->HasBlob(digest); }

Result<std::string> StoreBlobReader::ReadAt(const Digest& digest, uint64_t offset, size_t length) {
  IMGFS_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(store_->BlobPath(digest), O_RDONLY | O_CLOEXEC));
  return PreadAll(fd.get(), offset, length);
}

Result<registry::ImageToPush> PrepareImagePush(const cache::Store& store, std::string_view text,
                                               const std::string& dest_registry_host,
                                               const std::string& dest_repository) {
  IMGFS_ASSIGN_OR_RETURN(cache::ResolvedImage image, cache::ResolveImage(store, text));
  registry::ImageToPush push;
  IMGFS_ASSIGN_OR_RETURN(push.manifest_bytes, store.ReadBlob(image.manifest.digest));
  push.manifest_media_type = !image.decoded.media_type.empty() ? image.decoded.media_type
                             : !image.manifest.media_type.empty()
                                 ? image.manifest.media_type
                                 : std::string(registry::media::kOciManifest);
  push.blobs.push_back(image.decoded.config);
  for (const Descriptor& layer : image.decoded.layers) push.blobs.push_back(layer);

  std::set<Digest> wanted;
  for (const Descriptor& d : push.blobs) wanted.insert(d.digest);
  // Repositories of the destination registry known to hold each blob: every recorded image
  // of that registry (its records name the repository it was pulled from or pushed to).
  const std::string prefix = dest_registry_host + "/";
  IMGFS_ASSIGN_OR_RETURN(std::vector<cache::ImageRecord> records, store.ListRecords());
  std::map<Digest, std::string> manifests;  // manifest digest → repository
  for (const cache::ImageRecord& r : records) {
    if (!r.repository.starts_with(prefix)) continue;
    std::string repo = r.repository.substr(prefix.size());
    if (repo == dest_repository || repo.empty()) continue;
    Result<std::string> bytes = store.ReadBlob(r.manifest.digest);
    if (!bytes.has_value()) continue;
    Result<registry::Manifest> m = registry::DecodeManifest(*bytes);
    if (!m.has_value()) continue;
    std::vector<Descriptor> blobs = m->layers;
    blobs.push_back(m->config);
    for (const Descriptor& d : blobs) {
      if (wanted.count(d.digest) == 0) continue;
      std::vector<std::string>& from = push.mount_from[d.digest];
      if (std::find(from.begin(), from.end(), repo) == from.end()) from.push_back(repo);
    }
  }
  return push;
}

}  // namespace imgfs::fs
