// imgfs — unit tests of what a keeper tells and gets back from systemd's fd store
// (fs/fuse/fd_store.h) and of a layer store keeper's record (fs/fuse/keeper_record.h): the
// bounded parsers, and a real datagram exchange with a socket standing for the manager.
#include "fs/fuse/fd_store.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/fd_passing.h"
#include "base/unique_fd.h"
#include "fs/fuse/keeper_record.h"
#include "fs/fuse/kept_config.h"
#include "fs/fuse/takeover.h"

namespace imgfs::fs {
namespace {

TEST(FdStoreTest, ListenFdNamesNameEveryDescriptorOnce) {
  auto names = ParseListenFdNames("imgfs-fuse:imgfs-state", 2);
  ASSERT_TRUE(names.has_value()) << names.error().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{"imgfs-fuse", "imgfs-state"}));
  EXPECT_TRUE(ParseListenFdNames("", 0).has_value());
  for (const auto& [text, count] :
       std::vector<std::pair<std::string, size_t>>{{"a:b", 1},
                                                   {"a", 2},
                                                   {"a::b", 3},
                                                   {"a:", 2},
                                                   {":a", 2},
                                                   {"a b", 1},
                                                   {"x", 0},
                                                   {"", 1},
                                                   {std::string(256, 'n'), 1},
                                                   {"a", kMaxListenFds + 1}}) {
    EXPECT_FALSE(ParseListenFdNames(text, count).has_value()) << text << " " << count;
  }
}

// A pinned image as daemon 1 reports it (tools/cmd_mount.cc PinnedImage).
const std::string kPinned = "127.0.0.1:5000/demo/app:1.0@sha256:" + std::string(64, 'a');

Handover SomeHandover() {
  Handover h;
  h.init_request = std::string("\x28\0\0\0\x1a", 5) + std::string(35, '\0');
  h.lease_id = "lease-1";
  h.image = kPinned;
  return h;
}

KeptConfig WritableConfig() {
  KeptConfig c;
  c.image = "127.0.0.1:5000/demo/app:1.0";
  c.root = "/var/lib/imgfs";
  c.writable = true;
  c.driver = "fuse";
  c.upper = "/var/lib/app upper";
  c.mount_options = {"allow_other", "nodev"};
  c.lazy = false;
  c.platform = "linux/arm64/v8";
  c.fetch_timeout_seconds = 2.5;
  c.prefetch = "all";
  c.insecure_skip_toc_verify = true;
  return c;
}

KeptConfig ReadOnlyConfig() {
  KeptConfig c;
  c.image = "oci:/srv/a b:latest";
  c.root = "/r";
  return c;
}

