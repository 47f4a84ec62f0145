// imgfs — `imgfs commit`: a container's or a writable mount's changes become a new image.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cache/store.h"
#include "fs/image_ops/commit.h"
#include "registry/reference.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kCommitUsage =
    "Usage: imgfs commit [OPTIONS] CONTAINER|MOUNTPOINT REPOSITORY[:TAG]\n\n"
    "Create a new image from a container's or a writable mount's changes.\n"
    "The changes (the upper layer) become one new layer on top of the image they were made\n"
    "on. A live mount is synced first; files written while the commit runs may be captured\n"
    "torn: stop writers (or unmount) for a consistent image.";

}  // namespace

int RunCommit(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"author", 'a', true, "STRING", "author (e.g. \"Jane <jane@example.com>\")"},
      {"change", 'c', true, "INSTRUCTION",
       "apply a Dockerfile instruction to the config: ENV, CMD, ENTRYPOINT, WORKDIR, USER, "
       "LABEL, EXPOSE, VOLUME (repeatable)"},
      {"format", 0, true, "FORMAT", "layer format: gzip (default), zstd, estargz or zstd:chunked"},
      {"message", 'm', true, "STRING", "commit message (history comment)"},
      {"quiet", 'q', false, "", "print only the image ID"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kCommitUsage, specs, &args, &code)) return code;
  if (args.positional().size() != 2) {
    return UsageError(ctx.name, "\"commit\" requires exactly 2 arguments");
  }
  const std::string& source_text = args.positional()[0];
  Result<registry::Reference> ref = registry::Reference::Parse(args.positional()[1]);
  if (!ref.has_value()) return UsageError(ctx.name, ref.error().message());
  if (ref->digest().has_value()) {
    return UsageError(ctx.name, "a commit is named by REPOSITORY[:TAG], not by a digest");
  }
  fs::CommitOptions options;
  Result<fs::LayerCompression> format = fs::ParseLayerCompression(args.Get("format"));
  if (!format.has_value()) return Fail(format.error());
  options.compression = *format;
  options.author = args.Get("author");
  options.message = args.Get("message");
  options.changes = args.GetAll("change");
  options.created_by = "imgfs commit " + source_text;

  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return Fail(store.error().WithContext("opening the image store " + ctx.global.root));
  }
  Result<fs::CommitSource> source = fs::ResolveCommitSource(**store, source_text);
  if (!source.has_value()) return Fail(source.error());
  if (source->mountpoint.empty() && EnterRootlessForContainers != nullptr) {
    EnterRootlessForContainers();
  }
  Result<fs::CommittedImage> image = fs::CommitUpper(**store, *source, *ref, options);
  if (!image.has_value()) return Fail(image.error());
  if (!args.Has("quiet")) {
    std::cout << "Committed " << source->description << " as " << image->reference.FamiliarString()
              << " (layer " << image->layer.digest.Short() << ", " << HumanSize(image->layer.size)
              << ")\n";
  }
  std::cout << image->config_digest.String() << std::endl;
  return kExitOk;
}

}  // namespace imgfs::tools
