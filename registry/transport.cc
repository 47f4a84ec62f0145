// imgfs — image arguments with transports: see transport.h.
#include "registry/transport.h"

#include <cctype>

namespace imgfs::registry {
namespace {

// Transports of containers/image (skopeo, podman) that imgfs does not read.
constexpr std::string_view kUnsupportedTransports[] = {
    "dir", "docker-daemon", "containers-storage", "ostree", "sif", "tarball"};

// A repository path component from a file or directory name: lower case, runs of characters
// outside [a-z0-9] become one '-', no leading/trailing separators.
std::string RepoComponent(std::string_view name) {
  std::string out;
  for (char c : name) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 && u < 0x80) {
      out.push_back(static_cast<char>(std::tolower(u)));
    } else if (!out.empty() && out.back() != '-') {
      out.push_back('-');
    }
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? std::string("image") : out;
}

// The last path component, without a trailing "/" and (for archives) a ".tar" suffix.
std::string BaseName(std::string path, bool strip_tar) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base == "." || base == "..") base = "image";
  if (strip_tar && base.size() > 4 && base.compare(base.size() - 4, 4, ".tar") == 0) {
    base.resize(base.size() - 4);
  }
  return base;
}

// Splits "PATH[:SELECTOR]" or "PATH@sha256:HEX" of a local transport.
Status SplitLocal(std::string_view rest, bool allow_digest, SourceSpec* spec) {
  size_t colon = rest.find(':');
  std::string_view path = rest.substr(0, colon);
  std::string_view selector =
      colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
  if (allow_digest) {
    size_t at = path.rfind('@');
    std::string_view after = at == std::string_view::npos ? "" : rest.substr(at + 1);
    if (after.substr(0, 7) == "sha256:" || after.substr(0, 7) == "sha512:") {
      // "DIR@sha256:HEX": the first ':' belongs to the digest.
      Result<Digest> d = Digest::Parse(after);
      if (!d.has_value()) {
        return Status::InvalidArgument("invalid digest in '" + spec->text +
                                       "': " + d.error().message());
      }
      path = rest.substr(0, at);
      selector = std::string_view();
      spec->selector = "@" + d->String();
    }
  }
  if (path.empty()) {
    return Status::InvalidArgument("'" + spec->text + "': missing the path after the transport");
  }
  spec->path = std::string(path);
  if (spec->selector.empty()) spec->selector = std::string(selector);
  if (spec->selector.size() > 1 && spec->selector[0] == '@' &&
      spec->transport != Transport::kDockerArchive) {
    Result<Digest> d = Digest::Parse(std::string_view(spec->selector).substr(1));
    if (!d.has_value()) {
      return Status::InvalidArgument("invalid digest in '" + spec->text +
                                     "': " + d.error().message());
    }
  }
  return Status::Ok();
}

}  // namespace

std::string_view TransportName(Transport t) {
  switch (t) {
    case Transport::kRegistry:
      return "docker";
    case Transport::kOciLayout:
      return "oci";
    case Transport::kOciArchive:
      return "oci-archive";
    case Transport::kDockerArchive:
      return "docker-archive";
  }
  return "docker";
}

Result<SourceSpec> ParseSourceSpec(std::string_view arg) {
  SourceSpec spec;
  spec.text = std::string(arg);
  if (arg.empty()) return Status::InvalidArgument("empty image argument");
  struct Prefix {
    std::string_view prefix;
    Transport transport;
  };
  for (const Prefix& p :
       {Prefix{"oci:", Transport::kOciLayout}, Prefix{"oci-archive:", Transport::kOciArchive},
        Prefix{"docker-archive:", Transport::kDockerArchive}}) {
    if (arg.substr(0, p.prefix.size()) == p.prefix) {
      spec.transport = p.transport;
      IMGFS_RETURN_IF_ERROR(
          SplitLocal(arg.substr(p.prefix.size()), p.transport != Transport::kDockerArchive, &spec));
      return spec;
    }
  }
  std::string_view ref = arg;
  if (arg.substr(0, 9) == "docker://") {
    ref = arg.substr(9);
  } else {
    size_t colon = arg.find(':');
    if (colon != std::string_view::npos) {
      std::string_view name = arg.substr(0, colon);
      for (std::string_view t : kUnsupportedTransports) {
        if (name == t) {
          return Status::Unsupported("transport '" + std::string(t) + ":' is not supported (use " +
                                     "oci:, oci-archive:, docker-archive: or a registry " +
                                     "reference)");
        }
      }
    }
  }
  Result<Reference> parsed = Reference::Parse(ref);
  if (!parsed.has_value()) return parsed.error();
  spec.reference = std::move(*parsed);
  return spec;
}

Result<std::unique_ptr<LocalSource>> OpenLocalSource(const SourceSpec& spec) {
  switch (spec.transport) {
    case Transport::kOciLayout:
      return LocalSource::OpenOciLayout(spec.path, spec.selector);
    case Transport::kOciArchive:
      return LocalSource::OpenOciArchive(spec.path, spec.selector);
    case Transport::kDockerArchive:
      return LocalSource::OpenDockerArchive(spec.path, spec.selector);
    case Transport::kRegistry:
      break;
  }
  return Status::InvalidArgument("'" + spec.text + "' is a registry reference, not a local image");
}

Result<Reference> LocalImageReference(const SourceSpec& spec, const LocalSource& source) {
  const std::string& name = source.ref_name();
  if (spec.transport == Transport::kDockerArchive && !name.empty()) {
    Result<Reference> r = Reference::Parse(name);
    if (!r.has_value()) {
      return r.error().WithContext(source.Describe() + ": RepoTags[0]");
    }
    return r;
  }
  if (spec.transport == Transport::kRegistry) {
    return Status::InvalidArgument("'" + spec.text + "' is not a local image");
  }
  // An OCI ref name that names an image (has a repository part) is used as is.
  if (!name.empty() && name.find_first_of("/:@") != std::string::npos) {
    Result<Reference> r = Reference::Parse(name);
    if (r.has_value()) return r;
  }
  const std::string repo =
      "localhost/" + RepoComponent(BaseName(spec.path, spec.transport != Transport::kOciLayout));
  if (name.empty() && spec.selector.size() > 1 && spec.selector[0] == '@') {
    return Reference::Parse(repo + spec.selector);  // selected by digest
  }
  const std::string tag = IsValidTag(name) ? name : "latest";
  return Reference::Parse(repo + ":" + tag);
}

}  // namespace imgfs::registry
