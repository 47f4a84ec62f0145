// imgfs tests — helpers for tests of `imgfs run` (see run_support.h).
#include "tests/support/run_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/digest.h"
#include "registry/media_types.h"

extern char** environ;

namespace imgfs::testing {

using json = nlohmann::json;

Result<BuiltImage> AddImageWithConfig(ImageBuilder& builder, const TestImageSpec& spec,
                                      const std::string& tag, const ConfigOverrides& overrides) {
  IMGFS_ASSIGN_OR_RETURN(BuiltImage built, builder.Add(spec, tag));
  auto blob_path = [&](const registry::Digest& d) {
    return builder.dir() + "/blobs/sha256/" + d.String().substr(7);
  };
  IMGFS_ASSIGN_OR_RETURN(std::string config_text, ReadFile(blob_path(built.config_digest)));
  json config = json::parse(config_text, nullptr, false);
  if (config.is_discarded()) return Status::Corrupt("config of the built image is not JSON");
  json& c = config["config"];
  if (overrides.entrypoint.has_value()) c["Entrypoint"] = *overrides.entrypoint;
  if (overrides.cmd.has_value()) c["Cmd"] = *overrides.cmd;
  if (overrides.env.has_value()) c["Env"] = *overrides.env;
  if (overrides.working_dir.has_value()) c["WorkingDir"] = *overrides.working_dir;
  if (overrides.user.has_value()) c["User"] = *overrides.user;
  std::string new_config = config.dump();
  IMGFS_ASSIGN_OR_RETURN(registry::Digest config_digest, builder.WriteBlob(new_config));

  json manifest = json::parse(built.manifest, nullptr, false);
  if (manifest.is_discarded()) return Status::Corrupt("manifest of the built image is not JSON");
  manifest["config"]["digest"] = config_digest.String();
  manifest["config"]["size"] = new_config.size();
  std::string new_manifest = manifest.dump();
  IMGFS_ASSIGN_OR_RETURN(registry::Digest manifest_digest, builder.WriteBlob(new_manifest));

  registry::Descriptor d;
  d.media_type = std::string(registry::media::kOciManifest);
  d.digest = manifest_digest;
  d.size = static_cast<int64_t>(new_manifest.size());
  IMGFS_RETURN_IF_ERROR(builder.SetIndexEntry(tag, d));
  built.config_digest = config_digest;
  built.manifest = new_manifest;
  built.manifest_digest = manifest_digest;
  built.manifest_size = d.size;
  return built;
}

Result<TestLayer> BusyboxLayer(const std::vector<std::string>& applets,
                               const std::vector<TestFile>& extra) {
  Result<std::string> busybox = ReadFile("/bin/busybox");
  if (!busybox.has_value()) {
    return Status::NotFound("the host has no /bin/busybox (install busybox-static): " +
                            busybox.error().ToString());
  }
  TestLayer layer;
  using Kind = TestFile::Kind;
  layer.files.push_back({"bin", "", Kind::kDir, 0755});
  layer.files.push_back({"bin/busybox", std::move(*busybox), Kind::kFile, 0755});
  for (const std::string& a : applets)
    layer.files.push_back({"bin/" + a, "busybox", Kind::kSymlink});
  layer.files.push_back({"etc", "", Kind::kDir, 0755});
  layer.files.push_back({"etc/passwd",
                         "root:x:0:0:root:/root:/bin/sh\n"
                         "app:x:1234:1234:app:/home/app:/bin/sh\n"
                         "user:x:1000:1000:user:/home/user:/bin/sh\n",
                         Kind::kFile, 0644});
  layer.files.push_back(
      {"etc/group", "root:x:0:\napp:x:1234:\nuser:x:1000:\nextra:x:5000:app\n", Kind::kFile, 0644});
  layer.files.push_back({"home", "", Kind::kDir, 0755});
  layer.files.push_back({"home/app", "", Kind::kDir, 0777});
  layer.files.push_back({"tmp", "", Kind::kDir, 01777});
  for (const TestFile& f : extra) layer.files.push_back(f);
  return layer;
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv,
                                     const std::vector<std::string>& env_overrides) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    std::string name = kv.substr(0, kv.find('='));
    bool overridden = false;
    for (const std::string& o : env_overrides) overridden |= o.substr(0, o.find('=')) == name;
    if (!overridden) env.push_back(kv);
  }
  for (const std::string& o : env_overrides) env.push_back(o);
  std::vector<char*> c_env;
  for (std::string& e : env) c_env.push_back(e.data());
  c_env.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (std::string& a : args) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::string out_path = dir_.Sub("out");
  std::string err_path = dir_.Sub("err");
  pid_ = fork();
  if (pid_ == 0) {
    int in = open("/dev/null", O_RDONLY);
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0) _exit(127);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    setpgid(0, 0);
    for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(c_argv[0], c_argv.data(), c_env.data());
    _exit(127);
  }
}

BackgroundProcess::~BackgroundProcess() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    Wait(10);
  }
}

int BackgroundProcess::Wait(int timeout_s) {
  if (reaped_) return exit_code_;
  if (pid_ <= 0) return -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    int wstatus = 0;
    pid_t r = waitpid(pid_, &wstatus, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      exit_code_ = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
      return exit_code_;
    }
    if (r < 0 || std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void BackgroundProcess::Signal(int sig) const {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

std::string BackgroundProcess::out() const {
  Result<std::string> r = ReadFile(dir_.Sub("out"));
  return r.has_value() ? *r : "";
}

std::string BackgroundProcess::err() const {
  Result<std::string> r = ReadFile(dir_.Sub("err"));
  return r.has_value() ? *r : "";
}

bool WaitFor(const std::function<bool()>& predicate, double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  for (;;) {
    if (predicate()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool ProcessRuns(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return false;
  size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

}  // namespace imgfs::testing
