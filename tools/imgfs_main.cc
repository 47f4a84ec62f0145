// imgfs — the command-line entry point: global flags, the command table, dispatch.
//
// To add a command: define `int RunX(CommandContext&)` in a tools/cmd_*.cc file, declare it
// in tools/cli.h and add one row to the table below.
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/thread.h"
#include "cache/store.h"
#include "registry/http_client.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kVersion = "0.1.0";

void PrintMainHelp(std::ostream& out) {
  out << "Usage: imgfs [OPTIONS] COMMAND [ARGS...]\n\n"
         "Pull container images from OCI/Docker registries into a local store and mount them.\n\n"
         "Commands:\n";
  // The summaries line up two spaces after the longest listed name (as cobra's help does),
  // so a long name never runs into its text.
  size_t width = 0;
  for (const Command& c : Commands()) {
    if (!c.summary.empty() && c.run != nullptr) width = std::max(width, c.name.size());
  }
  for (const Command& c : Commands()) {
    if (c.summary.empty() || c.run == nullptr) continue;
    std::string name(c.name);
    name.resize(width + 2, ' ');
    out << "  " << name << c.summary << "\n";
  }
  out << FormatHelp("", {}).substr(1);
  out << "  -v, --version                 print the version and exit\n"
         "\nRun 'imgfs COMMAND --help' for more information on a command.\n";
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // Credentials must not stay visible in /proc/PID/cmdline (a mount daemon keeps argv).
  ScrubSecretArgs(argc, argv);

  // Global flags before the command name.
  std::vector<OptionSpec> specs = GlobalOptionSpecs();
  specs.push_back({"version", 'v', false, "", "print the version"});
  size_t i = 0;
  std::vector<std::string> prefix;
  while (i < args.size() && args[i].size() > 1 && args[i][0] == '-') {
    const std::string& a = args[i];
    prefix.push_back(a);
    ++i;
    if (a.starts_with("--") && a.find('=') == std::string::npos) {
      for (const auto& s : specs) {
        if (s.takes_value && a.substr(2) == s.long_name && i < args.size()) {
          prefix.push_back(args[i++]);
          break;
        }
      }
    }
  }
  Result<ParsedArgs> global = ParseArgs(prefix, specs);
  if (!global.has_value()) {
    std::cerr << "imgfs: " << global.error().message() << "\nSee 'imgfs --help'." << std::endl;
    return kExitUsage;
  }
  if (global->Has("version")) {
    std::cout << "imgfs version " << kVersion << std::endl;
    return kExitOk;
  }
  if (global->Has("help") || i >= args.size()) {
    PrintMainHelp(i >= args.size() && !global->Has("help") ? std::cerr : std::cout);
    return global->Has("help") ? kExitOk : kExitUsage;
  }
  CommandContext ctx;
  if (Status s = ApplyGlobalFlags(*global, &ctx.global); !s.ok()) {
    std::cerr << "imgfs: " << s.message() << std::endl;
    return kExitUsage;
  }
  if (ctx.global.root.empty()) {
    Result<std::string> root = cache::DefaultStoreRoot();
    if (!root.has_value()) {
      std::cerr << "imgfs: " << root.error().message() << " (use --root DIR)" << std::endl;
      return kExitUsage;
    }
    ctx.global.root = *root;
  }
  ctx.name = args[i];
  ctx.args.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
  ctx.stdout_is_tty = isatty(STDOUT_FILENO) == 1;
  ctx.stderr_is_tty = isatty(STDERR_FILENO) == 1;

  for (const Command& c : Commands()) {
    if (c.name != ctx.name || c.run == nullptr) continue;
    return c.run(ctx);
  }
  // mount(8) form: `mount -t fuse.imgfs IMAGE DIR -o OPTS` runs mount.fuse3, which runs
  // `imgfs IMAGE DIR -o OPTS`: an unknown first word followed by a directory means mount.
  struct stat st {};
  if (RunMount != nullptr && !ctx.args.empty() && stat(ctx.args[0].c_str(), &st) == 0 &&
      S_ISDIR(st.st_mode)) {
    ctx.args.insert(ctx.args.begin(), ctx.name);
    ctx.name = "mount";
    return RunMount(ctx);
  }
  std::cerr << "imgfs: unknown command \"" << ctx.name << "\"\nSee 'imgfs --help'." << std::endl;
  return kExitUsage;
}

}  // namespace

