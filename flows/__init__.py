"""Prefect flows and the command line: thin compositions of pipeline/ and models/.

Offline-safe defaults are set here, before any submodule imports prefect, so
that `python -m flows.X` behaves the same inside and outside `make`:
no analytics heartbeat, and Prefect's state kept in the project (.prefect/).
Values already in the environment win.
"""

import os
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
