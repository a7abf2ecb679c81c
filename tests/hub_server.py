#!/usr/bin/env python3
"""hub_server.py: a local stand-in for the Hugging Face hub (python3 stdlib only), for the `models pull` tests.

Serves one repository whose files are a fixture directory, with the hub API's JSON shapes:
  GET /api/models/{repo}/revision/{rev}          {"id", "sha", "siblings": [{"rfilename"}]}
  GET /api/models/{repo}/tree/{rev}?recursive=.. [{"type": "file", "path", "size", "oid", "lfs": {"oid", "size"}}]
                                                 paginated with `Link: <url>; rel="next"` (page_size entries)
  GET /{repo}/resolve/{rev}/{path}               the file (LFS files: 302 to /_lfs/{sha256}, as the hub
                                                 redirects to its CDN), with Range support (206 / 416)
Fault switches (attributes of HubState, set by the test in-process or by flags when run standalone):
  token      require "Authorization: Bearer <token>" (none: 401; another token: 403 GatedRepo)
  missing    paths whose resolve answers 404 EntryNotFound although the listing has them
  corrupt    paths served with one byte flipped (the listed sha256 stays the true one)
  drop       {path: n}: the next GET of path sends n body bytes, then the connection is cut
  status     {path or "api": [code, count]}: the next `count` requests answer `code` (Retry-After: 1 on 429)
  slow       {path: seconds}: send path in 16 KiB pieces with this pause between them
Every request is logged (method, path, Range header, Authorization header, body bytes sent).
Standalone: python3 hub_server.py --root DIR [--repo OWNER/NAME] [--port N] ... prints "port N".
"""
import argparse
import hashlib
import json
import os
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_EXT = (".safetensors", ".gguf", ".bin", ".f32")


