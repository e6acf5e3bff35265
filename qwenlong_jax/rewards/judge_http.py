"""urllib plumbing of the OpenAI-compatible judge client (rewards/judge.py): no redirects (the API
key never follows one) and connections that report their socket to the request's deadline timer."""

from __future__ import annotations

import http.client
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError(3xx): the key never follows a redirect


def deadline_handlers(on_connect):
    """urllib handlers whose connections report their socket (for the deadline timer)."""

    def conn_class(base):
        class Conn(base):
            def connect(self):
                super().connect()
                on_connect(self.sock)

        return Conn

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(conn_class(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(conn_class(http.client.HTTPSConnection), req, context=self._context)

    return HTTP(), HTTPS()
