"""Revisions of a Hugging Face hub repository as a checkpoint series (``huggingface_hub``).

``python -m backbone_lab.series.hub EleutherAI/pythia-160m step0 step1000 … [cache_dir=DIR]``
downloads (or finds in the cache) each revision with ``snapshot_download`` — only
``config.json`` and the weights (`ALLOW_PATTERNS`), never a copy — and prints the cache folder of
the repository, which ``python -m backbone_lab.analyze <that folder> trunk=gpt_neox`` then
analyses in place (its ``refs/step<N>`` name the revisions; `sources.discover`).
Without network access the first missing revision stops it with one line (`SeriesError`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from backbone_lab.series.sources import Checkpoint, SeriesError, step_of_name

ALLOW_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json"]
"""What comes down: the config and the safetensors weights (tokenizer, optimizer states and other
files stay on the hub)."""
FALLBACK_PATTERNS = ["config.json", "pytorch_model*.bin", "pytorch_model.bin.index.json"]
"""Only for a revision without safetensors: the torch weights (read with weights_only=True)."""


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def fetch_revisions(repo_id: str, revisions: Sequence[str], cache_dir: str | None = None, local_files_only: bool = False) -> list[Checkpoint]:
    """One `Checkpoint` per revision (its snapshot folder in the hub cache), downloading what is missing.

    Raises SeriesError naming the first revision that cannot be had (offline, unknown revision).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RevisionNotFoundError

    out = []
    for rev in revisions:
        step = step_of_name(rev)
        if step is None:
            raise SeriesError(f"{repo_id}@{rev}: the revision name carries no step (expected step<N>, e.g. step1000)")
        try:
            path = snapshot_download(repo_id, revision=rev, cache_dir=cache_dir, allow_patterns=ALLOW_PATTERNS,
                                     local_files_only=local_files_only)
            if not _has_weights(Path(path)):  # an older revision with torch weights only
                path = snapshot_download(repo_id, revision=rev, cache_dir=cache_dir, allow_patterns=FALLBACK_PATTERNS,
                                         local_files_only=local_files_only)
        except RevisionNotFoundError:
            raise SeriesError(f"{repo_id}@{rev}: no such revision on the hub; list the repository's branches (step<N>) and fix the name") from None
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError, HfHubHTTPError) as e:
            raise SeriesError(f"{repo_id}@{rev}: not in the cache and the hub cannot be reached ({type(e).__name__}); "
                              "run this where the hub is reachable, or copy the cache folder here") from None
        out.append(Checkpoint(step, Path(path), f"{repo_id}@{rev}"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2:
        print("usage: python -m backbone_lab.series.hub REPO_ID REVISION [REVISION ...] [cache_dir=DIR]", file=sys.stderr)
        return 2
    opts = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    revs = [a for a in argv[1:] if "=" not in a]
    try:
        cks = fetch_revisions(argv[0], revs, cache_dir=opts.get("cache_dir"))
    except SeriesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    repo_folder = cks[0].path.parent.parent
    print(f"{len(cks)} revisions in {repo_folder}")
    print(f"next: python -m backbone_lab.analyze {repo_folder} trunk=gpt_neox")
    return 0


if __name__ == "__main__":
    sys.exit(main())
