"""Session-wide fixtures. Outputs go to tmp_path; shared corpora are read in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real public corpora (see its SOURCES.md). Read only."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests need ../shared beside the repository")
    return SHARED_DATA
