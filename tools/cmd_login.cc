// imgfs — login and logout: credentials for registries, in the docker config.
#include <termios.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "fs/image_ops/pull.h"
#include "registry/credentials.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

constexpr std::string_view kLoginUsage =
    "Usage: imgfs login [OPTIONS] [SERVER]\n\n"
    "Log in to a registry (default: docker.io). The credential is checked against the registry\n"
    "and saved in the docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json).";

constexpr std::string_view kLogoutUsage =
    "Usage: imgfs logout [SERVER]\n\nRemove the saved credential of a registry (default: "
    "docker.io).";

// Reads one line from stdin; with `hide`, terminal echo is off while typing.
std::string ReadLine(bool hide) {
  termios old_attr{};
  bool restore = false;
  if (hide && isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &old_attr) == 0) {
    termios quiet = old_attr;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
  }
  std::string line;
  std::getline(std::cin, line);
  if (restore) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old_attr);
    std::cerr << std::endl;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::string ServerArg(const ParsedArgs& args) {
  if (args.positional().empty()) return "docker.io";
  return registry::NormalizeRegistryHost(args.positional()[0]);
}

}  // namespace

int RunLogin(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"username", 'u', true, "USER", "username"},
      {"password", 'p', true, "PASSWORD", "password (prefer --password-stdin)"},
      {"password-stdin", 0, false, "", "read the password from stdin"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kLoginUsage, specs, &args, &code)) return code;
  if (args.positional().size() > 1) {
    return UsageError(ctx.name, "\"login\" accepts at most 1 argument");
  }
  if (args.Has("password") && args.Has("password-stdin")) {
    return UsageError(ctx.name, "--password and --password-stdin are mutually exclusive");
  }
  std::string host = ServerArg(args);
  if (host.empty()) return UsageError(ctx.name, "invalid server name");

  registry::Credential cred;
  cred.username = args.Get("username");
  bool interactive = isatty(STDIN_FILENO) == 1;
  if (args.Has("password-stdin")) {
    if (cred.username.empty()) {
      return UsageError(ctx.name, "--password-stdin requires --username");
    }
    cred.password = ReadLine(false);
  } else if (args.Has("password")) {
    cred.password = args.Get("password");
    std::cerr << "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
              << std::endl;
  }
  if (cred.username.empty()) {
    if (!interactive) {
      return Fail("cannot prompt for a username: stdin is not a terminal (use --username)");
    }
    std::cerr << "Username: " << std::flush;
    cred.username = ReadLine(false);
  }
  if (cred.password.empty() && !args.Has("password-stdin")) {
    if (!interactive) {
      return Fail("cannot prompt for a password: stdin is not a terminal (use --password-stdin)");
    }
    std::cerr << "Password: " << std::flush;
    cred.password = ReadLine(true);
  }
  if (cred.username.empty() || cred.password.empty()) {
    return Fail("username and password are required to log in to " + host);
  }

  fs::PullOptions options;
  options.insecure_registries = ctx.global.insecure_registries;
  options.ca_files = ctx.global.ca_certs;
  if (Status st = fs::CheckLogin(host, cred, options); !st.ok()) return Fail(st);
  registry::CredentialStore store = registry::CredentialStore::FromEnvironment();
  if (Status st = store.Store(host, cred); !st.ok()) {
    return Fail(st.WithContext("saving the credential for " + host));
  }
  std::cout << "Login Succeeded" << std::endl;
  return kExitOk;
}

int RunLogout(CommandContext& ctx) {
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kLogoutUsage, {}, &args, &code)) return code;
  if (args.positional().size() > 1) {
    return UsageError(ctx.name, "\"logout\" accepts at most 1 argument");
  }
  std::string host = ServerArg(args);
  registry::CredentialStore store = registry::CredentialStore::FromEnvironment();
  Status st = store.Erase(host);
  if (st.code() == StatusCode::kNotFound) {
    std::cout << "Not logged in to " << host << std::endl;
    return kExitOk;
  }
  if (!st.ok()) return Fail(st.WithContext("removing the credential for " + host));
  std::cout << "Removing login credentials for " << host << std::endl;
  return kExitOk;
}

}  // namespace imgfs::tools
