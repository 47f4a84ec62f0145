// imgfs — RemoteSource against a real docker-registry (plain, TLS, htpasswd) and against
// the scripted HttpTestServer for faults a real registry does not produce (5xx, 429, cut
// bodies, 200 instead of 206, wrong bytes, cross-host redirects, an unreachable host).
#include "registry/remote_source.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "fs/image_ops/index_publish.h"
#include "registry/digest.h"
#include "registry/media_types.h"
#include "registry/multipart_ranges.h"
#include "tests/support/http_test_server.h"
#include "tests/support/image_builder.h"
#include "tests/support/registry_server.h"
#include "tests/support/token_server.h"

namespace imgfs::registry {
namespace {

using imgfs::testing::HttpTestConnection;
using imgfs::testing::HttpTestRequest;
using imgfs::testing::HttpTestServer;
using imgfs::testing::RegistryAccess;
using imgfs::testing::RegistryServer;
using imgfs::testing::RegistryServerOptions;
using Clock = std::chrono::steady_clock;

// The image fixtures made by real tools (tests/fixtures/README.md): $IMGFS_FIXTURES_DIR, else
// the directory CMake names.
std::string FixturesDir() {
  const char* dir = std::getenv("IMGFS_FIXTURES_DIR");  // NOLINT(concurrency-mt-unsafe)
  if (dir != nullptr && *dir != '\0') return dir;
  return IMGFS_FIXTURES_DIR;
}

RemoteSourceOptions FastOptions() {
  RemoteSourceOptions o;
  o.certs_dir = "";  // never the machine's /etc/docker/certs.d
  o.connect_timeout = std::chrono::milliseconds(2000);
  o.request_timeout = std::chrono::milliseconds(10000);
  o.low_speed_time = std::chrono::seconds(5);
  o.max_attempts = 3;
  o.base_backoff = std::chrono::milliseconds(10);
  o.max_backoff = std::chrono::milliseconds(200);
  return o;
}

// Deterministic incompressible-ish bytes.
std::string PseudoRandom(size_t n, uint32_t seed) {
  std::string out(n, '\0');
  uint32_t x = seed;
  for (char& c : out) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

// Wraps a handler so that the /v2/ ping answers like a registry.
HttpTestServer::Handler Registry(HttpTestServer::Handler inner) {
  return [inner = std::move(inner)](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/") {
      conn.Respond(200, {{"Docker-Distribution-API-Version", "registry/2.0"}}, "{}");
      return;
    }
    inner(req, conn);
  };
}

std::string Collect(RemoteSource& source, const Digest& digest, int64_t size, Status* status) {
  std::string out;
  *status = source.FetchBlob(digest, size, [&](std::string_view chunk) {
    out.append(chunk);
    return Status::Ok();
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Fault injection with the scripted server.

TEST(RemoteSourceFaultTest, ManifestVerifiedAgainstDigestAndHeader) {
  const std::string manifest =
      R"({"schemaVersion":2,"mediaType":")" + std::string(media::kOciManifest) + R"("})";
  const Digest good = Digest::Sha256Of(manifest);
  const Digest other = Digest::Sha256Of("something else");
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/demo/app/manifests/good" ||
        req.path == "/v2/demo/app/manifests/" + good.String()) {
      conn.Respond(200,
                   {{"Content-Type", std::string(media::kOciManifest) + "; charset=utf-8"},
                    {"Docker-Content-Digest", good.String()}},
                   manifest);
    } else if (req.path == "/v2/demo/app/manifests/lying") {
      conn.Respond(200, {{"Docker-Content-Digest", other.String()}}, manifest);
    } else if (req.path == "/v2/demo/app/manifests/" + other.String()) {
      conn.Respond(200, {}, manifest);  // bytes of another manifest under this digest
    } else {
      conn.Respond(404, {{"Content-Type", "application/json"}},
                   R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})");
    }
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());

  auto by_tag = source->GetManifest("good");
  ASSERT_TRUE(by_tag.has_value()) << by_tag.error().ToString();
  EXPECT_EQ(by_tag->bytes, manifest);
  EXPECT_EQ(by_tag->digest, good);
  EXPECT_EQ(by_tag->media_type, media::kOciManifest);
  EXPECT_EQ(server.requests().back().Header("accept"), media::kManifestAccept);
  EXPECT_EQ(source->BaseUrl(), server.url());

  auto by_digest = source->GetManifest(good.String());
  ASSERT_TRUE(by_digest.has_value()) << by_digest.error().ToString();
  EXPECT_EQ(by_digest->digest, good);

  auto lying = source->GetManifest("lying");
  ASSERT_FALSE(lying.has_value());
  EXPECT_EQ(lying.error().code(), StatusCode::kCorrupt) << lying.error().ToString();
  EXPECT_NE(lying.error().message().find("Docker-Content-Digest"), std::string::npos);

  auto swapped = source->GetManifest(other.String());
  ASSERT_FALSE(swapped.has_value());
  EXPECT_EQ(swapped.error().code(), StatusCode::kCorrupt);

  auto missing = source->GetManifest("nope");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  EXPECT_NE(
      missing.error().message().find("manifest unknown: " + server.host_port() + "/demo/app:nope"),
      std::string::npos)
      << missing.error().message();
  EXPECT_NE(missing.error().message().find("registry " + server.host_port()), std::string::npos);
  // A 404 is an answer, not a failure: asked once.
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/manifests/nope"), 1u);
}

TEST(RemoteSourceFaultTest, RetriesServerErrorsThenSucceeds) {
  const std::string blob = PseudoRandom(5000, 1);
  const Digest digest = Digest::Sha256Of(blob);
  std::atomic<int> calls{0};
  HttpTestServer server(Registry([&](const HttpTestRequest&, HttpTestConnection& conn) {
    if (++calls <= 2) {
      conn.Respond(calls == 1 ? 500 : 502, {}, "oops");
    } else {
      conn.Respond(200, {}, blob);
    }
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  Status st;
  EXPECT_EQ(Collect(*source, digest, static_cast<int64_t>(blob.size()), &st), blob);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(calls.load(), 3);
}

TEST(RemoteSourceFaultTest, GivesUpAfterMaxAttemptsOnPersistent503) {
  HttpTestServer server(Registry([&](const HttpTestRequest&, HttpTestConnection& conn) {
    conn.Respond(503, {}, R"({"errors":[{"code":"UNAVAILABLE","message":"down"}]})");
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  auto m = source->GetManifest("latest");
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(m.error().message().find("3 attempts"), std::string::npos) << m.error().message();
  EXPECT_NE(m.error().message().find("UNAVAILABLE: down"), std::string::npos);
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/manifests/latest"), 3u);
}

TEST(RemoteSourceFaultTest, HonoursRetryAfterUpToTheCap) {
  const std::string manifest = "{}";
  std::atomic<int> calls{0};
  HttpTestServer server(Registry([&](const HttpTestRequest&, HttpTestConnection& conn) {
    if (++calls == 1) {
      conn.Respond(429, {{"Retry-After", "1"}}, "slow down");
    } else {
      conn.Respond(200, {}, manifest);
    }
  }));
  RemoteSourceOptions options = FastOptions();
  options.max_backoff = std::chrono::milliseconds(400);  // caps the 1 s Retry-After
  auto source = RemoteSource::Create(server.host_port(), "demo/app", options);
  ASSERT_TRUE(source->Ping().ok());
  const auto start = Clock::now();
  auto m = source->GetManifest("latest");
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_GE(elapsed, std::chrono::milliseconds(390));   // not the 10 ms base backoff
  EXPECT_LT(elapsed, std::chrono::milliseconds(2000));  // capped: far below Retry-After
}

TEST(RemoteSourceFaultTest, BrokenDownloadResumesWithRange) {
  const std::string blob = PseudoRandom(300000, 2);
  const Digest digest = Digest::Sha256Of(blob);
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    const std::string range = req.Header("range");
    if (range.empty()) {
      conn.RespondTruncated(200, {}, std::string_view(blob).substr(0, 100000), blob.size());
      return;
    }
    const size_t from = std::stoul(range.substr(std::string("bytes=").size()));
    conn.Respond(
        206,
        {{"Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(blob.size() - 1) +
                               "/" + std::to_string(blob.size())}},
        std::string_view(blob).substr(from));
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  Status st;
  EXPECT_EQ(Collect(*source, digest, static_cast<int64_t>(blob.size()), &st), blob);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto requests = server.requests();
  ASSERT_EQ(server.Count("GET", "/v2/demo/app/blobs/"), 2u);
  EXPECT_EQ(requests.back().Header("range"), "bytes=100000-");
}

TEST(RemoteSourceFaultTest, ResumeAnsweredWith200SkipsWhatTheSinkHas) {
  const std::string blob = PseudoRandom(200000, 3);
  const Digest digest = Digest::Sha256Of(blob);
  std::atomic<int> calls{0};
  HttpTestServer server(Registry([&](const HttpTestRequest&, HttpTestConnection& conn) {
    if (++calls == 1) {
      conn.RespondTruncated(200, {}, std::string_view(blob).substr(0, 70000), blob.size());
    } else {
      conn.Respond(200, {}, blob);  // ignores Range
    }
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  Status st;
  // The sink sees every byte exactly once, in order.
  EXPECT_EQ(Collect(*source, digest, -1, &st), blob);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(server.requests().back().Header("range"), "bytes=70000-");
}

TEST(RemoteSourceFaultTest, WrongBytesAreCorrupt) {
  const std::string blob = PseudoRandom(4096, 4);
  std::string wrong = blob;
  wrong[100] ^= 1;
  const Digest digest = Digest::Sha256Of(blob);
  HttpTestServer server(Registry(
      [&](const HttpTestRequest&, HttpTestConnection& conn) { conn.Respond(200, {}, wrong); }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  Status st;
  Collect(*source, digest, static_cast<int64_t>(blob.size()), &st);
  EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.ToString();
  EXPECT_NE(st.message().find(digest.String()), std::string::npos);
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/blobs/"), 1u);  // not retried

  // A body longer than announced is refused as soon as it overflows.
  Collect(*source, digest, 1000, &st);
  EXPECT_EQ(st.code(), StatusCode::kCorrupt) << st.ToString();
}

TEST(RemoteSourceFaultTest, SinkErrorStopsTheDownloadWithoutRetry) {
  const std::string blob = PseudoRandom(100000, 5);
  HttpTestServer server(Registry(
      [&](const HttpTestRequest&, HttpTestConnection& conn) { conn.Respond(200, {}, blob); }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  Status st = source->FetchBlob(Digest::Sha256Of(blob), -1,
                                [](std::string_view) { return Status::NoSpace("disk full"); });
  EXPECT_EQ(st.code(), StatusCode::kNoSpace);
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/blobs/"), 1u);
}

TEST(RemoteSourceFaultTest, RedirectToOtherHostDropsAuthorization) {
  const std::string blob = PseudoRandom(10000, 6);
  const Digest digest = Digest::Sha256Of(blob);
  HttpTestServer storage([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/signed/blob") {
      conn.Respond(200, {}, blob);
    } else {
      conn.Respond(404);
    }
  });
  HttpTestServer registry(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.Header("authorization").empty()) {
      conn.Respond(401, {{"WWW-Authenticate", "Basic realm=\"test\""}});
      return;
    }
    // Via localhost so the host differs from 127.0.0.1 even on the same machine.
    conn.Respond(307, {{"Location", "http://localhost:" + std::to_string(storage.port()) +
                                        "/signed/blob?X-Amz-Signature=abc"}});
  }));
  RemoteSourceOptions options = FastOptions();
  options.credential = Credential{"alice", "secret", ""};
  auto source = RemoteSource::Create(registry.host_port(), "demo/app", options);
  Status st;
  EXPECT_EQ(Collect(*source, digest, static_cast<int64_t>(blob.size()), &st), blob);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto at_storage = storage.requests();
  ASSERT_EQ(at_storage.size(), 1u);
  EXPECT_FALSE(at_storage[0].HasHeader("authorization"));
  EXPECT_EQ(at_storage[0].query, "X-Amz-Signature=abc");
  // The registry itself did get the credential.
  auto at_registry = registry.requests();
  ASSERT_FALSE(at_registry.empty());
  EXPECT_TRUE(at_registry.back().Header("authorization").starts_with("Basic "));

  // Range reads of the same blob reuse the signed URL for a while: no registry hop.
  const size_t registry_blob_gets = registry.Count("GET", "/v2/demo/app/blobs/");
  for (int i = 0; i < 2; ++i) {
    auto part = source->ReadBlobRange(digest, ByteRange{100, 50});
    ASSERT_TRUE(part.has_value()) << part.error().ToString();
    EXPECT_EQ(*part, blob.substr(100, 50));
  }
  EXPECT_EQ(registry.Count("GET", "/v2/demo/app/blobs/"), registry_blob_gets);
  EXPECT_EQ(storage.requests().size(), 3u);
  for (const auto& r : storage.requests()) EXPECT_FALSE(r.HasHeader("authorization"));
}

TEST(RemoteSourceFaultTest, ExpiredSignedUrlIsRenewedAtTheRegistry) {
  const std::string blob = PseudoRandom(20000, 8);
  const Digest digest = Digest::Sha256Of(blob);
  std::atomic<int> signatures{0};
  std::atomic<int> valid_signature{1};
  HttpTestServer storage([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.query == "sig=" + std::to_string(valid_signature.load())) {
      conn.Respond(200, {}, blob);
    } else {
      conn.Respond(403, {}, "<Error><Code>AccessDenied</Code></Error>");
    }
  });
  HttpTestServer registry(Registry([&](const HttpTestRequest&, HttpTestConnection& conn) {
    conn.Respond(307, {{"Location", "http://localhost:" + std::to_string(storage.port()) +
                                        "/b?sig=" + std::to_string(++signatures)}});
  }));
  auto source = RemoteSource::Create(registry.host_port(), "demo/app", FastOptions());
  auto first = source->ReadBlobRange(digest, ByteRange{0, 10});
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  EXPECT_EQ(*first, blob.substr(0, 10));
  EXPECT_EQ(signatures.load(), 1);

  // The remembered URL expires: storage refuses it, the registry signs a new one.
  valid_signature = 2;
  Status st;
  EXPECT_EQ(Collect(*source, digest, static_cast<int64_t>(blob.size()), &st), blob);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(signatures.load(), 2);

  // Storage keeps refusing every signature: a bounded number of tries, then an error.
  valid_signature = -1;
  auto refused = source->ReadBlobRange(digest, ByteRange{0, 10});
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable) << refused.error().ToString();
  EXPECT_NE(refused.error().message().find("refused access"), std::string::npos);
  EXPECT_EQ(refused.error().message().find("sig="), std::string::npos);
  EXPECT_EQ(signatures.load(), 2 + 3);  // max_attempts fresh signatures
}

TEST(RemoteSourceFaultTest, RedirectLoopIsBounded) {
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    conn.Respond(302, {{"Location", req.path + "x"}});
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  auto m = source->GetManifest("latest");
  ASSERT_FALSE(m.has_value());
  EXPECT_NE(m.error().message().find("redirects"), std::string::npos) << m.error().ToString();
  EXPECT_EQ(server.requests().size(), 1u + 1u + RemoteSource::kMaxRedirects);  // ping + hops
}

TEST(RemoteSourceFaultTest, RangeReadsHandle206And200) {
  const std::string blob = PseudoRandom(50000, 7);
  const Digest digest = Digest::Sha256Of(blob);
  std::atomic<bool> honour_range{true};
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    const std::string range = req.Header("range");
    if (!honour_range || range.empty()) {
      conn.Respond(200, {}, blob);
      return;
    }
    const size_t dash = range.find('-');
    const size_t from = std::stoul(range.substr(6, dash - 6));
    size_t to = std::stoul(range.substr(dash + 1));
    if (from >= blob.size()) {
      conn.Respond(416, {{"Content-Range", "bytes */" + std::to_string(blob.size())}});
      return;
    }
    to = std::min(to, blob.size() - 1);
    conn.Respond(206,
                 {{"Content-Range", "bytes " + std::to_string(from) + "-" + std::to_string(to) +
                                        "/" + std::to_string(blob.size())}},
                 std::string_view(blob).substr(from, to - from + 1));
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  auto part = source->ReadBlobRange(digest, ByteRange{1234, 5000});
  ASSERT_TRUE(part.has_value()) << part.error().ToString();
  EXPECT_EQ(*part, blob.substr(1234, 5000));
  EXPECT_EQ(server.requests().back().Header("range"), "bytes=1234-6233");

  auto tail = source->ReadBlobRange(digest, ByteRange{49000, 5000});  // past the end
  ASSERT_TRUE(tail.has_value()) << tail.error().ToString();
  EXPECT_EQ(*tail, blob.substr(49000));

  auto beyond = source->ReadBlobRange(digest, ByteRange{60000, 10});
  ASSERT_TRUE(beyond.has_value()) << beyond.error().ToString();
  EXPECT_TRUE(beyond->empty());

  honour_range = false;  // a pull-through cache that ignores Range
  auto sliced = source->ReadBlobRange(digest, ByteRange{30000, 7000});
  ASSERT_TRUE(sliced.has_value()) << sliced.error().ToString();
  EXPECT_EQ(*sliced, blob.substr(30000, 7000));
}

// The ranges of a "Range: bytes=a-b,c-d" header (closed intervals), empty if unparsable.
std::vector<std::pair<size_t, size_t>> ParseRangeHeader(const std::string& header) {
  std::vector<std::pair<size_t, size_t>> out;
  if (!header.starts_with("bytes=")) return out;
  std::string rest = header.substr(6);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string spec = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    const size_t dash = spec.find('-');
    if (dash == std::string::npos) return {};
    out.emplace_back(std::stoul(spec.substr(0, dash)), std::stoul(spec.substr(dash + 1)));
  }
  return out;
}

// How a scripted server answers a multi-range request.
enum class MultiMode {
  kReversed,     // multipart/byteranges, parts in reverse order
  kMerged,       // multipart/byteranges, one part from the lowest to the highest byte
  kSinglePart,   // 206 with one plain part covering every range
  kWhole,        // 200 with the whole blob
  kMissingPart,  // multipart/byteranges without the last range
  kRefuse400,
  kRefuse501,
};

// Answers blob GETs for `blob`: single ranges with 206, several as `mode` says.
void AnswerRanges(const std::string& blob, MultiMode mode, const HttpTestRequest& req,
                  HttpTestConnection& conn) {
  const std::string header = req.Header("range");
  auto ranges = ParseRangeHeader(header);
  const std::string total = "/" + std::to_string(blob.size());
  auto cr = [&](size_t a, size_t b) {
    return "bytes " + std::to_string(a) + "-" + std::to_string(b) + total;
  };
  for (auto& [a, b] : ranges) b = std::min(b, blob.size() - 1);  // as servers do
  if (ranges.empty()) {
    conn.Respond(200, {}, blob);
    return;
  }
  if (ranges.size() == 1) {
    const auto [a, b] = ranges[0];
    conn.Respond(206, {{"Content-Range", cr(a, b)}}, std::string_view(blob).substr(a, b - a + 1));
    return;
  }
  size_t lo = blob.size();
  size_t hi = 0;
  for (const auto& [a, b] : ranges) {
    lo = std::min(lo, a);
    hi = std::max(hi, b);
  }
  std::vector<std::pair<size_t, size_t>> parts = ranges;
  switch (mode) {
    case MultiMode::kRefuse400:
      conn.Respond(400, {}, "multiple ranges not supported");
      return;
    case MultiMode::kRefuse501:
      conn.Respond(501, {}, "not implemented");
      return;
    case MultiMode::kWhole:
      conn.Respond(200, {}, blob);
      return;
    case MultiMode::kSinglePart:
      conn.Respond(206, {{"Content-Range", cr(lo, hi)}},
                   std::string_view(blob).substr(lo, hi - lo + 1));
      return;
    case MultiMode::kReversed:
      std::reverse(parts.begin(), parts.end());
      break;
    case MultiMode::kMerged:
      parts = {{lo, hi}};
      break;
    case MultiMode::kMissingPart:
      parts.pop_back();
      break;
  }
  const std::string boundary = "c0ffee42";
  std::string body;
  for (const auto& [a, b] : parts) {
    body += "\r\n--" + boundary + "\r\nContent-Type: application/octet-stream\r\n" +
            "Content-Range: " + cr(a, b) + "\r\n\r\n" + blob.substr(a, b - a + 1);
  }
  body += "\r\n--" + boundary + "--\r\n";
  conn.Respond(206, {{"Content-Type", "multipart/byteranges; boundary=" + boundary}}, body);
}

std::vector<std::string> Slices(const std::string& blob, const std::vector<ByteRange>& ranges) {
  std::vector<std::string> out;
  for (const ByteRange& r : ranges) {
    out.push_back(r.offset >= blob.size() ? std::string() : blob.substr(r.offset, r.length));
  }
  return out;
}

size_t CountMulti(const HttpTestServer& server) {
  size_t n = 0;
  for (const auto& r : server.requests()) {
    if (r.Header("range").find(',') != std::string::npos) ++n;
  }
  return n;
}

TEST(RemoteSourceFaultTest, MultiRangeAnswersMergedReorderedSinglePartOrWholeAreSliced) {
  RemoteSource::ForgetMultiRangeRefusals();
  const std::string blob = PseudoRandom(60000, 11);
  const Digest digest = Digest::Sha256Of(blob);
  const std::vector<ByteRange> ranges = {{30000, 500}, {100, 50}, {0, 0}, {120, 100}, {59990, 50}};
  for (MultiMode mode :
       {MultiMode::kReversed, MultiMode::kMerged, MultiMode::kSinglePart, MultiMode::kWhole}) {
    HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
      AnswerRanges(blob, mode, req, conn);
    }));
    auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
    uint64_t requests = 0;
    auto got = source->ReadBlobRanges(digest, ranges, &requests);
    ASSERT_TRUE(got.has_value()) << static_cast<int>(mode) << ": " << got.error().ToString();
    EXPECT_EQ(*got, Slices(blob, ranges)) << static_cast<int>(mode);
    EXPECT_EQ(requests, 1u) << static_cast<int>(mode);
    EXPECT_EQ(server.Count("GET", "/v2/demo/app/blobs/"), 1u) << static_cast<int>(mode);
    EXPECT_EQ(server.requests().back().Header("range"),
              "bytes=30000-30499,100-149,120-219,59990-60039");
    // A 200 serves the call; it is remembered as a multi-range refusal, not as a
    // registry that ignores Range (single ranges are still honoured).
    EXPECT_EQ(source->multi_range_refused(), mode == MultiMode::kWhole) << static_cast<int>(mode);
    EXPECT_FALSE(source->ignores_ranges()) << static_cast<int>(mode);
    RemoteSource::ForgetMultiRangeRefusals();
  }
}

TEST(RemoteSourceFaultTest, MultiRangeWholeBlobAnswerIsARefusalNotRangeIgnored) {
  RemoteSource::ForgetMultiRangeRefusals();
  const std::string blob = PseudoRandom(200000, 14);
  const Digest digest = Digest::Sha256Of(blob);
  // Overlapping ranges, out of order, the last one past the end of the blob.
  const std::vector<ByteRange> ranges = {{5000, 100}, {10, 20}, {20, 30}, {199990, 100}};
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    AnswerRanges(blob, MultiMode::kWhole, req, conn);
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  uint64_t requests = 0;
  auto got = source->ReadBlobRanges(digest, ranges, &requests);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, Slices(blob, ranges));
  EXPECT_EQ((*got)[3].size(), 10u);
  EXPECT_EQ(requests, 1u);  // the 200 served this call
  EXPECT_EQ(CountMulti(server), 1u);
  EXPECT_TRUE(source->multi_range_refused());
  EXPECT_FALSE(source->ignores_ranges());

  // A single range is still asked as a range (and answered 206).
  auto one = source->ReadBlobRange(digest, ByteRange{150000, 64});
  ASSERT_TRUE(one.has_value()) << one.error().ToString();
  EXPECT_EQ(*one, blob.substr(150000, 64));
  EXPECT_EQ(server.requests().back().Header("range"), "bytes=150000-150063");
  EXPECT_FALSE(source->ignores_ranges());

  // The refusal is remembered for the host: later calls, from this source or another one,
  // go range by range and never send a multi-range request again.
  const std::vector<ByteRange> later = {{100, 10}, {90000, 20}, {180000, 30}};
  for (const char* repo : {"demo/app", "other/repo"}) {
    auto again = RemoteSource::Create(server.host_port(), repo, FastOptions());
    EXPECT_TRUE(again->multi_range_refused()) << repo;
    const size_t before = server.requests().size();
    requests = 0;
    got = again->ReadBlobRanges(digest, later, &requests);
    ASSERT_TRUE(got.has_value()) << repo << ": " << got.error().ToString();
    EXPECT_EQ(*got, Slices(blob, later)) << repo;
    EXPECT_EQ(requests, later.size()) << repo;
    std::vector<std::string> asked;  // Range headers of the blob GETs of this call
    const std::vector<HttpTestRequest> seen = server.requests();  // a copy
    for (size_t i = before; i < seen.size(); ++i) {
      const HttpTestRequest& r = seen[i];
      if (r.path.find("/blobs/") != std::string::npos) asked.push_back(r.Header("range"));
    }
    EXPECT_EQ(asked, (std::vector<std::string>{"bytes=100-109", "bytes=90000-90019",
                                               "bytes=180000-180029"}))
        << repo;
    EXPECT_FALSE(again->ignores_ranges()) << repo;
  }
  EXPECT_EQ(CountMulti(server), 1u);
  RemoteSource::ForgetMultiRangeRefusals();
}

TEST(RemoteSourceFaultTest, MultiRangeRefusalFallsBackAndIsRememberedPerRegistry) {
  RemoteSource::ForgetMultiRangeRefusals();
  const std::string blob = PseudoRandom(40000, 12);
  const Digest digest = Digest::Sha256Of(blob);
  const std::vector<ByteRange> ranges = {{1000, 10}, {5000, 20}, {39000, 1000}};
  // Each server stays up until the end so that none gets an earlier one's port.
  std::vector<std::unique_ptr<HttpTestServer>> servers;
  for (MultiMode mode : {MultiMode::kRefuse400, MultiMode::kRefuse501, MultiMode::kMissingPart}) {
    servers.push_back(std::make_unique<HttpTestServer>(
        Registry([&blob, mode](const HttpTestRequest& req, HttpTestConnection& conn) {
          AnswerRanges(blob, mode, req, conn);
        })));
    HttpTestServer& server = *servers.back();
    auto first = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
    EXPECT_FALSE(first->multi_range_refused());
    uint64_t requests = 0;
    auto got = first->ReadBlobRanges(digest, ranges, &requests);
    ASSERT_TRUE(got.has_value()) << static_cast<int>(mode) << ": " << got.error().ToString();
    EXPECT_EQ(*got, Slices(blob, ranges));
    EXPECT_EQ(requests, 1u + ranges.size());  // the refused one, then one per range
    EXPECT_EQ(CountMulti(server), 1u);
    EXPECT_TRUE(first->multi_range_refused());
    // Another source (another mount, another repository) of the same registry: single
    // ranges straight away.
    auto second = RemoteSource::Create(server.host_port(), "other/repo", FastOptions());
    EXPECT_TRUE(second->multi_range_refused());
    requests = 0;
    got = second->ReadBlobRanges(digest, ranges, &requests);
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    EXPECT_EQ(*got, Slices(blob, ranges));
    EXPECT_EQ(requests, ranges.size());
    EXPECT_EQ(CountMulti(server), 1u) << static_cast<int>(mode);
  }
}

TEST(RemoteSourceFaultTest, MultiRangeFollowsTheCachedRedirect) {
  RemoteSource::ForgetMultiRangeRefusals();
  const std::string blob = PseudoRandom(30000, 13);
  const Digest digest = Digest::Sha256Of(blob);
  HttpTestServer storage([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    EXPECT_FALSE(req.HasHeader("authorization"));
    AnswerRanges(blob, MultiMode::kReversed, req, conn);
  });
  HttpTestServer registry(Registry([&](const HttpTestRequest&, HttpTestConnection& conn) {
    conn.Respond(307, {{"Location", "http://localhost:" + std::to_string(storage.port()) +
                                        "/signed/blob?sig=1"}});
  }));
  auto source = RemoteSource::Create(registry.host_port(), "demo/app", FastOptions());
  const std::vector<ByteRange> ranges = {{10, 10}, {20000, 30}};
  for (int i = 0; i < 3; ++i) {
    uint64_t requests = 0;
    auto got = source->ReadBlobRanges(digest, ranges, &requests);
    ASSERT_TRUE(got.has_value()) << got.error().ToString();
    EXPECT_EQ(*got, Slices(blob, ranges));
    EXPECT_EQ(requests, 1u);
  }
  EXPECT_EQ(registry.Count("GET", "/v2/demo/app/blobs/"), 1u);  // later calls skip the hop
  EXPECT_EQ(CountMulti(storage), 3u);
}

TEST(RemoteSourceFaultTest, ManyRangesAreSplitOverRequests) {
  RemoteSource::ForgetMultiRangeRefusals();
  const std::string blob = PseudoRandom(100000, 14);
  const Digest digest = Digest::Sha256Of(blob);
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    AnswerRanges(blob, MultiMode::kReversed, req, conn);
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  std::vector<ByteRange> ranges;
  for (uint64_t i = 0; i < RemoteSource::kMaxRangesPerRequest + 5; ++i) {
    ranges.push_back({i * 1000, 17});
  }
  uint64_t requests = 0;
  auto got = source->ReadBlobRanges(digest, ranges, &requests);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, Slices(blob, ranges));
  EXPECT_EQ(requests, 2u);
  EXPECT_EQ(CountMulti(server), 2u);
}

TEST(RemoteSourceFaultTest, ListTagsFollowsLinkPagination) {
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.query.find("last=b") != std::string::npos) {
      conn.Respond(200, {}, R"({"name":"demo/app","tags":["c","a2"]})");
    } else {
      conn.Respond(200, {{"Link", "</v2/demo/app/tags/list?last=b&n=2>; rel=\"next\""}},
                   R"({"name":"demo/app","tags":["b","a"]})");
    }
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  auto tags = source->ListTags();
  ASSERT_TRUE(tags.has_value()) << tags.error().ToString();
  EXPECT_EQ(*tags, (std::vector<std::string>{"a", "a2", "b", "c"}));
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/tags/list"), 2u);
}

TEST(RemoteSourceFaultTest, SlowServerTimesOutAndRetries) {
  HttpTestServer server(Registry([&](const HttpTestRequest&, HttpTestConnection& conn) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    conn.Respond(200, {}, "{}");
  }));
  RemoteSourceOptions options = FastOptions();
  options.request_timeout = std::chrono::milliseconds(150);
  options.max_attempts = 2;
  auto source = RemoteSource::Create(server.host_port(), "demo/app", options);
  auto m = source->GetManifest("latest");
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/manifests/latest"), 2u);
}

TEST(RemoteSourceFaultTest, UnreachableRegistryFailsInBoundedTime) {
  // A bound socket that never listens: connections are refused at once.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string host = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  auto source = RemoteSource::Create(host, "demo/app", FastOptions());
  const auto start = Clock::now();
  auto m = source->GetManifest("latest");
  const auto elapsed = Clock::now() - start;
  ::close(fd);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(m.error().message().find(host), std::string::npos) << m.error().message();
  EXPECT_LT(elapsed, std::chrono::seconds(3));

  // A non-loopback address that drops packets (TEST-NET-1): bounded by connect_timeout.
  RemoteSourceOptions options = FastOptions();
  options.connect_timeout = std::chrono::milliseconds(200);
  options.max_attempts = 2;
  auto blackhole = RemoteSource::Create("192.0.2.1:443", "demo/app", options);
  const auto start2 = Clock::now();
  Status ping = blackhole->Ping();
  EXPECT_EQ(ping.code(), StatusCode::kUnavailable);
  EXPECT_LT(Clock::now() - start2, std::chrono::milliseconds(2000));
}

TEST(RemoteSourceFaultTest, DescribeNamesRegistryAndRepository) {
  auto source = RemoteSource::Create("Registry.Example:5000", "team/app", FastOptions());
  EXPECT_EQ(source->Describe(), "registry registry.example:5000, repository team/app");
  auto ref = Reference::Parse("alpine:3.20");
  ASSERT_TRUE(ref.has_value());
  auto hub = RemoteSource::Create(*ref, FastOptions());
  EXPECT_EQ(hub->Describe(), "registry registry-1.docker.io, repository library/alpine");
}

// ---------------------------------------------------------------------------------------
// Against a real docker-registry.

struct PushedImage {
  std::string manifest;
  Digest manifest_digest;
  std::vector<std::pair<Digest, int64_t>> blobs;  // config + layers
};

// Pushes `layout:latest` as `name:tag` and reads back what the layout holds.
Result<PushedImage> PushAndDescribe(const RegistryServer& reg, const std::string& layout,
                                    const std::string& name_tag,
                                    const imgfs::testing::PushOptions& push = {}) {
  IMGFS_RETURN_IF_ERROR(reg.PushOciLayout(layout, "latest", name_tag, push));
  IMGFS_ASSIGN_OR_RETURN(std::string index_text, ReadFile(layout + "/index.json"));
  nlohmann::json index = nlohmann::json::parse(index_text, nullptr, false);
  if (index.is_discarded()) return Status::Corrupt("index.json");
  IMGFS_ASSIGN_OR_RETURN(Digest md,
                         Digest::Parse(index["manifests"][0]["digest"].get<std::string>()));
  PushedImage out;
  out.manifest_digest = md;
  IMGFS_ASSIGN_OR_RETURN(out.manifest, ReadFile(layout + "/blobs/sha256/" + md.hex()));
  nlohmann::json m = nlohmann::json::parse(out.manifest, nullptr, false);
  if (m.is_discarded()) return Status::Corrupt("manifest");
  std::vector<nlohmann::json> descs = {m["config"]};
  for (const auto& l : m["layers"]) descs.push_back(l);
  for (const auto& d : descs) {
    IMGFS_ASSIGN_OR_RETURN(Digest bd, Digest::Parse(d["digest"].get<std::string>()));
    out.blobs.emplace_back(bd, d["size"].get<int64_t>());
  }
  return out;
}

class RemoteSourceRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto reg = RegistryServer::Start();
    if (!reg.has_value()) {
      start_error_ = new std::string(reg.error().ToString());
      return;
    }
    registry_ = reg->release();
    layout_dir_ = new imgfs::testing::TempDir();
    imgfs::testing::ImageBuilder builder(layout_dir_->path() + "/layout");
    auto image = builder.Add(
        imgfs::testing::SimpleImage({{"big.bin", PseudoRandom(400000, 9)}, {"a.txt", "hello"}}),
        "latest");
    if (!image.has_value()) {
      start_error_ = new std::string(image.error().ToString());
      return;
    }
    auto pushed = PushAndDescribe(*registry_, builder.dir(), "demo/app:latest");
    if (!pushed.has_value()) {
      start_error_ = new std::string(pushed.error().ToString());
      return;
    }
    image_ = new PushedImage(std::move(*pushed));
    Status second = registry_->PushOciLayout(builder.dir(), "latest", "demo/app:v2");
    if (!second.ok()) start_error_ = new std::string(second.ToString());
  }
  static void TearDownTestSuite() {
    delete registry_;
    delete layout_dir_;
    delete image_;
    delete start_error_;
    registry_ = nullptr;
    layout_dir_ = nullptr;
    image_ = nullptr;
    start_error_ = nullptr;
  }
  void SetUp() override {
    ASSERT_EQ(start_error_, nullptr) << *start_error_;
    source_ = RemoteSource::Create(registry_->host_port(), "demo/app", FastOptions());
  }

  static RegistryServer* registry_;
  static imgfs::testing::TempDir* layout_dir_;
  static PushedImage* image_;
  static std::string* start_error_;
  std::unique_ptr<RemoteSource> source_;
};

