// imgfs — Puller: copies an image from a registry or a local source into the store.
#include "fs/image_ops/pull.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "base/log.h"
#include "base/thread.h"
#include "registry/auth.h"
#include "registry/credentials.h"
#include "registry/http_client.h"
#include "registry/media_types.h"
#include "registry/mirrored_source.h"
#include "registry/pull_endpoints.h"
#include "registry/remote_source.h"
#include "registry/session.h"
#include "registry/transport.h"

namespace imgfs::fs {
namespace {

// The bound of each request of a source that serves reads (a stalled registry must turn
// into EIO, not a long hang).
constexpr std::chrono::milliseconds kReadRequestTimeout{20000};

using registry::Descriptor;
using registry::Digest;
using registry::FetchedManifest;

// An index may point at another index (e.g. an OCI layout whose index.json entry is an image
// index); deeper nesting than this is treated as corrupt rather than followed forever.
constexpr int kMaxIndexDepth = 4;

bool IsDigestText(std::string_view text) { return text.find(':') != std::string_view::npos; }

bool IsConfigMediaType(std::string_view mt) {
  return mt == registry::media::kOciConfig || mt == registry::media::kDockerConfig;
}

bool IsManifestMediaType(std::string_view mt) {
  return mt == registry::media::kOciManifest || mt == registry::media::kDockerManifest;
}

// How pulls, reads and logins reach a registry (the credential aside).
registry::ConnectionOptions ConnectionFor(const PullOptions& options) {
  registry::ConnectionOptions connection;
  connection.tls.ca_files = options.ca_files;
  connection.insecure_registries = options.insecure_registries;
  connection.connect_timeout = options.connect_timeout;
  connection.max_attempts = options.max_attempts;
  return connection;
}

Result<registry::RegistriesConf> LoadConf(const PullOptions& options) {
  return registry::LoadRegistriesConf(options.registries_conf
                                          ? *options.registries_conf
                                          : registry::RegistriesConfPathsFromEnvironment());
}

// The source of `ref`: its endpoints as registries.conf orders them (mirrors, then the
// location), each a RemoteSource with its own host's credential. --creds goes to the
// registry the user named only; a mirror or a rewritten location gets the credential stored
// for its own host, never the origin's. `request_timeout` 0 = the default.
Result<std::unique_ptr<registry::BlobSource>> OpenEndpoints(
    const registry::RegistriesConf& conf, const registry::Reference& ref,
    const PullOptions& options, std::chrono::milliseconds request_timeout) {
  IMGFS_ASSIGN_OR_RETURN(std::vector<registry::PullEndpoint> endpoints,
                         registry::PullEndpoints(conf, ref));
  std::vector<std::unique_ptr<registry::BlobSource>> sources;
  for (const registry::PullEndpoint& endpoint : endpoints) {
    const std::string& host = endpoint.reference.domain();
    const bool named_registry = !endpoint.mirror && host == ref.domain();
    registry::RemoteSourceOptions remote{ConnectionFor(options)};
    IMGFS_ASSIGN_OR_RETURN(
        remote.credential,
        registry::ResolveCredential(named_registry ? options.creds : std::string(), host));
    if (endpoint.insecure) remote.insecure_registries.push_back(host);
    if (request_timeout.count() > 0) {
      remote.request_timeout = std::min(remote.request_timeout, request_timeout);
    }
    if (endpoints.size() > 1) {
      IMGFS_LOG(kDebug) << ref.String() << ": endpoint " << endpoint.reference.String()
                        << (endpoint.mirror ? " (mirror)" : "");
    }
    sources.push_back(registry::RemoteSource::Create(endpoint.reference, std::move(remote)));
  }
  if (sources.size() == 1) return std::move(sources.front());
  return std::unique_ptr<registry::BlobSource>(
      std::make_unique<registry::MirroredSource>(std::move(sources)));
}

}  // namespace

Puller::Puller(cache::Store* store, PullOptions options)
    : store_(store), options_(std::move(options)) {
  if (options_.parallel_layers < 1) options_.parallel_layers = 1;
}

Status Puller::FetchBlobToStore(registry::BlobSource& source, const Descriptor& desc,
                                const std::function<void(int64_t)>& on_bytes) {
  if (store_->HasBlob(desc.digest)) return Status::Ok();
  IMGFS_ASSIGN_OR_RETURN(cache::BlobWriter writer,
                         store_->NewBlobWriter(desc.digest, desc.size > 0 ? desc.size : -1));
  Status fetched = source.FetchBlob(desc.digest, desc.size > 0 ? desc.size : -1,
                                    [&](std::string_view chunk) -> Status {
                                      IMGFS_RETURN_IF_ERROR(writer.Write(chunk));
                                      if (on_bytes) on_bytes(static_cast<int64_t>(chunk.size()));
                                      return Status::Ok();
                                    });
  if (!fetched.ok()) return fetched;  // the writer's destructor drops the temporary file
  return writer.Commit();
}

Status Puller::FetchLayers(registry::BlobSource& source, const std::vector<Descriptor>& layers,
                           const ProgressFn& progress, PulledImage* out) {
  std::mutex progress_mu;  // serialises calls of `progress` only; no data behind it
  auto report = [&](size_t i, LayerProgress::State state, int64_t done) {
    if (!progress) return;
    LayerProgress p;
    p.index = i;
    p.count = layers.size();
    p.digest = layers[i].digest;
    p.total_bytes = layers[i].size;
    p.done_bytes = done;
    p.state = state;
    std::scoped_lock lock(progress_mu);
    progress(p);
  };

  std::vector<size_t> todo;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (store_->HasBlob(layers[i].digest)) {
      report(i, LayerProgress::State::kExists, layers[i].size);
    } else if (std::find_if(todo.begin(), todo.end(), [&](size_t j) {
                 return layers[j].digest == layers[i].digest;
               }) != todo.end()) {
      // The same blob twice in one manifest: fetched once.
      report(i, LayerProgress::State::kExists, layers[i].size);
    } else {
      todo.push_back(i);
      report(i, LayerProgress::State::kWaiting, 0);
    }
  }

  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::atomic<size_t> downloaded{0};
  std::atomic<int64_t> bytes{0};
  std::mutex error_mu;
  Status first_error;

