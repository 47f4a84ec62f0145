// imgfs — run, ps and containers: `imgfs run [OPTIONS] IMAGE [COMMAND [ARG...]]` runs a
// command in an image, contained as docker's defaults contain it; `ps` and `containers`
// list and remove the containers.
//
// This file turns flags into a fs::run::RunRequest, prints, and lists. The runtime is the
// library fs/run/ (imgfs_run):
//   1. resolve IMAGE in the store (recording it when missing: lazily, or whole with --pull),
//      read its config
//      (fs/run/process_spec.h: argv, env, workdir, user by docker's rules);
//   2. create the container ROOT/containers/<name>/ (cache/containers.h) with its upper/;
//   3–6. a private mount namespace, the image copy-on-write at rootfs/, /sys, /dev,
//      resolv.conf, hosts and the volumes (fs/run/sandbox.h);
//   7–8. an init in new PID, mount, IPC, UTS and network namespaces that mounts /proc,
//      pivot_roots, and runs the command with docker's default capabilities and seccomp
//      profile, forwarding signals (fs/run/exec.h, fs/run/security.h);
//   then unmount everything, stop the daemon, record the exit status (128+N for a signal).
// As root, the namespaces and mounts are made directly; without root, imgfs first enters a
// user namespace mapping the caller to root and their /etc/subuid and /etc/subgid ranges to
// the image's other users (fs/run/userns.h, as podman does), and does the same inside it.
// Containers without --name (or with --rm) are removed when the run ends — docker's --rm
// default, inverted: a run keeps its upper only when it is given a name. A container of a
// killed run is marked exited (137) when next listed; auto-removed ones are deleted by the
// next `imgfs run` or `imgfs ps`.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "base/log.h"
#include "base/strings.h"
#include "base/time.h"
#include "base/unique_fd.h"
#include "cache/containers.h"
#include "cache/images.h"
#include "cache/store.h"
#include "fs/fuse/mount_access.h"
#include "fs/mount/mount.h"
#include "fs/run/exec.h"
#include "fs/run/image_user.h"
#include "fs/run/process_spec.h"
#include "fs/run/root_path.h"
#include "fs/run/sandbox.h"
#include "fs/run/security.h"
#include "fs/run/userns.h"
#include "registry/reference.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

using fs::run::kExitRunError;
using fs::run::RunRequest;

// The largest /etc/passwd or /etc/group read from an image (a real one is a few KiB; this
// bounds what a hostile image makes imgfs read into memory).
constexpr size_t kMaxUserDatabaseBytes = 4 << 20;

constexpr std::string_view kRunUsage =
    "Usage: imgfs run [OPTIONS] IMAGE [COMMAND [ARG...]]\n\n"
    "Run a command in an image: the image is mounted copy-on-write in a private mount\n"
    "namespace, with /proc, /sys, /dev, the host's /etc/resolv.conf and /etc/hosts, and the\n"
    "command runs in it confined as docker's defaults confine a container (capabilities,\n"
    "seccomp, masked /proc paths, no devices, own PID, IPC, UTS and network namespaces;\n"
    "--privileged lifts this). The exit status is the command's (128+N when killed by\n"
    "signal N; 125 when imgfs fails, 126 when the command cannot be executed, 127 when it\n"
    "is not found).\n"
    "An image the store lacks is read from its registry on demand, as imgfs mount does;\n"
    "--pull fetches every layer into the store first.\n"
    "The changes are kept as container NAME with --name (see 'imgfs ps -a'); without a name\n"
    "(or with --rm) the container is removed when the command ends.";

constexpr std::string_view kPsUsage =
    "Usage: imgfs ps [OPTIONS]\n\nList containers (running ones; -a for all).";

constexpr std::string_view kContainersUsage =
    "Usage: imgfs containers COMMAND\n\n"
    "Manage containers.\n\n"
    "Commands:\n"
    "  ls [-a] [-q] [--no-trunc]   List containers\n"
    "  rm [-f] CONTAINER...        Remove containers (-f: also running ones)\n"
    "  diff CONTAINER|MOUNTPOINT   Show a container's changed files";

