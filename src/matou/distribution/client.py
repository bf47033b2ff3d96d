"""The registry client: endpoints probed once, authenticated requests, and the OCI distribution calls.

``Registries`` is long-lived (one per daemon): it owns the HTTP connection pool, the token cache and what each
host answered to ``GET /v2/`` (its scheme and auth challenge). ``Repository`` is cheap and made per operation for
one repository, one set of credentials and the actions it needs (``pull`` or ``pull,push``).

Every call raises matou's error categories: NotFound (404), Unauthorized (401), Forbidden (403), Unavailable
(network, 5xx, 429), DataCorruption (a digest that does not match), InvalidArgument (what the registry refused).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote, urlencode, urljoin

from matou.distribution.auth import Challenge, Credentials, TokenCache, fetch_token, parse_challenges, scope
from matou.distribution.endpoints import Endpoint, RegistrySettings
from matou.distribution.http import FileBody, HTTPClient, Response, error_text
from matou.errors import DataCorruption, Forbidden, InvalidArgument, NotFound, Unauthorized, Unavailable
from matou.types import oci
from matou.types.digest import Digest, is_digest

MANIFEST_LIMIT = 4 << 20
ACCEPT_MANIFESTS = ", ".join((oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST,
                              oci.DOCKER_MANIFEST_V1_SIGNED + ";q=0.5"))


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What ``GET /v2/`` told us: the base URL that works and the auth challenge (None: no auth needed)."""

    base: str
    verify: bool
    challenge: Challenge | None


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: str


def _pick(challenges: list[Challenge]) -> Challenge | None:
    for want in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == want:
                return c
    return None


