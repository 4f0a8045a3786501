"""Print a run's headline numbers as a small rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_result(result: dict) -> None:
    table = Table(title=f"backbone_lab run: {result.get('status', '?')}", show_header=False)
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        table.add_row(str(key), str(value))
    Console().print(table)
