"""`make run`'s web server: Django's development server, except that a connection whose request body was not
read to its end is closed after the answer instead of kept alive.

Django's server keeps HTTP/1.1 connections open and, after the answer, reads whatever is left of the body
into memory in one read (a refused 1 GiB upload: 1 GiB of RAM). Not reading it instead leaves the body on the
connection, where the server takes its bytes for the next request: an attack review smuggled a GET inside a
refused upload's body that way. Closing the connection does neither. A connection whose framing is in doubt
(a malformed or repeated Content-Length, a Transfer-Encoding) is closed after its answer too, and no
'100 Continue' is sent before the answer. (gunicorn, in docker/, drains an unread body in small reads before
the next request.)
"""

from wsgiref import simple_server

from django.core.management.commands.runserver import Command as RunServer
from django.core.servers.basehttp import ServerHandler, WSGIRequestHandler, WSGIServer


def framing_is_plain(headers) -> bool:
    """True when the request's body length is beyond doubt: no Transfer-Encoding, and at most one
    Content-Length that is a plain byte count. Anything else (a length of 'abc', '-5', '5, 5', two lengths,
    chunked) is where a proxy in front and this server could disagree on where the body ends."""
    lengths = headers.get_all("Content-Length") or []
    plain = all(value.strip().isascii() and value.strip().isdigit() for value in lengths)
    return not headers.get_all("Transfer-Encoding") and len(lengths) <= 1 and plain


class ClosingServerHandler(ServerHandler):
    def cleanup_headers(self):
        super().cleanup_headers()
        stream = self.get_stdin()  # Django's LimitedStream over the socket, limited to the Content-Length
        if stream._pos < stream.limit or not framing_is_plain(self.request_handler.headers):
            self.headers["Connection"] = "close"
            self.request_handler.close_connection = True

    def close(self):
        if self.request_handler.close_connection:
            simple_server.ServerHandler.close(self)  # not Django's, which first reads the rest of the body
        else:
            super().close()


class ClosingRequestHandler(WSGIRequestHandler):
    def handle_expect_100(self):
        """No '100 Continue' before the application has judged the request: a refused upload's client is not
        invited to send its gigabyte. (A client that waited for it gets the final answer instead, as HTTP
        allows, or sends after its own short wait.)"""
        return True

    def handle_one_request(self):
        """Django's WSGIRequestHandler.handle_one_request, with ClosingServerHandler."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = ClosingServerHandler(self.rfile, self.wfile, self.get_stderr(), self.get_environ())
        handler.request_handler = self
        handler.run(self.server.get_app())


class ClosingWSGIServer(WSGIServer):
    def __init__(self, server_address, handler_class=None, *args, **kwargs):
        super().__init__(server_address, ClosingRequestHandler, *args, **kwargs)


class ServeCommand(RunServer):
    help = "Django's development server, closing connections whose request body was left unread (make run)."
    server_cls = ClosingWSGIServer