RegistryServer* RemoteSourceRegistryTest::registry_ = nullptr;
imgfs::testing::TempDir* RemoteSourceRegistryTest::layout_dir_ = nullptr;
PushedImage* RemoteSourceRegistryTest::image_ = nullptr;
std::string* RemoteSourceRegistryTest::start_error_ = nullptr;

TEST_F(RemoteSourceRegistryTest, PingAndManifestByTagAndDigest) {
  ASSERT_TRUE(source_->Ping().ok());
  EXPECT_EQ(source_->BaseUrl(), "http://" + registry_->host_port());
  auto by_tag = source_->GetManifest("latest");
  ASSERT_TRUE(by_tag.has_value()) << by_tag.error().ToString();
  EXPECT_EQ(by_tag->bytes, image_->manifest);
  EXPECT_EQ(by_tag->digest, image_->manifest_digest);
  EXPECT_EQ(by_tag->media_type, media::kOciManifest);
  auto by_digest = source_->GetManifest(image_->manifest_digest.String());
  ASSERT_TRUE(by_digest.has_value()) << by_digest.error().ToString();
  EXPECT_EQ(by_digest->bytes, image_->manifest);
}

TEST_F(RemoteSourceRegistryTest, NoReferrersApiIsUnsupported) {
  // Debian's docker-registry 2.8 predates the referrers API: callers use the tag fallback.
  auto listed = source_->ListReferrers(image_->manifest_digest, "");
  ASSERT_FALSE(listed.has_value());
  EXPECT_EQ(listed.error().code(), StatusCode::kUnsupported) << listed.error().ToString();
}

