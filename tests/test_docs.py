"""What the docs and comments name exists: every path to a file of this repository in README.md, docs/,
conf/, src/ and benchmarks/ (a file moved leaves no stale path behind)."""

from __future__ import annotations

import re

from conftest import ROOT

PACKAGE = ROOT / "src" / "transferlab"
# A repository path (src/…, conf/…), or one inside the package (caches/decoded.py), ending in a file name.
PATH = re.compile(
    r"(?<![\w/.])((?:src|conf|docs|benchmarks|tests|examples|"
    r"caches|callbacks|classifier|data|distributed|models|review|run|screen|strategies)/[\w/]+\.(?:py|yaml|md))"
)
READ = ["README.md", "docs/*.md", "conf/**/*.yaml", "src/**/*.py", "benchmarks/*.py", "benchmarks/*.md"]


def test_every_file_path_in_the_docs_and_comments_exists():
    missing = []
    for pattern in READ:
        for file in sorted(ROOT.glob(pattern)):
            for number, line in enumerate(file.read_text().splitlines(), 1):
                for path in PATH.findall(line):
                    if "://" in line and f"/{path}" in line.split("://", 1)[1]:
                        continue  # a URL's path, not this repository's
                    if not ((ROOT / path).exists() or (PACKAGE / path).exists()):
                        missing.append(f"{file.relative_to(ROOT)}:{number}: {path}")
    assert not missing, "\n".join(missing)
