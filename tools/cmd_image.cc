// imgfs — image commands: pull, images, inspect, rm, and the `image` group.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "cache/images.h"
#include "cache/leases.h"
#include "cache/store.h"
#include "cache/usage.h"
#include "fs/fuse/session.h"
#include "fs/image_ops/pull.h"
#include "fs/mount/mount_services.h"
#include "registry/manifest.h"
#include "registry/transport.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

using nlohmann::json;

// ---- pull progress ----

// Renders layer progress: on a terminal, one redrawn bar per layer; otherwise one line per
// layer when it is finished (or found present).
class ProgressPrinter {
 public:
  ProgressPrinter(bool tty, bool quiet) : tty_(tty), quiet_(quiet) {}

  void Update(const fs::LayerProgress& p) {
    if (quiet_) return;
    // `pull -a` pulls several images in a row: a new image starts a new block of bars.
    if (p.index == 0 && !rows_.empty() && AllFinished()) {
      rows_.clear();
      drawn_ = 0;
    }
    if (p.index >= rows_.size()) rows_.resize(p.count);
    Row& row = rows_[p.index];
    row.id = p.digest.Short();
    row.state = p.state;
    row.done = p.done_bytes;
    row.total = p.total_bytes;
    if (!tty_) {
      if (p.state == fs::LayerProgress::State::kExists) {
        std::cout << row.id << ": Already exists" << std::endl;
      } else if (p.state == fs::LayerProgress::State::kDone) {
        std::cout << row.id << ": Pull complete (" << HumanSize(p.total_bytes) << ")" << std::endl;
      }
      return;
    }
    auto now = std::chrono::steady_clock::now();
    bool state_change = p.state != fs::LayerProgress::State::kDownloading || p.done_bytes == 0;
    if (!state_change && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    Draw();
  }

  // Final redraw on a terminal (so every bar shows its end state).
  void Finish() {
    if (tty_ && !quiet_ && !rows_.empty()) Draw();
  }

 private:
  struct Row {
    std::string id;
    fs::LayerProgress::State state = fs::LayerProgress::State::kWaiting;
    int64_t done = 0;
    int64_t total = 0;
  };

  bool AllFinished() const {
    return std::all_of(rows_.begin(), rows_.end(), [](const Row& r) {
      return r.state == fs::LayerProgress::State::kDone ||
             r.state == fs::LayerProgress::State::kExists ||
             r.state == fs::LayerProgress::State::kFailed;
    });
  }

  void Draw() {
    std::string out;
    if (drawn_ > 0) out += "\x1b[" + std::to_string(drawn_) + "A";
    for (const Row& r : rows_) {
      out += "\x1b[2K";
      out += r.id.empty() ? std::string(12, ' ') : r.id;
      out += ": ";
      switch (r.state) {
        case fs::LayerProgress::State::kWaiting:
          out += "Waiting";
          break;
        case fs::LayerProgress::State::kExists:
          out += "Already exists";
          break;
        case fs::LayerProgress::State::kDone:
          out += "Pull complete";
          break;
        case fs::LayerProgress::State::kFailed:
          out += "Failed";
          break;
        case fs::LayerProgress::State::kDownloading: {
          constexpr int kWidth = 40;
          int filled = r.total > 0 ? static_cast<int>(r.done * kWidth / r.total) : 0;
          filled = std::clamp(filled, 0, kWidth);
          out += "Downloading [";
          out += std::string(static_cast<size_t>(filled), '=');
          if (filled < kWidth) {
            out += '>';
            out += std::string(static_cast<size_t>(kWidth - filled - 1), ' ');
          }
          out += "] " + HumanSize(r.done) + "/" + HumanSize(r.total);
          break;
        }
      }
      out += '\n';
    }
    drawn_ = rows_.size();
    std::cout << out << std::flush;
  }

  bool tty_;
  bool quiet_;
  std::vector<Row> rows_;
  size_t drawn_ = 0;
  std::chrono::steady_clock::time_point last_draw_{};
};

constexpr std::string_view kPullUsage =
    "Usage: imgfs pull [OPTIONS] NAME[:TAG|@DIGEST]\n"
    "       imgfs pull [OPTIONS] oci:DIR[:TAG] | oci-archive:FILE[:TAG] | "
    "docker-archive:FILE[:REF]\n\n"
    "Pull an image into the local store (default registry: docker.io).";

// ---- images ----

std::string DigestColumn(const cache::ImageSummary& s) {
  for (const std::string& rd : s.repo_digests) {
    size_t at = rd.find('@');
    if (at == std::string::npos) continue;
    if (rd.substr(0, at) == s.repository || s.repository == "<none>") return rd.substr(at + 1);
  }
  return "<none>";
}

// The SIZE column: the image's size as docker shows it; for an image whose layers are not
// all stored (pull --lazy, or layers evicted by `cache prune`) also how much of it is here.
std::string SizeColumn(const cache::ImageSummary& s, int64_t local_bytes) {
  std::string size = HumanSize(s.size_bytes);
  if (!s.complete) size += " (" + HumanSize(local_bytes) + " local)";
  return size;
}

// `local_bytes`: what the store holds of the image (blobs, layer indexes, chunks).
json SummaryJson(const cache::ImageSummary& s, int64_t local_bytes) {
  json j;
  j["Containers"] = "N/A";
  j["CreatedAt"] = s.created;
  j["CreatedSince"] = HumanAge(s.created);
  j["Digest"] = DigestColumn(s);
  j["ID"] = s.id.Short();
  j["Repository"] = s.repository;
  j["SharedSize"] = "N/A";
  j["Size"] = HumanSize(s.size_bytes);
  j["Tag"] = s.tag;
  j["UniqueSize"] = "N/A";
  j["VirtualSize"] = HumanSize(s.size_bytes);
  // False for images recorded by `pull --lazy`: their layers are fetched by lazy mounts.
  j["Complete"] = s.complete;
  j["LocalSize"] = HumanSize(local_bytes);
  return j;
}

constexpr std::string_view kImagesUsage =
    "Usage: imgfs images [OPTIONS] [REPOSITORY[:TAG]]\n\n"
    "List images in the local store. SIZE is the image's size (config and layers as stored);\n"
    "an image whose layers are not all here (pull --lazy) adds how much of it the store holds:\n"
    "\"2.67MB (35.2kB local)\".";

constexpr std::string_view kInspectUsage =
    "Usage: imgfs inspect [OPTIONS] IMAGE [IMAGE...]\n\n"
    "Show details of images as a JSON array (like docker image inspect).";

constexpr std::string_view kRemoveUsage =
    "Usage: imgfs rm [OPTIONS] IMAGE [IMAGE...]\n\n"
    "Remove images (by reference: untag; by ID: every tag) and the blobs nothing else uses.";

constexpr std::string_view kImageUsage =
    "Usage: imgfs image COMMAND\n\nManage images.\n\nCommands:\n"
    "  ls        List images (also: list)\n"
    "  pull      Pull an image\n"
    "  inspect   Show details of images\n"
    "  rm        Remove images (also: remove)\n"
    "  tag       Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE\n"
    "  history   Show the history of an image\n"
    "  prune     Remove unused images\n"
    "  save      Save images to a tar archive\n"
    "  load      Load images from a tar archive";

// `rm -f`: unmounts every live mount of the image `text` names and waits (bounded) for the
// daemons to exit, so their leases no longer pin it. Failures are reported, not fatal.
void UnmountImage(const cache::Store& store, const std::string& text) {
  Result<cache::ResolvedImage> image = cache::ResolveImage(store, text);
  if (!image.has_value()) return;
  Result<std::vector<cache::LeaseInfo>> leases = cache::ListLiveLeases(store);
  if (!leases.has_value()) return;
  for (const cache::LeaseInfo& lease : *leases) {
    if (lease.manifest != image->manifest.digest) continue;
    Status st = fs::Unmount(lease.mountpoint, /*lazy=*/true);
    if (!st.ok()) {
      std::cerr << "imgfs: unmounting " << lease.mountpoint << ": " << st.ToString() << std::endl;
      continue;
    }
    std::cout << "Unmounted: " << lease.mountpoint << "\n";
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (cache::ProcessIsAlive(lease.pid, lease.pid_start) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace

int RunPull(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"all-tags", 'a', false, "", "pull every tag of the repository"},
      {"platform", 0, true, "OS/ARCH[/VARIANT]", "platform to select (default: this host's)"},
      {"quiet", 'q', false, "", "print only the pulled reference"},
      {"lazy", 0, false, "",
       "store only what a lazy mount needs (manifest and config); `imgfs pull` without "
       "--lazy completes the image later"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kPullUsage, specs, &args, &code)) return code;
  if (args.positional().size() != 1) {
    return UsageError(ctx.name, "\"pull\" requires exactly 1 argument");
  }
  const std::string& text = args.positional()[0];

  fs::PullOptions options;
  options.all_tags = args.Has("all-tags");
  options.metadata_only = args.Has("lazy");
  if (options.metadata_only) {
    // Lazy mounts fetch layer data from a registry; a local source has none to offer later.
    Result<registry::SourceSpec> spec = registry::ParseSourceSpec(text);
    if (spec.has_value() && spec->IsLocal()) {
      return UsageError(ctx.name, "--lazy needs a registry reference (" +
                                      std::string(registry::TransportName(spec->transport)) +
                                      ": images are copied whole)");
    }
  }
  if (args.Has("platform")) {
    Result<registry::Platform> p = registry::Platform::Parse(args.Get("platform"));
    if (!p.has_value()) return UsageError(ctx.name, p.error().message());
    options.platform = *p;
    options.platform_explicit = true;
  }
  options.insecure_registries = ctx.global.insecure_registries;
  options.ca_files = ctx.global.ca_certs;
  options.creds = ctx.global.creds;

  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());

  bool quiet = args.Has("quiet");
  ProgressPrinter printer(ctx.stdout_is_tty, quiet);
  if (!quiet) std::cout << "Pulling " << text << std::endl;
  fs::Puller puller(store->get(), options);
  Result<std::vector<fs::PulledImage>> pulled =
      puller.Pull(text, [&printer](const fs::LayerProgress& p) { printer.Update(p); });
  printer.Finish();
  if (!pulled.has_value()) return Fail(pulled.error());
  for (const fs::PulledImage& img : *pulled) {
    Status touched = cache::TouchImage(**store, img.manifest_digest);  // last use: now
    if (!touched.ok()) IMGFS_LOG(kInfo) << touched.ToString();
    if (quiet) {
      std::cout << img.reference.String() << "\n";
      continue;
    }
    std::cout << "Digest: " << img.repo_digest.String() << "\n";
    if (options.metadata_only) {
      std::cout << "Status: Recorded " << img.reference.FamiliarString()
                << " for lazy mounts (manifest and config only; layers are fetched on demand)\n";
    } else if (img.layers_downloaded == 0 && !img.tag_moved) {
      std::cout << "Status: Image is up to date for " << img.reference.FamiliarString() << "\n";
    } else {
      std::cout << "Status: Downloaded newer image for " << img.reference.FamiliarString() << "\n";
    }
    std::cout << img.reference.String() << "\n";
  }
  std::cout << std::flush;
  return kExitOk;
}

int RunImages(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"all", 'a', false, "", "show all images (no intermediate images exist: same as default)"},
      {"digests", 0, false, "", "show digests"},
      {"filter", 'f', true, "FILTER", "dangling=true|false, reference=PATTERN (repeatable)"},
      {"format", 0, true, "FORMAT",
       "\"table\", \"table TEMPLATE\", \"json\" or a template like '{{.ID}}'"},
      {"no-trunc", 0, false, "", "do not truncate image IDs"},
      {"quiet", 'q', false, "", "only show image IDs"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kImagesUsage, specs, &args, &code)) return code;
  if (args.positional().size() > 1) {
    return UsageError(ctx.name, "\"images\" accepts at most 1 argument");
  }
  std::vector<std::string> filter_args = args.GetAll("filter");
  if (args.positional().size() == 1) filter_args.push_back("reference=" + args.positional()[0]);
  Result<cache::ImageFilter> filter = cache::ParseImageFilters(filter_args);
  if (!filter.has_value()) return UsageError(ctx.name, filter.error().message());

  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  Result<std::vector<cache::ImageSummary>> images = cache::ListImages(**store, *filter);
  if (!images.has_value()) return Fail(images.error());

  bool no_trunc = args.Has("no-trunc");
  auto id_text = [no_trunc](const registry::Digest& d) {
    return no_trunc ? d.String() : d.Short();
  };

  if (args.Has("quiet")) {
    std::set<std::string> seen;
    for (const auto& s : *images) {
      std::string id = id_text(s.id);
      if (seen.insert(id).second) std::cout << id << "\n";
    }
    std::cout << std::flush;
    return kExitOk;
  }

  // What the store holds of each image whose layers are not all here (one scan of the
  // store, only when there is such an image); a complete image holds its size.
  std::map<registry::Digest, int64_t> local_bytes;
  if (std::any_of(images->begin(), images->end(),
                  [](const cache::ImageSummary& s) { return !s.complete; })) {
    cache::UsageOptions options;
    options.chunk_lister = fs::LayerIndexChunkLister();
    Result<cache::StoreUsage> usage = cache::ScanUsage(**store, options);
    if (!usage.has_value()) return Fail(usage.error());
    for (const cache::ImageUsage& u : usage->images) local_bytes[u.id] = u.size_bytes;
  }
  auto local_of = [&local_bytes](const cache::ImageSummary& s) {
    auto it = local_bytes.find(s.id);
    return it != local_bytes.end() ? it->second : s.size_bytes;
  };

  std::string format = args.Get("format");
  if (!IsDefaultTable(format)) {
    static const json headers = {{"Containers", "CONTAINERS"},
                                 {"CreatedAt", "CREATED AT"},
                                 {"CreatedSince", "CREATED"},
                                 {"Digest", "DIGEST"},
                                 {"ID", "IMAGE ID"},
                                 {"Repository", "REPOSITORY"},
                                 {"SharedSize", "SHARED SIZE"},
                                 {"Size", "SIZE"},
                                 {"Tag", "TAG"},
                                 {"UniqueSize", "UNIQUE SIZE"},
                                 {"VirtualSize", "VIRTUAL SIZE"},
                                 {"Complete", "COMPLETE"},
                                 {"LocalSize", "LOCAL SIZE"}};
    std::vector<json> items;
    for (const auto& s : *images) {
      json j = SummaryJson(s, local_of(s));
      if (no_trunc) j["ID"] = s.id.String();
      items.push_back(std::move(j));
    }
    PrintFormatted(format, headers, items);
    return kExitOk;
  }

  bool digests = args.Has("digests");
  std::vector<std::vector<std::string>> rows;
  if (digests) {
    rows.push_back({"REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"});
  } else {
    rows.push_back({"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"});
  }
  for (const auto& s : *images) {
    std::vector<std::string> row = {s.repository, s.tag};
    if (digests) row.push_back(DigestColumn(s));
    row.push_back(id_text(s.id));
    row.push_back(HumanAge(s.created));
    row.push_back(SizeColumn(s, local_of(s)));
    rows.push_back(std::move(row));
  }
  PrintTable(rows);
  return kExitOk;
}

