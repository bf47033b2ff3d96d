"""Pull, push, login and search: the daemon's side of registries.

One ``Registries`` (connection pool, token cache, what each registry host answered) and one ``Transfers`` (the
daemon-wide download and upload slots, ``max-concurrent-downloads``/``-uploads``) serve every request. The work
is synchronous and runs in worker threads (see ``matou.distribution.http`` for why); progress goes to a sink the
API turns into Docker's JSON progress stream. Leases left by pulls that died with the daemon expire here.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from matou.daemon.services import Services
from matou.distribution.auth import Credentials
from matou.distribution.client import Registries
from matou.distribution.endpoints import (
    HUB_INDEX,
    Endpoint,
    RegistrySettings,
    endpoint_for,
    is_docker_hub,
    normalize_server,
    registry_host,
)
from matou.distribution.progress import Reporter, Sink
from matou.errors import InvalidArgument
from matou.image import pull as pull_mod
from matou.image import push as push_mod
from matou.image.pull import PullResult, Transfers, drop_expired_leases
from matou.image.push import PushResult
from matou.image.service import ImageService
from matou.types import oci, reference
from matou.types.digest import is_digest
from matou.types.reference import Reference
from matou.util import filters as flt

log = logging.getLogger("matoud.distribution")

SEARCH_LIMIT_DEFAULT = 25
SEARCH_LIMIT_MAX = 100


def settings_from(svcs: Services) -> RegistrySettings:
    cfg = svcs.config
    by_host = {k: tuple(v) for k, v in (cfg.registry_mirrors_by_host or {}).items()}
    return RegistrySettings(tuple(cfg.insecure_registries or ()), tuple(cfg.registry_mirrors or ()), by_host)


def pull_reference(from_image: str, tag: str | None) -> tuple[Reference, bool]:
    """``fromImage`` and ``tag`` of POST /images/create -> (reference, all tags?). The tag may be a digest."""
    ref = reference.parse(from_image)
    if tag:
        if is_digest(tag):
            ref = Reference(ref.domain, ref.path, None, tag)
        else:
            if ref.digest:
                raise InvalidArgument("cannot combine a digest reference with a tag")
            ref = ref.with_tag(tag)
    return ref, not (ref.tag or ref.digest)


class DistributionService:
    def __init__(self, svcs: Services) -> None:
        self.svcs = svcs
        self.images: ImageService = svcs.images.svc
        self.registries = Registries(settings_from(svcs))
        cfg = svcs.config
        self.transfers = Transfers(self.registries, int(cfg.max_concurrent_downloads or 3),
                                   int(cfg.max_concurrent_uploads or 5))

    def _publish(self, action: str, name: str) -> None:
        self.svcs.events.publish("image", action, name, {"name": name})

    # ------------------------------------------------------------------ pull / push
    def pull(self, from_image: str, tag: str | None, platform: str | None, creds: Credentials, sink: Sink | None,
             cancel: threading.Event | None = None) -> list[PullResult]:
        ref, all_tags = pull_reference(from_image, tag)
        plat = oci.Platform.parse(platform) if platform else None
        drop_expired_leases(self.images.db)
        results = pull_mod.pull(self.images, self.transfers, ref, creds, Reporter(sink), platform=plat,
                                all_tags=all_tags, cancel=cancel)
        for r in results:
            self._publish("pull", r.ref)
        return results

    def push(self, name: str, tag: str | None, creds: Credentials, sink: Sink | None,
             cancel: threading.Event | None = None) -> list[PushResult]:
        ref = reference.parse(name)
        if tag:
            ref = ref.with_tag(tag)
        results = push_mod.push(self.images, self.transfers, ref, creds, Reporter(sink), cancel=cancel)
        for r in results:
            self._publish("push", f"{ref.familiar_name}:{r.tag}")
        return results

    # ------------------------------------------------------------------ login / search
    def login(self, creds: Credentials) -> dict[str, str]:
        """POST /auth: check the credentials at the registry; returns docker's answer (with a refresh token
        as ``IdentityToken`` when the registry issues one)."""
        domain = normalize_server(creds.server)
        ep = endpoint_for(registry_host(domain), self.registries.settings)
        token = self.registries.client(ep, creds).check_login()
        return {"Status": "Login Succeeded", "IdentityToken": token}

    def search(self, term: str, limit: int | None, filters: str | None, creds: Credentials) -> list[dict[str, Any]]:
        if not term:
            raise InvalidArgument("a search term is required")
        if limit is None:
            limit = SEARCH_LIMIT_DEFAULT
        if not 1 <= limit <= SEARCH_LIMIT_MAX:
            raise InvalidArgument(f"limit {limit} is outside the range of [1, {SEARCH_LIMIT_MAX}]")
        f = flt.parse(filters, {"stars", "is-official", "is-automated"})
        stars = 0
        if "stars" in f:
            try:
                stars = int(f["stars"][-1])
            except ValueError:
                raise InvalidArgument(f"invalid filter 'stars={f['stars'][-1]}'") from None
        official = flt.bool_value(f["is-official"], "is-official") if "is-official" in f else None
        automated = flt.bool_value(f["is-automated"], "is-automated") if "is-automated" in f else None
        index, query = split_search_term(term)
        hub = is_docker_hub(index)
        ep = Endpoint(HUB_INDEX) if hub else endpoint_for(index, self.registries.settings)
        data = self.registries.client(ep, creds).search(query, limit, authenticate=not hub)
        out: list[dict[str, Any]] = []
        for r in data.get("results") or []:  # type: ignore[union-attr]
            if not isinstance(r, dict):
                continue
            row = {"name": str(r.get("name", "")), "description": str(r.get("description") or ""),
                   "star_count": int(r.get("star_count") or 0), "is_official": bool(r.get("is_official")),
                   "is_automated": bool(r.get("is_automated"))}
            if row["star_count"] < stars:
                continue
            if official is not None and row["is_official"] != official:
                continue
            if automated is not None and row["is_automated"] != automated:
                continue
            out.append(row)
        return out[:limit]

    async def stop(self) -> None:
        self.registries.close()


def split_search_term(term: str) -> tuple[str, str]:
    """docker's splitReposSearchTerm: ``host[:port]/rest`` searches that registry, anything else Docker Hub."""
    first, sep, rest = term.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return "docker.io", term
    return first, rest


def attach(svcs: Services) -> None:
    svc = DistributionService(svcs)
    try:
        n = drop_expired_leases(svc.images.db)
        if n:
            log.info("dropped %d expired pull leases", n)
    except Exception:  # noqa: BLE001 - a lease table problem must not keep the daemon down
        log.exception("dropping expired leases failed")
    svcs.distribution = svc
