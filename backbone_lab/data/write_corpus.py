"""Write the project's synthetic stories to a text file, for the `data=local` path.

    python -m backbone_lab.data.write_corpus stories.txt [--stories 3000] [--seed 0]
    python -m backbone_lab data=local data.options.train_files=[stories.txt]

One story per paragraph (stories separated by a blank line), the layout `data=local` reads
(`datasets`' "text" builder, `sample_by="paragraph"`). The file is a pure function of
(stories, seed): the first k stories of any file are the k stories of a smaller one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backbone_lab.data.synthetic import generate_stories


def corpus_text(n_stories: int, seed: int = 0) -> str:
    """The text of a corpus of ``n_stories`` synthetic stories, blank-line separated, ending in a newline."""
    return "\n\n".join(generate_stories(n_stories, seed)) + "\n"


def write_corpus(path: str | Path, n_stories: int, seed: int = 0) -> Path:
    """Write :func:`corpus_text` to ``path`` (atomically); returns the path."""
    from backbone_lab.durable import atomic_write_text

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, corpus_text(n_stories, seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backbone_lab.data.write_corpus",
                                     description="Write synthetic stories to a text file (one story per paragraph).")
    parser.add_argument("path", help="text file to write, e.g. stories.txt")
    parser.add_argument("--stories", type=int, default=3000, help="number of stories (default 3000, about 1 MB)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    args = parser.parse_args(argv)
    if args.stories < 1:
        parser.error(f"--stories must be >= 1, got {args.stories}")
    path = write_corpus(args.path, args.stories, args.seed)
    print(f"wrote {args.stories} stories to {path}; train on them with: "
          f"python -m backbone_lab data=local data.options.train_files=[{path}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
