// imgfs tests — RegistryServer implementation.
#include "tests/support/registry_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <netinet/in.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "registry/http_client.h"

namespace imgfs::testing {
namespace {

constexpr const char* kRegistryBinary = "/usr/bin/docker-registry";
// docker-registry starts in ~100 ms; a loaded CI machine (three builds on two cores) may
// need much longer.
constexpr auto kStartTimeout = std::chrono::seconds(30);
constexpr auto kStopTimeout = std::chrono::seconds(5);

// A free port on 127.0.0.1 (bound to 0, read back, released; the registry binds it right
// after, and Start() retries on the rare collision).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

Status Run(const std::vector<std::string>& argv, const std::string& what) {
  ProcessResult r = RunProcess(argv);
  if (r.exit_code == 0) return Status::Ok();
  return Status::Internal(what + " failed: " + r.Describe());
}

Status NeedTool(const std::string& path, const std::string& package) {
  if (::access(path.c_str(), X_OK) == 0) return Status::Ok();
  return Status::Unavailable(path + " is missing: install the Debian package " + package +
                             " (scripts/setup.sh does)");
}

std::string Quote(const std::string& text) {  // YAML double-quoted scalar
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

Result<TestPki> GenerateTestPki(const std::string& dir) {
  IMGFS_RETURN_IF_ERROR(NeedTool("/usr/bin/openssl", "openssl"));
  TestPki pki;
  pki.ca_cert = dir + "/ca.crt";
  pki.ca_key = dir + "/ca.key";
  pki.server_cert = dir + "/server.crt";
  pki.server_key = dir + "/server.key";
  pki.client_cert = dir + "/client.cert";
  pki.client_key = dir + "/client.key";
  IMGFS_RETURN_IF_ERROR(Run({"openssl",
                             "req",
                             "-x509",
                             "-newkey",
                             "ec",
                             "-pkeyopt",
                             "ec_paramgen_curve:prime256v1",
                             "-nodes",
                             "-keyout",
                             pki.ca_key,
                             "-out",
                             pki.ca_cert,
                             "-days",
                             "2",
                             "-subj",
                             "/CN=imgfs test CA",
                             "-addext",
                             "basicConstraints=critical,CA:TRUE",
                             "-addext",
                             "keyUsage=critical,keyCertSign,cRLSign"},
                            "openssl: CA"));
  struct Leaf {
    std::string cert, key, cn, ext;
  };
  const Leaf leaves[] = {
      {pki.server_cert, pki.server_key, "localhost",
       "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
       "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"},
      {pki.client_cert, pki.client_key, "imgfs test client",
       "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
       "extendedKeyUsage=clientAuth\n"},
  };
  for (const Leaf& leaf : leaves) {
    const std::string csr = leaf.cert + ".csr";
    const std::string ext = leaf.cert + ".ext";
    IMGFS_RETURN_IF_ERROR(WriteFileAtomic(ext, leaf.ext));
    IMGFS_RETURN_IF_ERROR(
        Run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", leaf.key, "-out", csr, "-subj", "/CN=" + leaf.cn},
            "openssl: request for " + leaf.cn));
    IMGFS_RETURN_IF_ERROR(
        Run({"openssl", "x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", pki.ca_key,
             "-CAcreateserial", "-out", leaf.cert, "-days", "2", "-extfile", ext},
            "openssl: certificate for " + leaf.cn));
  }
  return pki;
}

Result<std::unique_ptr<RegistryServer>> RegistryServer::Start(RegistryServerOptions options) {
  IMGFS_RETURN_IF_ERROR(NeedTool(kRegistryBinary, "docker-registry"));
  std::unique_ptr<RegistryServer> server(new RegistryServer());
  server->dir_ = std::make_unique<TempDir>();
  server->tls_ = options.tls;
  if (!options.htpasswd_user.empty())
    server->htpasswd_creds_ = options.htpasswd_user + ":" + options.htpasswd_password;
  if (options.tls) {
    IMGFS_ASSIGN_OR_RETURN(server->pki_, GenerateTestPki(server->dir()));
  }
  if (!options.htpasswd_user.empty()) {
    IMGFS_RETURN_IF_ERROR(NeedTool("/usr/bin/htpasswd", "apache2-utils"));
    ProcessResult r =
        RunProcess({"htpasswd", "-Bbn", options.htpasswd_user, options.htpasswd_password});
    if (r.exit_code != 0) return Status::Internal("htpasswd failed: " + r.Describe());
    IMGFS_RETURN_IF_ERROR(WriteFileAtomic(server->dir() + "/htpasswd", r.out));
  }
  // A port taken between FreePort() and the registry's bind shows up as an early exit.
  Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    last = server->Launch(options);
    if (last.ok()) return server;
  }
  return last;
}

Status RegistryServer::Launch(const RegistryServerOptions& options) {
  port_ = FreePort();
  if (port_ == 0) return Status::Internal("no free port on 127.0.0.1");
  std::ostringstream config;
  config << "version: 0.1\n"
         // "response completed" lines are logged at info level, as JSON for Accesses().
         << "log:\n  level: " << (options.access_log ? "info\n  formatter: json" : "warn")
         << "\n  accesslog:\n    disabled: true\n"
         << "storage:\n  filesystem:\n    rootdirectory: " << Quote(dir() + "/storage") << "\n"
         << "  delete:\n    enabled: " << (options.delete_enabled ? "true" : "false") << "\n"
         << "  maintenance:\n    uploadpurging:\n      enabled: false\n"
         << "http:\n  addr: 127.0.0.1:" << port_ << "\n  secret: imgfs-test-secret\n";
  if (!options.proxy_remote_url.empty()) {
    config << "proxy:\n  remoteurl: " << Quote(options.proxy_remote_url) << "\n";
  }
  if (options.tls) {
    config << "  tls:\n    certificate: " << Quote(pki_.server_cert) << "\n"
           << "    key: " << Quote(pki_.server_key) << "\n";
    if (options.require_client_cert) {
      config << "    clientcas:\n      - " << Quote(pki_.ca_cert) << "\n";
    }
  }
  if (!options.htpasswd_user.empty() || options.token_auth) {
    config << "auth:\n";
    if (!options.htpasswd_user.empty()) {
      config << "  htpasswd:\n    realm: imgfs-test\n    path: " << Quote(dir() + "/htpasswd")
             << "\n";
    }
    if (options.token_auth) {
      config << "  token:\n    realm: " << Quote(options.token_auth->realm) << "\n"
             << "    service: " << Quote(options.token_auth->service) << "\n"
             << "    issuer: " << Quote(options.token_auth->issuer) << "\n"
             << "    rootcertbundle: " << Quote(options.token_auth->rootcertbundle) << "\n";
    }
  }
  const std::string config_path = dir() + "/config.yml";
  const std::string log_path = dir() + "/registry.log";
  IMGFS_RETURN_IF_ERROR(WriteFileAtomic(config_path, config.str()));

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    const int null = ::open("/dev/null", O_RDONLY);
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    if (null >= 0) ::dup2(null, 0);
    const char* argv[] = {kRegistryBinary, "serve", config_path.c_str(), nullptr};
    ::execv(kRegistryBinary, const_cast<char* const*>(argv));
    ::_exit(127);
  }
  pid_ = pid;

