// imgfs — the command line: option parsing, the command table, shared helpers.
//
// `imgfs` is one binary with docker-like subcommands. Every subcommand is a function
// `int RunX(CommandContext&)` defined in a tools/cmd_*.cc file and listed in the command table
// of tools/imgfs_main.cc. A command returns an exit status: kExitOk (0), kExitError (1, the
// error has been printed as one line "imgfs: …" on stderr) or kExitUsage (2, bad flags or
// arguments).
//
// Options are parsed by ArgParser from a table of OptionSpecs. Accepted forms: `-x`, `-x VAL`,
// `-xVAL`, `-abc` (bundled boolean short flags), `--long`, `--long VAL`, `--long=VAL`, and
// `--` to end options. Options and positional arguments may be interleaved (docker allows
// `imgfs rm $(imgfs images -q) -f`). The global options (--root, --insecure-registry,
// --ca-cert, --registries-conf, --creds, --creds-stdin, --log-level, -h/--help) are accepted
// before the command name and after it.
//
// Commands are thin: they parse, call into fs/, cache/ and registry/, and print. No
// filesystem or registry logic lives here.
//
// Thread-safety: single-threaded (the CLI's own code); the libraries it calls document theirs.
#ifndef IMGFS_TOOLS_CLI_H_
#define IMGFS_TOOLS_CLI_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "cache/store.h"

namespace imgfs::tools {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// One option of a command.
struct OptionSpec {
  std::string_view long_name;   // "platform" (without dashes); may be empty
  char short_name = 0;          // 'a'; 0 if none
  bool takes_value = false;     // false: a boolean flag
  std::string_view value_name;  // "OS/ARCH" for the help text
  std::string_view help;
};

// The result of parsing: flags seen (name → values in order; boolean flags get "true" per
// occurrence) and positional arguments. A boolean flag set to false (`--human=false`) is not
// Has(); the last occurrence of a boolean flag wins.
class ParsedArgs {
 public:
  bool Has(std::string_view name) const;
  // A boolean flag: `fallback` unless given; `--x`/`--x=true` → true, `--x=false` → false.
  bool Flag(std::string_view name, bool fallback) const;
  // The last value of `name`, or `fallback`.
  std::string Get(std::string_view name, std::string_view fallback = "") const;
  // Every value of a repeatable option, in order.
  std::vector<std::string> GetAll(std::string_view name) const;
  const std::vector<std::string>& positional() const { return positional_; }

  void Add(std::string_view name, std::string value) {
    values_[std::string(name)].push_back(std::move(value));
  }
  void AddPositional(std::string value) { positional_.push_back(std::move(value)); }
  // Records a boolean flag given as `--x=true` or `--x=false`.
  void SetFlag(std::string_view name, bool value);

 private:
  std::map<std::string, std::vector<std::string>, std::less<>> values_;
  std::set<std::string, std::less<>> set_false_;  // boolean flags whose last value is false
  std::vector<std::string> positional_;
};

// Parses `args` against `specs`. Options are keyed by their long name (or by the short
// letter as a 1-char string when there is no long name). InvalidArgument names the bad flag:
// "unknown flag: --bogus", "flag needs an argument: --platform".
Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                             const std::vector<OptionSpec>& specs);

// The options every command accepts.
const std::vector<OptionSpec>& GlobalOptionSpecs();

// Options that apply to the whole process, resolved from flags and the environment.
struct GlobalOptions {
  std::string root;  // --root, else cache::DefaultStoreRoot() ($IMGFS_ROOT, /var/lib/imgfs, ...)
  std::vector<std::string> insecure_registries;  // --insecure-registry (repeatable)
  std::vector<std::string> ca_certs;             // --ca-cert (repeatable)
  std::string creds;  // --creds USER:PASS or the first stdin line with --creds-stdin
};

// Everything a command gets.
struct CommandContext {
  std::string name;               // as invoked, e.g. "pull", "image ls", "rmi"
  std::vector<std::string> args;  // arguments after the command name
  GlobalOptions global;           // from flags before the command name (and the environment)
  bool stdout_is_tty = false;
  bool stderr_is_tty = false;
};

using CommandFn = int (*)(CommandContext& ctx);

struct Command {
  std::string_view name;
  std::string_view summary;
  CommandFn run;  // nullptr: not built into this binary
};

// Parses a command's arguments with its own specs plus the global ones, and applies global
// flags found there to ctx.global (and the log level). On -h/--help prints `usage` plus the
// option list to stdout and returns nullopt-like kExitOk through `exit_code`; on a usage error
// prints it and returns kExitUsage through `exit_code`. Returns true when the command should
// go on.
bool ParseCommandArgs(CommandContext& ctx, std::string_view usage,
                      const std::vector<OptionSpec>& specs, ParsedArgs* parsed, int* exit_code);

// Applies global flags from `parsed` to `global` (later values override earlier ones).
// InvalidArgument for a bad --log-level.
Status ApplyGlobalFlags(const ParsedArgs& parsed, GlobalOptions* global);

// Overwrites, in the process's own argument memory, the secret part of credential options
// (`--creds USER:PASS` keeps "USER:", `login -p/--password PASS`) with '*', so that
// /proc/PID/cmdline and `ps` no longer show them — in this process and in a daemon it
// forks (`imgfs mount`). Call it once in main after copying argv. Between exec and this call
// the secret is visible for a moment; --creds-stdin / --password-stdin avoid even that.
void ScrubSecretArgs(int argc, char** argv);

