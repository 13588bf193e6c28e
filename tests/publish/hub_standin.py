"""A local stand-in for the Hugging Face Hub's HTTP API: the endpoints huggingface_hub's
``create_repo`` and ``upload_folder`` call, served on 127.0.0.1 (a test double of the remote service
only; the client, tonsai and the files are real).

Endpoints, as huggingface_hub 2.x calls them (hf_api.py, _commit_api.py, lfs.py):

- ``POST /api/repos/create`` {name, organization, visibility}: 200 {url}, 409 if it exists.
- ``POST /api/validate-yaml`` {content, repoType}: the README's metadata; 200 {}.
- ``POST /api/models/{repo}/preupload/{rev}`` {files: [{path, sample (base64 of the first 512 bytes),
  size}]}: each file's upload mode. Like the Hub: ``lfs`` for the patterns of its default
  .gitattributes (weights), files over 10 MB and files whose sample is not UTF-8 text; ``regular``
  otherwise.
- ``POST /{repo}.git/info/lfs/objects/batch`` (Git LFS batch API, "basic" transfer): an upload
  href per object, then ``PUT`` of the bytes (checked against the sha256 oid) and ``POST`` verify.
- ``POST /api/models/{repo}/commit/{rev}`` (ndjson: a header line, then ``file`` lines with base64
  content and ``lfsFile`` lines naming an uploaded oid): the repo's files become the commit's.

Xet storage (the client's default when hf_xet is installed) is a separate binary protocol that
this stand-in does not speak: uploads that go through LFS are run with ``HF_HUB_DISABLE_XET=1``.
Every API call must carry ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_PATTERNS = ["*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.model",
                "*.npy", "*.npz", "*.pickle", "*.pkl", "*.tar.*", "*.zip", "*.zst", "*tfevents*"]
LFS_SIZE = 10 * 1024 * 1024


class HubStandIn:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "files": {path: bytes}, "commits": [...]}
        self.lfs: dict[str, bytes] = {}  # oid -> content
        self.calls: list[tuple[str, str]] = []  # (method, path)
        self.card_yaml: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "HubStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def upload_mode(path: str, size: int, sample: bytes) -> str:
        if size > LFS_SIZE or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS):
            return "lfs"
        try:
            sample.decode("utf-8")
        except UnicodeDecodeError:
            return "lfs"
        return "lfs" if b"\x00" in sample else "regular"

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _send(self, status: int, obj=None) -> None:
                data = json.dumps(obj if obj is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._send(401, {"error": "Invalid credentials in Authorization header"})
                    return False
                return True

            def do_POST(self):  # noqa: N802 (http.server's naming)
                hub.calls.append(("POST", self.path))
                body = self._body()
                if self.path.startswith("/lfs-verify/"):
                    obj = json.loads(body)
                    return self._send(200 if obj["oid"] in hub.lfs else 404, {})
                if not self._authorized():
                    return None
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    return self._create(json.loads(body))
                if path == "/api/validate-yaml":
                    hub.card_yaml.append(json.loads(body)["content"])
                    return self._send(200, {})
                m = re.fullmatch(r"/api/models/(.+)/(preupload|commit)/([^/]+)", path)
                if m:
                    repo = hub.repos.get(m.group(1))
                    if repo is None:
                        return self._send(404, {"error": "Repository not found"})
                    return (self._preupload if m.group(2) == "preupload" else self._commit)(m.group(1), repo, body)
                m = re.fullmatch(r"/(.+)\.git/info/lfs/objects/batch", path)
                if m:
                    return self._lfs_batch(json.loads(body))
                return self._send(404, {"error": f"no such endpoint {path}"})

            def do_GET(self):  # noqa: N802 (e.g. huggingface_hub's agent registry probe: nothing here)
                hub.calls.append(("GET", self.path))
                return self._send(404, {"error": "not served by the stand-in"})

            def do_PUT(self):  # noqa: N802
                hub.calls.append(("PUT", self.path))
                oid = self.path.removeprefix("/lfs-upload/")
                data = self._body()
                if hashlib.sha256(data).hexdigest() != oid:
                    return self._send(400, {"error": "content does not match its oid"})
                hub.lfs[oid] = data
                return self._send(200, {})

            def _create(self, req: dict) -> None:
                repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else f"user/{req['name']}"
                if repo_id in hub.repos:
                    return self._send(409, {"error": "You already created this model repo", "url": hub.url})
                hub.repos[repo_id] = {"private": req.get("visibility") == "private", "files": {}, "commits": []}
                return self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

            def _preupload(self, repo_id: str, repo: dict, body: bytes) -> None:
                files = []
                for f in json.loads(body)["files"]:
                    sample = base64.b64decode(f["sample"])
                    files.append({"path": f["path"], "uploadMode": hub.upload_mode(f["path"], f["size"], sample),
                                  "shouldIgnore": False, "oid": None})
                return self._send(200, {"files": files, "commitOid": "0" * 40})

            def _lfs_batch(self, req: dict) -> None:
                objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True,
                            "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}", "header": {}},
                                        "verify": {"href": f"{hub.url}/lfs-verify/{o['oid']}", "header": {}}}}
                           for o in req["objects"]]
                return self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

            def _commit(self, repo_id: str, repo: dict, body: bytes) -> None:
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header, ops = lines[0], lines[1:]
                if header.get("key") != "header":
                    return self._send(400, {"error": "first line must be the header"})
                new = dict(repo["files"])
                for op in ops:
                    v = op["value"]
                    if op["key"] == "file":
                        new[v["path"]] = base64.b64decode(v["content"])
                    elif op["key"] == "lfsFile":
                        if v["oid"] not in hub.lfs or len(hub.lfs[v["oid"]]) != v["size"]:
                            return self._send(400, {"error": f"LFS object {v['oid']} of {v['path']} was not uploaded"})
                        new[v["path"]] = hub.lfs[v["oid"]]
                    elif op["key"] in ("deletedFile", "deletedFolder"):
                        new = {p: d for p, d in new.items() if p != v["path"] and not p.startswith(v["path"] + "/")}
                    else:
                        return self._send(400, {"error": f"unknown operation {op['key']}"})
                repo["files"] = new
                oid = hashlib.sha1(body).hexdigest()
                repo["commits"].append({"oid": oid, "summary": header["value"]["summary"],
                                        "lfs": sorted(op["value"]["path"] for op in ops if op["key"] == "lfsFile")})
                return self._send(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                                        "pullRequestUrl": None})

        return Handler
