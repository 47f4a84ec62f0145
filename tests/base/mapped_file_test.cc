// imgfs — tests for base/mapped_file.h.
#include "base/mapped_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "base/file_util.h"

namespace imgfs {
namespace {

class MappedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/imgfs-mapped-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(MappedFileTest, MapsTheWholeFile) {
  std::string content(3 * 4096 + 17, 'x');
  content[5000] = 'y';
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/f", content).ok());
  Result<MappedFile> mapped = MappedFile::Open(dir_ + "/f");
  ASSERT_TRUE(mapped.has_value()) << mapped.error().ToString();
  EXPECT_EQ(mapped->bytes(), content);
  // Moving hands the mapping over; the moved-from one holds nothing.
  MappedFile other = std::move(mapped).value();
  EXPECT_EQ(other.bytes(), content);
  MappedFile third;
  third = std::move(other);
  EXPECT_EQ(third.bytes(), content);
  EXPECT_TRUE(other.bytes().empty());  // NOLINT(bugprone-use-after-move): the contract
  // Replaced by rename while mapped: the mapping keeps the old bytes.
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/f", "new").ok());
  EXPECT_EQ(third.bytes(), content);
}

TEST_F(MappedFileTest, EmptyMissingAndNotRegular) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/empty", "").ok());
  Result<MappedFile> empty = MappedFile::Open(dir_ + "/empty");
  ASSERT_TRUE(empty.has_value()) << empty.error().ToString();
  EXPECT_TRUE(empty->bytes().empty());
  EXPECT_EQ(MappedFile::Open(dir_ + "/missing").error().code(), StatusCode::kNotFound);
  EXPECT_FALSE(MappedFile::Open(dir_).has_value());
}

}  // namespace
}  // namespace imgfs
