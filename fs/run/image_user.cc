// imgfs — docker's USER[:GROUP] rules over the image's /etc/passwd and /etc/group.
#include "fs/run/image_user.h"

#include <algorithm>
#include <charconv>

namespace imgfs::fs::run {
namespace {

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    out.emplace_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

bool IsAllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

Result<uint32_t> ParseId(std::string_view text, std::string_view what) {
  auto bad = [&](std::string_view why) {
    std::string shown(text.substr(0, 32));
    if (text.size() > 32) shown += "...";
    return Status::InvalidArgument(std::string(what) + " '" + shown + "' " + std::string(why) +
                                   " (ids are 0 to " + std::to_string(kMaxId) + ")");
  };
  if (!IsAllDigits(text)) return bad("is not a number");
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range || value > kMaxId) return bad("is out of range");
  if (ec != std::errc() || end != text.data() + text.size()) return bad("is not a number");
  return value;
}

std::vector<PasswdEntry> ParsePasswd(std::string_view text) {
  std::vector<PasswdEntry> out;
  for (const std::string& line : Split(text, '\n')) {
    std::vector<std::string> f = Split(line, ':');
    if (f.size() < 7) continue;
    out.push_back({f[0], f[2], f[3], f[5]});
  }
  return out;
}

std::vector<GroupEntry> ParseGroups(std::string_view text) {
  std::vector<GroupEntry> out;
  for (const std::string& line : Split(text, '\n')) {
    std::vector<std::string> f = Split(line, ':');
    if (f.size() < 4) continue;
    GroupEntry g{f[0], f[2], {}};
    for (const std::string& m : Split(f[3], ',')) {
      if (!m.empty()) g.members.push_back(m);
    }
    out.push_back(std::move(g));
  }
  return out;
}

Result<ExecUser> ResolveUser(std::string_view spec, std::string_view passwd_text,
                             std::string_view group_text) {
  ExecUser out;
  if (spec.empty()) return out;
  std::string user(spec);
  std::string group;
  size_t colon = spec.find(':');
  bool has_group = colon != std::string_view::npos;
  if (has_group) {
    user = std::string(spec.substr(0, colon));
    group = std::string(spec.substr(colon + 1));
  }
  std::vector<PasswdEntry> passwd = ParsePasswd(passwd_text);
  std::vector<GroupEntry> groups = ParseGroups(group_text);
  const PasswdEntry* found = nullptr;
  if (!user.empty()) {
    if (IsAllDigits(user)) {
      IMGFS_ASSIGN_OR_RETURN(uint32_t uid, ParseId(user, "user id"));
      out.uid = uid;
      for (const PasswdEntry& p : passwd) {
        Result<uint32_t> entry_uid = ParseId(p.uid, "uid");
        if (entry_uid.has_value() && *entry_uid == uid) {
          found = &p;
          break;
        }
      }
    } else {
      for (const PasswdEntry& p : passwd) {
        if (p.name == user) {
          found = &p;
          break;
        }
      }
      if (found == nullptr) {
        return Status::NotFound("unable to find user " + user +
                                ": no matching entries in passwd file");
      }
    }
    if (found != nullptr) {
      std::string what = "the uid of user " + found->name + " in /etc/passwd";
      IMGFS_ASSIGN_OR_RETURN(out.uid, ParseId(found->uid, what));
      what = "the gid of user " + found->name + " in /etc/passwd";
      IMGFS_ASSIGN_OR_RETURN(out.gid, ParseId(found->gid, what));
      if (!found->home.empty()) out.home = found->home;
    }
  }
  if (has_group && !group.empty()) {
    if (IsAllDigits(group)) {
      IMGFS_ASSIGN_OR_RETURN(out.gid, ParseId(group, "group id"));
    } else {
      auto it = std::find_if(groups.begin(), groups.end(),
                             [&](const GroupEntry& g) { return g.name == group; });
      if (it == groups.end()) {
        return Status::NotFound("unable to find group " + group +
                                ": no matching entries in group file");
      }
      IMGFS_ASSIGN_OR_RETURN(out.gid,
                             ParseId(it->gid, "the gid of group " + group + " in /etc/group"));
    }
  } else if (found != nullptr) {
    for (const GroupEntry& g : groups) {
      if (std::find(g.members.begin(), g.members.end(), found->name) == g.members.end()) continue;
      IMGFS_ASSIGN_OR_RETURN(uint32_t gid,
                             ParseId(g.gid, "the gid of group " + g.name + " in /etc/group"));
      if (gid != out.gid) out.groups.push_back(gid);
    }
  }
  return out;
}

}  // namespace imgfs::fs::run