TEST_F(RemoteSourceRegistryTest, UnknownTagRepositoryAndBlobAreNotFound) {
  auto m = source_->GetManifest("does-not-exist");
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kNotFound) << m.error().ToString();
  EXPECT_NE(m.error().message().find("manifest unknown"), std::string::npos);

  Status st;
  Collect(*source_, Digest::Sha256Of("no such blob"), -1, &st);
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();

  auto other = RemoteSource::Create(registry_->host_port(), "no/such", FastOptions());
  auto tags = other->ListTags();
  ASSERT_FALSE(tags.has_value());
  EXPECT_EQ(tags.error().code(), StatusCode::kNotFound) << tags.error().ToString();
}

TEST_F(RemoteSourceRegistryTest, BlobsWholeAndByRange) {
  for (const auto& [digest, size] : image_->blobs) {
    Status st;
    std::string whole = Collect(*source_, digest, size, &st);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_EQ(static_cast<int64_t>(whole.size()), size);
    EXPECT_EQ(Digest::Sha256Of(whole), digest);
    if (size > 1000) {
      auto part = source_->ReadBlobRange(digest, ByteRange{100, 700});
      ASSERT_TRUE(part.has_value()) << part.error().ToString();
      EXPECT_EQ(*part, whole.substr(100, 700));
      auto tail = source_->ReadBlobRange(digest, ByteRange{static_cast<uint64_t>(size) - 10, 100});
      ASSERT_TRUE(tail.has_value()) << tail.error().ToString();
      EXPECT_EQ(*tail, whole.substr(size - 10));
    }
  }
}

