// imgfs — `imgfs convert`: an image of the store (or pulled on demand) rewritten as eStargz or
// zstd:chunked, so that lazy mounts can fetch it chunk by chunk.
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cache/store.h"
#include "fs/convert/image_convert.h"
#include "registry/transport.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kConvertUsage =
    "Usage: imgfs convert --format estargz|zstd:chunked [OPTIONS] SRC DEST\n\n"
    "Convert an image into a lazily mountable format. SRC is an image of the store or any\n"
    "reference imgfs pull accepts (pulled first when missing). DEST is a name to record the\n"
    "new image under in the store (push it with imgfs push), docker://REF to record it and\n"
    "push it to that registry, or oci:DIR[:TAG] for an OCI layout.\n"
    "eStargz layers keep the tar+gzip media type, zstd:chunked layers tar+zstd: any runtime\n"
    "can pull them; lazy mounts fetch only the chunks they read.";

// "4194304", "4M", "512k", "1MiB" → bytes.
Result<uint64_t> ParseChunkSize(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || end == text.c_str() || errno != 0 || text[0] == '-') {
    return Status::InvalidArgument("--chunk-size must be a size in bytes (e.g. 4M), not \"" + text +
                                   "\"");
  }
  std::string suffix = end;
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "B") {
    mult = 1;
  } else if (suffix == "k" || suffix == "K" || suffix == "KiB" || suffix == "KB") {
    mult = 1 << 10;
  } else if (suffix == "m" || suffix == "M" || suffix == "MiB" || suffix == "MB") {
    mult = 1 << 20;
  } else {
    return Status::InvalidArgument("--chunk-size: unknown unit \"" + suffix + "\"");
  }
  uint64_t bytes = v * mult;
  // Readers decode a chunk in memory (fs/layer/chunk_decoder.h bounds it at 1 GiB).
  if (v == 0 || bytes / mult != v || bytes > (1ull << 30)) {
    return Status::InvalidArgument("--chunk-size must be between 1 byte and 1 GiB");
  }
  return bytes;
}

}  // namespace

int RunConvert(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"format", 0, true, "FORMAT", "estargz or zstd:chunked (required)"},
      {"chunk-size", 0, true, "SIZE", "split files into chunks of SIZE (default 4M)"},
      {"prioritize", 0, true, "FILE",
       "eStargz: put FILE first and mark it for prefetch (repeatable)"},
      {"quiet", 'q', false, "", "print only the new image's manifest digest"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kConvertUsage, specs, &args, &code)) return code;
  if (args.positional().size() != 2) {
    return UsageError(ctx.name, "\"convert\" requires exactly 2 arguments");
  }
  if (!args.Has("format")) return UsageError(ctx.name, "--format is required");
  fs::ConvertOptions options;
  Result<fs::LazyFormat> format = fs::ParseLazyFormat(args.Get("format"));
  if (!format.has_value()) return UsageError(ctx.name, format.error().message());
  options.layer.format = *format;
  if (args.Has("chunk-size")) {
    Result<uint64_t> chunk = ParseChunkSize(args.Get("chunk-size"));
    if (!chunk.has_value()) return UsageError(ctx.name, chunk.error().message());
    options.layer.chunk_size_bytes = *chunk;
  }
  options.layer.prioritized_files = args.GetAll("prioritize");
  if (!options.layer.prioritized_files.empty() && *format != fs::LazyFormat::kEstargz) {
    return UsageError(ctx.name, "--prioritize applies to --format estargz only");
  }
  options.pull.insecure_registries = ctx.global.insecure_registries;
  options.pull.ca_files = ctx.global.ca_certs;
  options.pull.creds = ctx.global.creds;
  const bool quiet = args.Has("quiet");
  const std::string& src = args.positional()[0];
  const std::string& dest = args.positional()[1];
  Result<registry::SourceSpec> dest_spec = registry::ParseSourceSpec(dest);
  if (!dest_spec.has_value()) return UsageError(ctx.name, dest_spec.error().message());
  const bool push = !dest_spec->IsLocal() && dest.starts_with("docker://");
  if (push && RunPush == nullptr) {
    return Fail("pushing to " + dest + ": imgfs push is not built into this binary");
  }

  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return Fail(store.error().WithContext("opening the image store " + ctx.global.root));
  }
  if (!quiet) {
    options.on_layer = [](size_t i, size_t n, const fs::WrittenLayer& l) {
      std::cout << "layer " << (i + 1) << "/" << n << ": " << l.descriptor.digest.Short() << " ("
                << HumanSize(l.descriptor.size) << ", " << l.chunks << " chunks)" << std::endl;
    };
  }
  Result<fs::ConvertedImage> converted = fs::ConvertImage(**store, src, dest, options);
  if (!converted.has_value()) {
    return Fail(converted.error().WithContext("converting " + src + " to " + dest));
  }
  if (quiet) {
    if (!push) std::cout << converted->manifest.digest.String() << std::endl;
  } else {
    std::cout << "Converted " << src << " to " << fs::LazyFormatName(*format) << ": " << dest
              << "\nmanifest: " << converted->manifest.digest.String()
              << "\nimage ID: " << converted->config_digest.String() << std::endl;
  }
  if (!push) return kExitOk;
  // docker://REF: the image is recorded as REF; imgfs push sends it to the registry.
  CommandContext push_ctx = ctx;
  push_ctx.name = "push";
  push_ctx.args = {converted->recorded_as};
  if (quiet) push_ctx.args.push_back("--quiet");
  return RunPush(push_ctx);
}

}  // namespace imgfs::tools
