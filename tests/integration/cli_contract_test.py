#!/usr/bin/env python3
"""The CLI contract, held by both the `commcare` command and `python -m commcare`.

    cli_contract_test.py COMMCARE_BINARY

Exit codes: 0 success; 1 the operation failed ({"error": ...} on stdout); 2 not found (a form,
case, user or file named does not exist); 3 precondition (the data directory locked by another
writer, a stale revision, a restore refused); 4 `check` found problems; 64 (EX_USAGE) a usage
error: unknown command or option, missing option or argument, a value of the wrong form. A usage
error is told on stderr, naming the problem and, for a misspelt option or command, suggesting
"did you mean X?"; nothing goes to stdout. --help and -h work at every level (usage on stdout,
exit 0); --version prints "commcare X.Y.Z".

Every assertion runs against the binary and against `python -m commcare` (where the Python tool
has the command), each in its own subTest. The Python tool runs with this process's environment:
COMMCARE_LIBRARY and PYTHONPATH (ctest sets them)."""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BINARY = os.path.abspath(sys.argv.pop(1))

EX_USAGE = 64
NOT_FOUND = 2
PRECONDITION = 3

# A form that creates a case: what a second writer tries to submit.
FORM = b"""<?xml version='1.0' ?>
<form xmlns="http://commcarehq.org/test/cli-contract">
  <case xmlns="http://commcarehq.org/case/transaction/v2" case_id="contract-case"
        user_id="contract-user" date_modified="2024-01-02T03:04:05">
    <create><case_type>t</case_type><case_name>n</case_name></create>
  </case>
  <meta xmlns="http://openrosa.org/jr/xforms"><instanceID>contract-form</instanceID></meta>
</form>
"""


