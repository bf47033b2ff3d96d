"""The registry index: accounts, repositories, members, tags, manifests and blob references (SQLAlchemy Core).

SQLite (WAL) today, written in portable Core so PostgreSQL can follow; the only dialect-specific pieces are
the upserts (both dialects share ``ON CONFLICT``) and SQLite's connection pragmas. Several processes may
open the same database at once (the server, offline admin commands, later replicas): writes run in
``BEGIN IMMEDIATE`` transactions, reads are single statements.

Schema (times are UNIX seconds as floats):

    accounts        id PK, name UNIQUE, kind 'user'|'org', password_hash (argon2; NULL for orgs),
                    is_admin, token_version (bumped on password change: refresh tokens die), created
    org_members     org_id, user_id -> accounts, role 'read'|'write'|'admin'          PK(org_id, user_id)
    repositories    id PK, name UNIQUE, owner_id -> accounts (NULL: admins only), visibility 'public'|'private',
                    description, created, pushed, pull_count, star_count, immutable_tags (JSON list of globs)
    repo_members    repo_id, user_id, role 'read'|'write'|'admin'                      PK(repo_id, user_id)
    stars           repo_id, user_id                                                   PK(repo_id, user_id)
    blobs           digest PK, size, touched      (a row is written before the file is published)
    repo_blobs      repo_id, digest, touched      a blob linked into a repository (upload, mount, manifest)
    manifests       repo_id, digest, media_type, size, artifact_type, subject, annotations (JSON), created
                                                                                       PK(repo_id, digest)
    manifest_refs   repo_id, parent, child, kind 'blob'|'manifest'                     PK(repo_id, parent, child)
    tags            repo_id, name, digest, updated                                     PK(repo_id, name)
    uploads         id PK, repo_id, created

Reference counting for garbage collection: a blob is referenced while a ``repo_blobs`` link, a
``manifest_refs`` child or a ``manifests`` row names it; a link is referenced while a manifest of its
repository names it. Data younger than the grace period is never collected (see gc.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from matou.errors import Conflict, Forbidden, InvalidArgument, NotFound

ROLES = ("read", "write", "admin")
VISIBILITIES = ("public", "private")

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("password_hash", sa.Text),
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("token_version", sa.Integer, nullable=False, default=0),
    sa.Column("created", sa.Float, nullable=False),
)
org_members = sa.Table(
    "org_members", metadata,
    sa.Column("org_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(8), nullable=False),
)
repositories = sa.Table(
    "repositories", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="SET NULL")),
    sa.Column("visibility", sa.String(8), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("pushed", sa.Float),
    sa.Column("pull_count", sa.Integer, nullable=False, default=0),
    sa.Column("star_count", sa.Integer, nullable=False, default=0),
    sa.Column("immutable_tags", sa.Text, nullable=False, default="[]"),
)
repo_members = sa.Table(
    "repo_members", metadata,
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(8), nullable=False),
)
stars = sa.Table(
    "stars", metadata,
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
)
blobs = sa.Table(
    "blobs", metadata,
    sa.Column("digest", sa.String(150), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("touched", sa.Float, nullable=False),
)
repo_blobs = sa.Table(
    "repo_blobs", metadata,
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(150), primary_key=True),
    sa.Column("touched", sa.Float, nullable=False),
    sa.Index("ix_repo_blobs_digest", "digest"),
)
manifests = sa.Table(
    "manifests", metadata,
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", sa.String(150), primary_key=True),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("artifact_type", sa.String(255)),
    sa.Column("subject", sa.String(150)),
    sa.Column("annotations", sa.Text),
    sa.Column("created", sa.Float, nullable=False),
    sa.Index("ix_manifests_subject", "repo_id", "subject"),
    sa.Index("ix_manifests_digest", "digest"),
)
manifest_refs = sa.Table(
    "manifest_refs", metadata,
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("parent", sa.String(150), primary_key=True),
    sa.Column("child", sa.String(150), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Index("ix_manifest_refs_child", "child", "repo_id"),
)
tags = sa.Table(
    "tags", metadata,
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("digest", sa.String(150), nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Index("ix_tags_digest", "repo_id", "digest"),
)
uploads = sa.Table(
    "uploads", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("repo_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    kind: str
    password_hash: str | None
    is_admin: bool
    token_version: int
    created: float


@dataclass(frozen=True, slots=True)
class Repo:
    id: int
    name: str
    owner_id: int | None
    visibility: str
    description: str
    created: float
    pushed: float | None
    pull_count: int
    star_count: int
    immutable_tags: tuple[str, ...]
    owner: str | None = None

    @property
    def public(self) -> bool:
        return self.visibility == "public"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "visibility": self.visibility,
                "description": self.description, "created": self.created, "pushed": self.pushed,
                "pull_count": self.pull_count, "star_count": self.star_count,
                "immutable_tags": list(self.immutable_tags)}


@dataclass(frozen=True, slots=True)
class Access:
    """What the policy needs to know about one repository name and one user, read in one query."""

    repo: Repo | None
    member_role: str | None
    org_role: str | None


@dataclass(frozen=True, slots=True)
class ManifestRow:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    subject: str | None
    annotations: dict[str, str] | None
    created: float


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose eyes a listing is for: anonymous (user_id None), a user, or an admin (sees all)."""

    user_id: int | None = None
    is_admin: bool = False
    anonymous_pull: bool = True


