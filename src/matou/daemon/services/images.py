"""Image orchestration: the image service plus events, filters and the API's shapes."""

from __future__ import annotations

from typing import Any, BinaryIO

from matou.daemon.services.events import EventBus
from matou.errors import InvalidArgument
from matou.image.model import Image
from matou.image.service import ImageService
from matou.types import oci, reference
from matou.types.image import parse_time
from matou.util import filters as flt


class ImagesService:
    def __init__(self, svc: ImageService, events: EventBus) -> None:
        self.svc = svc
        self.events = events
        svc.on_event = lambda action, id_, attrs: events.publish("image", action, id_, attrs)
        self.container_count = lambda image_id: -1  # wired by the containers service

    # -- queries
    def list(self, all_: bool = False, filters: str | None = None, digests: bool = False) -> list[dict[str, Any]]:
        f = flt.parse(filters, {"dangling", "label", "before", "since", "reference", "until"})
        images = self.svc.list(all_=all_ or bool(f.get("dangling")))
        if "dangling" in f:
            want = flt.bool_value(f["dangling"], "dangling")
            images = [i for i in images if (not i.refs) == want]
        if "label" in f:
            images = [i for i in images if flt.labels_match(i.container_config.get("Labels"), f["label"])]
        for key, cmp in (("before", lambda a, b: a < b), ("since", lambda a, b: a > b)):
            if key in f:
                ref = self.svc.resolve(f[key][-1])
                t = parse_time(ref.created)
                images = [i for i in images if cmp(parse_time(i.created), t)]
        if "until" in f:
            until = _parse_until(f["until"][-1])
            images = [i for i in images if parse_time(i.created) < until]
        if "reference" in f:
            images = [i for i in images if any(_ref_matches(p, i) for p in f["reference"])]
        return [self.svc.summary(i, self.container_count(i.id)) for i in images]

    def get(self, name: str) -> Image:
        return self.svc.resolve(name)

    def inspect(self, name: str) -> dict[str, Any]:
        return self.svc.inspect(name)

    def history(self, name: str) -> list[dict[str, Any]]:
        return self.svc.history(name)

    # -- changes
    def tag(self, name: str, repo: str, tag: str | None) -> None:
        if not repo:
            raise InvalidArgument("repository name is required")
        target = f"{repo}:{tag}" if tag else repo
        self.svc.tag(name, target)

    def remove(self, name: str, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        out = self.svc.remove(name, force=force, prune=not noprune)
        if any("Deleted" in x for x in out):
            self.svc.gc()
        return out

    def prune(self, filters: str | None = None) -> dict[str, Any]:
        f = flt.parse(filters, {"dangling", "until", "label", "label!"})
        dangling = True
        if "dangling" in f:
            dangling = flt.bool_value(f["dangling"], "dangling")
        until = _parse_until(f["until"][-1]) if "until" in f else None
        labels = list(f.get("label", [])) + ["!" + x for x in f.get("label!", [])]
        return self.svc.prune(dangling=dangling, until=until, labels=labels or None)

    def save(self, names: list[str], out: BinaryIO, fmt: str = "docker") -> None:
        from matou.image import archive

        archive.save(self.svc, names, out, fmt)

    def load(self, src: BinaryIO) -> list[str]:
        from matou.image import archive

        out = archive.load(self.svc, src)
        for line in out:
            self.events.publish("image", "load", line.split(": ", 1)[-1], {})
        return out

    def import_(self, src: BinaryIO, *, repo: str | None, tag: str | None, changes: list[str], message: str,
                platform: str | None, source_name: str = "-") -> Image:
        ref = None
        if repo:
            ref = f"{repo}:{tag}" if tag else repo
            reference.parse(ref)
        plat = oci.Platform.parse(platform) if platform else None
        from matou.image import importer

        img = importer.import_rootfs(self.svc, src, changes=changes, message=message, ref=ref, platform=plat,
                                     source_name=source_name)
        self.events.publish("image", "import", img.id, {})
        return img

    def bootstrap(self, what: str, ref: str | None = None) -> Image:
        from matou.image import bootstrap

        return bootstrap.bootstrap(self.svc, what, ref)


def _ref_matches(pattern: str, img: Image) -> bool:
    import fnmatch

    for r in img.refs:
        fam = reference.parse(r).familiar()
        name = fam.split("@")[0]
        repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        if fnmatch.fnmatchcase(fam, pattern) or fnmatch.fnmatchcase(repo, pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _parse_until(v: str) -> float:
    import time

    try:
        return float(v)
    except ValueError:
        pass
    units = {"s": 1, "m": 60, "h": 3600}
    if v and v[-1] in units and v[:-1].isdigit():
        return time.time() - int(v[:-1]) * units[v[-1]]
    t = parse_time(v)
    if not t:
        raise InvalidArgument(f"invalid until value {v!r}")
    return t