const std::vector<OptionSpec>& RunSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"name", 0, true, "NAME", "keep the container under this name"},
      {"rm", 0, false, "", "remove the container when the command ends (also with --name)"},
      {"env", 'e', true, "KEY=VALUE", "set an environment variable (KEY alone: the host's)"},
      {"workdir", 'w', true, "DIR", "working directory inside the image"},
      {"user", 'u', true, "USER[:GROUP]", "user (name or uid) and group inside the image"},
      {"volume", 'v', true, "HOST:CTR[:ro]", "bind-mount a host path (repeatable)"},
      {"entrypoint", 0, true, "CMD", "override the image's entrypoint (\"\" clears it)"},
      {"hostname", 0, true, "NAME", "host name of the command (private UTS namespace)"},
      {"interactive", 'i', false, "", "keep stdin open (without it the command reads /dev/null)"},
      {"tty", 't', false, "", "allocate a pseudo-terminal (raw mode on the caller's with -i)"},
      {"platform", 0, true, "OS/ARCH[/VARIANT]", "platform to pull when not in the store"},
      {"pull", 0, false, "",
       "fetch every layer into the store before running (default: read layer data on demand "
       "where the layer allows it, like imgfs mount)"},
      {"driver", 0, true, "overlay|fuse",
       "copy-on-write by the kernel's overlayfs over a read-only imgfs mount (default), or by "
       "imgfs mount --rw"},
      {"network", 0, true, "none|host",
       "network namespace: a private one with only loopback (default), or the host's"},
      {"privileged", 0, false, "",
       "no confinement: all capabilities, no seccomp filter, no masked paths, devices allowed"},
      {"cap-add", 0, true, "CAP", "add a capability to docker's default set (ALL: every one)"},
      {"cap-drop", 0, true, "CAP", "drop a capability from the set (ALL: every one)"},
      {"security-opt", 0, true, "OPT", "no-new-privileges, or seccomp=unconfined"},
  };
  return specs;
}

const std::vector<OptionSpec>& PsSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"all", 'a', false, "", "show all containers (default: running ones)"},
      {"quiet", 'q', false, "", "only display container IDs"},
      {"no-trunc", 0, false, "", "do not truncate output"},
  };
  return specs;
}

// ---- argument splitting: options, then IMAGE, then the command (never parsed) ----

struct SplitResult {
  std::vector<std::string> options;
  std::string image;
  std::vector<std::string> command;
};

// docker's rule: options end at the first non-option word (the image); everything after it
// is the command, a leading "--" dropped.
SplitResult SplitRunArgs(const std::vector<std::string>& args) {
  std::vector<OptionSpec> specs = RunSpecs();
  for (const OptionSpec& g : GlobalOptionSpecs()) specs.push_back(g);
  auto takes_value_long = [&](const std::string& name) {
    return std::any_of(specs.begin(), specs.end(),
                       [&](const OptionSpec& s) { return s.long_name == name && s.takes_value; });
  };
  auto takes_value_short = [&](char c) {
    return std::any_of(specs.begin(), specs.end(),
                       [&](const OptionSpec& s) { return s.short_name == c && s.takes_value; });
  };
  SplitResult out;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    out.options.push_back(a);
    if (a.starts_with("--")) {
      if (a.find('=') == std::string::npos && takes_value_long(a.substr(2)) &&
          i + 1 < args.size()) {
        out.options.push_back(args[++i]);
      }
    } else if (a.size() == 2 && takes_value_short(a[1]) && i + 1 < args.size()) {
      out.options.push_back(args[++i]);
    }
  }
  if (i < args.size()) out.image = args[i++];
  if (i < args.size() && args[i] == "--") ++i;
  out.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  return out;
}

