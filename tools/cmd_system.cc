// imgfs — `imgfs system df`: the store's disk use in docker's four rows.
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cache/containers.h"
#include "cache/images.h"
#include "cache/store.h"
#include "cache/usage.h"
#include "fs/mount/mount_services.h"
#include "registry/reference.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

using nlohmann::json;

constexpr std::string_view kSystemUsage =
    "Usage: imgfs system COMMAND\n\nManage imgfs.\n\nCommands:\n"
    "  df        Show the store's disk use";

constexpr std::string_view kDfUsage =
    "Usage: imgfs system df [OPTIONS]\n\n"
    "Show the store's disk use as docker does:\n"
    "  Images         image data (blobs/ and layer indexes/); ACTIVE: images a live mount or a\n"
    "                 container uses; RECLAIMABLE: what they do not reach\n"
    "  Containers     containers' writable layers (imgfs run); ACTIVE: running ones;\n"
    "                 RECLAIMABLE: the stopped ones' layers\n"
    "  Local Volumes  always 0 (imgfs has no volumes of its own)\n"
    "  Build Cache    the chunk cache of lazy mounts (chunks/); ACTIVE: chunks a live mount\n"
    "                 or a container's image uses; the rest is reclaimable\n"
    "`imgfs cache du` has the details.";

// docker's RECLAIMABLE cell: "1.2MB (40%)" (no percentage when the total is 0, or for the
// build cache).
std::string Reclaimable(int64_t reclaimable, int64_t total, bool percent) {
  std::string out = HumanSize(reclaimable);
  if (percent && total > 0) out += " (" + std::to_string(reclaimable * 100 / total) + "%)";
  return out;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : " ") + s;
  return out;
}

