"""A local HTTP server with the RCSB download layout that injects network faults.

Used by tests/test_fetch.py and benchmarks/bench_scale.py (which adds ``tests/`` to
``sys.path``). Serves ``root_dir`` on 127.0.0.1 (a free port) under the layout of
https://files.rcsb.org/download: ``/<ID>.cif``, ``/<ID>.pdb``, and ``/<ID>.cif.gz`` /
``/<ID>.pdb.gz`` (a stored ``.gz`` file, else the plain file gzipped on the fly).

Faults are planned per request path or per id: ``faults={"1EHZ": ["500", "short"]}``
answers the first request for any ``/1EHZ.*`` with HTTP 500, the second with a body cut
short, and every later one normally (a key with the extension, ``"1EHZ.cif"``, takes
precedence). A file absent from ``root_dir`` is a 404 on every request. Fault names:

``500``/``502``/``503``/``429``/``404``
    that HTTP status once (a small text body)
``stall``
    accept the request and send nothing for ``stall_s`` seconds (client timeout)
``stall_body``
    send the headers and half the body, then nothing for ``stall_s`` seconds
``short``
    ``Content-Length`` of the whole file, half the body, then close the connection
``truncated``
    status 200 with the first half of the file as a complete response (parse error)
``html``
    status 200 with an HTML error page
``empty``
    status 200 with an empty body
``gzip``
    the file with ``Content-Encoding: gzip``

Example::

    with FaultServer(root, {"1EHZ": ["500", "500"], "434D": ["short"]}) as srv:
        run_fetch(cfg(rcsb_url=srv.url, ...))
        srv.requests        # ["/1EHZ.cif", ...] in arrival order
        srv.count("1EHZ")   # requests for any /1EHZ.* path
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAULTS = ("500", "502", "503", "429", "404", "stall", "stall_body", "short", "truncated",
          "html", "empty", "gzip")
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
             b"<body><h1>Service temporarily unavailable</h1></body></html>\n")


class FaultServer:
    """Context manager: a ThreadingHTTPServer serving ``root_dir`` with planned faults."""

    def __init__(self, root_dir: str | Path, faults: dict[str, list[str]] | None = None,
                 stall_s: float = 5.0):
        self.root = Path(root_dir)
        self.stall_s = stall_s
        self.requests: list[str] = []
        self._plans = {key: list(plan) for key, plan in (faults or {}).items()}
        for key, plan in self._plans.items():
            unknown = set(plan) - set(FAULTS)
            if unknown:
                raise ValueError(f"fault plan for {key!r}: unknown faults {sorted(unknown)}")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FaultServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                server._serve(self)

            def log_message(self, *args):  # keep test and benchmark output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43127`` (use as ``data.rcsb_url``)."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # ------------------------------------------------------------------ bookkeeping
    def count(self, sid: str) -> int:
        """Requests so far for any file of id ``sid`` (``/<sid>.*``)."""
        with self._lock:
            return sum(1 for p in self.requests if p.lstrip("/").split(".", 1)[0] == sid)

    def add_faults(self, key: str, plan: list[str]) -> None:
        """Append faults to the plan of ``key`` (an id or file name)."""
        with self._lock:
            self._plans.setdefault(key, []).extend(plan)

    def _next_fault(self, name: str) -> str | None:
        with self._lock:
            self.requests.append("/" + name)
            for key in (name, name.split(".", 1)[0]):
                plan = self._plans.get(key)
                if plan:
                    return plan.pop(0)
        return None

    def _body(self, name: str) -> bytes | None:
        if "/" in name or name.startswith("."):
            return None
        path = self.root / name
        if path.is_file():
            return path.read_bytes()
        if name.endswith(".gz") and (self.root / name[:-3]).is_file():
            return gzip.compress((self.root / name[:-3]).read_bytes(), mtime=0)
        return None

    # ------------------------------------------------------------------ responses
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.split("?", 1)[0].lstrip("/")
        fault = self._next_fault(name)
        try:
            self._respond(h, name, fault)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str] | None = None, length: int | None = None) -> None:
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/octet-stream" if status == 200 else "text/plain")
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _respond(self, h: BaseHTTPRequestHandler, name: str, fault: str | None) -> None:
        if fault is not None and fault.isdigit():
            self._send(h, int(fault), f"injected HTTP {fault}\n".encode())
            return
        if fault == "stall":
            self._stop.wait(self.stall_s)
            h.close_connection = True
            return
        body = self._body(name)
        if body is None:
            self._send(h, 404, b"not found\n")
            return
        half = body[: max(1, len(body) // 2)]
        if fault == "stall_body":
            h.close_connection = True
            self._send(h, 200, half, length=len(body))
            self._stop.wait(self.stall_s)
        elif fault == "short":
            h.close_connection = True
            self._send(h, 200, half, length=len(body))
        elif fault == "truncated":
            self._send(h, 200, half)
        elif fault == "html":
            self._send(h, 200, HTML_PAGE, {"Content-Type": "text/html"})
        elif fault == "empty":
            self._send(h, 200, b"")
        elif fault == "gzip":
            self._send(h, 200, gzip.compress(body, mtime=0), {"Content-Encoding": "gzip"})
        else:
            self._send(h, 200, body)


__all__ = ["FAULTS", "FaultServer", "HTML_PAGE"]