TEST_F(RemoteSourceRegistryTest, MultiRangeReadsExactBytesInOneRequest) {
  RemoteSource::ForgetMultiRangeRefusals();
  // The biggest blob (the layer), read whole for reference.
  auto biggest = std::max_element(image_->blobs.begin(), image_->blobs.end(),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
  const Digest digest = biggest->first;
  Status st;
  const std::string whole = Collect(*source_, digest, biggest->second, &st);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_GT(whole.size(), 30000u);

  // docker-registry (distribution's filesystem driver, Go's http.ServeContent) really answers
  // several ranges with multipart/byteranges.
  HttpClient http;
  HttpRequest raw;
  raw.url = registry_->url() + "/v2/demo/app/blobs/" + digest.String();
  raw.headers.push_back("Range: bytes=0-9,100-119");
  auto answer = http.Do(raw);
  ASSERT_TRUE(answer.has_value()) << answer.error().ToString();
  EXPECT_EQ(answer->status, 206);
  EXPECT_TRUE(IsMultipartByteranges(answer->Header("content-type")))
      << answer->Header("content-type");

  auto stats = std::make_shared<imgfs::testing::ProxyStats>();
  auto faults = std::make_shared<imgfs::testing::ProxyFaults>();
  HttpTestServer proxy(imgfs::testing::FaultyProxyHandler(registry_->url(), stats, faults));
  auto via = RemoteSource::Create(proxy.host_port(), "demo/app", FastOptions());
  // Unordered, overlapping, one at the very end.
  const std::vector<ByteRange> ranges = {
      {20000, 3000}, {100, 50}, {120, 40}, {7, 1}, {whole.size() - 5, 5}};
  uint64_t requests = 0;
  auto got = via->ReadBlobRanges(digest, ranges, &requests);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, Slices(whole, ranges));
  EXPECT_EQ(requests, 1u);
  EXPECT_EQ(stats->blob_gets.load(), 1);
  EXPECT_EQ(faults->multi_range_requests.load(), 1);
  EXPECT_FALSE(via->ignores_ranges());
  EXPECT_FALSE(via->multi_range_refused());

  // More ranges than one request carries: split, every byte right.
  std::vector<ByteRange> many;
  for (uint64_t i = 0; i < RemoteSource::kMaxRangesPerRequest * 2; ++i)
    many.push_back({i * 300, 7});
  requests = 0;
  got = via->ReadBlobRanges(digest, many, &requests);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, Slices(whole, many));
  EXPECT_EQ(requests, 2u);
  EXPECT_EQ(faults->multi_range_requests.load(), 3);
}