_B = sa.bindparam
_REPO_FROM = repositories.outerjoin(accounts, accounts.c.id == repositories.c.owner_id)
# hot-path statements, built once (building a Core expression costs more than running it)
_GET_REPO = sa.select(repositories, accounts.c.name.label("owner_name")).select_from(_REPO_FROM).where(
    repositories.c.name == _B("name"))
_ACCESS = sa.select(
    repositories, accounts.c.name.label("owner_name"),
    sa.select(repo_members.c.role).where(repo_members.c.repo_id == repositories.c.id,
                                         repo_members.c.user_id == _B("uid")).scalar_subquery().label("member_role"),
    sa.select(org_members.c.role).where(org_members.c.org_id == repositories.c.owner_id,
                                        org_members.c.user_id == _B("uid")).scalar_subquery().label("org_role"),
).select_from(_REPO_FROM).where(repositories.c.name == _B("name"))
_RESOLVE_DIGEST = sa.select(manifests).where(manifests.c.repo_id == _B("rid"), manifests.c.digest == _B("ref"))
_RESOLVE_TAG = (sa.select(manifests).join(tags, sa.and_(tags.c.repo_id == manifests.c.repo_id,
                                                        tags.c.digest == manifests.c.digest))
                .where(tags.c.repo_id == _B("rid"), tags.c.name == _B("ref")))
_REPO_BLOB_SIZE = (sa.select(blobs.c.size).join(repo_blobs, repo_blobs.c.digest == blobs.c.digest)
                   .where(repo_blobs.c.repo_id == _B("rid"), repo_blobs.c.digest == _B("digest")))
