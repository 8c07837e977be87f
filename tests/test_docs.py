"""The front page and docs/: every relative link and #anchor resolves, and the README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

from bench.harness import ROOT

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)
DOCS = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(md: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (duplicates get -1, -2, ...)."""
    out: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", md.read_text(encoding="utf-8")).splitlines():
        if m := re.match(r"#{1,6} (.*)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", "")).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_every_relative_link_resolves() -> None:
    broken = []
    for md in DOCS:
        for target in LINK.findall(FENCE.sub("", md.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue  # a URL: not checked offline
            path, _, fragment = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_is_a_front_page() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
