"""`rounds/NNN/review.html`: a review page that needs no server, for internal annotation rounds.

One self-contained HTML file (inline CSS and JavaScript, thumbnails embedded as JPEG data URIs, so it
opens from disk over file:// and survives being mailed). One card per queued item (by rank): the image
(aspect ratio kept), the given and the suggested class (`display (id)`), up to `n_examples`
confidently-labelled examples of each (train rows of that class with the highest out-of-fold
probability for their own label when the round has an oof.parquet, else any train rows of the class;
queued samples are never examples) and each class's guideline.

The reviewer answers with the keyboard (the page lists the keys): j/k or the arrows move, `c` confirms
the given label, `s` takes the suggestion, `1`-`9` correct to the class with that number, `/` opens a
type-ahead box for any class, `a` ambiguous, `o` out of scope, `u` clears, `n` writes a note. The
"Download reviews.csv" button writes `sample_id,label,verdict,annotator,note,queue_id,round` (label =
class id; empty for ambiguous / out of scope), which `kibble merge workspace=W reviews=reviews.csv`
reads. Answers are also kept in the browser's localStorage, so a reload loses nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kibble.data.classes import ClassList
from kibble.data.manifest import load_manifest, resolve_image_path
from kibble.io import atomic_write_text
from kibble.paths import Workspace
from kibble.report.document import escape, thumbnail_uri
from kibble.values import is_missing

log = logging.getLogger(__name__)
REVIEW_HTML = "review.html"
N_EXAMPLES = 3
CSV_COLUMNS = ["sample_id", "label", "verdict", "annotator", "note", "queue_id", "round"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222}
header{position:sticky;top:0;background:#fafafa;border-bottom:1px solid #ccc;padding:8px 16px;z-index:2}
header h1{font-size:1.2em;margin:0 0 4px} .keys{font-size:.8em;color:#444} .keys kbd{border:1px solid #bbb;border-radius:3px;padding:0 3px;background:#fff}
#status{font-weight:bold;margin-left:12px} #legend{font-size:.8em;color:#555}
main{padding:8px 16px} .item{display:flex;gap:16px;scroll-margin-top:140px;border:2px solid #ddd;border-radius:6px;padding:8px;margin:8px 0;align-items:flex-start}
.item.current{border-color:#1a73e8;box-shadow:0 0 0 3px #d2e3fc} .item.answered{background:#f3f9f4}
.shot{width:240px;height:240px;object-fit:contain;background:#eee;display:block}
.missing{width:240px;height:240px;background:#eee;color:#888;display:flex;align-items:center;justify-content:center}
.meta{width:200px;font-size:.85em;overflow-wrap:anywhere} .answer{font-weight:bold;color:#137333;margin-top:6px}
.cls{flex:1;font-size:.85em;min-width:0} .cls h3{font-size:1em;margin:0 0 4px}
.examples{display:flex;gap:4px;flex-wrap:wrap} .examples img{width:96px;height:96px;object-fit:contain;background:#eee}
.guideline{color:#444;margin-top:4px;white-space:pre-wrap} .note{width:180px;margin-top:6px}
#pick{position:fixed;top:30%;left:50%;transform:translateX(-50%);background:#fff;border:2px solid #1a73e8;padding:12px;display:none;z-index:3}
"""