// Prints "imgfs: <message>" on stderr and returns kExitError.
int Fail(std::string_view message);
int Fail(const Status& status);
// Prints "imgfs: <message>\nSee 'imgfs <command> --help'." on stderr; returns kExitUsage.
int UsageError(std::string_view command, std::string_view message);

// Formats the help text of a command: usage line(s), then the options.
std::string FormatHelp(std::string_view usage, const std::vector<OptionSpec>& specs);

// Opens the store at ctx.global.root (creating the layout when missing); the error names the
// directory.
Result<std::unique_ptr<cache::Store>> OpenStore(const CommandContext& ctx);

// Prints `rows` (the first is the header) as an aligned table: each column as wide as its
// widest cell plus three spaces, trailing spaces cut.
void PrintTable(const std::vector<std::vector<std::string>>& rows);

// A small subset of Go templates as docker's --format uses them: "{{.Field}}", "{{.A.B}}",
// "{{json .X}}", "{{json .}}", and "\t" / "\n" escapes. Unknown fields print "<no value>"
// like Go; non-string values print as JSON.
std::string ApplyTemplate(std::string_view tmpl, const nlohmann::json& value);

// docker's --format of a listing, for every format but the default table (which callers
// print themselves):
//   "json"             one JSON object per item and line;
//   "table TEMPLATE"   a header line (TEMPLATE applied to `headers`, field → column title),
//                      then TEMPLATE per item; cells (split at tabs) aligned by PrintTable;
//   anything else      TEMPLATE per item, no header.
// True when `format` is the default table ("" or "table"), which this does not print.
bool IsDefaultTable(std::string_view format);
void PrintFormatted(std::string_view format, const nlohmann::json& headers,
                    const std::vector<nlohmann::json>& items);

// Human sizes as docker prints them ("5.22MB", "912kB", "0B"; powers of 1000) with
// `significant_digits` (docker: 4 in most listings, 3 in `history`).
std::string HumanSize(int64_t bytes, int significant_digits = 4);
// "2 hours ago", "3 days ago" for an RFC 3339 time; "N/A" when unparsable.
std::string HumanAge(std::string_view rfc3339);

// ---- Commands (tools/cmd_*.cc) ----
// cmd_image.cc
int RunPull(CommandContext& ctx);
int RunImages(CommandContext& ctx);
int RunInspect(CommandContext& ctx);
int RunRemove(CommandContext& ctx);
int RunImage(CommandContext& ctx);  // `imgfs image ls|pull|inspect|rm|tag|history|prune|…`
// cmd_tag.cc
int RunTag(CommandContext& ctx);
int RunHistory(CommandContext& ctx);
// cmd_prune.cc
int RunImagePrune(CommandContext& ctx);  // `imgfs image prune`
// cmd_system.cc
int RunSystem(CommandContext& ctx);  // `imgfs system df`
// cmd_archive.cc
int RunSave(CommandContext& ctx);
int RunLoad(CommandContext& ctx);
// cmd_login.cc
int RunLogin(CommandContext& ctx);
int RunLogout(CommandContext& ctx);
// cmd_mount.cc (optional; declared weak so the binary links without it: the table in
// imgfs_main.cc shows the command only when it is built in).
[[gnu::weak]] int RunMount(CommandContext& ctx);
[[gnu::weak]] int RunUmount(CommandContext& ctx);
// Commands of their own cmd_*.cc files, declared weak for the same reason.
[[gnu::weak]] int RunRun(CommandContext& ctx);         // cmd_run.cc
[[gnu::weak]] int RunPs(CommandContext& ctx);          // cmd_run.cc
[[gnu::weak]] int RunContainers(CommandContext& ctx);  // cmd_run.cc: `containers ls|rm`
// cmd_run.cc: without root, enters a user namespace like a rootless run's before a container's
// upper is read or removed (it holds files of the caller's subordinate ids, which only root of
// such a namespace may read or delete). Without a subordinate range no run could have made
// such files: it then does nothing.
[[gnu::weak]] void EnterRootlessForContainers();
[[gnu::weak]] int RunCommit(CommandContext& ctx);      // cmd_commit.cc
[[gnu::weak]] int RunDiff(CommandContext& ctx);        // cmd_diff.cc
[[gnu::weak]] int RunLayerStore(CommandContext& ctx);  // cmd_layer_store.cc
[[gnu::weak]] int RunPush(CommandContext& ctx);        // cmd_push.cc
[[gnu::weak]] int RunStats(CommandContext& ctx);       // cmd_cache.cc
[[gnu::weak]] int RunCache(CommandContext& ctx);       // cmd_cache.cc: `cache du|gc|prune`
[[gnu::weak]] int RunConvert(CommandContext& ctx);     // cmd_convert.cc
[[gnu::weak]] int RunIndex(CommandContext& ctx);       // cmd_convert.cc: `index build|push`

// The command table (imgfs_main.cc).
const std::vector<Command>& Commands();

}  // namespace imgfs::tools

#endif  // IMGFS_TOOLS_CLI_H_
