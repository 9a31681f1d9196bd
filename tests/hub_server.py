"""A local stand-in for the Hugging Face Hub and for a plain file host, so downloads are tested
without internet: a real ``http.server`` in a thread on 127.0.0.1 (a free port), speaking the part
of the hub's HTTP API that huggingface_hub's ``snapshot_download`` / ``hf_hub_download`` /
``get_hf_file_metadata`` / ``HfApi.list_repo_files`` use (read from huggingface_hub's own source):

- ``HEAD|GET /{repo}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``, ``ETag`` (the git
  blob sha1; for LFS files the sha256, also in ``X-Linked-Etag`` with ``X-Linked-Size``) and
  ``Content-Length``; ``Range: bytes=N-`` answers 206 (resumed downloads); unknown revision or file:
  404 with the ``X-Error-Code`` the client maps to its errors;
- ``GET /api/models/{repo}/revision/{revision}``: ``{"id", "sha", "siblings"}`` (older clients and
  unpinned revisions); ``GET /api/models/{repo}/tree/{revision}``: the recursive file listing with
  ``oid``, ``size`` and ``lfs`` entries (newer clients; no ``Link`` header: one page);
- ``HEAD|GET /files/{name}``: a torch-hub style file (``torch.hub.download_url_to_file``).

Every request is recorded as (method, path) in ``requests``, so a test can say which were made.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer", "git_blob_sha1"]


def git_blob_sha1(data: bytes) -> str:
    """The hub's ETag of a non-LFS file: git's blob id."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """``with HubServer() as hub: hub.add_repo("org/name", {...}); ... hub.url ...``"""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}  # repo id -> {"commit": sha, "files": {path: bytes}, "lfs": set of paths}
        self.files: dict[str, bytes] = {}  # /files/<name> -> bytes
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_repo(self, repo: str, files: dict[str, bytes], lfs_suffixes: tuple[str, ...] = (".safetensors",)) -> str:
        """Serve ``files`` as ``repo`` at one commit (its id derived from the content); returns the commit."""
        digest = hashlib.sha1(repo.encode() + b"".join(k.encode() + v for k, v in sorted(files.items())))
        commit = digest.hexdigest()
        self.repos[repo] = {"commit": commit, "files": dict(files),
                            "lfs": {p for p in files if p.endswith(lfs_suffixes)}}
        return commit

    def content_gets(self) -> list[str]:
        """Paths of the GET requests that fetched file content (not metadata)."""
        return [p for m, p in self.requests if m == "GET" and ("/resolve/" in p or p.startswith("/files/"))]

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the test reads hub.requests instead
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if path.startswith("/files/"):
                data = hub.files.get(path[len("/files/"):])
                return self._file(data, {}, body) if data is not None else self._error(404, "EntryNotFound")
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)", path):
                return self._api(*m.groups())
            if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                return self._resolve(*m.groups(), body=body)
            self._error(404, "RepoNotFound")

        def _repo(self, repo: str, revision: str) -> dict | None:
            r = hub.repos.get(repo)
            if r is None:
                self._error(404, "RepoNotFound")
            elif revision not in (r["commit"], "main"):
                self._error(404, "RevisionNotFound", r["commit"])
            else:
                return r
            return None

        def _api(self, repo: str, kind: str, revision: str) -> None:
            r = self._repo(repo, revision)
            if r is None:
                return
            if kind == "revision":
                doc = {"id": repo, "sha": r["commit"], "siblings": [{"rfilename": p} for p in sorted(r["files"])]}
            else:
                doc = [_tree_entry(p, d, p in r["lfs"]) for p, d in sorted(r["files"].items())]
            data = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _resolve(self, repo: str, revision: str, name: str, body: bool) -> None:
            r = self._repo(repo, revision)
            if r is None:
                return
            data = r["files"].get(name)
            if data is None:
                return self._error(404, "EntryNotFound", r["commit"])
            headers = {"X-Repo-Commit": r["commit"], "ETag": f'"{git_blob_sha1(data)}"'}
            if name in r["lfs"]:
                sha = hashlib.sha256(data).hexdigest()
                headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
            self._file(data, headers, body)

        def _file(self, data: bytes, headers: dict[str, str], body: bool) -> None:
            start = 0
            if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
                start = int(m.group(1))
            self.send_response(206 if start else 200)
            for k, v in headers.items():
                self.send_header(k, v)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if body:
                self.wfile.write(data[start:])

        def _error(self, code: int, error_code: str, commit: str | None = None) -> None:
            data = json.dumps({"error": error_code}).encode()
            self.send_response(code)
            self.send_header("X-Error-Code", error_code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def _tree_entry(path: str, data: bytes, lfs: bool) -> dict:
    entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
    if lfs:
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry
