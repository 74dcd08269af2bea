// The `commcare` command: a host for libcommcare. Parsing by CLI11; JSON on stdout; exit codes
// in common.h (docs/cli.md), shared with `python -m commcare`.
#include <sys/stat.h>

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "common.h"

namespace commcare::cli {

// ---- Command and Cli ----

Command& Command::Str(const std::string& name, const std::string& help, bool required) {
  auto* o = app_->add_option(name, values_[name], help);
  if (required) o->required();
  return *this;
}

Command& Command::Int(const std::string& name, const std::string& help, int64_t min) {
  app_->add_option(name, values_[name], help)
      ->type_name("INT")
      ->check(CLI::Validator(
          [min](std::string& v) -> std::string {
            int64_t n = 0;
            if (!ParseInt(v, &n) || n < min)
              return "must be a whole number of at least " + std::to_string(min) + " (got '" + v +
                     "')";
            return "";
          },
          "", "INT"));
  return *this;
}

Command& Command::Number(const std::string& name, const std::string& help) {
  app_->add_option(name, values_[name], help)->check(CLI::NonNegativeNumber);
  return *this;
}

Command& Command::Choice(const std::string& name, const std::string& help,
                         const std::vector<std::string>& choices) {
  app_->add_option(name, values_[name], help)->check(CLI::IsMember(choices));
  return *this;
}

Command& Command::Flag(const std::string& name, const std::string& help) {
  app_->add_flag(name, flags_[name], help);
  return *this;
}

Command& Command::Many(const std::string& name, const std::string& help) {
  app_->add_option(name, lists_[name], help)->take_all();
  return *this;
}

Command& Command::Positional(const std::string& name, const std::string& help, bool many) {
  auto* o = app_->add_option(name, positional_, help)->required();
  if (!many) o->expected(1);
  return *this;
}

bool Command::Chosen() const { return app_->parsed(); }

Args Command::Collect() const {
  Args a;
  for (const auto& [k, v] : values_)
    if (app_->count(k) > 0) a.opts[k] = v;
  for (const auto& [k, v] : flags_)
    if (v) a.opts[k] = "1";
  for (const auto& [k, vs] : lists_)
    for (const auto& v : vs) {
      a.multi.emplace(k, v);
      a.opts[k] = v;
    }
  a.pos = positional_;
  return a;
}

CLI::App* Cli::Group(CLI::App* parent, const std::string& name, const std::string& help) {
  CLI::App* g = (parent ? parent : root_)->add_subcommand(name, help);
  g->require_subcommand(1);
  return g;
}

Command& Cli::Add(CLI::App* parent, const std::string& name, const std::string& help,
                  std::function<int(const Args&)> run) {
  CLI::App* app = (parent ? parent : root_)->add_subcommand(name, help);
  commands_.emplace_back(app, std::move(run));
  return commands_.back()
      .Str("--data", "the data directory")
      .Str("--config", "a deployment's host file (shared backends, and data_dir)");
}

namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The nearest of names to word, if near enough to be a likely typo.
std::string Nearest(const std::string& word, const std::vector<std::string>& names) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& n : names)
    if (size_t d = EditDistance(word, n); d < best_d) best = n, best_d = d;
  return best;
}

// The deepest command CLI11 chose.
CLI::App* Deepest(CLI::App* app) {
  for (CLI::App* sub : app->get_subcommands()) return Deepest(sub);
  return app;
}

// The first word of argv the chosen command does not know ("" if none), and a "did you mean"
// for it when a known name is near.
std::pair<std::string, std::string> Unknown(CLI::App* root, int argc, char** argv) {
  CLI::App* at = Deepest(root);
  std::vector<std::string> options, commands;
  for (const CLI::Option* o : at->get_options())
    for (const auto& n : o->get_lnames()) options.push_back("--" + n);
  for (const CLI::App* s : at->get_subcommands({})) commands.push_back(s->get_name());
  for (int i = 1; i < argc; ++i) {
    const std::string w = argv[i];
    if (w.rfind("--", 0) == 0) {
      const std::string name = w.substr(0, w.find('='));
      if (std::find(options.begin(), options.end(), name) != options.end()) continue;
      std::string n = Nearest(name, options);
      return {"unknown option " + name, n.empty() ? "" : "did you mean " + n + "?"};
    }
    if (!commands.empty() && std::find(commands.begin(), commands.end(), w) == commands.end()) {
      bool ancestor = false;  // a word naming the chosen command or one above it
      for (CLI::App* p = at; p; p = p->get_parent()) ancestor = ancestor || p->get_name() == w;
      if (ancestor) continue;
      std::string n = Nearest(w, commands);
      return {"unknown command " + w, n.empty() ? "" : "did you mean " + n + "?"};
    }
  }
  return {"", ""};
}

// The words that chose the deepest command ("case get").
std::string CommandPath(CLI::App* root) {
  std::string path;
  for (CLI::App* p = Deepest(root); p && p != root; p = p->get_parent())
    path = p->get_name() + (path.empty() ? "" : " " + path);
  return path;
}

int Main(int argc, char** argv) {
  umask(077);  // every file and directory the command makes is its owner's alone
  CLI::App root(
      "libcommcare's command line: JSON on stdout; exit codes 0 ok, 1 failed, "
      "2 not found, 3 precondition, 4 check found problems, 64 usage (docs/cli.md)",
      "commcare");
  root.set_version_flag("--version", "commcare " COMMCARE_VERSION);
  root.require_subcommand(1);
  Cli cli(&root);
  RegisterDataCommands(&cli);
  RegisterChangeCommands(&cli);
  RegisterServeCommand(&cli);
  RegisterAdminCommands(&cli);
  RegisterTaskCommands(&cli);
  RegisterReportCommands(&cli);
  RegisterExportCommands(&cli);
  RegisterRuleCommands(&cli);
  RegisterAlertCommands(&cli);
  RegisterImportCommands(&cli);
  RegisterForwarderCommands(&cli);
  try {
    root.parse(argc, argv);
  } catch (const CLI::CallForVersion&) {
    std::cout << "commcare " COMMCARE_VERSION << std::endl;
    return kOk;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return root.exit(e);  // --help: usage on stdout, exit 0
    // An unknown word is named first: it is likely why a required option seems missing.
    auto [unknown, hint] = Unknown(&root, argc, argv);
    const std::string path = CommandPath(&root);
    std::cerr << "commcare: " << (unknown.empty() ? std::string(e.what()) : unknown)
              << (hint.empty() ? "" : "; " + hint) << "\nrun `commcare "
              << (path.empty() ? "" : path + " ") << "--help` for usage" << std::endl;
    return kUsage;
  }
  for (const Command& c : cli.Commands()) {
    if (!c.Chosen()) continue;
    Args a = c.Collect();
    const bool init = Deepest(&root)->get_name() == "init" && Deepest(&root)->get_parent() == &root;
    if (!init && a.Has("--config"))
      if (Status s = UseHostFile(&a); !s.ok()) return FailStatus(s);
    if (!a.Has("--data") && !(init && a.Has("--config"))) {
      std::cerr << "commcare: --data DIR (or --config HOST.json) is required" << std::endl;
      return kUsage;
    }
    try {
      return c.Run(a);
    } catch (const std::exception& e) {
      return Fail(std::string("internal error: ") + e.what());
    }
  }
  return kUsage;  // not reached: CLI11 requires a command
}

}  // namespace
}  // namespace commcare::cli

int main(int argc, char** argv) { return commcare::cli::Main(argc, argv); }
