// imgfs tests — small deterministic OCI images built in a temp dir, and helpers to run
// processes (the imgfs binary, skopeo, umoci) from tests.
//
// ImageBuilder writes an OCI image layout (oci-layout, index.json, blobs/sha256/) whose
// layers come from in-memory file lists: each layer is a tar written with
// registry::TarWriter (deterministic: sorted input order as given, mtime 0, root-owned),
// gzip-compressed with a fixed header (no name, mtime 0), so the same spec always gives the
// same digests. The config carries the diff_ids, the manifest is an OCI image manifest, and
// index.json names every image with org.opencontainers.image.ref.name = TAG, so
// `skopeo copy oci:DIR:TAG docker://…` pushes it.
//
// Thread-safety: an ImageBuilder is used by one thread; the free functions are thread-safe.
#ifndef IMGFS_TESTS_SUPPORT_IMAGE_BUILDER_H_
#define IMGFS_TESTS_SUPPORT_IMAGE_BUILDER_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "tests/support/temp_dir.h"

namespace imgfs::testing {

struct TestFile {
  enum class Kind { kFile, kDir, kSymlink };
  std::string path;     // "etc/hello.txt" (no leading slash)
  std::string content;  // file bytes, or the symlink target
  Kind kind = Kind::kFile;
  uint32_t mode = 0644;
};

struct TestLayer {
  std::vector<TestFile> files;
  // When > 0, the gzip stream is sync-flushed after every `gzip_flush_bytes` bytes of tar, the
  // way parallel compressors (pigz: 128 KiB, pgzip: 1 MiB) cut it: deflate blocks then end at
  // those offsets, each followed by an empty stored block.
  size_t gzip_flush_bytes = 0;
};

struct TestImageSpec {
  std::vector<TestLayer> layers;
  std::string os = "linux";
  std::string architecture = "amd64";
  std::string variant;
  std::vector<std::string> cmd = {"/bin/sh"};
  std::vector<std::string> env = {"PATH=/usr/bin:/bin"};
  std::string created = "2024-01-01T00:00:00Z";
  std::map<std::string, std::string> labels;
};

struct BuiltImage {
  registry::Digest manifest_digest;
  int64_t manifest_size = 0;
  std::string manifest;  // the manifest bytes
  registry::Digest config_digest;
  std::vector<registry::Digest> layer_digests;  // compressed blobs, in order
  std::vector<int64_t> layer_sizes;
  std::vector<registry::Digest> diff_ids;
};

class ImageBuilder {
 public:
  // Creates `layout_dir` (and parents) with oci-layout and an empty index.json if missing.
  explicit ImageBuilder(std::string layout_dir);

  const std::string& dir() const { return dir_; }

  // Builds the image, writes its blobs and records it in index.json under `tag` (an
  // existing entry with that tag is replaced).
  Result<BuiltImage> Add(const TestImageSpec& spec, const std::string& tag);
  // Writes an OCI image index over already added images and records it under `tag`.
  Result<registry::Digest> AddIndex(
      const std::vector<std::pair<BuiltImage, registry::Platform>>& images, const std::string& tag);
  // Writes a blob (named by its sha256) and returns its digest.
  Result<registry::Digest> WriteBlob(std::string_view data);
  // Sets index.json's entry `tag` to `descriptor` (annotations get the ref name).
  Status SetIndexEntry(const std::string& tag, registry::Descriptor descriptor);

 private:
  std::string dir_;
};

// The uncompressed tar of a layer (TarWriter; parents are not added implicitly).
Result<std::string> BuildLayerTar(const TestLayer& layer);
// Deterministic gzip (no file name, mtime 0); sync-flushed every `flush_bytes` of input when
// that is > 0 (see TestLayer::gzip_flush_bytes).
std::string GzipBytes(std::string_view data, size_t flush_bytes = 0);

// A one-layer image with the given files at top level ("name" → content), handy in tests.
TestImageSpec SimpleImage(const std::map<std::string, std::string>& files);

struct ProcessResult {
  int exit_code = -1;  // exit status, or 128+signal; -1 if it could not start
  std::string out;
  std::string err;
  double seconds = 0;
  // "exit N; stderr: …" for assertion messages.
  std::string Describe() const;
};

// Runs argv[0] (searched in $PATH) with `env_overrides` ("NAME=value") added to the
// environment and `stdin_data` on stdin; kills it after `timeout_s`. Never uses a shell.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env_overrides = {},
                         std::string_view stdin_data = {}, int timeout_s = 120);

// `skopeo copy --dest-tls-verify=false oci:LAYOUT:TAG docker://DEST` (DEST = host/name:tag).
// `creds` ("user:pass") is passed as --dest-creds when not empty.
Status PushLayout(const std::string& layout_dir, const std::string& tag, const std::string& dest,
                  const std::string& creds = "");

// Every file below `dir` (relative paths, sorted); for "nothing half-written" checks.
std::vector<std::string> ListFilesRecursive(const std::string& dir);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_IMAGE_BUILDER_H_
