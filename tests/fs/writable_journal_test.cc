// imgfs — unit tests of WritableJournal (fs/writable/writable_journal.h): the events a
// WritableFs records, read back from the file as a daemon taking the mount over reads them,
// compaction, a line cut by a kill, and hostile journals.
#include "fs/writable/writable_journal.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "base/file_util.h"
#include "base/unique_fd.h"
#include "tests/support/temp_dir.h"

namespace imgfs::fs {
namespace {

class WritableJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_fd_ = UniqueFd(open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir_fd_.IsValid());
  }
  std::string JournalText() const {
    Result<std::string> text = ReadFile(dir_.path() + "/journal");
    return text.has_value() ? *text : "<unreadable>";
  }
  testing::TempDir dir_;
  UniqueFd dir_fd_;
};

TEST_F(WritableJournalTest, EventsAreReadBackByTheNextDaemon) {
  {
    Result<std::unique_ptr<WritableJournal>> j = WritableJournal::Create(dir_fd_.get());
    ASSERT_TRUE(j.has_value()) << j.error().ToString();
    WritableJournal& w = **j;
    ASSERT_TRUE(w.NewNode(2, 1, "dir").ok());
    ASSERT_TRUE(w.NewNode(3, 2, "a file\nwith a newline").ok());
    ASSERT_TRUE(w.Lookup(3).ok());
    ASSERT_TRUE(w.NewNode(4, 1, "gone").ok());
    ASSERT_TRUE(w.Opened(1, 4, O_RDWR, 0).ok());
    ASSERT_TRUE(w.Deleted(4).ok());
    ASSERT_TRUE(w.Orphan(4, true).ok());
    ASSERT_TRUE(w.Move(3, 1, "moved").ok());
    ASSERT_TRUE(w.UpperIno(1234, 17).ok());
    ASSERT_TRUE(w.Opened(2, 3, O_RDONLY, 9).ok());
    ASSERT_TRUE(w.Forget(2, 1).ok());  // dir: nothing below any more, freed
    // A deleted name given back by a rename (one a dead daemon made before journaling it).
    ASSERT_TRUE(w.NewNode(5, 1, "renamed away", false).ok());
    ASSERT_TRUE(w.Deleted(5).ok());
    ASSERT_TRUE(w.Move(5, 1, "renamed to").ok());
    EXPECT_EQ(w.NewNode(6, 1, "renamed to").code(), StatusCode::kInternal) << "the name is taken";
    // Not applicable: an Internal error, nothing written.
    EXPECT_EQ(w.Lookup(99).code(), StatusCode::kInternal);
    EXPECT_EQ(w.Move(3, 1, "..").code(), StatusCode::kInternal);
  }  // dropped without any cleanup, as a kill would
  Result<std::unique_ptr<WritableJournal>> r = WritableJournal::Resume(dir_fd_.get());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  const WritableJournal& j = **r;
  EXPECT_FALSE(j.nodes().contains(2));
  ASSERT_TRUE(j.nodes().contains(3));
  EXPECT_EQ(j.nodes().at(3).parent, 1u);
  EXPECT_EQ(j.nodes().at(3).name, "moved");
  EXPECT_EQ(j.nodes().at(3).lookups, 2u);
  ASSERT_TRUE(j.nodes().contains(4));
  EXPECT_EQ(j.nodes().at(4).parent, 0u);
  EXPECT_TRUE(j.orphans().contains(4));
  EXPECT_EQ(j.upper_inos().at(1234), 17u);
  ASSERT_EQ(j.handles().size(), 2u);
  EXPECT_EQ(j.handles().at(1).id, 4u);
  EXPECT_EQ(j.handles().at(1).flags, O_RDWR);
  EXPECT_EQ(j.handles().at(2).lower, 9u);
  ASSERT_TRUE(j.nodes().contains(5));
  EXPECT_EQ(j.nodes().at(5).parent, 1u);
  EXPECT_EQ(j.nodes().at(5).name, "renamed to");
  EXPECT_EQ(j.next_id(), 6u);
  EXPECT_EQ(j.next_fh(), 3u);
  EXPECT_EQ(j.next_st_ino(), 18u);
}