JS = r"""
(function(){
  var KEY = 'kibble-review:' + location.pathname;
  var items = Array.prototype.slice.call(document.querySelectorAll('.item'));
  var classes = JSON.parse(document.getElementById('classes').textContent);
  var byId = {}; classes.forEach(function(c){ byId[c.id] = c; });
  var saved = {}; try { saved = JSON.parse(localStorage.getItem(KEY) || '{}'); } catch (e) { saved = {}; }
  var answers = saved.answers || {}, cur = 0;
  var annot = document.getElementById('annotator'), status = document.getElementById('status');
  var pick = document.getElementById('pick'), pickInput = document.getElementById('pick-input');
  annot.value = saved.annotator || '';
  items.forEach(function(item){  // the class example strips, rendered once, cloned into every card
    item.querySelectorAll('.examples[data-class]').forEach(function(slot){
      var strip = document.getElementById('examples-' + slot.dataset.class);
      if (strip) slot.appendChild(strip.cloneNode(true)).removeAttribute('id');
    });
    var note = item.querySelector('.note');
    note.addEventListener('change', function(){ var a = answers[item.dataset.queueId]; if (a) { a.note = note.value; save(); } });
  });
  function save(){ try { localStorage.setItem(KEY, JSON.stringify({annotator: annot.value, answers: answers})); } catch (e) {} }
  function shown(id){ return byId[id] ? byId[id].shown : id; }
  function render(item){
    var a = answers[item.dataset.queueId], el = item.querySelector('.answer');
    item.classList.toggle('answered', !!a);
    el.textContent = !a ? '' : a.verdict === 'confirmed' ? 'confirmed: ' + shown(a.label) : a.verdict === 'corrected' ? 'corrected to ' + shown(a.label) : a.verdict.replace('_', ' ');
    if (a) item.querySelector('.note').value = a.note || '';
  }
  function update(){
    var n = Object.keys(answers).length;
    status.textContent = n + ' of ' + items.length + ' answered';
    document.body.dataset.answered = n;
  }
  function go(i){
    if (!items.length) return;
    cur = Math.max(0, Math.min(items.length - 1, i));
    items.forEach(function(it, j){ it.classList.toggle('current', j === cur); });
    items[cur].scrollIntoView({block: 'nearest'});
    document.body.dataset.current = cur;
  }
  function answer(verdict, label){
    var item = items[cur]; if (!item) return;
    var given = item.dataset.given;
    if (verdict === 'label') {
      if (!label) { status.textContent = 'no class to give: this item has no given label or suggestion'; return; }
      verdict = label === given ? 'confirmed' : 'corrected';
    }
    answers[item.dataset.queueId] = {sample_id: item.dataset.sampleId, label: label || '', verdict: verdict,
      note: item.querySelector('.note').value, queue_id: item.dataset.queueId, round: item.dataset.round};
    render(item); save(); update(); go(cur + 1);
  }
  function openPick(){ pick.style.display = 'block'; pickInput.value = ''; pickInput.focus(); }
  function closePick(){ pick.style.display = 'none'; pickInput.blur(); }
  pickInput.addEventListener('keydown', function(e){
    if (e.key === 'Escape') { closePick(); e.preventDefault(); }
    if (e.key !== 'Enter') return;
    e.preventDefault();
    var text = pickInput.value.trim().toLowerCase(), hit = null;
    classes.forEach(function(c){ if (!hit && (c.id.toLowerCase() === text || c.shown.toLowerCase() === text || c.name.toLowerCase() === text)) hit = c; });
    if (!hit) classes.forEach(function(c){ if (!hit && text && c.shown.toLowerCase().indexOf(text) === 0) hit = c; });
    if (!hit) { pickInput.style.borderColor = '#c5221f'; return; }
    pickInput.style.borderColor = ''; closePick(); answer('label', hit.id);
  });
  document.addEventListener('keydown', function(e){
    var tag = (e.target.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea') { if (e.key === 'Escape' || (e.key === 'Enter' && e.target.classList.contains('note'))) e.target.blur(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var k = e.key, item = items[cur], done = true;
    if (k === 'j' || k === 'ArrowDown' || k === 'ArrowRight') go(cur + 1);
    else if (k === 'k' || k === 'ArrowUp' || k === 'ArrowLeft') go(cur - 1);
    else if (k === 'c') answer('label', item && item.dataset.given);
    else if (k === 's') answer('label', item && item.dataset.suggested);
    else if (k === 'a') answer('ambiguous');
    else if (k === 'o') answer('out_of_scope');
    else if (k === 'u' && item) { delete answers[item.dataset.queueId]; render(item); save(); update(); }
    else if (k === 'n' && item) item.querySelector('.note').focus();
    else if (k === '/') openPick();
    else if (/^[1-9]$/.test(k) && classes[+k - 1]) answer('label', classes[+k - 1].id);
    else done = false;
    if (done) e.preventDefault();
  });
  items.forEach(function(item, j){ item.addEventListener('click', function(){ go(j); }); });
  annot.addEventListener('input', save);
  function cell(v){ v = v == null ? '' : String(v); return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
  document.getElementById('download').addEventListener('click', function(){
    var who = annot.value.trim();
    if (!who) { status.textContent = 'type your name in the annotator box first'; annot.focus(); return; }
    var cols = %COLUMNS%, lines = [cols.join(',')];
    items.forEach(function(item){
      var a = answers[item.dataset.queueId]; if (!a) return;
      a.note = item.querySelector('.note').value;
      var row = Object.assign({}, a, {annotator: who});
      lines.push(cols.map(function(c){ return cell(row[c]); }).join(','));
    });
    var blob = new Blob([lines.join('\n') + '\n'], {type: 'text/csv'}), link = document.createElement('a');
    link.href = URL.createObjectURL(blob); link.download = 'reviews.csv';
    document.body.appendChild(link); link.click(); link.remove();
    status.textContent = (lines.length - 1) + ' answers downloaded as reviews.csv';
  });
  items.forEach(render); update(); go(0);
  document.body.dataset.scripted = 'yes';
})();
"""


