// Tests for registry/mirrored_source.h: endpoint order, which errors fall back, the current
// endpoint following the manifest and skipping dead mirrors, no fallback after bytes reached
// a sink.
#include "registry/mirrored_source.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace imgfs::registry {
namespace {

// One endpoint: answers every call with `error` when set, else with its blob / manifest.
// `partial` makes FetchBlob hand half the blob to the sink before failing with `error`.
class ScriptedSource : public BlobSource {
 public:
  ScriptedSource(std::string name, std::string blob)
      : name_(std::move(name)), blob_(std::move(blob)) {}

  Result<FetchedManifest> GetManifest(std::string_view) override {
    ++calls;
    if (!manifest_error.ok()) return manifest_error;
    if (!error.ok()) return error;
    return FetchedManifest{"{\"from\":\"" + name_ + "\"}", "application/json",
                           Digest::Sha256Of(name_)};
  }
  Status FetchBlob(const Digest&, int64_t, const BlobSink& sink) override {
    ++calls;
    if (partial) {
      IMGFS_RETURN_IF_ERROR(sink(std::string_view(blob_).substr(0, blob_.size() / 2)));
      return error;
    }
    if (!error.ok()) return error;
    return sink(blob_);
  }
  Result<std::string> ReadBlobRange(const Digest&, ByteRange range) override {
    ++calls;
    if (!error.ok()) return error;
    return blob_.substr(range.offset, range.length);
  }
  Result<std::vector<std::string>> ListTags() override {
    ++calls;
    if (!error.ok()) return error;
    return std::vector<std::string>{name_};
  }
  std::string Describe() const override { return name_; }

  Status error;
  Status manifest_error;
  bool partial = false;
  int calls = 0;

 private:
  std::string name_;
  std::string blob_;
};

class MirroredSourceTest : public ::testing::Test {
 protected:
  void Make(size_t n) {
    std::vector<std::unique_ptr<BlobSource>> endpoints;
    for (size_t i = 0; i < n; ++i) {
      auto s = std::make_unique<ScriptedSource>("e" + std::to_string(i), "0123456789");
      sources_.push_back(s.get());
      endpoints.push_back(std::move(s));
    }
    source_ = std::make_unique<MirroredSource>(std::move(endpoints));
  }
  Result<std::string> Fetch() {
    std::string got;
    Status st = source_->FetchBlob(Digest::Sha256Of("x"), 10, [&](std::string_view chunk) {
      got.append(chunk);
      return Status::Ok();
    });
    if (!st.ok()) return st;
    return got;
  }

  std::vector<ScriptedSource*> sources_;
  std::unique_ptr<MirroredSource> source_;
};

TEST_F(MirroredSourceTest, FirstEndpointServesWhenItWorks) {
  Make(3);
  Result<FetchedManifest> m = source_->GetManifest("1");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->bytes, "{\"from\":\"e0\"}");
  EXPECT_EQ(*Fetch(), "0123456789");
  EXPECT_EQ(sources_[1]->calls + sources_[2]->calls, 0);
  EXPECT_EQ(source_->Describe(), "e2 (mirrors: e0, e1)");
}

TEST_F(MirroredSourceTest, DeadMirrorFallsBackAndIsSkippedAfterwards) {
  Make(3);
  sources_[0]->error = Status::Unavailable("connection refused");
  Result<FetchedManifest> m = source_->GetManifest("1");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->bytes, "{\"from\":\"e1\"}");
  EXPECT_EQ(source_->current(), 1u);
  EXPECT_EQ(*Fetch(), "0123456789");
  EXPECT_EQ(*source_->ReadBlobRange(Digest::Sha256Of("x"), ByteRange{2, 3}), "234");
  EXPECT_EQ(sources_[0]->calls, 1);  // only the first call paid for the dead mirror
  EXPECT_EQ(sources_[2]->calls, 0);
}

TEST_F(MirroredSourceTest, MirrorWithoutTheTagFallsBackToTheRegistryWhichThenServesBlobs) {
  Make(2);
  sources_[0]->manifest_error = Status::NotFound("manifest unknown");
  Result<FetchedManifest> m = source_->GetManifest("1");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->bytes, "{\"from\":\"e1\"}");
  EXPECT_EQ(source_->current(), 1u);
  EXPECT_EQ(*Fetch(), "0123456789");
  EXPECT_EQ(sources_[0]->calls, 1);
}

TEST_F(MirroredSourceTest, BlobMissingOnAMirrorComesFromTheNext) {
  Make(2);
  ASSERT_TRUE(source_->GetManifest("1").has_value());
  sources_[0]->error = Status::NotFound("blob unknown");
  EXPECT_EQ(*Fetch(), "0123456789");
  EXPECT_EQ(source_->current(), 0u);  // a missing blob does not make the mirror dead
  sources_[0]->error = Status::PermissionDenied("denied");
  EXPECT_EQ(*source_->ReadBlobRange(Digest::Sha256Of("x"), ByteRange{0, 1}), "0");
}

TEST_F(MirroredSourceTest, CorruptBlobIsAnAnswerNotAFallback) {
  Make(2);
  sources_[0]->error = Status::Corrupt("digest mismatch");
  Result<std::string> got = Fetch();
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(sources_[1]->calls, 0);
}

TEST_F(MirroredSourceTest, NoFallbackOnceBytesReachedTheSink) {
  Make(2);
  sources_[0]->error = Status::Unavailable("connection reset");
  sources_[0]->partial = true;
  Result<std::string> got = Fetch();
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(sources_[1]->calls, 0);
}

TEST_F(MirroredSourceTest, AllFailingNamesEveryEndpoint) {
  Make(2);
  sources_[0]->error = Status::Unavailable("mirror down");
  sources_[1]->error = Status::NotFound("manifest unknown");
  Result<FetchedManifest> m = source_->GetManifest("1");
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().code(), StatusCode::kNotFound);  // the registry's own answer
  EXPECT_NE(m.error().message().find("manifest unknown"), std::string::npos);
  EXPECT_NE(m.error().message().find("e0: mirror down"), std::string::npos) << m.error().message();
}

TEST_F(MirroredSourceTest, TagsFromTheFirstThatAnswers) {
  Make(2);
  sources_[0]->error = Status::PermissionDenied("no");
  Result<std::vector<std::string>> tags = source_->ListTags();
  ASSERT_TRUE(tags.has_value());
  EXPECT_EQ(*tags, std::vector<std::string>{"e1"});
}

}  // namespace
}  // namespace imgfs::registry
