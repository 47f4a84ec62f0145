// imgfs — WritableJournal: what the kernel holds of a WritableFs, journaled.
#include "fs/writable/writable_journal.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <deque>
#include <vector>

#include "base/log.h"

namespace imgfs::fs {
namespace {

constexpr char kNewFileName[] = "journal.new";

std::string Hex(std::string_view name) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(name.size() * 2);
  for (unsigned char c : name) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// A name as a lookup accepts it: 1..NAME_MAX bytes, no '/' nor NUL, not "." or "..".
bool DecodeName(std::string_view hex, std::string* out) {
  if (hex.empty() || hex.size() % 2 != 0 || hex.size() > 2 * NAME_MAX) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = HexValue(hex[i]);
    const int lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    const char c = static_cast<char>(hi * 16 + lo);
    if (c == '/' || c == '\0') return false;
    *out += c;
  }
  return *out != "." && *out != "..";
}

// The space-separated fields of a line (at most `max`).
std::vector<std::string_view> Fields(std::string_view line, size_t max) {
  std::vector<std::string_view> out;
  while (out.size() < max) {
    const size_t space = line.find(' ');
    out.push_back(line.substr(0, space));
    if (space == std::string_view::npos) return out;
    line.remove_prefix(space + 1);
  }
  out.clear();  // more fields than any line has
  return out;
}

bool Number(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

// A request's number as journaled: not 0, without the resend bit (bit 63).
bool Unique(std::string_view text, uint64_t* out) {
  return Number(text, out) && *out != 0 && *out < (uint64_t{1} << 63);
}

Status WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "writing the writable journal");
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

WritableJournal::WritableJournal() = default;
WritableJournal::~WritableJournal() = default;

WritableJournal::WritableJournal(int dir_fd, UniqueFd fd) : dir_fd_(dir_fd), fd_(std::move(fd)) {}

Result<std::unique_ptr<WritableJournal>> WritableJournal::Create(int dir_fd) {
  UniqueFd fd(
      openat(dir_fd, kFileName, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.IsValid()) return Status::FromErrno(errno, "creating the writable journal");
  std::unique_ptr<WritableJournal> journal(new WritableJournal(dir_fd, std::move(fd)));
  IMGFS_RETURN_IF_ERROR(journal->Record("V " + std::to_string(kFormat)));
  return journal;
}

Result<std::unique_ptr<WritableJournal>> WritableJournal::Resume(int dir_fd) {
  UniqueFd fd(openat(dir_fd, kFileName, O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.IsValid()) {
    if (errno == ENOENT) return Status::NotFound("no writable journal to take the mount over");
    return Status::FromErrno(errno, "opening the writable journal");
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "writable journal");
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    return Status::Corrupt("the writable journal is not a regular file of uid " +
                           std::to_string(geteuid()));
  }
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) > kMaxJournalBytes) {
    return Status::Corrupt("writable journal larger than " + std::to_string(kMaxJournalBytes) +
                           " bytes");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n =
        pread(fd.get(), text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading the writable journal");
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  // What follows the last whole line never reached the kernel: cut it, and append after it.
  const size_t end = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  if (ftruncate(fd.get(), static_cast<off_t>(end)) != 0 ||
      lseek(fd.get(), static_cast<off_t>(end), SEEK_SET) < 0) {
    return Status::FromErrno(errno, "writable journal");
  }
  std::unique_ptr<WritableJournal> journal(new WritableJournal(dir_fd, std::move(fd)));
  IMGFS_RETURN_IF_ERROR(journal->LoadText(std::string_view(text).substr(0, end)));
  MutexLock lock(&journal->mu_);
  journal->bytes_ = end;
  journal->snapshot_bytes_ = end;
  return journal;
}

Status WritableJournal::LoadText(std::string_view text) {
  if (text.size() > kMaxJournalBytes) return Status::Corrupt("writable journal too large");
  MutexLock lock(&mu_);
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    if (nl == std::string_view::npos) break;  // an unfinished last line: never replied
    ++line_no;
    Status st = ParseLine(text.substr(0, nl));
    if (!st.ok()) return st.WithContext("writable journal line " + std::to_string(line_no));
    text.remove_prefix(nl + 1);
  }
  return Status::Ok();
}

void WritableJournal::MaybeFree(uint64_t id) {
  while (id > 1) {
    auto it = nodes_.find(id);
    if (it == nodes_.end() || it->second.lookups != 0 || it->second.children != 0 ||
        it->second.handles != 0) {
      return;
    }
    const uint64_t parent = it->second.parent;
    if (parent != 0) {
      names_.erase(std::make_pair(parent, it->second.name));
      if (auto p = nodes_.find(parent); p != nodes_.end()) p->second.children--;
    }
    nodes_.erase(it);
    id = parent;
  }
}

void WritableJournal::RememberRequest(uint64_t unique, uint64_t id, uint64_t fh) {
  RequestRecord& rec = requests_[unique];
  if (id != 0) rec.id = id;
  if (fh != 0) rec.fh = fh;
  // Numbers grow with each request the kernel queues: the oldest go first.
  while (requests_.size() > kRecentRequests) requests_.erase(requests_.begin());
}

bool WritableJournal::Live(uint64_t id) const { return id == 1 || nodes_.contains(id); }

bool WritableJournal::Attached(uint64_t id) const {
  if (id == 1) return true;
  auto it = nodes_.find(id);
  return it != nodes_.end() && it->second.parent != 0;
}

Status WritableJournal::ParseLine(std::string_view line) {
  auto corrupt = [](std::string_view why) { return Status::Corrupt(std::string(why)); };
  if (line.size() < 3 || line[1] != ' ') return corrupt("not a journal line");
  const char kind = line[0];
  std::vector<std::string_view> f = Fields(line.substr(2), 5);
  uint64_t a = 0;
  uint64_t b = 0;
  uint64_t c = 0;
  uint64_t unique = 0;
  switch (kind) {
    case 'V': {
      if (f.size() != 1 || !Number(f[0], &a)) return corrupt("a bad format line");
      if (a != kFormat && a != 2) {  // format 2: the same lines
        return corrupt("format " + std::string(f[0]) + ", not a format (2 or " +
                       std::to_string(kFormat) + ") this imgfs reads");
      }
      return Status::Ok();
    }
    case 'S': {
      if (f.size() != 3 || !Number(f[0], &a) || !Number(f[1], &b) || !Number(f[2], &c)) {
        return corrupt("a bad counter line");
      }
      if (a < 2 || b < 1 || c < 1) return corrupt("a counter out of range");
      next_id_ = std::max(next_id_, a);
      next_fh_ = std::max(next_fh_, b);
      next_st_ino_ = std::max(next_st_ino_, c);
      return Status::Ok();
    }
    case 'E': {
      // The end of a snapshot: the changes before it are not the last ones of a daemon.
      if (f.size() != 1 || f[0] != "0") return corrupt("a bad snapshot end");
      return Status::Ok();
    }
    case 'A':
    case 'N': {
      std::string name;
      if ((f.size() != 4 && f.size() != 5) || !Number(f[0], &a) || !Number(f[1], &b) ||
          !Number(f[2], &c) || !DecodeName(f[3], &name) ||
          (f.size() == 5 && !Unique(f[4], &unique))) {
        return corrupt("a bad new-id line");
      }
      if (a < 2 || a == UINT64_MAX || Live(a)) return corrupt("an id recorded twice");
      if (b != 0 && !Attached(b)) return corrupt("a parent that is not recorded");
      if (b != 0 && names_.contains(std::make_pair(b, name))) return corrupt("a name taken twice");
      NodeRecord rec;
      rec.parent = b;
      rec.name = std::move(name);
      rec.lookups = c;
      if (b != 0) {
        names_.emplace(std::make_pair(b, rec.name), a);
        if (b != 1) nodes_[b].children++;
      }
      // Not freed with no lookups: a snapshot lists such ids while something lives below them.
      nodes_.emplace(a, std::move(rec));
      next_id_ = std::max(next_id_, a + 1);
      if (unique != 0) RememberRequest(unique, a, 0);
      return Status::Ok();
    }
    case 'L': {
      if ((f.size() != 1 && f.size() != 2) || !Number(f[0], &a) ||
          (f.size() == 2 && !Unique(f[1], &unique))) {
        return corrupt("a bad lookup line");
      }
      if (a != 1) {  // the root is never forgotten
        auto it = nodes_.find(a);
        if (it == nodes_.end()) return corrupt("a lookup of an unknown id");
        if (it->second.lookups == UINT64_MAX) return corrupt("a lookup count overflows");
        it->second.lookups++;
      }
      if (unique != 0) RememberRequest(unique, a, 0);
      return Status::Ok();
    }
    case 'F': {
      if (f.size() != 2 || !Number(f[0], &a) || !Number(f[1], &b) || b == 0) {
        return corrupt("a bad forget line");
      }
      auto it = nodes_.find(a);
      if (it == nodes_.end()) return corrupt("a forget of an unknown id");
      it->second.lookups -= std::min(it->second.lookups, b);
      MaybeFree(a);
      return Status::Ok();
    }
    case 'M': {
      std::string name;
      if (f.size() != 3 || !Number(f[0], &a) || !Number(f[1], &b) || !DecodeName(f[2], &name)) {
        return corrupt("a bad rename line");
      }
      // An id whose name was deleted may get one back (Move in the header says when).
      auto it = nodes_.find(a);
      if (it == nodes_.end()) return corrupt("a rename of an unknown id");
      if (!Attached(b)) return corrupt("a rename into an unknown directory");
      if (names_.contains(std::make_pair(b, name))) return corrupt("a rename onto a name");
      // The new parent must not be the id itself or below it.
      for (uint64_t p = b; p != 1;) {
        if (p == a) return corrupt("a rename into itself");
        auto up = nodes_.find(p);
        if (up == nodes_.end() || up->second.parent == 0) return corrupt("a rename below no name");
        p = up->second.parent;
      }
      const uint64_t old_parent = it->second.parent;  // 0: a deleted name
      if (old_parent != 0) {
        names_.erase(std::make_pair(old_parent, it->second.name));
        if (old_parent != 1) nodes_[old_parent].children--;
      }
      it->second.parent = b;
      it->second.name = std::move(name);
      names_.emplace(std::make_pair(b, it->second.name), a);
      if (b != 1) nodes_[b].children++;
      MaybeFree(old_parent);
      return Status::Ok();
    }
    case 'D': {
      if (f.size() != 1 || !Number(f[0], &a)) return corrupt("a bad delete line");
      auto it = nodes_.find(a);
      if (it == nodes_.end() || it->second.parent == 0) return corrupt("a delete of no name");
      // Names below a deleted directory could not be told again (a snapshot lists names from
      // the root down), and a filesystem deletes only empty directories.
      if (it->second.children != 0) return corrupt("a delete of a directory with names below it");
      const uint64_t old_parent = it->second.parent;
      names_.erase(std::make_pair(old_parent, it->second.name));
      if (old_parent != 1) nodes_[old_parent].children--;
      it->second.parent = 0;
      MaybeFree(a);
      MaybeFree(old_parent);
      return Status::Ok();
    }
    case 'O':
    case 'Q': {
      if (f.size() != 1 || !Number(f[0], &a)) return corrupt("a bad orphan line");
      if (kind == 'O') {
        if (a < 2 || a >= next_id_ || orphans_.contains(a)) return corrupt("a bad orphan");
        orphans_.insert(a);
      } else if (orphans_.erase(a) == 0) {
        return corrupt("an unknown orphan");
      }
      return Status::Ok();
    }
    case 'I': {
      if (f.size() != 2 || !Number(f[0], &a) || !Number(f[1], &b) || b == 0 || b == UINT64_MAX) {
        return corrupt("a bad inode line");
      }
      if (upper_inos_.contains(a) || claimed_.contains(b)) return corrupt("an inode given twice");
      upper_inos_.emplace(a, b);
      claimed_.insert(b);
      next_st_ino_ = std::max(next_st_ino_, b + 1);
      return Status::Ok();
    }
    case 'J': {
      if (f.size() != 1 || !Number(f[0], &a)) return corrupt("a bad inode line");
      auto it = upper_inos_.find(a);
      if (it == upper_inos_.end()) return corrupt("an unknown upper inode");
      claimed_.erase(it->second);
      upper_inos_.erase(it);
      return Status::Ok();
    }
    case 'H': {
      uint64_t lower = 0;
      if ((f.size() != 4 && f.size() != 5) || !Number(f[0], &a) || !Number(f[1], &b) ||
          !Number(f[2], &c) || !Number(f[3], &lower) || c > INT_MAX || lower > UINT32_MAX ||
          (f.size() == 5 && !Unique(f[4], &unique))) {
        return corrupt("a bad handle line");
      }
      if (a == 0 || a == UINT64_MAX || handles_.contains(a)) return corrupt("a handle twice");
      auto node = nodes_.find(b);
      if (node == nodes_.end()) return corrupt("a handle of an unknown id");
      node->second.handles++;
      handles_.emplace(a, HandleRecord{b, static_cast<int>(c), lower});
      next_fh_ = std::max(next_fh_, a + 1);
      if (unique != 0) RememberRequest(unique, 0, a);
      return Status::Ok();
    }
    case 'C': {
      if (f.size() != 1 || !Number(f[0], &a)) return corrupt("a bad release line");
      auto it = handles_.find(a);
      if (it == handles_.end()) return corrupt("a release of an unknown handle");
      const uint64_t id = it->second.id;
      handles_.erase(it);
      nodes_.at(id).handles--;
      MaybeFree(id);
      return Status::Ok();
    }
    case 'U': {
      if (f.size() != 3 || !Unique(f[0], &unique) || !Number(f[1], &a) || !Number(f[2], &b)) {
        return corrupt("a bad request line");
      }
      // The id or handle may be gone since (forgotten, released), not beyond the counters.
      if (a >= next_id_ || b >= next_fh_) return corrupt("a request of an unknown id or handle");
      RememberRequest(unique, a, b);
      return Status::Ok();
    }
    default:
      return corrupt("an unknown kind of line");
  }
}

void WritableJournal::Break(const Status& why) {
  if (broken_) return;
  broken_ = true;
  IMGFS_LOG(kError) << why.ToString()
                    << ": the journal is removed; this mount cannot be taken over by another "
                       "daemon";
  fd_.Close();
  if (dir_fd_ >= 0) unlinkat(dir_fd_, kFileName, 0);
}

Status WritableJournal::Record(const std::string& line) {
  MutexLock lock(&mu_);
  Status applied = ParseLine(line);
  if (!applied.ok()) {
    return Status::Internal("writable journal: " + line + ": " + applied.ToString());
  }
  if (!fd_.IsValid() || broken_) return Status::Ok();
  std::string text = line;
  text += '\n';
  Status written = WriteAll(fd_.get(), text);
  if (!written.ok()) {
    Break(written);
    return written;
  }
  bytes_ += text.size();
  if (bytes_ > kCompactBytes && bytes_ > 2 * snapshot_bytes_ && bytes_ >= compact_at_) {
    Status compacted = Compact();
    if (!compacted.ok()) Break(compacted);
  }
  return Status::Ok();
}

Status WritableJournal::Compact() {
  const std::string snapshot = SnapshotLocked();
  UniqueFd fd(
      openat(dir_fd_, kNewFileName, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.IsValid()) return Status::FromErrno(errno, "compacting the writable journal");
  // The snapshot and the reserve after it, allocated first: with no room for both, the old
  // file goes on (its own reserve is still there).
  const bool ahead =
      allocates_ && fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0,
                              static_cast<off_t>(snapshot.size() + kReserveBytes)) == 0;
  Status written = allocates_ && !ahead && errno == ENOSPC
                       ? Status::FromErrno(ENOSPC, "compacting the writable journal")
                       : WriteAll(fd.get(), snapshot);
  if (!written.ok()) {
    unlinkat(dir_fd_, kNewFileName, 0);
    if (written.code() != StatusCode::kNoSpace) return written;
    compact_at_ = 2 * bytes_;
    return Status::Ok();
  }
  // A kill before the rename leaves the old journal whole; after, the new one.
  if (renameat(dir_fd_, kNewFileName, dir_fd_, kFileName) != 0) {
    return Status::FromErrno(errno, "compacting the writable journal");
  }
  fd_ = std::move(fd);
  bytes_ = snapshot.size();
  snapshot_bytes_ = snapshot.size();
  allocated_ = ahead ? snapshot.size() + kReserveBytes : 0;
  return Status::Ok();
}

Status WritableJournal::Reserve(size_t bytes) {
  MutexLock lock(&mu_);
  if (!fd_.IsValid() || broken_ || !allocates_) return Status::Ok();
  if (allocated_ >= bytes_ + kReserveBytes / 2 && allocated_ >= bytes_ + bytes) {
    return Status::Ok();
  }
  // The whole reserve if it fits, else what this request needs.
  for (size_t want : {kReserveBytes, bytes}) {
    if (allocated_ >= bytes_ + want) break;
    if (fallocate(fd_.get(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(bytes_),
                  static_cast<off_t>(want)) == 0) {
      allocated_ = bytes_ + want;
      break;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
      allocates_ = false;  // no guarantee to give: writes go on as they come
      return Status::Ok();
    }
    if (errno != ENOSPC) return Status::FromErrno(errno, "allocating the writable journal");
  }
  if (allocated_ >= bytes_ + bytes) return Status::Ok();
  return Status::NoSpace("no room left for the writable journal");
}

std::string WritableJournal::Snapshot() const {
  MutexLock lock(&mu_);
  return SnapshotLocked();
}

std::string WritableJournal::SnapshotLocked() const {
  std::string out = "V " + std::to_string(kFormat) + "\nS " + std::to_string(next_id_) + " " +
                    std::to_string(next_fh_) + " " + std::to_string(next_st_ino_) + "\n";
  // Parents before children: breadth first from the root over the attached ids, then the
  // deleted ones.
  std::map<uint64_t, std::vector<uint64_t>> below;
  for (const auto& [id, rec] : nodes_) {
    if (rec.parent != 0) below[rec.parent].push_back(id);
  }
  std::deque<uint64_t> queue{1};
  while (!queue.empty()) {
    const uint64_t dir = queue.front();
    queue.pop_front();
    auto it = below.find(dir);
    if (it == below.end()) continue;
    for (uint64_t id : it->second) {
      const NodeRecord& rec = nodes_.at(id);
      out += "N " + std::to_string(id) + " " + std::to_string(rec.parent) + " " +
             std::to_string(rec.lookups) + " " + Hex(rec.name) + "\n";
      queue.push_back(id);
    }
  }
  for (const auto& [id, rec] : nodes_) {
    if (rec.parent != 0) continue;
    out += "N " + std::to_string(id) + " 0 " + std::to_string(rec.lookups) + " " + Hex(rec.name) +
           "\n";
  }
  for (uint64_t id : orphans_) out += "O " + std::to_string(id) + "\n";
  for (const auto& [upper, st_ino] : upper_inos_) {
    out += "I " + std::to_string(upper) + " " + std::to_string(st_ino) + "\n";
  }
  for (const auto& [fh, h] : handles_) {
    out += "H " + std::to_string(fh) + " " + std::to_string(h.id) + " " + std::to_string(h.flags) +
           " " + std::to_string(h.lower) + "\n";
  }
  for (const auto& [unique, rec] : requests_) {
    out += "U " + std::to_string(unique) + " " + std::to_string(rec.id) + " " +
           std::to_string(rec.fh) + "\n";
  }
  out += "E 0\n";
  return out;
}

namespace {
// The request field of a line (" R"), or nothing.
std::string RequestField(uint64_t unique) {
  return unique != 0 ? " " + std::to_string(unique) : std::string();
}
}  // namespace

Status WritableJournal::NewNode(uint64_t id, uint64_t parent, std::string_view name, bool created,
                                uint64_t unique) {
  return Record(std::string(created ? "A " : "N ") + std::to_string(id) + " " +
                std::to_string(parent) + " 1 " + Hex(name) + RequestField(unique));
}
Status WritableJournal::Lookup(uint64_t id, uint64_t unique) {
  return Record("L " + std::to_string(id) + RequestField(unique));
}
Status WritableJournal::Forget(uint64_t id, uint64_t nlookup) {
  return Record("F " + std::to_string(id) + " " + std::to_string(nlookup));
}
Status WritableJournal::Move(uint64_t id, uint64_t parent, std::string_view name) {
  return Record("M " + std::to_string(id) + " " + std::to_string(parent) + " " + Hex(name));
}
Status WritableJournal::Deleted(uint64_t id) { return Record("D " + std::to_string(id)); }
Status WritableJournal::Orphan(uint64_t id, bool kept) {
  return Record(std::string(kept ? "O " : "Q ") + std::to_string(id));
}
Status WritableJournal::UpperIno(uint64_t upper_ino, uint64_t st_ino) {
  return Record("I " + std::to_string(upper_ino) + " " + std::to_string(st_ino));
}
Status WritableJournal::ForgetUpperIno(uint64_t upper_ino) {
  return Record("J " + std::to_string(upper_ino));
}
Status WritableJournal::Opened(uint64_t fh, uint64_t id, int flags, uint64_t lower,
                               uint64_t unique) {
  return Record("H " + std::to_string(fh) + " " + std::to_string(id) + " " + std::to_string(flags) +
                " " + std::to_string(lower) + RequestField(unique));
}
Status WritableJournal::Released(uint64_t fh) { return Record("C " + std::to_string(fh)); }
Status WritableJournal::Done(uint64_t unique) {
  return Record("U " + std::to_string(unique) + " 0 0");
}

std::optional<WritableJournal::RequestRecord> WritableJournal::FindRequest(uint64_t unique) const {
  MutexLock lock(&mu_);
  auto it = requests_.find(unique);
  if (it == requests_.end()) return std::nullopt;
  return it->second;
}

uint64_t WritableJournal::next_id() const {
  MutexLock lock(&mu_);
  return next_id_;
}
uint64_t WritableJournal::next_fh() const {
  MutexLock lock(&mu_);
  return next_fh_;
}
uint64_t WritableJournal::next_st_ino() const {
  MutexLock lock(&mu_);
  return next_st_ino_;
}

}  // namespace imgfs::fs
