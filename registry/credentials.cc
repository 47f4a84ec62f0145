// imgfs — registry credentials (see credentials.h).
#include "registry/credentials.h"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "base/file_util.h"
#include "base/log.h"
#include "base/strings.h"
#include "base/unique_fd.h"

extern char** environ;  // NOLINT: POSIX

namespace imgfs::registry {
namespace {

using json = nlohmann::json;

// The key docker writes for Docker Hub (docker/cli `registry.IndexServer`).
constexpr char kDockerHubKey[] = "https://index.docker.io/v1/";
// Credential helpers answer in a few hundred bytes; more is not a helper talking.
constexpr size_t kMaxHelperOutput = 1 << 20;
// How often a helper that closed its output is checked for having exited: short next to
// the 10 s helper timeout, long enough not to spin.
constexpr auto kHelperExitPoll = std::chrono::milliseconds(10);
// docker-credential-helpers `credentials.ErrCredentialsNotFound`.
constexpr char kHelperNotFound[] = "credentials not found";

std::string Base64Encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  std::string in(Trim(text));
  if (in.size() % 4 != 0) return std::nullopt;
  if (in.empty()) return std::string();
  std::string out(in.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  size_t len = static_cast<size_t>(n);
  // EVP_DecodeBlock counts padding as zero bytes.
  if (in.size() >= 1 && in[in.size() - 1] == '=') --len;
  if (in.size() >= 2 && in[in.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

// The host a config key stands for, or "" when the key is namespaced ("quay.io/org", a
// containers auth.json per-repository entry) and so does not apply to the whole host.
std::string KeyHost(std::string_view key) {
  std::string k = ToLower(Trim(key));
  bool has_scheme = false;
  for (std::string_view scheme : {"https://", "http://"}) {
    if (k.rfind(scheme, 0) == 0) {
      k = k.substr(scheme.size());
      has_scheme = true;
    }
  }
  size_t slash = k.find('/');
  if (slash != std::string::npos) {
    bool path_is_version =
        k.substr(slash) == "/" || k.substr(slash, 3) == "/v1" || k.substr(slash, 3) == "/v2";
    if (!has_scheme && !path_is_version) return "";
  }
  return NormalizeRegistryHost(k);
}

// The key written for `host` (already normalised).
std::string KeyFor(const std::string& host) { return host == "docker.io" ? kDockerHubKey : host; }

Result<json> ReadConfig(const std::string& path) {
  Result<std::string> data = ReadFile(path);
  if (!data.has_value()) {
    if (data.error().code() == StatusCode::kNotFound) return json::object();
    return data.error();
  }
  if (Trim(*data).empty()) return json::object();
  json doc = json::parse(*data, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Corrupt("credential file " + path + " is not a JSON object");
  }
  return doc;
}

std::string StringField(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

// Decodes one `auths` entry. nullopt when it holds no secret (e.g. `{}` written next to a
// credsStore).
Result<std::optional<Credential>> DecodeAuthEntry(const json& entry, const std::string& host,
                                                  const std::string& path) {
  if (!entry.is_object()) {
    return Status::Corrupt("credential file " + path + ": entry for " + host + " is not an object");
  }
  Credential cred;
  std::string auth = StringField(entry, "auth");
  if (!auth.empty()) {
    std::optional<std::string> decoded = Base64Decode(auth);
    size_t colon = decoded ? decoded->find(':') : std::string::npos;
    if (!decoded || colon == std::string::npos) {
      return Status::Corrupt("credential file " + path + ": invalid `auth` value for " + host);
    }
    cred.username = decoded->substr(0, colon);
    cred.password = decoded->substr(colon + 1);
  } else {
    cred.username = StringField(entry, "username");
    cred.password = StringField(entry, "password");
  }
  cred.identity_token = StringField(entry, "identitytoken");
  if (cred.password.empty() && cred.identity_token.empty()) return std::optional<Credential>();
  return std::optional<Credential>(std::move(cred));
}

// The `auths` entry for `host` in `doc`: an exact key spelling first, then any alias.
Result<std::optional<Credential>> LookupAuths(const json& doc, const std::string& host,
                                              const std::string& path) {
  auto auths = doc.find("auths");
  if (auths == doc.end() || !auths->is_object()) return std::optional<Credential>();
  auto exact = auths->find(KeyFor(host));
  if (exact != auths->end()) {
    IMGFS_ASSIGN_OR_RETURN(std::optional<Credential> cred, DecodeAuthEntry(*exact, host, path));
    if (cred.has_value()) return cred;
  }
  for (auto it = auths->begin(); it != auths->end(); ++it) {
    if (KeyHost(it.key()) != host) continue;
    IMGFS_ASSIGN_OR_RETURN(std::optional<Credential> cred, DecodeAuthEntry(*it, host, path));
    if (cred.has_value()) return cred;
  }
  return std::optional<Credential>();
}

// The helper configured for `host` in a docker config ("" = none).
std::string HelperFor(const json& doc, const std::string& host) {
  auto helpers = doc.find("credHelpers");
  if (helpers != doc.end() && helpers->is_object()) {
    for (auto it = helpers->begin(); it != helpers->end(); ++it) {
      if (it->is_string() && KeyHost(it.key()) == host) return it->get<std::string>();
    }
  }
  return StringField(doc, "credsStore");
}

struct HelperResult {
  int exit_code = -1;
  std::string output;  // stdout (helpers print their errors there too)
};

// Runs `docker-credential-<helper> <action>` with `input` on stdin (no shell). stderr goes
// to /dev/null: it is neither needed nor safe to log.
Result<HelperResult> RunHelper(const CredentialStoreOptions& options, const std::string& helper,
                               const char* action, std::string_view input) {
  if (helper.empty() || helper.find('/') != std::string::npos) {
    return Status::InvalidArgument("invalid credential helper name \"" + helper + "\"");
  }
  std::string program = "docker-credential-" + helper;
  std::string path = options.helper_dir.empty() ? program : options.helper_dir + "/" + program;

  // stdin from a memfd: no pipe to block on or SIGPIPE if the helper exits early.
  UniqueFd in(memfd_create("imgfs-helper-stdin", MFD_CLOEXEC));
  if (!in.IsValid()) return Status::FromErrno(errno, "memfd_create");
  IMGFS_RETURN_IF_ERROR(WriteAll(in.get(), input));
  if (lseek(in.get(), 0, SEEK_SET) != 0) return Status::FromErrno(errno, "lseek");
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe2");
  UniqueFd out_read(pipe_fds[0]);
  UniqueFd out_write(pipe_fds[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t no_signals;
  sigemptyset(&no_signals);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  sigset_t default_signals;
  sigemptyset(&default_signals);
  sigaddset(&default_signals, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  // Own process group, so a timeout kills the helper's children too.
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  std::string action_arg = action;
  char* argv[] = {program.data(), action_arg.data(), nullptr};
  pid_t pid = -1;
  int rc = options.helper_dir.empty()
               ? posix_spawnp(&pid, path.c_str(), &actions, &attr, argv, environ)
               : posix_spawn(&pid, path.c_str(), &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  out_write.Close();
  in.Close();
  if (rc != 0) {
    if (rc == ENOENT) return Status::NotFound("credential helper " + program + " not found");
    return Status::FromErrno(rc, "starting " + program);
  }

  HelperResult result;
  auto deadline = std::chrono::steady_clock::now() + options.helper_timeout;
  bool timed_out = false;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{out_read.get(), POLLIN, 0};
    int n = poll(&pfd, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      timed_out = n == 0;
      break;
    }
    char buf[4096];
    ssize_t got = read(out_read.get(), buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    result.output.append(buf, static_cast<size_t>(got));
    if (result.output.size() > kMaxHelperOutput) break;
  }
  out_read.Close();
  // The deadline also covers the exit: a helper that closed stdout but keeps running (or
  // left a child holding nothing) must not block waitpid forever.
  int wstatus = 0;
  bool reaped = false;
  if (!timed_out && result.output.size() <= kMaxHelperOutput) {
    while (true) {
      const pid_t got = waitpid(pid, &wstatus, WNOHANG);
      if (got == pid) {
        reaped = true;
        break;
      }
      if (got < 0 && errno != EINTR) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        timed_out = true;
        break;
      }
      std::this_thread::sleep_for(kHelperExitPoll);
    }
  }
  if (!reaped) {
    // Timed out, too much output, or not exited by the deadline: the whole process group.
    kill(-pid, SIGKILL);
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
  }
  if (timed_out) {
    return Status::Unavailable("credential helper " + program + " " + action + " timed out after " +
                               std::to_string(options.helper_timeout.count()) + " ms");
  }
  if (result.output.size() > kMaxHelperOutput) {
    return Status::Corrupt("credential helper " + program + " wrote too much output");
  }
  result.exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  return result;
}

// `docker-credential-<helper> get` for `server`.
Result<std::optional<Credential>> HelperGet(const CredentialStoreOptions& options,
                                            const std::string& helper, const std::string& server) {
  Result<HelperResult> run = RunHelper(options, helper, "get", server);
  if (!run.has_value()) {
    if (run.error().code() == StatusCode::kNotFound) {
      // docker fails here too; a missing helper must not block anonymous pulls.
      IMGFS_LOG(kWarning) << run.error().message() << "; continuing without its credentials";
      return std::optional<Credential>();
    }
    return run.error();
  }
  if (run->exit_code != 0) {
    if (run->output.find(kHelperNotFound) != std::string::npos) return std::optional<Credential>();
    // The output of a failing helper is its error message, not a secret.
    std::string message(Trim(run->output).substr(0, 200));
    return Status::Unavailable("credential helper docker-credential-" + helper + " failed (exit " +
                               std::to_string(run->exit_code) + ")" +
                               (message.empty() ? "" : ": " + message));
  }
  json doc = json::parse(run->output, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Corrupt("credential helper docker-credential-" + helper +
                           " answered with invalid JSON");
  }
  Credential cred;
  cred.username = StringField(doc, "Username");
  std::string secret = StringField(doc, "Secret");
  if (cred.username == "<token>") {
    cred.username.clear();
    cred.identity_token = std::move(secret);
  } else {
    cred.password = std::move(secret);
  }
  if (cred.password.empty() && cred.identity_token.empty()) return std::optional<Credential>();
  return std::optional<Credential>(std::move(cred));
}

Status HelperStore(const CredentialStoreOptions& options, const std::string& helper,
                   const std::string& server, const Credential& cred) {
  json doc = json::object();
  doc["ServerURL"] = server;
  if (!cred.identity_token.empty()) {
    doc["Username"] = "<token>";
    doc["Secret"] = cred.identity_token;
  } else {
    doc["Username"] = cred.username;
    doc["Secret"] = cred.password;
  }
  IMGFS_ASSIGN_OR_RETURN(HelperResult run, RunHelper(options, helper, "store", doc.dump()));
  if (run.exit_code != 0) {
    return Status::Unavailable("credential helper docker-credential-" + helper +
                               " store failed (exit " + std::to_string(run.exit_code) + ")");
  }
  return Status::Ok();
}

// Removes every `auths` key meaning `host`; true if any was removed.
bool RemoveAuthKeys(json* doc, const std::string& host) {
  auto auths = doc->find("auths");
  if (auths == doc->end() || !auths->is_object()) return false;
  std::vector<std::string> doomed;
  for (auto it = auths->begin(); it != auths->end(); ++it) {
    if (KeyHost(it.key()) == host) doomed.push_back(it.key());
  }
  for (const std::string& key : doomed) auths->erase(key);
  return !doomed.empty();
}

Status WriteConfig(const std::string& path, const json& doc) {
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    IMGFS_RETURN_IF_ERROR(MakeDirs(path.substr(0, slash), 0700));
  }
  return WriteFileAtomic(path, doc.dump(1, '\t') + "\n", 0600);
}

std::string HomeDir() {
  const char* home = getenv("HOME");  // NOLINT(concurrency-mt-unsafe): read-only use
  if (home != nullptr && *home != '\0') return home;
  passwd pw{};
  passwd* found = nullptr;
  char buf[4096];
  if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return found->pw_dir;
  }
  return "";
}

}  // namespace

std::string NormalizeRegistryHost(std::string_view key) {
  std::string k = ToLower(Trim(key));
  for (std::string_view scheme : {"https://", "http://"}) {
    if (k.rfind(scheme, 0) == 0) k = k.substr(scheme.size());
  }
  if (size_t slash = k.find('/'); slash != std::string::npos) k.resize(slash);
  if (k == "docker.io" || k == "index.docker.io" || k == "registry-1.docker.io" ||
      k == "registry.hub.docker.com") {
    return "docker.io";
  }
  return k;
}

CredentialStore::CredentialStore(CredentialStoreOptions options) : options_(std::move(options)) {}

CredentialStore CredentialStore::FromEnvironment() {
  CredentialStoreOptions options;
  // NOLINTBEGIN(concurrency-mt-unsafe): getenv at startup, nothing sets the environment.
  if (const char* file = getenv("REGISTRY_AUTH_FILE"); file != nullptr && *file != '\0') {
    options.auth_files_before.emplace_back(file);
  }
  if (const char* dir = getenv("DOCKER_CONFIG"); dir != nullptr && *dir != '\0') {
    options.docker_config_path = std::string(dir) + "/config.json";
  } else if (std::string home = HomeDir(); !home.empty()) {
    options.docker_config_path = home + "/.docker/config.json";
  }
  if (const char* run = getenv("XDG_RUNTIME_DIR"); run != nullptr && *run != '\0') {
    options.auth_files_after.push_back(std::string(run) + "/containers/auth.json");
  }
  // NOLINTEND(concurrency-mt-unsafe)
  return CredentialStore(std::move(options));
}

Result<std::optional<Credential>> CredentialStore::Lookup(const std::string& registry_host) const {
  const std::string host = NormalizeRegistryHost(registry_host);
  if (host.empty()) return Status::InvalidArgument("empty registry host");
  for (const std::string& path : options_.auth_files_before) {
    IMGFS_ASSIGN_OR_RETURN(json doc, ReadConfig(path));
    IMGFS_ASSIGN_OR_RETURN(std::optional<Credential> cred, LookupAuths(doc, host, path));
    if (cred.has_value()) return cred;
  }
  if (!options_.docker_config_path.empty()) {
    const std::string& path = options_.docker_config_path;
    IMGFS_ASSIGN_OR_RETURN(json doc, ReadConfig(path));
    if (std::string helper = HelperFor(doc, host); !helper.empty()) {
      IMGFS_ASSIGN_OR_RETURN(std::optional<Credential> cred,
                             HelperGet(options_, helper, KeyFor(host)));
      if (cred.has_value()) return cred;
    }
    IMGFS_ASSIGN_OR_RETURN(std::optional<Credential> cred, LookupAuths(doc, host, path));
    if (cred.has_value()) return cred;
  }
  for (const std::string& path : options_.auth_files_after) {
    IMGFS_ASSIGN_OR_RETURN(json doc, ReadConfig(path));
    IMGFS_ASSIGN_OR_RETURN(std::optional<Credential> cred, LookupAuths(doc, host, path));
    if (cred.has_value()) return cred;
  }
  return std::optional<Credential>();
}

Status CredentialStore::Store(const std::string& registry_host, const Credential& cred) {
  const std::string host = NormalizeRegistryHost(registry_host);
  if (host.empty()) return Status::InvalidArgument("empty registry host");
  if (cred.identity_token.empty() && (cred.username.empty() || cred.password.empty())) {
    return Status::InvalidArgument("login to " + host + " needs a username and a password");
  }
  if (cred.username.find(':') != std::string::npos) {
    return Status::InvalidArgument("a username may not contain ':'");
  }
  const std::string& path = options_.docker_config_path;
  if (path.empty()) return Status::InvalidArgument("no docker config file to store credentials");
  IMGFS_ASSIGN_OR_RETURN(json doc, ReadConfig(path));
  RemoveAuthKeys(&doc, host);
  if (!doc.contains("auths") || !doc["auths"].is_object()) doc["auths"] = json::object();
  json entry = json::object();
  if (std::string helper = HelperFor(doc, host); !helper.empty()) {
    IMGFS_RETURN_IF_ERROR(HelperStore(options_, helper, KeyFor(host), cred));
  } else if (!cred.identity_token.empty()) {
    if (!cred.username.empty()) entry["auth"] = Base64Encode(cred.username + ":");
    entry["identitytoken"] = cred.identity_token;
  } else {
    entry["auth"] = Base64Encode(cred.username + ":" + cred.password);
  }
  doc["auths"][KeyFor(host)] = std::move(entry);
  return WriteConfig(path, doc).WithContext("saving credentials for " + host);
}

Status CredentialStore::Erase(const std::string& registry_host) {
  const std::string host = NormalizeRegistryHost(registry_host);
  if (host.empty()) return Status::InvalidArgument("empty registry host");
  const std::string& path = options_.docker_config_path;
  if (path.empty()) return Status::NotFound("not logged in to " + host);
  IMGFS_ASSIGN_OR_RETURN(json doc, ReadConfig(path));
  bool erased = false;
  if (std::string helper = HelperFor(doc, host); !helper.empty()) {
    Result<HelperResult> run = RunHelper(options_, helper, "erase", KeyFor(host));
    if (run.has_value() && run->exit_code == 0) {
      erased = true;
    } else if (!run.has_value() && run.error().code() != StatusCode::kNotFound) {
      return run.error();
    } else if (run.has_value() && run->output.find(kHelperNotFound) == std::string::npos) {
      return Status::Unavailable("credential helper docker-credential-" + helper +
                                 " erase failed (exit " + std::to_string(run->exit_code) + ")");
    }
  }
  if (RemoveAuthKeys(&doc, host)) {
    erased = true;
    IMGFS_RETURN_IF_ERROR(WriteConfig(path, doc).WithContext("removing credentials for " + host));
  }
  if (!erased) return Status::NotFound("not logged in to " + host);
  return Status::Ok();
}

Result<std::optional<Credential>> ResolveCredential(std::string_view creds_flag,
                                                    const std::string& registry_host) {
  if (creds_flag.empty()) return CredentialStore::FromEnvironment().Lookup(registry_host);
  const size_t colon = creds_flag.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return Status::InvalidArgument("--creds must be USER:PASSWORD");
  }
  Credential cred;
  cred.username = std::string(creds_flag.substr(0, colon));
  cred.password = std::string(creds_flag.substr(colon + 1));
  return std::optional<Credential>(std::move(cred));
}

}  // namespace imgfs::registry
