#!/usr/bin/env python3
"""A loopback SMTP server for tests (aiosmtpd, Debian's python3-aiosmtpd).

Usage: smtp_sink.py DIR   -- listens on 127.0.0.1:<free port>, prints "smtp=127.0.0.1:<port>",
saves each accepted message as DIR/<n>.eml (the raw message) with DIR/<n>.json (envelope:
mail_from, rcpt_tos). A recipient whose local part starts with "refuse" gets 550; one starting
with "busy" gets 451 (a temporary failure). Runs until SIGTERM.
"""
import json
import os
import signal
import socket
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        if local.startswith("busy"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        base = os.path.join(self.out, "%06d" % n)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
        os.rename(base + ".tmp", base + ".eml")
        return "250 Message accepted"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = Controller(Sink(out), hostname="127.0.0.1", port=port)
    c.start()
    print("smtp=127.0.0.1:%d" % port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    c.stop()


if __name__ == "__main__":
    main()