TEST_F(WritableJournalTest, ALineCutByAKillIsDropped) {
  ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/journal", "N 2 1 1 61\nN 3 1 1 6", 0600).ok());
  Result<std::unique_ptr<WritableJournal>> r = WritableJournal::Resume(dir_fd_.get());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_TRUE((*r)->nodes().contains(2));
  EXPECT_FALSE((*r)->nodes().contains(3));
  ASSERT_TRUE((*r)->NewNode(3, 1, "b").ok());  // appended after the last whole line
  EXPECT_EQ(JournalText(), "N 2 1 1 61\nN 3 1 1 62\n");
}

TEST_F(WritableJournalTest, GrowthIsCompactedIntoASnapshot) {
  Result<std::unique_ptr<WritableJournal>> j = WritableJournal::Create(dir_fd_.get());
  ASSERT_TRUE(j.has_value());
  ASSERT_TRUE((*j)->NewNode(2, 1, "f").ok());
  for (int i = 0; i < 200000; ++i) {
    ASSERT_TRUE((*j)->Lookup(2).ok());
    ASSERT_TRUE((*j)->Forget(2, 1).ok());
  }
  const std::string text = JournalText();
  EXPECT_LT(text.size(), WritableJournal::kCompactBytes * 2 + 4096);
  Result<std::unique_ptr<WritableJournal>> r = WritableJournal::Resume(dir_fd_.get());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ((*r)->nodes().at(2).lookups, 1u);
  EXPECT_EQ((*r)->Snapshot(), (*j)->Snapshot());
}