TEST_F(RemoteSourceRegistryTest, ListTags) {
  auto tags = source_->ListTags();
  ASSERT_TRUE(tags.has_value()) << tags.error().ToString();
  EXPECT_EQ(*tags, (std::vector<std::string>{"latest", "v2"}));
}

TEST_F(RemoteSourceRegistryTest, ThroughCountingProxyEachBlobIsFetchedOnce) {
  auto stats = std::make_shared<imgfs::testing::ProxyStats>();
  HttpTestServer proxy(imgfs::testing::ProxyHandler(registry_->url(), stats));
  auto via = RemoteSource::Create(proxy.host_port(), "demo/app", FastOptions());
  uint64_t total = 0;
  for (const auto& [digest, size] : image_->blobs) {
    Status st;
    Collect(*via, digest, size, &st);
    ASSERT_TRUE(st.ok()) << st.ToString();
    total += static_cast<uint64_t>(size);
  }
  EXPECT_EQ(stats->blob_gets.load(), static_cast<int>(image_->blobs.size()));
  EXPECT_EQ(stats->blob_bytes.load(), total);
  // All of it over one kept-alive connection (the https probe's refused one aside).
  EXPECT_LE(proxy.connections(), 3u);
}

TEST_F(RemoteSourceRegistryTest, ConcurrentFetchesShareOneSource) {
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (const auto& [digest, size] : image_->blobs) {
        Status st;
        std::string data = Collect(*source_, digest, size, &st);
        if (st.ok() && Digest::Sha256Of(data) == digest) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 4 * static_cast<int>(image_->blobs.size()));
}

