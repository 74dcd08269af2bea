// What the `commcare` tool's commands over saved named definitions share (rules, reports,
// alerts: each a task-queue schedule "<kind>:<domain>:<name>"): reading a definition from
// --json or --file, running a call on the host and printing its JSON lines.
#pragma once

#include <commcare/host.h>
#include <commcare/tasks.h>

#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "common.h"

namespace commcare::cli {

// Opens the host (writer, or reader beside a server) and its task queue, runs fn(queue, host)
// and prints what it returns (nothing when ""). With usage, InvalidArgument (a bad definition)
// exits as a usage error naming the field.
template <typename F>
int WithQueue(const Args& a, F&& fn, bool usage = false) {
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  Result<std::string> out = fn(*q, host->get());
  if (!out.ok() && usage && out.status().IsInvalidArgument())
    return Fail(out.status().message(), kUsage);
  if (!out.ok()) return FailStatus(out.status());
  if (!out->empty()) std::cout << *out << "\n";
  std::cout.flush();
  return kOk;
}

// The definition given as --json TEXT or --file PATH, checked by validate (when not null); else
// false with the exit code of the usage error printed (*code). noun names it ("the rule").
bool DefinitionArg(const Args& a, std::string_view noun, Status (*validate)(std::string_view),
                   std::string* text, int* code);

// JSON lines, one per element.
std::string JsonLines(const std::vector<std::string>& all);

// {"deleted": "<kind>:<domain>:<name>"}, what a delete prints.
std::string DeletedLine(std::string_view kind, const Args& a);

}  // namespace commcare::cli
