"""The README and docs/: short README, links that resolve, one quickstart test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf8").splitlines()) <= 200


def test_every_relative_link_resolves():
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in PAGES
        for target in LINK.findall(page.read_text(encoding="utf8"))
        if not target.startswith(("http://", "https://", "mailto:"))
        and not (page.parent / target).exists()
    ]
    assert broken == []


def test_the_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if f"(docs/{p.name})" not in readme]
    assert missing == []


def test_quickstart_test_command_is_the_same_everywhere():
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    command = next(line for line in readme.splitlines() if "pip install -q -e" in line)
    install = re.search(r'pip install -q -e "([^"]+)"', command).group(1)
    for path in (ROOT / ".ci" / "run", ROOT / "scripts" / "quickstart.sh"):
        assert f'pip install -q -e "{install}"' in path.read_text(encoding="utf8"), path


def test_no_internal_milestone_words():
    words = re.compile(r"\b(session|issue|part) [0-9]+\b", re.IGNORECASE)
    results = sorted((ROOT / "bench" / "results").rglob("*.md"))  # the figures' pages too
    found = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in [*PAGES, *results]
        for m in words.finditer(page.read_text(encoding="utf8"))
    ]
    assert found == []
