"""A threaded WSGI server that keeps HTTP/1.1 connections open between requests.

werkzeug's development server ends every response with ``Connection: close`` (see the
comment in ``werkzeug.serving.WSGIRequestHandler.run_wsgi``), so boto3's connection pool
(urllib3, kept-alive connections) had to open a new TCP connection for every call. This is
the standard library's ``wsgiref`` server with its request handler looping over requests on
one connection, as ``http.server`` does for HTTP/1.1; the WSGI app is unchanged.
"""

from __future__ import annotations

import io
import socketserver
from typing import IO, Any, cast
from wsgiref.headers import Headers
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

MAX_REQUEST_LINE = 65536


class _Response(ServerHandler):
    http_version = "1.1"
    has_length = False
    headers: Headers  # set by start_response (BaseHandler), before cleanup_headers runs

    def cleanup_headers(self) -> None:
        super().cleanup_headers()  # adds Content-Length when the body is one block
        self.has_length = "Content-Length" in self.headers


class _Connection(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # an idle kept-alive connection (and its thread) ends after this
    # Headers and body are separate writes: with Nagle's algorithm on, the second waits for
    # the client's delayed ACK (~40 ms per request on a kept-alive connection).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        except TimeoutError:
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.send_error(414)
            self.close_connection = True
            return
        if not self.parse_request():  # it answered the error itself
            return
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.send_error(411, "a Content-Length is required")
            self.close_connection = True
            return
        # The whole body is read before the app runs: whatever the app leaves unread must
        # not be taken for the next request line.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        environ = self.get_environ()
        environ["wsgi.input"] = stdin = io.BytesIO(body)
        # typeshed types wfile as BufferedIOBase and ServerHandler's stdout as IO[bytes];
        # wsgiref's own WSGIRequestHandler.handle passes this same object.
        wfile = cast(IO[bytes], self.wfile)
        response = _Response(stdin, wfile, self.get_stderr(), environ, multithread=True)
        response.request_handler = self  # type: ignore[attr-defined]
        response.run(self.server.get_app())  # type: ignore[attr-defined]
        if not response.has_length:
            self.close_connection = True  # the end of the body is the end of the connection
        self.wfile.flush()


class KeepAliveServer(socketserver.ThreadingMixIn, WSGIServer):
    """``KeepAliveServer((host, port), app)``; ``serve_forever()``, ``shutdown()``."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: Any) -> None:
        super().__init__(address, _Connection)
        self.set_app(app)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
