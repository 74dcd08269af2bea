"""python -m commcare: the main `commcare` subcommands over the binding (JSON lines out)."""

import argparse
import json
import sys

import commcare


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
    return 1 if failed else 0


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
        opts = {"only": a.only.split(",")} if a.only else {}
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
            q["properties"] = dict(p.split("=", 1) for p in a.prop)
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
            _print(e.create_domain(a.name, secure_submissions=not a.open_submissions))
        else:
            _print(e.put_user(a.username, domains=[a.domain], password=a.password,
                              web_user=a.web, is_superuser=a.superuser))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m commcare", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def cmd(name, fn, domain=False, **kw):
        p = sub.add_parser(name, **kw)
        p.add_argument("--data", required=True, help="the data directory")
        if domain:
            p.add_argument("--domain", required=True)
        p.set_defaults(fn=fn)
        return p

    p = cmd("init", cmd_init)
    p.add_argument("--shards", type=int, default=1024)
    p.add_argument("--databases", type=int, default=1)
    p.add_argument("--blob-store", default="pack", choices=["pack", "files"])
    p = cmd("submit", cmd_submit, domain=True)
    p.add_argument("--user")
    p.add_argument("--openrosa-version")
    p.add_argument("--content-type", default="text/xml")
    p.add_argument("files", nargs="+")
    p = cmd("form", cmd_form, domain=True)
    p.add_argument("verb", choices=["get", "archive", "unarchive"])
    p.add_argument("id")
    p.add_argument("--xml", action="store_true")
    p = cmd("case", cmd_case, domain=True)
    p.add_argument("verb", choices=["get", "list", "history"])
    p.add_argument("id", nargs="?")
    p.add_argument("--type")
    p.add_argument("--owner")
    p.add_argument("--closed", choices=["true", "false"])
    p.add_argument("--limit", type=int, default=1000)
    p = cmd("ledger", cmd_ledger, domain=True)
    p.add_argument("verb", choices=["get"])
    p.add_argument("id")
    p = cmd("changes", cmd_changes)
    p.add_argument("--topic")
    p.add_argument("--partition", type=int)
    p.add_argument("--from", dest="offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=100)
    p = cmd("pillows", cmd_pillows)
    p.add_argument("verb", choices=["run", "status", "retries", "requeue"])
    p.add_argument("--only")
    p.add_argument("--pillow")
    p.add_argument("--doc")
    p.add_argument("--dead", action="store_true")
    p = cmd("search", cmd_search, domain=True)
    for flag in ("--type", "--owner", "--name", "--text", "--cursor"):
        p.add_argument(flag)
    p.add_argument("--closed", choices=["true", "false"])
    p.add_argument("--prop", action="append", help="k=v (repeatable)")
    p.add_argument("--limit", type=int, default=20)
    p = cmd("ucr", cmd_ucr)
    p.add_argument("verb", choices=["load", "rows"])
    p.add_argument("config", nargs="?")
    p.add_argument("--domain")
    p.add_argument("--table")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--offset", type=int, default=0)
    p = cmd("restore", cmd_restore, domain=True)
    p.add_argument("--user", required=True)
    p.add_argument("--since")
    p.add_argument("--state")
    p.add_argument("--version", default="2.0")
    p.add_argument("--device-id")
    p = sub.add_parser("admin")
    p.add_argument("what", choices=["domain", "user"])
    p.add_argument("verb", choices=["create"])
    p.add_argument("name", nargs="?")
    p.add_argument("--data", required=True)
    p.add_argument("--domain")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--web", action="store_true")
    p.add_argument("--superuser", action="store_true")
    p.add_argument("--open-submissions", action="store_true")
    p.set_defaults(fn=cmd_admin)

    a, extra = ap.parse_known_args(argv)
    # A positional after options ("case get --data D CASE_ID") arrives here: argparse has
    # matched the optional positional empty before the options.
    for name in ("id", "config", "name"):
        if extra and not extra[0].startswith("-") and hasattr(a, name) and \
                getattr(a, name) is None:
            setattr(a, name, extra.pop(0))
    if extra:
        ap.error("unrecognized arguments: " + " ".join(extra))
    if a.cmd == "case" and a.verb != "list" and not a.id:
        ap.error("case get/history needs a CASE_ID")
    if a.cmd == "ucr" and a.verb == "load" and not a.config:
        ap.error("ucr load needs CONFIG.json")
    if a.cmd == "ucr" and a.verb == "rows" and not (a.domain and a.table):
        ap.error("ucr rows needs --domain and --table")
    if a.cmd == "admin" and a.what == "domain" and not a.name:
        ap.error("admin domain create needs NAME")
    if a.cmd == "admin" and a.what == "user" and not (a.username and a.password and a.domain):
        ap.error("admin user create needs --username, --password and --domain")
    if a.cmd == "pillows" and a.verb in ("retries", "requeue") and not a.pillow:
        ap.error(f"pillows {a.verb} needs --pillow")
    try:
        return a.fn(a) or 0
    except commcare.CommcareError as e:
        _print({"error": str(e), "code": e.code})
        return 1


if __name__ == "__main__":
    sys.exit(main())