int RunInspect(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"format", 'f', true, "FORMAT", "a template like '{{.Id}}' or '{{json .Config}}'"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kInspectUsage, specs, &args, &code)) return code;
  if (args.positional().empty()) {
    return UsageError(ctx.name, "\"inspect\" requires at least 1 argument");
  }
  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());

  json array = json::array();
  std::vector<std::string> errors;
  for (const std::string& text : args.positional()) {
    Result<std::string> one = cache::InspectImage(**store, text);
    if (!one.has_value()) {
      errors.push_back(one.error().code() == StatusCode::kNotFound ? "Error: No such image: " + text
                                                                   : one.error().ToString());
      continue;
    }
    json j = json::parse(*one, nullptr, false);
    if (j.is_discarded()) {
      errors.push_back("internal error: inspect output for " + text + " is not JSON");
      continue;
    }
    array.push_back(std::move(j));
  }
  std::string format = args.Get("format");
  if (format.empty()) {
    std::cout << array.dump(4) << std::endl;
  } else {
    for (const json& j : array) std::cout << ApplyTemplate(format, j) << "\n";
    std::cout << std::flush;
  }
  for (const std::string& e : errors) Fail(e);
  return errors.empty() ? kExitOk : kExitError;
}

int RunRemove(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"force", 'f', false, "", "remove an image with several tags; unmount its mounts first"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kRemoveUsage, specs, &args, &code)) return code;
  if (args.positional().empty()) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" requires at least 1 argument");
  }
  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());

  bool force = args.Has("force");
  int rc = kExitOk;
  for (const std::string& text : args.positional()) {
    if (force) UnmountImage(**store, text);
    Result<cache::RemoveReport> report = cache::RemoveImage(**store, text, force);
    if (!report.has_value()) {
      Status err = report.error();
      rc = Fail(err.code() == StatusCode::kNotFound && err.message().find(text) == std::string::npos
                    ? "No such image: " + text
                    : err.ToString());
      continue;
    }
    for (const std::string& u : report->untagged) std::cout << "Untagged: " << u << "\n";
    for (const registry::Digest& d : report->deleted)
      std::cout << "Deleted: " << d.String() << "\n";
    std::cout << std::flush;
  }
  return rc;
}

int RunImage(CommandContext& ctx) {
  if (ctx.args.empty() || ctx.args[0] == "--help" || ctx.args[0] == "-h") {
    std::cout << kImageUsage << std::endl;
    return ctx.args.empty() ? kExitUsage : kExitOk;
  }
  static const std::map<std::string, CommandFn, std::less<>> sub = {
      {"ls", &RunImages},       {"list", &RunImages},     {"pull", &RunPull},
      {"inspect", &RunInspect}, {"rm", &RunRemove},       {"remove", &RunRemove},
      {"tag", &RunTag},         {"history", &RunHistory}, {"prune", &RunImagePrune},
      {"save", &RunSave},       {"load", &RunLoad},
  };
  auto it = sub.find(ctx.args[0]);
  if (it == sub.end()) {
    return UsageError("image", "unknown command \"image " + ctx.args[0] + "\"");
  }
  CommandContext inner = ctx;
  inner.name = "image " + ctx.args[0];
  inner.args.erase(inner.args.begin());
  return it->second(inner);
}

}  // namespace imgfs::tools
