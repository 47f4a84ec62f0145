// imgfs — image conversion to eStargz / zstd:chunked (see image_convert.h).
#include "fs/image_ops/image_convert.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "cache/images.h"
#include "fs/image_ops/commit.h"
#include "fs/layer/index_builder.h"
#include "fs/layer/stream_decoder.h"
#include "registry/media_types.h"
#include "registry/push.h"
#include "registry/transport.h"

namespace imgfs::fs {
namespace {

// Compressed bytes read per step while decompressing a source layer.
constexpr size_t kReadBlockBytes = 1 << 20;
constexpr size_t kDecodeBlockBytes = 1 << 20;

// A temporary file in the store's tmp/ that is removed when this object goes away.
class TempFile {
 public:
  static Result<TempFile> Create(const cache::Store& store, std::string_view what) {
    TempFile t;
    IMGFS_RETURN_IF_ERROR(MakeDirs(store.Subdir("tmp")));
    t.path_ = store.Subdir("tmp") + "/convert-" + std::string(what) + "-XXXXXX";
    int fd = mkostemp(t.path_.data(), O_CLOEXEC);
    if (fd < 0) {
      std::string path = t.path_;
      t.path_.clear();
      return Status::FromErrno(errno, "creating " + path);
    }
    t.fd_ = UniqueFd(fd);
    return t;
  }
  TempFile() = default;
  TempFile(TempFile&& other) noexcept
      : path_(std::exchange(other.path_, std::string())), fd_(std::move(other.fd_)) {}
  TempFile& operator=(TempFile&&) = delete;
  TempFile(const TempFile&) = delete;
  ~TempFile() {
    if (!path_.empty()) unlink(path_.c_str());
  }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  UniqueFd fd_;
};

Result<LayerFormat> SourceFormat(const registry::Descriptor& desc) {
  Result<LayerFormat> format = LayerFormatForMediaType(desc.media_type);
  if (!format.has_value()) {
    return Status::Unsupported("layer " + desc.digest.String() + " has media type " +
                               desc.media_type + ", which imgfs cannot convert");
  }
  return format;
}

// Decompresses the stored blob of `desc` into `out`; returns the uncompressed size and sets
// *diff_id.
Result<uint64_t> Decompress(const cache::Store& store, const registry::Descriptor& desc, int out_fd,
                            registry::Digest* diff_id) {
  IMGFS_ASSIGN_OR_RETURN(LayerFormat format, SourceFormat(desc));
  IMGFS_ASSIGN_OR_RETURN(UniqueFd in, OpenFile(store.BlobPath(desc.digest), O_RDONLY | O_CLOEXEC));
  IMGFS_ASSIGN_OR_RETURN(std::unique_ptr<StreamDecoder> decoder,
                         NewStreamDecoder(format, Checkpoint{}, 0, nullptr));
  registry::Sha256 hash;
  std::string buf(kReadBlockBytes, '\0');
  std::string out(kDecodeBlockBytes, '\0');
  uint64_t total = 0;
  bool eof = false;
  while (!eof) {
    ssize_t n = read(in.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "reading layer " + desc.digest.String());
    }
    eof = n == 0;
    std::string_view pending(buf.data(), static_cast<size_t>(n));
    while (true) {
      size_t consumed = 0;
      size_t produced = 0;
      IMGFS_RETURN_IF_ERROR(decoder->Decode(pending, &consumed, out.data(), out.size(), &produced));
      pending.remove_prefix(consumed);
      if (produced > 0) {
        std::string_view piece(out.data(), produced);
        hash.Update(piece);
        IMGFS_RETURN_IF_ERROR(WriteAll(out_fd, piece));
        total += produced;
      }
      if (consumed == 0 && produced == 0) {
        if (!pending.empty()) {
          return Status::Corrupt("layer " + desc.digest.String() + ": decoder stuck at offset " +
                                 std::to_string(decoder->compressed_offset()));
        }
        break;
      }
    }
  }
  if (!decoder->AtEnd()) {
    return Status::Corrupt("layer " + desc.digest.String() +
                           ": compressed stream truncated (unexpected end of blob)");
  }
  *diff_id = hash.Finish();
  return total;
}

// Copies the file `fd` (size `size`) into the store as blob `digest` unless present.
Status StoreBlobFromFile(cache::Store& store, const registry::Digest& digest, int64_t size,
                         int fd) {
  if (store.HasBlob(digest)) return Status::Ok();
  IMGFS_ASSIGN_OR_RETURN(cache::BlobWriter writer, store.NewBlobWriter(digest, size));
  for (uint64_t off = 0; off < static_cast<uint64_t>(size);) {
    IMGFS_ASSIGN_OR_RETURN(std::string piece, PreadAll(fd, off, kReadBlockBytes));
    if (piece.empty()) return Status::Io("converted blob shorter than written");
    IMGFS_RETURN_IF_ERROR(writer.Write(piece));
    off += piece.size();
  }
  return writer.Commit();
}

Result<std::string> NewConfig(const std::string& raw,
                              const std::vector<registry::Digest>& diff_ids) {
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(raw, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return Status::Corrupt("the source image config is not a JSON object");
  }
  nlohmann::ordered_json ids = nlohmann::ordered_json::array();
  for (const registry::Digest& d : diff_ids) ids.push_back(d.String());
  if (!config.contains("rootfs") || !config["rootfs"].is_object()) {
    config["rootfs"] = nlohmann::ordered_json::object();
  }
  config["rootfs"]["type"] = "layers";
  config["rootfs"]["diff_ids"] = std::move(ids);
  return config.dump();
}

}  // namespace

