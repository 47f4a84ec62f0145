// imgfs — `imgfs diff`: the changes of a container or a writable mount, as `docker diff`.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cache/store.h"
#include "fs/image_ops/commit.h"
#include "fs/mount/mount.h"
#include "fs/writable/upper_changes.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kDiffUsage =
    "Usage: imgfs diff CONTAINER|MOUNTPOINT\n\n"
    "Inspect changes to files or directories of a container or a writable mount.\n"
    "One line per changed path, sorted: A (added), C (changed), D (deleted), as docker diff\n"
    "prints them. The image is not pulled: a lazily recorded one is compared through its\n"
    "layer indexes.";

}  // namespace

int RunDiff(CommandContext& ctx) {
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kDiffUsage, {}, &args, &code)) return code;
  if (args.positional().size() != 1) {
    return UsageError(ctx.name, "\"diff\" requires exactly 1 argument");
  }
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return Fail(store.error().WithContext("opening the image store " + ctx.global.root));
  }
  Result<fs::CommitSource> source = fs::ResolveCommitSource(**store, args.positional()[0]);
  if (!source.has_value()) return Fail(source.error());
  if (source->mountpoint.empty() && EnterRootlessForContainers != nullptr) {
    EnterRootlessForContainers();
  }

  // The base image's merged tree, lazily, so an image recorded without its layers is read
  // through its indexes. Named by its reference (a lazy image's layers may have to be found in
  // its registry); when that tag has moved since, by its manifest digest.
  fs::PrepareOptions options;
  options.pull_if_missing = false;
  options.lazy = true;
  options.prefetch = fs::PrepareOptions::Prefetch::kNone;
  const std::string by_digest = source->base_manifest.String();
  Result<fs::PreparedImage> image = fs::PrepareImage(
      **store, source->base_reference.empty() ? by_digest : source->base_reference, options);
  if (!source->base_reference.empty() && !source->base_manifest.empty() &&
      (!image.has_value() || image->manifest_digest != source->base_manifest)) {
    image = fs::PrepareImage(**store, by_digest, options);
  }
  if (!image.has_value()) {
    return Fail(image.error().WithContext("the image of " + source->description));
  }
  Result<std::vector<fs::UpperChange>> changes =
      fs::ListUpperChanges(source->upper, image->filesystem->table());
  if (!changes.has_value()) return Fail(changes.error().WithContext(source->description));
  for (const fs::UpperChange& change : *changes) std::cout << fs::FormatUpperChange(change) << '\n';
  std::cout.flush();
  return std::cout ? kExitOk : Fail("writing the changes to stdout failed");
}

}  // namespace imgfs::tools