  auto worker = [&] {
    while (!failed.load()) {
      size_t k = next.fetch_add(1);
      if (k >= todo.size()) return;
      size_t i = todo[k];
      int64_t done = 0;
      report(i, LayerProgress::State::kDownloading, 0);
      Status st = FetchBlobToStore(source, layers[i], [&](int64_t n) {
        done += n;
        bytes += n;
        report(i, LayerProgress::State::kDownloading, done);
      });
      if (!st.ok()) {
        report(i, LayerProgress::State::kFailed, done);
        std::scoped_lock lock(error_mu);
        if (first_error.ok()) {
          first_error = st.WithContext("layer " + layers[i].digest.Short());
        }
        failed = true;
        return;
      }
      ++downloaded;
      report(i, LayerProgress::State::kDone, layers[i].size);
    }
  };

  size_t n_threads = std::min(todo.size(), static_cast<size_t>(options_.parallel_layers));
  if (n_threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> threads;
    threads.reserve(n_threads);
    for (size_t t = 0; t < n_threads; ++t) {
      // An exception in a worker fails the pull like a download error would.
      threads.push_back(StartThread(
          "imgfs-pull",
          [&worker]() -> Status {
            worker();
            return Status::Ok();
          },
          [&](const Status& error) {
            std::scoped_lock lock(error_mu);
            if (first_error.ok()) first_error = error;
            failed = true;
          }));
    }
    for (auto& t : threads) t.join();
  }
  out->layers_downloaded = downloaded.load();
  out->bytes_downloaded += bytes.load();
  std::scoped_lock lock(error_mu);
  return first_error;
}