int RunDf(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"format", 0, true, "FORMAT",
       "\"table\", \"table TEMPLATE\", \"json\" or a template like '{{.Size}}'"},
      {"verbose", 'v', false, "", "show detailed information on space usage"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kDfUsage, specs, &args, &code)) return code;
  if (!args.positional().empty()) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" accepts no arguments");
  }
  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  cache::UsageOptions options;
  options.chunk_lister = fs::LayerIndexChunkLister();
  Result<cache::StoreUsage> usage = cache::ScanUsage(**store, options);
  if (!usage.has_value()) return Fail(usage.error());
  Result<std::vector<cache::ContainerInfo>> containers = cache::ListContainers(**store);
  if (!containers.has_value()) return Fail(containers.error());
  const cache::StoreUsage& u = *usage;

  int64_t images = 0;
  int64_t active_images = 0;
  for (const cache::ImageUsage& i : u.images) {
    if (i.recorded) ++images;
    if (!i.pinned_by.empty()) ++active_images;
  }
  const int64_t image_bytes = u.blob_bytes + u.index_bytes;
  auto container_size = [&u](const cache::ContainerInfo& c) {
    auto it = u.container_entry_bytes.find(c.name);
    return it != u.container_entry_bytes.end() ? it->second : 0;
  };
  int64_t running = 0;
  int64_t container_bytes = 0;
  int64_t stopped_bytes = 0;
  for (const cache::ContainerInfo& c : *containers) {
    container_bytes += container_size(c);
    if (c.running) {
      ++running;
    } else {
      stopped_bytes += container_size(c);
    }
  }
  struct Row {
    std::string type;
    int64_t total;
    int64_t active;
    int64_t size;
    std::string reclaimable;
  };
  const std::vector<Row> rows = {
      {"Images", images, active_images, image_bytes,
       Reclaimable(image_bytes - u.pinned_blob_bytes, image_bytes, true)},
      {"Containers", static_cast<int64_t>(containers->size()), running, container_bytes,
       Reclaimable(stopped_bytes, container_bytes, true)},
      {"Local Volumes", 0, 0, 0, Reclaimable(0, 0, true)},
      {"Build Cache", u.chunks, u.pinned_chunks, u.chunk_bytes,
       Reclaimable(u.chunk_bytes - u.pinned_chunk_bytes, u.chunk_bytes, false)},
  };

  const std::string format = args.Get("format");
  if (!IsDefaultTable(format)) {
    static const json headers = {{"Type", "TYPE"},
                                 {"TotalCount", "TOTAL"},
                                 {"Active", "ACTIVE"},
                                 {"Size", "SIZE"},
                                 {"Reclaimable", "RECLAIMABLE"}};
    std::vector<json> items;
    for (const Row& r : rows) {
      items.push_back({{"Type", r.type},
                       {"TotalCount", std::to_string(r.total)},
                       {"Active", std::to_string(r.active)},
                       {"Size", HumanSize(r.size)},
                       {"Reclaimable", r.reclaimable}});
    }
    PrintFormatted(format, headers, items);
    return kExitOk;
  }
  if (!args.Has("verbose")) {
    std::vector<std::vector<std::string>> table = {
        {"TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"}};
    for (const Row& r : rows) {
      table.push_back({r.type, std::to_string(r.total), std::to_string(r.active), HumanSize(r.size),
                       r.reclaimable});
    }
    PrintTable(table);
    return kExitOk;
  }

  // -v: docker's per-object tables.
  Result<std::vector<cache::ImageSummary>> summaries = cache::ListImages(**store);
  if (!summaries.has_value()) return Fail(summaries.error());
  std::map<registry::Digest, const cache::ImageUsage*> by_id;
  for (const cache::ImageUsage& i : u.images) by_id[i.id] = &i;
  std::cout << "Images space usage:\n\n";
  std::vector<std::vector<std::string>> table = {{"REPOSITORY", "TAG", "IMAGE ID", "CREATED",
                                                  "SIZE", "SHARED SIZE", "UNIQUE SIZE",
                                                  "CONTAINERS"}};
  for (const cache::ImageSummary& s : *summaries) {
    auto it = by_id.find(s.id);
    const cache::ImageUsage* iu = it != by_id.end() ? it->second : nullptr;
    table.push_back({s.repository, s.tag, s.id.Short(), HumanAge(s.created),
                     HumanSize(iu != nullptr ? iu->size_bytes : 0),
                     HumanSize(iu != nullptr ? iu->shared_bytes : 0),
                     HumanSize(iu != nullptr ? iu->unique_bytes : 0),
                     std::to_string(iu != nullptr ? iu->pinned_by.size() : 0)});
  }
  PrintTable(table);
  std::cout << "\nContainers space usage:\n\n";
  table = {
      {"CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"}};
  for (const cache::ContainerInfo& c : *containers) {
    Result<registry::Reference> ref = registry::Reference::Parse(c.reference);
    table.push_back(
        {c.id.substr(0, 12), ref.has_value() ? ref->FamiliarString() : c.image_id.Short(),
         "\"" + Join(c.command) + "\"", "0", HumanSize(container_size(c)), HumanAge(c.created),
         c.running ? "Up" : "Exited (" + std::to_string(c.exit_code) + ")", c.name});
  }
  PrintTable(table);
  std::cout << "\nLocal Volumes space usage:\n\n";
  PrintTable({{"VOLUME NAME", "LINKS", "SIZE"}});
  std::cout << "\nBuild cache usage: " << HumanSize(u.chunk_bytes) << "\n" << std::flush;
  return kExitOk;
}

}  // namespace

int RunSystem(CommandContext& ctx) {
  if (ctx.args.empty() || ctx.args[0] == "--help" || ctx.args[0] == "-h") {
    std::cout << kSystemUsage << std::endl;
    return ctx.args.empty() ? kExitUsage : kExitOk;
  }
  if (ctx.args[0] != "df") {
    return UsageError("system", "unknown command \"system " + ctx.args[0] + "\"");
  }
  CommandContext inner = ctx;
  inner.name = "system df";
  inner.args.erase(inner.args.begin());
  return RunDf(inner);
}

}  // namespace imgfs::tools
