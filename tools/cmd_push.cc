// imgfs — `imgfs push`: an image of the store to a registry or an OCI layout.
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/store.h"
#include "fs/image_ops/commit.h"
#include "registry/credentials.h"
#include "registry/push.h"
#include "registry/reference.h"
#include "registry/transport.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kPushUsage =
    "Usage: imgfs push [OPTIONS] NAME[:TAG] [DESTINATION]\n\n"
    "Push an image of the local store to a registry (by default under its own name).\n"
    "DESTINATION: another registry reference (docker://HOST/NAME:TAG or HOST/NAME:TAG), or\n"
    "oci:DIR[:TAG] to write an OCI image layout.";

// One line per blob once it is settled, as `docker push` prints them.
void PrintProgress(const registry::PushProgress& p, bool quiet) {
  if (quiet) return;
  using State = registry::PushProgress::State;
  switch (p.state) {
    case State::kExists:
      std::cout << p.digest.Short() << ": Layer already exists" << std::endl;
      break;
    case State::kMounted:
      std::cout << p.digest.Short() << ": Mounted from " << p.mounted_from << std::endl;
      break;
    case State::kPushed:
      std::cout << p.digest.Short() << ": Pushed (" << HumanSize(p.total_bytes) << ")" << std::endl;
      break;
    case State::kFailed:
      std::cout << p.digest.Short() << ": Failed" << std::endl;
      break;
    case State::kWaiting:
    case State::kUploading:
      break;
  }
}

}  // namespace

int RunPush(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"quiet", 'q', false, "", "print only the pushed manifest digest"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kPushUsage, specs, &args, &code)) return code;
  if (args.positional().empty() || args.positional().size() > 2) {
    return UsageError(ctx.name, "\"push\" requires 1 or 2 arguments");
  }
  const std::string& src = args.positional()[0];
  const std::string dest_text = args.positional().size() == 2 ? args.positional()[1] : src;
  const bool quiet = args.Has("quiet");

  Result<registry::SourceSpec> dest = registry::ParseSourceSpec(dest_text);
  if (!dest.has_value()) return UsageError(ctx.name, dest.error().message());
  if (dest->IsLocal() && dest->transport != registry::Transport::kOciLayout) {
    return Fail("pushing to " + std::string(registry::TransportName(dest->transport)) +
                ": is not supported (registry references and oci:DIR[:TAG] are)");
  }

  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return Fail(store.error().WithContext("opening the image store " + ctx.global.root));
  }
  fs::StoreBlobReader reader(store->get());

  if (dest->transport == registry::Transport::kOciLayout) {
    std::string tag = dest->selector.empty() ? "latest" : dest->selector;
    if (tag.starts_with("@")) return UsageError(ctx.name, "an oci: destination takes a tag");
    Result<registry::ImageToPush> image = fs::PrepareImagePush(**store, src, "", "");
    if (!image.has_value()) return Fail(image.error());
    if (!quiet) std::cout << "Writing " << src << " to oci:" << dest->path << ":" << tag << "\n";
    Status st = registry::PushToOciLayout(
        dest->path, tag, *image, reader,
        [&](const registry::PushProgress& p) { PrintProgress(p, quiet); });
    if (!st.ok()) return Fail(st);
    std::cout << (quiet ? "" : tag + ": digest: ")
              << registry::Digest::Sha256Of(image->manifest_bytes).String()
              << (quiet ? "" : " size: " + std::to_string(image->manifest_bytes.size()))
              << std::endl;
    return kExitOk;
  }

  const registry::Reference& ref = dest->reference;
  Result<registry::ImageToPush> image =
      fs::PrepareImagePush(**store, src, ref.domain(), ref.path());
  if (!image.has_value()) return Fail(image.error());

  registry::PushOptions options;
  options.tls.ca_files = ctx.global.ca_certs;
  options.insecure_registries = ctx.global.insecure_registries;
  Result<std::optional<registry::Credential>> cred =
      registry::ResolveCredential(ctx.global.creds, ref.domain());
  if (!cred.has_value()) return Fail(cred.error());
  options.credential = *cred;

  if (!quiet) std::cout << "The push refers to repository [" << ref.Name() << "]" << std::endl;
  registry::Pusher pusher(ref.domain(), ref.path(), options);
  Result<registry::PushReport> report = pusher.Push(
      *image, ref.tag(), reader, [&](const registry::PushProgress& p) { PrintProgress(p, quiet); });
  if (!report.has_value()) {
    return Fail(report.error().WithContext("pushing " + ref.FamiliarString()));
  }
  if (quiet) {
    std::cout << report->manifest_digest.String() << std::endl;
  } else {
    std::cout << (ref.tag().empty() ? report->manifest_digest.String() : ref.tag())
              << ": digest: " << report->manifest_digest.String()
              << " size: " << report->manifest_size << std::endl;
  }
  return kExitOk;
}

}  // namespace imgfs::tools
