"""Where the shared real-world corpus lives, and how tests use it.

CI always has ../shared/corpus; elsewhere the corpus tests skip with a clear reason,
and under CI=true a missing corpus fails them.
"""
from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest

CORPUS = Path(
    os.environ.get("TRACKRELAY_CORPUS")
    or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_corpus() -> Path:
    if not CORPUS.is_dir():
        reason = f"corpus not found at {CORPUS} (set TRACKRELAY_CORPUS)"
        pytest.fail(reason) if IN_CI else pytest.skip(reason)
    return CORPUS


def corpus_files(folder: str, pattern: str) -> list:
    """Files for pytest.mark.parametrize; a missing corpus yields one param that skips/fails."""
    files = sorted((CORPUS / folder).glob(pattern)) if CORPUS.is_dir() else []
    if not files:
        return [pytest.param(None, id=f"missing-corpus-{folder}")]
    return [pytest.param(p, id=p.name) for p in files]


@cache
def manifest() -> dict:
    return json.loads((require_corpus() / "manifest.json").read_text(encoding="utf-8"))
