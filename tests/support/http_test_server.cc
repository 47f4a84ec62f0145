// imgfs tests — HttpTestServer implementation (plain sockets, one thread per connection).
#include "tests/support/http_test_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "registry/http_client.h"
#include "registry/multipart_ranges.h"

namespace imgfs::testing {
namespace {

// How often blocked threads look at the stop flag.
constexpr int kPollMs = 50;
// Requests larger than this are refused (tests send tiny ones).
constexpr size_t kMaxRequestBytes = 16u << 20;

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 416:
      return "Range Not Satisfiable";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

bool SendAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string Head(int status, const HeaderList& headers, uint64_t content_length) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) + "\r\n";
  for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
  out += "Content-Length: " + std::to_string(content_length) + "\r\n\r\n";
  return out;
}

// Parses "METHOD target HTTP/1.1\r\nName: value\r\n..." (without the final blank line).
bool ParseHead(std::string_view head, HttpTestRequest* req) {
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return false;
  req->method = std::string(line.substr(0, sp1));
  req->target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  const size_t q = req->target.find('?');
  req->path = req->target.substr(0, q);
  req->query = q == std::string::npos ? "" : req->target.substr(q + 1);
  while (eol != std::string_view::npos) {
    head.remove_prefix(eol + 2);
    eol = head.find("\r\n");
    line = head.substr(0, eol);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name = Lower(Trim(line.substr(0, colon)));
    std::string value(Trim(line.substr(colon + 1)));
    auto [it, inserted] = req->headers.emplace(name, value);
    if (!inserted) it->second += ", " + value;
  }
  return true;
}

}  // namespace

std::string HttpTestRequest::Header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

void HttpTestConnection::Respond(int status, const HeaderList& headers, std::string_view body,
                                 bool head_only) {
  if (closed_) return;
  std::string out = Head(status, headers, body.size());
  if (!head_only) out += body;
  if (!SendAll(fd_, out)) Close();
}

void HttpTestConnection::RespondTruncated(int status, const HeaderList& headers,
                                          std::string_view partial, uint64_t declared_length) {
  if (closed_) return;
  SendAll(fd_, Head(status, headers, declared_length) + std::string(partial));
  Close();
}

void HttpTestConnection::WriteRaw(std::string_view bytes) {
  if (closed_) return;
  if (!SendAll(fd_, bytes)) Close();
}

void HttpTestConnection::Close() {
  if (closed_) return;
  closed_ = true;
  ::shutdown(fd_, SHUT_RDWR);  // the serving thread owns and closes the fd
}

HttpTestServer::HttpTestServer(Handler handler) : handler_(std::move(handler)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) std::abort();
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 64) != 0) {
    std::abort();  // a test machine without a loopback interface is broken
  }
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