_ACCOUNT_BY_NAME = sa.select(accounts).where(accounts.c.name == _B("name"))


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _like_escape(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_REPO_COLS = [repositories, accounts.c.name.label("owner_name")]


def _repo(row: Any) -> Repo:
    m = row._mapping
    return Repo(m["id"], m["name"], m["owner_id"], m["visibility"], m["description"] or "", m["created"],
                m["pushed"], m["pull_count"], m["star_count"], tuple(json.loads(m["immutable_tags"] or "[]")),
                m.get("owner_name"))


def _manifest(row: Any) -> ManifestRow:
    m = row._mapping
    return ManifestRow(m["digest"], m["media_type"], m["size"], m["artifact_type"], m["subject"],
                       json.loads(m["annotations"]) if m["annotations"] else None, m["created"])


class Index:
    def __init__(self, url_or_path: str) -> None:
        url = url_or_path if "://" in url_or_path else f"sqlite:///{os.path.abspath(url_or_path)}"
        sqlite = url.startswith("sqlite")
        self.engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {},
            pool_size=4 if sqlite else 5)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._wengine = self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        metadata.create_all(self.engine)
        # the thread that made the index (the server's event loop) reads through one autocommit connection of
        # its own: a pool checkout per query would cost as much as the query
        self._owner = threading.get_ident()
        self._reader: sa.Connection | None = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite: writers queue instead of failing to upgrade)."""
        with self._wengine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        if threading.get_ident() == self._owner:
            if self._reader is None:
                self._reader = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            yield self._reader
            return
        with self.engine.connect() as conn:
            yield conn

    # accounts
    def create_account(self, name: str, kind: str, password_hash: str | None = None, is_admin: bool = False) -> Account:
        with self.write() as c:
            if c.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).first():
                raise Conflict(f"account {name!r} already exists")
            c.execute(accounts.insert().values(name=name, kind=kind, password_hash=password_hash,
                                               is_admin=is_admin, token_version=0, created=time.time()))
        acct = self.get_account(name)
        assert acct is not None
        return acct

    def get_account(self, name: str) -> Account | None:
        with self.read() as c:
            row = c.execute(_ACCOUNT_BY_NAME, {"name": name}).first()
        return Account(*row) if row else None

    def get_account_by_id(self, account_id: int) -> Account | None:
        with self.read() as c:
            row = c.execute(sa.select(accounts).where(accounts.c.id == account_id)).first()
        return Account(*row) if row else None

    def list_accounts(self, kind: str | None = None) -> list[Account]:
        q = sa.select(accounts).order_by(accounts.c.name)
        if kind:
            q = q.where(accounts.c.kind == kind)
        with self.read() as c:
            return [Account(*r) for r in c.execute(q)]

    def delete_account(self, name: str) -> None:
        """Removes the account, its memberships and stars; repositories it owned become admin-only."""
        with self.write() as c:
            row = c.execute(sa.select(accounts.c.id).where(accounts.c.name == name)).first()
            if row is None:
                raise NotFound(f"no such account: {name}")
            aid = row[0]
            for r in c.execute(sa.select(stars.c.repo_id).where(stars.c.user_id == aid)).all():
                c.execute(repositories.update().where(repositories.c.id == r[0])
                          .values(star_count=repositories.c.star_count - 1))
            c.execute(stars.delete().where(stars.c.user_id == aid))
            c.execute(repo_members.delete().where(repo_members.c.user_id == aid))
            c.execute(org_members.delete().where(sa.or_(org_members.c.user_id == aid, org_members.c.org_id == aid)))
            c.execute(repositories.update().where(repositories.c.owner_id == aid).values(owner_id=None))
            c.execute(accounts.delete().where(accounts.c.id == aid))

    def set_password(self, name: str, password_hash: str) -> None:
        with self.write() as c:
            res = c.execute(accounts.update().where(accounts.c.name == name, accounts.c.kind == "user")
                            .values(password_hash=password_hash, token_version=accounts.c.token_version + 1))
            if res.rowcount == 0:
                raise NotFound(f"no such user: {name}")

    def set_admin(self, name: str, is_admin: bool) -> None:
        with self.write() as c:
            res = c.execute(accounts.update().where(accounts.c.name == name, accounts.c.kind == "user")
                            .values(is_admin=is_admin))
            if res.rowcount == 0:
                raise NotFound(f"no such user: {name}")

    def set_org_member(self, org_id: int, user_id: int, role: str | None) -> None:
        with self.write() as c:
            c.execute(org_members.delete().where(org_members.c.org_id == org_id, org_members.c.user_id == user_id))
            if role is not None:
                c.execute(org_members.insert().values(org_id=org_id, user_id=user_id, role=role))

    def org_members(self, org_id: int) -> list[tuple[str, str]]:
        q = (sa.select(accounts.c.name, org_members.c.role).join(accounts, accounts.c.id == org_members.c.user_id)
             .where(org_members.c.org_id == org_id).order_by(accounts.c.name))
        with self.read() as c:
            return [(r[0], r[1]) for r in c.execute(q)]

    def org_role(self, org_name: str, user_id: int) -> str | None:
        q = (sa.select(org_members.c.role).join(accounts, accounts.c.id == org_members.c.org_id)
             .where(accounts.c.name == org_name, accounts.c.kind == "org", org_members.c.user_id == user_id))
        with self.read() as c:
            row = c.execute(q).first()
        return row[0] if row else None

    # repositories
    def get_repo(self, name: str) -> Repo | None:
        with self.read() as c:
            row = c.execute(_GET_REPO, {"name": name}).first()
        return _repo(row) if row else None

    def access(self, name: str, user_id: int | None) -> Access:
        """The repository (if any) and the user's member and owner-organisation roles on it."""
        if user_id is None:
            return Access(self.get_repo(name), None, None)
        with self.read() as c:
            row = c.execute(_ACCESS, {"name": name, "uid": user_id}).first()
        if row is None:
            return Access(None, None, None)
        return Access(_repo(row), row._mapping["member_role"], row._mapping["org_role"])

    def create_repo(self, name: str, owner_id: int | None, visibility: str, description: str = "",
                    exist_ok: bool = False) -> Repo:
        if visibility not in VISIBILITIES:
            raise InvalidArgument(f"visibility must be one of {', '.join(VISIBILITIES)}")
        with self.write() as c:
            exists = c.execute(sa.select(repositories.c.id).where(repositories.c.name == name)).first()
            if exists and not exist_ok:
                raise Conflict(f"repository {name!r} already exists")
            if not exists:
                c.execute(repositories.insert().values(
                    name=name, owner_id=owner_id, visibility=visibility, description=description,
                    created=time.time(), pushed=None, pull_count=0, star_count=0, immutable_tags="[]"))
        repo = self.get_repo(name)
        assert repo is not None
        return repo

    def update_repo(self, name: str, *, visibility: str | None = None, description: str | None = None,
                    immutable_tags: list[str] | None = None, owner_id: int | None = None) -> Repo:
        values: dict[str, Any] = {}
        if visibility is not None:
            if visibility not in VISIBILITIES:
                raise InvalidArgument(f"visibility must be one of {', '.join(VISIBILITIES)}")
            values["visibility"] = visibility
        if description is not None:
            values["description"] = description
        if immutable_tags is not None:
            values["immutable_tags"] = json.dumps(list(immutable_tags))
        if owner_id is not None:
            values["owner_id"] = owner_id
        if values:
            with self.write() as c:
                res = c.execute(repositories.update().where(repositories.c.name == name).values(**values))
                if res.rowcount == 0:
                    raise NotFound(f"repository name not known to registry: {name}")
        repo = self.get_repo(name)
        if repo is None:
            raise NotFound(f"repository name not known to registry: {name}")
        return repo

    def delete_repo(self, name: str) -> None:
        with self.write() as c:
            row = c.execute(sa.select(repositories.c.id).where(repositories.c.name == name)).first()
            if row is None:
                raise NotFound(f"repository name not known to registry: {name}")
            rid = row[0]
            for t in (tags, manifest_refs, manifests, repo_blobs, repo_members, stars, uploads):
                c.execute(t.delete().where(t.c.repo_id == rid))
            c.execute(repositories.delete().where(repositories.c.id == rid))

    def _visible(self, viewer: Viewer) -> Any:
        if viewer.is_admin:
            return sa.true()
        public = repositories.c.visibility == "public"
        if viewer.user_id is None:
            return public if viewer.anonymous_pull else sa.false()
        uid = viewer.user_id
        member = sa.exists().where(repo_members.c.repo_id == repositories.c.id, repo_members.c.user_id == uid)
        org = sa.exists().where(org_members.c.org_id == repositories.c.owner_id, org_members.c.user_id == uid)
        return sa.or_(public, repositories.c.owner_id == uid, member, org)

    def catalog(self, viewer: Viewer, last: str | None, n: int | None) -> list[str]:
        q = sa.select(repositories.c.name).where(self._visible(viewer)).order_by(repositories.c.name)
        if last:
            q = q.where(repositories.c.name > last)
        if n is not None:
            q = q.limit(n)
        with self.read() as c:
            return [r[0] for r in c.execute(q)]

    def search(self, viewer: Viewer, query: str, limit: int, offset: int) -> tuple[int, list[Repo]]:
        """Repositories whose name or description holds every word of ``query``; exact names first."""
        words = query.lower().split()
        cond = [self._visible(viewer)]
        for w in words:
            pat = f"%{_like_escape(w)}%"
            cond.append(sa.or_(sa.func.lower(repositories.c.name).like(pat, escape="\\"),
                               sa.func.lower(repositories.c.description).like(pat, escape="\\")))
        q = query.strip().lower()
        qe = _like_escape(q)
        rank = sa.case(
            (repositories.c.name == q, 0),
            (repositories.c.name.like(f"%/{qe}", escape="\\"), 1),
            (repositories.c.name.like(f"{qe}%", escape="\\"), 2),
            (repositories.c.name.like(f"%{qe}%", escape="\\"), 3),
            else_=4,
        )
        base = (sa.select(*_REPO_COLS)
                .select_from(repositories.outerjoin(accounts, accounts.c.id == repositories.c.owner_id))
                .where(*cond))
        with self.read() as c:
            total = c.execute(sa.select(sa.func.count()).select_from(repositories).where(*cond)).scalar_one()
            rows = c.execute(base.order_by(rank, repositories.c.star_count.desc(), repositories.c.pull_count.desc(),
                                           repositories.c.name).limit(limit).offset(offset)).all()
        return total, [_repo(r) for r in rows]

    def set_member(self, repo_id: int, user_id: int, role: str | None) -> None:
        if role is not None and role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        with self.write() as c:
            c.execute(repo_members.delete().where(repo_members.c.repo_id == repo_id,
                                                  repo_members.c.user_id == user_id))
            if role is not None:
                c.execute(repo_members.insert().values(repo_id=repo_id, user_id=user_id, role=role))

    def members(self, repo_id: int) -> list[tuple[str, str]]:
        q = (sa.select(accounts.c.name, repo_members.c.role).join(accounts, accounts.c.id == repo_members.c.user_id)
             .where(repo_members.c.repo_id == repo_id).order_by(accounts.c.name))
        with self.read() as c:
            return [(r[0], r[1]) for r in c.execute(q)]

    def set_star(self, repo_id: int, user_id: int, starred: bool) -> None:
        with self.write() as c:
            has = c.execute(sa.select(stars.c.repo_id).where(stars.c.repo_id == repo_id,
                                                             stars.c.user_id == user_id)).first()
            if starred and not has:
                c.execute(stars.insert().values(repo_id=repo_id, user_id=user_id))
                c.execute(repositories.update().where(repositories.c.id == repo_id)
                          .values(star_count=repositories.c.star_count + 1))
            elif has and not starred:
                c.execute(stars.delete().where(stars.c.repo_id == repo_id, stars.c.user_id == user_id))
                c.execute(repositories.update().where(repositories.c.id == repo_id)
                          .values(star_count=repositories.c.star_count - 1))

    def add_pulls(self, counts: dict[int, int]) -> None:
        if not counts:
            return
        with self.write() as c:
            for rid, n in counts.items():
                c.execute(repositories.update().where(repositories.c.id == rid)
                          .values(pull_count=repositories.c.pull_count + n))

    # blobs
    def record_blob(self, digest: str, size: int, repo_id: int | None = None) -> None:
        """Called before a blob file is published: the row (and link) exist before the bytes are readable."""
        now = time.time()
        with self.write() as c:
            ins = _insert(c, blobs).values(digest=digest, size=size, touched=now)
            c.execute(ins.on_conflict_do_update(index_elements=["digest"], set_={"touched": now, "size": size}))
            if repo_id is not None:
                ins = _insert(c, repo_blobs).values(repo_id=repo_id, digest=digest, touched=now)
                c.execute(ins.on_conflict_do_update(index_elements=["repo_id", "digest"], set_={"touched": now}))

    def link_blob(self, repo_id: int, digest: str) -> bool:
        """Links a known blob into a repository (cross-repo mount); False if the blob has no row."""
        now = time.time()
        with self.write() as c:
            res = c.execute(blobs.update().where(blobs.c.digest == digest).values(touched=now))
            if res.rowcount == 0:
                return False
            ins = _insert(c, repo_blobs).values(repo_id=repo_id, digest=digest, touched=now)
            c.execute(ins.on_conflict_do_update(index_elements=["repo_id", "digest"], set_={"touched": now}))
        return True

    def repo_blob_size(self, repo_id: int, digest: str) -> int | None:
        with self.read() as c:
            row = c.execute(_REPO_BLOB_SIZE, {"rid": repo_id, "digest": digest}).first()
        return row[0] if row else None

    def unlink_blob(self, repo_id: int, digest: str) -> bool:
        with self.write() as c:
            return c.execute(repo_blobs.delete().where(repo_blobs.c.repo_id == repo_id,
                                                       repo_blobs.c.digest == digest)).rowcount > 0

    def blob_row(self, digest: str) -> tuple[int, float] | None:
        with self.read() as c:
            row = c.execute(sa.select(blobs.c.size, blobs.c.touched).where(blobs.c.digest == digest)).first()
        return (row[0], row[1]) if row else None

    # uploads
    def create_upload(self, upload_id: str, repo_id: int) -> None:
        with self.write() as c:
            c.execute(uploads.insert().values(id=upload_id, repo_id=repo_id, created=time.time()))

    def upload_repo(self, upload_id: str) -> int | None:
        with self.read() as c:
            row = c.execute(sa.select(uploads.c.repo_id).where(uploads.c.id == upload_id)).first()
        return row[0] if row else None

    def delete_upload(self, upload_id: str) -> None:
        with self.write() as c:
            c.execute(uploads.delete().where(uploads.c.id == upload_id))

    def upload_ids(self) -> dict[str, float]:
        with self.read() as c:
            return {r[0]: r[1] for r in c.execute(sa.select(uploads.c.id, uploads.c.created))}

    # manifests and tags
    def put_manifest(self, repo_id: int, digest: str, media_type: str, size: int, *, artifact_type: str | None,
                     subject: str | None, annotations: dict[str, str] | None, refs: list[tuple[str, str, int | None]],
                     tag: str | None, immutable: tuple[str, ...] = ()) -> None:
        """Records a manifest (its bytes already stored) and moves ``tag`` to it, in one transaction.

        ``refs`` are (digest, kind, size): every 'blob' must be linked into the repository with that size
        (None: any), every 'manifest' must be a manifest of the repository; otherwise nothing is written.
        """
        import fnmatch

        now = time.time()
        with self.write() as c:
            for child, kind, want_size in refs:
                if kind == "manifest":
                    ok = c.execute(sa.select(manifests.c.size).where(manifests.c.repo_id == repo_id,
                                                                     manifests.c.digest == child)).first()
                else:
                    ok = c.execute(sa.select(blobs.c.size).join(repo_blobs, repo_blobs.c.digest == blobs.c.digest)
                                   .where(repo_blobs.c.repo_id == repo_id, repo_blobs.c.digest == child)).first()
                if ok is None:
                    raise _MissingRef(child, kind)
                if want_size is not None and ok[0] != want_size:
                    raise InvalidArgument(f"descriptor size {want_size} of {child} does not match its content "
                                          f"({ok[0]} bytes)")
            if tag is not None:
                cur = c.execute(sa.select(tags.c.digest).where(tags.c.repo_id == repo_id, tags.c.name == tag)).first()
                if cur is not None and cur[0] != digest and any(fnmatch.fnmatchcase(tag, p) for p in immutable):
                    raise Forbidden(f"tag {tag} is immutable")
            ins = _insert(c, manifests).values(
                repo_id=repo_id, digest=digest, media_type=media_type, size=size, artifact_type=artifact_type,
                subject=subject, annotations=json.dumps(annotations) if annotations else None, created=now)
            c.execute(ins.on_conflict_do_update(index_elements=["repo_id", "digest"],
                                                set_={"media_type": media_type}))
            for child, kind, _ in refs:
                ins = _insert(c, manifest_refs).values(repo_id=repo_id, parent=digest, child=child, kind=kind)
                c.execute(ins.on_conflict_do_nothing())
            ins = _insert(c, repo_blobs).values(repo_id=repo_id, digest=digest, touched=now)
            c.execute(ins.on_conflict_do_update(index_elements=["repo_id", "digest"], set_={"touched": now}))
            if tag is not None:
                ins = _insert(c, tags).values(repo_id=repo_id, name=tag, digest=digest, updated=now)
                c.execute(ins.on_conflict_do_update(index_elements=["repo_id", "name"],
                                                    set_={"digest": digest, "updated": now}))
            c.execute(repositories.update().where(repositories.c.id == repo_id).values(pushed=now))

    def resolve(self, repo_id: int, reference: str) -> ManifestRow | None:
        """A manifest of the repository by digest (``algo:hex``) or by tag."""
        with self.read() as c:
            row = c.execute(_RESOLVE_DIGEST if ":" in reference else _RESOLVE_TAG,
                            {"rid": repo_id, "ref": reference}).first()
        return _manifest(row) if row else None

    def delete_manifest(self, repo_id: int, digest: str, immutable: tuple[str, ...] = ()) -> bool:
        """Deletes a manifest and every tag on it (refused if one of those tags is immutable)."""
        import fnmatch

        with self.write() as c:
            tagged = [r[0] for r in c.execute(sa.select(tags.c.name).where(tags.c.repo_id == repo_id,
                                                                           tags.c.digest == digest))]
            for t in tagged:
                if any(fnmatch.fnmatchcase(t, p) for p in immutable):
                    raise Forbidden(f"tag {t} is immutable")
            res = c.execute(manifests.delete().where(manifests.c.repo_id == repo_id, manifests.c.digest == digest))
            if res.rowcount == 0:
                return False
            c.execute(tags.delete().where(tags.c.repo_id == repo_id, tags.c.digest == digest))
            c.execute(manifest_refs.delete().where(manifest_refs.c.repo_id == repo_id, manifest_refs.c.parent == digest))
        return True

    def delete_tag(self, repo_id: int, tag: str, immutable: tuple[str, ...] = ()) -> bool:
        import fnmatch

        if any(fnmatch.fnmatchcase(tag, p) for p in immutable):
            raise Forbidden(f"tag {tag} is immutable")
        with self.write() as c:
            return c.execute(tags.delete().where(tags.c.repo_id == repo_id, tags.c.name == tag)).rowcount > 0

    def list_tags(self, repo_id: int, last: str | None = None, n: int | None = None) -> list[str]:
        q = sa.select(tags.c.name).where(tags.c.repo_id == repo_id).order_by(tags.c.name)
        if last:
            q = q.where(tags.c.name > last)
        if n is not None:
            q = q.limit(n)
        with self.read() as c:
            return [r[0] for r in c.execute(q)]

    def tag_details(self, repo_id: int) -> list[tuple[str, str, str, int, float]]:
        """(tag, digest, media type, manifest size, updated) for the web page and the management API."""
        q = (sa.select(tags.c.name, tags.c.digest, manifests.c.media_type, manifests.c.size, tags.c.updated)
             .join(manifests, sa.and_(manifests.c.repo_id == tags.c.repo_id, manifests.c.digest == tags.c.digest))
             .where(tags.c.repo_id == repo_id).order_by(tags.c.name))
        with self.read() as c:
            return [tuple(r) for r in c.execute(q)]  # type: ignore[misc]

    def referrers(self, repo_id: int, subject: str, artifact_type: str | None = None) -> list[ManifestRow]:
        q = sa.select(manifests).where(manifests.c.repo_id == repo_id, manifests.c.subject == subject)
        if artifact_type:
            q = q.where(manifests.c.artifact_type == artifact_type)
        with self.read() as c:
            return [_manifest(r) for r in c.execute(q.order_by(manifests.c.created, manifests.c.digest))]

    # garbage collection support (see gc.py)
    def untagged_manifests(self, cutoff: float) -> list[tuple[int, str]]:
        """Manifests no tag points at, no index of their repository lists, with no subject, older than cutoff."""
        tagged = sa.exists().where(tags.c.repo_id == manifests.c.repo_id, tags.c.digest == manifests.c.digest)
        listed = sa.exists().where(manifest_refs.c.repo_id == manifests.c.repo_id,
                                   manifest_refs.c.child == manifests.c.digest)
        q = sa.select(manifests.c.repo_id, manifests.c.digest).where(
            ~tagged, ~listed, manifests.c.subject.is_(None), manifests.c.created < cutoff)
        with self.read() as c:
            return [(r[0], r[1]) for r in c.execute(q)]

    def _link_unreferenced(self) -> Any:
        in_manifest = sa.exists().where(manifest_refs.c.repo_id == repo_blobs.c.repo_id,
                                        manifest_refs.c.child == repo_blobs.c.digest)
        is_manifest = sa.exists().where(manifests.c.repo_id == repo_blobs.c.repo_id,
                                        manifests.c.digest == repo_blobs.c.digest)
        return sa.and_(~in_manifest, ~is_manifest)

    def stale_links(self, cutoff: float) -> list[tuple[int, str]]:
        q = sa.select(repo_blobs.c.repo_id, repo_blobs.c.digest).where(repo_blobs.c.touched < cutoff,
                                                                      self._link_unreferenced())
        with self.read() as c:
            return [(r[0], r[1]) for r in c.execute(q)]

    def drop_link_if_stale(self, repo_id: int, digest: str, cutoff: float) -> bool:
        with self.write() as c:
            return c.execute(repo_blobs.delete().where(
                repo_blobs.c.repo_id == repo_id, repo_blobs.c.digest == digest, repo_blobs.c.touched < cutoff,
                self._link_unreferenced())).rowcount > 0

    def _blob_unreferenced(self) -> Any:
        return sa.and_(~sa.exists().where(repo_blobs.c.digest == blobs.c.digest),
                       ~sa.exists().where(manifest_refs.c.child == blobs.c.digest),
                       ~sa.exists().where(manifests.c.digest == blobs.c.digest))

    def unreferenced_blobs(self, cutoff: float) -> list[tuple[str, int]]:
        q = sa.select(blobs.c.digest, blobs.c.size).where(blobs.c.touched < cutoff, self._blob_unreferenced())
        with self.read() as c:
            return [(r[0], r[1]) for r in c.execute(q)]

    def drop_blob_if_unreferenced(self, digest: str, cutoff: float) -> bool:
        with self.write() as c:
            return c.execute(blobs.delete().where(blobs.c.digest == digest, blobs.c.touched < cutoff,
                                                  self._blob_unreferenced())).rowcount > 0

    def blob_digests(self) -> set[str]:
        with self.read() as c:
            return {r[0] for r in c.execute(sa.select(blobs.c.digest))}

    def drop_blob_rows(self, digests: list[str]) -> None:
        with self.write() as c:
            for d in digests:
                c.execute(repo_blobs.delete().where(repo_blobs.c.digest == d))
                c.execute(blobs.delete().where(blobs.c.digest == d))

    def stats(self) -> dict[str, int]:
        with self.read() as c:
            return {t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                    for t in (accounts, repositories, tags, manifests, blobs, uploads)}


class _MissingRef(NotFound):
    def __init__(self, digest: str, kind: str) -> None:
        super().__init__(f"{kind} unknown to the repository: {digest}")
        self.digest = digest
        self.kind = kind


MissingRef = _MissingRef


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a process crash loses nothing committed
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-1024")  # 1 MiB per connection: the index is small, memory is a budget
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    stmt = conn.get_execution_options().get("sqlite_begin")
    if stmt:
        conn.exec_driver_sql(stmt)
