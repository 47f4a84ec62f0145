// imgfs — `imgfs cache du|gc|prune|set` (the store's disk use) and `imgfs stats DIR` (fetch
// statistics of a live mount, from its daemon's control socket).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/leases.h"
#include "cache/store.h"
#include "cache/usage.h"
#include "fs/mount/mount_services.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

using nlohmann::json;

constexpr std::string_view kCacheUsage =
    "Usage: imgfs cache COMMAND\n\n"
    "Manage the disk use of the image store.\n\n"
    "Commands:\n"
    "  du        Show disk use by image (shared vs unique), unreferenced data, chunks,\n"
    "            indexes and the total (the total equals `du -sb` of the store)\n"
    "  gc        Delete what nothing references: unreferenced blobs, indexes of layers no\n"
    "            image has, chunks no layer index names (never what a mount or container pins)\n"
    "  prune     --max-size SIZE: evict least recently used data until the store is under\n"
    "            SIZE: chunks first, then blobs of lazily mountable layers, then whole\n"
    "            unpinned images\n"
    "  set       --max-size SIZE|none [--interval SECONDS]: the size cap that every mount\n"
    "            daemon enforces in the background (prune every SECONDS, default 60), kept in\n"
    "            STORE/config.json; without flags, print the settings\n\n"
    "SIZE: 20G, 500M, 1.5GiB, 4096 (k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024).\n"
    "Images are used when mounted or pulled; a live mount or a container (imgfs run) pins\n"
    "its image.";

constexpr std::string_view kDuUsage =
    "Usage: imgfs cache du [OPTIONS]\n\nShow the disk use of the image store.";
constexpr std::string_view kGcUsage =
    "Usage: imgfs cache gc\n\nDelete blobs, indexes and chunks that nothing references.";
constexpr std::string_view kPruneUsage =
    "Usage: imgfs cache prune [--max-size SIZE]\n\n"
    "Evict least recently used data until the store is under SIZE (default: the cap set with\n"
    "`imgfs cache set --max-size`).";
constexpr std::string_view kSetUsage =
    "Usage: imgfs cache set [--max-size SIZE|none] [--interval SECONDS]\n\n"
    "Set the store's size cap, enforced by every mount daemon in the background.";
// The stats reply's "tree" for people; an older daemon sends none.
std::string TreeSource(const std::string& tree) {
  if (tree == "stored") return "from the store";
  if (tree == "merged") return "merged at mount";
  return "unknown";
}

constexpr std::string_view kStatsUsage =
    "Usage: imgfs stats [OPTIONS] DIR\n\n"
    "Show what a mounted image fetched: bytes fetched / image size, requests, cache hits,\n"
    "per-layer fetched %, the bytes read by users, and whether the merged tree came from the\n"
    "store.";

cache::UsageOptions Options() {
  cache::UsageOptions o;
  o.chunk_lister = fs::LayerIndexChunkLister();
  return o;
}

std::string Join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

json UsageJson(const cache::StoreUsage& u) {
  json images = json::array();
  for (const cache::ImageUsage& i : u.images) {
    images.push_back({{"names", i.names},
                      {"id", i.id.String()},
                      {"manifest", i.manifest.String()},
                      {"size", i.size_bytes},
                      {"shared", i.shared_bytes},
                      {"unique", i.unique_bytes},
                      {"blobs", i.blob_bytes},
                      {"indexes", i.index_bytes},
                      {"chunks", i.chunk_bytes},
                      {"image_size", i.image_bytes},
                      {"complete", i.complete},
                      {"last_used", i.last_used},
                      {"pinned_by", i.pinned_by},
                      {"recorded", i.recorded}});
  }
  return {{"images", images},
          {"shared", u.shared_bytes},
          {"unreferenced",
           {{"blobs", u.unreferenced_blobs},
            {"blob_bytes", u.unreferenced_blob_bytes},
            {"indexes", u.unreferenced_indexes},
            {"index_bytes", u.unreferenced_index_bytes},
            {"chunks", u.unreferenced_chunks},
            {"chunk_bytes", u.unreferenced_chunk_bytes},
            {"bytes", u.unreferenced_bytes()}}},
          {"blobs", {{"count", u.blobs}, {"bytes", u.blob_bytes}}},
          {"indexes", {{"count", u.indexes}, {"bytes", u.index_bytes}}},
          {"chunks", {{"count", u.chunks}, {"bytes", u.chunk_bytes}}},
          {"containers", u.container_bytes},
          {"abandoned_containers",
           {{"count", u.abandoned_containers}, {"bytes", u.abandoned_container_bytes}}},
          {"metadata", u.metadata_bytes},
          {"total", u.total_bytes}};
}

