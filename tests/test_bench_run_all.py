"""bench/run_all.py: gathering a script's JSON and rendering BENCHMARKS.md from figures.

Nothing is timed here: the figures are made up, only their way into the document is
checked.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import run_all

FIGURES: dict[str, Any] = {
    "date": "2026-01-01 00:00 UTC",
    "quick": True,
    "elapsed_s": 42.0,
    "machine": {
        "cpu_count": 2,
        "cpu_model": "Test CPU 9000",
        "memory_gib": 3.5,
        "kernel": "Linux 6.0",
        "python": "CPython 3.11.7",
    },
    "versions": {"smtpbee": "0.1.0", "aiosmtplib": "5.1.3", "smtpproto": None, "Postfix": "3.7"},
    "commands": {"send": "python bench/bench_send.py --messages 10"},
    "send": {
        "sink": "Postfix smtp-sink",
        "messages": 10,
        "big_mb": 1,
        "data": [
            {
                "client": "smtpbee sync",
                "msgs_per_s": 1234.5,
                "us_per_msg": 810.0,
                "rt_per_msg": 2.0,
                "peak_mb": 5.0,
                "cpu_s": 0.25,
            },
            {"client": "smtplib", "peak_mb": None, "cpu_s": None},
        ],
        "bdat_small": [
            {"client": "smtpbee sync", "msgs_per_s": 2000.0, "us_per_msg": 500.0, "rt_per_msg": 1.0}
        ],
        "bdat_big": [{"client": "smtpbee sync", "peak_mb": 3.0, "cpu_s": 0.2}],
    },
    "smtp_source": {"messages": 10, "message_bytes": 1024, "msgs_per_s": 3000.0},
    "core": {
        "parser": {
            "count": 5,
            "rounds": 1,
            "cases": ["one-line"],
            "rows": [{"name": "smtpbee ReplyReader", "us_per_write": {"one-line": 0.5}}],
        },
        "transactions": {
            "count": 5,
            "rounds": 1,
            "smtpbee_core_us": 20.0,
            "minimal_client_us": 2.0,
        },
        "messages": {
            "count": 5,
            "rounds": 1,
            "cases": ["built"],
            "rows": [{"name": "smtplib", "us_per_message": {"built": 80.0}}],
        },
    },
    "data_encoder": {
        "size_mb": 1,
        "repeat": 1,
        "bodies": ["CRLF body"],
        "rows": [{"name": "DataEncoder | whole", "mb_per_s": {"CRLF body": 600.0}}],
    },
    "import": {
        "runs": 1,
        "bytecode": "warm",
        "rows": [
            {"module": "smtpbee", "median_ms": 25.0, "min_ms": 24.0, "modules": 33, "notable": []}
        ],
    },
}


def test_every_section_and_table_is_rendered() -> None:
    document = run_all.render(FIGURES)
    for heading in (
        "# Benchmarks",
        "## Machine",
        "## Versions",
        "## Sending mail",
        "## The core alone",
        "## DATA encoding",
        "## Import time",
        "## Reproducing",
    ):
        assert f"\n{heading}" in f"\n{document}"
    for row in (
        "| CPU model | Test CPU 9000 |",
        "| memory | 3.5 GiB |",
        "| smtpproto | not installed |",
        "| smtpbee sync | 1,234 | 810 | 2.00 | 5 | 0.25 |",
        "| smtplib | - | - | - | - | - |",
        "| Postfix smtp-source (C) | 3,000 | 333 | - | - | - |",
        "| smtpbee sync | 2,000 | 500 | 1.00 |",
        "| smtpbee sync | 3 | 0.20 |",
        "| smtpbee ReplyReader | 0.50 |",
        "| core overhead | 18.0 (10.0x) |",
        "| smtplib | 80.0 |",
        "| `DataEncoder \\| whole` | 600 |",
        "| `smtpbee` | 25.0 | 24.0 | 33 | - |",
    ):
        assert row in document
    assert "python bench/run_all.py --quick" in document
    assert "ratios" in document


def test_without_smtp_source_or_bdat_those_parts_are_left_out() -> None:
    figures = copy.deepcopy(FIGURES)
    figures["smtp_source"] = None
    figures["send"]["bdat_small"] = figures["send"]["bdat_big"] = []
    document = run_all.render(figures)
    assert "smtp-source" not in document.split("## Reproducing")[0]
    assert "via BDAT" not in document


def test_a_scripts_json_is_collected(tmp_path: Path) -> None:
    script = tmp_path / "fake_bench.py"
    script.write_text(
        "import json, sys\n"
        "path = sys.argv[sys.argv.index('--json') + 1]\n"
        "open(path, 'w').write(json.dumps({'figure': 1.5, 'argv': sys.argv[1:-2]}))\n"
    )
    figures = run_all.run_script([sys.executable, str(script), "--count", "3"])
    assert figures == {"figure": 1.5, "argv": ["--count", "3"]}