Result<PulledImage> Puller::PullFrom(registry::BlobSource& source,
                                     const registry::Reference& record_as,
                                     const std::string& tag_or_digest, const ProgressFn& progress) {
  // Keeps a concurrent garbage collection from deleting what we write before it is recorded.
  IMGFS_ASSIGN_OR_RETURN(cache::FileLock write_guard, store_->WriteGuard());

  PulledImage out;
  out.reference = record_as;

  IMGFS_ASSIGN_OR_RETURN(FetchedManifest current, source.GetManifest(tag_or_digest));
  Digest top_digest = Digest::Sha256Of(current.bytes);
  if (IsDigestText(tag_or_digest)) {
    IMGFS_ASSIGN_OR_RETURN(Digest want, Digest::Parse(tag_or_digest));
    if (want != top_digest) {
      return Status::Corrupt("manifest digest mismatch: asked for " + want.String() + ", got " +
                             top_digest.String());
    }
  }
  out.repo_digest = top_digest;

  // Follow indexes down to the platform's manifest, keeping their bytes to store.
  std::vector<std::pair<Digest, std::string>> index_blobs;
  bool from_index = false;
  for (int depth = 0;; ++depth) {
    IMGFS_ASSIGN_OR_RETURN(registry::DocumentKind kind,
                           registry::ClassifyDocument(current.bytes, current.media_type));
    if (kind == registry::DocumentKind::kManifest) break;
    if (depth >= kMaxIndexDepth) return Status::Corrupt("image indexes nested too deeply");
    IMGFS_ASSIGN_OR_RETURN(registry::Index index, registry::DecodeIndex(current.bytes));
    IMGFS_ASSIGN_OR_RETURN(Descriptor chosen, registry::SelectPlatform(index, options_.platform));
    index_blobs.emplace_back(Digest::Sha256Of(current.bytes), std::move(current.bytes));
    IMGFS_ASSIGN_OR_RETURN(current, source.GetManifest(chosen.digest.String()));
    Digest got = Digest::Sha256Of(current.bytes);
    if (got != chosen.digest) {
      return Status::Corrupt("manifest digest mismatch: index lists " + chosen.digest.String() +
                             ", got " + got.String());
    }
    if (chosen.size > 0 && static_cast<int64_t>(current.bytes.size()) != chosen.size) {
      return Status::Corrupt("manifest " + chosen.digest.String() + " has the wrong size");
    }
    if (current.media_type.empty()) current.media_type = chosen.media_type;
    from_index = true;
  }

  IMGFS_ASSIGN_OR_RETURN(registry::Manifest manifest, registry::DecodeManifest(current.bytes));
  Descriptor manifest_desc;
  manifest_desc.digest = Digest::Sha256Of(current.bytes);
  manifest_desc.size = static_cast<int64_t>(current.bytes.size());
  if (!manifest.media_type.empty()) {
    manifest_desc.media_type = manifest.media_type;
  } else if (IsManifestMediaType(current.media_type)) {
    manifest_desc.media_type = current.media_type;
  } else {
    manifest_desc.media_type = std::string(registry::media::kOciManifest);
  }
  if (!IsManifestMediaType(manifest_desc.media_type)) {
    return Status::Unsupported("unsupported manifest media type \"" + manifest_desc.media_type +
                               "\"");
  }
  out.manifest_digest = manifest_desc.digest;
  if (!IsConfigMediaType(manifest.config.media_type)) {
    return Status::Unsupported("not a container image: config media type \"" +
                               manifest.config.media_type + "\"");
  }
  for (const Descriptor& layer : manifest.layers) {
    if (registry::media::LayerCompression(layer.media_type) ==
        registry::media::Compression::kUnknown) {
      return Status::Unsupported("unsupported layer media type \"" + layer.media_type +
                                 "\" (layer " + layer.digest.String() + ")");
    }
  }

  if (options_.metadata_only && options_.on_manifest && current_source_ != nullptr) {
    options_.on_manifest(manifest_desc.digest, manifest, current_source_);
  }

  // Config first: it is small and says whether this is the image we want.
  IMGFS_RETURN_IF_ERROR(FetchBlobToStore(source, manifest.config, {}).WithContext("config"));
  IMGFS_ASSIGN_OR_RETURN(std::string config_bytes, store_->ReadBlob(manifest.config.digest));
  IMGFS_ASSIGN_OR_RETURN(registry::ImageConfig config, registry::DecodeImageConfig(config_bytes));
  out.config_digest = manifest.config.digest;
  out.platform.os = config.os;
  out.platform.architecture = config.architecture;
  out.platform.variant = config.variant;
  if (options_.platform_explicit && !from_index &&
      (config.os != options_.platform.os ||
       config.architecture != options_.platform.architecture)) {
    return Status::NotFound("image is for " + out.platform.String() + ", not the requested " +
                            options_.platform.String());
  }
  if (config.diff_ids.size() != manifest.layers.size()) {
    return Status::Corrupt("config lists " + std::to_string(config.diff_ids.size()) +
                           " diff_ids for " + std::to_string(manifest.layers.size()) + " layers");
  }

  out.layers = manifest.layers.size();
  if (!options_.metadata_only) {
    IMGFS_RETURN_IF_ERROR(FetchLayers(source, manifest.layers, progress, &out));
  }

  // Manifest and indexes last: the image is complete before anything names it.
  IMGFS_RETURN_IF_ERROR(store_->PutBlob(manifest_desc.digest, current.bytes));
  for (const auto& [digest, bytes] : index_blobs) {
    IMGFS_RETURN_IF_ERROR(store_->PutBlob(digest, bytes));
  }

  Result<cache::ImageRecord> before = store_->FindRecord(record_as);
  out.tag_moved = before.has_value() && before->manifest.digest != manifest_desc.digest;
  manifest_desc.platform = out.platform;
  IMGFS_RETURN_IF_ERROR(store_->RecordImage(record_as, manifest_desc, out.repo_digest));
  IMGFS_LOG(kInfo) << "pulled " << record_as.String() << " manifest "
                   << manifest_desc.digest.String() << " (" << out.layers_downloaded << "/"
                   << out.layers << " layers downloaded)";
  return out;
}

