// imgfs — LayerStoreJournal: directory numbers of a layer store mount, journaled.
#include "fs/layer_store/layer_store_journal.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "fs/layer_store/layer_store.h"
#include "registry/digest.h"

namespace imgfs::fs {

Status LayerStoreJournal::Load() {
  if (journal_fd_ < 0) return Status::Ok();
  struct stat st {};
  if (fstat(journal_fd_, &st) != 0) return Status::FromErrno(errno, "layer store journal");
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) > kMaxJournalBytes) {
    return Status::Corrupt("layer store journal larger than " + std::to_string(kMaxJournalBytes) +
                           " bytes");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n =
        pread(journal_fd_, text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading the layer store journal");
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  // What follows the last whole line was never handed out: cut it, and append after it.
  const size_t end = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  if (ftruncate(journal_fd_, static_cast<off_t>(end)) != 0 ||
      lseek(journal_fd_, static_cast<off_t>(end), SEEK_SET) < 0) {
    return Status::FromErrno(errno, "layer store journal");
  }
  return LoadText(std::string_view(text).substr(0, end));
}

Status LayerStoreJournal::LoadText(std::string_view text) {
  if (text.size() > kMaxJournalBytes) return Status::Corrupt("layer store journal too large");
  MutexLock lock(&mu_);
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    if (nl == std::string_view::npos) break;  // an unfinished last line: never handed out
    IMGFS_RETURN_IF_ERROR(ParseLine(text.substr(0, nl)));
    text.remove_prefix(nl + 1);
  }
  return Status::Ok();
}

Status LayerStoreJournal::ParseLine(std::string_view line) {
  auto corrupt = [](std::string_view why) {
    return Status::Corrupt("layer store journal: " + std::string(why));
  };
  if (line.starts_with("R ")) {
    const std::string_view element = line.substr(2);
    if (!DecodeRefElement(element).has_value()) return corrupt("not a reference element");
    if (ref_dirs_.contains(element)) return corrupt("a reference directory recorded twice");
    if (ref_names_.size() >= kMaxRefDirs) return corrupt("too many reference directories");
    ref_names_.emplace_back(element);
    ref_dirs_.emplace(std::string(element), 2 + ref_names_.size() - 1);
    return Status::Ok();
  }
  if (line.starts_with("L ")) {
    std::string_view rest = line.substr(2);
    const size_t space = rest.find(' ');
    if (space == std::string_view::npos) return corrupt("a layer line without its digest");
    uint64_t ref_dir = 0;
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + space, ref_dir);
    if (ec != std::errc() || end != rest.data() + space) return corrupt("a bad directory number");
    if (ref_dir < 2 || ref_dir - 2 >= ref_names_.size()) return corrupt("an unknown directory");
    const std::string_view digest = rest.substr(space + 1);
    if (digest.size() > kMaxDigestElementBytes || !registry::Digest::Parse(digest).has_value()) {
      return corrupt("not a digest element");
    }
    auto key = std::make_pair(ref_dir, std::string(digest));
    if (slot_of_.contains(key)) return corrupt("a layer recorded twice");
    if (slots_.size() >= kMaxSlots) return corrupt("too many layers");
    slots_.push_back(Layer{ref_dir, ref_names_[ref_dir - 2], std::string(digest)});
    slot_of_.emplace(std::move(key), slots_.size());
    return Status::Ok();
  }
  return corrupt("an unknown line");
}

Status LayerStoreJournal::Append(const std::string& line) {
  if (journal_fd_ < 0) return Status::Ok();
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = write(journal_fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "writing the layer store journal");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<uint64_t> LayerStoreJournal::RefDir(std::string_view element) {
  MutexLock lock(&mu_);
  auto it = ref_dirs_.find(element);
  if (it != ref_dirs_.end()) return it->second;
  if (ref_names_.size() >= kMaxRefDirs) return Status::Unavailable("too many images");
  Status written = Append("R " + std::string(element) + "\n");
  if (!written.ok()) return Status::Unavailable(written.ToString());
  const uint64_t ino = 2 + ref_names_.size();
  ref_names_.emplace_back(element);
  ref_dirs_.emplace(std::string(element), ino);
  return ino;
}

std::optional<std::string> LayerStoreJournal::RefName(uint64_t ino) const {
  MutexLock lock(&mu_);
  if (ino < 2 || ino - 2 >= ref_names_.size()) return std::nullopt;
  return ref_names_[ino - 2];
}

Result<uint64_t> LayerStoreJournal::Slot(uint64_t ref_dir, std::string_view digest_element) {
  MutexLock lock(&mu_);
  if (ref_dir < 2 || ref_dir - 2 >= ref_names_.size()) {
    return Status::NotFound("no reference directory " + std::to_string(ref_dir));
  }
  auto key = std::make_pair(ref_dir, std::string(digest_element));
  auto it = slot_of_.find(key);
  if (it != slot_of_.end()) return it->second;
  if (slots_.size() >= kMaxSlots) return Status::Unavailable("too many layers");
  Status written = Append("L " + std::to_string(ref_dir) + " " + key.second + "\n");
  if (!written.ok()) return Status::Unavailable(written.ToString());
  slots_.push_back(Layer{ref_dir, ref_names_[ref_dir - 2], key.second});
  slot_of_.emplace(std::move(key), slots_.size());
  return slots_.size();
}

std::optional<LayerStoreJournal::Layer> LayerStoreJournal::SlotAt(uint64_t slot) const {
  MutexLock lock(&mu_);
  if (slot == 0 || slot > slots_.size()) return std::nullopt;
  return slots_[slot - 1];
}

std::vector<std::pair<uint64_t, std::string>> LayerStoreJournal::LayersIn(uint64_t ref_dir) const {
  MutexLock lock(&mu_);
  std::vector<std::pair<uint64_t, std::string>> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].ref_dir == ref_dir) out.emplace_back(i + 1, slots_[i].digest_element);
  }
  return out;
}

size_t LayerStoreJournal::ref_dir_count() const {
  MutexLock lock(&mu_);
  return ref_names_.size();
}

size_t LayerStoreJournal::slot_count() const {
  MutexLock lock(&mu_);
  return slots_.size();
}

}  // namespace imgfs::fs
