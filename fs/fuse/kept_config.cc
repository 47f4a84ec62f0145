// imgfs — what a kept mount serves (see kept_config.h).
#include "fs/fuse/kept_config.h"

#include <climits>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "fs/fuse/mount_access.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace imgfs::fs {
namespace {

using nlohmann::json;

// The longest --fetch-timeout `imgfs mount` accepts (tools/cmd_mount.cc ParseSeconds).
constexpr double kMaxFetchTimeoutSeconds = 86400;

Status CheckPath(std::string_view name, const std::string& path) {
  if (path.empty() || path.front() != '/' || path.size() >= PATH_MAX ||
      path.find('\0') != std::string::npos) {
    return Status::Corrupt("a kept configuration: " + std::string(name) +
                           " is not an absolute path");
  }
  return Status::Ok();
}

bool HasControlCharacter(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

json ToJson(const KeptConfig& c) {
  json j;
  j["image"] = c.image;
  j["root"] = c.root;
  j["writable"] = c.writable;
  j["driver"] = c.driver;
  j["upper"] = c.upper;
  j["mount_options"] = c.mount_options;
  j["lazy"] = c.lazy;
  j["platform"] = c.platform;
  j["fetch_timeout_seconds"] = c.fetch_timeout_seconds;
  j["prefetch"] = c.prefetch;
  j["insecure_skip_toc_verify"] = c.insecure_skip_toc_verify;
  return j;
}

// "none" for an empty value, else the value.
std::string Shown(const std::string& value) { return value.empty() ? "none" : value; }

std::string Shown(bool value) { return value ? "yes" : "no"; }

std::string Shown(const std::vector<std::string>& options) {
  std::string out;
  for (const std::string& o : options) out += (out.empty() ? "" : ",") + o;
  return Shown(out);
}

// Two spellings of one image: the same text, or references that normalise alike
// ("alpine" and "docker.io/library/alpine:latest").
bool SameImage(const std::string& a, const std::string& b) {
  if (a == b) return true;
  Result<registry::Reference> ra = registry::Reference::Parse(a);
  Result<registry::Reference> rb = registry::Reference::Parse(b);
  return ra.has_value() && rb.has_value() && ra->String() == rb->String();
}

}  // namespace

Status CheckKeptConfig(const KeptConfig& c) {
  if (c.image.empty() || c.image.size() >= PATH_MAX || HasControlCharacter(c.image)) {
    return Status::Corrupt("a kept configuration: a malformed image");
  }
  if (Status st = CheckPath("the store", c.root); !st.ok()) return st;
  if (c.writable) {
    if (c.driver != "fuse") {
      return Status::Corrupt("a kept configuration: a writable mount without the fuse driver");
    }
    if (Status st = CheckPath("the upper directory", c.upper); !st.ok()) {
      return Status::Corrupt("a kept configuration: a writable mount without its upper");
    }
  } else if (!c.driver.empty() || !c.upper.empty()) {
    return Status::Corrupt("a kept configuration: a read-only mount with a driver or an upper");
  }
  for (const std::string& o : c.mount_options) {
    if (!IsPassedMountOption(o)) return Status::Corrupt("a kept configuration: a mount option");
  }
  if (!c.platform.empty() && !registry::Platform::Parse(c.platform).has_value()) {
    return Status::Corrupt("a kept configuration: a malformed platform");
  }
  if (!std::isfinite(c.fetch_timeout_seconds) || c.fetch_timeout_seconds < 0 ||
      c.fetch_timeout_seconds > kMaxFetchTimeoutSeconds) {
    return Status::Corrupt("a kept configuration: a fetch timeout out of range");
  }
  if (c.prefetch != "none" && c.prefetch != "landmarks" && c.prefetch != "all") {
    return Status::Corrupt("a kept configuration: a prefetch mode");
  }
  return Status::Ok();
}

Result<std::string> EncodeKeptConfig(const KeptConfig& config) {
  if (Status st = CheckKeptConfig(config); !st.ok()) {
    return Status::InvalidArgument(st.message());
  }
  try {
    return ToJson(config).dump();
  } catch (const json::exception& e) {  // a string that is not UTF-8
    return Status::InvalidArgument(std::string("encoding a kept configuration: ") + e.what());
  }
}

Result<KeptConfig> ParseKeptConfig(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::Corrupt("a kept configuration");
  KeptConfig c;
  try {
    c.image = j.at("image").get<std::string>();
    c.root = j.at("root").get<std::string>();
    c.writable = j.at("writable").get<bool>();
    c.driver = j.at("driver").get<std::string>();
    c.upper = j.at("upper").get<std::string>();
    c.mount_options = j.at("mount_options").get<std::vector<std::string>>();
    c.lazy = j.at("lazy").get<bool>();
    c.platform = j.at("platform").get<std::string>();
    c.fetch_timeout_seconds = j.at("fetch_timeout_seconds").get<double>();
    c.prefetch = j.at("prefetch").get<std::string>();
    c.insecure_skip_toc_verify = j.at("insecure_skip_toc_verify").get<bool>();
  } catch (const json::exception& e) {
    return Status::Corrupt(std::string("a kept configuration: ") + e.what());
  }
  IMGFS_RETURN_IF_ERROR(CheckKeptConfig(c));
  // One encoding per content: no other key, order, spacing, escape or number form.
  Result<std::string> again = EncodeKeptConfig(c);
  if (!again.has_value() || *again != text) {
    return Status::Corrupt("a kept configuration not as imgfs writes it");
  }
  return c;
}

std::vector<std::string> KeptConfigDifferences(const KeptConfig& kept, const KeptConfig& other) {
  std::vector<std::string> out;
  auto differ = [&out](std::string_view name, const std::string& a, const std::string& b) {
    out.push_back(std::string(name) + ": kept " + a + ", asked " + b);
  };
  if (!SameImage(kept.image, other.image)) differ("image", kept.image, other.image);
  if (kept.root != other.root) differ("--root", kept.root, other.root);
  if (kept.writable != other.writable) {
    differ("--rw", Shown(kept.writable), Shown(other.writable));
  }
  if (kept.driver != other.driver) differ("--driver", Shown(kept.driver), Shown(other.driver));
  if (kept.upper != other.upper) differ("--upper", Shown(kept.upper), Shown(other.upper));
  const std::set<std::string> kept_options(kept.mount_options.begin(), kept.mount_options.end());
  const std::set<std::string> other_options(other.mount_options.begin(), other.mount_options.end());
  if (kept_options != other_options) {
    differ("-o", Shown(kept.mount_options), Shown(other.mount_options));
  }
  if (kept.lazy != other.lazy) differ("--pull", Shown(!kept.lazy), Shown(!other.lazy));
  if (kept.platform != other.platform) {
    differ("--platform", Shown(kept.platform), Shown(other.platform));
  }
  if (kept.fetch_timeout_seconds != other.fetch_timeout_seconds) {
    auto seconds = [](double s) { return s == 0 ? std::string("default") : json(s).dump() + " s"; };
    differ("--fetch-timeout", seconds(kept.fetch_timeout_seconds),
           seconds(other.fetch_timeout_seconds));
  }
  if (kept.prefetch != other.prefetch) differ("--prefetch", kept.prefetch, other.prefetch);
  if (kept.insecure_skip_toc_verify != other.insecure_skip_toc_verify) {
    differ("--insecure-skip-toc-verify", Shown(kept.insecure_skip_toc_verify),
           Shown(other.insecure_skip_toc_verify));
  }
  return out;
}

}  // namespace imgfs::fs