class Registries:
    """Shared state for talking to registries; thread-safe."""

    def __init__(self, settings: RegistrySettings | None = None, http: HTTPClient | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.http = http or HTTPClient()
        self.tokens = TokenCache()
        self._hosts: dict[tuple[str, str], HostInfo] = {}
        self._lock = threading.Lock()

    def host(self, ep: Endpoint, refresh: bool = False) -> HostInfo:
        key = (ep.host, ep.path)
        if not refresh:
            with self._lock:
                info = self._hosts.get(key)
            if info is not None:
                return info
        info = self._probe(ep)
        with self._lock:
            self._hosts[key] = info
        return info

    def learn(self, ep: Endpoint, info: HostInfo) -> None:
        with self._lock:
            self._hosts[(ep.host, ep.path)] = info

    def forget(self, ep: Endpoint) -> None:
        with self._lock:
            self._hosts.pop((ep.host, ep.path), None)

    def _probe(self, ep: Endpoint) -> HostInfo:
        problems: list[str] = []
        for scheme in ep.schemes:
            base = f"{scheme}://{ep.host}{ep.path}"
            verify = ep.verify if scheme == "https" else True
            try:
                resp = self.http.request("GET", base + "/v2/", verify=verify)
            except Unavailable as e:
                problems.append(str(e))
                continue
            with resp:
                if resp.status == 401:
                    return HostInfo(base, verify, _pick(parse_challenges(resp.headers_all("WWW-Authenticate"))))
                if resp.status < 300:
                    return HostInfo(base, verify, None)
                problems.append(f"GET {base}/v2/: {resp.status} {error_text(resp) or resp.reason}")
        raise Unavailable("; ".join(problems) or f"cannot reach registry {ep.host}")

    def client(self, ep: Endpoint, creds: Credentials | None = None) -> RegistryClient:
        return RegistryClient(self, ep, Credentials() if ep.mirror or creds is None else creds)

    def repository(self, ep: Endpoint, name: str, creds: Credentials | None = None,
                   push: bool = False) -> Repository:
        return Repository(self.client(ep, creds), name, push)

    def close(self) -> None:
        self.http.close()


class RegistryClient:
    """Authenticated requests to one endpoint with one set of credentials."""

    def __init__(self, registries: Registries, ep: Endpoint, creds: Credentials) -> None:
        self.registries = registries
        self.endpoint = ep
        self.creds = creds
        self.http = registries.http

    @property
    def info(self) -> HostInfo:
        return self.registries.host(self.endpoint)

    def _token_key(self, ch: Challenge, scopes: tuple[str, ...]) -> tuple[str, str, str, tuple[str, ...]]:
        return (ch.realm, ch.params.get("service", ""), self.creds.key, tuple(sorted(scopes)))

    def authorization(self, info: HostInfo, scopes: tuple[str, ...]) -> str | None:
        if self.creds.registry_token:
            return "Bearer " + self.creds.registry_token
        ch = info.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return self.creds.basic()
        if ch.scheme != "bearer":
            return None
        key = self._token_key(ch, scopes)
        tok = self.registries.tokens.get(key)
        if tok is None:
            tok = fetch_token(self.http, ch, self.creds, scopes, verify=info.verify)
            self.registries.tokens.put(key, tok)
        return "Bearer " + tok.token

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.info.base + path

    def request(self, method: str, path: str, scopes: tuple[str, ...], headers: dict[str, str] | None = None,
                body: bytes | FileBody | None = None) -> Response:
        """One request with credentials for ``scopes``; a 401 is retried once with a fresh challenge and token."""
        info = self.info
        url = self.url(path)
        hdrs = dict(headers or {})
        auth = self.authorization(info, scopes)
        if auth:
            hdrs["Authorization"] = auth
        resp = self.http.request(method, url, hdrs, body, verify=info.verify)
        if resp.status != 401:
            return resp
        ch = _pick(parse_challenges(resp.headers_all("WWW-Authenticate")))
        resp.close()
        if ch is None:
            return self.http.request(method, url, hdrs, body, verify=info.verify)
        old = info.challenge
        if old is not None and old.scheme == "bearer":
            self.registries.tokens.drop(self._token_key(old, scopes))
        info = HostInfo(info.base, info.verify, ch)
        self.registries.learn(self.endpoint, info)
        wanted = ch.params.get("scope")
        if ch.scheme == "bearer" and wanted:
            scopes = tuple(dict.fromkeys(scopes + tuple(wanted.split())))
        auth = self.authorization(info, scopes)
        if auth:
            hdrs["Authorization"] = auth
        else:
            hdrs.pop("Authorization", None)
        if isinstance(body, FileBody):
            pass  # the file is re-read from its offset
        return self.http.request(method, url, hdrs, body, verify=info.verify)

    def fail(self, resp: Response, what: str) -> NoReturn:
        text = error_text(resp)
        resp.close()
        s = resp.status
        if s == 401:
            raise Unauthorized(f"{what}: unauthorized: {text or 'authentication required'}")
        if s == 403:
            raise Forbidden(f"{what}: denied: {text or 'requested access to the resource is denied'}")
        if s == 404:
            raise NotFound(f"{what}: {text or 'not found'}")
        if s == 429 or s >= 500:
            raise Unavailable(f"{what}: {s} {text or resp.reason}")
        raise InvalidArgument(f"{what}: {s} {text or resp.reason}")

    def check_login(self) -> str:
        """Verify the credentials against ``/v2/``; returns a refresh token when the registry offers one."""
        info = self.registries.host(self.endpoint, refresh=True)
        ch = info.challenge
        refresh = ""
        headers: dict[str, str] = {}
        if ch is not None and ch.scheme == "bearer":
            tok = fetch_token(self.http, ch, self.creds, (), verify=info.verify, offline=True)
            refresh = tok.refresh_token
            headers["Authorization"] = "Bearer " + tok.token
        elif ch is not None and ch.scheme == "basic":
            basic = self.creds.basic()
            if basic is None:
                raise Unauthorized("unauthorized: a user name and password are required")
            headers["Authorization"] = basic
        resp = self.http.request("GET", info.base + "/v2/", headers, verify=info.verify)
        with resp:
            if resp.status == 401:
                raise Unauthorized(f"unauthorized: {error_text(resp) or 'incorrect username or password'}")
            if resp.status >= 300:
                self.fail(resp, f"login to {self.endpoint.host}")
        return refresh

    def search(self, term: str, limit: int, authenticate: bool = True) -> dict[str, object]:
        """Docker Hub's ``GET /v1/search`` shape. Without ``authenticate`` (Docker Hub's index, which ignores
        credentials) the request goes straight out over HTTPS, with no ``/v2/`` probe and no token."""
        q = urlencode({"q": term, "n": str(limit)})
        if authenticate:
            resp = self.request("GET", f"/v1/search?{q}", ("registry:catalog:search",))
        else:
            resp = self.http.request("GET", f"https://{self.endpoint.host}/v1/search?{q}")
        with resp:
            if resp.status == 404:
                resp.close()
                raise NotFound(f"{self.endpoint.host} does not support search")
            if resp.status != 200:
                self.fail(resp, f"search on {self.endpoint.host}")
            try:
                d = json.loads(resp.read(16 << 20))
            except ValueError:
                raise Unavailable(f"search on {self.endpoint.host}: invalid JSON") from None
        if not isinstance(d, dict):
            raise Unavailable(f"search on {self.endpoint.host}: unexpected answer")
        return d


class Repository:
    """The distribution API of one repository."""

    def __init__(self, client: RegistryClient, name: str, push: bool = False) -> None:
        self.client = client
        self.name = name
        self.push = push
        self.scopes = (scope(name, ("pull", "push") if push else ("pull",)),)

    @property
    def endpoint(self) -> Endpoint:
        return self.client.endpoint

    def _req(self, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes | FileBody | None = None, scopes: tuple[str, ...] | None = None) -> Response:
        return self.client.request(method, path, scopes or self.scopes, headers, body)

    # ------------------------------------------------------------------ manifests
    def get_manifest(self, reference: str) -> FetchedManifest:
        resp = self._req("GET", f"/v2/{self.name}/manifests/{reference}", {"Accept": ACCEPT_MANIFESTS})
        if resp.status != 200:
            self.client.fail(resp, f"manifest {self.name}:{reference}")
        with resp:
            raw = resp.read(MANIFEST_LIMIT)
            declared = (resp.header("Content-Type") or "").split(";")[0].strip() or None
            header_digest = resp.header("Docker-Content-Digest")
        media_type = oci.detect_media_type(raw, declared)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if is_digest(reference):
            want = Digest.parse(reference)
            got = digest if want.algorithm == "sha256" else f"{want.algorithm}:{hashlib.new(want.algorithm, raw).hexdigest()}"
            if got != reference:
                raise DataCorruption(f"manifest digest mismatch: asked for {reference}, got {got}")
            digest = reference
        elif header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise DataCorruption(f"manifest digest mismatch: the registry says {header_digest}, content is {digest}")
        return FetchedManifest(raw, media_type, digest)

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> str:
        resp = self._req("PUT", f"/v2/{self.name}/manifests/{reference}", {"Content-Type": media_type}, raw)
        if resp.status not in (200, 201, 202):
            self.client.fail(resp, f"pushing manifest {self.name}:{reference}")
        resp.close()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        got = resp.header("Docker-Content-Digest")
        if got and got.startswith("sha256:") and got != digest:
            raise DataCorruption(f"the registry stored the manifest as {got}, its content is {digest}")
        return digest

    def tags(self) -> list[str]:
        out: list[str] = []
        path: str | None = f"/v2/{self.name}/tags/list?n=1000"
        seen = 0
        while path and seen < 1000:
            seen += 1
            resp = self._req("GET", path)
            if resp.status != 200:
                self.client.fail(resp, f"listing tags of {self.name}")
            with resp:
                d = json.loads(resp.read(32 << 20) or b"{}")
                link = resp.header("Link")
            out.extend(str(t) for t in d.get("tags") or [])
            path = None
            if link and 'rel="next"' in link and "<" in link:
                path = link[link.index("<") + 1:link.index(">")]
        return out

    # ------------------------------------------------------------------ blobs
    def blob_size(self, digest: str) -> int | None:
        """HEAD a blob: its size, or None when the repository lacks it."""
        resp = self._req("HEAD", f"/v2/{self.name}/blobs/{digest}")
        with resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                self.client.fail(resp, f"checking blob {digest}")
            return resp.length if resp.length is not None else -1

    def open_blob(self, digest: str, offset: int = 0) -> tuple[Response, int]:
        """GET a blob from ``offset`` (HTTP Range). Returns the response and the offset it really starts at."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._req("GET", f"/v2/{self.name}/blobs/{digest}", headers)
        if offset and resp.status == 416:
            resp.close()
            return self.open_blob(digest, 0)
        if resp.status == 206 and offset:
            cr = resp.header("Content-Range") or ""
            try:
                start = int(cr.split()[1].split("-")[0])
            except (IndexError, ValueError):
                start = -1
            if start == offset:
                return resp, offset
            resp.close()
            return self.open_blob(digest, 0)
        if resp.status == 200:
            return resp, 0
        self.client.fail(resp, f"fetching blob {digest}")

    def read_blob(self, digest: str, limit: int) -> bytes:
        resp, _ = self.open_blob(digest)
        with resp:
            data = resp.read(limit)
        d = Digest.parse(digest)
        if hashlib.new(d.algorithm, data).hexdigest() != d.hex:
            raise DataCorruption(f"blob {digest} does not match its digest")
        return data

    def start_upload(self, mount: str | None = None, from_repo: str | None = None) -> str | None:
        """POST an upload session; with ``mount``/``from_repo`` try a cross-repository mount first.
        Returns the upload URL, or None when the blob was mounted."""
        path = f"/v2/{self.name}/blobs/uploads/"
        scopes = self.scopes
        if mount and from_repo:
            path += "?" + urlencode({"mount": mount, "from": from_repo})
            scopes = self.scopes + (scope(from_repo, ("pull",)),)
        resp = self._req("POST", path, scopes=scopes)
        with resp:
            if resp.status == 201 and mount:
                return None
            if resp.status != 202:
                self.client.fail(resp, f"starting an upload to {self.name}")
            loc = resp.header("Location")
        if not loc:
            raise Unavailable(f"the registry started an upload to {self.name} without a Location")
        return urljoin(self.client.url(path), loc)

    def upload(self, location: str, body: FileBody, digest: str, *, chunk_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> None:
        """Finish an upload session with the blob's bytes: one PUT, or PATCH chunks then PUT when chunk_size
        is set (a failed chunk is retried from where the registry says it stands)."""
        if chunk_size is None or body.size <= chunk_size:
            resp = self._req("PUT", _with_digest(location, digest), {"Content-Type": "application/octet-stream"},
                             FileBody(body.file, body.offset, body.size, progress))
            if resp.status not in (201, 204):
                self.client.fail(resp, f"uploading blob {digest}")
            resp.close()
            return
        pos = 0
        failures = 0
        while pos < body.size:
            n = min(chunk_size, body.size - pos)
            done = pos

            def piece(k: int, base: int = done) -> None:
                if progress:
                    progress(base + k)

            try:
                resp = self._req("PATCH", location, {"Content-Type": "application/octet-stream",
                                                     "Content-Range": f"{pos}-{pos + n - 1}"},
                                 FileBody(body.file, body.offset + pos, n, piece))
            except Unavailable:
                failures += 1
                if failures > 3:
                    raise
                pos = self._upload_offset(location)
                continue
            if resp.status not in (202, 204):
                self.client.fail(resp, f"uploading blob {digest}")
            resp.close()
            loc = resp.header("Location")
            if loc:
                location = urljoin(location, loc)
            pos += n
        resp = self._req("PUT", _with_digest(location, digest))
        if resp.status not in (201, 204):
            self.client.fail(resp, f"finishing the upload of blob {digest}")
        resp.close()

    def _upload_offset(self, location: str) -> int:
        resp = self._req("GET", location)
        with resp:
            if resp.status not in (202, 204):
                self.client.fail(resp, "querying an upload")
            rng = resp.header("Range") or ""
        try:
            return int(rng.split("-")[1]) + 1 if "-" in rng else 0
        except ValueError:
            return 0


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + "digest=" + quote(digest, safe=":")
