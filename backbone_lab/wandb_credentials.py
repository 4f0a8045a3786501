"""Whether W&B can run online here: an API key in the environment or an api.wandb.ai entry in
~/.netrc. Torch-free, so `backbone_lab.compare` can decide online / offline without Lightning."""

from __future__ import annotations

import os
from pathlib import Path


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
