// imgfs — `imgfs tag` and `imgfs history` (also `imgfs image tag|history`).
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/time.h"
#include "cache/images.h"
#include "cache/store.h"
#include "registry/reference.h"
#include "tools/cli.h"

namespace imgfs::tools {
namespace {

using nlohmann::json;

constexpr std::string_view kTagUsage =
    "Usage: imgfs tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]\n\n"
    "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE (a reference or an image ID).";

constexpr std::string_view kHistoryUsage =
    "Usage: imgfs history [OPTIONS] IMAGE\n\n"
    "Show the history of an image: one row per step of its config's history, newest first.\n"
    "SIZE is the size of the layer the step made as stored (compressed), 0B for steps that\n"
    "made no layer. With --human=false, CREATED is an RFC 3339 date and SIZE a byte count.";

// docker truncates CREATED BY to this many characters (cli/command/formatter: history.go).
constexpr size_t kCreatedByWidth = 45;

// The first `width` characters of UTF-8 `text`, the last one replaced by "…" when it is
// longer (docker's formatter.Ellipsis, counting code points).
std::string Ellipsis(const std::string& text, size_t width) {
  std::vector<size_t> starts;  // byte offset of each code point
  for (size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  if (starts.size() <= width || width == 0) return text;
  return text.substr(0, starts[width - 1]) + "\u2026";
}

// docker's CreatedAt: the step's time as RFC 3339 in whole seconds (a config may carry
// fractions or an offset); a time that does not parse is shown as written.
std::string CreatedAt(const std::string& created) {
  int64_t sec = 0;
  uint32_t nsec = 0;
  if (created.empty() || !ParseRfc3339(created, &sec, &nsec).ok()) return created;
  return FormatRfc3339(sec);
}

}  // namespace

int RunTag(CommandContext& ctx) {
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kTagUsage, {}, &args, &code)) return code;
  if (args.positional().size() != 2) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" requires exactly 2 arguments");
  }
  const std::string& source = args.positional()[0];
  const std::string& target_text = args.positional()[1];
  Result<registry::Reference> target = registry::Reference::Parse(target_text);
  if (!target.has_value()) {
    return Fail("Error parsing reference: " + target.error().message());
  }
  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  Result<cache::ResolvedImage> tagged = cache::TagImage(**store, source, *target);
  if (!tagged.has_value()) return Fail(tagged.error().message());
  return kExitOk;
}

int RunHistory(CommandContext& ctx) {
  static const std::vector<OptionSpec> specs = {
      {"format", 0, true, "FORMAT",
       "\"table\", \"table TEMPLATE\", \"json\" or a template like '{{.CreatedBy}}'"},
      {"human", 'H', false, "",
       "print sizes and dates in human readable format (default true; --human=false: bytes "
       "and RFC 3339 dates)"},
      {"no-trunc", 0, false, "", "do not truncate the output"},
      {"quiet", 'q', false, "", "only show image IDs"},
  };
  ParsedArgs args;
  int code = kExitOk;
  if (!ParseCommandArgs(ctx, kHistoryUsage, specs, &args, &code)) return code;
  if (args.positional().size() != 1) {
    return UsageError(ctx.name, "\"" + ctx.name + "\" requires exactly 1 argument");
  }
  Result<std::unique_ptr<cache::Store>> store = OpenStore(ctx);
  if (!store.has_value()) return Fail(store.error());
  Result<cache::ResolvedImage> image = cache::ResolveImage(**store, args.positional()[0]);
  if (!image.has_value()) return Fail(image.error().message());

  const bool no_trunc = args.Has("no-trunc");
  const bool human = args.Flag("human", true);
  std::vector<json> items;
  bool top = true;
  for (const cache::HistoryRow& row : cache::ImageHistory(*image)) {
    // Like docker for a pulled image: the image ID on the newest step, the steps below it
    // have no image of their own.
    std::string id = "<missing>";
    if (top) id = no_trunc ? image->id.String() : image->id.Short();
    top = false;
    std::string created_by = row.entry.created_by;
    for (char& c : created_by) {
      if (c == '\t' || c == '\n') c = ' ';
    }
    if (!no_trunc) created_by = Ellipsis(created_by, kCreatedByWidth);
    // docker's historyContext: without --human, CreatedSince is CreatedAt and Size is bytes.
    std::string created_at = CreatedAt(row.entry.created);
    items.push_back(
        {{"ID", id},
         {"CreatedSince", human ? HumanAge(row.entry.created) : created_at},
         {"CreatedAt", created_at},
         {"CreatedBy", created_by},
         {"Size", human ? HumanSize(row.layer.size, 3) : std::to_string(row.layer.size)},
         {"Comment", row.entry.comment}});
  }

  std::string format = args.Get("format");
  if (args.Has("quiet")) format = "{{.ID}}";
  if (!IsDefaultTable(format)) {
    static const json headers = {{"ID", "IMAGE"},
                                 {"CreatedSince", "CREATED"},
                                 {"CreatedAt", "CREATED AT"},
                                 {"CreatedBy", "CREATED BY"},
                                 {"Size", "SIZE"},
                                 {"Comment", "COMMENT"}};
    PrintFormatted(format, headers, items);
    return kExitOk;
  }
  // docker's nonHumanHistoryTableFormat shows CREATED AT in place of CREATED.
  std::vector<std::vector<std::string>> rows = {
      {"IMAGE", human ? "CREATED" : "CREATED AT", "CREATED BY", "SIZE", "COMMENT"}};
  for (const json& i : items) {
    rows.push_back({i["ID"], human ? i["CreatedSince"] : i["CreatedAt"], i["CreatedBy"], i["Size"],
                    i["Comment"]});
  }
  PrintTable(rows);
  return kExitOk;
}

}  // namespace imgfs::tools
