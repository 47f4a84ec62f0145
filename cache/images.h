// imgfs — docker-like image operations on the local store (no network): list, resolve,
// inspect, remove, garbage-collect.
//
// An "image" is what docker calls one: identified by its ID, the digest of its config blob.
// One image may be recorded under several names (index.json entries with the same manifest)
// and may also be present as a dangling entry (<none>:<none>) after its tag moved.
//
// These functions read manifests and configs from the store (verified against their
// digests) and never talk to a registry. Errors are Status values whose messages are ready
// for the CLI to print after "Error response from daemon: "-style prefixes of its own:
//   NotFound          "No such image: <text>"
//   InvalidArgument   "conflict: unable to delete <short id> (must be forced) - image is
//                     referenced in multiple repositories"
//                     "conflict: unable to delete <short id> (must be forced) - image is in
//                     use by the mount at <dir>"  (without force)
//                     "conflict: unable to delete <short id> (must be forced) - image is in
//                     use by container <name>"  (without force; forced, the entry goes but
//                     the container keeps the image's files, see cache/usage.h)
//                     ambiguous short IDs, malformed filters
//
// Thread-safety: stateless functions over a Store; safe from any thread and process.
#ifndef IMGFS_CACHE_IMAGES_H_
#define IMGFS_CACHE_IMAGES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "cache/store.h"
#include "registry/digest.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace imgfs::cache {

struct UsageOptions;  // cache/usage.h

// One row of `imgfs images` (one per index.json entry, like `docker images`).
struct ImageSummary {
  std::string repository;  // familiar name ("alpine", "127.0.0.1:5000/demo/app") or "<none>"
  std::string tag;         // "3.20", or "<none>" (dangling, or recorded by digest)
  registry::Digest id;     // config digest (docker's image ID); Short() for the 12-hex column
  registry::Digest manifest_digest;
  std::string created;     // config.created (RFC 3339), may be empty
  int64_t size_bytes = 0;  // config size + sum of the manifest's layer sizes
  // "alpine@sha256:…" (familiar name @ repo digest), sorted, unique; empty if unknown.
  std::vector<std::string> repo_digests;
  bool dangling = false;
  std::string reference;  // full reference of the entry; "" when dangling
  std::string pulled;     // RFC 3339
  // False when a layer blob is not stored: recorded by `imgfs pull --lazy` (or a lazy
  // mount), or a lazily mountable layer evicted by `imgfs cache prune`. Lazy mounts serve
  // such an image; `imgfs pull` completes it.
  bool complete = true;
};

// `--filter` values, combined with AND (several `reference=` patterns are OR-ed, as docker).
struct ImageFilter {
  std::optional<bool> dangling;              // dangling=true|false
  std::vector<std::string> reference_globs;  // reference=PATTERN
};

// Parses docker-style filter arguments ("dangling=true", "reference=alpine:*").
// InvalidArgument for unknown keys or bad values ("invalid filter 'x'").
Result<ImageFilter> ParseImageFilters(const std::vector<std::string>& args);

// True when `pattern` (docker's path.Match glob: `*` and `?` do not cross '/', `[…]`
// classes, `\` escapes) matches the summary's familiar name or "name:tag".
bool MatchesReferenceFilter(std::string_view pattern, const ImageSummary& image);

// All images, newest first (by created, then by pulled time), filtered. Entries whose
// manifest or config blob is missing or corrupt are listed with what is known (size from
// the manifest descriptor, empty created) rather than failing the whole listing.
Result<std::vector<ImageSummary>> ListImages(const Store& store, const ImageFilter& filter = {});

// What a user's text names.
struct ResolvedImage {
  registry::Digest id;               // config digest
  registry::Descriptor manifest;     // platform manifest descriptor (from index.json)
  registry::Manifest decoded;        // the manifest
  registry::ImageConfig config;      // the config
  std::vector<ImageRecord> records;  // every index.json entry of this image (same config)
  // Set when resolved by reference: the one entry the reference names.
  std::optional<ImageRecord> by_reference;
};

// Resolves `text` in this order: a reference recorded in index.json (normalised, so
// "alpine" means docker.io/library/alpine:latest; digest references match entries recorded
// by digest or any entry with that manifest/repo digest); "sha256:<hex>" or a bare hex of
// ≥ 4 digits as a unique prefix of an image ID (config digest) — a full manifest digest is
// accepted too. NotFound ("No such image: <text>"); InvalidArgument when a short ID is
// ambiguous.
Result<ResolvedImage> ResolveImage(const Store& store, std::string_view text);

// `docker image inspect`-style JSON object (one object; callers wrap several in an array):
// Id, RepoTags, RepoDigests, Created, Author, Architecture, Os, Variant, Config {Env, Cmd,
// Entrypoint, WorkingDir, User, Labels}, RootFS {Type:"layers", Layers:[diff_ids]}, Size,
// Layers [{MediaType, Digest, Size}], Manifest (digest), MediaType (of the manifest).
// Pretty-printed with 4-space indent like docker.
Result<std::string> InspectImage(const Store& store, std::string_view text);

struct RemoveReport {
  std::vector<std::string> untagged;      // familiar references, "Untagged: …" lines
  std::vector<registry::Digest> deleted;  // image IDs removed entirely, "Deleted: …" lines
  int64_t freed_bytes = 0;                // sizes of the blob files GC deleted
};

