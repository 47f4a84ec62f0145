// imgfs tests — small deterministic OCI images and process helpers.
#include "tests/support/image_builder.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/media_types.h"
#include "registry/tar_writer.h"

extern char** environ;

namespace imgfs::testing {
namespace {

using nlohmann::json;
using registry::Descriptor;
using registry::Digest;

json DescriptorJson(const Descriptor& d) {
  json j;
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest.String();
  j["size"] = d.size;
  if (d.platform) {
    j["platform"]["os"] = d.platform->os;
    j["platform"]["architecture"] = d.platform->architecture;
    if (!d.platform->variant.empty()) j["platform"]["variant"] = d.platform->variant;
  }
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  return j;
}

}  // namespace

ImageBuilder::ImageBuilder(std::string layout_dir) : dir_(std::move(layout_dir)) {
  (void)MakeDirs(dir_ + "/blobs/sha256");
  if (access((dir_ + "/oci-layout").c_str(), F_OK) != 0) {
    (void)WriteFileAtomic(dir_ + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  }
  if (access((dir_ + "/index.json").c_str(), F_OK) != 0) {
    (void)WriteFileAtomic(
        dir_ + "/index.json",
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})");
  }
}

Result<Digest> ImageBuilder::WriteBlob(std::string_view data) {
  Digest d = Digest::Sha256Of(data);
  std::string path = dir_ + "/blobs/sha256/" + d.hex();
  if (access(path.c_str(), F_OK) != 0) IMGFS_RETURN_IF_ERROR(WriteFileAtomic(path, data));
  return d;
}

Status ImageBuilder::SetIndexEntry(const std::string& tag, Descriptor descriptor) {
  IMGFS_ASSIGN_OR_RETURN(std::string text, ReadFile(dir_ + "/index.json"));
  json index = json::parse(text, nullptr, false);
  if (index.is_discarded()) return Status::Corrupt("index.json of " + dir_ + " is not JSON");
  json kept = json::array();
  for (const json& m : index["manifests"]) {
    if (m.contains("annotations") &&
        m["annotations"].value("org.opencontainers.image.ref.name", "") == tag) {
      continue;
    }
    kept.push_back(m);
  }
  descriptor.annotations["org.opencontainers.image.ref.name"] = tag;
  kept.push_back(DescriptorJson(descriptor));
  index["manifests"] = kept;
  return WriteFileAtomic(dir_ + "/index.json", index.dump());
}

Result<BuiltImage> ImageBuilder::Add(const TestImageSpec& spec, const std::string& tag) {
  BuiltImage out;
  json manifest;
  manifest["schemaVersion"] = 2;
  manifest["mediaType"] = std::string(registry::media::kOciManifest);
  json layers = json::array();
  for (const TestLayer& layer : spec.layers) {
    IMGFS_ASSIGN_OR_RETURN(std::string tar, BuildLayerTar(layer));
    std::string gz = GzipBytes(tar, layer.gzip_flush_bytes);
    IMGFS_ASSIGN_OR_RETURN(Digest d, WriteBlob(gz));
    out.layer_digests.push_back(d);
    out.layer_sizes.push_back(static_cast<int64_t>(gz.size()));
    out.diff_ids.push_back(Digest::Sha256Of(tar));
    Descriptor desc;
    desc.media_type = std::string(registry::media::kOciLayerGzip);
    desc.digest = d;
    desc.size = static_cast<int64_t>(gz.size());
    layers.push_back(DescriptorJson(desc));
  }
  json config;
  config["created"] = spec.created;
  config["architecture"] = spec.architecture;
  config["os"] = spec.os;
  if (!spec.variant.empty()) config["variant"] = spec.variant;
  config["config"]["Env"] = spec.env;
  config["config"]["Cmd"] = spec.cmd;
  config["config"]["WorkingDir"] = "/";
  if (!spec.labels.empty()) config["config"]["Labels"] = spec.labels;
  config["rootfs"]["type"] = "layers";
  config["rootfs"]["diff_ids"] = json::array();
  for (const Digest& d : out.diff_ids) config["rootfs"]["diff_ids"].push_back(d.String());
  std::string config_bytes = config.dump();
  IMGFS_ASSIGN_OR_RETURN(out.config_digest, WriteBlob(config_bytes));
  Descriptor config_desc;
  config_desc.media_type = std::string(registry::media::kOciConfig);
  config_desc.digest = out.config_digest;
  config_desc.size = static_cast<int64_t>(config_bytes.size());
  manifest["config"] = DescriptorJson(config_desc);
  manifest["layers"] = layers;
  out.manifest = manifest.dump();
  out.manifest_size = static_cast<int64_t>(out.manifest.size());
  IMGFS_ASSIGN_OR_RETURN(out.manifest_digest, WriteBlob(out.manifest));
  Descriptor m;
  m.media_type = std::string(registry::media::kOciManifest);
  m.digest = out.manifest_digest;
  m.size = out.manifest_size;
  IMGFS_RETURN_IF_ERROR(SetIndexEntry(tag, m));
  return out;
}

Result<Digest> ImageBuilder::AddIndex(
    const std::vector<std::pair<BuiltImage, registry::Platform>>& images, const std::string& tag) {
  json index;
  index["schemaVersion"] = 2;
  index["mediaType"] = std::string(registry::media::kOciIndex);
  index["manifests"] = json::array();
  for (const auto& [img, platform] : images) {
    Descriptor d;
    d.media_type = std::string(registry::media::kOciManifest);
    d.digest = img.manifest_digest;
    d.size = img.manifest_size;
    d.platform = platform;
    index["manifests"].push_back(DescriptorJson(d));
  }
  std::string bytes = index.dump();
  IMGFS_ASSIGN_OR_RETURN(Digest digest, WriteBlob(bytes));
  Descriptor d;
  d.media_type = std::string(registry::media::kOciIndex);
  d.digest = digest;
  d.size = static_cast<int64_t>(bytes.size());
  IMGFS_RETURN_IF_ERROR(SetIndexEntry(tag, d));
  return digest;
}

Result<std::string> BuildLayerTar(const TestLayer& layer) {
  std::string out;
  registry::TarWriter writer(&out);
  for (const TestFile& f : layer.files) {
    registry::TarEntry e;
    switch (f.kind) {
      case TestFile::Kind::kFile:
        e = registry::FileEntry(f.path, f.content.size(), f.mode);
        IMGFS_RETURN_IF_ERROR(writer.Add(e, f.content));
        break;
      case TestFile::Kind::kDir:
        e = registry::DirEntry(f.path, f.mode == 0644 ? 0755 : f.mode);
        IMGFS_RETURN_IF_ERROR(writer.Add(e));
        break;
      case TestFile::Kind::kSymlink:
        e.name = f.path;
        e.type = registry::TarEntryType::kSymlink;
        e.mode = 0777;
        e.link_target = f.content;
        IMGFS_RETURN_IF_ERROR(writer.Add(e));
        break;
    }
  }
  IMGFS_RETURN_IF_ERROR(writer.Finish());
  return out;
}

std::string GzipBytes(std::string_view data, size_t flush_bytes) {
  z_stream zs{};
  // windowBits 15 + 16: gzip wrapper with a default header (no name, mtime 0, OS unknown).
  deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out;
  // Each sync flush adds an empty stored block (5 bytes) and up to one byte of padding.
  const size_t flushes = flush_bytes > 0 ? data.size() / flush_bytes + 1 : 0;
  out.resize(deflateBound(&zs, data.size()) + 64 + flushes * 8);
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  size_t at = 0;
  do {
    const size_t n = flush_bytes > 0 ? std::min(flush_bytes, data.size() - at) : data.size();
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + at));
    zs.avail_in = static_cast<uInt>(n);
    at += n;
    deflate(&zs, at < data.size() ? Z_SYNC_FLUSH : Z_FINISH);
  } while (at < data.size());
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