HttpTestServer::~HttpTestServer() {
  stop_ = true;
  accept_thread_.join();
  std::vector<std::thread> threads;
  {
    std::scoped_lock lock(mu_);
    for (int fd : conn_fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
  ::close(listen_fd_);
}

void HttpTestServer::SetHandler(Handler handler) {
  std::scoped_lock lock(mu_);
  handler_ = std::move(handler);
}

HttpTestServer::Handler HttpTestServer::CurrentHandler() const {
  std::scoped_lock lock(mu_);
  return handler_;
}

std::vector<HttpTestRequest> HttpTestServer::requests() const {
  std::scoped_lock lock(mu_);
  return requests_;
}

size_t HttpTestServer::Count(std::string_view method, std::string_view path_prefix) const {
  std::scoped_lock lock(mu_);
  size_t n = 0;
  for (const HttpTestRequest& r : requests_) {
    if (r.method == method && r.path.starts_with(path_prefix)) ++n;
  }
  return n;
}

void HttpTestServer::AcceptLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, kPollMs) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ++connections_;
    std::scoped_lock lock(mu_);
    conn_fds_.push_back(fd);
    threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void HttpTestServer::Serve(int fd) {
  std::string buffer;
  HttpTestConnection conn(fd);
  char chunk[16384];
  // Reads until `want` bytes are buffered or the stream ends; false on end/stop.
  auto fill = [&](size_t want) {
    while (buffer.size() < want) {
      if (stop_ || conn.closed()) return false;
      pollfd p{fd, POLLIN, 0};
      const int r = ::poll(&p, 1, kPollMs);
      if (r == 0) continue;
      if (r < 0 && errno == EINTR) continue;
      const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buffer.append(chunk, static_cast<size_t>(n));
    }
    return true;
  };
  while (!stop_ && !conn.closed()) {
    size_t end = buffer.find("\r\n\r\n");
    while (end == std::string::npos) {
      // A TLS ClientHello (record type 22): this is a plain-HTTP server; hang up at once
      // like a real server would fail the handshake.
      if (!buffer.empty() && buffer[0] == '\x16') goto done;
      if (buffer.size() > kMaxRequestBytes || !fill(buffer.size() + 1)) goto done;
      end = buffer.find("\r\n\r\n");
    }
    {
      HttpTestRequest req;
      if (!ParseHead(std::string_view(buffer).substr(0, end), &req)) break;
      buffer.erase(0, end + 4);
      const size_t length = std::strtoull(req.Header("content-length").c_str(), nullptr, 10);
      if (length > kMaxRequestBytes || !fill(length)) break;
      req.body = buffer.substr(0, length);
      buffer.erase(0, length);
      {
        std::scoped_lock lock(mu_);
        requests_.push_back(req);
      }
      Handler handler = CurrentHandler();
      if (handler) {
        handler(req, conn);
      } else {
        conn.Respond(500, {}, "no handler");
      }
    }
  }
done:
  std::scoped_lock lock(mu_);
  std::erase(conn_fds_, fd);
  ::close(fd);
}

namespace {

// Takes one from a *_count knob: true when this request is affected.
// Where the corrupt fault flips a byte: the middle of the body, or for a multipart/byteranges
// answer the middle of its first part's data (the framing stays intact, so the corruption
// reaches the chunk decoder as it would in a single-range answer).
size_t CorruptionOffset(const registry::HttpResponse& resp) {
  const size_t middle = resp.body.size() / 2;
  const std::string content_type = resp.Header("content-type");
  if (!registry::IsMultipartByteranges(content_type)) return middle;
  Result<std::string> boundary = registry::MultipartBoundary(content_type);
  if (!boundary.has_value()) return middle;
  Result<std::vector<registry::RangePart>> parts =
      registry::ParseMultipartByteranges(resp.body, *boundary);
  if (!parts.has_value() || parts->empty() || (*parts)[0].data.empty()) return middle;
  const std::string_view data = (*parts)[0].data;
  return static_cast<size_t>(data.data() - resp.body.data()) + data.size() / 2;
}

bool Consume(std::atomic<int>& count) {
  int n = count.load();
  while (n != 0) {
    if (n < 0) return true;
    if (count.compare_exchange_weak(n, n - 1)) return true;
  }
  return false;
}

// Sends head + body, pacing the body to `rate` bytes/s when rate > 0.
void SendPaced(HttpTestConnection& conn, const std::string& head, std::string_view body,
               int64_t rate) {
  conn.WriteRaw(head);
  constexpr size_t kPiece = 64 << 10;
  auto start = std::chrono::steady_clock::now();
  size_t sent = 0;
  while (sent < body.size() && !conn.closed()) {
    const size_t n = std::min(kPiece, body.size() - sent);
    conn.WriteRaw(body.substr(sent, n));
    sent += n;
    if (rate > 0) {
      auto due = start + std::chrono::microseconds(static_cast<int64_t>(
                             static_cast<double>(sent) * 1e6 / static_cast<double>(rate)));
      std::this_thread::sleep_until(due);
    }
  }
}

}  // namespace

HttpTestServer::Handler ProxyHandler(std::string upstream_url, std::shared_ptr<ProxyStats> stats) {
  return FaultyProxyHandler(std::move(upstream_url), std::move(stats), nullptr);
}

HttpTestServer::Handler FaultyProxyHandler(std::string upstream_url,
                                           std::shared_ptr<ProxyStats> stats,
                                           std::shared_ptr<ProxyFaults> faults) {
  auto client = std::make_shared<registry::HttpClient>();
  return [client, upstream = std::move(upstream_url), stats, faults](const HttpTestRequest& req,
                                                                     HttpTestConnection& conn) {
    ++stats->requests;
    const bool blob_get = req.method == "GET" && req.path.find("/blobs/") != std::string::npos;
    const std::string range = req.Header("range");
    if (faults != nullptr) {
      if (faults->unreachable.load()) {
        conn.Close();
        return;
      }
      if (const int ms = faults->delay_ms.load(); ms > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      }
      if (blob_get) {
        if (!range.empty()) ++faults->ranged_requests;
        if (range.find(',') != std::string::npos) {
          ++faults->multi_range_requests;
          if (faults->refuse_multi_range.load()) {
            ++faults->faults_injected;
            conn.Respond(400, {{"Content-Type", "text/plain"}}, "multiple ranges not supported");
            return;
          }
        }
        for (int i = 0; i < 2000 && faults->hang.load(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (Consume(faults->fail_count)) {
          ++faults->faults_injected;
          const int status = faults->fail_status.load();
          HeaderList headers = {{"Content-Type", "application/json"}};
          if (status == 429 || status == 503) headers.emplace_back("Retry-After", "0");
          conn.Respond(status, headers,
                       R"({"errors":[{"code":"UNAVAILABLE","message":"injected"}]})");
          return;
        }
      }
    }
    const bool whole_instead_of_range =
        faults != nullptr && blob_get && !range.empty() && faults->ignore_range.load();
    registry::HttpRequest out;
    out.method = req.method;
    out.url = upstream + req.target;
    out.body = req.body;
    out.connect_timeout = std::chrono::milliseconds(5000);
    out.total_timeout = std::chrono::milliseconds(60000);
    out.max_body_bytes = size_t{1} << 31;
    for (const auto& [name, value] : req.headers) {
      if (name == "host" || name == "connection" || name == "content-length" ||
          name == "transfer-encoding" || name == "expect") {
        continue;
      }
      if (name == "range" && whole_instead_of_range) continue;
      out.headers.push_back(name + ": " + value);
    }
    auto resp = client->Do(out);
    if (!resp.has_value()) {
      conn.Respond(502, {}, resp.error().ToString());
      return;
    }
    HeaderList headers;
    for (const auto& [name, value] : resp->headers) {
      if (name == "content-length" || name == "transfer-encoding" || name == "connection" ||
          name == "www-authenticate") {
        continue;
      }
      headers.emplace_back(name, value);
    }
    for (const std::string& value : resp->www_authenticate) {
      headers.emplace_back("www-authenticate", value);
    }
    const bool ok_blob = blob_get && resp->status >= 200 && resp->status < 300;
    if (ok_blob) {
      ++stats->blob_gets;
      stats->blob_bytes += resp->body.size();
    }
    if (req.method == "HEAD") {
      // Relay the announced length of a HEAD answer.
      const std::string length = resp->Header("content-length");
      conn.WriteRaw("HTTP/1.1 " + std::to_string(resp->status) + " Relayed\r\n");
      for (const auto& [name, value] : headers) conn.WriteRaw(name + ": " + value + "\r\n");
      conn.WriteRaw("Content-Length: " + (length.empty() ? std::string("0") : length) + "\r\n\r\n");
      return;
    }
    if (faults != nullptr && ok_blob) {
      if (!resp->body.empty() && Consume(faults->corrupt_count)) {
        ++faults->faults_injected;
        const size_t at = CorruptionOffset(*resp);
        resp->body[at] = static_cast<char>(resp->body[at] ^ 0x5a);
      }
      if (Consume(faults->drop_count)) {
        ++faults->faults_injected;
        conn.RespondTruncated(static_cast<int>(resp->status), headers,
                              std::string_view(resp->body).substr(0, resp->body.size() / 2),
                              resp->body.size());
        return;
      }
      const int64_t rate = faults->rate_bytes_per_s.load();
      if (rate > 0) {
        std::string head = "HTTP/1.1 " + std::to_string(resp->status) + " Relayed\r\n";
        for (const auto& [name, value] : headers) head += name + ": " + value + "\r\n";
        head += "Content-Length: " + std::to_string(resp->body.size()) + "\r\n\r\n";
        SendPaced(conn, head, resp->body, rate);
        return;
      }
    }
    conn.Respond(static_cast<int>(resp->status), headers, resp->body);
  };
}

}  // namespace imgfs::testing