int RunDu(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"format", 0, true, "FORMAT", "\"json\" (exact byte counts) or \"table\""},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kDuUsage, specs, &args, &code)) return code;
  if (!args.positional().empty()) return UsageError(ctx.name, "\"cache du\" accepts no arguments");
  std::string format = args.Get("format", "table");
  if (format != "json" && format != "table") {
    return UsageError(ctx.name, "unknown format '" + format + "' (json or table)");
  }
  auto store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  Result<cache::StoreUsage> usage = cache::ScanUsage(**store, Options());
  if (!usage.has_value()) return Fail(usage.error());
  const cache::StoreUsage& u = *usage;
  if (format == "json") {
    std::cout << UsageJson(u).dump(2) << std::endl;
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"IMAGE", "ID", "SIZE", "SHARED", "UNIQUE", "LAST USED", "PINNED BY"}};
  for (const cache::ImageUsage& i : u.images) {
    std::string name = i.names.empty() ? "<none>" : Join(i.names, ",");
    if (!i.complete) name += " (lazy)";
    rows.push_back({name, i.id.Short(), HumanSize(i.size_bytes), HumanSize(i.shared_bytes),
                    HumanSize(i.unique_bytes), i.last_used.empty() ? "-" : HumanAge(i.last_used),
                    i.pinned_by.empty() ? "-" : Join(i.pinned_by, ", ")});
  }
  PrintTable(rows);
  std::cout << "\n";
  auto count = [](int64_t n, int64_t unref) {
    return std::to_string(n) + (unref > 0 ? " (" + std::to_string(unref) + " unreferenced)" : "");
  };
  int64_t unique = 0;
  for (const cache::ImageUsage& i : u.images) unique += i.unique_bytes;
  PrintTable({
      {"TYPE", "COUNT", "SIZE", "UNREFERENCED"},
      {"Blobs (blobs/)", count(u.blobs, u.unreferenced_blobs), HumanSize(u.blob_bytes),
       HumanSize(u.unreferenced_blob_bytes)},
      {"Indexes (indexes/)", count(u.indexes, u.unreferenced_indexes), HumanSize(u.index_bytes),
       HumanSize(u.unreferenced_index_bytes)},
      {"Chunks (chunks/)", count(u.chunks, u.unreferenced_chunks), HumanSize(u.chunk_bytes),
       HumanSize(u.unreferenced_chunk_bytes)},
      {"Containers (containers/)",
       u.abandoned_containers > 0
           ? std::to_string(u.abandoned_containers) + " abandoned (imgfs cache gc deletes them)"
           : "",
       HumanSize(u.container_bytes), HumanSize(u.abandoned_container_bytes)},
      {"Metadata", "", HumanSize(u.metadata_bytes), ""},
      {"Total", "", HumanSize(u.total_bytes), HumanSize(u.unreferenced_bytes())},
  });
  std::cout << "\nUnique to one image: " << HumanSize(unique)
            << "; shared between images: " << HumanSize(u.shared_bytes)
            << "; unreferenced (imgfs cache gc deletes it): " << HumanSize(u.unreferenced_bytes())
            << std::endl;
  return kExitOk;
}

int RunGc(CommandContext& ctx) {
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kGcUsage, {}, &args, &code)) return code;
  if (!args.positional().empty()) return UsageError(ctx.name, "\"cache gc\" accepts no arguments");
  auto store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  Result<cache::GcReport> gc = cache::CollectGarbage(**store, Options());
  if (!gc.has_value()) return Fail(gc.error());
  std::cout << "Deleted " << gc->blobs_deleted << " blobs, " << gc->indexes_deleted << " indexes, "
            << gc->chunks_deleted << " chunks\n"
            << "Total reclaimed space: " << HumanSize(gc->bytes_freed) << std::endl;
  return kExitOk;
}

