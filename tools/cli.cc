// imgfs — the command line: option parsing and shared helpers.
#include "tools/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <optional>

#include "base/log.h"
#include "base/time.h"

namespace imgfs::tools {
namespace {

using nlohmann::json;

std::string KeyOf(const OptionSpec& spec) {
  if (!spec.long_name.empty()) return std::string(spec.long_name);
  return std::string(1, spec.short_name);
}

const OptionSpec* FindLong(const std::vector<OptionSpec>& specs, std::string_view name) {
  for (const auto& s : specs) {
    if (!s.long_name.empty() && s.long_name == name) return &s;
  }
  return nullptr;
}

const OptionSpec* FindShort(const std::vector<OptionSpec>& specs, char c) {
  for (const auto& s : specs) {
    if (s.short_name != 0 && s.short_name == c) return &s;
  }
  return nullptr;
}

// Looks up a dotted path ("Config.Env") in a JSON value.
const json* LookupPath(const json& root, std::string_view path) {
  const json* cur = &root;
  while (!path.empty()) {
    if (path.front() == '.') path.remove_prefix(1);
    if (path.empty()) break;
    size_t dot = path.find('.');
    std::string key(path.substr(0, dot));
    if (!cur->is_object() || !cur->contains(key)) return nullptr;
    cur = &(*cur)[key];
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot);
  }
  return cur;
}

// Splits a rendered table line into its cells (at tabs).
std::vector<std::string> SplitCells(const std::string& line) {
  std::vector<std::string> cells;
  size_t start = 0;
  for (;;) {
    size_t tab = line.find('\t', start);
    cells.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) break;
    start = tab + 1;
  }
  return cells;
}

}  // namespace

bool ParsedArgs::Has(std::string_view name) const { return values_.find(name) != values_.end(); }

bool ParsedArgs::Flag(std::string_view name, bool fallback) const {
  if (Has(name)) return true;
  return set_false_.find(name) != set_false_.end() ? false : fallback;
}

void ParsedArgs::SetFlag(std::string_view name, bool value) {
  if (value) {
    if (auto it = set_false_.find(name); it != set_false_.end()) set_false_.erase(it);
    Add(name, "true");
    return;
  }
  if (auto it = values_.find(name); it != values_.end()) values_.erase(it);
  set_false_.insert(std::string(name));
}

std::string ParsedArgs::Get(std::string_view name, std::string_view fallback) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::string(fallback);
  return it->second.back();
}

std::vector<std::string> ParsedArgs::GetAll(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return {};
  return it->second;
}

Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                             const std::vector<OptionSpec>& specs) {
  ParsedArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) out.AddPositional(args[i]);
      break;
    }
    if (arg.size() > 2 && arg.starts_with("--")) {
      std::string_view body(arg);
      body.remove_prefix(2);
      std::string_view name = body;
      std::optional<std::string> value;
      if (size_t eq = body.find('='); eq != std::string_view::npos) {
        name = body.substr(0, eq);
        value = std::string(body.substr(eq + 1));
      }
      const OptionSpec* spec = FindLong(specs, name);
      if (spec == nullptr) return Status::InvalidArgument("unknown flag: --" + std::string(name));
      if (spec->takes_value) {
        if (!value) {
          if (i + 1 >= args.size()) {
            return Status::InvalidArgument("flag needs an argument: --" + std::string(name));
          }
          value = args[++i];
        }
        out.Add(KeyOf(*spec), *value);
      } else {
        if (value && *value != "true" && *value != "false") {
          return Status::InvalidArgument("flag --" + std::string(name) +
                                         " takes no value (or true/false)");
        }
        out.SetFlag(KeyOf(*spec), !value || *value == "true");
      }
      continue;
    }
    if (arg.size() > 1 && arg[0] == '-') {
      // -x, -xVAL, -x VAL, -abc
      for (size_t j = 1; j < arg.size(); ++j) {
        const OptionSpec* spec = FindShort(specs, arg[j]);
        if (spec == nullptr) {
          return Status::InvalidArgument(std::string("unknown shorthand flag: '") + arg[j] +
                                         "' in " + arg);
        }
        if (!spec->takes_value) {
          out.SetFlag(KeyOf(*spec), true);
          continue;
        }
        if (j + 1 < arg.size()) {
          out.Add(KeyOf(*spec), arg.substr(j + 1));
        } else if (i + 1 < args.size()) {
          out.Add(KeyOf(*spec), args[++i]);
        } else {
          return Status::InvalidArgument(std::string("flag needs an argument: -") + arg[j]);
        }
        break;
      }
      continue;
    }
    out.AddPositional(arg);
  }
  return out;
}

