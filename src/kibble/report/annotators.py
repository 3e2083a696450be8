"""Round-report sections on the humans: annotator quality (gold, agreement, speed, flags) and guideline feedback.

`round_sections(ws, round_dir)` is listed in `kibble.report.round.ROUND_SECTIONS`; it reads
`annotator_quality.json` and `guideline_feedback.csv` written by `kibble merge` and returns [] when
the round has neither.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kibble.data.classes import ClassList
from kibble.paths import Workspace
from kibble.annotation.assess import FEEDBACK_FILE, QUALITY_FILE
from kibble.report.document import Section, escape, table_html, thumbnail_uri

QUALITY_TABLE = ["annotator", "n_answers", "gold_n", "gold_accuracy", "weight", "kappa_mean", "agreement_with_others", "answers_per_hour", "flagged", "flag_reason"]


def quality_section(round_dir: Path) -> list[Section]:
    path = Path(round_dir) / QUALITY_FILE
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    table = pd.DataFrame(data.get("annotators") or [])
    if table.empty:
        return []
    table = table.reindex(columns=QUALITY_TABLE)
    table = table.astype(object).where(table.notna(), float("nan"))
    agree = data.get("agreement") or {}
    method = {"cohen_kappa": "Cohen's kappa", "krippendorff_alpha": "Krippendorff's alpha (nominal)"}.get(agree.get("method"), "agreement")
    value = agree.get("value")
    flagged = data.get("flagged") or []
    lines = [
        f"<p>{int(data.get('n_gold_items', 0))} gold items hidden in the queue; flag threshold: gold accuracy below "
        f"{data.get('config', {}).get('threshold', 0.8):.2f} (with at least {data.get('config', {}).get('min_gold', 5)} gold answers). "
        f"Flagged: <b>{escape(', '.join(flagged) or 'none')}</b>.</p>",
        f"<p>{escape(method)} on {int(agree.get('n_items', 0))} items answered by several annotators: "
        f"<b>{'-' if value is None else f'{value:.3f}'}</b>.</p>",
        table_html(table, row_classes=["fail" if f is True else "" for f in table["flagged"]]),
    ]
    pairs = pd.DataFrame(agree.get("pairs") or [])
    if len(pairs):
        lines += ["<h3>Pairwise Cohen's kappa</h3>", table_html(pairs.astype(object).where(pairs.notna(), float("nan")))]
    lines.append("<p>Votes are weighted by the label policy (<code>policy.annotator_weighting</code>): "
                 "weight = log((K-1)p/(1-p)), p = gold accuracy with a Laplace prior.</p>")
    return [Section("Annotator quality", "\n".join(lines))]


def feedback_section(ws: Workspace, round_dir: Path, max_rows: int = 15) -> list[Section]:
    path = Path(round_dir) / FEEDBACK_FILE
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if table.empty:
        return []
    display = ClassList.load(ws.classes).display_names if ws.classes.is_file() else {}
    paths = {}
    if ws.manifest.is_file():
        manifest = pd.read_parquet(ws.manifest, columns=["sample_id", "path"])
        paths = dict(zip(manifest["sample_id"].astype(str), manifest["path"].astype(str)))
    rows = []
    for rec in table.head(max_rows).to_dict("records"):
        cards = []
        for sid in [s for s in rec["examples"].split("|") if s]:
            rel = paths.get(sid)
            full = (Path(rel) if Path(rel).is_absolute() else ws.data_root / rel) if rel else None
            uri = thumbnail_uri(full, size=96) if full is not None else None
            img = f'<img src="{uri}" alt="{escape(sid)}" title="{escape(sid)}" style="width:96px;height:96px;object-fit:cover">' if uri else escape(sid)
            cards.append(img)
        rows.append(
            f"<tr><td>{escape(display.get(rec['class_a'], rec['class_a']))} vs {escape(display.get(rec['class_b'], rec['class_b']))}</td>"
            f"<td>{escape(rec['n_ambiguous'])}</td>"
            f"<td>{escape(rec['n_disagreements'])}</td><td>{escape(rec['n_annotators'])}</td>"
            f"<td style='text-align:left'>{escape(rec['notes'])}</td><td>{''.join(cards)}</td></tr>"
        )
    body = (
        "<p>Class pairs that confuse annotators most (ambiguous verdicts and disagreements on the same item), "
        f"with their notes: where the guideline needs a sharper rule or a better example. Full table: <code>{escape(path.name)}</code>.</p>"
        '<table class="sortable"><thead><tr><th>class pair</th><th>ambiguous</th><th>disagreements</th><th>annotators</th>'
        f"<th>notes</th><th>examples</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return [Section("Guideline feedback", body)]


def round_sections(ws: Workspace, round_dir: Path) -> list[Section]:
    """Annotator quality and guideline feedback of one round ([] when the round has neither)."""
    return quality_section(Path(round_dir)) + feedback_section(ws, Path(round_dir))
