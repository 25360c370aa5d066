"""`facegan study report DIR`: DIR/report.html (one self-contained file: pictures inlined, no scripts,
opens offline) and DIR/report.md (pictures in DIR/report/), from DIR/study.json and the trials' runs.

Per factor of a grid: a table of the settings and their numbers, the final sample grids side by side
(every trial draws its grid from the same fixed z: same seed), G and D losses of all settings
overlaid, the metric against the setting, and the best setting marked. A random search: the trials
sorted by the metric, and the metric against each sampled option."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from ..errors import FaceganError
from ..fileio import write_text_atomic
from ..images import _pyplot, _save_figure
from ..metric_names import STUDY_COLUMNS
from ..runs import RunFolder
from .runner import summarise
from .spec import folder_name

METRIC = "swd"  # what "best" means: the lowest SWD (x1e3) against the training images
COLUMNS = [("status", "status"), ("loss_d", "final D loss"), ("loss_g", "final G loss"),
           *((key, title) for key, title in STUDY_COLUMNS.items() if key != "msssim_real"),
           ("images_per_s", "images/s"), ("wall_s", "wall time")]


def _fmt(key, value) -> str:
    if value is None or value == "":
        return "–"
    if key == "wall_s":
        return f"{value / 60:.1f} min" if value >= 60 else f"{value:.0f} s"
    if isinstance(value, float):
        return f"{value:,.0f}" if key == "images_per_s" else f"{value:.4g}"
    return html.escape(str(value))


def trial_folder(out: Path, entry: dict) -> Path:
    """A study.json entry's run folder, never outside the study (study.json may have been edited)."""
    root = Path(out).resolve()
    path = (root / str(entry.get("run", ""))).resolve()
    if path.parent != root:
        raise FaceganError(f"{out}/study.json names a trial folder outside the study ({entry.get('run')!r}): "
                           f"the file was edited or damaged; run 'facegan study run' again to rewrite it")
    return path