UniqueFd DevNull() { return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

bool Parses(std::string_view text) { return ParseKeptState(text, DevNull()).has_value(); }

TEST(FdStoreTest, KeptStateRoundTripsWithWhatTheMountServes) {
  const Handover h = SomeHandover();
  for (const KeptConfig& config : {ReadOnlyConfig(), WritableConfig()}) {
    auto text = EncodeKeptState("/mnt/a b", config, h);
    ASSERT_TRUE(text.has_value()) << text.error().ToString();
    UniqueFd fd = DevNull();
    const int raw = fd.get();
    auto state = ParseKeptState(*text, std::move(fd));
    ASSERT_TRUE(state.has_value()) << state.error().ToString();
    EXPECT_EQ(state->mountpoint, "/mnt/a b");
    ASSERT_TRUE(state->config.has_value());
    EXPECT_EQ(*state->config, config);
    EXPECT_EQ(state->handover.init_request, h.init_request);
    EXPECT_EQ(state->handover.lease_id, "lease-1");
    EXPECT_EQ(state->handover.image, kPinned);
    EXPECT_EQ(state->handover.fuse_fd, raw);
    EXPECT_EQ(state->fuse_fd.get(), raw);
  }
}

// The exact bytes of format 2: a change to them needs a new format number (the state of a
// running service is read by the imgfs installed next).
TEST(FdStoreTest, KeptStateFormat2IsStable) {
  Handover h;
  h.init_request = "INIT";
  h.lease_id = "L";
  h.image = "sha256:" + std::string(64, '0');
  auto text = EncodeKeptState("/mnt/x", WritableConfig(), h);
  ASSERT_TRUE(text.has_value()) << text.error().ToString();
  const std::string config =
      R"({"driver":"fuse","fetch_timeout_seconds":2.5,"image":"127.0.0.1:5000/demo/app:1.0",)"
      R"("insecure_skip_toc_verify":true,"lazy":false,"mount_options":["allow_other","nodev"],)"
      R"("platform":"linux/arm64/v8","prefetch":"all","root":"/var/lib/imgfs",)"
      R"("upper":"/var/lib/app upper","writable":true})";
  EXPECT_EQ(*text, "IMGFS-KEPT 2\nCONFIG " + std::to_string(config.size()) + "\n" + config +
                       "START 1 6 4 1 71\n/mnt/xINITLsha256:" + std::string(64, '0'));
}

// A state an imgfs before the kept configuration wrote: the mountpoint alone. Still taken
// over (with the command line's configuration: tools/cmd_mount.cc).
TEST(FdStoreTest, KeptStateOfFormat1HasNoConfiguration) {
  Handover h = SomeHandover();
  h.image = "oci:/x@sha256:00";  // format 1 never required a pin
  const std::string text = "IMGFS-KEPT 1\n" + EncodeStartRecord("/mnt/a b", &h);
  auto state = ParseKeptState(text, DevNull());
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_EQ(state->mountpoint, "/mnt/a b");
  EXPECT_FALSE(state->config.has_value());
  EXPECT_EQ(state->handover.image, h.image);
  EXPECT_EQ(state->handover.lease_id, "lease-1");
  for (const std::string& bad :
       {text.substr(0, text.size() - 1), text + "x", text.substr(1), std::string("IMGFS-KEPT 1\n"),
        "IMGFS-KEPT 3\n" + text.substr(13), std::string("IMGFS-KEPT 1\nSTART 0 1 0 0 0\n/")}) {
    EXPECT_FALSE(Parses(bad)) << bad;
  }
}

TEST(FdStoreTest, KeptStateRefusesWhatItsEncoderDoesNotMake) {
  const Handover h = SomeHandover();
  const auto text = EncodeKeptState("/mnt/x", WritableConfig(), h);
  ASSERT_TRUE(text.has_value()) << text.error().ToString();
  const std::string config = *EncodeKeptConfig(WritableConfig());
  const std::string record = EncodeStartRecord("/mnt/x", &h);
  auto with_config = [&record](const std::string& c) {
    return "IMGFS-KEPT 2\nCONFIG " + std::to_string(c.size()) + "\n" + c + record;
  };
  ASSERT_TRUE(Parses(with_config(config)));
  Handover tagged = h;
  tagged.image = "127.0.0.1:5000/demo/app:1.0";  // a tag may have moved since
  const std::vector<std::string> bad = {
      text->substr(0, text->size() - 1),
      *text + "x",
      "IMGFS-KEPT 2\n" + record,  // no configuration
      "IMGFS-KEPT 2\nCONFIG 0" + std::to_string(config.size()) + "\n" + config + record,
      "IMGFS-KEPT 2\nCONFIG +" + std::to_string(config.size()) + "\n" + config + record,
      "IMGFS-KEPT 2\nCONFIG " + std::to_string(config.size() + 1) + "\n" + config + record,
      "IMGFS-KEPT 2\nCONFIG 99999999999999999999\n" + config + record,
      "IMGFS-KEPT 2\nCONFIG " + std::to_string(config.size()) + "\n" + config,
      "IMGFS-KEPT 2\nCONFIG " + std::to_string(config.size()) + "\n" + config +
          EncodeStartRecord("/mnt/x", nullptr),  // not a takeover's
      with_config(config) + std::string(kMaxKeptStateBytes, 'x'),
      "IMGFS-KEPT 2\nCONFIG " + std::to_string(config.size()) + "\n" + config +
          EncodeStartRecord("/mnt/x", &tagged),
      // Another spelling of the same JSON: spaces, key order, escapes, number forms.
      with_config(" " + config),
      with_config(config.substr(0, config.size() - 1) + ",\"writable\":true}"),
      with_config(R"({"writable":true,)" + config.substr(1, config.rfind(",\"writable\"") - 1) +
                  "}"),
      with_config(std::string(config).replace(config.find("/var/lib/imgfs"), 2, "\\/v")),
      with_config(std::string(config).replace(config.find("2.5"), 3, "2.50")),
      with_config(std::string(config).replace(config.find("2.5"), 3, "25e-1")),
      // Other keys or types.
      with_config(config.substr(0, config.size() - 1) + ",\"creds\":\"u:p\"}"),
      with_config(std::string(config).replace(config.find("\"lazy\":false"), 12, "\"lazy\":0")),
      with_config(std::string(config).replace(config.find(",\"lazy\":false"), 13, "")),
      with_config("[]"),
      with_config("null"),
  };
  for (const std::string& b : bad) EXPECT_FALSE(Parses(b)) << b;
  EXPECT_FALSE(EncodeKeptState("/mnt/x", WritableConfig(), tagged).has_value());
  KeptConfig huge = WritableConfig();
  huge.mount_options.assign(kMaxKeptStateBytes / 6, "nodev");
  EXPECT_FALSE(EncodeKeptState("/mnt/x", huge, h).has_value());
}

// Every field is checked as `imgfs mount --kept-daemon` checks its configuration, and more.
TEST(FdStoreTest, KeptConfigRefusesWhatNoMountServes) {
  const std::vector<std::pair<std::string, void (*)(KeptConfig*)>> cases = {
      {"writable without an upper", [](KeptConfig* c) { c->upper.clear(); }},
      {"a relative upper", [](KeptConfig* c) { c->upper = "var/lib/x"; }},
      {"an upper with NUL", [](KeptConfig* c) { c->upper = std::string("/a\0b", 4); }},
      {"an upper too long", [](KeptConfig* c) { c->upper = "/" + std::string(5000, 'u'); }},
      {"the overlay driver", [](KeptConfig* c) { c->driver = "overlay"; }},
      {"writable without a driver", [](KeptConfig* c) { c->driver.clear(); }},
      {"read-only with an upper",
       [](KeptConfig* c) {
         c->writable = false;
         c->driver.clear();
       }},
      {"read-only with a driver",
       [](KeptConfig* c) {
         c->writable = false;
         c->upper.clear();
       }},
      {"no image", [](KeptConfig* c) { c->image.clear(); }},
      {"an image with a newline", [](KeptConfig* c) { c->image = "a\nb"; }},
      {"a relative store", [](KeptConfig* c) { c->root = "store"; }},
      {"no store", [](KeptConfig* c) { c->root.clear(); }},
      {"an unknown option", [](KeptConfig* c) { c->mount_options = {"allow_other,dev"}; }},
      {"an option libfuse handles", [](KeptConfig* c) { c->mount_options = {"debug"}; }},
      {"a platform", [](KeptConfig* c) { c->platform = "linux"; }},
      {"a prefetch mode", [](KeptConfig* c) { c->prefetch = "some"; }},
      {"a negative timeout", [](KeptConfig* c) { c->fetch_timeout_seconds = -1; }},
      {"a timeout too long", [](KeptConfig* c) { c->fetch_timeout_seconds = 86401; }},
      {"an infinite timeout",
       [](KeptConfig* c) { c->fetch_timeout_seconds = std::numeric_limits<double>::infinity(); }},
  };
  ASSERT_TRUE(CheckKeptConfig(WritableConfig()).ok());
  for (const auto& [what, change] : cases) {
    KeptConfig c = WritableConfig();
    change(&c);
    const Status st = CheckKeptConfig(c);
    EXPECT_EQ(st.code(), StatusCode::kCorrupt) << what;
    EXPECT_FALSE(EncodeKeptConfig(c).has_value()) << what;
    // What the encoder refuses, written by hand, the parser refuses too.
    nlohmann::json j = nlohmann::json::parse(*EncodeKeptConfig(WritableConfig()));
    j["upper"] = c.upper;
    j["driver"] = c.driver;
    j["writable"] = c.writable;
    j["image"] = c.image;
    j["root"] = c.root;
    j["mount_options"] = c.mount_options;
    j["platform"] = c.platform;
    j["prefetch"] = c.prefetch;
    std::string text;
    if (std::isfinite(c.fetch_timeout_seconds)) {
      j["fetch_timeout_seconds"] = c.fetch_timeout_seconds;
      text = j.dump();
    } else {  // JSON has no infinity; a number beyond double's range reads as one
      text = j.dump();
      text.replace(text.find("2.5"), 3, "1e999");
    }
    EXPECT_FALSE(ParseKeptConfig(text).has_value()) << what << ": " << text;
  }
  // Not UTF-8: JSON cannot say it, so the keeper does not store it (and says why).
  KeptConfig latin1 = WritableConfig();
  latin1.upper = "/srv/\xe9t\xe9";
  auto encoded = EncodeKeptConfig(latin1);
  ASSERT_FALSE(encoded.has_value());
  EXPECT_EQ(encoded.error().code(), StatusCode::kInvalidArgument);
}

TEST(FdStoreTest, KeptConfigDifferencesNameWhatTheCommandLineChanges) {
  const KeptConfig kept = WritableConfig();
  EXPECT_TRUE(KeptConfigDifferences(kept, kept).empty());
  KeptConfig same = kept;
  std::swap(same.mount_options[0], same.mount_options[1]);  // the order of -o means nothing
  EXPECT_TRUE(KeptConfigDifferences(kept, same).empty());
  KeptConfig alpine = kept;
  alpine.image = "alpine";
  KeptConfig spelled = kept;
  spelled.image = "docker.io/library/alpine:latest";
  EXPECT_TRUE(KeptConfigDifferences(alpine, spelled).empty());

  KeptConfig read_only = kept;
  read_only.writable = false;
  read_only.driver.clear();
  read_only.upper.clear();
  read_only.image = "127.0.0.1:5000/demo/app:2.0";
  EXPECT_EQ(KeptConfigDifferences(kept, read_only),
            (std::vector<std::string>{"image: kept 127.0.0.1:5000/demo/app:1.0, asked "
                                      "127.0.0.1:5000/demo/app:2.0",
                                      "--rw: kept yes, asked no", "--driver: kept fuse, asked none",
                                      "--upper: kept /var/lib/app upper, asked none"}));
  KeptConfig other = kept;
  other.root = "/srv/store";
  other.mount_options = {"nodev"};
  other.lazy = true;
  other.platform.clear();
  other.fetch_timeout_seconds = 0;
  other.prefetch = "landmarks";
  other.insecure_skip_toc_verify = false;
  EXPECT_EQ(
      KeptConfigDifferences(kept, other),
      (std::vector<std::string>{
          "--root: kept /var/lib/imgfs, asked /srv/store",
          "-o: kept allow_other,nodev, asked nodev", "--pull: kept yes, asked no",
          "--platform: kept linux/arm64/v8, asked none",
          "--fetch-timeout: kept 2.5 s, asked default", "--prefetch: kept all, asked landmarks",
          "--insecure-skip-toc-verify: kept yes, asked no"}));
}

TEST(FdStoreTest, NotifiesAnAbstractSocketWithADescriptor) {
  const std::string address = "@imgfs-fd-store-test-" + std::to_string(::getpid());
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, address.data() + 1, address.size() - 1);
  ASSERT_EQ(::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr),
                   static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size())),
            0)
      << strerror(errno);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  ASSERT_TRUE(
      NotifyServiceManager(address, "FDSTORE=1\nFDNAME=imgfs-fuse", {write_end.get()}).ok());

  std::string bytes;
  std::vector<UniqueFd> fds;
  ASSERT_GT(ReceiveWithFds(sock.get(), 256, &bytes, &fds), 0);
  EXPECT_EQ(bytes, "FDSTORE=1\nFDNAME=imgfs-fuse");
  ASSERT_EQ(fds.size(), 1u);
  UniqueFd stored = std::move(fds[0]);
  ASSERT_EQ(::write(stored.get(), "k", 1), 1);  // the same pipe
  char got = 0;
  ASSERT_EQ(::read(read_end.get(), &got, 1), 1);
  EXPECT_EQ(got, 'k');

  EXPECT_FALSE(NotifyServiceManager("relative", "READY=1").ok());
  EXPECT_FALSE(NotifyServiceManager("@", "READY=1").ok());
}

TEST(KeeperRecordTest, RoundTripsAndRefusesTheRest) {
  KeeperRecord r{1234, "98765", "/var/lib/layers"};
  auto parsed = ParseKeeperRecord(EncodeKeeperRecord(r));
  ASSERT_TRUE(parsed.has_value()) << parsed.error().ToString();
  EXPECT_EQ(parsed->pid, 1234);
  EXPECT_EQ(parsed->pid_start, "98765");
  EXPECT_EQ(parsed->mountpoint, "/var/lib/layers");
  for (const char* bad : {"1234 98765", "1234 98765\nrelative", "0 1\n/a", "-1 1\n/a", "01 1\n/a",
                          "1 x\n/a", "1  1\n/a", "1 1\n/a\nb", "1 1\n"}) {
    EXPECT_FALSE(ParseKeeperRecord(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace imgfs::fs
