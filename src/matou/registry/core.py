"""The registry's operations, shared by the HTTP API and the offline CLI (which runs them on a --root directly).

``Registry`` wires configuration, storage driver, index, password and token services and the policy.
Administrative methods take an ``actor``: None means the operator working on the root offline (full rights),
a Subject means a request through the management API (checked against the policy). Distribution methods
(manifests, uploads, mounts) keep the ordering rules that make crashes harmless: blob rows before blob
files, manifest bytes before manifest rows, manifest rows before tags (one transaction).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

from matou.errors import Conflict, Forbidden, InvalidArgument, NotFound
from matou.registry import manifests as manifest_rules
from matou.registry.auth.acl import ALL, Authorizer, Policy, Subject
from matou.registry.auth.identity import Authenticator
from matou.registry.auth.passwords import Passwords
from matou.registry.auth.tokens import TokenService
from matou.registry.config import RegistryConfig
from matou.registry.index import ROLES, Index, ManifestRow, Repo
from matou.registry.names import check_account, check_name, check_tag, namespace_of
from matou.registry.storage import StorageDriver, open_driver
from matou.types.digest import Digest

_MANIFEST_CACHE_BYTES = 8 * 1024 * 1024


class RepoNotFound(NotFound):
    """NAME_UNKNOWN: also what a private repository looks like to those who may not see it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"repository name not known to registry: {name}")


@dataclass(frozen=True, slots=True)
class PutResult:
    digest: str
    subject: str | None