int RunPrune(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"max-size", 0, true, "SIZE", "the size to get under (default: the configured cap)"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kPruneUsage, specs, &args, &code)) return code;
  if (!args.positional().empty()) {
    return UsageError(ctx.name, "\"cache prune\" accepts no arguments");
  }
  auto store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  int64_t max_bytes = 0;
  if (args.Has("max-size")) {
    Result<int64_t> size = cache::ParseSize(args.Get("max-size"));
    if (!size.has_value()) return UsageError(ctx.name, size.error().message());
    max_bytes = *size;
  } else {
    Result<cache::CacheConfig> config = cache::LoadCacheConfig(**store);
    if (!config.has_value()) return Fail(config.error());
    if (!config->max_size_bytes.has_value()) {
      return UsageError(ctx.name, "no --max-size given and no cap set (imgfs cache set)");
    }
    max_bytes = *config->max_size_bytes;
  }
  Result<cache::PruneReport> r = cache::Prune(**store, max_bytes, Options());
  if (!r.has_value()) return Fail(r.error());
  std::cout << "Garbage: " << r->gc.blobs_deleted << " blobs, " << r->gc.indexes_deleted
            << " indexes, " << r->gc.chunks_deleted << " chunks, " << HumanSize(r->gc.bytes_freed)
            << "\n";
  std::cout << "Chunks evicted: " << r->chunks_deleted << ", " << HumanSize(r->chunk_bytes_freed)
            << "\n";
  std::cout << "Lazily mountable layer blobs evicted: " << r->layers_evicted << ", "
            << HumanSize(r->layer_bytes_freed) << "\n";
  for (const std::string& name : r->images_removed) std::cout << "Removed image: " << name << "\n";
  std::cout << "Images removed: " << r->images_removed.size() << ", "
            << HumanSize(r->image_bytes_freed) << "\n";
  std::cout << "Store size: " << HumanSize(r->before_bytes + r->gc.bytes_freed) << " -> "
            << HumanSize(r->after_bytes) << " (limit " << HumanSize(max_bytes) << ")" << std::endl;
  if (!r->under_limit) {
    return Fail("the store is still above " + HumanSize(max_bytes) +
                ": the rest is pinned by live mounts or containers");
  }
  return kExitOk;
}

int RunSet(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"max-size", 0, true, "SIZE|none", "the size cap (none: no cap)"},
      {"interval", 0, true, "SECONDS", "how often mount daemons check the cap (default 60)"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kSetUsage, specs, &args, &code)) return code;
  if (!args.positional().empty()) return UsageError(ctx.name, "\"cache set\" accepts no arguments");
  auto store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  Result<cache::CacheConfig> config = cache::LoadCacheConfig(**store);
  if (!config.has_value()) return Fail(config.error());
  bool changed = false;
  if (args.Has("max-size")) {
    std::string v = args.Get("max-size");
    if (v == "none" || v == "0" || v.empty()) {
      config->max_size_bytes.reset();
    } else {
      Result<int64_t> size = cache::ParseSize(v);
      if (!size.has_value()) return UsageError(ctx.name, size.error().message());
      config->max_size_bytes = *size;
    }
    changed = true;
  }
  if (args.Has("interval")) {
    std::string v = args.Get("interval");
    char* end = nullptr;
    const int64_t n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 1 || n > 24 * 3600) {
      return UsageError(ctx.name, "invalid interval '" + v + "' (1 to 86400 seconds)");
    }
    config->prune_interval_seconds = static_cast<int>(n);
    changed = true;
  }
  if (changed) {
    Status st = cache::SaveCacheConfig(**store, *config);
    if (!st.ok()) return Fail(st);
  }
  std::cout << "max-size: "
            << (config->max_size_bytes.has_value()
                    ? HumanSize(*config->max_size_bytes) + " (" +
                          std::to_string(*config->max_size_bytes) + " bytes)"
                    : std::string("none"))
            << "\ninterval: " << config->prune_interval_seconds << "s" << std::endl;
  return kExitOk;
}

std::string Percent(uint64_t part, uint64_t whole) {
  if (whole == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100.0 * static_cast<double>(part) / whole);
  return buf;
}

}  // namespace

int RunCache(CommandContext& ctx) {
  if (ctx.args.empty() || ctx.args[0] == "--help" || ctx.args[0] == "-h") {
    std::cout << kCacheUsage << std::endl;
    return ctx.args.empty() ? kExitUsage : kExitOk;
  }
  static const std::map<std::string, CommandFn, std::less<>> sub = {
      {"du", &RunDu}, {"gc", &RunGc}, {"prune", &RunPrune}, {"set", &RunSet}};
  auto it = sub.find(ctx.args[0]);
  if (it == sub.end()) return UsageError("cache", "unknown command \"cache " + ctx.args[0] + "\"");
  CommandContext inner = ctx;
  inner.name = "cache " + ctx.args[0];
  inner.args.erase(inner.args.begin());
  return it->second(inner);
}