  registry::HttpClient http;
  registry::HttpRequest ping;
  ping.url = url() + "/v2/";
  ping.connect_timeout = std::chrono::milliseconds(1000);
  ping.total_timeout = std::chrono::milliseconds(2000);
  if (tls_) {
    ping.tls.ca_files = {pki_.ca_cert};
    if (options.require_client_cert) {
      ping.tls.client_cert_file = pki_.client_cert;
      ping.tls.client_key_file = pki_.client_key;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  std::string last_error;
  while (std::chrono::steady_clock::now() < deadline) {
    int wstatus = 0;
    if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
      pid_ = -1;
      return Status::Unavailable("docker-registry exited during start-up: " + Log());
    }
    auto resp = http.Do(ping);
    if (resp.has_value() && (resp->status == 200 || resp->status == 401)) return Status::Ok();
    last_error = resp.has_value() ? "HTTP " + std::to_string(resp->status) : resp.error().message();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return Status::Unavailable("docker-registry did not answer /v2/ within 30 s (" + last_error +
                             "); log: " + Log());
}

RegistryServer::~RegistryServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + kStopTimeout;
    bool reaped = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        reaped = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!reaped) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
}

std::string RegistryServer::Log() const {
  std::ifstream in(dir() + "/registry.log");
  std::ostringstream text;
  text << in.rdbuf();
  std::string out = text.str();
  if (out.size() > 4000) out = "…" + out.substr(out.size() - 4000);
  return out;
}

std::vector<RegistryAccess> RegistryServer::Accesses() const {
  std::vector<RegistryAccess> out;
  std::ifstream in(dir() + "/registry.log");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("msg", "") != "response completed") {
      continue;
    }
    RegistryAccess a;
    a.method = j.value("http.request.method", "");
    a.path = j.value("http.request.uri", "");
    a.status = j.value("http.response.status", 0);
    a.bytes = j.value("http.response.written", uint64_t{0});
    out.push_back(std::move(a));
  }
  return out;
}

uint64_t RegistryServer::BlobBytesServed() const {
  uint64_t total = 0;
  for (const RegistryAccess& a : Accesses()) {
    if (a.method == "GET" && a.IsBlob()) total += a.bytes;
  }
  return total;
}

Status RegistryServer::PushOciLayout(const std::string& layout_dir, const std::string& layout_tag,
                                     const std::string& name_and_tag,
                                     const PushOptions& push) const {
  IMGFS_RETURN_IF_ERROR(NeedTool("/usr/bin/skopeo", "skopeo"));
  std::vector<std::string> argv = {"skopeo", "--insecure-policy", "copy", "--retry-times", "2"};
  if (!push.cert_dir.empty()) {
    argv.push_back("--dest-cert-dir");
    argv.push_back(push.cert_dir);
  }
  if (push.cert_dir.empty() || !tls_) argv.push_back("--dest-tls-verify=false");
  const std::string& creds = push.creds.empty() ? htpasswd_creds_ : push.creds;
  if (!creds.empty()) {
    argv.push_back("--dest-creds");
    argv.push_back(creds);
  }
  argv.push_back("oci:" + layout_dir + ":" + layout_tag);
  argv.push_back("docker://" + host_port() + "/" + name_and_tag);
  ProcessResult r = RunProcess(argv);
  if (r.exit_code != 0) {
    return Status::Internal("skopeo copy oci:" + layout_dir + ":" + layout_tag + " to " +
                            host_port() + "/" + name_and_tag + " failed: " + r.Describe());
  }
  return Status::Ok();
}

}  // namespace imgfs::testing
