"""A file server on the loopback interface for the download tests: plain URLs and the subset of the
Hugging Face hub protocol that ``huggingface_hub.hf_hub_download`` uses (HEAD and GET on
``/[datasets/]<owner>/<repo>/resolve/<revision>/<path>`` with the X-Repo-Commit, ETag and
Content-Length headers). Nothing here reaches another host."""
import hashlib
import http.server
import threading
from typing import Dict, List, Optional, Tuple

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a fake 40-hex commit id for X-Repo-Commit


class LocalServer:
    """``add(path, body)`` serves ``body`` at ``url(path)``; ``requests`` lists (method, path) received."""

    def __init__(self):
        self.files: Dict[str, Tuple[bytes, Dict[str, str]]] = {}
        self.requests: List[Tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, send_body: bool):
                path = self.path.split("?", 1)[0]
                server.requests.append((self.command, path))
                if path not in server.files:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                body, headers = server.files[path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def do_HEAD(self):
                self._reply(False)

            def do_GET(self):
                self._reply(True)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.root + path

    def add(self, path: str, body: bytes, headers: Optional[Dict[str, str]] = None) -> str:
        self.files[path] = (body, dict(headers or {}))
        return self.url(path)

    def add_hub_file(self, repo_id: str, file_path: str, body: bytes, repo_type: str = "model",
                     advertised: Optional[bytes] = None, revision: str = "main") -> str:
        """Serve ``body`` as hub file ``file_path``; the ETag is the SHA-256 of ``advertised`` (default
        ``body``), as the hub reports for LFS files. Returns the URL path."""
        prefix = {"model": "", "dataset": "/datasets"}[repo_type]
        path = f"{prefix}/{repo_id}/resolve/{revision}/{file_path}"
        etag = hashlib.sha256(body if advertised is None else advertised).hexdigest()
        self.add(path, body, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'})
        return path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
