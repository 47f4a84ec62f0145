// imgfs — docker's remaining image commands through the real binary and a real store:
// `tag`, `history`, `image prune` (never what a live FUSE mount or a container pins; the
// confirmation prompt on a real pty), `save`/`load` with skopeo as the oracle on both sides
// (and a FUSE mount of the loaded image against tiny.expected.txt), `images` sizes of lazily
// recorded images (against a real docker-registry), and the help listing.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "cache/leases.h"
#include "registry/digest.h"
#include "tests/support/e2e_fixture.h"
#include "tests/support/image_builder.h"
#include "tests/support/mount_support.h"
#include "tests/support/registry_server.h"
#include "tests/support/tree_compare.h"

namespace imgfs::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kFixtures = IMGFS_FIXTURES_DIR;
const std::string kImgfs = IMGFS_BINARY;
// The tiny fixture's image ID (tests/fixtures/digests.txt).
const std::string kTinyId =
    "sha256:0cc84c7c4c88dc2e67da0d6ca1c656feb42a95b6ddc4849e73459b9cd5df7b72";

class DockerCmdsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    ASSERT_TRUE(std::filesystem::exists(kFixtures + "/tiny-gzip")) << kFixtures;
  }
  void TearDown() override {
    if (IsMounted(Mnt())) RunProcess({"umount", "-l", Mnt()});
  }
  std::string Root() const { return dir_.Sub("store"); }
  std::string Mnt() const { return dir_.Sub("mnt"); }
  std::vector<std::string> Argv(std::vector<std::string> args) const {
    args.insert(args.begin(), {kImgfs, "--root", Root()});
    return args;
  }
  ProcessResult Imgfs(std::vector<std::string> args, std::string_view stdin_data = {}) {
    return RunImgfs(Root(), std::move(args), {}, stdin_data);
  }
  // Pulls a fixture layout; returns the name it is recorded under.
  std::string PullFixture(const std::string& fixture) {
    ProcessResult r = Imgfs({"pull", "-q", "oci:" + kFixtures + "/" + fixture + ":latest"});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    return r.out.substr(0, r.out.find('\n'));
  }
  // "REPOSITORY:TAG ID" lines of `imgfs images`, sorted.
  std::vector<std::string> ImageLines() {
    ProcessResult r =
        Imgfs({"images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    std::vector<std::string> lines;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    return lines;
  }
  size_t BlobCount() { return ListFilesRecursive(Root() + "/blobs/sha256").size(); }

  TempDir dir_;
};

TEST_F(DockerCmdsTest, TagNamesTheSameImageAndMovesTags) {
  const std::string name = PullFixture("tiny-gzip");
  ASSERT_EQ(name, "localhost/tiny-gzip:latest");

  ProcessResult tag = Imgfs({"tag", "tiny-gzip", "example.com/team/app:1"});
  EXPECT_EQ(tag.exit_code, 1) << "tiny-gzip means docker.io/library/tiny-gzip";
  EXPECT_THAT(tag.err, HasSubstr("No such image: tiny-gzip"));

  tag = Imgfs({"tag", "localhost/tiny-gzip", "example.com/team/app:1"});
  ASSERT_EQ(tag.exit_code, 0) << tag.Describe();
  EXPECT_EQ(tag.out, "");
  ProcessResult by_id = Imgfs({"image", "tag", "0cc84c7c", "app"});  // short ID, default tag
  ASSERT_EQ(by_id.exit_code, 0) << by_id.Describe();
  EXPECT_EQ(ImageLines(),
            (std::vector<std::string>{"app:latest " + kTinyId, "example.com/team/app:1 " + kTinyId,
                                      "localhost/tiny-gzip:latest " + kTinyId}));
  // The new names have no repo digest (the registry never saw them).
  ProcessResult digests = Imgfs({"images", "--digests", "--format", "{{.Repository}} {{.Digest}}"});
  EXPECT_THAT(digests.out, HasSubstr("app <none>"));
  EXPECT_THAT(digests.out, HasSubstr("localhost/tiny-gzip sha256:"));
  // Both names are the same image: inspect lists every tag, and removing one keeps the rest.
  ProcessResult tags = Imgfs({"inspect", "--format", "{{json .RepoTags}}", "app"});
  EXPECT_EQ(tags.out,
            "[\"app:latest\",\"example.com/team/app:1\",\"localhost/tiny-gzip:latest\"]\n");
  ASSERT_EQ(Imgfs({"rmi", "example.com/team/app:1"}).exit_code, 0);
  EXPECT_EQ(BlobCount(), 5u);

  // Moving a tag to another image leaves the old one dangling (no other name) as docker does.
  ASSERT_EQ(PullFixture("tiny-estargz"), "localhost/tiny-estargz:latest");
  const std::string estargz_id =
      Imgfs({"images", "--format", "{{.ID}}", "localhost/tiny-estargz"}).out;
  ASSERT_EQ(estargz_id.size(), 13u) << estargz_id;
  ASSERT_EQ(Imgfs({"tag", "localhost/tiny-estargz", "moving:1"}).exit_code, 0);
  ASSERT_EQ(Imgfs({"rmi", "localhost/tiny-estargz"}).exit_code, 0);
  EXPECT_EQ(Imgfs({"images", "--filter", "dangling=true", "-q"}).out, "");
  ASSERT_EQ(Imgfs({"tag", "localhost/tiny-gzip", "moving:1"}).exit_code, 0);
  EXPECT_EQ(Imgfs({"images", "--filter", "dangling=true", "-q"}).out, estargz_id);

  // Errors: one line on stderr, exit 1 (bad values) or 2 (usage), nothing recorded.
  size_t before = ImageLines().size();
  ProcessResult upper = Imgfs({"tag", "app", "Upper:1"});
  EXPECT_EQ(upper.exit_code, 1);
  EXPECT_THAT(upper.err, HasSubstr("must be lowercase"));
  ProcessResult digest = Imgfs({"tag", "moving:1", "x@sha256:" + std::string(64, 'a')});
  EXPECT_EQ(digest.exit_code, 1);
  EXPECT_THAT(digest.err, HasSubstr("refusing to create a tag with a digest reference"));
  ProcessResult missing = Imgfs({"tag", "nope:1", "x:1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "imgfs: No such image: nope:1\n");
  EXPECT_EQ(Imgfs({"tag", "moving:1"}).exit_code, 2);
  EXPECT_EQ(ImageLines().size(), before);
}

// An OCI layout whose config has docker-style history: metadata steps with empty_layer
// between the layer steps, one with a comment and a long created_by.
std::string WriteHistoryLayout(const std::string& dir, std::vector<int64_t>* layer_sizes) {
  ImageBuilder builder(dir);
  std::vector<std::string> layers = {
      GzipBytes(*BuildLayerTar({{{"a.txt", "first layer"}}})),
      GzipBytes(*BuildLayerTar({{{"b.bin", std::string(5000, 'x')}}}))};
  json config = {{"created", "2024-05-01T00:00:00Z"},
                 {"architecture", "amd64"},
                 {"os", "linux"},
                 {"config", {{"Cmd", {"/bin/sh"}}}},
                 {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}},
                 {"history",
                  {{{"created", "2024-01-01T00:00:00Z"},
                    {"created_by", "/bin/sh -c #(nop) ADD file:abc in / "}},
                   {{"created", "2024-01-02T00:00:00Z"},
                    {"created_by", "/bin/sh -c #(nop)  CMD [\"/bin/sh\"]"},
                    {"empty_layer", true}},
                   {{"created", "2024-02-01T00:00:00Z"},
                    {"created_by",
                     "/bin/sh -c apt-get update && apt-get install -y "
                     "--no-install-recommends\tcurl ca-certificates"},
                    {"comment", "buildkit.dockerfile.v0"}},
                   {{"created", "2024-05-01T00:00:00Z"},
                    {"created_by", "/bin/sh -c #(nop)  ENV A=b"},
                    {"empty_layer", true}}}}};
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"layers", json::array()}};
  for (const std::string& layer : layers) {
    std::string tar = layer;
    registry::Digest digest = *builder.WriteBlob(layer);
    manifest["layers"].push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                                  {"digest", digest.String()},
                                  {"size", layer.size()}});
    layer_sizes->push_back(static_cast<int64_t>(layer.size()));
  }
  config["rootfs"]["diff_ids"] = {
      registry::Digest::Sha256Of(*BuildLayerTar({{{"a.txt", "first layer"}}})).String(),
      registry::Digest::Sha256Of(*BuildLayerTar({{{"b.bin", std::string(5000, 'x')}}})).String()};
  std::string config_bytes = config.dump();
  registry::Digest config_digest = *builder.WriteBlob(config_bytes);
  manifest["config"] = {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                        {"digest", config_digest.String()},
                        {"size", config_bytes.size()}};
  std::string manifest_bytes = manifest.dump();
  registry::Descriptor desc;
  desc.media_type = "application/vnd.oci.image.manifest.v1+json";
  desc.digest = *builder.WriteBlob(manifest_bytes);
  desc.size = static_cast<int64_t>(manifest_bytes.size());
  EXPECT_TRUE(builder.SetIndexEntry("hist", desc).ok());
  return config_digest.String();
}

