"""A header-only shim so Celery's Elasticsearch backend (elasticsearch-py 8) can talk to OpenSearch.

elasticsearch-py 8 refuses servers that do not answer `X-Elastic-Product: Elasticsearch`, and sends
`application/vnd.elasticsearch+json; compatible-with=8` media types that OpenSearch rejects. This
proxy rewrites exactly those two things; bodies, paths and status codes pass through unchanged.

  python3 es_compat_proxy.py LISTEN_PORT UPSTREAM_PORT      (both on 127.0.0.1)
"""
import http.client
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN, UPSTREAM = int(sys.argv[1]), int(sys.argv[2])
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def plain(value):
    return "application/json" if "vnd.elasticsearch+json" in value else value


class Shim(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        for k in list(headers):
            if k.lower() in ("accept", "content-type"):
                headers[k] = plain(headers[k])
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=120)
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", LISTEN), Shim).serve_forever()