Result<cache::ResolvedImage> ResolveOrPullImage(cache::Store& store, std::string_view text,
                                                const PullOptions& pull, bool pull_if_missing) {
  Result<cache::ResolvedImage> resolved = cache::ResolveImage(store, text);
  if (!resolved.has_value()) {
    if (resolved.error().code() != StatusCode::kNotFound || !pull_if_missing) {
      return resolved;
    }
    IMGFS_LOG(kInfo) << "image " << text << " is not in the store; pulling it";
    Puller puller(&store, pull);
    IMGFS_ASSIGN_OR_RETURN(std::vector<PulledImage> pulled, puller.Pull(text));
    if (pulled.empty())
      return Status::NotFound("pull of " + std::string(text) + " recorded nothing");
    return cache::ResolveImage(store, pulled.front().reference.String());
  }
  // A lazily pulled image lacks its layer blobs: complete it like `imgfs pull` does.
  bool complete = true;
  for (const registry::Descriptor& l : resolved->decoded.layers) {
    if (!store.HasBlob(l.digest)) complete = false;
  }
  if (complete) return resolved;
  if (!pull_if_missing || !resolved->by_reference.has_value()) {
    return Status::NotFound("image " + std::string(text) +
                            " lacks layer blobs in the store; run imgfs pull first");
  }
  Puller puller(&store, pull);
  IMGFS_ASSIGN_OR_RETURN(std::vector<PulledImage> pulled,
                         puller.Pull(resolved->by_reference->reference));
  return cache::ResolveImage(store, resolved->by_reference->reference);
}

