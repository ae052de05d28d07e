"""What the Tools tab shows: HTML tables of `lora inspect` / `lora check`, the summary lines of a tool, error lines,
output paths; and the "About the chosen LoRAs" box of the Generate tab. The LoRA tools (core.lora.tools, which
import torch) are imported in the functions only, so building a tab stays fast."""
from __future__ import annotations

import html
import json
import traceback
from pathlib import Path
from typing import Any

# CLI words in core's messages -> the GUI's controls
GUI_WORDS = (("or pass --overwrite", 'or tick "Overwrite"'), ("--overwrite", '"Overwrite"'), ("--out ", "Output "),
             ("--rank N", "a rank"), ("--rank", "Rank"), ("--conv-rank", "Conv rank"), ("--dynamic", "Dynamic rank"),
             ("--param", "Dynamic parameter"), ("--clamp-quantile", "Clamp quantile"), ("--min-diff", "Min diff"),
             ("--save-precision", "Save precision"))


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def gui_words(message: str) -> str:
    for cli, gui in GUI_WORDS:
        message = message.replace(cli, gui)
    return message


def error_html(message: str) -> str:
    return f'<div class="lw-err" role="alert">Error: {esc(gui_words(message))}</div>'


def error_of(e: Exception) -> str:
    """An exception as one error line: a ToolError (or another ValueError) says what to do; anything else is
    unexpected, its traceback goes to the app's log."""
    if not isinstance(e, (ValueError, FileNotFoundError)):
        traceback.print_exc()
        text = (str(e).strip().splitlines() or [""])[0][:400]
        return error_html(f"{type(e).__name__}: {text}" if text else type(e).__name__)
    return error_html(str(e))


def table_html(rows: list[tuple[Any, Any]] | list[list[Any]], head: tuple[str, ...] = (), cls: str = "") -> str:
    if not rows:
        return ""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<table class="lw-table {esc(cls)}">' + (f"<thead><tr>{th}</tr></thead>" if th else "")
            + f"<tbody>{body}</tbody></table>")


def _titled(title: str, table: str, empty: str = "") -> str:
    if not table:
        table = f'<div class="lw-small">{esc(empty)}</div>' if empty else ""
    return f'<div class="lw-tools-block"><h4>{esc(title)}</h4>{table}</div>' if table else ""


def _mixed(value, counts: dict) -> str:
    if value == "mixed":
        return "mixed: " + ", ".join(f"{k} ({n} modules)" for k, n in counts.items())
    return "" if value is None else str(value)


def lora_rows(info: dict) -> list[tuple[str, str]]:
    rows = [("File", Path(info["file"]).name), ("Model family", info["family_title"]),
            ("Format", info["format_title"]), ("Network", info["network"]), ("Modules", info["modules"]),
            ("Rank", _mixed(info["rank"], info["ranks"])), ("Alpha", _mixed(info["alpha"], info["alphas"]))]
    if info.get("conv_rank") is not None:
        rows.append(("Convolutions", f"rank {info['conv_rank']}, alpha {info['conv_alpha']}"))
    rows += [("Saved as", info["dtype"]), ("Size", f"{info['size_bytes'] / 2**20:.1f} MiB"),
             ("Folder", str(Path(info["file"]).parent))]
    return rows


TRAINING_FIELDS = (("trigger", "Trigger words"), ("title", "Title"), ("base_model", "Trained on"),
                   ("base_model_hash", "Base model hash"), ("base_model_version", "Base model version"),
                   ("resolution", "Resolution"), ("epoch", "Epoch"), ("epochs", "Epochs planned"),
                   ("steps", "Steps"), ("images", "Images"), ("optimizer", "Optimizer"),
                   ("learning_rate", "Learning rate"), ("network_module", "Network module"),
                   ("network_args", "Network arguments"), ("dataset_hash", "Dataset hash"),
                   ("trained_at", "Trained at"))


def training_rows(summary: dict) -> list[tuple[str, str]]:
    rows = []
    for key, label in TRAINING_FIELDS:
        v = summary.get(key)
        if v in (None, "", {}, []):
            continue
        rows.append((label, json.dumps(v) if isinstance(v, dict) else str(v)))
    for d in summary.get("dataset", []):
        rows.append(("Dataset folder", f"{d.get('folder')}: {d.get('images')} images × {d.get('repeats')} repeats"))
    return rows


def warnings_html(warnings: list[str]) -> str:
    return "".join(f'<div class="lw-warn">⚠ {esc(w)}</div>' for w in warnings)


def inspect_html(info: dict) -> tuple[str, str, str]:
    """(warnings, the LoRA + training tables, the modules-per-part + top-tags tables)."""
    from core.lora.tools.names import PART_TITLES

    parts = [(PART_TITLES.get(p, p), n) for p, n in info["parts"].items()]
    tags = [(t, n) for t, n in info["summary"].get("top_tags", [])]
    left = (_titled("LoRA", table_html(lora_rows(info), cls="lw-kv"))
            + _titled("Training", table_html(training_rows(info["summary"]), cls="lw-kv"),
                      "This file holds no training metadata."))
    right = (_titled("Modules per part", table_html(parts, ("Part", "Modules")), "No module maps to a known layer.")
             + _titled("Top tags", table_html(tags, ("Tag", "Images")), "No tag frequencies in the metadata."))
    head = warnings_html(info["warnings"]) or '<div class="lw-ok">No problems found in this file.</div>'
    return head, left, right


