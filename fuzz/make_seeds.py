#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/<target>/seed-<name>.

The seeds are committed; run this again only to change them. The FastCGI seeds include what
a real nginx sends with the project's examples/nginx/fastcgi_pass.conf and the stock
fastcgi_params (captured here by starting nginx in front of a small recording FastCGI
server on 127.0.0.1); without nginx installed those are skipped.
"""

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)


def write(target, name, data):
    folder = os.path.join(FUZZ, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


# ------------------------------------------------------------------ protocol_decode
# bincode 2, standard config: little-endian varints (< 251 in one byte; 251, 252, 253 then
# a u16, u32, u64), signed numbers zigzag-encoded, enum variants as varint indexes.


def varint(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfb" + struct.pack("<H", n)
    if n < 1 << 32:
        return b"\xfc" + struct.pack("<I", n)
    return b"\xfd" + struct.pack("<Q", n)


def zigzag(n):
    return varint(2 * n if n >= 0 else -2 * n - 1)


def blob(b):
    return varint(len(b)) + b


def option(value):
    return b"\x00" if value is None else b"\x01" + varint(value)


def protocol_seeds():
    # FromWorker: Ready, Spawned, SpawnFailed, Exited.
    write("protocol_decode", "ready", varint(0) + varint(2) + varint(1))
    write("protocol_decode", "spawned", varint(1) + varint(7) + varint(42) + varint(1))
    write("protocol_decode", "spawned-large",
          varint(1) + varint(2**64 - 1) + varint(2**32 - 1) + varint(300))
    for index, error in enumerate([
        varint(0),  # NotFound
        varint(1),  # NotExecutable
        varint(2),  # Forbidden
        varint(3) + zigzag(11),  # NoResources { errno: EAGAIN }
        varint(4) + zigzag(2),  # ExecFailed { errno: ENOENT }
        varint(5) + blob(b"3 descriptors expected"),  # BadRequest
    ]):
        write("protocol_decode", f"spawn-failed-{index}", varint(2) + varint(3) + error)
    write("protocol_decode", "exited-code", varint(3) + varint(4) + varint(0) + zigzag(-1))
    write("protocol_decode", "exited-signal", varint(3) + varint(5) + varint(1) + zigzag(9))
    # ToWorker: Spawn, Kill, Shutdown (the same decoder, the other direction).
    spawn = (varint(0) + varint(7)
             + varint(2) + blob(b"hello.sh") + blob(b"extra")
             + varint(2) + blob(b"QUERY_STRING=a=1") + blob(b"HTTP_X=\xff\x00")
             + option(30) + option(None) + option(1 << 20) + option(64) + option(None))
    write("protocol_decode", "to-worker-spawn", spawn)
    write("protocol_decode", "to-worker-kill", varint(1) + varint(2**64 - 1))
    write("protocol_decode", "to-worker-shutdown", varint(2))


# ------------------------------------------------------------------ cgi_head


def cgi_head_seeds():
    seeds = {
        "hello": b"Content-Type: text/plain\n\nhello, world\n",
        "crlf": b"Content-Type: text/html; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello",
        "status": b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such thing\n",
        "local-redirect": b"Location: /cgi-bin/other.sh?x=1\n\n",
        "client-redirect": b"Location: https://example.org/\r\n\r\n",
        "redirect-document": b"Status: 301 Moved\nLocation: https://example.org/\n"
                             b"Content-Type: text/html\n\n<a href=\"https://example.org/\">moved</a>",
        "no-content": b"Status: 204\r\n\r\n",
        "cookies": b"Content-Type: text/plain\nSet-Cookie: a=1; Path=/\nSet-Cookie: b=2\n"
                   b"Cache-Control: no-store\n\nok",
        "hop-by-hop": b"Content-Type: a/b\nTransfer-Encoding: chunked\nConnection: close\n"
                      b"Keep-Alive: 5\n\nbody",
        "mixed-endings": b"Content-Type: text/plain\r\nX-A: 1\n\r\nbody\r\n",
        "nph": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: nph\r\n\r\nraw",
        "nph-bare": b"HTTP/1.0 404\nContent-Type: text/plain\n\n",
        "python-cgi": b"Content-Type: text/html\r\n\r\n<html><body>form</body></html>\r\n",
        "perl-cgi": b"Status: 200 OK\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n\r\nhi",
        "obs-text": b"Content-Type: text/plain\nX-Name: caf\xc3\xa9 \xff\n\n",
        "no-blank-line": b"Content-Type: text/plain\nX-A: 1\n",
    }
    for name, data in seeds.items():
        write("cgi_head", name, data)


# ------------------------------------------------------------------ router


def router_seeds():
    seeds = {
        "script": b"/cgi-bin/hello.sh",
        "path-info-query": b"/cgi-bin/hello.sh/a/b%20c?x=%20y&z",
        "trailing-slash": b"/cgi-bin/env/",
        "nested": b"/cgi-bin/app/run.sh/x",
        "encoded-dot": b"/cgi-bin/hello%2Esh",
        "dotdot": b"/cgi-bin/../etc/passwd",
        "encoded-dotdot": b"/cgi-bin/hello/x/%2e%2e/y",
        "encoded-slash": b"/cgi-bin/a%2Fb",
        "backslash": b"/cgi-bin/a%5cb",
        "nul": b"/cgi-bin/hello/%00",
        "bad-escape": b"/cgi-bin/hello%zz",
        "hidden": b"/cgi-bin/.htaccess",
        "outside": b"/index.html?cgi-bin",
        "segments": b"hello.sh|extra|a b|\xff\x00",
        "utf8": "/cgi-bin/caf\u00e9/%C3%A9".encode(),
    }
    for name, data in seeds.items():
        write("router", name, data)


# ------------------------------------------------------------------ FastCGI

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR, DATA, GET_VALUES = 1, 2, 3, 4, 5, 6, 7, 8, 9


def record(kind, request_id, content=b"", padding=None):
    if padding is None:
        padding = -len(content) % 8
    header = struct.pack(">BBHHBB", 1, kind, request_id, len(content), padding, 0)
    return header + content + b"\0" * padding


def pairs(items):
    out = b""
    for name, value in items:
        for part in (name, value):
            out += bytes([len(part)]) if len(part) < 128 else struct.pack(">I", len(part) | 1 << 31)
        out += name + value
    return out


def request(request_id, params, body=b"", keep_conn=False, chunk=65535):
    out = record(BEGIN, request_id, struct.pack(">HB5x", 1, 1 if keep_conn else 0))
    encoded = pairs(params)
    out += record(PARAMS, request_id, encoded) + record(PARAMS, request_id)
    for start in range(0, len(body), chunk):
        out += record(STDIN, request_id, body[start:start + chunk])
    return out + record(STDIN, request_id)


def fastcgi_seeds():
    params = [(b"REQUEST_METHOD", b"POST"), (b"SCRIPT_NAME", b"/cgi-bin/t"),
              (b"CONTENT_LENGTH", b"5"), (b"HTTP_X_LONG", b"v" * 200)]
    seeds = {
        # One request for each kind of handler in fastcgi_conn (request id modulo 4).
        "ignores-input": request(4, params, b"hello"),
        "echoes": request(1, params, b"hello"),
        # More STDIN records than the handler's queue holds: the connection stops reading.
        "never-reads": request(2, params, b"hello" * 120, chunk=100),
        "reads-first": request(3, params, b"hello"),
        "keep-conn-two-requests": request(1, params, b"a", keep_conn=True) + request(2, params, b"b"),
        "get-values": record(GET_VALUES, 0, pairs(
            [(b"FCGI_MAX_CONNS", b""), (b"FCGI_MAX_REQS", b""), (b"FCGI_MPXS_CONNS", b"")])),
        "unknown-management": record(200, 0, b"x"),
        "abort": record(BEGIN, 1, struct.pack(">HB5x", 1, 1)) + record(PARAMS, 1, pairs(params))
                 + record(PARAMS, 1) + record(STDIN, 1, b"part") + record(ABORT, 1),
        "multiplexed": record(BEGIN, 1, struct.pack(">HB5x", 1, 0))
                       + record(BEGIN, 2, struct.pack(">HB5x", 1, 0)) + record(PARAMS, 1),
        "authorizer": record(BEGIN, 1, struct.pack(">HB5x", 2, 0)),
        "odd-padding": record(BEGIN, 3, struct.pack(">HB5x", 1, 0), padding=200)
                       + record(PARAMS, 3, pairs(params), padding=1) + record(PARAMS, 3)
                       + record(STDIN, 3, padding=255),
        "long-form-lengths": record(GET_VALUES, 0, b"\x80\x00\x00\x01\x80\x00\x00\x00a"),
        "data-and-stdout": request(1, params) + record(DATA, 1, b"d") + record(STDOUT, 1, b"s"),
    }
    for name, data in seeds.items():
        write("fastcgi_record", name, data)
        write("fastcgi_conn", name, data)


def nginx_seeds():
    """What nginx sends for a few requests, each connection recorded whole."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        print("make_seeds: no nginx here: nginx seeds skipped", file=sys.stderr)
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    captured = []

    def record_connections():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                # Until the empty STDIN record: then answer, as a CGI would.
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if stdin_ended(data):
                        break
                captured.append(data)
                answer = b"Content-Type: text/plain\r\n\r\nok"
                conn.sendall(record(STDOUT, 1, answer) + record(STDOUT, 1)
                             + record(END, 1, b"\0" * 8))

    threading.Thread(target=record_connections, daemon=True).start()
    http = socket.socket()
    http.bind(("127.0.0.1", 0))
    http_port = http.getsockname()[1]
    http.close()
    prefix = tempfile.mkdtemp(prefix="jailgate-seeds-")
    with open(os.path.join(ROOT, "examples", "nginx", "fastcgi_pass.conf")) as f:
        conf = (f.read().replace("@PREFIX@", prefix)
                .replace("@LISTEN@", f"127.0.0.1:{http_port}")
                .replace("@FASTCGI@", f"127.0.0.1:{listener.getsockname()[1]}"))
    conf_path = os.path.join(prefix, "nginx.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    server = subprocess.Popen([nginx, "-p", prefix, "-c", conf_path],
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{http_port}"
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", http_port)).close()
                break
            except OSError:
                time.sleep(0.1)
        requests = [
            ("get", urllib.request.Request(base + "/cgi-bin/hello.sh")),
            ("get-query", urllib.request.Request(
                base + "/cgi-bin/env.sh/extra/path?a=1&b=%20x",
                headers={"Cookie": "s=1", "Accept-Language": "de"})),
            ("post-form", urllib.request.Request(
                base + "/cgi-bin/form.sh", data=b"name=jail&text=hello+world",
                headers={"Content-Type": "application/x-www-form-urlencoded"})),
            ("post-upload", urllib.request.Request(
                base + "/cgi-bin/echo.sh", data=bytes(range(256)) * 12,
                headers={"Content-Type": "application/octet-stream"})),
        ]
        for name, req in requests:
            before = len(captured)
            urllib.request.urlopen(req, timeout=10).read()
            for _ in range(50):
                if len(captured) > before:
                    break
                time.sleep(0.1)
            write("fastcgi_record", "nginx-" + name, captured[-1])
            write("fastcgi_conn", "nginx-" + name, captured[-1])
    finally:
        server.terminate()
        server.wait()
        listener.close()
        shutil.rmtree(prefix, ignore_errors=True)


def stdin_ended(data):
    offset = 0
    while offset + 8 <= len(data):
        _, kind, _, length, padding, _ = struct.unpack(">BBHHBB", data[offset:offset + 8])
        if offset + 8 + length + padding > len(data):
            return False
        if kind == STDIN and length == 0:
            return True
        offset += 8 + length + padding
    return False


if __name__ == "__main__":
    protocol_seeds()
    cgi_head_seeds()
    router_seeds()
    fastcgi_seeds()
    nginx_seeds()
