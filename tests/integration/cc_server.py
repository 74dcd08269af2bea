"""A `commcare serve` for the integration tests, with the request, submission and credential
helpers they share (security_test.py, security_routes_test.py)."""
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid

ENV = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="adminpw",
           COMMCARE_DOMAIN="doma")
ADMIN = ("admin", "adminpw")


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def form_xml(cases="", xmlns="http://example/f"):
    return (f'<?xml version="1.0"?><data xmlns="{xmlns}"><meta xmlns="http://openrosa.org/jr/xforms">'
            f'<instanceID>{uuid.uuid4().hex}</instanceID></meta>{cases}</data>').encode()


def case_block(case_id, user_id, owner_id, secret, name="n"):
    return (f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{case_id}" '
            f'date_modified="2024-01-01T00:00:00Z" user_id="{user_id}"><create><case_type>patient</case_type>'
            f'<case_name>{name}</case_name><owner_id>{owner_id}</owner_id></create>'
            f'<update><secret>{secret}</secret></update></case>')


def multipart(xml, files):
    """A multipart submission of the form xml and (name, bytes) attachments: (body, headers)."""
    b = "----cc" + uuid.uuid4().hex
    out = [(f'--{b}\r\nContent-Disposition: form-data; name="xml_submission_file"; '
            f'filename="form.xml"\r\nContent-Type: text/xml\r\n\r\n').encode() + xml + b"\r\n"]
    for name, blob in files:
        out.append((f'--{b}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
                    f'Content-Type: application/octet-stream\r\n\r\n').encode() + blob + b"\r\n")
    out.append(f"--{b}--\r\n".encode())
    return b"".join(out), {"Content-Type": f"multipart/form-data; boundary={b}"}


class Resp:
    def __init__(self, status, headers, body):
        self.status, self._headers, self.body = status, headers, body

    def header(self, name):
        v = [v for k, v in self._headers if k.lower() == name.lower()]
        return v[0] if v else None

    def headers(self, name):
        return [v for k, v in self._headers if k.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return {"_not_json": self.body[:200].decode(errors="replace")}

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Server:
    """One `commcare serve` on 127.0.0.1:0, in its own temporary directory."""

    def __init__(self, cc, *flags, pillows=False, nofile=None, env=ENV, data=None):
        self.tmp = tempfile.mkdtemp(prefix="cc-sec-")
        self.data = data or os.path.join(self.tmp, "data")
        cmd = [cc, "serve", "--data", self.data, "--listen", "127.0.0.1:0"]
        cmd += ([] if pillows else ["--no-pillows"]) + list(flags)
        if nofile:
            cmd = ["prlimit", f"--nofile={nofile}:{nofile}"] + cmd
        self.errf = open(os.path.join(self.tmp, "stderr.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errf, text=True, env=env)
        hello = None
        for _ in range(20):
            line = self.proc.stdout.readline()
            if not line:
                break
            try:
                hello = json.loads(line)
            except ValueError:
                continue
            if "listening" in hello:
                break
        if not hello or "listening" not in hello:
            self.stop()
            raise AssertionError(f"server did not start: {cmd}: {hello} {self.stderr()}")
        self.port = int(hello["listening"].rsplit(":", 1)[1])
        self.pid = self.proc.pid
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        try:
            for _ in self.proc.stdout:
                pass
        except (OSError, ValueError):
            pass

    def stderr(self):
        try:
            with open(os.path.join(self.tmp, "stderr.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self, cleanup=True):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        drain = getattr(self, "drain", None)
        if drain:
            drain.join(5)
        if not drain or not drain.is_alive():
            self.proc.stdout.close()
        self.errf.close()
        if cleanup:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def request(self, method, path, body=None, auth=ADMIN, headers=None, timeout=30):
        h = dict(headers or {})
        if isinstance(auth, tuple):
            h["Authorization"] = basic(*auth)
        elif isinstance(auth, str):
            h["Authorization"] = auth
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Resp(r.status, r.getheaders(), data)
        finally:
            conn.close()

    def submit(self, xml, domain, auth, headers=None):
        h = {"Content-Type": "text/xml"}
        h.update(headers or {})
        return self.request("POST", f"/a/{domain}/receiver/", body=xml, auth=auth, headers=h)

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            data = f.read()
        rest = data[data.rindex(")") + 2:].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")

    def make_domain(self, name):
        r = self.request("POST", "/api/domains/", {"name": name})
        assert r.status == 201, (name, r)

    def make_user(self, domain, username, password, web=False, perms=None):
        body = {"username": username, "password": password}
        if web:
            body["web_user"] = True
        if perms is not None:
            body["permissions"] = perms
        r = self.request("POST", f"/a/{domain}/api/users/", body)
        assert r.status == 201, (username, r)
        return r.json()


def parse_challenge(resp, algorithm="MD5"):
    for v in resp.headers("www-authenticate"):
        if v.startswith("Digest") and f"algorithm={algorithm}" in v:
            return dict(re.findall(r'(\w+)="?([^",]*)"?', v[len("Digest"):]))
    raise AssertionError(f"no {algorithm} Digest challenge in {resp._headers}")


def digest_header(user, password, method, uri, nonce, realm="commcare", nc="00000001",
                  cnonce="c0ffee00", qop=True, opaque=None):
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()
    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    resp = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}") if qop else md5(f"{ha1}:{nonce}:{ha2}")
    h = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
         f'algorithm=MD5, response="{resp}"')
    if qop:
        h += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    if opaque is not None:
        h += f', opaque="{opaque}"'
    return h
