// imgfs — HttpClient implementation over the libcurl easy API.
#include "registry/http_client.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

#include <curl/curl.h>

#include "base/log.h"
#include "base/strings.h"
#include "registry/proxy_env.h"

namespace imgfs::registry {
namespace {

// The system trust store on Debian (ca-certificates). CURLOPT_CAINFO_BLOB replaces the
// default bundle, so extra CAs are appended to this one rather than used alone.
constexpr const char* kSystemCaBundle = "/etc/ssl/certs/ca-certificates.crt";

// Upper bound on pooled idle handles: more than the busiest thread pool we run (FUSE worker
// threads + prefetchers), small enough that idle connections do not pile up.
constexpr size_t kMaxIdleHandles = 16;

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using CurlPtr = std::unique_ptr<CURL, CurlDeleter>;

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using SlistPtr = std::unique_ptr<curl_slist, SlistDeleter>;

struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using CurlUrlPtr = std::unique_ptr<CURLU, CurlUrlDeleter>;

// State shared between Do() and the libcurl callbacks of one transfer.
struct Transfer {
  const HttpRequest* request = nullptr;
  HttpResponse response;
  bool in_headers = false;  // a status line was seen and the blank line not yet
  Status sink_error;        // set when body_sink failed; aborts the transfer
  bool body_too_large = false;
  bool body_started = false;  // on_body_start was called
};

size_t HeaderCallback(char* data, size_t size, size_t nitems, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nitems;
  std::string_view line(data, n);
  if (line.starts_with("HTTP/")) {
    // A new response (an interim 1xx or the final one): start over.
    t->response.headers.clear();
    t->response.www_authenticate.clear();
    t->response.status = 0;
    const size_t space = line.find(' ');
    if (space != std::string_view::npos) {
      t->response.status = std::strtol(std::string(line.substr(space + 1, 3)).c_str(), nullptr, 10);
    }
    t->in_headers = true;
    return n;
  }
  line = Trim(line);
  if (line.empty()) {
    t->in_headers = false;
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;  // continuation lines are obsolete; ignore
  std::string name = ToLower(Trim(line.substr(0, colon)));
  std::string value(Trim(line.substr(colon + 1)));
  if (name == "www-authenticate") {
    t->response.www_authenticate.push_back(value);
  }
  auto [it, inserted] = t->response.headers.emplace(name, value);
  if (!inserted) it->second += ", " + value;
  return n;
}

size_t WriteCallback(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * nmemb;
  if (t->request->body_sink && IsSuccessStatus(t->response.status)) {
    if (!t->body_started) {
      t->body_started = true;
      if (t->request->on_body_start) {
        Status st = t->request->on_body_start(t->response);
        if (!st.ok()) {
          t->sink_error = std::move(st);
          return 0;
        }
      }
    }
    Status st = t->request->body_sink(std::string_view(data, n));
    if (!st.ok()) {
      t->sink_error = std::move(st);
      return 0;  // CURLE_WRITE_ERROR
    }
    return n;
  }
  if (t->response.body.size() + n > t->request->max_body_bytes) {
    t->body_too_large = true;
    return 0;
  }
  t->response.body.append(data, n);
  return n;
}

bool IsTlsError(CURLcode code) {
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      return true;
    default:
      return false;
  }
}

}  // namespace

// Idle handles and derived CA bundles. Each mutex is a leaf, never held across I/O.
// (std::mutex carries no clang capability annotation in libstdc++.)
struct HttpClient::Pool {
  // From the environment at construction; immutable.
  const ProxyConfig proxy = ProxyConfigFromEnvironment();
  const std::string no_proxy = NoProxyList(proxy);  // loopback always direct

  std::mutex mu;
  std::vector<CurlPtr> idle;  // guarded by mu
  // Combined CA bundles (system bundle + extra files), keyed by the file list.
  std::mutex ca_mu;
  std::map<std::vector<std::string>, std::shared_ptr<const std::string>> ca_bundles;  // ca_mu

  CurlPtr Acquire() {
    {
      std::scoped_lock lock(mu);
      if (!idle.empty()) {
        CurlPtr curl = std::move(idle.back());
        idle.pop_back();
        return curl;
      }
    }
    return CurlPtr(curl_easy_init());
  }

  void Release(CurlPtr curl) {
    // curl_easy_reset keeps live connections and the DNS/TLS session caches.
    curl_easy_reset(curl.get());
    std::scoped_lock lock(mu);
    if (idle.size() < kMaxIdleHandles) idle.push_back(std::move(curl));
  }

  Result<std::shared_ptr<const std::string>> CaBundle(const std::vector<std::string>& files) {
    std::scoped_lock lock(ca_mu);
    auto it = ca_bundles.find(files);
    if (it != ca_bundles.end()) return it->second;
    std::string bundle;
    for (const std::string& path : [&] {
           std::vector<std::string> all{kSystemCaBundle};
           all.insert(all.end(), files.begin(), files.end());
           return all;
         }()) {
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        if (path == kSystemCaBundle) continue;  // no system store: extra CAs only
        return Status::InvalidArgument("cannot read CA certificate file " + path);
      }
      std::ostringstream text;
      text << in.rdbuf();
      bundle += text.str();
      if (!bundle.empty() && bundle.back() != '\n') bundle += '\n';
    }
    auto shared = std::make_shared<const std::string>(std::move(bundle));
    ca_bundles.emplace(files, shared);
    return shared;
  }
};

std::string HttpResponse::Header(std::string_view lower_name) const {
  auto it = headers.find(std::string(lower_name));
  return it == headers.end() ? std::string() : it->second;
}