const std::vector<OptionSpec>& GlobalOptionSpecs() {
  static const std::vector<OptionSpec> specs = {
      {"root", 0, true, "DIR", "image store directory (default $IMGFS_ROOT, else /var/lib/imgfs)"},
      {"insecure-registry", 0, true, "HOST",
       "allow plain HTTP to this registry (repeatable; loopback always allowed)"},
      {"ca-cert", 0, true, "FILE", "trust this CA certificate (PEM; repeatable)"},
      {"registries-conf", 0, true, "FILE",
       "registries.conf to use instead of the default files (mirrors, prefixes, short names; "
       "default $CONTAINERS_REGISTRIES_CONF, else /etc/containers/registries.conf[.d] and "
       "~/.config/containers/)"},
      {"creds", 0, true, "USER:PASS",
       "credentials for the registry (hidden from ps; prefer --creds-stdin)"},
      {"creds-stdin", 0, false, "", "read USER:PASS for the registry from the first line of stdin"},
      {"log-level", 0, true, "LEVEL", "debug, info, warning (default) or error"},
      {"help", 'h', false, "", "show help"},
  };
  return specs;
}

Status ApplyGlobalFlags(const ParsedArgs& parsed, GlobalOptions* global) {
  if (parsed.Has("root")) global->root = parsed.Get("root");
  for (auto& h : parsed.GetAll("insecure-registry")) global->insecure_registries.push_back(h);
  for (auto& c : parsed.GetAll("ca-cert")) global->ca_certs.push_back(c);
  if (parsed.Has("creds")) global->creds = parsed.Get("creds");
  if (parsed.Has("registries-conf")) {
    // As podman: the flag is CONTAINERS_REGISTRIES_CONF for this process and what it starts
    // (a mount daemon, helpers), so every command's pull sees it without more wiring.
    const std::string file = parsed.Get("registries-conf");
    if (file.empty()) return Status::InvalidArgument("--registries-conf needs a file name");
    // NOLINTNEXTLINE(concurrency-mt-unsafe): flags are applied before any thread starts.
    if (setenv("CONTAINERS_REGISTRIES_CONF", file.c_str(), 1) != 0) {
      return Status::Internal("cannot set CONTAINERS_REGISTRIES_CONF");
    }
  }
  if (parsed.Has("creds-stdin")) {
    if (parsed.Has("creds")) {
      return Status::InvalidArgument("--creds and --creds-stdin cannot be combined");
    }
    std::string line;
    std::getline(std::cin, line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find(':') == std::string::npos || line.front() == ':') {
      return Status::InvalidArgument("--creds-stdin: stdin must start with a USER:PASSWORD line");
    }
    global->creds = std::move(line);
  }
  if (parsed.Has("log-level")) {
    LogLevel level;
    std::string text = parsed.Get("log-level");
    if (!ParseLogLevel(text, &level)) {
      return Status::InvalidArgument("invalid --log-level \"" + text +
                                     "\" (debug, info, warning, error)");
    }
    SetLogLevel(level);
  }
  return Status::Ok();
}

