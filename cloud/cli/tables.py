"""How the console commands print what the API answered: a table for people that fits 80 columns, or
the API's JSON as one document (--json) for scripts.

Tables have no vertical rules and one space between columns; ids never wrap or get an ellipsis, the
free-text columns (labels, names, errors) fold instead. Labels read `k=v,k2=v2`, a missing value `-`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table


SHORT = 8  # a column no wider than this (yes/no, counts, states) is never folded; wider free text folds


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[dict[str, Any]], Any]
    key: bool = False  # an id: printed whole, never wrapped or cut
    optional: bool = False  # left out when no row has a value for it


def labels_text(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def print_rows(rows: list[dict[str, Any]], columns: Sequence[Column], *, as_json: bool) -> None:
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from rich.console import Console
    from rich.text import Text  # plain text: a label like "[x]" is not rich markup

    table = compact_table()
    columns = [c for c in columns if not c.optional or any(c.value(row) not in (None, "") for row in rows)]
    cells = [[_text(column.value(row)) for column in columns] for row in rows]
    console = Console()
    widths = [max([len(column.title), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    whole = [column.key or width <= SHORT for column, width in zip(columns, widths, strict=True)]
    needed = sum(w if keep else SHORT for w, keep in zip(widths, whole, strict=True)) + 2 * (len(columns) - 1)
    # no room for the free text beside long ids: it goes under the table, one line per row, named by its id
    below = [] if needed <= console.width else [i for i, keep in enumerate(whole) if not keep]
    for i, (column, width) in enumerate(zip(columns, widths, strict=True)):
        if whole[i]:  # ids, and short words and numbers, stay whole
            table.add_column(column.title, no_wrap=True, min_width=width)
        elif i not in below:
            table.add_column(column.title, overflow="fold", min_width=SHORT)
    for line in cells:
        table.add_row(*(Text(cell) for i, cell in enumerate(line) if i not in below))
    console.print(table)
    for line in cells if below else []:
        for i in below:
            console.print(Text(f"{line[0]}  {columns[i].title}: {line[i]}"), overflow="fold")


def compact_table(title: str | None = None) -> Table:
    """A rich Table without rules between columns (the divider is a space, plus one of padding): a
    boxed table spends 3 columns per column on borders, which 80 columns cannot spare."""
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