Result<std::vector<PulledImage>> Puller::Pull(std::string_view text, const ProgressFn& progress) {
  last_source_.reset();
  Result<registry::SourceSpec> spec = registry::ParseSourceSpec(text);
  if (!spec.has_value()) {
    if (spec.error().code() == StatusCode::kInvalidArgument) {
      return spec.error().WithContext("invalid reference format");
    }
    return spec.error();
  }
  if (spec->IsLocal()) {
    auto decorate_local = [&text](const Status& st) {
      return st.WithContext("pulling " + std::string(text));
    };
    if (options_.all_tags) {
      return Status::InvalidArgument("--all-tags works with registry references only");
    }
    Result<std::unique_ptr<registry::LocalSource>> local = registry::OpenLocalSource(*spec);
    if (!local.has_value()) return decorate_local(local.error());
    Result<registry::Reference> record_as = registry::LocalImageReference(*spec, **local);
    if (!record_as.has_value()) return decorate_local(record_as.error());
    Result<PulledImage> one = PullFrom(**local, *record_as, "", progress);
    if (!one.has_value()) return decorate_local(one.error());
    return std::vector<PulledImage>{std::move(one).value()};
  }

  std::string_view ref_text = text;
  if (ref_text.starts_with("docker://")) ref_text.remove_prefix(9);
  const registry::Reference& ref = spec->reference;
  auto decorate = [&ref](const Status& st) {
    Status out = st.WithContext("pulling " + ref.FamiliarString());
    if (out.message().find(ref.Endpoint()) == std::string::npos &&
        out.message().find(ref.domain()) == std::string::npos) {
      out = Status(out.code(), out.message() + " (registry " + ref.Endpoint() + ")");
    }
    return out;
  };

  Result<registry::RegistriesConf> conf = LoadConf(options_);
  if (!conf.has_value()) return decorate(conf.error());
  // A short name may mean several registries (aliases, unqualified-search-registries):
  // tried in order, the first that has the image wins.
  Result<std::vector<registry::Reference>> candidates = registry::ResolveShortName(*conf, ref_text);
  if (!candidates.has_value()) return decorate(candidates.error());
  Status failures;
  std::string tried;
  for (const registry::Reference& candidate : *candidates) {
    Result<std::vector<PulledImage>> pulled = PullRegistry(*conf, candidate, ref_text, progress);
    if (pulled.has_value()) return pulled;
    Status st = pulled.error();
    if (candidate.domain() != ref.domain() || candidates->size() > 1) {
      st = st.WithContext("pulling " + candidate.FamiliarString());
    } else {
      st = decorate(st);
    }
    if (candidates->size() == 1) return st;
    tried += (tried.empty() ? "" : "; ") + st.message();
    failures = st;
  }
  return Status(failures.code(), "short name " + std::string(ref_text) + ": " + tried);
}