def _shown(name: Any, classes: ClassList) -> str:
    if is_missing(name):
        return "none"
    display = classes.display_names.get(str(name), str(name))
    return display if display == str(name) else f"{display} ({name})"


def example_rows(manifest: pd.DataFrame, wanted: set[str], exclude: set[str], oof_path: Path | None, classes: ClassList,
                 n: int = N_EXAMPLES) -> dict[str, list[tuple[str, str]]]:
    """class id -> up to `n` (sample_id, path) train rows of that class: highest OOF probability for their label first
    (when `oof_path` is a readable store), else in manifest order. Samples in `exclude` (the queue) are skipped."""
    rows = manifest[manifest["label"].isin(list(wanted)) & ~manifest["sample_id"].isin(list(exclude))]
    if "split" in rows.columns:
        rows = rows[rows["split"] == "train"]
    rows = rows[["sample_id", "path", "label"]].reset_index(drop=True)
    rows["confidence"] = 0.0
    if oof_path is not None and oof_path.is_file() and len(rows):
        try:
            from kibble.predictions.store import read_store, stack

            oof, _ = read_store(oof_path, class_names=classes.names)
            pos = pd.Index(oof["sample_id"].astype(str)).get_indexer(rows["sample_id"].astype(str))
            probs = stack(oof)
            col = rows["label"].map(classes.index).to_numpy(dtype=np.int64)
            found = pos >= 0
            conf = np.full(len(rows), -1.0)
            conf[found] = probs[pos[found], col[found]]
            rows["confidence"] = conf
        except Exception as err:  # a stale or partial OOF must not cost the page: fall back to any train rows
            log.warning("%s: OOF not used for the review page's examples (%s)", oof_path, err)
    rows = rows.sort_values("confidence", ascending=False, kind="stable")
    return {str(label): list(zip(g["sample_id"].astype(str).head(n), g["path"].astype(str).head(n))) for label, g in rows.groupby("label", sort=False)}


def _class_block(cls: Any, title: str, classes: ClassList) -> str:
    if is_missing(cls):
        return f'<div class="cls"><h3>{escape(title)}: none</h3></div>'
    info = next((c for c in classes.classes if c.name == str(cls)), None)
    guideline = f'<div class="guideline">{escape(info.guideline)}</div>' if info is not None and info.guideline else ""
    return (f'<div class="cls"><h3>{escape(title)}: {escape(_shown(cls, classes))}</h3>'
            f'<div class="examples" data-class="{escape(classes.index.get(str(cls), ""))}"></div>{guideline}</div>')


