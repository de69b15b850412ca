"""The committed ledger of finished cells: ``results/<name>_cells.csv``, one row per cell with its
protocol, read back so that a rerun (or a fresh clone, whose runs/ is empty) neither recomputes
nor drops a recorded cell, and merged under the ledger's lock (qdm.locks) with what other
processes recorded meanwhile."""
import csv
import json
from pathlib import Path

from qdm.checkpoint import csv_text
from qdm.errors import UserError
from qdm.experiments.protocol import protocol


def cells_csv(cells: list[dict]) -> str:
    """Every cell's numbers as CSV, its protocol as one JSON column (so it can be read back)."""
    return csv_text([{**c, "protocol": json.dumps(c["protocol"])} for c in cells])


def cell_device(cell: dict) -> str:
    """The device a recorded cell ran on ("not recorded" for cells from before the ledger kept it)."""
    return cell.get("device") or "not recorded"


def parse_value(text: str):
    """A CSV field as written by csv_text: an int, a float, None (empty) or the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text == "" else text


def recorded_cells(path: Path, preset: str, proto: dict, key) -> tuple[dict, list]:
    """The cells a results file ``<name>_cells.csv`` already holds: those of this preset and
    protocol by ``key(cell)``, and the others (written back untouched, never shown with these).
    Run folders live in runs/, which is not committed; results/ is. So a fresh clone continues a
    table or a study from what results/ records: a recorded cell is neither recomputed nor
    dropped. Rows from before the file had a protocol column were all scored with the preset's
    default protocol."""
    cells, others = {}, []
    if not Path(path).exists():
        return cells, others
    with open(path) as f:
        rows = list(csv.DictReader(f))
    try:
        for row in rows:
            cell = {**{k: parse_value(v) for k, v in row.items()}, "cls": row["cls"]}
            cell["protocol"] = json.loads(row["protocol"]) if row.get("protocol") else protocol(cell["preset"])
            if cell["preset"] == preset and cell["protocol"] == proto:
                cells[key(cell)] = cell
            else:
                others.append(cell)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not a cells file written by qdm ({type(e).__name__}: {e}); "
                        "restore it from git or move it away to start afresh") from None
    return cells, others


def merge_recorded(cells: dict, path: Path, preset: str, proto: dict, key) -> list:
    """Add to ``cells`` the cells another process recorded in ``path`` meanwhile (ours win, but a
    field only the file has, e.g. one a newer qdm records, is kept); return the file's cells of other
    protocols, to be written back with them."""
    recorded, others = recorded_cells(path, preset, proto, key)
    for k, cell in recorded.items():
        cells[k] = {**cell, **cells[k]} if k in cells else cell
    return others


def recorded_references(path: Path) -> dict:
    """The reference rows a written table (<name>.csv) records, per column, as ``reference_rows``
    gives them (the metrics the table shows): a grid takes them instead of measuring a column's
    floor and ceiling again (an earlier run's, whose runs/ folder is gone, e.g. in a fresh clone),
    and a table adds those of columns another process measured."""
    refs = {}
    if not Path(path).exists():
        return refs
    with open(path) as f:
        rows = list(csv.DictReader(f))
    try:
        for row in rows:
            ref = row["row"].removeprefix("ours ")
            if ref not in ("real-vs-real", "noise-vs-real"):
                continue
            for col, value in row.items():
                if col not in ("metric", "row", "Avg", "Std") and value not in ("", None):
                    column_refs = refs.setdefault(None if col == "all" else int(col), {})
                    column_refs.setdefault(ref, {})[row["metric"]] = float(value)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path} is not a table written by qdm ({type(e).__name__}: {e}); "
                        "restore it from git or move it away to start afresh") from None
    return refs
