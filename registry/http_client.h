// imgfs — HttpClient: the one place imgfs speaks HTTP (libcurl easy handles).
//
// A thin, policy-free transport: one request in, one response out. It does NOT follow
// redirects by itself (callers decide whether an Authorization header may go to the new host),
// does not retry and knows nothing about registries or auth; registry/remote_source.cc adds
// that policy. TLS is verified (peer and host) unless the request targets plain http://.
//
// Connection reuse: handles are pooled per client and reused (libcurl keeps their
// connections alive); a handle is used by one thread at a time. CURLOPT_NOSIGNAL is set.
// curl_global_init must have run before the first client is created (HttpClient::GlobalInit,
// called once from main or the test main).
//
// Thread-safety: Do() may be called from many threads at once.
#ifndef IMGFS_REGISTRY_HTTP_CLIENT_H_
#define IMGFS_REGISTRY_HTTP_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_range.h"
#include "base/status.h"

namespace imgfs::registry {

struct TlsOptions {
  // Extra CA bundle files (PEM) trusted besides the system store, e.g. from
  // /etc/docker/certs.d/<host>/*.crt or --ca-cert.
  std::vector<std::string> ca_files;
  // Client certificate and key (certs.d/<host>/client.cert, client.key), may be empty.
  std::string client_cert_file;
  std::string client_key_file;
};

struct HttpResponse;

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, POST, PUT, PATCH, DELETE
  std::string url;
  // Header lines "Name: value". Never logged verbatim (Authorization is redacted).
  std::vector<std::string> headers;
  std::optional<ByteRange> range;  // adds "Range: bytes=a-b"
  std::string body;
  // Streaming body receiver. When set, response body bytes go here instead of
  // HttpResponse::body — but only for 2xx responses; error bodies are always collected.
  std::function<Status(std::string_view)> body_sink;
  // Called once, before the first body_sink call of a 2xx response, with the response's
  // status and headers (body empty): lets a caller check Content-Range / Content-Length or
  // tell a 200 from a 206 before consuming bytes. An error aborts the transfer and is
  // returned as is.
  std::function<Status(const HttpResponse&)> on_body_start;
  // Limit for bodies collected into HttpResponse::body (non-2xx, or no body_sink); a larger
  // body aborts the transfer with Corrupt. Manifests are at most 4 MiB in distribution.
  size_t max_body_bytes = 64u << 20;
  std::chrono::milliseconds connect_timeout{10000};
  // The whole request, including the body transfer. 0 = none (streams rely on the
  // low-speed limit below instead).
  std::chrono::milliseconds total_timeout{0};
  // Abort when fewer than low_speed_bytes/s arrive for low_speed_time.
  int64_t low_speed_bytes = 1;
  std::chrono::seconds low_speed_time{30};
  TlsOptions tls;
};

struct HttpResponse {
  long status = 0;  // NOLINT(google-runtime-int): libcurl's type
  // Header names lower-cased; for repeated headers the values are joined with ", " except
  // www-authenticate whose values are kept as separate entries in `www_authenticate`.
  std::map<std::string, std::string> headers;
  std::vector<std::string> www_authenticate;
  std::string body;
  std::string effective_url;

  // Header value or "" (name in lower case).
  std::string Header(std::string_view lower_name) const;
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // curl_global_init; call once before threads start.
  static void GlobalInit();

  // Performs one request. A transport failure (DNS, connect, TLS, timeout, reset) returns
  // Unavailable (PermissionDenied-free: TLS verification failure is Unavailable with a
  // message saying so); any HTTP status, including 4xx/5xx, is a successful Result.
  // A body_sink / on_body_start error aborts the transfer and is returned as is.
  // Error messages name the method and the URL without its query (signed URLs carry
  // credentials there); headers are never logged.
  Result<HttpResponse> Do(const HttpRequest& request);

 private:
  struct Pool;
  std::unique_ptr<Pool> pool_;
};

// 2xx.
inline bool IsSuccessStatus(long status) {  // NOLINT(google-runtime-int): libcurl's type
  return status >= 200 && status < 300;
}

// Returns "host[:port]" of an absolute URL, lower-cased ("" if unparsable).
std::string UrlHostPort(std::string_view url);
// Resolves a Location header value against the URL it came from.
std::string ResolveUrl(std::string_view base, std::string_view location);
// Percent-encodes a query component.
std::string UrlEncode(std::string_view text);

}  // namespace imgfs::registry

#endif  // IMGFS_REGISTRY_HTTP_CLIENT_H_