Result<std::vector<PulledImage>> Puller::PullRegistry(const registry::RegistriesConf& conf,
                                                      const registry::Reference& ref,
                                                      std::string_view ref_text,
                                                      const ProgressFn& progress) {
  // A metadata-only pull is a lazy mount's first step: its source goes on to serve reads
  // (TakeSource), which wait on its requests.
  const std::chrono::milliseconds request_timeout =
      options_.metadata_only ? kReadRequestTimeout : std::chrono::milliseconds(0);
  IMGFS_ASSIGN_OR_RETURN(std::shared_ptr<registry::BlobSource> source,
                         OpenEndpoints(conf, ref, options_, request_timeout));

  std::vector<PulledImage> pulled;
  if (options_.all_tags) {
    // A tag or digest in the text conflicts with -a (docker: "tag can't be used with
    // --all-tags/-a"); the parsed reference always has a tag, so look at the text.
    std::string_view last = ref_text.substr(ref_text.rfind('/') + 1);
    if (last.find(':') != std::string_view::npos || last.find('@') != std::string_view::npos) {
      return Status::InvalidArgument("tag can't be used with --all-tags/-a");
    }
    Result<std::vector<std::string>> listed = source->ListTags();
    if (!listed.has_value()) return listed.error().WithContext("listing tags");
    const std::vector<std::string>& tags = *listed;
    if (tags.empty()) return Status::NotFound("repository has no tags");
    for (const std::string& tag : tags) {
      // ListTags skips invalid tags already; WithTag checks again before a tag becomes a
      // request path and a name in index.json.
      IMGFS_ASSIGN_OR_RETURN(registry::Reference tagged, ref.WithTag(tag));
      Result<PulledImage> one = PullFrom(*source, tagged, tag, progress);
      if (!one.has_value()) return one.error().WithContext("tag " + tag);
      pulled.push_back(std::move(one).value());
    }
    return pulled;
  }
  current_source_ = source;
  Result<PulledImage> one = PullFrom(*source, ref, ref.TagOrDigest(), progress);
  current_source_.reset();
  if (!one.has_value()) return one.error();
  pulled.push_back(std::move(one).value());
  last_source_ = std::move(source);
  return pulled;
}

Result<std::unique_ptr<registry::BlobSource>> OpenRegistrySource(std::string_view text,
                                                                 const PullOptions& options) {
  IMGFS_ASSIGN_OR_RETURN(registry::SourceSpec spec, registry::ParseSourceSpec(text));
  if (spec.IsLocal()) {
    return Status::InvalidArgument(std::string(text) + " is not a registry reference");
  }
  IMGFS_ASSIGN_OR_RETURN(registry::RegistriesConf conf, LoadConf(options));
  // Reads wait on these requests: a stalled registry must turn into EIO, not a long hang.
  return OpenEndpoints(conf, spec.reference, options, kReadRequestTimeout);
}

Status CheckLogin(const std::string& registry_host, const registry::Credential& credential,
                  const PullOptions& options) {
  // The same session as a pull: scheme decision (https first, plain http only for loopback /
  // --insecure-registry hosts without a TLS server), certs.d material, credential placement.
  registry::ConnectionOptions connection = ConnectionFor(options);
  connection.credential = credential;
  Status st = registry::RegistrySession(registry_host, std::move(connection)).CheckLogin();
  if (!st.ok() && st.message().find(registry_host) == std::string::npos) {
    return st.WithContext("logging in to " + registry_host);
  }
  return st;
}

}  // namespace imgfs::fs