int RunStats(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"format", 0, true, "FORMAT", "\"json\" or \"table\""},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kStatsUsage, specs, &args, &code)) return code;
  if (args.positional().size() != 1) {
    return UsageError(ctx.name, "\"stats\" requires exactly 1 argument");
  }
  std::string format = args.Get("format", "table");
  if (format != "json" && format != "table") {
    return UsageError(ctx.name, "unknown format '" + format + "' (json or table)");
  }
  std::string dir = args.positional()[0];
  if (char* real = ::realpath(dir.c_str(), nullptr); real != nullptr) {
    dir = real;
    std::free(real);
  }
  auto store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  Result<std::vector<cache::LeaseInfo>> leases = cache::ListLiveLeases(**store);
  if (!leases.has_value()) return Fail(leases.error());
  const cache::LeaseInfo* lease = nullptr;
  for (const cache::LeaseInfo& l : *leases) {
    if (l.mountpoint == dir) lease = &l;
  }
  if (lease == nullptr) {
    return Fail(dir + " is not an imgfs mount of the store " + (*store)->root());
  }
  Result<std::string> reply =
      fs::RequestMountStats(fs::ControlSocketPath(**store, lease->id), 5000);
  if (!reply.has_value()) return Fail(reply.error());
  json j = json::parse(*reply, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("layers")) {
    return Fail("the mount daemon of " + dir + " sent an unreadable reply");
  }
  uint64_t image = 0;
  uint64_t fetched = 0;
  uint64_t requests = 0;
  uint64_t hits = 0;
  uint64_t chunks = 0;
  uint64_t errors = 0;
  for (const json& l : j["layers"]) {
    image += l.value("size", uint64_t{0});
    fetched += l.value("bytes_fetched", uint64_t{0});
    requests += l.value("requests", uint64_t{0});
    hits += l.value("cache_hits", uint64_t{0});
    chunks += l.value("chunks_fetched", uint64_t{0});
    errors += l.value("errors", uint64_t{0});
  }
  j["image_size"] = image;
  j["bytes_fetched"] = fetched;
  j["requests"] = requests;
  j["cache_hits"] = hits;
  j["chunks_fetched"] = chunks;
  j["fetch_errors"] = errors;
  if (format == "json") {
    std::cout << j.dump(2) << std::endl;
    return kExitOk;
  }
  uint64_t bytes_read = j.value("bytes_read", uint64_t{0});
  std::cout << "Mount:          " << j.value("mountpoint", dir) << "\n"
            << "Image:          " << j.value("reference", std::string()) << "\n"
            << "Fetched:        " << HumanSize(static_cast<int64_t>(fetched)) << " of "
            << HumanSize(static_cast<int64_t>(image)) << " (" << Percent(fetched, image) << ")\n"
            << "Requests:       " << requests << "\n"
            << "Chunks fetched: " << chunks << "\n"
            << "Cache hits:     " << hits << "\n"
            << "Fetch errors:   " << errors << "\n"
            << "Read by users:  " << HumanSize(static_cast<int64_t>(bytes_read)) << "\n"
            << "Merged tree:    " << TreeSource(j.value("tree", std::string())) << "\n\n";
  std::vector<std::vector<std::string>> rows = {
      {"LAYER", "SIZE", "LAZY", "FETCHED", "FETCHED %", "REQUESTS", "CHUNKS", "HITS", "ERRORS"}};
  for (const json& l : j["layers"]) {
    std::string digest = l.value("digest", std::string());
    if (digest.starts_with("sha256:")) digest = digest.substr(7, 12);
    uint64_t size = l.value("size", uint64_t{0});
    uint64_t f = l.value("bytes_fetched", uint64_t{0});
    bool lazy = l.value("lazy", false);
    rows.push_back({digest, HumanSize(static_cast<int64_t>(size)), lazy ? "yes" : "no",
                    HumanSize(static_cast<int64_t>(f)), lazy ? Percent(f, size) : "local",
                    std::to_string(l.value("requests", uint64_t{0})),
                    std::to_string(l.value("chunks_fetched", uint64_t{0})),
                    std::to_string(l.value("cache_hits", uint64_t{0})),
                    std::to_string(l.value("errors", uint64_t{0}))});
  }
  PrintTable(rows);
  return kExitOk;
}

}  // namespace imgfs::tools