Result<ConvertedImage> ConvertImage(cache::Store& store, std::string_view src,
                                    std::string_view dest, const ConvertOptions& options) {
  IMGFS_ASSIGN_OR_RETURN(registry::SourceSpec dest_spec, registry::ParseSourceSpec(dest));
  if (dest_spec.IsLocal() && dest_spec.transport != registry::Transport::kOciLayout) {
    return Status::Unsupported("converting to " +
                               std::string(registry::TransportName(dest_spec.transport)) +
                               ": is not supported (registry references and oci:DIR[:TAG] are)");
  }
  std::string oci_tag = dest_spec.selector.empty() ? "latest" : dest_spec.selector;
  if (dest_spec.transport == registry::Transport::kOciLayout && oci_tag.starts_with("@")) {
    return Status::InvalidArgument("an oci: destination takes a tag, not a digest");
  }

  IMGFS_ASSIGN_OR_RETURN(cache::ResolvedImage image,
                         ResolveOrPullImage(store, src, options.pull, options.pull_if_missing));
  const registry::Manifest& manifest = image.decoded;
  const std::vector<registry::Digest>& diff_ids = image.config.diff_ids;
  if (diff_ids.size() != manifest.layers.size()) {
    return Status::Corrupt("image " + std::string(src) + ": manifest has " +
                           std::to_string(manifest.layers.size()) + " layers but the config " +
                           std::to_string(diff_ids.size()) + " diff_ids");
  }
  IMGFS_ASSIGN_OR_RETURN(cache::FileLock guard, store.WriteGuard());

  ConvertedImage out;
  if (image.by_reference.has_value()) out.source_reference = image.by_reference->reference;
  std::vector<registry::Digest> new_diff_ids;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const registry::Descriptor& desc = manifest.layers[i];
    auto context = [&](const Status& st) {
      return st.WithContext("converting layer " + std::to_string(i + 1) + " (" +
                            desc.digest.String() + ") of " + std::string(src));
    };
    IMGFS_ASSIGN_OR_RETURN(TempFile tar, TempFile::Create(store, "tar"));
    registry::Digest diff_id;
    Result<uint64_t> tar_size = Decompress(store, desc, tar.fd(), &diff_id);
    if (!tar_size.has_value()) return context(tar_size.error());
    if (diff_id != diff_ids[i]) {
      return context(Status::Corrupt("uncompressed layer is " + diff_id.String() +
                                     " but the config says " + diff_ids[i].String()));
    }
    IMGFS_ASSIGN_OR_RETURN(TempFile blob, TempFile::Create(store, "blob"));
    registry::BlobSink sink = [&blob](std::string_view bytes) {
      return WriteAll(blob.fd(), bytes);
    };
    Result<WrittenLayer> written =
        WriteLazyLayer(TarBytes::FromFd(tar.fd(), *tar_size), options.layer, sink);
    if (!written.has_value()) return context(written.error());
    Status stored =
        StoreBlobFromFile(store, written->descriptor.digest, written->descriptor.size, blob.fd());
    if (!stored.ok()) return context(stored);
    new_diff_ids.push_back(written->diff_id);
    if (options.on_layer) options.on_layer(i, manifest.layers.size(), *written);
    out.layers.push_back(std::move(written).value());
  }

  IMGFS_ASSIGN_OR_RETURN(std::string config, NewConfig(image.config.raw, new_diff_ids));
  IMGFS_ASSIGN_OR_RETURN(out.config_digest, store.PutBlob(config));
  registry::Manifest m;
  m.schema_version = 2;
  m.media_type = std::string(registry::media::kOciManifest);
  m.config.media_type = std::string(registry::media::kOciConfig);
  m.config.digest = out.config_digest;
  m.config.size = static_cast<int64_t>(config.size());
  for (const WrittenLayer& l : out.layers) m.layers.push_back(l.descriptor);
  out.manifest_bytes = registry::EncodeManifest(m);
  IMGFS_ASSIGN_OR_RETURN(registry::Digest manifest_digest, store.PutBlob(out.manifest_bytes));
  out.manifest.media_type = m.media_type;
  out.manifest.digest = manifest_digest;
  out.manifest.size = static_cast<int64_t>(out.manifest_bytes.size());
  out.manifest.platform = image.manifest.platform;

  if (dest_spec.transport == registry::Transport::kOciLayout) {
    registry::ImageToPush push;
    push.manifest_bytes = out.manifest_bytes;
    push.manifest_media_type = m.media_type;
    push.blobs.push_back(m.config);
    for (const registry::Descriptor& l : m.layers) push.blobs.push_back(l);
    StoreBlobReader reader(&store);
    IMGFS_RETURN_IF_ERROR(registry::PushToOciLayout(dest_spec.path, oci_tag, push, reader)
                              .WithContext("writing oci:" + dest_spec.path + ":" + oci_tag));
    return out;
  }
  IMGFS_RETURN_IF_ERROR(store.RecordImage(dest_spec.reference, out.manifest, manifest_digest));
  out.recorded_as = dest_spec.reference.String();
  return out;
}

}  // namespace imgfs::fs