HttpClient::HttpClient() : pool_(std::make_unique<Pool>()) { GlobalInit(); }

HttpClient::~HttpClient() = default;

void HttpClient::GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

Result<HttpResponse> HttpClient::Do(const HttpRequest& request) {
  // Messages and logs name the URL without its query: signed blob-storage URLs carry
  // credentials there (X-Amz-Signature, sig=...).
  const std::string what = request.method + " " + request.url.substr(0, request.url.find('?'));
  CurlPtr curl = pool_->Acquire();
  if (!curl) return Status::Internal("curl_easy_init failed");
  CURL* h = curl.get();

  Transfer t;
  t.request = &request;
  char errbuf[CURL_ERROR_SIZE] = {0};

  SlistPtr headers;
  auto add_header = [&](const std::string& line) {
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    if (next != nullptr) {
      (void)headers.release();
      headers.reset(next);
    }
  };
  for (const std::string& line : request.headers) add_header(line);
  if (request.range) {
    if (request.range->empty()) return Status::InvalidArgument(what + ": empty byte range");
    add_header("Range: bytes=" + std::to_string(request.range->offset) + "-" +
               std::to_string(request.range->end() - 1));
  }

  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  // The proxy is decided here, not by libcurl's reading of the environment: "" connects
  // directly, and loopback hosts always do (registry/proxy_env.h).
  const std::string proxy = ProxyFor(pool_->proxy, request.url);
  curl_easy_setopt(h, CURLOPT_PROXY, proxy.c_str());
  curl_easy_setopt(h, CURLOPT_NOPROXY, pool_->no_proxy.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "imgfs/0.1");
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, HeaderCallback);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, WriteCallback);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(request.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(request.total_timeout.count()));
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(request.low_speed_bytes));
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, static_cast<long>(request.low_speed_time.count()));

  std::shared_ptr<const std::string> ca_bundle;
  if (!request.tls.ca_files.empty()) {
    IMGFS_ASSIGN_OR_RETURN(ca_bundle, pool_->CaBundle(request.tls.ca_files));
    curl_blob blob{};
    blob.data = const_cast<char*>(ca_bundle->data());
    blob.len = ca_bundle->size();
    blob.flags = CURL_BLOB_NOCOPY;
    curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
  }
  if (!request.tls.client_cert_file.empty()) {
    curl_easy_setopt(h, CURLOPT_SSLCERT, request.tls.client_cert_file.c_str());
  }
  if (!request.tls.client_key_file.empty()) {
    curl_easy_setopt(h, CURLOPT_SSLKEY, request.tls.client_key_file.c_str());
  }

  if (request.method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    if (!request.body.empty() || request.method == "POST" || request.method == "PUT" ||
        request.method == "PATCH") {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(request.body.size()));
      add_header("Expect:");  // no 100-continue round trip
    }
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());

  const CURLcode code = curl_easy_perform(h);
  char* effective = nullptr;
  if (curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective) {
    t.response.effective_url = effective;
  }
  // The handle goes back to the pool only after a clean transfer; a failed one may hold a
  // half-read connection, which curl would close anyway.
  if (code == CURLE_OK) {
    pool_->Release(std::move(curl));
  }

  if (code != CURLE_OK) {
    if (!t.sink_error.ok()) return t.sink_error;
    if (t.body_too_large) {
      return Status::Corrupt(what + ": response body larger than " +
                             std::to_string(request.max_body_bytes) + " bytes");
    }
    std::string detail = errbuf[0] != '\0' ? std::string(Trim(errbuf)) : curl_easy_strerror(code);
    if (IsTlsError(code)) {
      return Status::Unavailable(what + ": TLS verification failed: " + detail +
                                 " (trust the registry's CA with --ca-cert or "
                                 "/etc/docker/certs.d/HOST/ca.crt)");
    }
    if (code == CURLE_OPERATION_TIMEDOUT) {
      return Status::Unavailable(what + ": timed out: " + detail);
    }
    return Status::Unavailable(what + ": " + detail);
  }
  IMGFS_LOG(kDebug) << what << " -> " << t.response.status;
  return std::move(t.response);
}

std::string UrlHostPort(std::string_view url) {
  CurlUrlPtr u(curl_url());
  if (!u) return "";
  if (curl_url_set(u.get(), CURLUPART_URL, std::string(url).c_str(), 0) != CURLUE_OK) return "";
  char* host = nullptr;
  if (curl_url_get(u.get(), CURLUPART_HOST, &host, 0) != CURLUE_OK) return "";
  std::string out = ToLower(host);
  curl_free(host);
  char* port = nullptr;
  if (curl_url_get(u.get(), CURLUPART_PORT, &port, 0) == CURLUE_OK && port != nullptr) {
    out += ":";
    out += port;
    curl_free(port);
  }
  return out;
}

std::string ResolveUrl(std::string_view base, std::string_view location) {
  CurlUrlPtr u(curl_url());
  if (!u) return std::string(location);
  if (curl_url_set(u.get(), CURLUPART_URL, std::string(base).c_str(), 0) != CURLUE_OK ||
      curl_url_set(u.get(), CURLUPART_URL, std::string(location).c_str(), 0) != CURLUE_OK) {
    return std::string(location);
  }
  char* full = nullptr;
  if (curl_url_get(u.get(), CURLUPART_URL, &full, 0) != CURLUE_OK) return std::string(location);
  std::string out = full;
  curl_free(full);
  return out;
}

std::string UrlEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (std::isalnum(b) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[b >> 4];
      out += kHex[b & 0xF];
    }
  }
  return out;
}

}  // namespace imgfs::registry
