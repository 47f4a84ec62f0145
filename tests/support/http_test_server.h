// imgfs tests — HttpTestServer: a tiny scripted HTTP/1.1 server on 127.0.0.1.
//
// For faults a real registry cannot be made to produce: a 500 before the 200, 429 with
// Retry-After, a body cut mid-way, 200 where 206 was asked for, wrong bytes, redirects to
// another host, slow answers. Each test supplies a Handler that sees every parsed request
// and answers through an HttpTestConnection (or closes it). Every request is recorded
// (method, target, headers, body) for assertions. ProxyHandler turns the server into a
// counting proxy in front of a real registry.
//
// The server listens on an ephemeral port from construction to destruction; each accepted
// connection is served by its own thread with keep-alive, so libcurl's connection reuse is
// exercised. The destructor stops accepting, shuts every connection down and joins all
// threads; handlers should not sleep for more than a second or two.
//
// Thread-safety: requests(), Count() and SetHandler() may be called from any thread while the
// server runs; the handler itself runs on connection threads, possibly concurrently.
#ifndef IMGFS_TESTS_SUPPORT_HTTP_TEST_SERVER_H_
#define IMGFS_TESTS_SUPPORT_HTTP_TEST_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace imgfs::testing {

struct HttpTestRequest {
  std::string method;
  std::string target;                          // as sent: path plus optional "?query"
  std::string path;                            // target without the query
  std::string query;                           // after '?', "" if none
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  // Header value or "" (name in lower case).
  std::string Header(const std::string& lower_name) const;
  bool HasHeader(const std::string& lower_name) const { return headers.count(lower_name) != 0; }
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// One client connection, handed to the handler for one request.
class HttpTestConnection {
 public:
  explicit HttpTestConnection(int fd) : fd_(fd) {}

  // A complete response with Content-Length = body.size() (for HEAD, pass the body anyway
  // with head_only=true to announce its length without sending it).
  void Respond(int status, const HeaderList& headers = {}, std::string_view body = "",
               bool head_only = false);
  // Announces Content-Length: declared_length, sends only `partial`, then closes the
  // connection: the client sees a transfer cut mid-body.
  void RespondTruncated(int status, const HeaderList& headers, std::string_view partial,
                        uint64_t declared_length);
  // Raw bytes, for anything else.
  void WriteRaw(std::string_view bytes);
  // Closes the connection without (more) response.
  void Close();
  bool closed() const { return closed_; }

 private:
  int fd_;
  bool closed_ = false;
};

class HttpTestServer {
 public:
  using Handler = std::function<void(const HttpTestRequest&, HttpTestConnection&)>;

  explicit HttpTestServer(Handler handler);
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  int port() const { return port_; }
  std::string host_port() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string url() const { return "http://" + host_port(); }

  void SetHandler(Handler handler);
  // Every request parsed so far, in arrival order.
  std::vector<HttpTestRequest> requests() const;
  // Requests with this method whose path starts with `path_prefix`.
  size_t Count(std::string_view method, std::string_view path_prefix) const;
  // Connections accepted so far (tells connection reuse from reconnects).
  size_t connections() const { return connections_.load(); }

 private:
  void AcceptLoop();
  void Serve(int fd);
  Handler CurrentHandler() const;

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> connections_{0};
  mutable std::mutex mu_;  // guards handler_, requests_, conn_fds_, threads_; a leaf lock
  Handler handler_;
  std::vector<HttpTestRequest> requests_;
  std::vector<int> conn_fds_;
  std::vector<std::thread> threads_;
  std::thread accept_thread_;
};

// Counters kept by ProxyHandler.
struct ProxyStats {
  std::atomic<int> requests{0};
  std::atomic<int> blob_gets{0};        // GET .../blobs/... answered 2xx
  std::atomic<uint64_t> blob_bytes{0};  // body bytes of those
};

// A handler that forwards each request to `upstream_url` ("http://127.0.0.1:5000") and relays
// the answer (status, headers, body), counting blob downloads in `stats`.
HttpTestServer::Handler ProxyHandler(std::string upstream_url, std::shared_ptr<ProxyStats> stats);

// Faults a FaultyProxyHandler injects. Every knob may be changed while the proxy runs; the
// *_count knobs are consumed one per affected request (-1 = every request). "Blob GETs" are
// GET …/blobs/… requests; the rest (ping, token, manifests) pass through untouched except
// for delay_ms and unreachable.
struct ProxyFaults {
  std::atomic<int> delay_ms{0};              // wait before answering any request
  std::atomic<int64_t> rate_bytes_per_s{0};  // pace blob bodies to this rate (0: no limit)
  std::atomic<int> fail_status{500};         // status of the failures below (500, 429, 503…)
  std::atomic<int> fail_count{0};            // blob GETs answered with fail_status
  std::atomic<int> drop_count{0};            // blob GETs cut after half their body
  // Blob GETs with one body byte flipped (in a multipart/byteranges answer: a byte of the
  // first part's data, so the framing stays valid and the bad bytes reach the decoder).
  std::atomic<int> corrupt_count{0};
  std::atomic<bool> ignore_range{false};        // ranged blob GETs answered 200 + whole blob
  std::atomic<bool> refuse_multi_range{false};  // 400 for "Range: bytes=a-b,c-d"
  std::atomic<bool> unreachable{false};         // every connection closed without an answer
  // Blob GETs held unanswered while set (at most 20 s each). Clear it before the server is
  // destroyed: the destructor joins the connection threads.
  std::atomic<bool> hang{false};
  // Observations.
  std::atomic<int> multi_range_requests{0};  // blob GETs asking for several ranges
  std::atomic<int> ranged_requests{0};       // blob GETs with a Range header
  std::atomic<int> faults_injected{0};       // requests failed, dropped, corrupted or refused
};

// ProxyHandler with the faults of `faults` injected (a null `faults` injects none).
HttpTestServer::Handler FaultyProxyHandler(std::string upstream_url,
                                           std::shared_ptr<ProxyStats> stats,
                                           std::shared_ptr<ProxyFaults> faults);

}  // namespace imgfs::testing

#endif  // IMGFS_TESTS_SUPPORT_HTTP_TEST_SERVER_H_