TEST(RemoteSourceFixtureTest, PullsTheTinyGzipFixture) {
  const std::string layout = FixturesDir() + "/tiny-gzip";
  ASSERT_TRUE(std::filesystem::exists(layout + "/index.json"))
      << "fixture missing: " << layout << " (see its README.md / make-fixtures.sh)";
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  auto pushed = PushAndDescribe(**reg, layout, "fixtures/tiny:latest");
  ASSERT_TRUE(pushed.has_value()) << pushed.error().ToString();
  auto source = RemoteSource::Create((*reg)->host_port(), "fixtures/tiny", FastOptions());
  auto m = source->GetManifest("latest");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->digest, pushed->manifest_digest);
  for (const auto& [digest, size] : pushed->blobs) {
    int64_t got = 0;
    Status st = source->FetchBlob(digest, size, [&](std::string_view chunk) {
      got += static_cast<int64_t>(chunk.size());
      return Status::Ok();
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(got, size);
  }
}

// The registry launcher's access log (RegistryServerOptions::access_log), which e2e tests
// read to assert how much of an image a reader fetched: every answered request with its
// method, path, status and body bytes.
TEST(RegistryServerAccessLogTest, NamesEachRequestWithItsStatusAndBytes) {
  RegistryServerOptions options;
  options.access_log = true;
  auto reg = RegistryServer::Start(options);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  auto pushed = PushAndDescribe(**reg, FixturesDir() + "/tiny-gzip", "fixtures/tiny:latest");
  ASSERT_TRUE(pushed.has_value()) << pushed.error().ToString();
  const uint64_t before = (*reg)->BlobBytesServed();
  const size_t requests_before = (*reg)->Accesses().size();
  auto source = RemoteSource::Create((*reg)->host_port(), "fixtures/tiny", FastOptions());
  ASSERT_TRUE(source->GetManifest("latest").has_value());
  const Digest& blob = pushed->blobs.back().first;  // a layer
  auto got = source->ReadBlobRange(blob, ByteRange{10, 100});
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  ASSERT_EQ(got->size(), 100u);

  std::vector<RegistryAccess> after = (*reg)->Accesses();
  ASSERT_GT(after.size(), requests_before);
  bool manifest_seen = false;
  bool range_seen = false;
  for (size_t i = requests_before; i < after.size(); ++i) {
    const RegistryAccess& a = after[i];
    if (a.IsManifest() && a.method == "GET" && a.status == 200) manifest_seen = true;
    if (a.IsBlob() && a.method == "GET") {
      EXPECT_NE(a.path.find(blob.String()), std::string::npos) << a.path;
      EXPECT_EQ(a.status, 206);
      EXPECT_EQ(a.bytes, 100u);
      range_seen = true;
    }
  }
  EXPECT_TRUE(manifest_seen);
  EXPECT_TRUE(range_seen);
  EXPECT_EQ((*reg)->BlobBytesServed() - before, 100u);
}

TEST(RemoteSourceTlsTest, TrustsTheCaFromOptionsOrCertsDirAndRejectsOtherwise) {
  RegistryServerOptions tls_options;
  tls_options.tls = true;
  auto reg = RegistryServer::Start(tls_options);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  imgfs::testing::TempDir layout;
  imgfs::testing::ImageBuilder builder(layout.path() + "/oci");
  ASSERT_TRUE(builder.Add(imgfs::testing::SimpleImage({{"f", "tls"}}), "latest").has_value());
  auto pushed = PushAndDescribe(**reg, builder.dir(), "secure/app:latest");
  ASSERT_TRUE(pushed.has_value()) << pushed.error().ToString();

  RemoteSourceOptions with_ca = FastOptions();
  with_ca.tls.ca_files = {(*reg)->ca_file()};
  auto good = RemoteSource::Create((*reg)->host_port(), "secure/app", with_ca);
  auto m = good->GetManifest("latest");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->digest, pushed->manifest_digest);
  EXPECT_EQ(good->BaseUrl(), "https://" + (*reg)->host_port());

  // docker's per-host directory: certs.d/127.0.0.1:PORT/ca.crt
  imgfs::testing::TempDir certs;
  const std::string host_dir = certs.path() + "/" + (*reg)->host_port();
  ASSERT_TRUE(MakeDirs(host_dir).ok());
  std::filesystem::copy_file((*reg)->ca_file(), host_dir + "/ca.crt");
  RemoteSourceOptions with_dir = FastOptions();
  with_dir.certs_dir = certs.path();
  auto via_dir = RemoteSource::Create((*reg)->host_port(), "secure/app", with_dir);
  auto m2 = via_dir->GetManifest(pushed->manifest_digest.String());
  ASSERT_TRUE(m2.has_value()) << m2.error().ToString();

  auto untrusted = RemoteSource::Create((*reg)->host_port(), "secure/app", FastOptions());
  auto bad = untrusted->GetManifest("latest");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(bad.error().message().find("TLS"), std::string::npos) << bad.error().message();
}