TEST_F(DockerCmdsTest, HistoryShowsTheConfigHistoryWithLayerSizes) {
  std::vector<int64_t> sizes;
  const std::string id = WriteHistoryLayout(dir_.Sub("layout"), &sizes);
  ProcessResult pull = Imgfs({"pull", "-q", "oci:" + dir_.Sub("layout") + ":hist"});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  const std::string name = pull.out.substr(0, pull.out.find('\n'));

  ProcessResult json_rows = Imgfs({"history", "--format", "json", "--no-trunc", name});
  ASSERT_EQ(json_rows.exit_code, 0) << json_rows.Describe();
  std::vector<json> rows;
  std::istringstream in(json_rows.out);
  for (std::string line; std::getline(in, line);) rows.push_back(json::parse(line));
  ASSERT_EQ(rows.size(), 4u);
  // Newest first; the image ID on the top row only; empty_layer steps are 0B.
  EXPECT_EQ(rows[0]["ID"], id);
  EXPECT_EQ(rows[0]["CreatedBy"], "/bin/sh -c #(nop)  ENV A=b");
  EXPECT_EQ(rows[0]["Size"], "0B");
  EXPECT_EQ(rows[1]["ID"], "<missing>");
  EXPECT_EQ(rows[1]["Size"], std::to_string(sizes[1]) + "B");
  EXPECT_EQ(rows[1]["Comment"], "buildkit.dockerfile.v0");
  EXPECT_EQ(rows[1]["CreatedBy"],
            "/bin/sh -c apt-get update && apt-get install -y --no-install-recommends curl "
            "ca-certificates");
  EXPECT_EQ(rows[2]["Size"], "0B");
  EXPECT_EQ(rows[3]["Size"], std::to_string(sizes[0]) + "B");
  EXPECT_EQ(rows[3]["CreatedAt"], "2024-01-01T00:00:00Z");
  EXPECT_THAT(rows[3]["CreatedSince"].get<std::string>(), HasSubstr("ago"));

  // The table: docker's columns, CREATED BY cut to 45 characters with "…".
  ProcessResult table = Imgfs({"image", "history", name});
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  EXPECT_TRUE(table.out.starts_with("IMAGE          CREATED       CREATED BY      ")) << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex("SIZE +COMMENT\n"))) << table.out;
  EXPECT_THAT(table.out, HasSubstr(id.substr(7, 12) + "   "));
  EXPECT_THAT(table.out, HasSubstr("/bin/sh -c apt-get update && apt-get install…   "));
  EXPECT_THAT(table.out, HasSubstr("buildkit.dockerfile.v0\n"));
  EXPECT_THAT(table.out, Not(HasSubstr("ca-certificates")));

  ProcessResult quiet = Imgfs({"history", "-q", name});
  EXPECT_EQ(quiet.out, id.substr(7, 12) + "\n<missing>\n<missing>\n<missing>\n");
  ProcessResult custom = Imgfs({"history", "--format", "table {{.Size}}\\t{{.Comment}}", name});
  EXPECT_TRUE(std::regex_search(custom.out, std::regex("^SIZE +COMMENT\n0B\n[0-9]+B +buildkit")))
      << custom.out;

  // --human=false (docker's -H/--human): CREATED is the RFC 3339 date, SIZE a byte count;
  // -H and --human=true keep the human form, the last occurrence wins.
  ProcessResult raw =
      Imgfs({"history", "--human=false", "--format", "{{.CreatedSince}} {{.Size}}", name});
  ASSERT_EQ(raw.exit_code, 0) << raw.Describe();
  EXPECT_EQ(raw.out, "2024-05-01T00:00:00Z 0\n2024-02-01T00:00:00Z " + std::to_string(sizes[1]) +
                         "\n2024-01-02T00:00:00Z 0\n2024-01-01T00:00:00Z " +
                         std::to_string(sizes[0]) + "\n");
  ProcessResult raw_table = Imgfs({"image", "history", "--human=false", name});
  ASSERT_EQ(raw_table.exit_code, 0) << raw_table.Describe();
  EXPECT_TRUE(std::regex_search(
      raw_table.out, std::regex("\n<missing> +2024-01-01T00:00:00Z +/bin/sh -c #\\(nop\\) ADD "
                                "file:abc in / +" +
                                std::to_string(sizes[0]) + "\n")))
      << raw_table.out;
  EXPECT_TRUE(raw_table.out.starts_with("IMAGE          CREATED AT             CREATED BY "))
      << raw_table.out;
  EXPECT_THAT(raw_table.out, Not(HasSubstr("ago")));
  EXPECT_THAT(raw_table.out, Not(HasSubstr("kB")));
  ProcessResult human = Imgfs({"history", "--human=false", "-H", "--format", "{{.Size}}", name});
  EXPECT_EQ(human.out,
            "0B\n" + std::to_string(sizes[1]) + "B\n0B\n" + std::to_string(sizes[0]) + "B\n");
  EXPECT_EQ(Imgfs({"history", "--human=true", "--format", "{{.CreatedSince}}", name}).out,
            Imgfs({"history", "--format", "{{.CreatedSince}}", name}).out);
  EXPECT_EQ(Imgfs({"history", "--human=maybe", name}).exit_code, 2);

  // The fixture's history: one step per layer; sizes as the manifest stores them.
  const std::string tiny = PullFixture("tiny-gzip");
  ProcessResult sizes_only = Imgfs({"history", "--format", "{{.Size}}", tiny});
  EXPECT_EQ(sizes_only.out, "449B\n448B\n2.67MB\n");

  ProcessResult missing = Imgfs({"history", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "imgfs: No such image: nope\n");
  EXPECT_EQ(Imgfs({"history"}).exit_code, 2);
}

