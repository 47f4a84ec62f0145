// imgfs — Puller: copies an image from a registry or a local source into the store.
//
// A pull resolves the user's text (`alpine`, `host/app@sha256:…`, `oci:DIR:TAG`,
// `oci-archive:FILE`, `docker-archive:FILE`) to a registry::BlobSource, fetches the manifest
// by tag or digest and, for an index / manifest list, picks the manifest of the wanted
// platform (the index blob is stored too: its digest is the image's repo digest). Then the
// config and every layer are fetched into the store — blobs already present are skipped, so
// a layer shared by two images is downloaded once — with a bounded number of parallel layer
// downloads. Every blob is verified against its digest before it becomes visible (the store's
// BlobWriter publishes only verified blobs), the config's diff_ids must match the layer
// count, and only when all of that succeeded is the reference recorded in index.json
// (cache::Store::RecordImage; a moved tag leaves the old image dangling). On any failure
// nothing half-written is visible: no index.json change, no partial blob (complete, verified
// blobs of a failed pull may stay until garbage collection).
//
// Errors name the reference, the source and what to do, e.g.
//   "pulling 127.0.0.1:5000/demo/app:nope: manifest unknown (registry 127.0.0.1:5000)".
//
// Threads: Pull runs on the caller's thread plus up to `parallel_layers` download threads
// (created per pull, joined before Pull returns). The progress callback is called from those
// threads, one call at a time (a dedicated mutex serialises it), and must not call back into
// the Puller.
//
// Thread-safety: one Pull at a time per Puller object; several Pullers (threads or processes)
// may pull into the same store concurrently.
#ifndef IMGFS_FS_IMAGE_OPS_PULL_H_
#define IMGFS_FS_IMAGE_OPS_PULL_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/store.h"
#include "registry/blob_source.h"
#include "registry/credentials.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/reference.h"
#include "registry/registries_conf.h"

namespace imgfs::fs {

struct PullOptions {
  // The platform to select from an index. Default: this host's.
  registry::Platform platform = registry::Platform::Host();
  // True when the user asked for `platform` explicitly: a single-platform image of another
  // platform is then an error instead of being accepted as is.
  bool platform_explicit = false;
  // `pull -a`: every tag of the repository (registry sources only).
  bool all_tags = false;
  // Hosts spoken to over plain HTTP besides loopback (--insecure-registry).
  std::vector<std::string> insecure_registries;
  // Extra trusted CA files (--ca-cert).
  std::vector<std::string> ca_files;
  // --creds USER:PASS; empty → the credential store (imgfs login, docker config).
  std::string creds;
  // Parallel layer downloads. 3 like docker's default max-concurrent-downloads.
  int parallel_layers = 3;
  // Network bounds for registry sources (an unreachable registry fails within about
  // connect_timeout × max_attempts).
  std::chrono::milliseconds connect_timeout{5000};
  int max_attempts = 3;
  // Fetch and record the manifest and config only, not the layers (lazy mounts fetch layer
  // data on demand). The recorded image then lacks its layer blobs until a full pull.
  bool metadata_only = false;
  // With metadata_only, a registry pull calls this once the platform manifest is fetched and
  // checked, before the config is fetched, on the pulling thread: `manifest` is its digest,
  // `decoded` its content, `source` the source it came from (the one TakeSource then gives,
  // if this pull succeeds). A lazy mount starts reading its layers' tables of contents here,
  // while the config is fetched and the image recorded (a lazy layer needs only the manifest).
  // The pull may still fail after it (a config that does not fit), or succeed from another
  // candidate of a short name: the caller compares with what the pull returns. Must not throw.
  std::function<void(const registry::Digest& manifest, const registry::Manifest& decoded,
                     const std::shared_ptr<registry::BlobSource>& source)>
      on_manifest;
  // Which registries.conf files say where images come from (mirrors, prefixes, blocked
  // registries, short names; registry/registries_conf.h). nullopt = from the environment
  // (CONTAINERS_REGISTRIES_CONF, which `imgfs --registries-conf` sets, else the default
  // files).
  std::optional<registry::RegistriesConfPaths> registries_conf;
};

// One layer's progress, reported as it changes.
struct LayerProgress {
  enum class State {
    kWaiting,      // queued
    kExists,       // already in the store: not downloaded
    kDownloading,  // bytes arriving
    kDone,         // verified and stored
    kFailed,
  };
  size_t index = 0;  // position in the manifest
  size_t count = 0;  // number of layers
  registry::Digest digest;
  int64_t done_bytes = 0;
  int64_t total_bytes = 0;  // from the manifest
  State state = State::kWaiting;
};

using ProgressFn = std::function<void(const LayerProgress&)>;

// What a successful pull recorded.
struct PulledImage {
  registry::Reference reference;     // as recorded in index.json
  registry::Digest manifest_digest;  // the platform manifest
  registry::Digest repo_digest;      // what the tag resolved to (index or manifest)
  registry::Digest config_digest;    // the image ID
  registry::Platform platform;       // from the config
  size_t layers = 0;
  size_t layers_downloaded = 0;  // the others were already present
  int64_t bytes_downloaded = 0;
  bool tag_moved = false;  // the reference pointed at another image before
};

class Puller {
 public:
  // `store` is not owned and must outlive the Puller.
  Puller(cache::Store* store, PullOptions options);
  Puller(const Puller&) = delete;
  Puller& operator=(const Puller&) = delete;