class HubState:
    def __init__(self, root, repo="test/llama", extra=None, page_size=2):
        self.repo = repo
        self.files = {}
        for name in sorted(os.listdir(root)):
            p = os.path.join(root, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    self.files[name] = f.read()
        for k, v in (extra or {}).items():
            self.files[k] = v
        h = hashlib.sha1()
        for k in sorted(self.files):
            h.update(k.encode() + b"\0" + hashlib.sha256(self.files[k]).digest())
        self.commit = h.hexdigest()
        self.sha256 = {k: hashlib.sha256(v).hexdigest() for k, v in self.files.items()}
        self.by_sha = {v: k for k, v in self.sha256.items()}
        self.page_size = page_size
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.token = None
            self.missing = set()
            self.corrupt = set()
            self.drop = {}
            self.status = {}
            self.slow = {}
            self.log = []

    def is_lfs(self, path):
        return path.endswith(LFS_EXT)

    def git_oid(self, path):
        data = self.files[path]
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def take_status(self, key):
        with self.lock:
            s = self.status.get(key)
            if not s or s[1] <= 0:
                return None
            s[1] -= 1
            return s[0]

    def requests(self, kind=None):
        with self.lock:
            return [dict(r) for r in self.log if kind is None or r["kind"] == kind]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # the client gave up (the tests make it do so)
            pass

    @property
    def st(self):
        return self.server.state

    def send_json(self, code, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        return len(body)

    def send_error_json(self, code, error_code, msg):
        hdr = {"X-Error-Code": error_code, "X-Error-Message": msg} if error_code else {"X-Error-Message": msg}
        if code == 429:
            hdr["Retry-After"] = "1"
        return self.send_json(code, {"error": msg}, hdr)

    def auth_ok(self):
        tok = self.st.token
        if tok is None:
            return True
        got = self.headers.get("Authorization", "")
        if not got:
            self.send_error_json(401, None, "Invalid credentials in Authorization header")
            return False
        if got != "Bearer " + tok:
            self.send_error_json(403, "GatedRepo", "Access to model %s is restricted" % self.st.repo)
            return False
        return True

    def do_GET(self):
        st = self.st
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        entry = {"method": "GET", "path": path, "range": self.headers.get("Range"),
                 "auth": self.headers.get("Authorization"), "kind": "other", "sent": 0, "status": None}
        with st.lock:
            st.log.append(entry)
        try:
            entry["sent"] = self.route(st, url, path, entry)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, st, url, path, entry):
        api = "/api/models/" + st.repo + "/"
        if path.startswith("/api/models/"):
            entry["kind"] = "api"
            code = st.take_status("api")
            if code:
                entry["status"] = code
                return self.send_error_json(code, None, "injected")
            if not path.startswith(api):
                entry["status"] = 404
                return self.send_error_json(404, "RepoNotFound", "Repository not found")
            if not self.auth_ok():
                return 0
            rest = path[len(api):]
            kind, _, rev = rest.partition("/")
            if rev not in ("main", st.commit):
                entry["status"] = 404
                return self.send_error_json(404, "RevisionNotFound", "Invalid rev id: " + rev)
            if kind == "revision":
                entry["status"] = 200
                return self.send_json(200, {"_id": "x", "id": st.repo, "modelId": st.repo, "sha": st.commit,
                                            "private": False, "gated": False,
                                            "siblings": [{"rfilename": k} for k in sorted(st.files)]})
            if kind == "tree":
                q = urllib.parse.parse_qs(url.query)
                cursor = int(q.get("cursor", ["0"])[0])
                names = sorted(st.files)
                page = names[cursor:cursor + st.page_size]
                out = []
                for k in page:
                    e = {"type": "file", "path": k, "size": len(st.files[k]), "oid": st.git_oid(k)}
                    if st.is_lfs(k):
                        e["oid"] = hashlib.sha1(k.encode()).hexdigest()  # the pointer's blob id
                        e["lfs"] = {"oid": st.sha256[k], "size": len(st.files[k]), "pointerSize": 134}
                    out.append(e)
                hdr = {}
                if cursor + st.page_size < len(names):
                    q["cursor"] = [str(cursor + st.page_size)]
                    nxt = "http://%s:%d%s?%s" % (self.server.server_address[0], self.server.server_address[1],
                                                 url.path, urllib.parse.urlencode(q, doseq=True))
                    hdr["Link"] = '<%s>; rel="next"' % nxt
                entry["status"] = 200
                return self.send_json(200, out, hdr)
            entry["status"] = 404
            return self.send_error_json(404, None, "unknown API route")
        if path.startswith("/_lfs/"):
            entry["kind"] = "lfs"
            name = st.by_sha.get(path[6:])
            if name is None:
                entry["status"] = 404
                return self.send_error_json(404, None, "no such object")
            entry["file"] = name
            return self.send_file(st, name, entry)
        prefix = "/" + st.repo + "/resolve/"
        if path.startswith(prefix):
            entry["kind"] = "resolve"
            rev, _, name = path[len(prefix):].partition("/")
            entry["file"] = name
            if not self.auth_ok():
                return 0
            code = st.take_status(name)
            if code:
                entry["status"] = code
                return self.send_error_json(code, None, "injected")
            if rev not in ("main", st.commit):
                entry["status"] = 404
                return self.send_error_json(404, "RevisionNotFound", "Invalid rev id: " + rev)
            if name not in st.files or name in st.missing:
                entry["status"] = 404
                return self.send_error_json(404, "EntryNotFound", "Entry not found")
            if st.is_lfs(name):  # the hub redirects LFS files to its CDN
                entry["status"] = 302
                self.send_response(302)
                self.send_header("Location", "/_lfs/" + st.sha256[name])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 0
            return self.send_file(st, name, entry)
        entry["status"] = 404
        return self.send_error_json(404, "RepoNotFound", "Repository not found")

    def send_file(self, st, name, entry):
        data = st.files[name]
        if name in st.corrupt:
            b = bytearray(data)
            b[len(b) // 2] ^= 0xFF
            data = bytes(b)
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        partial = False
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a)
            if b:
                end = min(int(b), len(data) - 1)
            if start >= len(data):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 0
            partial = True
        body = data[start:end + 1]
        entry["status"] = 206 if partial else 200
        self.send_response(entry["status"])
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if partial:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, len(data)))
        self.end_headers()
        with st.lock:
            cut = st.drop.pop(name, None)
        if cut is not None and cut < len(body):
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            entry["dropped"] = True
            return cut
        pause = st.slow.get(name)
        if pause:
            for i in range(0, len(body), 16384):
                self.wfile.write(body[i:i + 16384])
                self.wfile.flush()
                time.sleep(pause)
            return len(body)
        self.wfile.write(body)
        return len(body)


class HubServer:
    """Runs the fake hub on 127.0.0.1 (ephemeral port) in a background thread."""

    def __init__(self, root, repo="test/llama", extra=None, page_size=2, port=0):
        self.state = HubState(root, repo, extra, page_size)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="fixture directory served as the repository")
    ap.add_argument("--repo", default="test/llama")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token")
    ap.add_argument("--corrupt", action="append", default=[])
    ap.add_argument("--missing", action="append", default=[])
    ap.add_argument("--drop", action="append", default=[], help="FILE:BYTES")
    a = ap.parse_args()
    with HubServer(a.root, a.repo, port=a.port) as srv:
        srv.state.token = a.token
        srv.state.corrupt = set(a.corrupt)
        srv.state.missing = set(a.missing)
        srv.state.drop = {d.rsplit(":", 1)[0]: int(d.rsplit(":", 1)[1]) for d in a.drop}
        print("port %d" % srv.port, flush=True)
        try:
            srv.thread.join()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
