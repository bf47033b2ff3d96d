"""The access policy: which actions (pull, push, delete) a subject has on a repository name.

    subject \\ repository     | public, exists        | private, exists      | does not exist
    -------------------------|-----------------------|----------------------|--------------------------------
    admin user               | pull push delete      | pull push delete     | pull push delete (creates it)
    owner (namespace user,   | pull push delete      | pull push delete     | pull push delete if the name is
      or org admin)          |                       |                      | in their namespace (creates it)
    admin member             | pull push delete      | pull push delete     | -
    write member (repo/org)  | pull push             | pull push            | pull push if org write member
    read member (repo/org)   | pull                  | pull                 | -
    other user               | pull                  | - (NAME_UNKNOWN)     | - (NAME_UNKNOWN)
    anonymous                | pull (anonymous_pull) | - (NAME_UNKNOWN)     | - (NAME_UNKNOWN)

With ``anonymous_push`` (open mode) every subject, anonymous included, also gets pull, push and delete on
public repositories and may create any repository (created public when nobody owns it). Private
repositories are never opened up by it.

The registry re-evaluates this on every request and intersects it with what the bearer token grants, so a
token outliving a change of membership or visibility gives no more than the policy allows now.
"""

from __future__ import annotations

from dataclasses import dataclass

from matou.registry.index import Access, Index
from matou.registry.names import namespace_of

ALL = frozenset(("pull", "push", "delete"))
PULL = frozenset(("pull",))
PULL_PUSH = frozenset(("pull", "push"))
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking: a user (id, name, admin flag) or anonymous (id None, name "")."""

    user_id: int | None = None
    name: str = ""
    is_admin: bool = False

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Subject()


@dataclass(frozen=True, slots=True)
class Policy:
    anonymous_pull: bool = True
    anonymous_push: bool = False
    default_visibility: str = "private"


def _role_actions(role: str | None) -> frozenset[str]:
    return {"admin": ALL, "write": PULL_PUSH, "read": PULL}.get(role or "", NONE)


def allowed(policy: Policy, subject: Subject, name: str, access: Access, ns_org_role: str | None = None) -> frozenset[str]:
    """The actions ``subject`` has on repository ``name`` (see the table above). ``ns_org_role`` is the
    subject's role in the organisation owning the name's namespace; it matters only for missing repositories."""
    if subject.is_admin:
        return ALL
    repo = access.repo
    if repo is None:
        if policy.anonymous_push:
            return ALL
        if subject.anonymous:
            return NONE
        ns = namespace_of(name)
        if ns is not None and ns == subject.name:
            return ALL
        if ns_org_role in ("write", "admin"):
            return _role_actions(ns_org_role)
        return NONE
    acts = _role_actions(access.member_role) | _role_actions(access.org_role)
    if repo.owner_id is not None and repo.owner_id == subject.user_id:
        acts = ALL
    if repo.public:
        if policy.anonymous_push:
            acts = ALL
        elif not subject.anonymous or policy.anonymous_pull:
            acts = acts | PULL
    return acts


class Authorizer:
    """Reads what the policy needs from the index and applies it."""

    def __init__(self, index: Index, policy: Policy) -> None:
        self.index = index
        self.policy = policy

    def check(self, subject: Subject, name: str) -> tuple[frozenset[str], Access]:
        access = self.index.access(name, subject.user_id)
        ns_role = None
        if access.repo is None and not subject.anonymous and not subject.is_admin:
            ns = namespace_of(name)
            if ns is not None and ns != subject.name:
                ns_role = self.index.org_role(ns, subject.user_id)  # type: ignore[arg-type]
        return allowed(self.policy, subject, name, access, ns_role), access

    def owner_for_new(self, subject: Subject, name: str) -> int | None:
        """The owner a repository created by ``subject``'s push gets: the namespace's account, if it exists."""
        ns = namespace_of(name)
        if ns is None:
            return None
        acct = self.index.get_account(ns)
        return acct.id if acct is not None else None

    def visibility_for_new(self, subject: Subject, owner_id: int | None) -> str:
        if self.policy.anonymous_push and (owner_id is None or subject.anonymous):
            return "public"
        return self.policy.default_visibility