TEST(RemoteSourceTlsTest, ClientCertificateFromCertsDir) {
  RegistryServerOptions tls_options;
  tls_options.tls = true;
  tls_options.require_client_cert = true;
  auto reg = RegistryServer::Start(tls_options);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  const auto& pki = (*reg)->pki();
  imgfs::testing::TempDir certs;
  const std::string host_dir = certs.path() + "/" + (*reg)->host_port();
  ASSERT_TRUE(MakeDirs(host_dir).ok());
  std::filesystem::copy_file(pki.ca_cert, host_dir + "/ca.crt");
  std::filesystem::copy_file(pki.client_cert, host_dir + "/client.cert");
  std::filesystem::copy_file(pki.client_key, host_dir + "/client.key");

  RemoteSourceOptions options = FastOptions();
  options.certs_dir = certs.path();
  auto source = RemoteSource::Create((*reg)->host_port(), "any/repo", options);
  EXPECT_TRUE(source->Ping().ok());
  auto tags = source->ListTags();  // authenticated by the certificate: the repo is unknown
  ASSERT_FALSE(tags.has_value());
  EXPECT_EQ(tags.error().code(), StatusCode::kNotFound) << tags.error().ToString();

  RemoteSourceOptions no_cert = FastOptions();
  no_cert.tls.ca_files = {pki.ca_cert};
  auto refused = RemoteSource::Create((*reg)->host_port(), "any/repo", no_cert);
  EXPECT_EQ(refused->Ping().code(), StatusCode::kUnavailable);
}

TEST(RemoteSourceAuthTest, HtpasswdBasicAuth) {
  RegistryServerOptions options;
  options.tls = true;  // distribution sends Basic credentials over TLS in practice
  options.htpasswd_user = "alice";
  options.htpasswd_password = "wonderland";
  auto reg = RegistryServer::Start(options);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  imgfs::testing::TempDir layout;
  imgfs::testing::ImageBuilder builder(layout.path() + "/oci");
  ASSERT_TRUE(builder.Add(imgfs::testing::SimpleImage({{"f", "auth"}}), "latest").has_value());
  imgfs::testing::PushOptions push;
  push.creds = "alice:wonderland";
  auto pushed = PushAndDescribe(**reg, builder.dir(), "private/app:latest", push);
  ASSERT_TRUE(pushed.has_value()) << pushed.error().ToString();

  RemoteSourceOptions base = FastOptions();
  base.tls.ca_files = {(*reg)->ca_file()};

  RemoteSourceOptions good = base;
  good.credential = Credential{"alice", "wonderland", ""};
  auto source = RemoteSource::Create((*reg)->host_port(), "private/app", good);
  auto m = source->GetManifest("latest");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->digest, pushed->manifest_digest);
  for (const auto& [digest, size] : pushed->blobs) {
    Status st;
    Collect(*source, digest, size, &st);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }

  auto anonymous = RemoteSource::Create((*reg)->host_port(), "private/app", base);
  auto denied = anonymous->GetManifest("latest");
  ASSERT_FALSE(denied.has_value());
  EXPECT_EQ(denied.error().code(), StatusCode::kPermissionDenied) << denied.error().ToString();
  EXPECT_NE(denied.error().message().find("imgfs login"), std::string::npos);

  RemoteSourceOptions wrong = base;
  wrong.credential = Credential{"alice", "not-the-password", ""};
  auto wrong_source = RemoteSource::Create((*reg)->host_port(), "private/app", wrong);
  auto refused = wrong_source->GetManifest("latest");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kPermissionDenied) << refused.error().ToString();
  EXPECT_EQ(refused.error().message().find("not-the-password"), std::string::npos);
}

TEST(RemoteSourceAuthTest, BearerTokenFlowWithTokenServer) {
  imgfs::testing::TokenServerOptions token_options;
  token_options.username = "bob";
  token_options.password = "b0b-pass";
  imgfs::testing::TokenServer tokens(token_options);
  RegistryServerOptions options;
  options.token_auth = RegistryServerOptions::TokenAuth{tokens.realm(), tokens.service(),
                                                        tokens.issuer(), tokens.cert_path()};
  auto reg = RegistryServer::Start(options);
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  imgfs::testing::TempDir layout;
  imgfs::testing::ImageBuilder builder(layout.path() + "/oci");
  ASSERT_TRUE(builder.Add(imgfs::testing::SimpleImage({{"f", "token"}, {"g", "more"}}), "latest")
                  .has_value());
  imgfs::testing::PushOptions push;
  push.creds = "bob:b0b-pass";
  auto pushed = PushAndDescribe(**reg, builder.dir(), "tok/app:latest", push);
  ASSERT_TRUE(pushed.has_value()) << pushed.error().ToString();

  // Anonymous pull (the token server grants pull to anyone): one token for the scope,
  // reused by every later request.
  auto anonymous = RemoteSource::Create((*reg)->host_port(), "tok/app", FastOptions());
  const int before = tokens.token_requests();
  auto m = anonymous->GetManifest("latest");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->digest, pushed->manifest_digest);
  for (const auto& [digest, size] : pushed->blobs) {
    Status st;
    Collect(*anonymous, digest, size, &st);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  auto tags = anonymous->ListTags();
  ASSERT_TRUE(tags.has_value()) << tags.error().ToString();
  EXPECT_EQ(*tags, std::vector<std::string>{"latest"});
  EXPECT_EQ(tokens.token_requests() - before, 1);

  // Anonymous access switched off: a credential is needed, and a missing one says so.
  tokens.SetAnonymous(false, {});
  auto refused = RemoteSource::Create((*reg)->host_port(), "tok/app", FastOptions());
  auto denied = refused->GetManifest("latest");
  ASSERT_FALSE(denied.has_value());
  EXPECT_EQ(denied.error().code(), StatusCode::kPermissionDenied) << denied.error().ToString();

  RemoteSourceOptions with_cred = FastOptions();
  with_cred.credential = Credential{"bob", "b0b-pass", ""};
  auto logged_in = RemoteSource::Create((*reg)->host_port(), "tok/app", with_cred);
  auto again = logged_in->GetManifest(pushed->manifest_digest.String());
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  for (const auto& r : tokens.requests()) {
    EXPECT_EQ(r.target.find("b0b-pass"), std::string::npos);  // secrets only in headers
  }
}

// ---------------------------------------------------------------------------------------
// Referrers API (distribution-spec 1.1) with the scripted server; docker-registry 2.8 has
// none (RemoteSourceRegistryTest.NoReferrersApiIsUnsupported).

TEST(RemoteSourceReferrersTest, ListsTheIndexFilteredByArtifactType) {
  const Digest subject = Digest::Sha256Of("the image manifest");
  Descriptor imgfs_artifact;
  imgfs_artifact.media_type = std::string(media::kOciManifest);
  imgfs_artifact.digest = Digest::Sha256Of("artifact 1");
  imgfs_artifact.size = 10;
  imgfs_artifact.artifact_type = std::string(fs::kImgfsIndexArtifactType);
  Descriptor signature = imgfs_artifact;
  signature.digest = Digest::Sha256Of("artifact 2");
  signature.artifact_type = "application/vnd.dev.cosign.artifact.sig.v1+json";
  Index listed;
  listed.schema_version = 2;
  listed.media_type = std::string(media::kOciIndex);
  listed.manifests = {imgfs_artifact, signature};  // a server that ignores the filter
  const std::string body = EncodeIndex(listed);
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    if (req.path == "/v2/demo/app/referrers/" + subject.String()) {
      conn.Respond(200, {{"Content-Type", std::string(media::kOciIndex)}}, body);
      return;
    }
    conn.Respond(404, {}, R"({"errors":[{"code":"NOT_FOUND"}]})");
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  auto all = source->ListReferrers(subject, "");
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  EXPECT_EQ(all->size(), 2u);
  auto only = source->ListReferrers(subject, fs::kImgfsIndexArtifactType);
  ASSERT_TRUE(only.has_value()) << only.error().ToString();
  ASSERT_EQ(only->size(), 1u);
  EXPECT_EQ((*only)[0].digest, imgfs_artifact.digest);
  bool filtered = false;
  for (const HttpTestRequest& req : server.requests()) {
    if (req.query == "artifactType=application%2Fvnd.imgfs.index.v1") filtered = true;
  }
  EXPECT_TRUE(filtered) << "the artifactType filter was not sent";
  // Another repository answers 404: no referrers API there.
  auto missing = RemoteSource::Create(server.host_port(), "demo/other", FastOptions())
                     ->ListReferrers(subject, "");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kUnsupported) << missing.error().ToString();
}