  // Pulls the image(s) `text` names (see the file comment for the accepted forms). With
  // options.all_tags, every tag of the repository (a tag or digest in `text` is then an
  // InvalidArgument). Returns what was recorded, in order.
  Result<std::vector<PulledImage>> Pull(std::string_view text, const ProgressFn& progress = {});

  // Pulls `tag_or_digest` from an already opened source and records it as `record_as`.
  // The building block of Pull; exposed for sources the caller opened itself.
  Result<PulledImage> PullFrom(registry::BlobSource& source, const registry::Reference& record_as,
                               const std::string& tag_or_digest, const ProgressFn& progress = {});

  // The registry source the last successful Pull of a registry reference read from, for
  // reading the image's layers later (a lazy mount): its session has chosen the scheme and
  // holds the registry's token, so the first layer request costs no probe or token round
  // trip again. With options.metadata_only its requests are bounded to 20 s, as
  // OpenRegistrySource's. nullptr after a local pull, a failed one, or once taken.
  std::shared_ptr<registry::BlobSource> TakeSource() { return std::move(last_source_); }

 private:
  // Pull of one fully qualified registry reference (all tags with options_.all_tags) from
  // its registries.conf endpoints; `ref_text` is the user's text (for the -a check).
  Result<std::vector<PulledImage>> PullRegistry(const registry::RegistriesConf& conf,
                                                const registry::Reference& ref,
                                                std::string_view ref_text,
                                                const ProgressFn& progress);
  Status FetchBlobToStore(registry::BlobSource& source, const registry::Descriptor& desc,
                          const std::function<void(int64_t)>& on_bytes);
  Status FetchLayers(registry::BlobSource& source, const std::vector<registry::Descriptor>& layers,
                     const ProgressFn& progress, PulledImage* out);

  cache::Store* store_;
  PullOptions options_;
  std::shared_ptr<registry::BlobSource> last_source_;
  // The source PullRegistry is pulling from (for PullOptions::on_manifest); null otherwise.
  std::shared_ptr<registry::BlobSource> current_source_;
};

// The registry source for reference `text` (a registry reference, not a local transport),
// configured like a Puller with `options` (TLS, insecure registries, credentials, timeouts),
// with each request bounded to 20 s (on-demand reads wait on them).
Result<std::unique_ptr<registry::BlobSource>> OpenRegistrySource(std::string_view text,
                                                                 const PullOptions& options);

// `imgfs login`: checks `credential` against the registry (GET /v2/ through the auth flow
// the registry asks for). OK when the registry accepts it; PermissionDenied when not;
// Unavailable when it cannot be reached. Uses options' TLS and insecure-registry settings.
Status CheckLogin(const std::string& registry_host, const registry::Credential& credential,
                  const PullOptions& options);

}  // namespace imgfs::fs

#endif  // IMGFS_FS_IMAGE_OPS_PULL_H_