std::string Quote(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`;&|<>()*?[]{}~#") == std::string::npos;
    if (plain) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) {
        if (c == '\'') {
          out += "'\\''";
        } else {
          out += c;
        }
      }
      out += '\'';
    }
  }
  return out;
}

// The user of the run from the image's /etc/passwd and /etc/group (read inside the rootfs;
// missing files are empty databases).
Result<fs::run::ExecUser> ResolveImageUser(int rootfs_fd, const std::string& spec) {
  if (spec.empty()) return fs::run::ExecUser{};
  auto read = [&](const char* path) -> Result<std::string> {
    Result<std::string> text = fs::run::ReadFileInRoot(rootfs_fd, path, kMaxUserDatabaseBytes);
    if (!text.has_value() && text.error().code() == StatusCode::kNotFound) return std::string();
    return text;
  };
  IMGFS_ASSIGN_OR_RETURN(std::string passwd, read("/etc/passwd"));
  IMGFS_ASSIGN_OR_RETURN(std::string group, read("/etc/group"));
  return fs::run::ResolveUser(spec, passwd, group);
}

// *pull_all: --pull (every layer fetched into the store before the run).
Result<RunRequest> ParseRunRequest(CommandContext& ctx, int* exit_code, bool* done,
                                   bool* pull_all) {
  *done = false;
  SplitResult split = SplitRunArgs(ctx.args);
  CommandContext opts_ctx = ctx;
  opts_ctx.args = split.options;
  ParsedArgs args;
  if (!ParseCommandArgs(opts_ctx, kRunUsage, RunSpecs(), &args, exit_code)) {
    *done = true;
    return Status::InvalidArgument("usage");
  }
  ctx.global = opts_ctx.global;
  if (split.image.empty()) {
    *done = true;
    *exit_code = UsageError(ctx.name, "\"run\" requires at least 1 argument: IMAGE");
    return Status::InvalidArgument("usage");
  }
  RunRequest req;
  req.image = split.image;
  req.command = split.command;
  req.name = args.Get("name");
  req.remove = args.Has("rm");
  *pull_all = args.Has("pull");
  req.env_args = args.GetAll("env");
  req.workdir = args.Get("workdir");
  if (args.Has("user")) req.user = args.Get("user");
  if (args.Has("entrypoint")) req.entrypoint = args.Get("entrypoint");
  req.hostname = args.Get("hostname");
  req.tty = args.Has("tty");
  req.interactive = args.Has("interactive");
  std::string driver = args.Get("driver", "overlay");
  if (driver == "fuse") {
    req.driver = fs::run::Driver::kFuse;
  } else if (driver != "overlay") {
    *done = true;
    *exit_code = UsageError(ctx.name, "--driver must be overlay or fuse, not \"" + driver + "\"");
    return Status::InvalidArgument("usage");
  }
  for (const std::string& v : args.GetAll("volume")) {
    Result<fs::run::VolumeSpec> spec = fs::run::ParseVolume(v);
    if (!spec.has_value()) {
      *done = true;
      *exit_code = UsageError(ctx.name, spec.error().message());
      return spec.error();
    }
    req.volumes.push_back(*spec);
  }
  if (args.Has("network")) {
    Result<fs::run::NetworkMode> mode = fs::run::ParseNetworkMode(args.Get("network"));
    if (!mode.has_value()) {
      *done = true;
      *exit_code = UsageError(ctx.name, mode.error().message());
      return mode.error();
    }
    req.network = *mode;
  }
  req.security.privileged = args.Has("privileged");
  req.security.cap_add = args.GetAll("cap-add");
  req.security.cap_drop = args.GetAll("cap-drop");
  for (const std::string& opt : args.GetAll("security-opt")) {
    Status st = fs::run::ApplySecurityOpt(opt, &req.security);
    if (!st.ok()) {
      *done = true;
      *exit_code = UsageError(ctx.name, st.message());
      return st;
    }
  }
  if (Result<fs::run::CapabilityMask> caps = fs::run::EffectiveCapabilities(req.security);
      !caps.has_value()) {
    *done = true;
    *exit_code = UsageError(ctx.name, caps.error().message());
    return caps.error();
  }
  if (args.Has("name") && !cache::IsValidContainerName(req.name)) {
    *done = true;
    *exit_code = UsageError(ctx.name, "Invalid container name (" + req.name +
                                          "), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    return Status::InvalidArgument("usage");
  }
  if (args.Has("platform")) {
    Result<registry::Platform> p = registry::Platform::Parse(args.Get("platform"));
    if (!p.has_value()) {
      *done = true;
      *exit_code = UsageError(ctx.name, p.error().message());
      return p.error();
    }
    req.platform = *p;
  }
  return req;
}

// Without root: checks what a rootless run needs (each missing piece named with what to do),
// then enters its user namespace.
Status EnterRootless() {
  // The image's daemon opens /dev/fuse inside the namespace with the caller's rights.
  IMGFS_RETURN_IF_ERROR(fs::CheckDevFuse());
  const fs::run::RootlessHost host = fs::run::RootlessHost::Current();
  IMGFS_ASSIGN_OR_RETURN(fs::run::RootlessMaps maps, fs::run::PlanRootlessMaps(host));
  return fs::run::EnterUserNamespace(host, maps);
}

int RunFail(const Status& st) {
  std::cerr << "imgfs: " << st.ToString() << std::endl;
  return kExitRunError;
}

// ---- listing ----

// Seconds since the epoch of a recorded time, or -1.
int64_t RecordedTime(const std::string& text) {
  int64_t sec = 0;
  uint32_t nanos = 0;
  return !text.empty() && ParseRfc3339(text, &sec, &nanos).ok() ? sec : -1;
}

// docker's units.HumanDuration.
std::string HumanDuration(int64_t secs) {
  auto n = [](int64_t v, const char* unit) {
    return std::to_string(v) + " " + unit + (v == 1 ? "" : "s");
  };
  if (secs < 1) return "Less than a second";
  if (secs == 1) return "1 second";
  if (secs < 60) return n(secs, "second");
  if (secs / 60 == 1) return "About a minute";
  if (secs < 3600) return n(secs / 60, "minute");
  if (secs / 3600 == 1) return "About an hour";
  if (secs < 48 * 3600) return n(secs / 3600, "hour");
  if (secs < 7 * 24 * 3600 * 2) return n(secs / 86400, "day");
  if (secs < 30 * 24 * 3600 * 3) return n(secs / (7 * 86400), "week");
  if (secs < 365 * 24 * 3600 * 2) return n(secs / (30 * 86400), "month");
  return n(secs / (365 * 86400), "year");
}

std::string Ago(const std::string& rfc3339) {
  int64_t t = RecordedTime(rfc3339);
  if (t < 0) return "N/A";
  int64_t now = static_cast<int64_t>(::time(nullptr));
  return HumanDuration(std::max<int64_t>(0, now - t)) + " ago";
}

std::string StatusText(const cache::ContainerInfo& c) {
  int64_t now = static_cast<int64_t>(::time(nullptr));
  if (c.running) {
    int64_t t = RecordedTime(c.created);
    return "Up " + (t < 0 ? std::string("N/A") : HumanDuration(std::max<int64_t>(0, now - t)));
  }
  std::string out = "Exited (" + std::to_string(c.exit_code) + ")";
  if (!c.finished.empty()) out += " " + Ago(c.finished);
  return out;
}

std::string ImageText(const cache::ContainerInfo& c) {
  if (!c.reference.empty()) {
    Result<registry::Reference> ref = registry::Reference::Parse(c.reference);
    if (ref.has_value()) return ref->FamiliarString();
    return c.reference;
  }
  return c.image_id.empty() ? c.image.Short() : c.image_id.Short();
}

int ListContainersCommand(CommandContext& ctx, std::string_view usage) {
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, usage, PsSpecs(), &args, &code)) return code;
  if (!args.positional().empty()) return UsageError(ctx.name, "too many arguments");
  EnterRootlessForContainers();  // abandoned containers are removed below
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) return Fail(store.error());
  Result<int> abandoned = cache::RemoveAbandonedContainers(**store);
  if (!abandoned.has_value()) IMGFS_LOG(kWarning) << abandoned.error().ToString();
  Result<std::vector<cache::ContainerInfo>> all = cache::ListContainers(**store);
  if (!all.has_value()) return Fail(all.error());
  bool no_trunc = args.Has("no-trunc");
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"});
  for (const cache::ContainerInfo& c : *all) {
    if (!c.running && !args.Has("all")) continue;
    std::string id = no_trunc ? c.id : c.id.substr(0, 12);
    if (args.Has("quiet")) {
      std::cout << id << "\n";
      continue;
    }
    std::string command = Quote(c.command);
    if (!no_trunc && command.size() > 20) command = command.substr(0, 19) + "…";
    rows.push_back(
        {id, ImageText(c), "\"" + command + "\"", Ago(c.created), StatusText(c), c.name});
  }
  if (args.Has("quiet")) return kExitOk;
  std::vector<size_t> widths(rows[0].size(), 0);
  auto display_width = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char ch : s) n += (ch & 0xc0) != 0x80 ? 1 : 0;  // UTF-8 code points
    return n;
  };
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], display_width(r[i]));
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(widths[i] - display_width(r[i]) + 3, ' ');
    }
    std::cout << line << "\n";
  }
  return kExitOk;
}

int RemoveContainersCommand(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"force", 'f', false, "", "kill and remove running containers too"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, "Usage: imgfs containers rm [OPTIONS] CONTAINER...", specs, &args,
                        &code)) {
    return code;
  }
  if (args.positional().empty()) {
    return UsageError(ctx.name, "\"containers rm\" requires at least 1 argument");
  }
  EnterRootlessForContainers();
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) return Fail(store.error());
  int rc = kExitOk;
  for (const std::string& name : args.positional()) {
    Result<cache::ContainerInfo> removed = cache::RemoveContainer(**store, name, args.Has("force"));
    if (!removed.has_value()) {
      rc = Fail(removed.error());
      continue;
    }
    std::cout << name << std::endl;
  }
  return rc;
}

}  // namespace

int RunRun(CommandContext& ctx) {
  int exit_code = kExitOk;
  bool done = false;
  bool pull_all = false;
  Result<RunRequest> parsed = ParseRunRequest(ctx, &exit_code, &done, &pull_all);
  if (done) return exit_code == kExitUsage ? kExitRunError : exit_code;
  if (!parsed.has_value()) return RunFail(parsed.error());
  RunRequest& req = *parsed;
  if (::geteuid() != 0) {
    // Rootless: everything from here on (the store, the image's mount, the container) runs
    // as root of a user namespace of the caller's own (fs/run/userns.h). Still one thread.
    if (Status st = EnterRootless(); !st.ok()) return RunFail(st);
  }

  Result<std::unique_ptr<cache::Store>> store_or = cache::Store::Open(ctx.global.root);
  if (!store_or.has_value()) {
    return RunFail(store_or.error().WithContext("opening the image store " + ctx.global.root));
  }
  cache::Store& store = **store_or;
  Result<int> abandoned = cache::RemoveAbandonedContainers(store);
  if (!abandoned.has_value()) IMGFS_LOG(kWarning) << abandoned.error().ToString();

  // 1. The image: from the store, else recorded like `imgfs mount` does (lazily: manifest
  // and config, layer data read on demand by the mount; whole with --pull, which also
  // completes an image an earlier lazy mount recorded).
  Result<cache::ResolvedImage> image = cache::ResolveImage(store, req.image);
  std::string reference;
  const bool missing_image = !image.has_value() && image.error().code() == StatusCode::kNotFound;
  const bool missing_layers =
      image.has_value() &&
      std::any_of(image->decoded.layers.begin(), image->decoded.layers.end(),
                  [&](const registry::Descriptor& d) { return !store.HasBlob(d.digest); });
  if (missing_image || (pull_all && missing_layers)) {
    bool transport = req.image.starts_with("oci:") || req.image.starts_with("oci-archive:") ||
                     req.image.starts_with("docker-archive:");
    if (missing_image && !transport) {
      std::cerr << "Unable to find image '" << req.image << "' locally" << std::endl;
    }
    fs::PrepareOptions prep;
    prep.lazy = !pull_all;
    // This process only records the image (and its indexes); the mount daemon serves it.
    prep.prefetch = fs::PrepareOptions::Prefetch::kNone;
    prep.pull.insecure_registries = ctx.global.insecure_registries;
    prep.pull.ca_files = ctx.global.ca_certs;
    prep.pull.creds = ctx.global.creds;
    if (req.platform.has_value()) {
      prep.pull.platform = *req.platform;
      prep.pull.platform_explicit = true;
    }
    Result<fs::PreparedImage> prepared = fs::PrepareImage(store, req.image, prep);
    if (!prepared.has_value()) return RunFail(prepared.error());
    reference = prepared->reference;
    image = cache::ResolveImage(store, prepared->manifest_digest.String());
  }
  if (!image.has_value()) return RunFail(image.error());
  if (reference.empty() && image->by_reference.has_value()) {
    reference = image->by_reference->reference;
  }
  if (reference.empty() && !image->records.empty()) reference = image->records[0].reference;

  Result<fs::run::ProcessSpec> spec = fs::run::BuildProcessSpec(req, image->config);
  if (!spec.has_value()) return RunFail(spec.error());
  // Capabilities and the seccomp program, before anything is mounted.
  Result<fs::run::Confinement> confinement = fs::run::PrepareConfinement(req.security);
  if (!confinement.has_value()) return RunFail(confinement.error());

  // 2. The container.
  cache::ContainerInfo info;
  info.name = req.name;
  info.image = image->manifest.digest;
  info.image_id = image->id;
  info.reference = reference;
  // The record is JSON, which holds UTF-8 only; argv may hold any bytes (it is passed to
  // exec as it is): the record shows them replaced.
  for (const std::string& a : spec->argv) info.command.push_back(SanitizeUtf8(a));
  info.auto_remove = req.name.empty() || req.remove;
  // From here on a SIGTERM or Ctrl-C waits until the command could receive it (or, during
  // the setup, ends the run before it starts), so everything is torn down in order.
  const sigset_t run_signals = fs::run::RunSignals();
  sigset_t old_mask;
  ::sigprocmask(SIG_BLOCK, &run_signals, &old_mask);
  Result<cache::ContainerInfo> created = Status::Internal("not created");
  try {
    created = cache::CreateContainer(store, info);
  } catch (const std::exception& e) {  // a JSON encoder that throws: an error, not an abort
    created = Status::Internal(std::string("recording the container: ") + e.what());
  }
  if (!created.has_value()) {
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    return RunFail(created.error());
  }
  info = *created;

  int status = kExitRunError;
  {
    // 3–6. Namespace and mounts; 7–8. the command.
    fs::run::RunSession session(cache::ContainerDir(store, info.name), ctx.global.root);
    Status st = session.Setup(info.image.String(), req);
    Result<fs::run::ExecUser> user = Status::Internal("not resolved");
    if (st.ok()) user = ResolveImageUser(session.rootfs_fd(), spec->user);
    if (st.ok() && !user.has_value()) st = user.error();
    if (st.ok()) {
      Result<UniqueFd> workdir =
          fs::run::OpenInRoot(session.rootfs_fd(), spec->workdir, fs::run::Create::kDirectory);
      if (!workdir.has_value()) st = workdir.error();
    }
    if (st.ok()) {
      if (!fs::run::HasEnv(spec->env, "HOME")) fs::run::SetEnv(&spec->env, "HOME=" + user->home);
      fs::run::ContainerProcess where;
      where.rootfs = session.rootfs();
      where.network = req.network;
      where.hostname = req.hostname;
      where.confinement = std::move(*confinement);
      where.tty = req.tty;
      where.interactive = req.interactive;
      status = fs::run::RunCommand(where, *spec, *user);
    } else {
      std::cerr << "imgfs: " << st.WithContext("running " + req.image).ToString() << std::endl;
    }
    session.TearDown();
    if (!info.auto_remove) session.RemoveScratch();
  }
  Status marked = Status::Ok();
  try {
    marked = cache::MarkContainerExited(store, info.name, status);
  } catch (const std::exception& e) {
    marked = Status::Internal(e.what());
  }
  if (!marked.ok()) IMGFS_LOG(kWarning) << "recording the exit status: " << marked.ToString();
  if (info.auto_remove) {
    Result<cache::ContainerInfo> removed = cache::RemoveContainer(store, info.name, false);
    if (!removed.has_value()) {
      IMGFS_LOG(kWarning) << "removing container " << info.name << ": "
                          << removed.error().ToString();
    }
  }
  // Signals that came after the command ended are dropped: the status is the command's.
  timespec no_wait{};
  while (::sigtimedwait(&run_signals, nullptr, &no_wait) > 0) {
  }
  ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  return status;
}

void EnterRootlessForContainers() {
  if (::geteuid() == 0) return;
  const fs::run::RootlessHost host = fs::run::RootlessHost::Current();
  Result<fs::run::RootlessMaps> maps = fs::run::PlanRootlessMaps(host);
  if (!maps.has_value()) return;
  if (Status st = fs::run::EnterUserNamespace(host, *maps); !st.ok()) {
    IMGFS_LOG(kWarning) << "reading containers as " << host.uid << ": " << st.ToString();
  }
}

int RunPs(CommandContext& ctx) { return ListContainersCommand(ctx, kPsUsage); }

int RunContainers(CommandContext& ctx) {
  if (ctx.args.empty() || ctx.args[0] == "-h" || ctx.args[0] == "--help") {
    (ctx.args.empty() ? std::cerr : std::cout) << kContainersUsage << std::endl;
    return ctx.args.empty() ? kExitUsage : kExitOk;
  }
  std::string sub = ctx.args[0];
  ctx.args.erase(ctx.args.begin());
  ctx.name = "containers " + sub;
  if (sub == "ls" || sub == "list" || sub == "ps") {
    return ListContainersCommand(ctx, "Usage: imgfs containers ls [OPTIONS]");
  }
  if (sub == "rm" || sub == "remove") return RemoveContainersCommand(ctx);
  if (sub == "diff" && RunDiff != nullptr) return RunDiff(ctx);
  return UsageError("containers", "unknown command \"" + sub + "\"");
}

}  // namespace imgfs::tools
