"""The two ways admin commands reach a registry: offline on its --root (``Local``) or over the management
API (``Remote``). Both offer the same methods and return plain data, so the CLI prints them the same way.

Offline use is safe while a server runs on the same root: the index takes SQLite write locks per
transaction, and the storage operations follow the same crash- and race-safe protocol as the server's.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from matou.errors import Conflict, Forbidden, InvalidArgument, MatouError, NotFound, Unauthorized, Unavailable


class Admin(Protocol):
    def user_add(self, name: str, password: str, admin: bool) -> None: ...
    def user_rm(self, name: str) -> None: ...
    def user_passwd(self, name: str, password: str) -> None: ...
    def user_ls(self) -> list[dict[str, Any]]: ...
    def org_add(self, name: str) -> None: ...
    def org_rm(self, name: str) -> None: ...
    def org_member(self, org: str, user: str, role: str | None) -> None: ...
    def repo_create(self, name: str, visibility: str | None, description: str, owner: str | None) -> dict[str, Any]: ...
    def repo_ls(self, query: str) -> list[dict[str, Any]]: ...
    def repo_set(self, name: str, visibility: str | None, description: str | None,
                 immutable_tags: list[str] | None, owner: str | None) -> dict[str, Any]: ...
    def repo_rm(self, name: str) -> None: ...
    def repo_member(self, name: str, user: str, role: str | None) -> None: ...
    def gc(self, dry_run: bool, grace: float | None, delete_untagged: bool | None) -> dict[str, Any]: ...
    def close(self) -> None: ...


class Local:
    def __init__(self, cfg: Any) -> None:
        from matou.registry.core import Registry

        self.reg = Registry(cfg)

    def close(self) -> None:
        self.reg.close()

    def user_add(self, name: str, password: str, admin: bool) -> None:
        self.reg.add_user(None, name, password, admin)

    def user_rm(self, name: str) -> None:
        self.reg.remove_user(None, name)

    def user_passwd(self, name: str, password: str) -> None:
        self.reg.set_password(None, name, password)

    def user_ls(self) -> list[dict[str, Any]]:
        return [{"name": a.name, "admin": a.is_admin, "created": a.created}
                for a in self.reg.index.list_accounts("user")]

    def org_add(self, name: str) -> None:
        self.reg.add_org(None, name)

    def org_rm(self, name: str) -> None:
        self.reg.remove_org(None, name)

    def org_member(self, org: str, user: str, role: str | None) -> None:
        self.reg.org_member(None, org, user, role)

    def repo_create(self, name: str, visibility: str | None, description: str, owner: str | None) -> dict[str, Any]:
        return self.reg.create_repo(None, name, visibility, description, owner).to_json()

    def repo_ls(self, query: str) -> list[dict[str, Any]]:
        _, repos = self.reg.index.search(self.reg.viewer(None), query, 1_000_000, 0)
        return [r.to_json() for r in sorted(repos, key=lambda r: r.name)] if not query else [r.to_json() for r in repos]

    def repo_set(self, name: str, visibility: str | None, description: str | None,
                 immutable_tags: list[str] | None, owner: str | None) -> dict[str, Any]:
        return self.reg.update_repo(None, name, visibility=visibility, description=description,
                                    immutable_tags=immutable_tags, owner=owner).to_json()

    def repo_rm(self, name: str) -> None:
        self.reg.remove_repo(None, name)

    def repo_member(self, name: str, user: str, role: str | None) -> None:
        self.reg.repo_member(None, name, user, role)

    def gc(self, dry_run: bool, grace: float | None, delete_untagged: bool | None) -> dict[str, Any]:
        from matou.registry.gc import collect

        return collect(self.reg, dry_run=dry_run, grace=grace, delete_untagged=delete_untagged).to_json()


_STATUS_ERRORS: dict[int, type[MatouError]] = {400: InvalidArgument, 401: Unauthorized, 403: Forbidden,
                                               404: NotFound, 409: Conflict}


class Remote:
    """The management API over HTTP(S), with Basic credentials (``user:password``) if given."""

    def __init__(self, url: str, creds: str | None = None, insecure: bool = False) -> None:
        self.base = url.rstrip("/")
        if "://" not in self.base:
            self.base = "http://" + self.base
        self.headers = {"Accept": "application/json"}
        if creds:
            self.headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
        self.ctx = ssl._create_unverified_context() if insecure else None  # noqa: S323 - the user asked for it

    def close(self) -> None:
        pass

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + "/api/v1/" + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=600) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                msg = json.loads(raw).get("message") or raw.decode()
            except (ValueError, AttributeError):
                msg = raw.decode(errors="replace") or e.reason
            raise _STATUS_ERRORS.get(e.code, MatouError)(msg) from None
        except (urllib.error.URLError, OSError) as e:
            raise Unavailable(f"cannot reach the registry at {self.base}: {getattr(e, 'reason', e)}") from None
        return json.loads(raw) if raw else None

    def user_add(self, name: str, password: str, admin: bool) -> None:
        self._call("POST", "users", {"name": name, "password": password, "admin": admin})

    def user_rm(self, name: str) -> None:
        self._call("DELETE", f"users/{quote(name)}")

    def user_passwd(self, name: str, password: str) -> None:
        self._call("PUT", f"users/{quote(name)}/password", {"password": password})

    def user_ls(self) -> list[dict[str, Any]]:
        return self._call("GET", "users")

    def org_add(self, name: str) -> None:
        self._call("POST", "orgs", {"name": name})

    def org_rm(self, name: str) -> None:
        self._call("DELETE", f"orgs/{quote(name)}")

    def org_member(self, org: str, user: str, role: str | None) -> None:
        if role is None:
            self._call("DELETE", f"orgs/{quote(org)}/members/{quote(user)}")
        else:
            self._call("PUT", f"orgs/{quote(org)}/members/{quote(user)}", {"role": role})

    def repo_create(self, name: str, visibility: str | None, description: str, owner: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "description": description}
        if visibility:
            body["visibility"] = visibility
        if owner:
            body["owner"] = owner
        return self._call("POST", "repositories", body)

    def repo_ls(self, query: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            res = self._call("GET", "repositories?" + urlencode({"q": query, "n": 1000, "page": page}))
            out.extend(res["repositories"])
            if len(out) >= res["total"] or not res["repositories"]:
                return out
            page += 1

    def repo_set(self, name: str, visibility: str | None, description: str | None,
                 immutable_tags: list[str] | None, owner: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for k, v in (("visibility", visibility), ("description", description), ("immutable_tags", immutable_tags),
                     ("owner", owner)):
            if v is not None:
                body[k] = v
        return self._call("PATCH", f"repositories/{quote(name, safe='/')}", body)

    def repo_rm(self, name: str) -> None:
        self._call("DELETE", f"repositories/{quote(name, safe='/')}")

    def repo_member(self, name: str, user: str, role: str | None) -> None:
        path = f"repositories/{quote(name, safe='/')}/-/members/{quote(user)}"
        if role is None:
            self._call("DELETE", path)
        else:
            self._call("PUT", path, {"role": role})

    def gc(self, dry_run: bool, grace: float | None, delete_untagged: bool | None) -> dict[str, Any]:
        body: dict[str, Any] = {"dry_run": dry_run}
        if grace is not None:
            body["grace"] = grace
        if delete_untagged is not None:
            body["delete_untagged"] = delete_untagged
        return self._call("POST", "gc", body)
