// The `commcare` tool: what its command groups share (arguments, JSON errors, exit codes,
// opening a data directory) and the command table they register in. CLI11 is seen only by
// cli.cc; a group file declares its commands through Command.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "commcare/engine.h"
#include "commcare/host.h"
#include "commcare/status.h"
#include "commcare/sync.h"
#include "meta/meta_store.h"

namespace CLI {
class App;
}

namespace commcare::cli {

// Exit codes, shared with `python -m commcare` (docs/cli.md).
enum Exit : int {
  kOk = 0,
  kFailed = 1,        // the operation failed: {"error": ...} on stdout
  kNotFound = 2,      // a form, case, user or file named does not exist
  kPrecondition = 3,  // a lock held elsewhere, a stale revision, a restore refused
  kProblems = 4,      // `check` found problems
  kUsage = 64,        // EX_USAGE: an unknown command or option, a missing or malformed value
};

// A command's parsed arguments, by option name ("--domain").
struct Args {
  std::map<std::string, std::string> opts;
  std::multimap<std::string, std::string> multi;  // repeatable options (--prop, --range)
  std::vector<std::string> pos;
  bool Has(const std::string& k) const { return opts.count(k) > 0; }
  std::string Get(const std::string& k, const std::string& def = "") const {
    auto it = opts.find(k);
    return it == opts.end() ? def : it->second;
  }
};

// One command: the options CLI11 parses for it and the function that runs it.
class Command {
 public:
  Command(CLI::App* app, std::function<int(const Args&)> run) : app_(app), run_(std::move(run)) {}
  Command& Str(const std::string& name, const std::string& help, bool required = false);
  Command& Int(const std::string& name, const std::string& help, int64_t min = 0);  // whole
  Command& Number(const std::string& name, const std::string& help);  // non-negative decimal
  Command& Choice(const std::string& name, const std::string& help,
                  const std::vector<std::string>& choices);
  Command& Flag(const std::string& name, const std::string& help);
  Command& Many(const std::string& name, const std::string& help);  // repeatable
  Command& Positional(const std::string& name, const std::string& help, bool many = false);
  // Whether CLI11 chose this command; its arguments as Args.
  bool Chosen() const;
  Args Collect() const;
  int Run(const Args& a) const { return run_(a); }

 private:
  CLI::App* app_;
  std::function<int(const Args&)> run_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> flags_;
  std::map<std::string, std::vector<std::string>> lists_;
  std::vector<std::string> positional_;
};

// The command table.
class Cli {
 public:
  explicit Cli(CLI::App* root) : root_(root) {}
  // A group of subcommands (`case`, `admin user`); parent nullptr = the top level.
  CLI::App* Group(CLI::App* parent, const std::string& name, const std::string& help);
  // A command under parent (nullptr = the top level), with --data and --config.
  Command& Add(CLI::App* parent, const std::string& name, const std::string& help,
               std::function<int(const Args&)> run);
  const std::list<Command>& Commands() const { return commands_; }

 private:
  CLI::App* root_;
  std::list<Command> commands_;
};

// Each group file registers its commands.
void RegisterDataCommands(Cli* cli);       // init, migrate, submit, form, case, ledger, check
void RegisterChangeCommands(Cli* cli);     // changes, pillows, search, ucr
void RegisterServeCommand(Cli* cli);       // serve
void RegisterAdminCommands(Cli* cli);      // admin, restore
void RegisterTaskCommands(Cli* cli);       // tasks
void RegisterReportCommands(Cli* cli);     // reports
void RegisterExportCommands(Cli* cli);     // export cases|forms
void RegisterRuleCommands(Cli* cli);       // rules
void RegisterAlertCommands(Cli* cli);      // alerts (reminders)
void RegisterImportCommands(Cli* cli);     // import cases|edit, lookup-tables upload
void RegisterForwarderCommands(Cli* cli);  // forwarders (data forwarding)

// Helpers (common.cc).
int Fail(const std::string& msg, int code = kFailed);
int FailStatus(const Status& s);
bool ReadFile(const std::string& path, std::string* out);
bool ParseInt(const std::string& s, int64_t* out);
std::vector<std::string> SplitCommas(const std::string& s);
std::string Env(const char* name, const std::string& def);
bool NeedDomain(const Args& a, std::string* domain);
// How a command opens the deployment.
enum class Access {
  kWriter,          // takes the writer's lock (FailedPrecondition when a server holds it)
  kReader,          // read-only, beside a running writer
  kWriterOrReader,  // the writer when nobody holds it (pending work is finished), else a reader
};
// The Host options of --data (and --config HOST.json, whose deployment sets the directory up on
// first use and must match it afterwards).
Result<HostOptions> HostOptionsOf(const Args& a, Access access);
Result<std::unique_ptr<Host>> OpenHost(const Args& a, Access access);
// --config HOST.json: checks it and takes --data from it when not given.
Status UseHostFile(Args* a);

}  // namespace commcare::cli
