"""OCI Distribution Spec v1.1 under /v2/: blobs, uploads, manifests, tags, catalog, referrers.

One catch-all route parses the path from its end (repository names contain slashes), which is both exact
and cheaper than a regex router. Blob bodies stream straight into the storage driver, which hashes them as
they arrive; blobs go out with sendfile (aiohttp's FileResponse, which also answers Range requests).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import traceback
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import ClientPayloadError, web

from matou.errors import DataCorruption, InvalidArgument, MatouError, NotFound
from matou.registry.api.errors import API_VERSION_HEADER, ApiError, classify, message_of, oci_error
from matou.registry.api.gate import authorize, challenge, identify
from matou.registry.core import Registry, RepoNotFound
from matou.registry.index import Repo
from matou.registry.names import is_valid_name, is_valid_tag
from matou.registry.storage import OffsetMismatch
from matou.types import oci
from matou.types.digest import is_digest

_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")
_MAX_PAGE = 10000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _hdr(**extra: str) -> dict[str, str]:
    h = dict(API_VERSION_HEADER)
    h.update({k.replace("_", "-"): v for k, v in extra.items()})
    return h


def _range(size: int) -> str:
    return f"0-{max(size - 1, 0)}"


def _page_args(request: web.Request) -> tuple[int | None, str | None]:
    n_raw = request.query.get("n")
    last = request.query.get("last") or None
    if n_raw is None or n_raw == "":
        return None, last
    try:
        n = int(n_raw)
    except ValueError:
        raise ApiError(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested") from None
    if n < 0:
        raise ApiError(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested")
    return min(n, _MAX_PAGE), last


def _next_link(path: str, n: int, last: str, extra: dict[str, str] | None = None) -> str:
    q = {"n": str(n), "last": last}
    if extra:
        q.update(extra)
    return f'<{path}?{urlencode(q)}>; rel="next"'


class DistributionApi:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            handler, args = self._route(request)
            return await handler(request, *args)
        except ApiError as e:
            return oci_error(e.status, e.code, e.message, e.headers, e.detail)
        except MatouError as e:
            status, code = classify(e)
            if isinstance(e, NotFound) and code == "NOT_FOUND":
                code = "NAME_UNKNOWN" if isinstance(e, RepoNotFound) else "BLOB_UNKNOWN"
            if code == "INVALID":
                code = "MANIFEST_INVALID" if "/manifests/" in request.path else "BLOB_UPLOAD_INVALID"
            if code == "CONFLICT":
                code, status = "DENIED", 409
            return oci_error(status, code, message_of(e))
        except (ConnectionError, asyncio.CancelledError):
            raise
        except ClientPayloadError as e:  # the client went away or sent a broken body mid-upload
            return oci_error(400, "BLOB_UPLOAD_INVALID", f"incomplete request body: {e}")
        except OffsetMismatch as e:
            return oci_error(416, "BLOB_UPLOAD_INVALID", f"upload is at offset {e.size}")
        except Exception:  # noqa: BLE001 - a bug or a host failure: log it, answer like distribution does
            traceback.print_exc(file=sys.stderr)
            return oci_error(500, "UNKNOWN", "unknown error")

    def _route(self, request: web.Request) -> tuple[Callable[..., Awaitable[web.StreamResponse]], tuple[str, ...]]:
        path = request.match_info.get("tail", "")
        m = request.method
        if path == "":
            return self.base, ()
        if path == "_catalog":
            if m != "GET":
                raise ApiError(405, "UNSUPPORTED", "method not allowed")
            return self.catalog, ()
        parts = path.split("/")
        n = len(parts)
        if n >= 3 and parts[-2] == "tags" and parts[-1] == "list":
            name = "/".join(parts[:-2])
            if m in ("GET", "HEAD"):
                return self.tags_list, (self._name(name),)
        elif n >= 3 and parts[-2] == "manifests":
            name, ref = "/".join(parts[:-2]), parts[-1]
            h = {"GET": self.get_manifest, "HEAD": self.get_manifest, "PUT": self.put_manifest,
                 "DELETE": self.delete_manifest}.get(m)
            if h is not None:
                return h, (self._name(name), ref)
        elif n >= 4 and parts[-3] == "blobs" and parts[-2] == "uploads":
            name, upload_id = "/".join(parts[:-3]), parts[-1]
            if upload_id == "":
                if m == "POST":
                    return self.start_upload, (self._name(name),)
            else:
                h = {"GET": self.upload_status, "HEAD": self.upload_status, "PATCH": self.patch_upload,
                     "PUT": self.put_upload, "DELETE": self.cancel_upload}.get(m)
                if h is not None:
                    return h, (self._name(name), upload_id)
        elif n >= 3 and parts[-2] == "blobs":
            name, digest = "/".join(parts[:-2]), parts[-1]
            h = {"GET": self.get_blob, "HEAD": self.head_blob, "DELETE": self.delete_blob}.get(m)
            if h is not None:
                return h, (self._name(name), digest)
        elif n >= 3 and parts[-2] == "referrers":
            name, digest = "/".join(parts[:-2]), parts[-1]
            if m == "GET":
                return self.referrers, (self._name(name), digest)
        else:
            raise ApiError(404, "NOT_FOUND", "not found")
        raise ApiError(405, "UNSUPPORTED", f"method {m} not allowed here")

    @staticmethod
    def _name(name: str) -> str:
        if not is_valid_name(name):
            raise ApiError(400, "NAME_INVALID", f"invalid repository name: {name!r}")
        return name

    def _repo(self, access_repo: Repo | None, name: str) -> Repo:
        if access_repo is None:
            raise RepoNotFound(name)
        return access_repo

    # base and catalog
    async def base(self, request: web.Request) -> web.StreamResponse:
        ident = identify(self.reg, request)
        if ident.method == "none":
            raise ApiError(401, "UNAUTHORIZED", "authentication required",
                           {"WWW-Authenticate": challenge(self.reg, request)})
        return web.Response(body=b"{}", headers=_hdr(Content_Type="application/json"))

    async def catalog(self, request: web.Request) -> web.StreamResponse:
        ident = identify(self.reg, request, "registry:catalog:*")
        n, last = _page_args(request)
        names = self.reg.index.catalog(self.reg.viewer(ident.subject), last, n)
        headers = _hdr(Content_Type="application/json")
        if n is not None and n > 0 and len(names) == n:
            headers["Link"] = _next_link("/v2/_catalog", n, names[-1])
        if n == 0:
            names = []
        return web.Response(body=json.dumps({"repositories": names}).encode(), headers=headers)

    async def tags_list(self, request: web.Request, name: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "pull")
        repo = self._repo(g.access.repo, name)
        n, last = _page_args(request)
        tags = [] if n == 0 else self.reg.index.list_tags(repo.id, last, n)
        headers = _hdr(Content_Type="application/json")
        if n and len(tags) == n:
            headers["Link"] = _next_link(f"/v2/{name}/tags/list", n, tags[-1])
        return web.Response(body=json.dumps({"name": name, "tags": tags}).encode(), headers=headers)

    # manifests
    async def get_manifest(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "pull")
        repo = self._repo(g.access.repo, name)
        row = self.reg.index.resolve(repo.id, ref) if (is_valid_tag(ref) or is_digest(ref)) else None
        if row is None:
            raise ApiError(404, "MANIFEST_UNKNOWN", f"manifest unknown: {ref}")
        try:
            data = self.reg.read_manifest(row)
        except NotFound:
            raise ApiError(404, "MANIFEST_UNKNOWN", f"manifest unknown: {ref}") from None
        headers = _hdr(Content_Type=row.media_type, Docker_Content_Digest=row.digest, ETag=f'"{row.digest}"')
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return web.Response(headers=headers)
        self.reg.count_pull(repo.id)
        return web.Response(body=data, headers=headers)

    async def put_manifest(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "push")
        if not (is_valid_tag(ref) or is_digest(ref)):
            raise ApiError(400, "TAG_INVALID" if ":" not in ref else "DIGEST_INVALID", f"invalid reference: {ref}")
        limit = self.reg.cfg.limits.max_manifest_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "SIZE_INVALID", f"manifest is larger than {limit} bytes")
        raw = await request.content.read(limit + 1)
        while len(raw) <= limit:
            more = await request.content.read(limit + 1 - len(raw))
            if not more:
                break
            raw += more
        if len(raw) > limit:
            raise ApiError(413, "SIZE_INVALID", f"manifest is larger than {limit} bytes")
        repo = self.reg.ensure_repo(g.identity.subject, name, g.access.repo)
        try:
            res = self.reg.put_manifest(repo, ref, raw, request.headers.get("Content-Type"))
        except InvalidArgument as e:
            status, code = classify(e)
            if code == "INVALID":
                code = "MANIFEST_INVALID"
            raise ApiError(status, code, str(e)) from None
        headers = _hdr(Location=f"/v2/{name}/manifests/{res.digest}", Docker_Content_Digest=res.digest,
                       Content_Length="0")
        if res.subject:
            headers["OCI-Subject"] = res.subject
        return web.Response(status=201, headers=headers)

    async def delete_manifest(self, request: web.Request, name: str, ref: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "delete")
        repo = self._repo(g.access.repo, name)
        if is_digest(ref):
            ok = self.reg.index.delete_manifest(repo.id, ref, repo.immutable_tags)
        elif is_valid_tag(ref):
            ok = self.reg.index.delete_tag(repo.id, ref, repo.immutable_tags)
        else:
            ok = False
        if not ok:
            raise ApiError(404, "MANIFEST_UNKNOWN", f"manifest unknown: {ref}")
        return web.Response(status=202, headers=_hdr(Content_Length="0"))

    async def referrers(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "pull")
        if not is_digest(digest):
            raise ApiError(400, "DIGEST_INVALID", f"invalid digest: {digest}")
        repo = self._repo(g.access.repo, name)
        artifact_type = request.query.get("artifactType") or None
        rows = self.reg.index.referrers(repo.id, digest, artifact_type)
        manifests = []
        for r in rows:
            d: dict[str, object] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
            if r.artifact_type:
                d["artifactType"] = r.artifact_type
            if r.annotations:
                d["annotations"] = r.annotations
            manifests.append(d)
        body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": manifests}).encode()
        headers = _hdr(Content_Type=oci.OCI_INDEX)
        if artifact_type:
            headers["OCI-Filters-Applied"] = "artifactType"
        return web.Response(body=body, headers=headers)

    # blobs
    def _blob_size(self, repo: Repo, digest: str) -> int:
        if not is_digest(digest):
            raise ApiError(400, "DIGEST_INVALID", f"invalid digest: {digest}")
        size = self.reg.blob_in_repo(repo.id, digest)
        if size is None:
            raise ApiError(404, "BLOB_UNKNOWN", f"blob unknown to registry: {digest}")
        return size

    async def head_blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "pull")
        repo = self._repo(g.access.repo, name)
        size = self._blob_size(repo, digest)
        return web.Response(headers=_hdr(Content_Length=str(size), Content_Type="application/octet-stream",
                                         Docker_Content_Digest=digest, ETag=f'"{digest}"',
                                         Accept_Ranges="bytes"))

    async def get_blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "pull")
        repo = self._repo(g.access.repo, name)
        self._blob_size(repo, digest)
        path = self.reg.storage.blob_path(digest)
        headers = _hdr(Content_Type="application/octet-stream", Docker_Content_Digest=digest, ETag=f'"{digest}"',
                       Cache_Control="max-age=31536000")
        if path is not None:
            return web.FileResponse(path, chunk_size=1 << 20, headers=headers)
        data = self.reg.storage.read_blob(digest)  # drivers without local files (none yet)
        return web.Response(body=data, headers=headers)

    async def delete_blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "delete")
        repo = self._repo(g.access.repo, name)
        if not is_digest(digest):
            raise ApiError(400, "DIGEST_INVALID", f"invalid digest: {digest}")
        if not self.reg.index.unlink_blob(repo.id, digest):
            raise ApiError(404, "BLOB_UNKNOWN", f"blob unknown to registry: {digest}")
        return web.Response(status=202, headers=_hdr(Content_Length="0", Docker_Content_Digest=digest))

    # uploads
    def _upload_headers(self, name: str, upload_id: str, size: int) -> dict[str, str]:
        return _hdr(Location=f"/v2/{name}/blobs/uploads/{upload_id}", Range=_range(size),
                    Docker_Upload_UUID=upload_id, Content_Length="0")

    def _new_session(self, repo: Repo) -> str:
        upload_id = self.reg.storage.create_upload()
        self.reg.index.create_upload(upload_id, repo.id)
        return upload_id

    async def start_upload(self, request: web.Request, name: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "push")
        mount, source = request.query.get("mount"), request.query.get("from")
        digest = request.query.get("digest")
        if mount and source and is_digest(mount) and is_valid_name(source):
            mounted = await self._mount(request, g, name, mount, source)
            if mounted is not None:
                return mounted
        repo = self.reg.ensure_repo(g.identity.subject, name, g.access.repo)
        if digest is not None:
            if not is_digest(digest):
                raise ApiError(400, "DIGEST_INVALID", f"invalid digest: {digest}")
            upload_id = self._new_session(repo)
            try:
                await self._receive(request, upload_id, None)
                self._commit(repo, upload_id, digest)
            except BaseException:
                self._drop(upload_id)
                raise
            return web.Response(status=201, headers=_hdr(Location=f"/v2/{name}/blobs/{digest}",
                                                         Docker_Content_Digest=digest, Content_Length="0"))
        upload_id = self._new_session(repo)
        return web.Response(status=202, headers=self._upload_headers(name, upload_id, 0))

    async def _mount(self, request: web.Request, g, name: str, digest: str, source: str) -> web.StreamResponse | None:  # noqa: ANN001
        acts, access = self.reg.authz.check(g.identity.subject, source)
        granted = g.identity.granted("repository", source)
        if granted is not None:
            acts = acts & granted
        if "pull" not in acts or access.repo is None:
            return None
        if self.reg.blob_in_repo(access.repo.id, digest) is None:
            return None
        repo = self.reg.ensure_repo(g.identity.subject, name, g.access.repo)
        if not self.reg.index.link_blob(repo.id, digest):
            return None
        return web.Response(status=201, headers=_hdr(Location=f"/v2/{name}/blobs/{digest}",
                                                     Docker_Content_Digest=digest, Content_Length="0"))

    def _session_repo(self, g, name: str, upload_id: str) -> Repo:  # noqa: ANN001
        repo = g.access.repo
        if repo is None or self.reg.index.upload_repo(upload_id) != repo.id:
            raise ApiError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
        return repo

    def _drop(self, upload_id: str) -> None:
        self.reg.storage.delete_upload(upload_id)
        self.reg.index.delete_upload(upload_id)

    async def _receive(self, request: web.Request, upload_id: str, offset: int | None) -> int:
        """Streams the request body onto the session at ``offset``; returns the session's new size."""
        try:
            writer = self.reg.storage.open_upload(upload_id, offset)
        except NotFound:
            raise ApiError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry") from None
        try:
            content = request.content
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                writer.write(chunk)
        finally:
            size = writer.close()
        return size

    def _offset(self, request: web.Request, name: str, upload_id: str) -> int | None:
        cr = request.headers.get("Content-Range")
        if not cr:
            return None
        m = _RANGE_RE.match(cr.strip())
        if not m or int(m.group(2)) < int(m.group(1)):
            size = self._size(upload_id)
            raise ApiError(416, "BLOB_UPLOAD_INVALID", f"invalid Content-Range {cr!r}",
                           self._upload_headers(name, upload_id, size))
        start, end = int(m.group(1)), int(m.group(2))
        if request.content_length is not None and request.content_length != end - start + 1:
            raise ApiError(416, "BLOB_UPLOAD_INVALID", "Content-Range does not match Content-Length",
                           self._upload_headers(name, upload_id, self._size(upload_id)))
        return start

    def _size(self, upload_id: str) -> int:
        try:
            return self.reg.storage.upload_size(upload_id)
        except NotFound:
            raise ApiError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry") from None

    async def patch_upload(self, request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "push")
        self._session_repo(g, name, upload_id)
        offset = self._offset(request, name, upload_id)
        try:
            size = await self._receive(request, upload_id, offset)
        except OffsetMismatch as e:
            raise ApiError(416, "BLOB_UPLOAD_INVALID", f"upload is at offset {e.size}",
                           self._upload_headers(name, upload_id, e.size)) from None
        return web.Response(status=202, headers=self._upload_headers(name, upload_id, size))

    def _commit(self, repo: Repo, upload_id: str, digest: str) -> None:
        try:
            self.reg.commit_upload(repo, upload_id, digest)
        except DataCorruption as e:
            self.reg.index.delete_upload(upload_id)
            raise ApiError(400, "DIGEST_INVALID", str(e)) from None
        except OffsetMismatch:
            raise ApiError(416, "BLOB_UPLOAD_INVALID", "upload is busy") from None
        except NotFound:
            raise ApiError(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry") from None

    async def put_upload(self, request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "push")
        repo = self._session_repo(g, name, upload_id)
        digest = request.query.get("digest")
        if not digest or not is_digest(digest):
            raise ApiError(400, "DIGEST_INVALID", f"invalid or missing digest: {digest!r}")
        has_body = (request.content_length or 0) > 0 or request.headers.get("Transfer-Encoding") == "chunked"
        if has_body:
            offset = self._offset(request, name, upload_id)
            try:
                await self._receive(request, upload_id, offset)
            except OffsetMismatch as e:
                raise ApiError(416, "BLOB_UPLOAD_INVALID", f"upload is at offset {e.size}",
                               self._upload_headers(name, upload_id, e.size)) from None
        self._commit(repo, upload_id, digest)
        return web.Response(status=201, headers=_hdr(Location=f"/v2/{name}/blobs/{digest}",
                                                     Docker_Content_Digest=digest, Content_Length="0"))

    async def upload_status(self, request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "push")
        self._session_repo(g, name, upload_id)
        size = self._size(upload_id)
        return web.Response(status=204, headers=self._upload_headers(name, upload_id, size))

    async def cancel_upload(self, request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
        g = authorize(self.reg, request, name, "push")
        self._session_repo(g, name, upload_id)
        self._drop(upload_id)
        return web.Response(status=204, headers=_hdr(Content_Length="0"))
