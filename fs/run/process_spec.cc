// imgfs — RunRequest → ProcessSpec: docker's rules for argv, environment, workdir and user.
#include "fs/run/process_spec.h"

#include <algorithm>
#include <cstdlib>

namespace imgfs::fs::run {
namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return out;
}

}  // namespace

Result<VolumeSpec> ParseVolume(const std::string& text) {
  std::vector<std::string> parts = Split(text, ':');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return Status::InvalidArgument("invalid volume specification: '" + text +
                                   "' (expected HOST:CONTAINER[:ro|rw])");
  }
  VolumeSpec v{parts[0], parts[1], false};
  if (v.host[0] != '/') {
    return Status::InvalidArgument("invalid volume specification: '" + text +
                                   "': the host path must be absolute (named volumes are not "
                                   "supported)");
  }
  if (v.target[0] != '/') {
    return Status::InvalidArgument("invalid volume specification: '" + text +
                                   "': the container path must be absolute");
  }
  if (parts.size() == 3) {
    for (const std::string& o : Split(parts[2], ',')) {
      if (o == "ro") {
        v.read_only = true;
      } else if (o == "rw" || o == "z" || o == "Z" || o.empty()) {
        continue;
      } else {
        std::string message = "invalid volume specification: '";
        message += text;
        message += "': unknown mode ";
        message += o;
        return Status::InvalidArgument(message);
      }
    }
  }
  return v;
}

Result<NetworkMode> ParseNetworkMode(std::string_view text) {
  if (text == "none") return NetworkMode::kNone;
  if (text == "host") return NetworkMode::kHost;
  return Status::InvalidArgument("--network must be none or host, not \"" + std::string(text) +
                                 "\" (imgfs has no bridge network)");
}

Status ApplySecurityOpt(std::string_view text, SecurityOptions* options) {
  if (text == "no-new-privileges" || text == "no-new-privileges:true" ||
      text == "no-new-privileges=true") {
    options->no_new_privileges = true;
    return Status::Ok();
  }
  if (text == "no-new-privileges:false" || text == "no-new-privileges=false") {
    options->no_new_privileges = false;
    return Status::Ok();
  }
  if (text == "seccomp=unconfined" || text == "seccomp:unconfined") {
    options->seccomp = false;
    return Status::Ok();
  }
  return Status::InvalidArgument("unsupported --security-opt \"" + std::string(text) +
                                 "\" (supported: no-new-privileges, seccomp=unconfined)");
}

void SetEnv(std::vector<std::string>* env, const std::string& entry) {
  std::string key = entry.substr(0, entry.find('='));
  for (std::string& e : *env) {
    if (e.substr(0, e.find('=')) == key) {
      e = entry;
      return;
    }
  }
  env->push_back(entry);
}

std::string GetEnv(const std::vector<std::string>& env, const std::string& key) {
  for (const std::string& e : env) {
    size_t eq = e.find('=');
    if (eq != std::string::npos && e.compare(0, eq, key) == 0 && eq == key.size()) {
      return e.substr(eq + 1);
    }
  }
  return "";
}

bool HasEnv(const std::vector<std::string>& env, const std::string& key) {
  return std::any_of(env.begin(), env.end(), [&](const std::string& e) {
    return e.size() > key.size() && e.compare(0, key.size(), key) == 0 && e[key.size()] == '=';
  });
}

Result<ProcessSpec> BuildProcessSpec(const RunRequest& req, const registry::ImageConfig& config) {
  ProcessSpec spec;
  std::vector<std::string> entrypoint = config.entrypoint;
  std::vector<std::string> cmd = config.cmd;
  if (req.entrypoint.has_value()) {
    // docker: --entrypoint replaces the entrypoint and resets the image's Cmd.
    entrypoint.clear();
    if (!req.entrypoint->empty()) entrypoint.push_back(*req.entrypoint);
    cmd.clear();
  }
  if (!req.command.empty()) cmd = req.command;
  spec.argv = entrypoint;
  spec.argv.insert(spec.argv.end(), cmd.begin(), cmd.end());
  if (spec.argv.empty()) {
    return Status::InvalidArgument("no command specified (the image has no Entrypoint or Cmd)");
  }
  // docker's daemon environment: TERM=xterm for a terminal, which the image and -e override.
  if (req.tty) SetEnv(&spec.env, "TERM=xterm");
  for (const std::string& e : config.env) SetEnv(&spec.env, e);
  if (!HasEnv(spec.env, "PATH")) SetEnv(&spec.env, "PATH=" + std::string(kDefaultPath));
  if (!req.hostname.empty()) SetEnv(&spec.env, "HOSTNAME=" + req.hostname);
  for (const std::string& e : req.env_args) {
    if (e.find('=') != std::string::npos) {
      if (e[0] == '=') return Status::InvalidArgument("invalid environment variable: " + e);
      SetEnv(&spec.env, e);
    } else if (const char* host = std::getenv(e.c_str()); host != nullptr) {
      SetEnv(&spec.env, e + "=" + host);
    }
  }
  spec.workdir = !req.workdir.empty() ? req.workdir : config.working_dir;
  if (spec.workdir.empty()) spec.workdir = "/";
  if (spec.workdir[0] != '/') {
    if (!req.workdir.empty()) {
      return Status::InvalidArgument("the working directory '" + req.workdir +
                                     "' is invalid, it needs to be an absolute path");
    }
    spec.workdir = "/" + spec.workdir;
  }
  spec.user = req.user.has_value() ? *req.user : config.user;
  return spec;
}

}  // namespace imgfs::fs::run