// FindPublishedIndexes through the referrers API: the sha256-<hex> tag is asked for at the
// same time (one round trip on registries without the API), and the API's answer wins over
// what the tag lists.
TEST(RemoteSourceReferrersTest, FindPublishedIndexesPrefersTheApiToTheTag) {
  fs::LayerIndex index;
  index.layer_digest = Digest::Sha256Of("a layer");
  index.media_type = std::string(media::kOciLayerGzip);
  index.format = fs::LayerFormat::kTarGzip;
  fs::ImageIndexes indexes;
  indexes.manifest.media_type = std::string(media::kOciManifest);
  indexes.manifest.digest = Digest::Sha256Of("the image manifest");
  indexes.manifest.size = 18;
  fs::ImageIndexes::Layer layer;
  layer.layer.digest = index.layer_digest;
  layer.encoded = index.Encode();
  indexes.layers.push_back(layer);
  const fs::IndexArtifact artifact = fs::MakeIndexArtifact(indexes);
  Index listed;
  listed.schema_version = 2;
  listed.media_type = std::string(media::kOciIndex);
  listed.manifests = {artifact.descriptor};
  const std::string body = EncodeIndex(listed);
  // The tag lists an artifact the registry does not have: read, it would fail the lookup.
  Index stale = listed;
  stale.manifests[0].digest = Digest::Sha256Of("a stale artifact");
  const std::string stale_body = EncodeIndex(stale);
  HttpTestServer server(Registry([&](const HttpTestRequest& req, HttpTestConnection& conn) {
    const std::string repo = "/v2/demo/app/";
    if (req.path == repo + "referrers/" + indexes.manifest.digest.String()) {
      conn.Respond(200, {{"Content-Type", std::string(media::kOciIndex)}}, body);
    } else if (req.path == repo + "manifests/" + fs::ReferrersTag(indexes.manifest.digest)) {
      conn.Respond(200, {{"Content-Type", std::string(media::kOciIndex)}}, stale_body);
    } else if (req.path == repo + "manifests/" + artifact.descriptor.digest.String()) {
      conn.Respond(200, {{"Content-Type", std::string(media::kOciManifest)}},
                   artifact.manifest_bytes);
    } else if (req.path.rfind(repo + "blobs/", 0) == 0) {
      auto d = Digest::Parse(req.path.substr(repo.size() + 6));
      auto it = d.has_value() ? artifact.blobs.find(*d) : artifact.blobs.end();
      if (it == artifact.blobs.end()) {
        conn.Respond(404, {}, "");
      } else {
        conn.Respond(200, {}, it->second);
      }
    } else {
      conn.Respond(404, {}, R"({"errors":[{"code":"MANIFEST_UNKNOWN"}]})");
    }
  }));
  auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
  auto found = fs::FindPublishedIndexes(*source, indexes.manifest.digest);
  ASSERT_TRUE(found.has_value()) << found.error().ToString();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ(found->begin()->first, index.layer_digest);
  EXPECT_EQ(found->begin()->second.format, fs::LayerFormat::kTarGzip);
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/referrers/"), 1u);
  EXPECT_EQ(server.Count("GET", "/v2/demo/app/manifests/" + stale.manifests[0].digest.String()), 0u)
      << "the tag's list was used";
}

// Published indexes are zstd frames (application/vnd.imgfs.layer-index.v1+zstd); the plain
// encoding an earlier imgfs published is still read, and a zstd blob that does not decode is
// Corrupt. Both blobs of an artifact are fetched (in parallel) and decoded.
TEST(RemoteSourceReferrersTest, FindPublishedIndexesReadsZstdAndPlainIndexes) {
  auto make_index = [](const std::string& name) {
    fs::LayerIndex index;
    index.layer_digest = Digest::Sha256Of(name);
    index.media_type = std::string(media::kOciLayerGzip);
    index.format = fs::LayerFormat::kTarGzip;
    for (int i = 0; i < 200; ++i) {
      fs::FileEntry e;
      e.path = "usr/share/doc/package-" + std::to_string(i) + "/copyright";
      e.type = fs::EntryType::kRegular;
      e.mode = 0644;
      index.entries.push_back(e);
    }
    return index;
  };
  const fs::LayerIndex zstd_index = make_index("layer one");
  const fs::LayerIndex plain_index = make_index("layer two");
  fs::ImageIndexes indexes;
  indexes.manifest.media_type = std::string(media::kOciManifest);
  indexes.manifest.digest = Digest::Sha256Of("the image manifest");
  indexes.manifest.size = 18;
  for (const fs::LayerIndex* index : {&zstd_index, &plain_index}) {
    fs::ImageIndexes::Layer layer;
    layer.layer.digest = index->layer_digest;
    layer.encoded = index->Encode();
    indexes.layers.push_back(layer);
  }
  fs::IndexArtifact artifact = fs::MakeIndexArtifact(indexes);
  ASSERT_EQ(artifact.manifest.layers.size(), 2u);
  EXPECT_EQ(artifact.manifest.layers[0].media_type, fs::kImgfsLayerIndexZstdMediaType);
  EXPECT_LT(artifact.manifest.layers[0].size,
            static_cast<int64_t>(indexes.layers[0].encoded.size()) / 2);
  // The second layer as an earlier imgfs published it: the encoding itself.
  auto republish = [&](size_t i, std::string_view media_type, const std::string& blob) {
    Descriptor& d = artifact.manifest.layers[i];
    artifact.blobs.erase(d.digest);
    d.media_type = std::string(media_type);
    d.digest = Digest::Sha256Of(blob);
    d.size = static_cast<int64_t>(blob.size());
    artifact.blobs[d.digest] = blob;
    artifact.manifest_bytes = EncodeManifest(artifact.manifest);
    artifact.descriptor.digest = Digest::Sha256Of(artifact.manifest_bytes);
    artifact.descriptor.size = static_cast<int64_t>(artifact.manifest_bytes.size());
  };
  republish(1, fs::kImgfsLayerIndexMediaType, indexes.layers[1].encoded);
  auto serve = [&artifact, &indexes](const HttpTestRequest& req, HttpTestConnection& conn) {
    const std::string repo = "/v2/demo/app/";
    if (req.path == repo + "referrers/" + indexes.manifest.digest.String()) {
      Index listed;
      listed.schema_version = 2;
      listed.media_type = std::string(media::kOciIndex);
      listed.manifests = {artifact.descriptor};
      conn.Respond(200, {{"Content-Type", std::string(media::kOciIndex)}}, EncodeIndex(listed));
    } else if (req.path == repo + "manifests/" + artifact.descriptor.digest.String()) {
      conn.Respond(200, {{"Content-Type", std::string(media::kOciManifest)}},
                   artifact.manifest_bytes);
    } else if (req.path.rfind(repo + "blobs/", 0) == 0) {
      auto d = Digest::Parse(req.path.substr(repo.size() + 6));
      auto it = d.has_value() ? artifact.blobs.find(*d) : artifact.blobs.end();
      if (it == artifact.blobs.end()) {
        conn.Respond(404, {}, "");
      } else {
        conn.Respond(200, {}, it->second);
      }
    } else {
      conn.Respond(404, {}, R"({"errors":[{"code":"MANIFEST_UNKNOWN"}]})");
    }
  };
  {
    HttpTestServer server(Registry(serve));
    auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
    auto found = fs::FindPublishedIndexes(*source, indexes.manifest.digest);
    ASSERT_TRUE(found.has_value()) << found.error().ToString();
    ASSERT_EQ(found->size(), 2u);
    for (const fs::LayerIndex* want : {&zstd_index, &plain_index}) {
      auto it = found->find(want->layer_digest);
      ASSERT_NE(it, found->end());
      ASSERT_EQ(it->second.entries.size(), want->entries.size());
      EXPECT_EQ(it->second.entries.back().path, want->entries.back().path);
    }
    EXPECT_EQ(server.Count("GET", "/v2/demo/app/blobs/"), 2u);
  }
  // A zstd blob that is not zstd (its digest right: the registry serves what was pushed).
  republish(0, fs::kImgfsLayerIndexZstdMediaType, indexes.layers[0].encoded);
  {
    HttpTestServer server(Registry(serve));
    auto source = RemoteSource::Create(server.host_port(), "demo/app", FastOptions());
    auto found = fs::FindPublishedIndexes(*source, indexes.manifest.digest);
    ASSERT_FALSE(found.has_value());
    EXPECT_EQ(found.error().code(), StatusCode::kCorrupt) << found.error().ToString();
  }
}

}  // namespace
}  // namespace imgfs::registry