TEST_F(DockerCmdsTest, PruneRemovesDanglingOrAllButNeverPinnedImages) {
  const std::string gzip = PullFixture("tiny-gzip");
  ASSERT_EQ(Imgfs({"tag", gzip, "keep:1"}).exit_code, 0);
  // Another image (eStargz: its own config) whose tag moved away: dangling, as in docker.
  json layout_index = json::parse(*ReadFile(kFixtures + "/tiny-estargz/index.json"));
  const std::string estargz_manifest = layout_index["manifests"][0]["digest"];
  ASSERT_EQ(PullFixture("tiny-estargz"), "localhost/tiny-estargz:latest");
  ASSERT_EQ(Imgfs({"tag", gzip, "localhost/tiny-estargz"}).exit_code, 0);
  // A third image, for a container.
  ImageBuilder builder(dir_.Sub("simple"));
  ASSERT_TRUE(builder.Add(SimpleImage({{"hello.txt", "hello"}}), "latest").has_value());
  ProcessResult simple = Imgfs({"pull", "-q", "oci:" + dir_.Sub("simple") + ":latest"});
  ASSERT_EQ(simple.exit_code, 0) << simple.Describe();
  ASSERT_EQ(ImageLines().size(), 5u);  // gzip under 3 names, <none>:<none>, simple

  // stdin is not a terminal: refused without -f, nothing removed.
  ProcessResult refused = Imgfs({"image", "prune"}, "y\n");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("stdin is not a terminal (use -f)"));
  EXPECT_EQ(ImageLines().size(), 5u);

  ProcessResult dangling = Imgfs({"image", "prune", "-f"});
  ASSERT_EQ(dangling.exit_code, 0) << dangling.Describe();
  EXPECT_THAT(dangling.out, HasSubstr("Deleted Images:\nuntagged: localhost/tiny-estargz@" +
                                      estargz_manifest + "\ndeleted: sha256:"));
  EXPECT_TRUE(
      std::regex_search(dangling.out, std::regex("\n\nTotal reclaimed space: 2\\.[0-9]+MB\n$")))
      << dangling.out;
  EXPECT_EQ(ImageLines().size(), 4u);
  EXPECT_EQ(Imgfs({"image", "prune", "-f"}).out, "Total reclaimed space: 0B\n");

  // -a: every image, except the one a live mount pins and the one a container pins.
  ASSERT_TRUE(MakeDirs(Mnt()).ok());
  ProcessResult mount = Imgfs({"mount", gzip, Mnt()});
  ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
  ASSERT_TRUE(IsMounted(Mnt()));
  json index = json::parse(*ReadFile(Root() + "/index.json"));
  std::string simple_manifest;
  for (const json& m : index["manifests"]) {
    if (m["annotations"]["io.imgfs.reference"].get<std::string>().find("simple") !=
        std::string::npos) {
      simple_manifest = m["digest"];
    }
  }
  ASSERT_FALSE(simple_manifest.empty());
  ASSERT_TRUE(MakeDirs(Root() + "/containers/web/upper").ok());
  json container = {{"version", 1}, {"name", "web"}, {"image", simple_manifest}};
  ASSERT_TRUE(WriteFileAtomic(Root() + "/containers/web/container.json", container.dump()).ok());
  ProcessResult all = Imgfs({"image", "prune", "-a", "-f"});
  ASSERT_EQ(all.exit_code, 0) << all.Describe();
  EXPECT_EQ(all.out, "Total reclaimed space: 0B\n");
  EXPECT_EQ(ImageLines().size(), 4u);
  EXPECT_FALSE(ReadAll(Mnt() + "/etc/os-release").empty()) << "the mount still serves";

  ASSERT_EQ(Imgfs({"umount", Mnt()}).exit_code, 0);
  // The mount daemon removes its lease as it exits.
  for (int i = 0; i < 200 && !ListFilesRecursive(Root() + "/mounts").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  all = Imgfs({"image", "prune", "-af"});
  ASSERT_EQ(all.exit_code, 0) << all.Describe();
  EXPECT_THAT(all.out, HasSubstr("untagged: keep:1\n"));
  EXPECT_THAT(all.out, HasSubstr("untagged: localhost/tiny-gzip:latest\n"));
  EXPECT_THAT(all.out, HasSubstr("deleted: " + kTinyId + "\n"));
  EXPECT_THAT(all.out, Not(HasSubstr("simple")));
  ASSERT_EQ(ImageLines().size(), 1u);
  EXPECT_THAT(ImageLines()[0], HasSubstr("simple"));
  std::filesystem::remove_all(Root() + "/containers/web");
  all = Imgfs({"image", "prune", "-af"});
  EXPECT_THAT(all.out, HasSubstr("simple"));
  EXPECT_TRUE(ImageLines().empty());
  EXPECT_EQ(BlobCount(), 0u);
  EXPECT_EQ(Imgfs({"image", "prune", "extra"}).exit_code, 2);
}

