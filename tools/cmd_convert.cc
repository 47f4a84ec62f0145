// imgfs — `imgfs convert`: an image of the store (or pulled on demand) rewritten as eStargz or
// zstd:chunked, so that lazy mounts can fetch it chunk by chunk; `imgfs index build|push`:
// indexes of plain layers, published beside the image.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cache/store.h"
#include "fs/image_ops/image_convert.h"
#include "fs/image_ops/index_publish.h"
#include "registry/credentials.h"
#include "registry/push.h"
#include "registry/reference.h"
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
    "can pull them; lazy mounts fetch only the chunks they read.\n\n"
    "eStargz cuts files into chunks of --chunk-size (4M). zstd:chunked cuts them where a\n"
    "rolling checksum of the content says (as podman/containers-storage does: 64 KiB on\n"
    "average, 8 KiB to --chunk-size (1M) here, runs of zeros as chunks of their own): a\n"
    "file changed in one place changes only the chunks around it, the others dedup across\n"
    "image versions.\n\n"
    "--prioritize FILE (repeatable) puts FILE first in each layer that has it. eStargz:\n"
    "those files, then a .prefetch.landmark (imgfs mount --prefetch=landmarks fetches them\n"
    "in one request). zstd:chunked has no landmarks: the files come first in the order\n"
    "given (with their parent directories), together at the start of the layer blob, so\n"
    "reading them costs few range requests and the background fetch of imgfs mount\n"
    "--prefetch=all (which streams a layer in blob order) brings them first.";

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

constexpr std::string_view kIndexUsage =
    "Usage: imgfs index build IMAGE\n"
    "       imgfs index push IMAGE [REPOSITORY_REFERENCE]\n\n"
    "Make the plain tar/gzip/zstd layers of an image lazily mountable.\n"
    "build: index every such layer into the store (pulling the image first when missing).\n"
    "push:  also publish the indexes to the registry as an OCI artifact whose subject is the\n"
    "       image manifest (found through the referrers tag sha256-<hex>), in the image's\n"
    "       repository or REPOSITORY_REFERENCE.";

fs::PullOptions PullOptionsFrom(const GlobalOptions& global) {
  fs::PullOptions pull;
  pull.insecure_registries = global.insecure_registries;
  pull.ca_files = global.ca_certs;
  pull.creds = global.creds;
  return pull;
}

int RunIndexCommand(CommandContext& ctx, bool push) {
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kIndexUsage, {}, &args, &code)) return code;
  size_t max_args = push ? 2 : 1;
  if (args.positional().empty() || args.positional().size() > max_args) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" requires " +
                                    (push ? "1 or 2 arguments" : "exactly 1 argument"));
  }
  const std::string& image = args.positional()[0];
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return Fail(store.error().WithContext("opening the image store " + ctx.global.root));
  }
  fs::PullOptions pull = PullOptionsFrom(ctx.global);
  Result<fs::ImageIndexes> built = fs::BuildImageIndexes(**store, image, pull, true);
  if (!built.has_value()) return Fail(built.error().WithContext("indexing " + image));
  for (const fs::ImageIndexes::Layer& l : built->layers) {
    std::cout << l.layer.digest.Short() << ": " << l.files << " entries, " << l.checkpoints
              << " checkpoints (" << HumanSize(static_cast<int64_t>(l.encoded.size())) << ")"
              << std::endl;
  }
  if (built->skipped > 0) {
    std::cout << built->skipped << " layer(s) need no index (eStargz / zstd:chunked)" << std::endl;
  }
  if (!push) return kExitOk;

  std::string target = args.positional().size() == 2 ? args.positional()[1] : built->reference;
  Result<registry::Reference> ref = registry::Reference::Parse(target);
  if (target.empty() || !ref.has_value()) {
    return UsageError(ctx.name,
                      "name the registry repository to publish to (the image has no "
                      "registry reference)");
  }
  registry::PushOptions options;
  options.tls.ca_files = ctx.global.ca_certs;
  options.insecure_registries = ctx.global.insecure_registries;
  Result<std::optional<registry::Credential>> cred =
      registry::ResolveCredential(ctx.global.creds, ref->domain());
  if (!cred.has_value()) return Fail(cred.error());
  options.credential = *cred;
  Result<std::unique_ptr<registry::BlobSource>> source = fs::OpenRegistrySource(target, pull);
  if (!source.has_value()) return Fail(source.error().WithContext("publishing to " + target));
  Result<registry::Digest> pushed =
      fs::PushImageIndexes(*built, ref->domain(), ref->path(), options, **source);
  if (!pushed.has_value()) return Fail(pushed.error().WithContext("publishing to " + target));
  std::cout << "Published " << pushed->String() << " for " << built->manifest.digest.String()
            << " (tag " << fs::ReferrersTag(built->manifest.digest) << ")" << std::endl;
  return kExitOk;
}

int RunIndexBuild(CommandContext& ctx) { return RunIndexCommand(ctx, false); }
int RunIndexPush(CommandContext& ctx) { return RunIndexCommand(ctx, true); }

}  // namespace

int RunIndex(CommandContext& ctx) {
  if (ctx.args.empty() || ctx.args[0] == "--help" || ctx.args[0] == "-h") {
    std::cout << kIndexUsage << std::endl;
    return ctx.args.empty() ? kExitUsage : kExitOk;
  }
  static const std::map<std::string, CommandFn, std::less<>> sub = {{"build", &RunIndexBuild},
                                                                    {"push", &RunIndexPush}};
  auto it = sub.find(ctx.args[0]);
  if (it == sub.end()) return UsageError("index", "unknown command \"index " + ctx.args[0] + "\"");
  CommandContext inner = ctx;
  inner.name = "index " + ctx.args[0];
  inner.args.erase(inner.args.begin());
  return it->second(inner);
}

int RunConvert(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"format", 0, true, "FORMAT", "estargz or zstd:chunked (required)"},
      {"chunk-size", 0, true, "SIZE",
       "eStargz: chunks of SIZE (default 4M); zstd:chunked: largest chunk (default 1M)"},
      {"prioritize", 0, true, "FILE",
       "put FILE first (repeatable; eStargz: also marked for prefetch)"},
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
    // zstd:chunked: the bound of the content-defined chunks.
    fs::ContentChunking& cdc = options.layer.content_chunking;
    cdc.max_bytes = *chunk;
    cdc.min_bytes = std::min(cdc.min_bytes, cdc.max_bytes);
  }
  options.layer.prioritized_files = args.GetAll("prioritize");
  options.pull = PullOptionsFrom(ctx.global);
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
