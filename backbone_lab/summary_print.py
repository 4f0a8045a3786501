"""Print a run's headline numbers as a small table (rich when it is installed, plain text otherwise:
the table is cosmetic, so a machine without rich loses nothing but the frame)."""

from __future__ import annotations


def _rows(result: dict) -> list[tuple[str, str]]:
    return [(str(key), f"{value:.4g}" if isinstance(value, float) else str(value)) for key, value in result.items()]


def print_result(result: dict) -> None:
    title = f"backbone_lab run: {result.get('status', '?')}"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_table(title, _rows(result)))
        return
    table = Table(title=title, show_header=False)
    for key, value in _rows(result):
        table.add_row(key, value)
    Console().print(table)


def plain_table(title: str, rows: list[tuple[str, str]]) -> str:
    """`title` over two left-aligned columns."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join([title, *(f"  {k.ljust(width)}  {v}" for k, v in rows)])
