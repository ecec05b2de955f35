"""The study report people look at: an interactive, offline plotly HTML page (sample grids are
:mod:`ase_search.images`)."""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_search.record import trial_preset

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = ["default_reference_point", "write_report"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ###################################################################### study report (HTML)
def default_reference_point(study: optuna.Study) -> tuple[float, float]:
    """Hypervolume reference point ``(fid, latency)`` tied to the full model.

    ``(2 x FID of the full model, latency of the full model)``: the hypervolume then measures the
    schedules that are faster than the full model and at most twice as bad, whatever garbage the
    search also tried. The full model's FID comes from its finished trial (or the study's
    ``full_fid`` attribute); without it, the point falls back to 10% beyond the worst FID and
    latency of the COMPLETE trials.
    """
    from ase_search.pareto import complete_trials, trial_schedule

    trials = complete_trials(study)
    if not trials:
        return (1.0, 1.0)
    full = [t for t in trials if trial_schedule(t).is_full]
    fid_full = min((t.values[0] for t in full), default=study.user_attrs.get("full_fid"))
    latency_full = study.user_attrs.get("full_latency", full[0].values[1] if full else None)
    if fid_full is not None and latency_full is not None:
        return (2.0 * float(fid_full), float(latency_full))

    def beyond(worst: float) -> float:
        return worst + 0.1 * abs(worst) if worst != 0 else 1.0

    return (beyond(max(t.values[0] for t in trials)), beyond(max(t.values[1] for t in trials)))


def write_report(study: optuna.Study, path: str | Path, *, grids: bool = True,
                 reference_point: Sequence[float] | None = None,
                 seeds: Collection[int] | None = None) -> Path:
    """Write one self-contained HTML report of a search study (works offline).

    Sections: FID vs acceleration of every trial with the Pareto front as a step line and the
    paper's seed schedules labelled; hypervolume after each trial; a heatmap of the front's
    schedules over ``t``; the Pareto table; and (``grids=True``) the sample grids the front trials
    saved, embedded as base64 PNG. plotly.js is inlined, so nothing is fetched when it is opened.

    Args:
        study: an ase-search study (see :func:`ase_search.pareto.open_study`).
        path: the ``.html`` file to write (atomically; parent folders are created).
        grids: embed the front trials' sample grids (``user_attrs["grid"]``).
        reference_point: hypervolume reference (fid, latency); default
            :func:`default_reference_point`.
        seeds: judge on these fresh seeds only (see :func:`~ase_search.fronts.study_verdict`).

    Returns:
        ``path``.
    """
    from optuna.trial import TrialState

    from ase_search.fronts import fronts_table, study_verdict, verdict_lines
    from ase_search.pareto import (
        complete_trials,
        pareto_table,
        pareto_front,
        seed_report,
        storage_location,
    )
    from ase_search.files import atomic_write_text

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"reports are written as HTML; got {path.name!r}, use a .html path")
    ref = tuple(reference_point) if reference_point is not None else default_reference_point(study)
    trials = complete_trials(study)
    front = pareto_front(study)
    presets = seed_report(study)
    table = pareto_table(study)
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))

    attrs = study.user_attrs
    title = f"ase-search study {study.study_name}"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _summary_html(study, states, len(front), storage_location(study)),
    ]
    verdict = study_verdict(study, seeds=seeds)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines(verdict))
    parts.append(f"<h2>Verdict: levers against fewer steps</h2><ul>{items}</ul>")
    if failed:
        reasons: dict[str, int] = {}
        for t in failed:
            reason = str(t.user_attrs.get("fail_reason") or "no reason recorded")
            reasons[reason] = reasons.get(reason, 0) + 1
        items = "".join(f"<li>{html.escape(r)} &times; {n}</li>" for r, n in reasons.items())
        parts.append(f"<details><summary>{len(failed)} failed trial(s), by reason</summary>"
                     f"<ul>{items}</ul></details>")
    dominated = [s for s in presets if not s.on_front]
    if presets:
        lines = [f"<li><b>{html.escape(s.name)}</b> (trial {s.trial}): "
                 + ("on the front" if s.on_front else
                    "dominated by trials " + ", ".join(str(n) for n in s.dominated_by))
                 + "</li>" for s in presets]
        parts.append(f"<h2>Paper presets</h2><p>{len(presets) - len(dominated)} of {len(presets)} "
                     f"seed schedules are on the front.</p><ul>{''.join(lines)}</ul>")

    figures = [
        ("Three fronts: steps-only, exits at the reference sampler, joint",
         _fronts_figure(verdict)),
        ("Hypervolume history", _hypervolume_figure(study, trials, ref)),
    ]
    heat = _schedule_heatmap(study, front)
    if heat is not None:
        figures.append(("Schedules on the front", heat))
    for k, (heading, fig) in enumerate(figures):
        # The first figure carries the whole plotly.js bundle inline; the others reuse it.
        div = fig.to_html(full_html=False, include_plotlyjs=(k == 0),
                          config={"displaylogo": False})
        parts.append(f"<h2>{html.escape(heading)}</h2>{div}")

    parts.append("<h2>Every configuration</h2><p>Latency is predicted (the sum of the run's "
                 "calls' costs); speedup is over the reference configuration; vs fewer steps: "
                 "the verdict rule's word on a lever's point in the quality window, on fresh "
                 "seeds (the discounted speedup over the cheapest steps-only configuration it "
                 "does not beat, or beyond / below the measured ladder).</p>")
    parts.append(_table_html(fronts_table(verdict)))
    parts.append("<h2>Pareto table of the trials</h2>")
    if table.empty:
        parts.append("<p>No COMPLETE trial yet.</p>")
    else:
        parts.append(_table_html(table))
    if grids:
        parts.append(_grids_html(study, front))

    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
           + "\n".join(parts)
           + f"\n<footer>{html.escape(_version_note(attrs))}</footer>\n</body>\n</html>\n")
    atomic_write_text(path, doc)
    path.chmod(0o644)  # the temporary file was private; a report is meant to be shared
    return path