def _sample_grid(out: Path, entry: dict) -> Path | None:
    """The trial's last sample grid (an epochs view: the grid of its epoch)."""
    samples = RunFolder(trial_folder(out, entry)).samples_dir
    if entry.get("view_of") and entry.get("factor") and entry["factor"].replace("-", "_") == "epochs":
        path = samples / f"epoch-{int(entry['settings'][entry['factor']]):04d}.png"
        return path if path.is_file() else None
    # The newest grid, whatever the trial's length: an epoch's, or a step's when it stopped mid-epoch.
    grids = sorted(samples.glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    return grids[-1] if grids else None


def _loss_rows(out: Path, entry: dict) -> list[dict]:
    rows = RunFolder(trial_folder(out, entry)).read_metrics("loss_d")
    if entry.get("view_of") and entry.get("factor", "").replace("-", "_") == "epochs" and rows:
        last_epoch = int(entry["settings"][entry["factor"]])
        rows = [r for r in rows if r["epoch"] <= last_epoch + 1e-6]
    return rows


def _plot_losses(out: Path, entries: list[dict], title: str, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for entry in entries:
        rows = [r for r in _loss_rows(out, entry) if math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"])]
        if rows:
            steps = [r["step"] for r in rows]
            style = {"marker": "o"} if len(rows) < 3 else {}  # a short trial logs one or two points: show them
            axes[0].plot(steps, [r["loss_d"] for r in rows], label=entry["name"], **style)
            axes[1].plot(steps, [r["loss_g"] for r in rows], label=entry["name"], **style)
    for ax, name in zip(axes, ("discriminator", "generator")):
        ax.set_title(f"{title}: {name} loss")
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:  # no legend for a factor whose trials logged nothing
            ax.legend(fontsize=8)
    return _save_figure(fig, path)


def _plot_metric(entries: list[dict], xs: list, xlabel: str, path: Path, scatter: bool = False) -> Path | None:
    points = [(x, e[METRIC]) for x, e in zip(xs, entries) if isinstance(e.get(METRIC), (int, float))]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
    if numeric:
        points.sort()  # a grid factor's settings in order; a random search's samples as a scatter
        ax.plot(*zip(*points), marker="o", linestyle="none" if scatter or len(points) < 2 else "-")
        if all(x > 0 for x, _ in points) and max(x for x, _ in points) / min(x for x, _ in points) >= 50:
            ax.set_xscale("log")
    else:
        ax.bar([str(x) for x, _ in points], [y for _, y in points])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("SWD x1e3 (lower is better)")
    return _save_figure(fig, path)


def _inline(path: Path | None, alt: str, width: int | None = None) -> str:
    if path is None or not Path(path).is_file():
        return f"<div class='missing'>{html.escape(alt)}: no picture</div>"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    size = f" width='{width}'" if width else ""
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'{size}>"


def _best(entries: list[dict]) -> str | None:
    scored = [e for e in entries if e.get("status") == "done" and isinstance(e.get(METRIC), (int, float))]
    return min(scored, key=lambda e: e[METRIC])["name"] if scored else None


def _table(entries: list[dict], best: str | None, extra: list[str] = ()) -> tuple[str, str]:
    shown = [(k, t) for k, t in COLUMNS if any(e.get(k) not in (None, "") for e in entries) or k == "status"]
    head = ["setting", *extra, *(t for _, t in shown)]
    html_rows, md_rows = [], []
    for e in entries:
        # Every value from the spec or a run is text, escaped: a spec value may hold markup.
        mark = " ★ best" if e["name"] == best else ""
        reason = f" ({html.escape(str(e['reason']))})" if e.get("reason") else ""
        view = f" (read from {html.escape(str(e['view_of']))})" if e.get("view_of") else ""
        cells = [html.escape(str(e["name"])) + mark, *(_fmt(k, e["settings"].get(k)) for k in extra),
                 *(_fmt(k, e.get(k)) + (reason if k == "status" else "") for k, _ in shown)]
        cells[0] += view
        html_rows.append("<tr" + (" class='best'" if mark else "") + ">" + "".join(f"<td>{c}</td>" for c in cells)
                         + "</tr>")
        md_rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    html_table = ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                  + "".join(html_rows) + "</table>")
    md_table = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n" + "\n".join(md_rows)
    return html_table, md_table


# No scripts, no fetches: the page shows inline pictures and its own style, whatever the values in it.
_CSP = ("<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">")
_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
th{background:#f3f3f3}tr.best td{background:#fff6d5;font-weight:600}.grids{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-size:12px;text-align:center}.missing{width:200px;height:200px;background:#eee;
font-size:12px;display:flex;align-items:center;justify-content:center}h2{margin-top:36px}"""


def _read_index(path: Path) -> dict:
    """study.json as the runner wrote it, or one line saying it is damaged and how to rebuild it."""
    rebuild = f"run 'facegan study run SPEC --out {path.parent}' again to rewrite it (finished trials are kept)"
    try:
        index = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError):
        raise FaceganError(f"{path} is damaged (not JSON): {rebuild}") from None
    shapes = {"trials": list, "base": dict, "mode": str}
    if not isinstance(index, dict) or any(not isinstance(index.get(k), t) for k, t in shapes.items()) or not all(
            isinstance(t, dict) and isinstance(t.get("settings", {}), dict) for t in index["trials"]):
        raise FaceganError(f"{path} is not a study index (it lacks trials, base or mode): {rebuild}")
    return index


def write_report(out) -> tuple[Path, Path]:
    out = Path(out)
    index_path = out / "study.json"
    if not index_path.is_file():
        raise FaceganError(f"{out} has no study.json: run 'facegan study run SPEC --out {out}' first")
    index = _read_index(index_path)
    pictures = out / "report"
    pictures.mkdir(exist_ok=True)
    trials = index["trials"]
    for t in trials:  # the run folders are the truth: numbers as they are now
        if t.get("status") in ("done", "diverged"):
            view = int(t["settings"][t["factor"]]) if t.get("view_of") and t.get("factor") == "epochs" else None
            t.update(summarise(trial_folder(out, t), view))
    base = ", ".join(f"{k} = {v}" for k, v in index["base"].items()) or "the defaults"
    done = sum(t.get("status") == "done" for t in trials)
    title = f"facegan study: {out.name}"
    html_parts = [f"<!doctype html><html><head><meta charset='utf-8'>{_CSP}<title>{html.escape(title)}</title>"
                  f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
                  f"<p>{len(trials)} settings ({done} done), {html.escape(index['mode'])} study around "
                  f"<code>{html.escape(base)}</code>. Best = lowest SWD (×10³) against the training images; "
                  f"MS-SSIM between samples measures diversity (lower = more diverse; real faces: "
                  f"{_fmt('msssim', next((t.get('msssim_real') for t in trials if t.get('msssim_real')), None))}). "
                  f"Sample grids use the same fixed z in every trial.</p>"]
    md_parts = [f"# {title}\n", f"{len(trials)} settings ({done} done), {index['mode']} study around `{base}`. "
                f"Best = lowest SWD (×10³); MS-SSIM between samples = diversity (lower = more diverse).\n"]
    if index["mode"] == "grid":
        groups = {}
        for t in trials:
            groups.setdefault(t["factor"], []).append(t)
        sections = [(factor, entries, [e["settings"][factor] for e in entries]) for factor, entries in groups.items()]
    else:
        ordered = sorted(trials, key=lambda t: (t.get(METRIC) is None, t.get(METRIC) or 0))
        sections = [(None, ordered, None)]
    for factor, entries, values in sections:
        best = _best(entries)
        slug = factor or "trials"
        heading = f"Factor: {factor}" if factor else "Trials, best first"
        extra = [] if factor else list(index["factors"])
        table_html, table_md = _table(entries, best, extra)
        losses = _plot_losses(out, entries, factor or "trials", pictures / f"{folder_name(slug)}-losses.png")
        metric_plots = ([_plot_metric(entries, values, factor, pictures / f"{folder_name(slug)}-metric.png")]
                        if factor else
                        [_plot_metric(entries, [e["settings"][k] for e in entries], k,
                                      pictures / f"metric-vs-{folder_name(k)}.png", scatter=True)
                         for k in index["factors"]])
        html_parts += [f"<h2>{html.escape(heading)}</h2>", table_html]
        md_parts += [f"\n## {heading}\n", table_md + "\n"]
        if factor and factor.replace("-", "_") == "epochs":
            note = "The epochs settings come from one run to the largest value, read at each epoch."
            html_parts.append(f"<p>{note}</p>")
            md_parts.append(note + "\n")
        html_parts.append("<div class='grids'>")
        for e in entries:
            grid = _sample_grid(out, e)
            label = e["name"] + (" ★" if e["name"] == best else "")
            html_parts.append(f"<figure>{_inline(grid, e['name'], 260)}"
                              f"<figcaption>{html.escape(label)}</figcaption></figure>")
            if grid:
                plain = folder_name(e["name"]).replace("=", "_").replace(",", "_")
                copy = pictures / f"{folder_name(slug)}-{plain}.png"
                copy.write_bytes(grid.read_bytes())
                md_parts.append(f"![{e['name']}](report/{copy.name}) ")
        html_parts.append("</div>")
        html_parts.append(_inline(losses, "losses"))
        md_parts.append(f"\n\n![losses](report/{losses.name})\n")
        for plot in metric_plots:
            html_parts.append(_inline(plot, "metric"))
            if plot:
                md_parts.append(f"![metric](report/{plot.name})\n")
    html_parts.append("</body></html>")
    html_path = write_text_atomic(out / "report.html", "\n".join(html_parts))
    md_path = write_text_atomic(out / "report.md", "\n".join(md_parts) + "\n")
    return html_path, md_path