TEST_F(DockerCmdsTest, PruneFiltersByUntilAndLabelsAllMustMatch) {
  // Five images, each with its own config: created time and Labels as docker reads them.
  ImageBuilder builder(dir_.Sub("prune"));
  struct Spec {
    std::string tag;
    std::string created;
    std::map<std::string, std::string> labels;
  };
  const std::vector<Spec> specs = {
      {"old-web", "2020-01-01T00:00:00Z", {{"tier", "web"}}},
      {"old-db", "2020-06-01T00:00:00Z", {{"tier", "db"}, {"team", "x"}}},
      {"new-web", "2099-01-01T00:00:00Z", {{"tier", "web"}}},
      {"pinned", "2020-01-01T00:00:00Z", {{"tier", "web"}, {"pinned", "1"}}},
      {"nolabel", "2020-01-01T00:00:00Z", {}},
  };
  std::map<std::string, std::string> id_of;
  std::map<std::string, std::string> manifest_of;
  for (const Spec& spec : specs) {
    TestImageSpec image = SimpleImage({{"name.txt", spec.tag}});
    image.created = spec.created;
    image.labels = spec.labels;
    Result<BuiltImage> built = builder.Add(image, spec.tag);
    ASSERT_TRUE(built.has_value());
    id_of[spec.tag] = built->config_digest.String();
    manifest_of[spec.tag] = built->manifest_digest.String();
    ProcessResult pull = Imgfs({"pull", "-q", "oci:" + dir_.Sub("prune") + ":" + spec.tag});
    ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  }
  ASSERT_EQ(ImageLines().size(), 5u);
  // A container pins "pinned": no filter removes it.
  ASSERT_TRUE(MakeDirs(Root() + "/containers/web/upper").ok());
  json container = {{"version", 1}, {"name", "web"}, {"image", manifest_of["pinned"]}};
  ASSERT_TRUE(WriteFileAtomic(Root() + "/containers/web/container.json", container.dump()).ok());
  auto prune = [this, &id_of](std::vector<std::string> filters) {
    std::vector<std::string> args = {"image", "prune", "-a", "-f"};
    for (std::string& f : filters) args.insert(args.end(), {"--filter", std::move(f)});
    ProcessResult r = Imgfs(args);
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    std::vector<std::string> deleted;
    for (const auto& [tag, id] : id_of) {
      if (r.out.find("deleted: " + id + "\n") != std::string::npos) deleted.push_back(tag);
    }
    return deleted;
  };
  using Tags = std::vector<std::string>;

  // label and until together: only what matches both (new-web is too new, old-db is no web
  // image, pinned is pinned).
  EXPECT_EQ(prune({"label=tier=web", "until=2021-01-01"}), Tags{"old-web"});
  // label!=KEY: images without the label.
  EXPECT_EQ(prune({"label!=tier"}), Tags{"nolabel"});
  // A key alone matches any value; a duration counts back from now.
  EXPECT_EQ(prune({"label=team", "until=1h"}), Tags{"old-db"});
  EXPECT_EQ(ImageLines().size(), 2u);
  // Without -a only dangling images are candidates: the filters narrow, never widen.
  ProcessResult dangling_only = Imgfs({"image", "prune", "-f", "--filter", "label=tier=web"});
  EXPECT_EQ(dangling_only.out, "Total reclaimed space: 0B\n");
  // Nothing matches: label value differs, or label! excludes it.
  EXPECT_EQ(prune({"label=tier=db"}), Tags{});
  EXPECT_EQ(prune({"label!=tier=web", "until=2100-01-01T00:00:00Z"}), Tags{});

  // Bad filters: usage errors, nothing removed.
  for (const std::string bad : {"until=yesterday", "color=red", "label=", "until"}) {
    ProcessResult r = Imgfs({"image", "prune", "-af", "--filter", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.Describe();
  }
  EXPECT_EQ(ImageLines().size(), 2u);

  // The container gone, its image goes too; Unix seconds (2021-01-01) as docker accepts them.
  std::filesystem::remove_all(Root() + "/containers/web");
  EXPECT_EQ(prune({"until=1609459200", "label=pinned"}), Tags{"pinned"});
  EXPECT_EQ(prune({"until=1609459200.5"}), Tags{});
  ASSERT_EQ(ImageLines().size(), 1u);
  EXPECT_THAT(ImageLines()[0], HasSubstr("new-web"));
}

// Runs `imgfs image prune [args]` on a real pseudo-terminal, answers `answer`, returns what
// the terminal showed and the exit status.
std::pair<std::string, int> PruneOnTerminal(const std::vector<std::string>& argv,
                                            const std::string& answer) {
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (std::string& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  int master = -1;
  pid_t pid = forkpty(&master, nullptr, nullptr, nullptr);
  if (pid < 0) return {"forkpty failed", -1};
  if (pid == 0) {
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  std::string shown;
  bool answered = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (poll(&p, 1, 50) > 0) {
      char buf[512];
      ssize_t n = read(master, buf, sizeof(buf));
      if (n > 0) shown.append(buf, static_cast<size_t>(n));
      if (n <= 0) break;
    }
    if (!answered && shown.find("[y/N] ") != std::string::npos) {
      std::string line = answer + "\n";
      if (write(master, line.data(), line.size()) != static_cast<ssize_t>(line.size())) break;
      answered = true;
    }
    if (waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      // What it wrote after the last poll is still in the terminal: read it to the end
      // (read fails with EIO once the other side is closed and empty).
      for (;;) {
        pollfd rest{master, POLLIN, 0};
        if (poll(&rest, 1, 1000) <= 0) break;
        char more[512];
        ssize_t got = read(master, more, sizeof(more));
        if (got <= 0) break;
        shown.append(more, static_cast<size_t>(got));
      }
      break;
    }
  }
  if (pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  close(master);
  return {shown, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST_F(DockerCmdsTest, PruneAsksOnATerminal) {
  PullFixture("tiny-gzip");
  PullFixture("tiny-estargz");
  auto [no, no_status] = PruneOnTerminal(Argv({"image", "prune", "-a"}), "n");
  EXPECT_EQ(no_status, 0) << no;
  EXPECT_THAT(no, HasSubstr("WARNING! This will remove all images without at least one "
                            "container associated to them.\r\nAre you sure you want to "
                            "continue? [y/N] "));
  EXPECT_THAT(no, HasSubstr("Total reclaimed space: 0B"));
  EXPECT_EQ(ImageLines().size(), 2u);
  auto [yes, yes_status] = PruneOnTerminal(Argv({"image", "prune", "-a"}), "y");
  EXPECT_EQ(yes_status, 0) << yes;
  EXPECT_THAT(yes, HasSubstr("deleted: " + kTinyId));
  EXPECT_THAT(yes, HasSubstr("untagged: localhost/tiny-estargz:latest"));
  EXPECT_TRUE(ImageLines().empty());
}

json ReadJsonFile(const std::string& path) {
  Result<std::string> text = ReadFile(path);
  return text.has_value() ? json::parse(*text, nullptr, false) : json();
}

// The manifest of the one image in an OCI layout.
json LayoutManifest(const std::string& layout) {
  json index = ReadJsonFile(layout + "/index.json");
  if (!index.is_object() || index["manifests"].size() != 1) return json();
  std::string digest = index["manifests"][0]["digest"];
  return ReadJsonFile(layout + "/blobs/sha256/" + digest.substr(7));
}

TEST_F(DockerCmdsTest, SaveWritesArchivesSkopeoReads) {
  ASSERT_EQ(access("/usr/bin/skopeo", X_OK), 0) << "skopeo is missing: run scripts/setup.sh";
  const std::string gzip = PullFixture("tiny-gzip");
  ASSERT_EQ(Imgfs({"tag", gzip, "demo/app:1"}).exit_code, 0);
  const json stored = LayoutManifest(kFixtures + "/tiny-gzip");
  const json config = ReadJsonFile(kFixtures + "/tiny-gzip/blobs/sha256/" +
                                   stored["config"]["digest"].get<std::string>().substr(7));
  ASSERT_TRUE(config.is_object());

  // docker-archive (default): manifest.json names the config and layers; RepoTags as given.
  const std::string saved = dir_.Sub("saved.tar");
  ProcessResult save = Imgfs({"save", "-o", saved, "demo/app:1"});
  ASSERT_EQ(save.exit_code, 0) << save.Describe();
  EXPECT_EQ(save.out, "");
  ProcessResult manifest_json = RunProcess({"tar", "-xOf", saved, "manifest.json"});
  json manifest = json::parse(manifest_json.out, nullptr, false);
  ASSERT_TRUE(manifest.is_array()) << manifest_json.Describe();
  ASSERT_EQ(manifest.size(), 1u);
  EXPECT_EQ(manifest[0]["RepoTags"], json({"demo/app:1"}));
  EXPECT_EQ(manifest[0]["Config"], "blobs/sha256/" + kTinyId.substr(7));
  EXPECT_EQ(manifest[0]["Layers"].size(), 3u);
  ProcessResult repositories = RunProcess({"tar", "-xOf", saved, "repositories"});
  EXPECT_THAT(repositories.out, HasSubstr("{\"demo/app\":{\"1\":"));

  // skopeo reads it as a docker archive: the same config (the image ID's document) and the
  // same uncompressed layers (its layer digests, uncompressed, are our diff_ids).
  const std::string from_docker = dir_.Sub("from-docker");
  ProcessResult copy =
      RunProcess({"skopeo", "copy", "docker-archive:" + saved, "oci:" + from_docker + ":x"});
  ASSERT_EQ(copy.exit_code, 0) << copy.Describe();
  json copied = LayoutManifest(from_docker);
  ASSERT_TRUE(copied.is_object());
  json copied_config = ReadJsonFile(from_docker + "/blobs/sha256/" +
                                    copied["config"]["digest"].get<std::string>().substr(7));
  EXPECT_EQ(copied_config, config);
  ASSERT_EQ(copied["layers"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    std::string blob =
        from_docker + "/blobs/sha256/" + copied["layers"][i]["digest"].get<std::string>().substr(7);
    ProcessResult sum = RunProcess({"sh", "-c", "gzip -dcf \"$0\" | sha256sum", blob});
    EXPECT_EQ("sha256:" + sum.out.substr(0, 64), config["rootfs"]["diff_ids"][i]) << i;
  }

  // The same file is an OCI archive too; --format oci-archive writes only that. skopeo reads
  // it by the full reference, and the manifest, config and layers keep their digests.
  for (const std::vector<std::string>& variant :
       {std::vector<std::string>{}, std::vector<std::string>{"--format", "oci-archive"}}) {
    std::string file = dir_.Sub("oci-" + std::to_string(variant.size()) + ".tar");
    std::vector<std::string> args = {"save", "-o", file};
    args.insert(args.end(), variant.begin(), variant.end());
    args.push_back("demo/app:1");
    ASSERT_EQ(Imgfs(args).exit_code, 0);
    std::string out = dir_.Sub("from-oci-" + std::to_string(variant.size()));
    ProcessResult oci = RunProcess(
        {"skopeo", "copy", "oci-archive:" + file + ":docker.io/demo/app:1", "oci:" + out + ":x"});
    ASSERT_EQ(oci.exit_code, 0) << oci.Describe();
    json index = ReadJsonFile(out + "/index.json");
    EXPECT_EQ(index["manifests"][0]["digest"],
              ReadJsonFile(kFixtures + "/tiny-gzip/index.json")["manifests"][0]["digest"]);
    EXPECT_EQ(LayoutManifest(out), stored);
    ProcessResult listing = RunProcess({"tar", "-tf", file});
    EXPECT_EQ(listing.out.find("manifest.json") != std::string::npos, variant.empty());
  }

  // To stdout; several images, each once; errors.
  ProcessResult to_stdout = Imgfs({"save", "demo/app:1", gzip, "localhost/tiny-gzip"});
  ASSERT_EQ(to_stdout.exit_code, 0) << to_stdout.Describe();
  ASSERT_TRUE(WriteFileAtomic(dir_.Sub("stdout.tar"), to_stdout.out).ok());
  manifest = json::parse(RunProcess({"tar", "-xOf", dir_.Sub("stdout.tar"), "manifest.json"}).out);
  ASSERT_EQ(manifest.size(), 1u);
  EXPECT_EQ(manifest[0]["RepoTags"], json({"demo/app:1", "localhost/tiny-gzip:latest"}));
  ProcessResult missing = Imgfs({"save", "-o", dir_.Sub("x.tar"), "nope:1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "imgfs: No such image: nope:1\n");
  EXPECT_FALSE(std::filesystem::exists(dir_.Sub("x.tar")));
  EXPECT_EQ(Imgfs({"save", "--format", "zip", "demo/app:1"}).exit_code, 2);
  EXPECT_EQ(Imgfs({"save"}).exit_code, 2);
}

TEST_F(DockerCmdsTest, LoadReadsSkopeoArchivesAndOurOwn) {
  ASSERT_EQ(access("/usr/bin/skopeo", X_OK), 0) << "skopeo is missing: run scripts/setup.sh";
  // A docker archive made by skopeo, with two names for the image.
  const std::string archive = dir_.Sub("skopeo.tar");
  ProcessResult made = RunProcess({"skopeo", "copy", "oci:" + kFixtures + "/tiny-gzip:latest",
                                   "docker-archive:" + archive + ":demo/made:1", "--additional-tag",
                                   "example.com/other:2"});
  ASSERT_EQ(made.exit_code, 0) << made.Describe();
  ProcessResult load = Imgfs({"load", "-i", archive});
  ASSERT_EQ(load.exit_code, 0) << load.Describe();
  EXPECT_THAT(load.out, HasSubstr("Loaded image: demo/made:1\n"));
  EXPECT_THAT(load.out, HasSubstr("Loaded image: example.com/other:2\n"));
  EXPECT_EQ(ImageLines(),
            (std::vector<std::string>{"demo/made:1 " + kTinyId, "example.com/other:2 " + kTinyId}));

  // Mounted, the loaded image is the fixture's tree.
  ASSERT_TRUE(MakeDirs(Mnt()).ok());
  ProcessResult mount = Imgfs({"mount", "demo/made:1", Mnt()});
  ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
  TreeOptions options;
  std::string error;
  auto actual = ListTree(Mnt(), options, &error);
  ASSERT_TRUE(error.empty()) << error;
  auto listing = ParseListing(ReadAll(kFixtures + "/tiny.expected.txt"));
  ASSERT_GT(listing.size(), 50u);
  std::vector<std::string> diffs = CompareWithListing(actual, listing, options);
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " differences, first: " << diffs.front();
  ASSERT_EQ(Imgfs({"umount", Mnt()}).exit_code, 0);

  // Our own archive from stdin into another store; an OCI archive from a file.
  ASSERT_EQ(Imgfs({"save", "-o", dir_.Sub("ours.tar"), "demo/made:1"}).exit_code, 0);
  ASSERT_EQ(Imgfs({"save", "--format", "oci-archive", "-o", dir_.Sub("ours-oci.tar"),
                   "example.com/other:2"})
                .exit_code,
            0);
  ASSERT_EQ(Imgfs({"rmi", "-f", kTinyId}).exit_code, 0);
  ASSERT_TRUE(ImageLines().empty());
  Result<std::string> ours = ReadFile(dir_.Sub("ours.tar"));
  ASSERT_TRUE(ours.has_value());
  load = Imgfs({"load"}, *ours);
  ASSERT_EQ(load.exit_code, 0) << load.Describe();
  EXPECT_EQ(load.out, "Loaded image: demo/made:1\n");
  load = Imgfs({"image", "load", "-q", "-i", dir_.Sub("ours-oci.tar")});
  ASSERT_EQ(load.exit_code, 0) << load.Describe();
  EXPECT_EQ(load.out, "example.com/other:2\n");
  EXPECT_EQ(ImageLines(),
            (std::vector<std::string>{"demo/made:1 " + kTinyId, "example.com/other:2 " + kTinyId}));

  ProcessResult bad = Imgfs({"load", "-i", kFixtures + "/README.md"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("not a docker archive"));
  EXPECT_EQ(Imgfs({"load", "extra"}).exit_code, 2);
}

TEST_F(DockerCmdsTest, SaveAndLoadArchivesOfSeveralImages) {
  ASSERT_EQ(access("/usr/bin/skopeo", X_OK), 0) << "skopeo is missing: run scripts/setup.sh";
  // Three images: two named, one saved by ID only (docker: no name in the archive).
  const std::string gzip = PullFixture("tiny-gzip");
  ASSERT_EQ(Imgfs({"tag", gzip, "demo/a:1"}).exit_code, 0);
  ImageBuilder builder(dir_.Sub("layout"));
  Result<BuiltImage> b = builder.Add(SimpleImage({{"b.txt", "bee"}}), "b");
  Result<BuiltImage> c = builder.Add(SimpleImage({{"c.txt", "sea"}}), "c");
  ASSERT_TRUE(b.has_value() && c.has_value());
  for (const char* tag : {"b", "c"}) {
    ProcessResult pull = Imgfs({"pull", "-q", "oci:" + dir_.Sub("layout") + ":" + tag});
    ASSERT_EQ(pull.exit_code, 0) << pull.Describe();
  }
  ASSERT_EQ(Imgfs({"tag", "localhost/layout:b", "demo/b:2"}).exit_code, 0);
  const std::string b_id = b->config_digest.String();
  const std::string c_id = c->config_digest.String();

  const std::string multi = dir_.Sub("multi.tar");
  ProcessResult save = Imgfs({"save", "-o", multi, "demo/a:1", "demo/b:2", c_id});
  ASSERT_EQ(save.exit_code, 0) << save.Describe();
  json manifest = json::parse(RunProcess({"tar", "-xOf", multi, "manifest.json"}).out);
  ASSERT_EQ(manifest.size(), 3u) << manifest.dump();
  EXPECT_EQ(manifest[0]["RepoTags"], json({"demo/a:1"}));
  EXPECT_EQ(manifest[1]["RepoTags"], json({"demo/b:2"}));
  EXPECT_TRUE(manifest[2]["RepoTags"].is_null());
  EXPECT_EQ(manifest[2]["Config"], "blobs/sha256/" + c_id.substr(7));
  json index = json::parse(RunProcess({"tar", "-xOf", multi, "index.json"}).out);
  EXPECT_EQ(index["manifests"].size(), 3u);

  // skopeo takes each image out of the one archive: by RepoTag, by position, by ref name.
  // From a docker archive it rewrites the config blob, so the oracle is its document: the one
  // stored under the expected image ID.
  auto config_of = [](const std::string& layout) {
    json m = LayoutManifest(layout);
    if (!m.is_object()) return json();
    return ReadJsonFile(layout + "/blobs/sha256/" +
                        m["config"]["digest"].get<std::string>().substr(7));
  };
  const std::vector<std::pair<std::string, std::string>> selections = {
      {"docker-archive:" + multi + ":demo/b:2", b_id},
      {"docker-archive:" + multi + ":@2", c_id},
      {"docker-archive:" + multi + ":demo/a:1", kTinyId},
      {"oci-archive:" + multi + ":docker.io/demo/b:2", b_id},
  };
  for (size_t i = 0; i < selections.size(); ++i) {
    const std::string out = dir_.Sub("skopeo-" + std::to_string(i));
    ProcessResult copy = RunProcess({"skopeo", "copy", selections[i].first, "oci:" + out + ":x"});
    ASSERT_EQ(copy.exit_code, 0) << selections[i].first << ": " << copy.Describe();
    json expected = ReadJsonFile(Root() + "/blobs/sha256/" + selections[i].second.substr(7));
    ASSERT_TRUE(expected.is_object()) << selections[i].second;
    EXPECT_EQ(config_of(out), expected) << selections[i].first;
  }

  // Loaded into a new store: every image, each under its name, the unnamed one by ID.
  auto load_into = [this](const std::string& store, const std::string& file) {
    return RunImgfs(dir_.Sub(store), {"load", "-i", file});
  };
  auto ids_in = [this](const std::string& store) {
    ProcessResult r = RunImgfs(
        dir_.Sub(store), {"images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"});
    std::vector<std::string> lines;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    return lines;
  };
  ProcessResult load = load_into("docker-store", multi);
  ASSERT_EQ(load.exit_code, 0) << load.Describe();
  EXPECT_EQ(load.out,
            "Loaded image: demo/a:1\nLoaded image: demo/b:2\nLoaded image ID: " + c_id + "\n");
  // The unnamed image is recorded by manifest digest (REPOSITORY from the file, TAG <none>).
  EXPECT_EQ(ids_in("docker-store"),
            (std::vector<std::string>{"demo/a:1 " + kTinyId, "demo/b:2 " + b_id,
                                      "localhost/multi:<none> " + c_id}));

  // The same images as an OCI archive: index.json lists them, named by ref.name.
  const std::string multi_oci = dir_.Sub("multi-oci.tar");
  ASSERT_EQ(
      Imgfs({"save", "--format", "oci-archive", "-o", multi_oci, "demo/a:1", "demo/b:2", c_id})
          .exit_code,
      0);
  load = load_into("oci-store", multi_oci);
  ASSERT_EQ(load.exit_code, 0) << load.Describe();
  EXPECT_EQ(load.out,
            "Loaded image: demo/a:1\nLoaded image: demo/b:2\nLoaded image ID: " + c_id + "\n");
  EXPECT_EQ(ids_in("oci-store"),
            (std::vector<std::string>{"demo/a:1 " + kTinyId, "demo/b:2 " + b_id,
                                      "localhost/multi-oci:<none> " + c_id}));

  // An OCI archive as skopeo and other tools write them: a tar of a layout whose ref names
  // are bare tags; each image is recorded as `pull oci-archive:FILE:TAG` names it.
  ProcessResult tar =
      RunProcess({"tar", "-cf", dir_.Sub("two.tar"), "-C", dir_.Sub("layout"), "."});
  ASSERT_EQ(tar.exit_code, 0) << tar.Describe();
  load = load_into("tags-store", dir_.Sub("two.tar"));
  ASSERT_EQ(load.exit_code, 0) << load.Describe();
  EXPECT_EQ(load.out, "Loaded image: localhost/two:b\nLoaded image: localhost/two:c\n");
  EXPECT_EQ(ids_in("tags-store"),
            (std::vector<std::string>{"localhost/two:b " + b_id, "localhost/two:c " + c_id}));
}

// `system df --format json`, one object per row, by type.
std::map<std::string, json> DfRows(const ProcessResult& r) {
  std::map<std::string, json> rows;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object()) rows[j["Type"]] = j;
  }
  return rows;
}

TEST_F(DockerCmdsTest, SystemDfCountsImagesContainersAndTheChunkCache) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(kFixtures + "/tiny-estargz", "latest", "demo/lazy:1").ok());
  const std::string lazy = (*reg)->host_port() + "/demo/lazy:1";
  const std::string gzip = PullFixture("tiny-gzip");
  ASSERT_EQ(Imgfs({"pull", "--lazy", lazy}).exit_code, 0);

  ProcessResult empty = Imgfs({"system", "df"});
  ASSERT_EQ(empty.exit_code, 0) << empty.Describe();
  EXPECT_TRUE(std::regex_search(
      empty.out, std::regex("^TYPE +TOTAL +ACTIVE +SIZE +RECLAIMABLE\nImages +2 +0 +[0-9.]+[kM]B +"
                            "[0-9.]+[kM]B \\(100%\\)\nContainers +0 +0 +0B +0B\n"
                            "Local Volumes +0 +0 +0B +0B\nBuild Cache +0 +0 +0B +0B\n$")))
      << empty.out;

  // A lazy mount that read a file (chunks now cached), a running and a stopped container.
  ASSERT_TRUE(MakeDirs(Mnt()).ok());
  ProcessResult mount = Imgfs({"mount", "--lazy", lazy, Mnt()});
  ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
  ASSERT_EQ(ReadAll(Mnt() + "/data/random.bin").size(), 1576960u);
  json index = ReadJsonFile(Root() + "/index.json");
  std::string gzip_manifest;
  for (const json& m : index["manifests"]) {
    if (m["annotations"]["io.imgfs.reference"] == "localhost/tiny-gzip:latest") {
      gzip_manifest = m["digest"];
    }
  }
  ASSERT_FALSE(gzip_manifest.empty());
  for (const auto& [name, running] : {std::pair<std::string, bool>{"web", true}, {"old", false}}) {
    ASSERT_TRUE(MakeDirs(Root() + "/containers/" + name + "/upper").ok());
    ASSERT_TRUE(WriteFileAtomic(Root() + "/containers/" + name + "/upper/data",
                                std::string(running ? 10000 : 200000, 'd'))
                    .ok());
    json c = {{"version", 1},
              {"name", name},
              {"id", std::string(64, running ? 'a' : 'b')},
              {"image", gzip_manifest},
              {"reference", "localhost/tiny-gzip:latest"},
              {"command", {"sh", "-c", "true"}},
              {"status", running ? "running" : "exited"},
              {"exit_code", 3}};
    if (running) {
      c["pid"] = getpid();
      c["pid_start"] = cache::ProcessStartTime(getpid());
    }
    ASSERT_TRUE(WriteFileAtomic(Root() + "/containers/" + name + "/container.json", c.dump()).ok());
  }
  json du = json::parse(Imgfs({"cache", "du", "--format", "json"}).out);
  const int64_t image_bytes =
      du["blobs"]["bytes"].get<int64_t>() + du["indexes"]["bytes"].get<int64_t>();
  const int64_t chunks = du["chunks"]["count"];
  ASSERT_GT(chunks, 0);

  std::map<std::string, json> rows = DfRows(Imgfs({"system", "df", "--format", "json"}));
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows["Images"]["TotalCount"], "2");
  EXPECT_EQ(rows["Images"]["Active"], "2") << "one pinned by a mount, one by containers";
  EXPECT_EQ(rows["Images"]["Reclaimable"], "0B (0%)");
  char size[32];
  std::snprintf(size, sizeof(size), "%.4gMB", static_cast<double>(image_bytes) / 1e6);
  EXPECT_EQ(rows["Images"]["Size"], size) << "blobs/ and indexes/ as cache du counts them";
  EXPECT_EQ(rows["Containers"]["TotalCount"], "2");
  EXPECT_EQ(rows["Containers"]["Active"], "1");
  EXPECT_TRUE(std::regex_match(rows["Containers"]["Reclaimable"].get<std::string>(),
                               std::regex("20[0-9.]*kB \\(9[0-9]%\\)")))
      << rows["Containers"];
  EXPECT_EQ(rows["Local Volumes"]["Size"], "0B");
  // The mount may still be caching chunks (a background pass once reads passed half of a
  // layer): df counts between what `cache du` saw before and after it.
  const int64_t chunks_after =
      json::parse(Imgfs({"cache", "du", "--format", "json"}).out)["chunks"]["count"];
  for (const char* column : {"TotalCount", "Active"}) {
    const int64_t counted = std::stoll(rows["Build Cache"][column].get<std::string>());
    EXPECT_GE(counted, chunks) << column;
    EXPECT_LE(counted, chunks_after) << column;
  }
  EXPECT_EQ(rows["Build Cache"]["Reclaimable"], "0B");

  ProcessResult verbose = Imgfs({"system", "df", "-v"});
  ASSERT_EQ(verbose.exit_code, 0) << verbose.Describe();
  EXPECT_THAT(verbose.out, HasSubstr("Images space usage:\n\nREPOSITORY "));
  EXPECT_THAT(verbose.out, HasSubstr("Containers space usage:\n\nCONTAINER ID "));
  EXPECT_THAT(verbose.out, HasSubstr("aaaaaaaaaaaa   localhost/tiny-gzip:latest   \"sh -c true\""));
  EXPECT_THAT(verbose.out, HasSubstr("Exited (3)"));
  EXPECT_THAT(verbose.out, HasSubstr("Build cache usage: "));

  // Unpinned: every image byte and chunk is reclaimable.
  ASSERT_EQ(Imgfs({"umount", Mnt()}).exit_code, 0);
  for (int i = 0; i < 200 && !ListFilesRecursive(Root() + "/mounts").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::filesystem::remove_all(Root() + "/containers");
  rows = DfRows(Imgfs({"system", "df", "--format", "json"}));
  EXPECT_EQ(rows["Images"]["Active"], "0");
  EXPECT_EQ(rows["Images"]["Size"].get<std::string>() + " (100%)", rows["Images"]["Reclaimable"]);
  EXPECT_EQ(rows["Build Cache"]["Active"], "0");
  EXPECT_EQ(rows["Build Cache"]["Reclaimable"], rows["Build Cache"]["Size"]);
  EXPECT_EQ(rows["Containers"]["TotalCount"], "0");
  const int64_t chunks_final =
      json::parse(Imgfs({"cache", "du", "--format", "json"}).out)["chunks"]["count"];
  EXPECT_GE(chunks_final, chunks);
  ProcessResult templated = Imgfs({"system", "df", "--format", "{{.Type}}={{.TotalCount}}"});
  EXPECT_EQ(templated.out, "Images=2\nContainers=0\nLocal Volumes=0\nBuild Cache=" +
                               std::to_string(chunks_final) + "\n");
  EXPECT_EQ(Imgfs({"system", "bogus"}).exit_code, 2);
}

TEST_F(DockerCmdsTest, ImagesSaysHowMuchOfALazyImageIsLocal) {
  auto reg = RegistryServer::Start();
  ASSERT_TRUE(reg.has_value()) << reg.error().ToString();
  ASSERT_TRUE((*reg)->PushOciLayout(kFixtures + "/tiny-estargz", "latest", "demo/lazy:1").ok());
  const std::string ref = (*reg)->host_port() + "/demo/lazy:1";
  ProcessResult pull = Imgfs({"pull", "--lazy", ref});
  ASSERT_EQ(pull.exit_code, 0) << pull.Describe();

  // Manifest and config only: a couple of kB of the 2.67 MB image.
  ProcessResult images = Imgfs({"images"});
  ASSERT_EQ(images.exit_code, 0) << images.Describe();
  std::smatch m;
  ASSERT_TRUE(
      std::regex_search(images.out, m, std::regex("(2\\.6[0-9]+MB) \\(([0-9.]+)kB local\\)")))
      << images.out;
  const double before_kb = std::stod(m[2]);
  EXPECT_LT(before_kb, 10);
  ProcessResult as_json = Imgfs({"images", "--format", "{{.Size}}|{{.LocalSize}}|{{.Complete}}"});
  EXPECT_EQ(as_json.out, std::string(m[1]) + "|" + std::string(m[2]) + "kB|false\n");

  // Reading a file through a lazy mount brings its chunks into the store: more is local.
  ASSERT_TRUE(MakeDirs(Mnt()).ok());
  ProcessResult mount = Imgfs({"mount", "--lazy", ref, Mnt()});
  ASSERT_EQ(mount.exit_code, 0) << mount.Describe();
  EXPECT_EQ(ReadAll(Mnt() + "/data/random.bin").size(), 1576960u);
  ASSERT_EQ(Imgfs({"umount", Mnt()}).exit_code, 0);
  images = Imgfs({"images"});
  ASSERT_TRUE(
      std::regex_search(images.out, m, std::regex("2\\.6[0-9]+MB \\(([0-9.]+)([kM])B local\\)")))
      << images.out;
  const double after_kb = std::stod(m[1]) * (m[2] == "M" ? 1000 : 1);
  EXPECT_GT(after_kb, 1500) << images.out;

  // A complete image shows its size alone.
  ASSERT_EQ(Imgfs({"pull", ref}).exit_code, 0);
  images = Imgfs({"images"});
  EXPECT_THAT(images.out, Not(HasSubstr("local)")));
}

TEST_F(DockerCmdsTest, HelpKeepsASpaceAfterLongCommandNames) {
  ProcessResult help = Imgfs({"--help"});
  ASSERT_EQ(help.exit_code, 0);
  std::istringstream in(help.out);
  bool in_commands = false;
  size_t column = 0;
  int listed = 0;
  for (std::string line; std::getline(in, line);) {
    if (line == "Commands:") {
      in_commands = true;
      continue;
    }
    if (!in_commands) continue;
    if (line.empty()) break;
    ASSERT_TRUE(line.starts_with("  ")) << line;
    size_t name_end = line.find(' ', 2);
    size_t text = line.find_first_not_of(' ', name_end);
    ASSERT_NE(text, std::string::npos) << line;
    EXPECT_GE(text - name_end, 2u) << line;
    if (column == 0) column = text;
    EXPECT_EQ(text, column) << "summaries line up: " << line;
    ++listed;
  }
  EXPECT_GE(listed, 20);
  // The longest name (layer-store) sets the column; two spaces after it.
  EXPECT_THAT(help.out, HasSubstr("  layer-store  Serve lazily read layers"));
  EXPECT_THAT(help.out, HasSubstr("  containers   Manage containers"));
  EXPECT_THAT(help.out, HasSubstr("  tag          Create a tag"));
  EXPECT_THAT(help.out, HasSubstr("  history      Show the history"));
  ProcessResult image_help = Imgfs({"image", "--help"});
  EXPECT_THAT(image_help.out, HasSubstr("  prune     Remove unused images"));
}

}  // namespace
}  // namespace imgfs::testing
