"""Issue 15, item 10 and the web items: a stalled upload, malformed request lines, the Host
check and Cross-Origin-Resource-Policy, with raw sockets against the in-process server and
a real `lookalike serve` process."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lookalike.web import Gallery, GalleryServer
from tests.web.test_web import build_collection


@pytest.fixture(scope="module")
def coll(tmp_path_factory) -> Path:
    return build_collection(tmp_path_factory.mktemp("relweb"))[1]


@contextmanager
def running(coll: Path, host: str = "127.0.0.1", read_timeout: float = 30.0) -> Iterator[int]:
    """A GalleryServer in a background thread; yields its port."""
    server = GalleryServer(Gallery(coll, labels="folders"), host, 0, read_timeout=read_timeout)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def port(coll) -> Iterator[int]:
    with running(coll) as port:
        yield port


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; (status line, headers with lower-case names, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.decode("iso-8859-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        headers = {k.lower(): v for k, v in headers.items()}
        while len(body) < int(headers.get("content-length", 0)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return lines[0], headers, body


def get(port: int, path: str, host: str | None = None, extra: str = "") -> tuple:
    host_line = f"Host: {host if host is not None else f'127.0.0.1:{port}'}\r\n"
    request = f"GET {path} HTTP/1.1\r\n{host_line}{extra}Connection: close\r\n\r\n"
    return exchange(port, request.encode("latin-1"))


def test_a_stalled_upload_is_a_408_in_one_log_line(coll, caplog):
    caplog.set_level(logging.INFO, logger="lookalike.web.server")
    with running(coll, read_timeout=1.0) as port:
        request = (
            (
                f"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Content-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
            ).encode()
            + b"\x89PNG"
            + bytes(96)
        )
        start = time.monotonic()
        status, headers, body = exchange(port, request)
        waited = time.monotonic() - start
    assert status == "HTTP/1.1 408 Request Timeout", (status, body)
    assert "stalled" in json.loads(body)["error"] and headers["connection"] == "close"
    assert 0.9 < waited < 5
    records = [r for r in caplog.records if r.name == "lookalike.web.server"]
    assert len(records) == 1 and " 408 " in records[0].getMessage(), records
    assert not any(r.exc_info for r in caplog.records)


MALFORMED = {
    b"GARBAGE\r\n\r\n": "400",
    b"GET\r\n\r\n": "400",
    b"GET /\r\n\r\n": "400",  # HTTP/0.9: no headers, no Host
    b"POST /api/query\r\n\r\n": "400",
    b"GET / HTTP/1.1 extra\r\n\r\n": "400",
    b"GET / HTTX/1.1\r\n\r\n": "400",
    b"GET / HTTP/1.x\r\n\r\n": "400",
    b"GET / HTTP/2.0\r\n\r\n": "505",
    b"\x00\xff\xfe\r\n\r\n": "400",
}


def test_malformed_request_lines_get_a_status_line_and_json(port, record_property):
    for line, code in MALFORMED.items():
        status, headers, body = exchange(port, line)
        assert status.startswith(f"HTTP/1.1 {code} "), (line, status)
        assert headers["content-type"] == "application/json", line
        assert headers["cross-origin-resource-policy"] == "same-origin", line
        assert json.loads(body)["status"] == int(code), line
    record_property("malformed_request_lines", len(MALFORMED))


def host_cases(port: int) -> dict[str, bool]:
    """Host header -> whether a loopback server answers it."""
    return {
        f"127.0.0.1:{port}": True,
        f"localhost:{port}": True,
        f"LocalHost:{port}": True,
        f"localhost.:{port}": True,
        f"[::1]:{port}": True,
        f"127.0.0.2:{port}": True,  # loopback too
        f"evil.example:{port}": False,  # a rebound name
        f"127.0.0.1.evil.example:{port}": False,
        f"localhost:{port + 1}": False,  # another port
        "localhost": False,  # port 80
        "127.0.0.1": False,
        f"user@localhost:{port}": False,
        f"localhost:{port}/x": False,
        "localhost:http": False,
        f"192.0.2.7:{port}": False,  # an address literal, but not this server's
        "": False,
    }


def test_every_host_header_is_checked_by_name_and_port(port, record_property):
    cases = host_cases(port)
    for host, answered in cases.items():
        status, _, body = get(port, "/api/info", host=host)
        if answered:
            assert status == "HTTP/1.1 200 OK", (host, status, body)
        else:
            assert status.startswith("HTTP/1.1 400 "), (host, status)
            assert "Host" in json.loads(body)["error"], host
    for extra in ("", f"Host: evil.example:{port}\r\n"):  # none, or a second one
        request = f"GET /api/info HTTP/1.1\r\n{extra}\r\n"
        if extra:
            request = f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n"
        assert exchange(port, request.encode())[0].startswith("HTTP/1.1 400 "), extra
    record_property("host_headers_checked", len(cases) + 2)


def test_a_server_on_every_address_answers_address_literals_but_no_other_name(coll):
    with running(coll, host="0.0.0.0") as port:
        assert get(port, "/api/info", host=f"192.0.2.7:{port}")[0] == "HTTP/1.1 200 OK"
        assert get(port, "/api/info", host=f"localhost:{port}")[0] == "HTTP/1.1 200 OK"
        assert get(port, "/api/info", host=f"evil.example:{port}")[0].startswith("HTTP/1.1 400")
        assert get(port, "/api/info", host="192.0.2.7:1")[0].startswith("HTTP/1.1 400")


def test_every_answer_forbids_other_origins_to_embed_it(port, record_property):
    _, _, listing = get(port, "/api/items?limit=1")
    path = json.loads(listing)["items"][0]["path"]
    answers = [
        get(port, "/"),
        get(port, "/static/app.js"),
        get(port, "/api/info"),
        get(port, f"/files/{path}"),
        get(port, f"/thumbs/{path}?size=128"),
        get(port, "/nothing"),
        get(port, "/api/info", host="evil.example"),
        exchange(port, f"DELETE / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()),
        exchange(port, f"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()),
        exchange(port, b"GARBAGE\r\n\r\n"),
    ]
    statuses = [status.split()[1] for status, _, _ in answers]
    assert statuses == ["200"] * 5 + ["404", "400", "405", "411", "400"]
    for status, headers, _ in answers:
        assert headers.get("cross-origin-resource-policy") == "same-origin", status
    record_property("answers_with_corp", len(answers))


def test_a_real_serve_process_refuses_bad_lines_and_hosts(coll):
    cmd = [sys.executable, "-m", "lookalike", "serve", str(coll), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split(" at ")[1].strip()
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        assert exchange(port, b"GARBAGE\r\n\r\n")[0].startswith("HTTP/1.1 400 ")
        assert get(port, "/api/info", host=f"evil.example:{port}")[0].startswith("HTTP/1.1 400")
        status, headers, _ = get(port, "/api/info")
        assert status == "HTTP/1.1 200 OK"
        assert headers["cross-origin-resource-policy"] == "same-origin"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