// `docker rmi`: by reference → removes that entry (untag); if it was the image's last entry
// the image is deleted. By ID → removes every entry of the image; without `force` that is
// refused when the image has several named entries in *different* repositories (docker's
// rule). Refused while a live lease or a container (containers/<name>/container.json)
// pins the image unless `force`. Afterwards the blobs no
// entry and no live lease reach are deleted (CollectGarbage).
Result<RemoveReport> RemoveImage(Store& store, std::string_view text, bool force);

// `docker tag`: records `target` for the image `source` names (ResolveImage), as its own
// index.json entry (the manifest descriptor of the source's entry, platform included). A
// digest in `target` is InvalidArgument ("refusing to create a tag with a digest
// reference"). The entry keeps a repo digest only when the image already has one in the
// target's repository (the registry has not seen the new name otherwise). Moving an existing
// tag leaves the image it named as a dangling entry when nothing else names it (RecordImage).
// NotFound ("No such image: SOURCE") also when a concurrent rm removed the source first.
Result<ResolvedImage> TagImage(Store& store, std::string_view source,
                               const registry::Reference& target);

// One row of `imgfs history`.
struct HistoryRow {
  registry::HistoryEntry entry;
  // The layer this step made: the manifest's descriptor (its size is the stored, compressed
  // size `images` counts too); an empty digest and size 0 for an empty_layer step.
  registry::Descriptor layer;
};

// The image's history, newest first, as `docker history` shows it: the config's history
// entries, the ones without empty_layer matched in order with the manifest's layers. Layers
// no entry describes (a config without history, or a short one) get rows of their own with
// the config's `created` and an empty created_by.
std::vector<HistoryRow> ImageHistory(const ResolvedImage& image);

// What image prune removed of one image.
struct PrunedImage {
  registry::Digest id;
  std::vector<std::string> untagged;  // "untagged: …" lines: familiar references, repo digests
};

struct ImagePruneReport {
  std::vector<PrunedImage> images;
  int64_t bytes_freed = 0;  // blob, index and chunk bytes the garbage collection freed
};

// `docker image prune --filter` values, all of which an image must match to be removed.
struct ImagePruneFilter {
  bool all = false;  // -a, or dangling=false: tagged images too
  // until=TIMESTAMP|DURATION: only images whose config `created` is before this (Unix
  // seconds); an image without a readable `created` is kept.
  std::optional<int64_t> until_unix_s;
  // label=KEY or label=KEY=VALUE: every one must match the config's Labels.
  std::vector<std::string> labels;
  // label!=KEY[=VALUE]: the image is kept when it matches every one of them (docker's
  // MatchKVList over the label! values).
  std::vector<std::string> not_labels;
};

// Parses docker's image prune filters ("until=24h", "until=2024-05-01T00:00:00Z",
// "until=1714521600", "label=a=b", "label!=a", "dangling=false"), `now_unix_s` being the
// reference of durations. until accepts what docker's timetypes.GetTimestamp does: a Go
// duration ("1h30m", "90s"), Unix seconds with an optional fraction, RFC 3339 with or without
// fraction, and "YYYY-MM-DD", "YYYY-MM-DDTHH", "YYYY-MM-DDTHH:MM", "YYYY-MM-DDTHH:MM:SS"
// with or without a zone (without one, UTC: imgfs has no daemon whose local time docker
// would use). InvalidArgument for unknown keys and bad values, naming the filter.
Result<ImagePruneFilter> ParsePruneFilters(const std::vector<std::string>& args,
                                           int64_t now_unix_s);

// True when `labels` match every KEY or KEY=VALUE of `kv` (docker's MatchKVList; an empty
// `kv` matches).
bool MatchesLabels(const std::vector<std::string>& kv,
                   const std::map<std::string, std::string>& labels);

// `docker image prune`: removes every image without a tag (dangling: its entries are <none>
// or digest references), or with `all` every image, except those a live mount (lease) or a
// container pins — decided under index.lock, like RemoveImage — then collects garbage with
// `gc_options` (cache/usage.h; with a chunk lister, chunks of removed layers go too). The
// filter's until and labels narrow the images removed further.
Result<ImagePruneReport> PruneImages(Store& store, const ImagePruneFilter& filter,
                                     const UsageOptions& gc_options);
Result<ImagePruneReport> PruneImages(Store& store, bool all, const UsageOptions& gc_options);

struct GcReport {
  int blobs_deleted = 0;
  int indexes_deleted = 0;
  int64_t chunks_deleted = 0;
  int64_t bytes_freed = 0;  // blobs, indexes and chunks
  int tmp_entries_removed = 0;
  int stale_leases_removed = 0;
};

// Deletes every blob under blobs/sha256 not reachable from an index.json entry (manifest,
// config, layers, and the repo-digest document — the index a tag resolved to — when
// stored), a live lease's manifest or a container's image, the indexes of layers no such
// image has, and clears tmp/ and stale leases. Chunks are left alone here (they need the
// layer index decoder of fs/: see CollectGarbage in cache/usage.h). Takes the exclusive
// gc.lock (waits for running pulls) and then index.lock while deleting.
Result<GcReport> CollectGarbage(Store& store);

}  // namespace imgfs::cache

#endif  // IMGFS_CACHE_IMAGES_H_