void ScrubSecretArgs(int argc, char** argv) {
  // Options whose value is a secret: the global --creds everywhere, and `login`'s
  // -p/--password once the command is login (-p means other things elsewhere).
  bool login = false;
  auto scrub = [](char* text) {
    for (; *text != '\0'; ++text) *text = '*';
  };
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    const std::string_view a(arg);
    if (a == "--") break;
    if (a == "login") login = true;
    const bool creds = a == "--creds";
    const bool password = login && (a == "--password" || a == "-p");
    if ((creds || password) && i + 1 < argc) {
      std::string_view value(argv[i + 1]);
      // Keep the user name of USER:PASS visible: it tells mounts apart and is no secret.
      const size_t colon = creds ? value.find(':') : std::string_view::npos;
      scrub(argv[i + 1] + (colon == std::string_view::npos ? 0 : colon + 1));
      ++i;
      continue;
    }
    if (a.starts_with("--creds=")) {
      const size_t colon = a.find(':');
      scrub(arg + (colon == std::string_view::npos ? 8 : colon + 1));
    } else if (login && a.starts_with("--password=")) {
      scrub(arg + 11);
    } else if (login && a.starts_with("-p") && a.size() > 2) {
      scrub(arg + 2);
    }
  }
}

std::string FormatHelp(std::string_view usage, const std::vector<OptionSpec>& specs) {
  std::string out(usage);
  if (!out.ends_with('\n')) out += '\n';
  auto add = [&out](const std::vector<OptionSpec>& list, std::string_view title) {
    if (list.empty()) return;
    out += "\n";
    out += title;
    out += ":\n";
    for (const auto& s : list) {
      std::string left = "  ";
      if (s.short_name != 0) {
        left += '-';
        left += s.short_name;
        if (!s.long_name.empty()) left += ", ";
      } else {
        left += "    ";
      }
      if (!s.long_name.empty()) {
        left += "--";
        left += s.long_name;
      }
      if (s.takes_value) {
        left += ' ';
        left += s.value_name.empty() ? std::string_view("VALUE") : s.value_name;
      }
      if (left.size() < 32)
        left.resize(32, ' ');
      else
        left += "  ";
      out += left;
      out += s.help;
      out += '\n';
    }
  };
  add(specs, "Options");
  add(GlobalOptionSpecs(), "Global options");
  return out;
}

bool ParseCommandArgs(CommandContext& ctx, std::string_view usage,
                      const std::vector<OptionSpec>& specs, ParsedArgs* parsed, int* exit_code) {
  std::vector<OptionSpec> all = specs;
  for (const auto& g : GlobalOptionSpecs()) {
    if (FindLong(all, g.long_name) == nullptr) all.push_back(g);
  }
  Result<ParsedArgs> r = ParseArgs(ctx.args, all);
  if (!r.has_value()) {
    *exit_code = UsageError(ctx.name, r.error().message());
    return false;
  }
  if (r->Has("help")) {
    std::cout << FormatHelp(usage, specs);
    *exit_code = kExitOk;
    return false;
  }
  if (Status s = ApplyGlobalFlags(*r, &ctx.global); !s.ok()) {
    *exit_code = UsageError(ctx.name, s.message());
    return false;
  }
  *parsed = std::move(r).value();
  return true;
}

int Fail(std::string_view message) {
  std::string line = "imgfs: ";
  line += message;
  // One line: fold embedded newlines.
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::cerr << line << std::endl;
  return kExitError;
}

int Fail(const Status& status) { return Fail(status.ToString()); }

int UsageError(std::string_view command, std::string_view message) {
  std::cerr << "imgfs: " << message << "\nSee 'imgfs " << command << " --help'." << std::endl;
  return kExitUsage;
}

Result<std::unique_ptr<cache::Store>> OpenStore(const CommandContext& ctx) {
  Result<std::unique_ptr<cache::Store>> store = cache::Store::Open(ctx.global.root);
  if (!store.has_value()) {
    return store.error().WithContext("opening the image store " + ctx.global.root);
  }
  return store;
}

void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  // Widths in characters (UTF-8 code points), so "…" or "wörld" do not shift a column.
  auto width_of = [](const std::string& cell) {
    return static_cast<size_t>(std::count_if(cell.begin(), cell.end(), [](char c) {
      return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    }));
  };
  std::vector<size_t> widths;
  for (const auto& r : rows) {
    if (widths.size() < r.size()) widths.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], width_of(r[i]));
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(widths[i] - width_of(r[i]) + 3, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
    out += '\n';
  }
  std::cout << out << std::flush;
}

