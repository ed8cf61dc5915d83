"""The dashboard's HTTP server: the page, its static files and the JSON API.

Standard library only (``http.server``); GET and HEAD only, so nothing can
be submitted through it. Every route, static files included, needs the
token (``auth.py``); answers carry headers that keep other sites from
framing the page or reading its data.
"""
import json
import logging
import os
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import auth, views

log = logging.getLogger("zray.dashboard")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/app.js": ("app.js", "text/javascript; charset=utf-8"),
                "/style.css": ("style.css", "text/css; charset=utf-8")}
API_VIEWS = {"/api/cluster": views.cluster, "/api/tasks": views.tasks,
             "/api/actors": views.actors, "/api/objects": views.objects,
             "/api/timeline": views.timeline, "/api/workers": views.workers}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, reader, token):
        self.reader = reader
        self.token = token
        super().__init__(address, DashboardHandler)

    @property
    def port(self):
        return self.server_address[1]


class DashboardHandler(BaseHTTPRequestHandler):
    server_version = "zray-dashboard"
    sys_version = ""

    def do_GET(self):
        url = urlsplit(self.path)
        authorized, from_url = auth.check(self.server.token, url.query, self.headers,
                                          self.server.port)
        if not authorized:
            return self._send(HTTPStatus.UNAUTHORIZED, (auth.UNAUTHORIZED_HINT + "\n").encode(),
                              "text/plain; charset=utf-8")
        extra = {"Set-Cookie": auth.set_cookie_header(self.server.token, self.server.port)
                 } if from_url else {}
        try:
            self._route(url.path, parse_qs(url.query), extra)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:      # the cluster may be stopping: answer, never crash
            log.exception("dashboard request %s failed", url.path)
            self._json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.SERVICE_UNAVAILABLE)

    do_HEAD = do_GET

    def do_POST(self):
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"the zray dashboard is read-only\n",
                   "text/plain; charset=utf-8")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _route(self, path, query, extra):
        if path in STATIC_FILES:
            name, content_type = STATIC_FILES[path]
            with open(os.path.join(STATIC_DIR, name), "rb") as f:
                return self._send(HTTPStatus.OK, f.read(), content_type, extra)
        if path in API_VIEWS:
            return self._json(API_VIEWS[path](self.server.reader.latest()), extra=extra)
        if path == "/api/logs":
            node_id, pid = query.get("node", [""])[0], query.get("pid", [""])[0]
            if not pid.isdigit():
                return self._json({"error": "pass ?node=NODE_ID&pid=PID (see /api/workers)"},
                                  HTTPStatus.BAD_REQUEST)
            text = self.server.reader.log_tail(node_id, int(pid))
            return self._json({"node_id": node_id, "pid": int(pid), "text": text}, extra=extra)
        if path == "/api/timeline.json":
            body = json.dumps(self.server.reader.all_events()).encode()
            extra = dict(extra, **{"Content-Disposition":
                                   'attachment; filename="zray-timeline.json"'})
            return self._send(HTTPStatus.OK, body, "application/json", extra)
        return self._send(HTTPStatus.NOT_FOUND, b"not found: see the README for the routes\n",
                          "text/plain; charset=utf-8", extra)

    def _json(self, value, status=HTTPStatus.OK, extra=None):
        self._send(status, json.dumps(value, default=str).encode(), "application/json", extra)

    def _send(self, status, body, content_type, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):
        # Never log the query string: it may carry the token.
        log.debug("%s %s", self.command, urlsplit(self.path).path)
