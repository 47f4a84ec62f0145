// imgfs — tests for base/mapped_file.h.
#include "base/mapped_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
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

// The resident KiB of this process's mapping that starts at `start` (/proc/self/smaps).
uint64_t RssKibOfMappingAt(const void* start) {
  char head[32];
  std::snprintf(head, sizeof(head), "%lx-", reinterpret_cast<unsigned long>(start));  // NOLINT
  Result<std::string> smaps = ReadFile("/proc/self/smaps");
  if (!smaps.has_value()) return ~uint64_t{0};
  std::istringstream in(*smaps);
  std::string line;
  bool ours = false;
  while (std::getline(in, line)) {
    if (line.rfind(head, 0) == 0) ours = true;
    if (ours && line.rfind("Rss:", 0) == 0) return std::stoull(line.substr(4));
  }
  return ~uint64_t{0};
}

// MapLazily reads nothing in until the bytes are read; DropPages takes the pages holding a
// range out of the process again, and the bytes read the same afterwards.
TEST_F(MappedFileTest, MapLazilyAndDropPages) {
  std::string content(8 << 20, 'a');
  for (size_t i = 0; i < content.size(); i += 4099) content[i] = static_cast<char>('b' + i % 7);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/f", content).ok());
  Result<UniqueFd> fd = OpenFile(dir_ + "/f", O_RDONLY | O_CLOEXEC);
  ASSERT_TRUE(fd.has_value());
  Result<MappedFile> mapped = MappedFile::MapLazily(fd->get(), content.size());
  ASSERT_TRUE(mapped.has_value()) << mapped.error().ToString();
  fd->Close();  // the mapping outlives the descriptor
  const void* start = mapped->bytes().data();
  EXPECT_EQ(RssKibOfMappingAt(start), 0u);
  EXPECT_EQ(mapped->bytes(), content);
  EXPECT_EQ(RssKibOfMappingAt(start), uint64_t{8} << 10);
  // The pages holding bytes 5000 .. 5000 + 4 MiB: from the second page through the 1026th
  // (the kernel may unmap more: a large folio mapped whole is unmapped whole).
  mapped->DropPages(5000, 4 << 20);
  EXPECT_LE(RssKibOfMappingAt(start), (uint64_t{8} << 10) - 1025 * 4);
  EXPECT_EQ(mapped->bytes().substr(0, 6 << 20), content.substr(0, 6 << 20));
  mapped->DropPages(content.size(), 100);      // past the end: nothing
  mapped->DropPages(0, content.size() + 100);  // clipped at the end: all
  EXPECT_EQ(RssKibOfMappingAt(start), 0u);
  EXPECT_EQ(mapped->bytes(), content);
  EXPECT_EQ(MappedFile::MapLazily(fd->get(), 4096).error().code(), StatusCode::kIo);
}

}  // namespace
}  // namespace imgfs