def _version_note(attrs: dict[str, Any]) -> str:
    """``written by ase-search 0.2.0; study made with ase-search 0.1.0`` (the second part only
    when the study records its version)."""
    from ase_search import __version__

    note = f"written by ase-search {__version__}"
    made = attrs.get("ase_search_version")
    return note + (f"; study made with ase-search {made}" if made else "")


def _conditions_text(conditions: dict[str, Any]) -> str:
    """``load 1.02 before, 1.10 after (1 min); 2 CPUs, 1 torch thread; fastest of 5 rounds``."""
    parts = []
    before, after = conditions.get("load_before"), conditions.get("load_after")
    if before and after:
        parts.append(f"load {before[0]:.2f} before, {after[0]:.2f} after (1 min)")
    if conditions.get("cpus") is not None:
        parts.append(f"{conditions['cpus']} CPUs, {conditions.get('threads', '?')} torch "
                     f"thread(s)")
    if conditions.get("rounds") is not None:
        parts.append(f"fastest of {conditions['rounds']} rounds")
    return "; ".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td.schedule, th.schedule { text-align: left; font-family: monospace; }
tr.seed { background: #fff6d6; }
tr.dominated { color: #888; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.summary dt { font-weight: bold; }
figure { display: inline-block; margin: 0.5em; text-align: center; }
figure img { image-rendering: pixelated; max-width: 320px; }
.missing { color: #a00; }
footer { margin-top: 3em; color: #888; font-size: 0.8em; }
"""


def _summary_html(study: optuna.Study, states: dict[str, int], n_front: int,
                  location: str | None) -> str:
    attrs = study.user_attrs
    words = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running",
             "WAITING": "waiting"}
    counts = ", ".join(f"{n} {words.get(s, s.lower())}" for s, n in sorted(states.items()))
    rows: list[tuple[str, str]] = [
        ("architecture", str(attrs.get("arch", "?"))),
        ("storage", location or "in memory"),
        ("trials", f"{counts or 'none'}; {n_front} on the Pareto front"),
    ]
    if attrs.get("full_latency") is not None:
        rows.append(("full-model latency", f"{attrs['full_latency']:.4g} s per batch"))
    if attrs.get("full_fid") is not None:
        rows.append(("full-model FID", f"{attrs['full_fid']:.4g}"))
    if attrs.get("created"):
        rows.append(("created", str(attrs["created"])))
    conditions = (attrs.get("cost_model") or {}).get("conditions")
    if conditions:
        rows.append(("cost model profiled under", _conditions_text(conditions)))
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    config = attrs.get("config")
    if config:
        body += ("<dt>search config</dt><dd><pre>"
                 f"{html.escape(json.dumps(config, indent=2, sort_keys=True, default=str))}"
                 "</pre></dd>")
    return f"<dl class=\"summary\">{body}</dl>"


def _fronts_figure(verdict: Any) -> go.Figure:
    """FID (log axis) against speedup over the reference configuration: every configuration,
    the three fronts as staircases, and buttons that zoom on the quality window or show all."""
    import plotly.graph_objects as go

    f = verdict.fronts
    unit = f.reference_latency
    fig = go.Figure()

    def hover(p: Any) -> str:
        sd = f" ± {statistics.stdev(p.fids):.2f} ({len(p.fids)} seeds)" if (
            p.fids and len(p.fids) > 1) else ""
        return (f"{html.escape(p.label)}<br>FID {p.fid:.3g}{sd}<br>speedup "
                f"{unit / p.latency:.2f}x<br>{p.latency / f.batch_size * 1e3:.2f} ms/sample")

    groups = (("steps-only (full model)", [p for p in f.points if p.kind == "steps-only"],
               {"symbol": "circle", "size": 8, "color": "#2ca02c"}),
              ("exit configurations", [p for p in f.points if p.kind == "exit"],
               {"symbol": "x", "size": 7, "color": "#888888"}))
    for name, pts, marker in groups:
        fig.add_trace(go.Scatter(x=[unit / p.latency for p in pts], y=[p.fid for p in pts],
                                 mode="markers", name=name, marker=marker,
                                 hovertext=[hover(p) for p in pts], hoverinfo="text"))
    for name, pts, color, dash in (("steps-only front", f.steps_only, "#2ca02c", "solid"),
                                   ("exits-only front (reference sampler)",
                                    f.exits_at_reference, "#1f77b4", "dot"),
                                   ("joint front", f.joint, "#d62728", "dash")):
        line = sorted(pts, key=lambda p: (-p.latency, p.fid))  # speedup rising, FID rising
        fig.add_trace(go.Scatter(x=[unit / p.latency for p in line], y=[p.fid for p in line],
                                 mode="lines+markers", line_shape="vh", name=name,
                                 line={"color": color, "dash": dash}, marker={"color": color},
                                 hovertext=[hover(p) for p in line], hoverinfo="text"))
    fids = [p.fid for p in f.points if p.fid > 0]
    buttons = []
    if f.reference is not None and fids:
        top = verdict.window * f.reference.fid
        fig.add_hline(y=top, line={"color": "#999", "dash": "dot"},
                      annotation_text=f"quality window: FID <= {verdict.window:g} x reference")
        low = min(fids)
        zoom = [math.log10(low * 0.9), math.log10(top * 1.6)]
        whole = [math.log10(low * 0.9), math.log10(max(fids) * 1.1)]
        # both axes zoom on the window: the speedups of points at FID 400+ would otherwise
        # stretch the x axis and squeeze every useful point into its left tenth
        inside = [unit / p.latency for p in f.points if p.fid <= top * 1.6] or [1.0]
        x_zoom = [0.0, max(inside) * 1.1]
        x_whole = [0.0, max(unit / p.latency for p in f.points) * 1.05]
        buttons = [{"label": "quality window", "method": "relayout",
                    "args": [{"yaxis.range": zoom, "xaxis.range": x_zoom}]},
                   {"label": "full range", "method": "relayout",
                    "args": [{"yaxis.range": whole, "xaxis.range": x_whole}]}]
        fig.update_yaxes(range=zoom)
        fig.update_xaxes(range=x_zoom)
    fig.update_layout(
        xaxis_title="speedup over the reference configuration (predicted latency)",
        yaxis_title="FID (log axis, lower is better)", yaxis_type="log",
        template="plotly_white", height=560,
        updatemenus=[{"type": "buttons", "direction": "right", "x": 1.0, "y": 1.12,
                      "xanchor": "right", "buttons": buttons}] if buttons else [])
    return fig


def _hypervolume_figure(study: optuna.Study, trials: list,
                        ref: Sequence[float]) -> go.Figure:
    import plotly.graph_objects as go

    from ase_search.pareto import hypervolume_history

    history = hypervolume_history(study, ref)
    fig = go.Figure(go.Scatter(x=[t.number for t in trials], y=history, mode="lines+markers",
                               line_shape="hv", name="hypervolume"))
    fig.update_layout(
        xaxis_title="trial number", yaxis_title="hypervolume (FID x latency)",
        title=f"reference point: FID {ref[0]:.4g}, latency {ref[1]:.4g} s",
        template="plotly_white", height=380)
    return fig


def _schedule_heatmap(study: optuna.Study, front: list, bin_width: float = 0.01
                      ) -> go.Figure | None:
    import plotly.graph_objects as go

    from ase_search.pareto import StudyError, full_latency_of, trial_acceleration, trial_schedule

    full = full_latency_of(study)
    rows = []
    for t in front:
        try:
            rows.append((t, trial_schedule(t), trial_acceleration(t, full)))
        except StudyError:
            continue
    if not rows:
        return None
    rows.sort(key=lambda r: (-1.0 if math.isnan(r[2]) else r[2], r[0].number))
    n_bins = round(1 / bin_width)
    centres = [(k + 0.5) / n_bins for k in range(n_bins)]
    z = [[s.blocks_at(c) for c in centres] for _, s, _ in rows]  # (front trials, t bins)
    labels = [f"#{t.number}" + (f" {trial_preset(t)}" if trial_preset(t) else "")
              + (f" ({a:.0%})" if not math.isnan(a) else "") for t, _, a in rows]
    depth = max(s.depth for _, s, _ in rows)
    fig = go.Figure(go.Heatmap(
        z=z, x=centres, y=labels, zmin=1, zmax=depth, colorscale="Viridis",
        colorbar={"title": {"text": "blocks"}},
        hovertemplate="%{y}<br>t = %{x:.3f}<br>blocks %{z}<extra></extra>"))
    fig.update_layout(
        xaxis_title="t (0 = data, 1 = noise)", yaxis_title="front trial (acceleration)",
        yaxis_type="category", template="plotly_white", height=max(300, 28 * len(rows) + 160))
    return fig


def _cell(value: Any, column: str) -> str:
    """One table cell as text: percentages for accelerations, yes/no for flags, blank for
    missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if isinstance(value, float):
        if column == "acceleration":
            return f"{value:.2%}"
        if column == "speedup":
            return f"{value:.2f}x"
        return f"{value:.4g}"
    return str(value)


def _table_html(table: Any) -> str:
    """A table as HTML; rows of seed presets and rows off the front get CSS classes."""
    head = "".join(f"<th class=\"{c}\">{html.escape(c.replace('_', ' '))}</th>"
                   for c in table.columns)
    body = []
    for row in table.to_dict("records"):
        classes = " ".join(c for c, on in (("seed", bool(row.get("preset"))),
                                           ("dominated", row.get("on_front") is False
                                            or row.get("joint_front") is False)) if on)
        tds = "".join(f"<td class=\"{c}\">{html.escape(_cell(row[c], c))}</td>"
                      for c in table.columns)
        body.append(f"<tr class=\"{classes}\">{tds}</tr>")
    return f"<table class=\"pareto\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}" \
           "</tbody></table>"


def _grids_html(study: optuna.Study, front: list) -> str:
    from ase_search.pareto import study_dir

    base = study_dir(study) or Path.cwd()
    items = []
    for t in sorted(front, key=lambda t: t.values[1]):
        grid = t.user_attrs.get("grid")
        if not grid:
            continue
        file = Path(grid) if Path(grid).is_absolute() else base / grid
        if not file.is_file() and (Path.cwd() / grid).is_file():
            file = Path.cwd() / grid  # a path written relative to the search's working folder
        caption = f"trial {t.number}" + (f" ({trial_preset(t)})" if trial_preset(t) else ""
                                         ) + f", FID {t.values[0]:.4g}"
        try:
            data = file.read_bytes()
        except OSError:
            items.append(f"<p class=\"missing\">{html.escape(caption)}: sample grid not found at "
                         f"{html.escape(str(file))}</p>")
            continue
        if not data.startswith(_PNG_MAGIC):
            items.append(f"<p class=\"missing\">{html.escape(caption)}: {html.escape(str(file))} "
                         "is not a PNG</p>")
            continue
        encoded = base64.b64encode(data).decode("ascii")
        items.append(f"<figure><img alt=\"samples of trial {t.number}\" "
                     f"src=\"data:image/png;base64,{encoded}\"><figcaption>"
                     f"{html.escape(caption)}</figcaption></figure>")
    if not items:
        return "<h2>Sample grids</h2><p>No front trial saved a sample grid.</p>"
    return "<h2>Sample grids</h2>" + "".join(items)
