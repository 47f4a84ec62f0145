// imgfs — `imgfs image prune`: remove dangling (or all unused) images, like docker.
#include <unistd.h>

#include <cstdint>
#include <ctime>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cache/images.h"
#include "cache/store.h"
#include "cache/usage.h"
#include "fs/mount/mount_services.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kImagePruneUsage =
    "Usage: imgfs image prune [OPTIONS]\n\n"
    "Remove unused images: the dangling ones (without a tag), or with -a every image. An image\n"
    "a live mount or a container uses is never removed. Then delete what nothing references\n"
    "any more (blobs, layer indexes, chunks) and print the space reclaimed. Without -f, asks\n"
    "for confirmation on a terminal and refuses when stdin is not one.\n\n"
    "Filters (--filter, repeatable; an image is removed only when it matches all of them):\n"
    "  until=TIMESTAMP|DURATION  created (config `created`) before a time: \"24h\", \"90m\",\n"
    "                            \"2024-05-01\", \"2024-05-01T10:00:00Z\", Unix seconds\n"
    "  label=KEY[=VALUE]         has the label (config Labels)\n"
    "  label!=KEY[=VALUE]        does not have it\n"
    "  dangling=false            same as -a";

// docker's prompts (cli/command/image/prune.go).
constexpr std::string_view kDanglingWarning =
    "WARNING! This will remove all dangling images.\nAre you sure you want to continue?";
constexpr std::string_view kAllWarning =
    "WARNING! This will remove all images without at least one container associated to "
    "them.\nAre you sure you want to continue?";

// docker's PromptForConfirmation: the question, " [y/N] ", one line; "y" or "Y" agrees.
bool Confirm(std::string_view question) {
  std::cout << question << " [y/N] " << std::flush;
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  while (!answer.empty() && (answer.back() == '\r' || answer.back() == ' ')) answer.pop_back();
  return answer == "y" || answer == "Y";
}

}  // namespace

int RunImagePrune(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"all", 'a', false, "", "remove all unused images, not just dangling ones"},
      {"filter", 0, true, "FILTER",
       "until=TIMESTAMP|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE] (repeatable)"},
      {"force", 'f', false, "", "do not prompt for confirmation"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kImagePruneUsage, specs, &args, &code)) return code;
  if (!args.positional().empty()) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" accepts no arguments");
  }
  Result<cache::ImagePruneFilter> filter =
      cache::ParsePruneFilters(args.GetAll("filter"), static_cast<int64_t>(::time(nullptr)));
  if (!filter.has_value()) return UsageError(ctx.name, filter.error().message());
  if (args.Has("all")) filter->all = true;
  const bool all = filter->all;
  if (!args.Has("force")) {
    if (isatty(STDIN_FILENO) != 1) {
      return Fail("refusing to prune without confirmation: stdin is not a terminal (use -f)");
    }
    if (!Confirm(all ? kAllWarning : kDanglingWarning)) {
      std::cout << "Total reclaimed space: " << HumanSize(0) << std::endl;
      return kExitOk;
    }
  }
  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  cache::UsageOptions options;
  options.chunk_lister = fs::LayerIndexChunkLister();
  Result<cache::ImagePruneReport> report = cache::PruneImages(**store, *filter, options);
  if (!report.has_value()) return Fail(report.error());
  std::string out;
  if (!report->images.empty()) {
    out += "Deleted Images:\n";
    for (const cache::PrunedImage& image : report->images) {
      for (const std::string& u : image.untagged) out += "untagged: " + u + "\n";
      out += "deleted: " + image.id.String() + "\n";
    }
    out += "\n";
  }
  out += "Total reclaimed space: " + HumanSize(report->bytes_freed) + "\n";
  std::cout << out << std::flush;
  return kExitOk;
}

}  // namespace imgfs::tools