// On a full filesystem the journal writes into the room it allocated ahead: a compaction
// that finds no room for its new file keeps the old one, Reserve says NoSpace once the room
// is used up (the WritableFs then refuses requests), and nothing written is lost.
TEST_F(WritableJournalTest, AFullFilesystemLeavesTheJournalWhole) {
  ASSERT_EQ(geteuid(), 0u) << "mounts a small tmpfs";
  const std::string small = dir_.Sub("small");
  ASSERT_EQ(mkdir(small.c_str(), 0700), 0);
  ASSERT_EQ(mount("tmpfs", small.c_str(), "tmpfs", 0, "size=4m"), 0) << strerror(errno);
  struct Unmount {
    std::string at;
    ~Unmount() { umount2(at.c_str(), MNT_DETACH); }
  } unmount{small};
  UniqueFd dir(open(small.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir.IsValid());
  Result<std::unique_ptr<WritableJournal>> j = WritableJournal::Create(dir.get());
  ASSERT_TRUE(j.has_value());
  ASSERT_TRUE((*j)->NewNode(2, 1, "f").ok());
  // Lines as a WritableFs writes them: Reserve first.
  auto round = [&]() -> Status {
    IMGFS_RETURN_IF_ERROR((*j)->Reserve(4096));
    IMGFS_RETURN_IF_ERROR((*j)->Lookup(2));
    return (*j)->Forget(2, 1);
  };
  struct stat st {};
  while (fstatat(dir.get(), "journal", &st, 0) == 0 && st.st_size < 700 * 1024) {
    ASSERT_TRUE(round().ok());
  }
  // Full: the room allocated ahead is all there is.
  UniqueFd filler(openat(dir.get(), "filler", O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(filler.IsValid());
  const std::string block(4096, 'x');
  while (write(filler.get(), block.data(), block.size()) > 0) {
  }
  ASSERT_EQ(errno, ENOSPC);
  Status last = Status::Ok();
  int rounds = 0;
  while (last.ok() && rounds < 1000000) {
    last = round();
    ++rounds;
  }
  EXPECT_EQ(last.code(), StatusCode::kNoSpace) << last.ToString();
  ASSERT_EQ(fstatat(dir.get(), "journal", &st, 0), 0) << "the journal is still there";
  EXPECT_GT(st.st_size, static_cast<off_t>(WritableJournal::kCompactBytes))
      << "past the size that compacts: the compaction found no room and kept the old file";
  EXPECT_NE(fstatat(dir.get(), "journal.new", &st, 0), 0) << "no half-written compaction left";
  Result<std::unique_ptr<WritableJournal>> r = WritableJournal::Resume(dir.get());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ((*r)->nodes().at(2).lookups, 1u);
  EXPECT_EQ((*r)->Snapshot(), (*j)->Snapshot());
  // Space freed: room again.
  filler.Close();
  ASSERT_EQ(unlinkat(dir.get(), "filler", 0), 0);
  EXPECT_TRUE((*j)->Reserve(WritableJournal::kReserveBytes / 2).ok());
  EXPECT_TRUE(round().ok());
}

// The kernel's number of each request that counted a lookup, opened a handle or changed a
// name is read back, across a compaction too, for the oldest kRecentRequests numbers.
TEST_F(WritableJournalTest, RequestsAreReadBackWithWhatTheyWereAnswered) {
  Result<std::unique_ptr<WritableJournal>> j = WritableJournal::Create(dir_fd_.get());
  ASSERT_TRUE(j.has_value()) << j.error().ToString();
  WritableJournal& w = **j;
  ASSERT_TRUE(w.NewNode(2, 1, "a", /*created=*/true, 10).ok());
  ASSERT_TRUE(w.Opened(1, 2, O_RDWR, 0, 10).ok());  // a create: entry and handle
  ASSERT_TRUE(w.Lookup(2, 12).ok());
  ASSERT_TRUE(w.Opened(2, 2, O_RDONLY, 0, 14).ok());
  ASSERT_TRUE(w.Done(16).ok());
  ASSERT_TRUE(w.Lookup(2).ok());  // no request known: nothing recorded
  EXPECT_EQ(w.Lookup(2, uint64_t{1} << 63).code(), StatusCode::kInternal) << "the resend bit";
  EXPECT_EQ(JournalText().substr(0, 4), "V 3\n");
  for (bool compacted : {false, true}) {
    Result<std::unique_ptr<WritableJournal>> r = WritableJournal::Resume(dir_fd_.get());
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    const WritableJournal& back = **r;
    ASSERT_TRUE(back.FindRequest(10).has_value()) << compacted;
    EXPECT_EQ(back.FindRequest(10)->id, 2u);
    EXPECT_EQ(back.FindRequest(10)->fh, 1u);
    ASSERT_TRUE(back.FindRequest(12).has_value());
    EXPECT_EQ(back.FindRequest(12)->id, 2u);
    EXPECT_EQ(back.FindRequest(12)->fh, 0u);
    ASSERT_TRUE(back.FindRequest(14).has_value());
    EXPECT_EQ(back.FindRequest(14)->fh, 2u);
    ASSERT_TRUE(back.FindRequest(16).has_value());
    EXPECT_EQ(back.FindRequest(16)->id, 0u);
    EXPECT_FALSE(back.FindRequest(18).has_value());
    EXPECT_EQ(back.nodes().at(2).lookups, 3u);
    // The snapshot carries the requests.
    ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/journal", back.Snapshot(), 0600).ok());
  }
  // Only the last kRecentRequests are kept.
  WritableJournal many;
  ASSERT_TRUE(many.NewNode(2, 1, "a").ok());
  for (uint64_t u = 1; u <= WritableJournal::kRecentRequests + 10; ++u) {
    ASSERT_TRUE(many.Lookup(2, u).ok());
  }
  EXPECT_FALSE(many.FindRequest(10).has_value());
  EXPECT_TRUE(many.FindRequest(11).has_value());
}

// The encoding is format 3 (the lines of format 2; the number says the daemon clears setuid
// bits where the kernel asks): a change to it must bump kFormat (and keep loading format 1,
// 2 and 3 journals, which a takeover after an upgrade reads).
TEST_F(WritableJournalTest, EncodingIsFormatThree) {
  Result<std::unique_ptr<WritableJournal>> j = WritableJournal::Create(dir_fd_.get());
  ASSERT_TRUE(j.has_value()) << j.error().ToString();
  WritableJournal& w = **j;
  ASSERT_TRUE(w.NewNode(2, 1, "d", /*created=*/true, 10).ok());
  ASSERT_TRUE(w.NewNode(3, 2, "f", /*created=*/false, 12).ok());
  ASSERT_TRUE(w.Lookup(3, 14).ok());
  ASSERT_TRUE(w.Opened(1, 3, O_RDONLY, 7, 16).ok());
  ASSERT_TRUE(w.Done(18).ok());
  ASSERT_TRUE(w.Move(3, 1, "g").ok());
  ASSERT_TRUE(w.Deleted(2).ok());
  ASSERT_TRUE(w.UpperIno(5, 6).ok());
  EXPECT_EQ(WritableJournal::kFormat, 3);
  EXPECT_EQ(JournalText(),
            "V 3\nA 2 1 1 64 10\nN 3 2 1 66 12\nL 3 14\nH 1 3 0 7 16\nU 18 0 0\nM 3 1 67\nD 2\n"
            "I 5 6\n");
  EXPECT_EQ(w.Snapshot(),
            "V 3\nS 4 2 7\nN 3 1 2 67\nN 2 0 1 64\nI 5 6\nH 1 3 0 7\nU 10 2 0\nU 12 3 0\n"
            "U 14 3 0\nU 16 0 1\nU 18 0 0\nE 0\n");
}

// A journal of format 1 (no format line, no request numbers: a daemon of an earlier imgfs
// taken over after an upgrade) loads, and is appended to; so does format 2; a newer format is
// refused.
TEST_F(WritableJournalTest, FormatOneLoadsAndNewerFormatsAreRefused) {
  ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/journal", "N 2 1 1 61\nL 2\nH 1 2 0 0\n", 0600).ok());
  Result<std::unique_ptr<WritableJournal>> r = WritableJournal::Resume(dir_fd_.get());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ((*r)->nodes().at(2).lookups, 2u);
  EXPECT_EQ((*r)->handles().size(), 1u);
  ASSERT_TRUE((*r)->Lookup(2, 40).ok());
  r = WritableJournal::Resume(dir_fd_.get());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ((*r)->nodes().at(2).lookups, 3u);
  EXPECT_TRUE((*r)->FindRequest(40).has_value());

  ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/journal", "V 2\nN 2 1 1 61\nL 2 12\n", 0600).ok());
  r = WritableJournal::Resume(dir_fd_.get());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ((*r)->nodes().at(2).lookups, 2u);
  EXPECT_TRUE((*r)->FindRequest(12).has_value());

  ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/journal", "V 4\nN 2 1 1 61\n", 0600).ok());
  r = WritableJournal::Resume(dir_fd_.get());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.error().ToString().find("format 4"), std::string::npos) << r.error().ToString();
}

TEST_F(WritableJournalTest, HostileJournalsAreCorrupt) {
  for (const char* text : {
           "N 2 7 1 61\n",                           // unknown parent
           "N 2 1 1 2f\n",                           // a name with '/'
           "N 2 1 1 2e2e\n",                         // ".."
           "N 2 1 1 61\nN 3 1 1 61\n",               // one name, two ids
           "N 2 1 1 61\nN 3 2 1 62\nM 2 3 63\n",     // a directory moved below itself
           "N 2 1 1 61\nN 3 2 1 62\nD 2\n",          // a directory deleted with a name below
           "L 5\n",                                  // unknown id
           "H 1 9 0 0\n",                            // handle of an unknown id
           "C 1\n",                                  // release of nothing
           "I 5 3\nI 6 3\n",                         // one st_ino for two inodes
           "X 1\n",                                  // unknown line
           "N 2 1 1 61 extra\n",                     // too many fields
           "N 2 1 -1 61\n",                          // not a number
           "V 1\n",                                  // format 1 has no format line
           "N 2 1 1 61\nL 2 0\n",                    // request 0
           "N 2 1 1 61\nL 2 9223372036854775808\n",  // the resend bit
           "U 5 7 0\n",                              // a request of an id never given
           "U 5 0 3\n",                              // ... of a handle never given
           "U 5 0\n",                                // too few fields
       }) {
    ASSERT_TRUE(WriteFileAtomic(dir_.path() + "/journal", text, 0600).ok());
    Result<std::unique_ptr<WritableJournal>> r = WritableJournal::Resume(dir_fd_.get());
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code(), StatusCode::kCorrupt) << text;
  }
  unlink((dir_.path() + "/journal").c_str());
  ASSERT_EQ(symlink("/etc/passwd", (dir_.path() + "/journal").c_str()), 0);
  EXPECT_FALSE(WritableJournal::Resume(dir_fd_.get()).has_value());
  unlink((dir_.path() + "/journal").c_str());
  Result<std::unique_ptr<WritableJournal>> none = WritableJournal::Resume(dir_fd_.get());
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace imgfs::fs
