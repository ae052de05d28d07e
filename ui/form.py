"""The training form, generated from core.config.schema: one component per TrainConfig field.

Basic fields come first, grouped as in the schema; the other fields sit in one closed accordion
per group. Labels come from the key names, help text from the schema, limits from the schema.
Nothing here lists parameter names: add a field to TrainConfig and it appears in the form.
"""
from __future__ import annotations

import math
import types
from typing import Any, Callable, get_args, get_origin

import gradio as gr

from core.config.toml_io import ConfigError, validate
from core.config.fields import all_fields
from core.config.params import GROUPS
from core.config.schema import TrainConfig

from .labels import label_for

def _lenient_preprocess(self: gr.Number, payload: float | None) -> float | int | None:
    """gr.Number.preprocess without the range check."""
    if payload is None:
        return None
    return self.round_to_precision(payload, self.precision)


def schema_number(**kw: Any) -> gr.Number:
    """A gr.Number with the field's limits, whose out-of-range values still reach config_io.

    gr.Number itself would refuse them with a toast such as "Value 0 is less than minimum value 1."
    that does not say which of the form's numbers is wrong; config_io's message names the field.
    (The override is per instance: subclassing a component makes gradio write a .pyi file next to
    this module.)
    """
    comp = gr.Number(**kw)
    comp.preprocess = types.MethodType(_lenient_preprocess, comp)
    return comp


def _base_type(annotation: Any) -> Any:
    """int for int, float for Optional[float], list for list[str]..."""
    if get_origin(annotation) is list:
        return list
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and get_origin(annotation) is not None and len(args) == 1:
        return args[0]
    return annotation


def _step(default: Any) -> float:
    if isinstance(default, float) and default > 0:
        return 10 ** math.floor(math.log10(default))
    return 0.01


def make_component(meta: dict[str, Any], value: Any) -> gr.components.Component:
    """The Gradio component for one schema field."""
    name, kind = meta["name"], _base_type(meta["annotation"])
    info = f"{meta['help']} `{name}`"
    label = label_for(name)
    common = {"label": label, "info": info, "elem_id": f"field-{name}"}
    if kind is bool:
        return gr.Checkbox(value=bool(value), **common)
    if "choices" in meta:
        return gr.Dropdown(choices=meta["choices"], value=value, **common)
    if kind is list:
        return gr.Textbox(value="\n".join(value or []), lines=3, max_lines=12,
                          **{**common, "info": f"{meta['help']} One per line. `{name}`"})
    if kind in (int, float):
        lo = meta.get("ge", meta.get("gt"))
        hi = meta.get("le", meta.get("lt"))
        return schema_number(value=value, minimum=lo, maximum=hi, precision=0 if kind is int else None,
                            step=1 if kind is int else _step(meta["default"]), min_width=140, **common)
    return gr.Textbox(value="" if value is None else str(value), lines=1, **common)


Factory = Callable[[dict[str, Any], Any], gr.components.Component]