class Tool:
    """One implementation of the command line."""

    def __init__(self, name, argv):
        self.name = name
        self.argv = argv

    def run(self, *args, timeout=60):
        return subprocess.run(self.argv + [str(a) for a in args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def __repr__(self):
        return self.name


CPP = Tool("commcare", [BINARY])
PY = Tool("python -m commcare", [sys.executable, "-m", "commcare"])
BOTH = (CPP, PY)


def shown(p):
    return f"exit {p.returncode}\n--- stdout\n{p.stdout}--- stderr\n{p.stderr}"


class CliContractTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = [v for v in ("COMMCARE_LIBRARY", "PYTHONPATH") if not os.environ.get(v)]
        if missing:  # a failure, never a skip: the Python half is half the contract
            raise AssertionError(f"{', '.join(missing)} not set (ctest sets them)")
        cls.tmp = tempfile.mkdtemp(prefix="cc-contract-")
        cls.form = os.path.join(cls.tmp, "form.xml")
        with open(cls.form, "wb") as f:
            f.write(FORM)
        cls.dirs = {}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def data(self, tool):
        """A data directory made by tool's own `init` (once per tool), mode 0700."""
        if tool.name not in self.dirs:
            d = os.path.join(self.tmp, f"data-{len(self.dirs)}")
            p = tool.run("init", "--data", d, "--shards", "8")
            self.assertEqual(p.returncode, 0, f"{tool} init: {shown(p)}")
            os.chmod(d, 0o700)
            self.dirs[tool.name] = d
        return self.dirs[tool.name]

    # -- assertions ---------------------------------------------------------------------------

    def assert_help(self, tool, args, *mentions):
        p = tool.run(*args)
        self.assertEqual(p.returncode, 0, shown(p))
        for m in mentions:
            self.assertIn(m, p.stdout, f"help should mention {m}: {shown(p)}")

    def assert_usage_error(self, tool, args, *mentions, suggest=None):
        p = tool.run(*args)
        self.assertEqual(p.returncode, EX_USAGE, shown(p))
        self.assertEqual(p.stdout, "", f"a usage error prints nothing on stdout: {shown(p)}")
        for m in mentions:
            self.assertIn(m, p.stderr, f"stderr should name {m}: {shown(p)}")
        if suggest is not None:
            self.assertIn(f"did you mean {suggest}?", p.stderr, shown(p))

    def assert_json_error(self, tool, args, code):
        p = tool.run(*args)
        self.assertEqual(p.returncode, code, shown(p))
        first = p.stdout.splitlines()[0] if p.stdout.strip() else ""
        try:
            err = json.loads(first)
        except ValueError:
            self.fail(f"stdout should be an {{\"error\"}} JSON line: {shown(p)}")
        self.assertIsInstance(err, dict, shown(p))
        self.assertIsInstance(err.get("error"), str, shown(p))
        return err

    # -- --help and -h --------------------------------------------------------------------------

    def test_help_at_top_level(self):
        for tool in BOTH:
            for flag in ("--help", "-h"):
                with self.subTest(tool=tool, args=flag):
                    self.assert_help(tool, [flag], "--version", "submit", "changes")

    def test_help_of_command_groups(self):
        groups = [
            (BOTH, ["form"], "archive"),
            (BOTH, ["case"], "history"),
            (BOTH, ["ledger"], "get"),
            (BOTH, ["pillows"], "requeue"),
            (BOTH, ["ucr"], "rows"),
            (BOTH, ["admin"], "user"),
            (BOTH, ["admin", "domain"], "create"),
            (BOTH, ["admin", "user"], "create"),
            ((CPP,), ["admin", "apikey"], "revoke"),
        ]
        for tools, args, subcommand in groups:
            for tool in tools:
                with self.subTest(tool=tool, args=args + ["--help"]):
                    self.assert_help(tool, args + ["--help"], subcommand)

    def test_help_of_commands_and_subcommands(self):
        commands = [
            (BOTH, ["init"], "--shards"),
            (BOTH, ["submit"], "--openrosa-version"),
            (BOTH, ["changes"], "--topic"),
            (BOTH, ["search"], "--prop"),
            (BOTH, ["restore"], "--since"),
            (BOTH, ["form", "get"], "--xml"),
            (BOTH, ["form", "archive"], "--domain"),
            (BOTH, ["case", "get"], "--domain"),
            (BOTH, ["case", "list"], "--closed"),
            (BOTH, ["case", "history"], "--domain"),
            (BOTH, ["ledger", "get"], "--domain"),
            (BOTH, ["pillows", "run"], "--only"),
            (BOTH, ["pillows", "requeue"], "--pillow"),
            (BOTH, ["ucr", "rows"], "--table"),
            (BOTH, ["admin", "domain", "create"], "--open-submissions"),
            (BOTH, ["admin", "domain", "create"], "--async-restore"),
            (BOTH, ["admin", "domain", "create"], "--restore-attachments"),
            (BOTH, ["admin", "user", "create"], "--username"),
            ((CPP,), ["check"], "--data"),
            ((CPP,), ["serve"], "--listen"),
            ((CPP,), ["migrate"], "--data"),
            ((CPP,), ["case", "rebuild"], "--domain"),
            ((CPP,), ["pillows", "reset"], "--pillow"),
            ((CPP,), ["admin", "apikey", "create"], "--expires-days"),
        ]
        for tools, args, option in commands:
            for tool in tools:
                for flag in ("--help", "-h"):
                    with self.subTest(tool=tool, args=args + [flag]):
                        self.assert_help(tool, args + [flag], option)

    # -- --version ------------------------------------------------------------------------------

    def test_version(self):
        seen = {}
        for tool in BOTH:
            with self.subTest(tool=tool):
                p = tool.run("--version")
                self.assertEqual(p.returncode, 0, shown(p))
                self.assertRegex(p.stdout.strip(), r"^commcare \d+\.\d+\.\d+$", shown(p))
                seen[tool.name] = p.stdout.strip()
        probe = subprocess.run(
            [sys.executable, "-c", "import commcare; print(*commcare.version())"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(probe.returncode, 0, shown(probe))
        library = "commcare " + ".".join(probe.stdout.split())
        for name, line in seen.items():
            with self.subTest(tool=name, check="the library's version"):
                self.assertEqual(line, library)

    # -- usage errors: 64, stderr, nothing on stdout --------------------------------------------

    def test_misspelt_option_is_named_with_a_suggestion(self):
        for tool in BOTH:
            d = self.data(tool)
            with self.subTest(tool=tool, args="case list --domian"):
                self.assert_usage_error(tool, ["case", "list", "--data", d, "--domian", "demo"],
                                        "--domian", suggest="--domain")
            with self.subTest(tool=tool, args="changes --limt"):
                self.assert_usage_error(tool, ["changes", "--data", d, "--limt", "5"],
                                        "--limt", suggest="--limit")

    def test_unknown_command_is_named_with_a_suggestion(self):
        for tool in BOTH:
            d = self.data(tool)
            with self.subTest(tool=tool, args="submti"):
                self.assert_usage_error(tool, ["submti", "--data", d, "--domain", "demo",
                                               self.form], "submti", suggest="submit")
            with self.subTest(tool=tool, args="case lsit"):
                self.assert_usage_error(tool, ["case", "lsit", "--data", d, "--domain", "demo"],
                                        "lsit", suggest="list")
            with self.subTest(tool=tool, args="pillows statsu"):
                self.assert_usage_error(tool, ["pillows", "statsu", "--data", d], "statsu",
                                        suggest="status")

    def test_missing_command_option_or_argument(self):
        for tool in BOTH:
            d = self.data(tool)
            cases = [
                ([], ()),
                (["case"], ()),
                (["case", "list", "--data", d], ("--domain",)),
                (["changes"], ("--data",)),
                (["case", "get", "--data", d, "--domain", "demo"], ()),
                (["ucr", "rows", "--data", d, "--domain", "demo"], ("--table",)),
                (["admin", "user", "create", "--data", d, "--domain", "demo", "--username", "u"],
                 ("--password",)),
            ]
            for args, mentions in cases:
                with self.subTest(tool=tool, args=args):
                    self.assert_usage_error(tool, args, *mentions)

    def test_value_of_the_wrong_form(self):
        for tool in BOTH:
            d = self.data(tool)
            cases = [
                (["changes", "--data", d, "--limit", "abc"], "--limit"),
                (["changes", "--data", d, "--partition", "x"], "--partition"),
                (["case", "list", "--data", d, "--domain", "demo", "--closed", "maybe"],
                 "--closed"),
            ]
            for args, option in cases:
                with self.subTest(tool=tool, args=args):
                    self.assert_usage_error(tool, args, option)

    # -- not found: 2 ---------------------------------------------------------------------------

    def test_not_found(self):
        for tool in BOTH:
            d = self.data(tool)
            cases = [
                ["case", "get", "--data", d, "--domain", "demo", "NOPE"],
                ["form", "get", "--data", d, "--domain", "demo", "NOPE"],
                ["restore", "--data", d, "--domain", "demo", "--user", "nobody"],
                ["submit", "--data", d, "--domain", "demo", os.path.join(self.tmp, "none.xml")],
                ["case", "get", "--data", os.path.join(self.tmp, "no-such-dir"), "--domain",
                 "demo", "NOPE"],
            ]
            for args in cases:
                with self.subTest(tool=tool, args=args):
                    self.assert_json_error(tool, args, NOT_FOUND)

    # -- precondition: 3 ------------------------------------------------------------------------

    def test_second_writer_on_a_locked_directory(self):
        for tool in BOTH:
            d = self.data(tool)
            with self.subTest(tool=tool, args="submit while `commcare serve` holds the lock"):
                with Server(d) as server:
                    if server.ready is None:
                        self.fail(f"commcare serve did not start: {server.output()}")
                    err = self.assert_json_error(
                        tool, ["submit", "--data", d, "--domain", "demo", self.form],
                        PRECONDITION)
                    self.assertIn("locked", err["error"])

    # -- check: 0 on a healthy directory --------------------------------------------------------

    def test_check_on_a_healthy_directory(self):
        for tool in (CPP,):
            d = self.data(tool)
            with self.subTest(tool=tool, args="check"):
                p = tool.run("check", "--data", d)
                self.assertEqual(p.returncode, 0, shown(p))
                self.assertTrue(json.loads(p.stdout.splitlines()[0])["ok"], shown(p))


class Server:
    """`commcare serve --no-pillows` on a data directory: the writer holding its lock. ready is
    its JSON line ({"listening": ...}) once it has started, None if it did not within 30 s."""

    def __init__(self, data):
        self.proc = subprocess.Popen(
            [BINARY, "serve", "--data", data, "--listen", "127.0.0.1:0", "--no-pillows"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.ready = None
        deadline = time.monotonic() + 30
        while self.ready is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    break  # exited
                try:
                    self.ready = json.loads(line)
                except ValueError:
                    continue
            elif self.proc.poll() is not None:
                break

    def output(self):
        self.stop()
        return f"exit {self.proc.returncode}: {self.proc.stderr.read().decode(errors='replace')}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self.proc.stdout.close()
        self.proc.stderr.close()


if __name__ == "__main__":
    unittest.main()