def review_page_html(queue: pd.DataFrame, classes: ClassList, data_root: str | Path, manifest: pd.DataFrame,
                     oof_path: Path | None = None, title: str = "kibble review", n_examples: int = N_EXAMPLES,
                     thumb_size: int = 240, example_size: int = 96) -> str:
    """The whole review page for a queue table (DESIGN §3 queue columns) as one HTML string."""
    rows = queue.sort_values("rank", kind="stable") if "rank" in queue.columns else queue
    rows = rows.reset_index(drop=True)
    wanted = {str(v) for col in ("given_label", "suggested_label") if col in rows for v in rows[col] if not is_missing(v)}
    examples = example_rows(manifest, wanted, set(rows["sample_id"].astype(str)), oof_path, classes, n_examples)
    strips = []
    for name in classes.names:
        if name not in wanted:
            continue
        imgs = []
        for sid, path in examples.get(name, []):
            uri = thumbnail_uri(resolve_image_path(path, data_root), example_size)
            if uri:
                imgs.append(f'<img class="example" alt="{escape(sid)}" title="example: {escape(sid)}" data-sample-id="{escape(sid)}" src="{uri}">')
        strips.append(f'<div id="examples-{classes.index[name]}">{"".join(imgs) or "<i>no train examples</i>"}</div>')
    cards = []
    for i, item in enumerate(rows.to_dict("records")):
        given, suggested = item.get("given_label"), item.get("suggested_label")
        path = None if is_missing(item.get("path")) else resolve_image_path(str(item["path"]), data_root)
        uri = thumbnail_uri(path, thumb_size) if path is not None else None
        shot = f'<img class="shot" alt="{escape(item["sample_id"])}" src="{uri}">' if uri else '<div class="missing">image unreadable</div>'
        data = {"index": i, "sample-id": item["sample_id"], "queue-id": "" if is_missing(item.get("queue_id")) else item["queue_id"],
                "round": "" if is_missing(item.get("round")) else int(item["round"]), "rank": "" if is_missing(item.get("rank")) else item["rank"],
                "given": "" if is_missing(given) else given, "suggested": "" if is_missing(suggested) else suggested}
        if not data["queue-id"]:
            data["queue-id"] = f"row-{i}"  # answers are keyed by it in the page; the CSV keeps the queue's own (empty) value
        attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in data.items())
        score = "" if is_missing(item.get("score")) else f"score {float(item['score']):.3f} &middot; "
        reason = f"<div>{escape(item['reason'])}</div>" if not is_missing(item.get("reason")) else ""
        meta = (f'<div class="meta"><b>#{escape(data["rank"])}</b> {escape(item["sample_id"])}<div>{score}{escape(item.get("strategy", ""))}</div>'
                f'{reason}<div class="answer"></div><input class="note" placeholder="note (n)"></div>')
        cards.append(f'<div class="item"{attrs}>{shot}{meta}{_class_block(given, "given", classes)}{_class_block(suggested, "suggested", classes)}</div>')
    class_json = json.dumps([{"id": n, "name": classes.display_names.get(n, n), "shown": _shown(n, classes)} for n in classes.names])
    legend = " &middot; ".join(f"<kbd>{i + 1}</kbd> {escape(_shown(n, classes))}" for i, n in enumerate(classes.names[:9]))
    options = "".join(f'<option value="{escape(_shown(n, classes))}">' for n in classes.names)
    keys = ("<kbd>j</kbd>/<kbd>k</kbd> or arrows: next / previous &middot; <kbd>c</kbd> confirm the given label &middot; "
            "<kbd>s</kbd> take the suggestion &middot; <kbd>1</kbd>-<kbd>9</kbd> correct to that class &middot; <kbd>/</kbd> correct to any class "
            "(type its name, Enter) &middot; <kbd>a</kbd> ambiguous &middot; <kbd>o</kbd> out of scope &middot; <kbd>u</kbd> clear &middot; "
            "<kbd>n</kbd> note. Answers stay in this browser until you download them.")
    script = JS.replace("%COLUMNS%", json.dumps(CSV_COLUMNS))
    class_json = class_json.replace("</", "<\\/")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{escape(title)}</h1><label>annotator <input id="annotator" placeholder="your name or e-mail"></label> '
        f'<button id="download">Download reviews.csv</button><span id="status"></span>',
        f'<div class="keys">{keys}</div><div id="legend">{legend}</div></header>',
        f'<div id="pick">correct to class: <input id="pick-input" list="class-list" autocomplete="off"><datalist id="class-list">{options}</datalist></div>',
        f'<main>{"".join(cards) or "<p>The queue is empty.</p>"}</main>',
        f'<div id="example-strips" hidden>{"".join(strips)}</div>',
        f'<script type="application/json" id="classes">{class_json}</script>',
        f"<script>{script}</script></body></html>",
    ])


def write_review_page(ws: Workspace | str | Path, round_dir: str | Path, queue: pd.DataFrame | None = None) -> Path | None:
    """Write `round_dir/review.html` for the round's queue.csv; None (nothing written) when the round has no queue."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    round_dir = Path(round_dir)
    if queue is None:
        path = round_dir / "queue.csv"
        if not path.is_file():
            return None
        queue = pd.read_csv(path, dtype={"sample_id": str, "given_label": str, "suggested_label": str, "path": str, "queue_id": str})
    classes = ClassList.load(ws.classes)
    manifest = load_manifest(ws.manifest, classes.names)
    html = review_page_html(queue, classes, ws.data_root, manifest, round_dir / "oof.parquet", title=f"kibble review: round {round_dir.name}")
    return atomic_write_text(round_dir / REVIEW_HTML, html)
