"""How the guided start, the live VRAM estimate and the guardrail warnings look: plain HTML from core's results
(core.config.guided, core.estimate, core.config.guardrails), no gradio, no training logic."""
from __future__ import annotations

import json

from .run_view import esc


def _sets(change: dict) -> str:
    return ", ".join(f"{k} = {json.dumps(v)}" for k, v in change.items())


def estimate_html(est, vram_gb: float | None, vram_source: str, problem: str = "") -> str:
    """Peak VRAM, fits / does not fit on the detected or chosen VRAM, and the cheapest changes that make it fit."""
    if problem:
        return f'<div class="lw-plan lw-fit" id="vram-estimate"><b>VRAM estimate:</b> {esc(problem)}</div>'
    if est is None:
        return ('<div class="lw-plan lw-fit" id="vram-estimate"><b>VRAM estimate:</b> choose a base model (or the '
                'family in Guided start) to see it.</div>')
    head = f"<b>VRAM estimate: {est.peak_vram_gb:.1f} GB peak</b> (training {est.training_gb:.1f}, caching " \
           f"{est.caching_gb:.1f})"
    if vram_gb is None:
        verdict = (f'<div class="lw-note">{esc(vram_source)}: choose your GPU\'s VRAM in Guided start to see '
                   'whether it fits.</div>')
    elif est.fits:
        verdict = f'<div class="lw-ok">Fits in {vram_gb:g} GB ({esc(vram_source)}).</div>'
    else:
        items = "".join(f"<li>{esc(s['change'])}: <code>{esc(_sets(s['set']))}</code> → {s['peak_vram_gb']:.1f} GB"
                        + (" (fits)" if s["fits"] else "") + "</li>" for s in est.suggestions)
        still = "" if est.suggestions and est.suggestions[-1]["fits"] else \
            '<div class="lw-err">Even then it does not fit: lower network_dim or the resolution further.</div>'
        verdict = (f'<div class="lw-err">Does not fit in {vram_gb:g} GB ({esc(vram_source)}).</div>'
                   + (f'<div class="lw-small">Cheapest changes, one after the other:</div><ul class="lw-problems">'
                      f'{items}</ul>' if items else "") + still)
    notes = "".join(f'<div class="lw-small">{esc(n)}</div>' for n in est.notes)
    return (f'<div class="lw-plan lw-fit" id="vram-estimate">{head}{verdict}{notes}<div class="lw-small">An estimate '
            'from published figures, not a measurement.</div></div>')


def guardrails_html(items) -> str:
    """The warnings shown above Start (training is not blocked)."""
    if not items:
        return ""
    lis = "".join(f'<li data-kind="{esc(g.kind)}"><code>{esc(g.key)}</code>: {esc(g.message)}</li>' for g in items)
    return (f'<div class="lw-guardrails" id="guardrails"><b>Check before you start ({len(items)}):</b>'
            f'<ul>{lis}</ul></div>')


def guided_html(g) -> str:
    """What the guided start chose and why."""
    if not g.ok:
        probs = "".join(f"<li>{esc(p)}</li>" for p in g.problems)
        return (f'<div class="lw-errors" id="guided-result"><b>{esc(g.headline or "Cannot fill the form yet:")}</b>'
                f'<ul>{probs}</ul></div>')
    reasons = "".join(f"<li>{esc(r)}</li>" for r in g.reasons)
    return (f'<div class="lw-plan" id="guided-result"><div class="lw-ok">{esc(g.headline)}</div>'
            '<div class="lw-small">Every value stays editable below. The estimate and the warnings follow your '
            'changes.</div>'
            f'<details><summary>Why these values ({len(g.reasons)})</summary><ul class="lw-small">{reasons}</ul>'
            '</details></div>')
