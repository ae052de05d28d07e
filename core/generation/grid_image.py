"""A labelled image grid (rows = LoRA files, columns = strengths) for the Generate tab's compare grid."""
from __future__ import annotations

from typing import Any, Sequence

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Break text into lines no wider than width (at spaces, '-' and '_' when possible, else anywhere)."""
    lines: list[str] = []
    current = ""
    for ch in text:
        trial = current + ch
        if current and draw.textlength(trial, font=font) > width:
            cut = max(current.rfind(" "), current.rfind("-"), current.rfind("_"))
            if cut > 0:
                lines.append(current[:cut + 1].rstrip())
                current = current[cut + 1:].lstrip() + ch
            else:
                lines.append(current)
                current = ch
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def draw_grid(cells: list[list[Any]], row_labels: Sequence[tuple[str, str] | str], col_labels: Sequence[str]):
    """Lay the cell images out in a grid with column labels on top and row labels on the left."""
    from PIL import Image, ImageDraw

    rows, cols = len(cells), max(len(r) for r in cells)
    cw = max(im.width for r in cells for im in r)
    ch = max(im.height for r in cells for im in r)
    size = max(12, min(44, min(cw, ch) // 14))  # readable when the grid is shown scaled down
    font = _font(size)
    small = _font(max(10, size - 2))
    pad = max(4, size // 2)
    line_h = size + 4
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    label_w = min(max(cw, 160), 12 * size)
    row_lines = []
    for lab in row_labels:
        name, sub = (lab, "") if isinstance(lab, str) else lab
        lines = [(t, font) for t in _wrap(scratch, name, font, label_w - 2 * pad)]
        if sub:
            lines.append((sub, small))
        row_lines.append(lines)
    need_w = max((scratch.textlength(t, font=f) for ls in row_lines for t, f in ls), default=0)
    label_w = int(min(label_w, need_w + 2 * pad))
    col_lines = [_wrap(scratch, t, font, cw - 2 * pad) for t in col_labels]
    head_h = max(len(ls) for ls in col_lines) * line_h + 2 * pad

    grid = Image.new("RGB", (label_w + cols * cw, head_h + rows * ch), "white")
    draw = ImageDraw.Draw(grid)
    for c, lines in enumerate(col_lines):
        y = pad
        for t in lines:
            x = label_w + c * cw + (cw - draw.textlength(t, font=font)) / 2
            draw.text((x, y), t, fill="black", font=font)
            y += line_h
    for r, lines in enumerate(row_lines):
        y = head_h + r * ch + (ch - len(lines) * line_h) / 2
        for t, f in lines:
            draw.text((pad, y), t, fill="black", font=f)
            y += line_h
        for c, im in enumerate(cells[r]):
            grid.paste(im.convert("RGB"), (label_w + c * cw, head_h + r * ch))
    return grid