TestImageSpec SimpleImage(const std::map<std::string, std::string>& files) {
  TestImageSpec spec;
  TestLayer layer;
  for (const auto& [name, content] : files) layer.files.push_back({name, content});
  spec.layers.push_back(std::move(layer));
  return spec;
}

std::string ProcessResult::Describe() const {
  return "exit " + std::to_string(exit_code) + "; stdout: " + out + "; stderr: " + err;
}

ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env_overrides, std::string_view stdin_data,
                         int timeout_s) {
  ProcessResult result;
  auto start = std::chrono::steady_clock::now();
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 ||
      pipe2(err_pipe, O_CLOEXEC) != 0) {
    result.err = "pipe failed";
    return result;
  }
  // Environment: ours with overrides replacing same-named variables.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    std::string_view name = kv.substr(0, kv.find('='));
    bool overridden = std::any_of(
        env_overrides.begin(), env_overrides.end(),
        [&](const std::string& o) { return std::string_view(o).substr(0, o.find('=')) == name; });
    if (!overridden) env.emplace_back(kv);
  }
  for (const auto& o : env_overrides) env.push_back(o);
  std::vector<char*> c_env;
  for (auto& e : env) c_env.push_back(e.data());
  c_env.push_back(nullptr);
  std::vector<std::string> args_copy = argv;
  std::vector<char*> c_argv;
  for (auto& a : args_copy) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);

  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    setpgid(0, 0);
    execvpe(c_argv[0], c_argv.data(), c_env.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (pid < 0) {
    close(in_pipe[1]);
    close(out_pipe[0]);
    close(err_pipe[0]);
    result.err = "fork failed";
    return result;
  }
  // Feed stdin (small inputs only: written before reading output).
  signal(SIGPIPE, SIG_IGN);
  size_t written = 0;
  while (written < stdin_data.size()) {
    ssize_t n = write(in_pipe[1], stdin_data.data() + written, stdin_data.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  close(in_pipe[1]);

  auto deadline = start + std::chrono::seconds(timeout_s);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      kill(-pid, SIGKILL);
      killed = true;
      break;
    }
    int rc = poll(fds, 2, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (rc < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buf[65536];
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  if (killed) result.err += "\n[killed after " + std::to_string(timeout_s) + "s]";
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

Status PushLayout(const std::string& layout_dir, const std::string& tag, const std::string& dest,
                  const std::string& creds) {
  std::vector<std::string> argv = {"skopeo",
                                   "copy",
                                   "--quiet",
                                   "--dest-tls-verify=false",
                                   "oci:" + layout_dir + ":" + tag,
                                   "docker://" + dest};
  if (!creds.empty()) argv.insert(argv.begin() + 2, "--dest-creds=" + creds);
  ProcessResult r = RunProcess(argv);
  if (r.exit_code != 0) {
    return Status::Unavailable("skopeo copy to " + dest + " failed: " + r.Describe());
  }
  return Status::Ok();
}

std::vector<std::string> ListFilesRecursive(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) continue;
    out.push_back(std::filesystem::relative(it->path(), dir, ec).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace imgfs::testing