def raw_metadata(meta: dict) -> dict:
    """The header metadata, with the values that hold JSON (tag frequencies, dataset folders) unpacked."""
    out = {}
    for k, v in sorted(meta.items()):
        try:
            out[k] = json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
        except ValueError:
            out[k] = v
    return out


def check_html(res: dict) -> str:
    msg = esc(res["message"])
    if res["ok"]:
        return f'<div class="lw-ok">✔ {msg}</div>'
    out = f'<div class="lw-err">✘ {msg}</div>'
    if res.get("unmapped"):
        rows = [(u["module"], u["reason"]) for u in res["unmapped"][:100]]
        more = len(res["unmapped"]) - len(rows)
        out += _titled(f"Modules that map to no layer ({len(res['unmapped'])})",
                       table_html(rows, ("Module", "Why"), cls="lw-unmapped"))
        if more > 0:
            out += f'<div class="lw-small">... and {more} more.</div>'
    return out


def summary_html(summary, note: str = "") -> str:
    """A tool's Summary: the first line in green, all its lines below (skipped modules included)."""
    lines = summary.lines()
    head = lines[0] if lines else f"{summary.action}: done."
    out = f'<div class="lw-ok">✔ {esc(head)}</div>'
    if note:
        out += f'<div class="lw-note">{esc(note)}</div>'
    rest = lines[1:]
    if rest:
        out += '<pre class="lw-errlines lw-summary">' + esc("\n".join(rest)) + "</pre>"
    return out


def output_path(folder: str, name: str, default: str) -> str:
    """Where an output named `name` (or `default` when empty) goes: `folder`, unless the name is a path."""
    name = (name or "").strip() or default
    p = Path(name).expanduser()
    if p.suffix.lower() != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    if not p.is_absolute() and len(p.parts) == 1:
        p = Path(folder).expanduser() / p
    return str(p)


def stem(path: str) -> str:
    p = Path(path or "")
    return p.stem if p.suffix else p.name


# --------------------------------------------------------------------------- the Generate tab's box
def about_loras(model: str, picks: list[str]) -> tuple[str, str]:
    """(the inspect tables of the chosen LoRAs, warning lines where one does not fit the base model)."""
    from core.ml_lock import ML_IMPORT_LOCK

    with ML_IMPORT_LOCK:  # not while the Generate engine imports/loads in another callback
        return _about_loras(model, picks)


def _about_loras(model: str, picks: list[str]) -> tuple[str, str]:
    from core.lora.tools import check_lora, inspect_lora

    about, warns = [], []
    for path in [p for p in picks if p]:
        if not Path(path).expanduser().is_file():
            continue  # lora_notes already says "not found"
        try:
            info = inspect_lora(path)
        except Exception as e:  # noqa: BLE001 - a broken file is shown, never raised
            about.append(error_of(e))
            continue
        tables = (_titled("LoRA", table_html(lora_rows(info), cls="lw-kv"))
                  + _titled("Training", table_html(training_rows(info["summary"]), cls="lw-kv")))
        about.append(f'<div class="lw-tools-about"><h3>{esc(Path(path).name)}</h3>{warnings_html(info["warnings"])}'
                     f'<div class="lw-tools-cols">{tables}</div></div>')
        if model and Path(model).expanduser().exists():  # a local base model (a hub id would need the network)
            try:
                res = check_lora(path, model)
            except Exception as e:  # noqa: BLE001
                warns.append(f'<div class="lw-warn">⚠ Could not check {esc(Path(path).name)} against the base '
                             f'model: {esc(gui_words(str(e)))}</div>')
                continue
            if not res["ok"] and not _family_noted(path, model, res):
                warns.append(f'<div class="lw-warn">⚠ {esc(res["message"])}</div>')
    return "".join(about) or '<div class="lw-small">Choose a LoRA above to see what it holds.</div>', "".join(warns)


def _family_noted(path: str, model: str, res: dict) -> bool:
    """Whether the Generate tab's LoRA notes already say that this LoRA is for another family (from its header)."""
    from core.generation.lora_files import family_warning, read_lora_info

    from .generate_choices import base_family

    header = read_lora_info(path)
    return res["lora_family"] != res["base_family"] and header is not None and bool(
        family_warning(header, base_family(model)))


def generate_lora_info(model_dd, lora_dds: list) -> None:
    """Under the Generate tab's LoRA pickers: the fit check (a warning line) and an "About the chosen LoRAs"
    accordion, both refreshed when a LoRA or the base model changes."""
    import gradio as gr  # here only: the rest of this module is plain functions (tested without gradio)

    check_box = gr.HTML("", elem_id="gen-lora-check")
    with gr.Accordion("About the chosen LoRAs", open=False, elem_id="gen-lora-about-box"):
        about_box = gr.HTML('<div class="lw-small">Choose a LoRA above to see what it holds.</div>',
                            elem_id="gen-lora-about")

    def update(model, *picks):
        return about_loras(model or "", list(picks))

    for comp in (model_dd, *lora_dds):
        comp.change(update, [model_dd, *lora_dds], [about_box, check_box], show_progress="hidden")
