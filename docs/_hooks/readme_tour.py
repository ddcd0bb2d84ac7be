"""MkDocs hook: the tour page shows the `smtpbee tour` output captured in README.md.

The README keeps the one captured run (its tests keep it honest); the page holds a
placeholder line that this hook replaces with that console block, so the two can
never drift apart. A README without the block fails the build rather than leaving
the placeholder on the page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

PLACEHOLDER = "<!-- readme: smtpbee tour output -->"

_TOUR_BLOCK = re.compile(r"^```console\n\$ smtpbee tour\n.*?^```$", re.MULTILINE | re.DOTALL)


def tour_block(readme: str) -> str:
    """The README's fenced console block that starts with ``$ smtpbee tour``."""
    match = _TOUR_BLOCK.search(readme)
    if match is None:
        raise PluginError("README.md has no ```console block starting with '$ smtpbee tour'")
    return match.group(0)


def on_page_markdown(markdown: str, /, *, page: Any, config: Any, files: Any) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    readme = Path(config["config_file_path"]).parent / "README.md"
    return markdown.replace(PLACEHOLDER, tour_block(readme.read_text(encoding="utf-8")))