class _ManifestCache:
    """Manifest bytes by digest (immutable content, so never stale), bounded by total size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._d: OrderedDict[str, bytes] = OrderedDict()

    def get(self, digest: str) -> bytes | None:
        v = self._d.get(digest)
        if v is not None:
            self._d.move_to_end(digest)
        return v

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.limit // 8 or digest in self._d:
            return
        self._d[digest] = data
        self.used += len(data)
        while self.used > self.limit:
            _, old = self._d.popitem(last=False)
            self.used -= len(old)


class Registry:
    def __init__(self, cfg: RegistryConfig) -> None:
        self.cfg = cfg
        os.makedirs(cfg.root, mode=0o755, exist_ok=True)
        self.storage: StorageDriver = open_driver(cfg.root)
        self.index = Index(cfg.index_path)
        self.passwords = Passwords()
        a = cfg.auth
        self.tokens = TokenService(os.path.join(cfg.root, "keys"), a.issuer, a.service, a.token_ttl, a.refresh_ttl)
        self.policy = Policy(a.anonymous_pull, a.anonymous_push, a.default_visibility)
        self.authz = Authorizer(self.index, self.policy)
        self.authn = Authenticator(self.index, self.passwords, self.tokens, a.htpasswd)
        self.manifest_cache = _ManifestCache(_MANIFEST_CACHE_BYTES)
        self.pulls: dict[int, int] = {}

    def close(self) -> None:
        self.flush_pulls()
        self.index.close()
        self.storage.close()

    # users and organisations
    def _require_admin(self, actor: Subject | None) -> None:
        if actor is not None and not actor.is_admin:
            raise Forbidden("only registry administrators may do this")

    def add_user(self, actor: Subject | None, name: str, password: str, admin: bool = False) -> None:
        self._require_admin(actor)
        check_account(name)
        if not password:
            raise InvalidArgument("a password is required")
        self.index.create_account(name, "user", self.passwords.hash(password), admin)

    def remove_user(self, actor: Subject | None, name: str) -> None:
        self._require_admin(actor)
        acct = self.index.get_account(name)
        if acct is None or acct.kind != "user":
            raise NotFound(f"no such user: {name}")
        self.index.delete_account(name)

    def set_password(self, actor: Subject | None, name: str, password: str) -> None:
        if actor is not None and not actor.is_admin and actor.name != name:
            raise Forbidden("you may change only your own password")
        if not password:
            raise InvalidArgument("a password is required")
        self.index.set_password(name, self.passwords.hash(password))

    def set_admin(self, actor: Subject | None, name: str, admin: bool) -> None:
        self._require_admin(actor)
        self.index.set_admin(name, admin)

    def add_org(self, actor: Subject | None, name: str) -> None:
        if actor is not None and actor.anonymous:
            raise Forbidden("log in to create an organisation")
        check_account(name)
        org = self.index.create_account(name, "org")
        if actor is not None:
            self.index.set_org_member(org.id, actor.user_id, "admin")  # type: ignore[arg-type]

    def remove_org(self, actor: Subject | None, name: str) -> None:
        org = self._org(name)
        self._require_org_admin(actor, org.id, name)
        self.index.delete_account(name)

    def _org(self, name: str):  # noqa: ANN202
        acct = self.index.get_account(name)
        if acct is None or acct.kind != "org":
            raise NotFound(f"no such organisation: {name}")
        return acct

    def _require_org_admin(self, actor: Subject | None, org_id: int, name: str) -> None:
        if actor is None or actor.is_admin:
            return
        if actor.anonymous or self.index.org_role(name, actor.user_id) != "admin":  # type: ignore[arg-type]
            raise Forbidden(f"only administrators of {name} may do this")

    def org_member(self, actor: Subject | None, org: str, user: str, role: str | None) -> None:
        acct = self._org(org)
        self._require_org_admin(actor, acct.id, org)
        if role is not None and role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        u = self.index.get_account(user)
        if u is None or u.kind != "user":
            raise NotFound(f"no such user: {user}")
        self.index.set_org_member(acct.id, u.id, role)

    # repositories
    def visible_repo(self, actor: Subject | None, name: str) -> tuple[Repo, frozenset[str]]:
        """The repository and the actor's actions on it; RepoNotFound if missing or not pullable by the actor."""
        if actor is None:
            repo = self.index.get_repo(name)
            if repo is None:
                raise RepoNotFound(name)
            return repo, ALL
        acts, access = self.authz.check(actor, name)
        if access.repo is None or "pull" not in acts:
            raise RepoNotFound(name)
        return access.repo, acts

    def create_repo(self, actor: Subject | None, name: str, visibility: str | None = None, description: str = "",
                    owner: str | None = None) -> Repo:
        check_name(name)
        if actor is not None:
            acts, access = self.authz.check(actor, name)
            if access.repo is not None:
                if "pull" not in acts:
                    raise Forbidden(f"you may not create {name}")
                raise Conflict(f"repository {name!r} already exists")
            if "push" not in acts:
                raise Forbidden(f"you may not create repositories in {namespace_of(name) or 'the top level'}")
            if owner is not None and not actor.is_admin:
                raise Forbidden("only administrators may choose a repository's owner")
        if owner is not None:
            acct = self.index.get_account(owner)
            if acct is None:
                raise NotFound(f"no such account: {owner}")
            owner_id: int | None = acct.id
        else:
            owner_id = self.authz.owner_for_new(actor or Subject(), name)
        vis = visibility or (self.authz.visibility_for_new(actor, owner_id) if actor else self.policy.default_visibility)
        return self.index.create_repo(name, owner_id, vis, description)

    def _managed_repo(self, actor: Subject | None, name: str) -> Repo:
        repo, acts = self.visible_repo(actor, name)
        if actor is not None and acts != ALL:
            raise Forbidden(f"only the owner and admin members may change {name}")
        return repo

    def update_repo(self, actor: Subject | None, name: str, *, visibility: str | None = None,
                    description: str | None = None, immutable_tags: list[str] | None = None,
                    owner: str | None = None) -> Repo:
        self._managed_repo(actor, name)
        owner_id = None
        if owner is not None:
            self._require_admin(actor)
            acct = self.index.get_account(owner)
            if acct is None:
                raise NotFound(f"no such account: {owner}")
            owner_id = acct.id
        return self.index.update_repo(name, visibility=visibility, description=description,
                                      immutable_tags=immutable_tags, owner_id=owner_id)

    def remove_repo(self, actor: Subject | None, name: str) -> None:
        self._managed_repo(actor, name)
        self.index.delete_repo(name)

    def repo_member(self, actor: Subject | None, name: str, user: str, role: str | None) -> None:
        repo = self._managed_repo(actor, name)
        if role is not None and role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        u = self.index.get_account(user)
        if u is None or u.kind != "user":
            raise NotFound(f"no such user: {user}")
        self.index.set_member(repo.id, u.id, role)

    def star(self, actor: Subject, name: str, starred: bool) -> None:
        if actor.anonymous:
            raise Forbidden("log in to star repositories")
        repo, _ = self.visible_repo(actor, name)
        self.index.set_star(repo.id, actor.user_id, starred)  # type: ignore[arg-type]

    def viewer(self, actor: Subject | None):  # noqa: ANN201
        from matou.registry.index import Viewer

        if actor is None:
            return Viewer(None, True, True)
        return Viewer(actor.user_id, actor.is_admin, self.policy.anonymous_pull or self.policy.anonymous_push)

    # distribution helpers
    def ensure_repo(self, subject: Subject, name: str, repo: Repo | None) -> Repo:
        """The repository a push writes to, created on first use with the configured default visibility."""
        if repo is not None:
            return repo
        owner_id = self.authz.owner_for_new(subject, name)
        return self.index.create_repo(name, owner_id, self.authz.visibility_for_new(subject, owner_id), exist_ok=True)

    def read_manifest(self, row: ManifestRow) -> bytes:
        data = self.manifest_cache.get(row.digest)
        if data is None:
            data = self.storage.read_blob(row.digest)
            self.manifest_cache.put(row.digest, data)
        return data

    def put_manifest(self, repo: Repo, reference: str, raw: bytes, content_type: str | None) -> PutResult:
        if len(raw) > self.cfg.limits.max_manifest_bytes:
            raise _TooLarge(f"manifest is larger than {self.cfg.limits.max_manifest_bytes} bytes")
        info = manifest_rules.analyse(raw, content_type)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        tag: str | None = None
        if ":" in reference:
            want = Digest.parse(reference)
            got = Digest.of(raw, want.algorithm)
            if got != want:
                raise DigestMismatch(f"manifest content does not match digest {reference}")
            digest = reference
        else:
            tag = check_tag(reference)
        for child, kind, _ in info.refs:
            if kind == "blob" and self.storage.stat_blob(child) is None:
                from matou.registry.index import MissingRef

                raise MissingRef(child, kind)
        self.storage.put_blob(digest, raw, lambda size: self.index.record_blob(digest, size, repo.id))
        self.index.put_manifest(repo.id, digest, info.media_type, len(raw), artifact_type=info.artifact_type,
                                subject=info.subject, annotations=info.annotations, refs=info.refs, tag=tag,
                                immutable=repo.immutable_tags)
        self.manifest_cache.put(digest, raw)
        return PutResult(digest, info.subject)

    def commit_upload(self, repo: Repo, upload_id: str, digest: str) -> int:
        Digest.parse(digest)
        size = self.storage.commit_upload(upload_id, digest,
                                          lambda size: self.index.record_blob(digest, size, repo.id))
        self.index.delete_upload(upload_id)
        return size

    def count_pull(self, repo_id: int) -> None:
        self.pulls[repo_id] = self.pulls.get(repo_id, 0) + 1

    def flush_pulls(self) -> None:
        counts, self.pulls = self.pulls, {}
        if counts:
            self.index.add_pulls(counts)

    def blob_in_repo(self, repo_id: int, digest: str) -> int | None:
        """The size of a blob linked into the repository whose bytes are present; None otherwise."""
        if self.index.repo_blob_size(repo_id, digest) is None:
            return None
        return self.storage.stat_blob(digest)


class DigestMismatch(InvalidArgument):
    """DIGEST_INVALID."""


class _TooLarge(InvalidArgument):
    """413 for a manifest over the size limit."""


TooLarge = _TooLarge
