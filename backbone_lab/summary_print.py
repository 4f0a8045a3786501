"""Print a run's headline numbers as a small table (rich when it is installed, plain text otherwise:
the table is cosmetic, so a machine without rich loses nothing but the frame); its paths in full
below it."""

from __future__ import annotations

PATH_KEYS = ("run_dir", "report")
"""Result keys holding paths: printed on lines of their own, never shortened, so they can be copied."""


def _rows(result: dict) -> list[tuple[str, str]]:
    return [(str(key), f"{value:.4g}" if isinstance(value, float) else str(value))
            for key, value in result.items() if key not in PATH_KEYS or result.get(key) is None]


def print_result(result: dict) -> None:
    title = f"backbone_lab run: {result.get('status', '?')}"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_table(title, _rows(result)))
    else:
        table = Table(title=title, show_header=False)
        for key, value in _rows(result):
            table.add_row(key, value)
        Console().print(table)
    paths = {k: result[k] for k in PATH_KEYS if result.get(k) is not None}
    width = max((len(k) for k in paths), default=0)
    for key, value in paths.items():
        print(f"{key:<{width}}  {value}", flush=True)  # plain print: a terminal's width never cuts a path


def plain_table(title: str, rows: list[tuple[str, str]]) -> str:
    """`title` over two left-aligned columns."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([title, *(f"  {k.ljust(width)}  {v}" for k, v in rows)])
