"""Where the project's bundled assets and the shared real data live."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"


def shared_data_dir() -> Path:
    """The folder of real data made by others: env NRSTUDIO_DATA, default ../shared/data beside the repo."""
    env = os.environ.get("NRSTUDIO_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")