class SchemaForm:
    """Builds the form inside the current Blocks context and converts between values and configs."""

    def __init__(self) -> None:
        self.components: dict[str, gr.components.Component] = {}
        self.metas = {m["name"]: m for m in all_fields()}
        self.accordions: dict[str, gr.Accordion] = {}

    @property
    def names(self) -> list[str]:
        return list(self.components)

    @property
    def inputs(self) -> list[gr.components.Component]:
        return list(self.components.values())

    def build(self, initial: TrainConfig, *, custom: dict[str, Factory] | None = None,
              after_basic_group: dict[str, Callable[[], None]] | None = None,
              initial_family: tuple[str | None, list[str]] = (None, [])) -> None:
        """Basic fields up front (one row per group), then an accordion per group for the rest.

        ``custom`` replaces the component of a field (e.g. a model picker); ``after_basic_group``
        adds something right after a group's basic fields (e.g. the live step count after the data).
        """
        custom = custom or {}
        after = after_basic_group or {}
        by_group: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
        for m in self.metas.values():
            by_group[m["group"]].append(m)

        def add(meta: dict[str, Any]) -> None:
            value = getattr(initial, meta["name"])
            factory = custom.get(meta["name"], make_component)
            self.components[meta["name"]] = factory(meta, value)

        def rows(metas: list[dict[str, Any]], per_row: int) -> None:
            plain = [m for m in metas if _base_type(m["annotation"]) is not bool]
            flags = [m for m in metas if _base_type(m["annotation"]) is bool]
            for i in range(0, len(plain), per_row):
                with gr.Row(equal_height=True):
                    for m in plain[i:i + per_row]:
                        add(m)
            for i in range(0, len(flags), per_row):
                with gr.Row():
                    for m in flags[i:i + per_row]:
                        add(m)

        with gr.Column(elem_id="basic-settings"):
            for g, title in GROUPS.items():
                basic = [m for m in by_group[g] if m["basic"]]
                if not basic:
                    continue
                with gr.Group(elem_classes=["lw-group"]):
                    gr.Markdown(f"**{title}**", elem_classes=["lw-group-title"])
                    rows(basic, 3)
                if g in after:
                    after[g]()
        with gr.Column(elem_id="advanced-settings"):
            gr.Markdown("**Advanced settings** (the defaults are fine for a first LoRA)", elem_classes=["lw-group-title"])
            for g, title in GROUPS.items():
                adv = [m for m in by_group[g] if not m["basic"]]
                if adv:
                    with gr.Accordion(title, open=False, elem_id=f"adv-{g}") as acc:
                        rows(adv, 3)
                    self.accordions[g] = acc
        # advanced fields were created after the basic ones; keep schema order for inputs and outputs
        self.components = {n: self.components[n] for n in self.metas if n in self.components}
        for comp, visible in zip(self.family_outputs, self._visibility(*initial_family, initial)):
            comp.visible = visible

    # ------------------------------------------------------------------ fields per model family
    @property
    def family_outputs(self) -> list[Any]:
        """The components and group accordions whose visibility depends on the base model's family."""
        return ([self.components[n] for n in self.names if self.metas[n]["families"]]
                + [self.accordions[g] for g in self._family_groups()])

    def _family_groups(self) -> list[str]:
        """Advanced groups all of whose fields belong to some families (the Flux accordion)."""
        out = []
        for g in self.accordions:
            fams = {self.metas[n]["families"] for n in self.names if self.metas[n]["group"] == g and not self.metas[n]["basic"]}
            if fams and all(fams):
                out.append(g)
        return out

    def _visibility(self, family: str | None, needs: list[str], values: TrainConfig | dict[str, Any]) -> list[bool]:
        """Which family-specific fields to show: the advanced ones of the base model's family (all of them while
        the family is not known); the files a base model still needs (basic fields such as clip_l) only when it
        needs them."""

        def shown(name: str) -> bool:
            fams = self.metas[name]["families"]
            if family is None:
                return not self.metas[name]["basic"]
            if family not in fams:
                return False
            return not self.metas[name]["basic"] or name in needs

        out = [shown(n) for n in self.names if self.metas[n]["families"]]
        for g in self._family_groups():
            fams = {f for n in self.names if self.metas[n]["group"] == g for f in self.metas[n]["families"]}
            out.append(family is None or family in fams)
        return out

    def family_updates(self, family: str | None, needs: list[str], values: tuple | list,
                       fill: dict[str, Any] | None = None) -> list[Any]:
        """Visibility updates for `family_outputs`; `fill` gives new values for some of those fields."""
        fill = fill or {}
        names = [n for n in self.names if self.metas[n]["families"]] + [None] * len(self._family_groups())
        return [gr.update(visible=v, **({"value": fill[n]} if n in fill else {}))
                for n, v in zip(names, self._visibility(family, needs, {**self.data(values), **fill}))]

    # ------------------------------------------------------------------ values <-> configs
    def data(self, values: tuple | list) -> dict[str, Any]:
        """Form values (in ``inputs`` order) as a config dict for config_io.validate."""
        out: dict[str, Any] = {}
        for name, v in zip(self.names, values):
            kind = _base_type(self.metas[name]["annotation"])
            if kind is list:
                v = v or ""
            elif kind is str and v is None:
                v = ""
            elif kind is int and isinstance(v, float) and v.is_integer():
                v = int(v)
            out[name] = v
        return out

    def config(self, values: tuple | list) -> tuple[TrainConfig | None, list[str]]:
        """(config, []) if the form is valid, else (None, one line per problem)."""
        try:
            return validate(self.data(values)), []
        except ConfigError as e:
            return None, e.lines

    def best_effort(self, values: tuple | list) -> TrainConfig:
        """A config with every form value that is valid on its own (for live previews)."""
        cfg = TrainConfig()
        for k, v in self.data(values).items():
            try:
                setattr(cfg, k, v)
            except ValueError:
                continue
        return cfg

    def updates(self, source: TrainConfig | dict[str, Any], only: set[str] | None = None) -> list[Any]:
        """New values for every component (gr.skip() for fields not in ``only``)."""
        data = source.model_dump() if isinstance(source, TrainConfig) else source
        out: list[Any] = []
        for name in self.names:
            if (only is not None and name not in only) or name not in data:
                out.append(gr.skip())
                continue
            v = data[name]
            if isinstance(v, list):
                v = "\n".join(str(x) for x in v)
            out.append(v)
        return out