const std::vector<Command>& Commands() {
  // Rows with an empty summary are aliases (not listed in the help).
  static const std::vector<Command> commands = {
      {"pull", "Pull an image from a registry or a local archive/layout", &RunPull},
      {"images", "List images in the store", &RunImages},
      {"inspect", "Show details of one or more images (JSON)", &RunInspect},
      {"rm", "Remove one or more images", &RunRemove},
      {"rmi", "", &RunRemove},
      {"image", "Manage images (ls, pull, inspect, rm, tag, history, prune, save, load)",
       &RunImage},
      {"tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", &RunTag},
      {"history", "Show the history of an image", &RunHistory},
      {"save", "Save images to a tar archive (docker-archive or oci-archive)", &RunSave},
      {"load", "Load images from a tar archive (docker-archive or oci-archive)", &RunLoad},

      {"login", "Log in to a registry", &RunLogin},
      {"logout", "Log out from a registry", &RunLogout},
      {"mount", "Mount an image as a filesystem", RunMount},
      {"umount", "Unmount an image", RunUmount},
      {"layer-store", "Serve lazily read layers to podman and CRI-O (Additional Layer Store)",
       RunLayerStore},
      {"run", "Run a command in an image (chroot, private mounts)", RunRun},
      {"ps", "List containers (writable uppers kept by name)", RunPs},
      {"containers", "Manage containers (ls, rm, diff)", RunContainers},
      {"container", "", RunContainers},
      {"diff", "Show the changed files of a container or a writable mount", RunDiff},
      {"commit", "Create a new image from a container's or a mount's changes", RunCommit},
      {"push", "Push an image to a registry or a local layout", RunPush},
      {"stats", "Show fetch statistics of a lazy mount", RunStats},
      {"cache", "Manage the store's disk use (du, gc, prune)", RunCache},
      {"system", "Show the store's disk use like docker (df)", &RunSystem},
      {"convert", "Convert an image to eStargz or zstd:chunked", RunConvert},
      {"index", "Build or publish lazy-mount indexes of an image (build, push)", RunIndex},
  };
  return commands;
}

}  // namespace imgfs::tools

int main(int argc, char** argv) {
  // glibc gives each thread that meets contention an arena of its own (up to 8 per core), and
  // each keeps its freed blocks: 16 FUSE workers reading 1 MiB replies grew a daemon by
  // ~45 MiB that two arenas do not. glibc fixes the limit when the first extra arena is made,
  // so it is set here, before the threads that prepare an image (a daemon's RSS after a tar of
  // a 75 000-path image: 3.5 MiB less than setting it when serving starts).
  mallopt(M_ARENA_MAX, 2);
  // Blocks up to 32 MiB come from the heap and are reused; at most 8 MiB of freed heap stays
  // with each arena. glibc maps larger blocks anew each time (its mmap threshold), and the
  // page faults of filling them cost more than their use: a daemon's READ replies (1 MiB
  // each, fs/fuse/read_ahead.h; a warm 64 MiB file read in 1 MiB requests took 0.7 s instead
  // of 0.16 s) and, while it prepares an image, each index file read (~10 MB for 60 000
  // files) and each table decoded from it: page faults were about a quarter of a mount's CPU
  // time. The daemon returns the freed heap before it serves (fs/fuse/lowlevel.cc).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
  // libcurl's global state is set up once, before any thread starts (libcurl-thread(3)).
  imgfs::registry::HttpClient::GlobalInit();
  int exit_code = imgfs::tools::kExitError;
  // Our code returns errors as values; an exception reaching here (bad_alloc, or a
  // dependency's throw on hostile input) is reported as an error exit, never as abort().
  imgfs::Status st = imgfs::RunGuarded("imgfs", [&] {
    exit_code = imgfs::tools::Main(argc, argv);
    return imgfs::Status::Ok();
  });
  if (!st.ok()) {
    std::cerr << "imgfs: " << st.message() << std::endl;
    return imgfs::tools::kExitError;
  }
  return exit_code;
}
