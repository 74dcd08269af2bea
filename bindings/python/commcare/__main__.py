"""python -m commcare: the main `commcare` subcommands over the binding (JSON lines out).

Exit codes (the `commcare` command's): 0 success; 1 the operation failed ({"error": ...} on
stdout); 2 a form, case, user or file named does not exist; 3 a precondition failed (the data
directory is locked by another writer, a stale revision, a restore refused); 64 (EX_USAGE) a
usage error, told on stderr with the nearest spelling of a misspelt option or command."""

import argparse
import ast
import difflib
import json
import os
import re
import sys

import commcare

EXIT_FAILED = 1
EXIT_NOT_FOUND = 2
EXIT_PRECONDITION = 3
EX_USAGE = 64  # sysexits.h (os.EX_USAGE is Unix-only)

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_INVALID_CHOICE = re.compile(r"invalid choice: ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors exit with EX_USAGE, name the unknown option ahead of any
    other complaint, and suggest the nearest known option, command or choice."""

    def __init__(self, *args, **kwargs):
        self._options = []     # every option string of this parser ("--domain", "-h", ...)
        self._choices = []     # every choice value of this parser's arguments
        self._commands = None  # its commands' name -> parser map, if it has commands
        self._args = []        # what this parser was last asked to parse
        kwargs.setdefault("allow_abbrev", False)  # as the C++ command: "--dom" is no "--domain"
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self._options.extend(action.option_strings)
        if action.choices is not None:
            self._choices.extend(action.choices)
        return action

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(**kwargs)
        self._commands = action.choices  # filled as commands are added
        return action

    def parse_known_args(self, args=None, namespace=None):
        # A command's own parser refuses what it does not know, so the message and the
        # suggestion are about that command's options (argparse would report the leftovers
        # from the top-level parser, which knows none of them).
        self._args = list(sys.argv[1:] if args is None else args)
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error("unrecognized arguments: " + " ".join(extra))
        return ns, extra

    def _unknown_option(self):
        """The first option-like word this parser does not know (before its command word, for a
        parser with commands), or None."""
        for word in self._args:
            if word == "--":
                return None
            if not word.startswith("-") or word == "-" or _NEGATIVE_NUMBER.match(word):
                if self._commands is not None:
                    return None  # the command word: the rest is the command's to judge
                continue
            if word.split("=", 1)[0] not in self._options:
                return word.split("=", 1)[0]
        return None

    def error(self, message):
        candidates, word = [], None
        unknown = self._unknown_option()
        if unknown is not None:
            message = f"unknown option {unknown}"
            candidates, word = self._options, unknown
        else:
            m = _INVALID_CHOICE.search(message)
            if m:
                word = str(ast.literal_eval(m.group(1)))
                candidates = self._choices + list(self._commands or ())
        self.print_usage(sys.stderr)
        text = f"{self.prog}: error: {message}\n"
        near = difflib.get_close_matches(word, candidates, n=1) if word else []
        if near:
            text += f"did you mean {near[0]}?\n"
        sys.stderr.write(text)
        sys.exit(EX_USAGE)


def _engine(args, read_only=False):
    return commcare.Engine(args.data, create=False, read_only=read_only)


def _print(obj):
    print(json.dumps(obj))


def cmd_init(a):
    with commcare.Engine(a.data, create=True, shards=a.shards, databases=a.databases,
                         blob_store=a.blob_store):
        pass
    _print({"data": a.data, "shards": a.shards, "databases": a.databases})


def cmd_submit(a):
    for path in a.files:  # every file is there before the first is submitted
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cannot read file {path}: no such file")
    failed = 0
    with _engine(a) as e:
        for path in a.files:
            with open(path, "rb") as f:
                body = f.read()
            headers = {"X-OpenRosa-Version": a.openrosa_version} if a.openrosa_version else None
            r = e.submit(body, a.domain, content_type=a.content_type, user_id=a.user,
                         headers=headers, check=False)
            failed += r.status >= 300
            _print({"file": path, "status": r.status, "nature": r.nature, "message": r.message,
                    "form_id": r.form_id, "state": r.state})
    return EXIT_FAILED if failed else 0


def cmd_form(a):
    with _engine(a, read_only=a.verb == "get") as e:
        if a.verb == "get":
            if a.xml:
                sys.stdout.buffer.write(e.form_xml(a.domain, a.id))
                return 0
            _print(e.form(a.domain, a.id))
        elif a.verb == "archive":
            e.archive(a.domain, a.id)
            _print({"form_id": a.id, "archived": True})
        else:
            e.unarchive(a.domain, a.id)
            _print({"form_id": a.id, "archived": False})
    return 0


def cmd_case(a):
    with _engine(a, read_only=True) as e:
        if a.verb == "get":
            _print(e.case(a.domain, a.id))
        elif a.verb == "history":
            _print(e.case_history(a.domain, a.id))
        else:
            closed = None if a.closed is None else a.closed == "true"
            for c in e.cases(a.domain, case_type=a.type, owner_id=a.owner, closed=closed,
                             limit=a.limit):
                _print(c)
    return 0


def cmd_ledger(a):
    with _engine(a, read_only=True) as e:
        _print(e.ledger(a.domain, a.id))
    return 0


def cmd_changes(a):
    with _engine(a) as e:
        if a.partition is None:
            n = 0
            for r in e.changes(topics=[a.topic] if a.topic else None):
                if n >= a.limit:
                    break
                _print(r)
                n += 1
        else:
            for r in e.read_changes(a.topic, a.partition, a.offset, a.limit):
                _print(r)
    return 0


def cmd_pillows(a):
    with _engine(a) as e:
        only = getattr(a, "only", None)
        opts = {"only": only.split(",")} if only else {}
        if a.verb != "run":
            opts["inspect_only"] = True
        with e.pillows(**opts) as p:
            if a.verb == "run":
                _print({"processed": p.run_until_caught_up()})
            elif a.verb == "status":
                _print(p.status())
            elif a.verb == "retries":
                _print(p.retries(a.pillow))
            else:
                _print({"requeued": p.requeue(a.pillow, a.doc, a.dead)})
    return 0


def cmd_search(a):
    with _engine(a, read_only=True) as e:
        q = {"limit": a.limit}
        for key, val in (("case_type", a.type), ("owner_id", a.owner), ("case_name", a.name),
                         ("text", a.text), ("cursor", a.cursor)):
            if val:
                q[key] = val
        if a.closed is not None:
            q["closed"] = a.closed == "true"
        if a.prop:
            q["properties"] = dict(a.prop)
        _print(e.search(a.domain, **q))
    return 0


def cmd_ucr(a):
    with _engine(a) as e:
        if a.verb == "rows":
            for row in e.ucr_rows(a.domain, a.table, a.limit, a.offset):
                _print(row)
        else:
            with open(a.config) as f, e.pillows() as p:
                _print({"rows": p.ucr_load(f.read())})
    return 0


def cmd_restore(a):
    with _engine(a) as e:
        r = e.restore_to(sys.stdout.buffer.write, a.domain, a.user, since=a.since,
                         state=a.state, version=a.version, device_id=a.device_id)
        sys.stdout.flush()
        print(file=sys.stderr)
        print(json.dumps(r), file=sys.stderr)
    return 0


def cmd_admin(a):
    with _engine(a) as e:
        if a.what == "domain":
            _print(e.create_domain(a.name, secure_submissions=not a.open_submissions,
                                   async_restore=a.async_restore,
                                   case_attachments_in_restore=a.restore_attachments))
        else:
            _print(e.put_user(a.username, domains=[a.domain], password=a.password,
                              web_user=a.web, is_superuser=a.superuser))
    return 0


def _key_value(text):
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _exit_code(error):
    """The exit code for a CommcareError (by its CC_E* code)."""
    if isinstance(error, commcare.NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(error, (commcare.FailedPreconditionError, commcare.AbortedError)):
        return EXIT_PRECONDITION
    return EXIT_FAILED


def _parser():
    major, minor, patch = commcare.version()
    ap = _Parser(prog="python -m commcare", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"commcare {major}.{minor}.{patch}",
                    help="print the library's version and exit")
    commands = ap.add_subparsers(dest="cmd", required=True, title="commands", metavar="COMMAND")

    def command(subs, name, fn, about, domain=False):
        p = subs.add_parser(name, help=about, description=about)
        p.add_argument("--data", required=True, help="the data directory")
        if domain:
            p.add_argument("--domain", required=True, help="the project space")
        p.set_defaults(fn=fn)
        return p

    def group(name, about, dest="verb", subs=commands):
        p = subs.add_parser(name, help=about, description=about)
        return p.add_subparsers(dest=dest, required=True, title="commands", metavar="COMMAND")

    p = command(commands, "init", cmd_init, "create a data directory")
    p.add_argument("--shards", type=int, default=1024)
    p.add_argument("--databases", type=int, default=1)
    p.add_argument("--blob-store", default="pack", choices=["pack", "files"])

    p = command(commands, "submit", cmd_submit, "submit form XML files", domain=True)
    p.add_argument("--user", help="the submitting user's id")
    p.add_argument("--openrosa-version")
    p.add_argument("--content-type", default="text/xml")
    p.add_argument("files", nargs="+", metavar="FILE")

    forms = group("form", "read, archive or unarchive a form")
    for verb, about in (("get", "a form's metadata (or its XML)"), ("archive", "archive a form"),
                        ("unarchive", "restore an archived form")):
        p = command(forms, verb, cmd_form, about, domain=True)
        p.add_argument("id", metavar="FORM_ID")
        if verb == "get":
            p.add_argument("--xml", action="store_true", help="print the form's XML")

    cases = group("case", "read cases")
    for verb, about in (("get", "a case"), ("history", "a case's transactions")):
        p = command(cases, verb, cmd_case, about, domain=True)
        p.add_argument("id", metavar="CASE_ID")
    p = command(cases, "list", cmd_case, "a domain's cases", domain=True)
    p.add_argument("--type")
    p.add_argument("--owner")
    p.add_argument("--closed", choices=["true", "false"])
    p.add_argument("--limit", type=int, default=1000)

    ledgers = group("ledger", "read ledgers")
    p = command(ledgers, "get", cmd_ledger, "a case's ledger", domain=True)
    p.add_argument("id", metavar="CASE_ID")

    p = command(commands, "changes", cmd_changes, "print change records")
    p.add_argument("--topic")
    p.add_argument("--partition", type=int)
    p.add_argument("--from", dest="offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)

    pillows = group("pillows", "run or inspect the change processors")
    for verb, about in (("run", "process every change in the log now"),
                        ("status", "each pillow's checkpoints and lag")):
        p = command(pillows, verb, cmd_pillows, about)
        p.add_argument("--only", metavar="NAME,...")
    p = command(pillows, "retries", cmd_pillows, "a pillow's retry queue")
    p.add_argument("--pillow", required=True)
    p = command(pillows, "requeue", cmd_pillows, "make a pillow's queued changes due now")
    p.add_argument("--pillow", required=True)
    p.add_argument("--doc")
    p.add_argument("--dead", action="store_true")

    p = command(commands, "search", cmd_search, "case search", domain=True)
    for flag in ("--type", "--owner", "--name", "--text", "--cursor"):
        p.add_argument(flag)
    p.add_argument("--closed", choices=["true", "false"])
    p.add_argument("--prop", action="append", type=_key_value, metavar="K=V",
                   help="a property's value (repeatable)")
    p.add_argument("--limit", type=int, default=20)

    ucr = group("ucr", "load UCR data sources and read their rows")
    p = command(ucr, "load", cmd_ucr, "store a data source and build its table")
    p.add_argument("config", metavar="CONFIG.json")
    p = command(ucr, "rows", cmd_ucr, "rows of a UCR table", domain=True)
    p.add_argument("--table", required=True)
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--offset", type=int, default=0)

    p = command(commands, "restore", cmd_restore,
                "a user's OTA restore payload (stdout; its summary on stderr)", domain=True)
    p.add_argument("--user", required=True)
    p.add_argument("--since")
    p.add_argument("--state")
    p.add_argument("--version", default="2.0", help="the restore format version")
    p.add_argument("--device-id")

    admin = group("admin", "create domains and users", dest="what")
    domain = group("domain", "domains", subs=admin)
    p = command(domain, "create", cmd_admin, "create a domain")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--open-submissions", action="store_true")
    p.add_argument("--async-restore", action="store_true",
                   help="restores of OpenRosa 2.0 clients run as tasks (HQ's ASYNC_RESTORE)")
    p.add_argument("--restore-attachments", action="store_true",
                   help="restores carry case attachments (HQ's MM_CASE_PROPERTIES)")
    user = group("user", "users", subs=admin)
    p = command(user, "create", cmd_admin, "create a user", domain=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--web", action="store_true")
    p.add_argument("--superuser", action="store_true")
    return ap


def main(argv=None):
    a = _parser().parse_args(argv)
    try:
        return a.fn(a) or 0
    except commcare.CommcareError as e:
        _print({"error": str(e), "code": e.code})
        return _exit_code(e)
    except OSError as e:
        _print({"error": str(e)})
        return EXIT_NOT_FOUND if isinstance(e, FileNotFoundError) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
