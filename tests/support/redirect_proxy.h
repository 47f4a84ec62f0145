// imgfs tests — RedirectProxy: a registry front that sends blob downloads to expiring signed
// URLs, the way registries backed by S3 or a CDN do (LESSONS.md #7).
//
// Two HttpTestServers (tests/support/http_test_server.h) on 127.0.0.1 in front of a real
// registry (`upstream_url`, e.g. RegistryServer::url()):
//  - the front, which clients use as the registry: `GET /v2/<name>/blobs/<digest>` is
//    answered `307 Location: http://127.0.0.1:<storage port>/signed/<name>/blobs/<digest>
//    ?expires=<unix ms>&sig=<n>`, valid for expiry(); every other request (ping, manifests,
//    referrers, HEAD of blobs, uploads) is relayed to the registry unchanged;
//  - the storage host (a different host:port, like a bucket): `GET /signed/...` before its
//    expiry is served from the registry's `/v2/...` with the Range header forwarded (206 or
//    200 as the registry answers); after expiry it answers 403 with an S3-style XML error;
//    a request carrying an Authorization header is answered 400 (S3 refuses a second auth
//    mechanism on a presigned URL), as is a malformed signed URL.
// In front of a registry that requires Basic auth (`registry_credentials` = "user:password"),
// a blob GET without an Authorization header is relayed instead, so the registry answers its
// 401 challenge: only an authenticated client is sent to storage, and it must not take its
// credential along. The storage host itself reads the registry with `registry_credentials`
// (a bucket has its own access, the signature in the URL is the client's only key).
// Counters tell a test what happened: redirects issued, signed GETs served, 403s for expired
// URLs, 400s for Authorization headers.
//
// Thread-safety: the counters and set_expiry() may be used from any thread while the servers
// run; requests are served on the servers' connection threads. The destructor stops both
// servers (joining their threads).
#ifndef IMGFS_TESTS_SUPPORT_REDIRECT_PROXY_H_
#define IMGFS_TESTS_SUPPORT_REDIRECT_PROXY_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "tests/support/http_test_server.h"

namespace imgfs::testing {

class RedirectProxy {
 public:
  // Starts both servers; signed URLs stay valid for `expiry`.
  RedirectProxy(std::string upstream_url, std::chrono::milliseconds expiry,
                const std::string& registry_credentials = "");
  ~RedirectProxy();
  RedirectProxy(const RedirectProxy&) = delete;
  RedirectProxy& operator=(const RedirectProxy&) = delete;

  // The registry address clients use ("127.0.0.1:PORT").
  std::string host_port() const;
  // The storage host the signed URLs point at ("127.0.0.1:PORT").
  std::string storage_host_port() const;

  // Validity of URLs signed from now on.
  void set_expiry(std::chrono::milliseconds expiry) { expiry_ms_ = expiry.count(); }

  // Blob GETs answered with a redirect.
  int redirects_issued() const { return redirects_issued_.load(); }
  // Signed GETs relayed to the registry (whatever it answered).
  int signed_gets() const { return signed_gets_.load(); }
  // Signed GETs refused with 403 because their URL had expired.
  int expired_refusals() const { return expired_refusals_.load(); }
  // Signed GETs refused with 400 because they carried an Authorization header.
  int auth_refusals() const { return auth_refusals_.load(); }
  // Body bytes of the signed GETs answered 2xx.
  uint64_t signed_bytes() const { return relay_stats_->blob_bytes.load(); }

 private:
  void HandleFront(const HttpTestRequest& req, HttpTestConnection& conn);
  void HandleStorage(const HttpTestRequest& req, HttpTestConnection& conn);

  std::atomic<int64_t> expiry_ms_;
  const std::string storage_authorization_;  // header line for the registry, "" = none
  std::atomic<int> redirects_issued_{0};
  std::atomic<int> signed_gets_{0};
  std::atomic<int> expired_refusals_{0};
  std::atomic<int> auth_refusals_{0};
  std::atomic<uint64_t> next_signature_{1};
  std::shared_ptr<ProxyStats> relay_stats_;
  HttpTestServer::Handler relay_;  // forwards to the registry
  // Declared last: destroyed (threads joined) before the state the handlers use.
  std::unique_ptr<HttpTestServer> storage_;
  std::unique_ptr<HttpTestServer> front_;
};

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_REDIRECT_PROXY_H_
