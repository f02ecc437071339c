"""The HTTP server: the standard library's WSGI server, one thread per request.

wsgiref's server answers one request at a time; with the threading mixin a
slow tenant's query does not hold up the others (the pool bounds how many
reach the database at once).
"""

from __future__ import annotations

import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as wsgiref_make_server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    # Request threads do not keep the process alive at shutdown.
    daemon_threads = True


class RequestHandler(WSGIRequestHandler):
    def get_environ(self) -> dict:
        """The WSGI environ, without headers whose names hold an underscore.

        WSGI spells `X-Tenant-ID` and `X_Tenant_ID` alike (HTTP_X_TENANT_ID), so a client could
        name its tenant past a proxy that sets or strips only the dashed header. nginx and
        Apache drop such headers for the same reason; so does this server.
        """
        for name in {name for name in self.headers.keys() if "_" in name}:
            del self.headers[name]
        return super().get_environ()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silent: the app logs each request itself, with its tenant."""


def make_server(app, host: str = "0.0.0.0", port: int = 8080) -> ThreadingWSGIServer:
    """A server for the app, bound but not yet serving; port 0 picks a free port (see server_port)."""
    return wsgiref_make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=RequestHandler)