std::string ApplyTemplate(std::string_view tmpl, const json& value) {
  std::string out;
  size_t pos = 0;
  while (pos < tmpl.size()) {
    size_t open = tmpl.find("{{", pos);
    std::string_view literal =
        tmpl.substr(pos, open == std::string_view::npos ? tmpl.npos : open - pos);
    for (size_t i = 0; i < literal.size(); ++i) {
      if (literal[i] == '\\' && i + 1 < literal.size() &&
          (literal[i + 1] == 't' || literal[i + 1] == 'n')) {
        out += literal[i + 1] == 't' ? '\t' : '\n';
        ++i;
      } else {
        out += literal[i];
      }
    }
    if (open == std::string_view::npos) break;
    size_t close = tmpl.find("}}", open);
    if (close == std::string_view::npos) {
      out += tmpl.substr(open);
      break;
    }
    std::string_view expr = tmpl.substr(open + 2, close - open - 2);
    while (!expr.empty() && expr.front() == ' ') expr.remove_prefix(1);
    while (!expr.empty() && expr.back() == ' ') expr.remove_suffix(1);
    bool as_json = false;
    if (expr.starts_with("json ")) {
      as_json = true;
      expr.remove_prefix(5);
      while (!expr.empty() && expr.front() == ' ') expr.remove_prefix(1);
    }
    const json* v = expr == "." ? &value : LookupPath(value, expr);
    if (v == nullptr) {
      out += "<no value>";
    } else if (as_json || !v->is_string()) {
      out += v->dump(-1, ' ', false, json::error_handler_t::replace);
    } else {
      out += v->get<std::string>();
    }
    pos = close + 2;
  }
  return out;
}

bool IsDefaultTable(std::string_view format) { return format.empty() || format == "table"; }

void PrintFormatted(std::string_view format, const json& headers, const std::vector<json>& items) {
  if (format == "json") {
    std::string out;
    for (const json& item : items) {
      out += item.dump(-1, ' ', false, json::error_handler_t::replace);
      out += '\n';
    }
    std::cout << out << std::flush;
    return;
  }
  if (format.starts_with("table ")) {
    std::string_view tmpl = format.substr(6);
    std::vector<std::vector<std::string>> rows;
    rows.push_back(SplitCells(ApplyTemplate(tmpl, headers)));
    for (const json& item : items) rows.push_back(SplitCells(ApplyTemplate(tmpl, item)));
    PrintTable(rows);
    return;
  }
  std::string out;
  for (const json& item : items) {
    out += ApplyTemplate(format, item);
    out += '\n';
  }
  std::cout << out << std::flush;
}

std::string HumanSize(int64_t bytes, int significant_digits) {
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  double v = static_cast<double>(bytes);
  size_t unit = 0;
  while (v >= 1000.0 && unit + 1 < std::size(kUnits)) {
    v /= 1000.0;
    ++unit;
  }
  char buf[32];
  // docker: "%.4g" (units.HumanSize), "%.3g" in history (HumanSizeWithPrecision).
  std::snprintf(buf, sizeof(buf), "%.*g%s", std::clamp(significant_digits, 1, 17), v, kUnits[unit]);
  return buf;
}

std::string HumanAge(std::string_view rfc3339) {
  int64_t then = 0;
  uint32_t nanos = 0;
  if (rfc3339.empty() || !ParseRfc3339(rfc3339, &then, &nanos).ok()) return "N/A";
  int64_t now = static_cast<int64_t>(std::time(nullptr));
  int64_t secs = now - then;
  if (secs < 0) secs = 0;
  auto fmt = [](int64_t n, const char* unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s") + " ago";
  };
  if (secs < 60) return "Less than a minute ago";
  if (secs < 3600) return fmt(secs / 60, "minute");
  if (secs < 2 * 86400) return fmt(secs / 3600, "hour");
  if (secs < 14 * 86400) return fmt(secs / 86400, "day");
  if (secs < 60 * 86400) return fmt(secs / (7 * 86400), "week");
  if (secs < 2 * 365 * 86400) return fmt(secs / (30 * 86400), "month");
  return fmt(secs / (365 * 86400), "year");
}

}  // namespace imgfs::tools
