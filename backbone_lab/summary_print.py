"""Print a run's headline numbers as a small rich table; its paths in full below it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

PATH_KEYS = ("run_dir", "report")
"""Result keys holding paths: printed on lines of their own, never shortened, so they can be copied."""


def print_result(result: dict) -> None:
    table = Table(title=f"backbone_lab run: {result.get('status', '?')}", show_header=False)
    paths = {k: result[k] for k in PATH_KEYS if result.get(k) is not None}
    for key, value in result.items():
        if key in paths:
            continue
        if isinstance(value, float):
            value = f"{value:.4g}"
        table.add_row(str(key), str(value))
    Console().print(table)
    width = max((len(k) for k in paths), default=0)
    for key, value in paths.items():
        print(f"{key:<{width}}  {value}", flush=True)  # plain print: a terminal's width never cuts a path
