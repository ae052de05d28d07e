"""network_type loha / lokr: trained through peft, saved with LyCORIS tensor names under kohya module names that
ComfyUI and AUTOMATIC1111 map, applying exactly the trained change at the loaders' alpha / rank; resumable."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from core.config.toml_io import ConfigError, validate
from core.lora.kohya_format import kohya_name, text_encoder_module
from core.lora.lycoris import ADAPTER, lycoris_layers, parameter_count
from core.lora.tools.inspect import inspect_lora
from core.lora.tools.lorafile import read_lora
from core.models.ldm_convert import pipeline_to_ldm_state_dict
from core.train.trainer import Trainer
from test_lora_keys import a1111_finds, a1111_layer_names, comfy_keys
from train_helpers import run_cli, tiny_config, train_in_process

LOHA = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "alpha"}
LOKR = {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha"}
VARIANTS = {  # (family, network_type, options)
    "sd15-loha-tucker": ("sd15", "loha", dict(use_tucker=True)),
    "sd15-lokr-factor16-both": ("sd15", "lokr", dict(factor=16, decompose_both=True)),
    "sd15-lokr-default": ("sd15", "lokr", dict(network_dim=2, use_tucker=True)),
    "sdxl-lokr": ("sdxl", "lokr", dict(factor=8)),
}


def _file_modules(trainer) -> dict[str, torch.nn.Module]:
    """kohya module name in the file -> the trained peft LoHa / LoKr layer."""
    fam, out = trainer.comps.family, {}
    for key, model in trainer.trained_models(trainer.comps).items():
        prefix = "lora_unet" if key == "unet" else fam.te_lora_prefixes[int(key[2:])]
        rename = fam.unet_lora_module_name if key == "unet" else text_encoder_module
        for name, layer in lycoris_layers(model):
            out[kohya_name(prefix, rename(name))] = layer
    return out


@torch.no_grad()
def _trained_change(layer) -> torch.Tensor:
    """The change peft adds to the base weight, in its shape (peft's own delta, as its merge adds it; merged weight
    minus base weight would lose the small change to float rounding)."""
    layer.eval()
    return layer.get_delta_weight(ADAPTER).detach().float().reshape(layer.get_base_layer().weight.shape)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lycoris_file_applies_the_trained_change_with_loader_keys(variant, request, tiny_dataset, tmp_path):
    family, kind, opts = VARIANTS[variant]
    model = request.getfixturevalue(f"tiny_{family}")
    cfg = tiny_config(model, tiny_dataset, tmp_path, network_type=kind, conv_dim=2, conv_alpha=1, lora_ff=True,
                      max_train_steps=3, **opts)
    trainer = train_in_process(cfg)
    path = tmp_path / "lora.safetensors"
    lora = read_lora(path)
    layers = _file_modules(trainer)
    assert set(lora.modules) == set(layers) and len(layers) > 20
    suffixes = {s for m in lora.modules.values() for s in m.raw_suffixes}
    assert suffixes <= (LOHA if kind == "loha" else LOKR) and "alpha" in suffixes
    assert {m.kind for m in lora.modules.values()} == {kind}
    assert any(n.startswith("lora_te") for n in layers) and any("_conv" in n or "_in_layers_2" in n for n in layers)

    for name, layer in layers.items():  # the VRAM estimate counts what peft builds
        base = layer.get_base_layer()
        conv = isinstance(base, torch.nn.Conv2d)
        n = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        shape = (base.weight.shape[0], base.weight.shape[1], base.weight[0, 0].numel() if conv else 1)
        r = layer.r[ADAPTER]
        assert n == parameter_count(kind, *shape, r, cfg.factor, cfg.decompose_both, cfg.use_tucker), name

    changed, worst = 0, 0.0
    for name, layer in layers.items():
        want = _trained_change(layer)
        got = lora.modules[name].delta(tuple(want.shape))
        worst = max(worst, (got - want).abs().max().item() / max(want.abs().max().item(), 1e-8))
        changed += bool(want.abs().max() > 1e-6)
    assert changed > len(layers) // 2, "training changed (almost) nothing: the comparison would prove nothing"
    assert worst < 1e-5, f"the file applies a change that differs from the trained one by {worst:.2e} (relative)"

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        alphas = [f.get_tensor(k) for k in f.keys() if k.endswith(".alpha")]
    assert all(a.dtype == torch.float32 and a.dim() == 0 for a in alphas) and len(alphas) == len(layers)
    assert meta["ss_network_module"] == "lycoris.kohya"
    args = json.loads(meta["ss_network_args"])
    assert args["algo"] == kind and args["conv_dim"] == "2"
    info = inspect_lora(path)
    assert info["network"] == {"loha": "LoHa", "lokr": "LoKr"}[kind] and info["kinds"] == {kind: len(layers)}

    # every module is one that ComfyUI and AUTOMATIC1111 map to a layer of the same model as a checkpoint
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe = (StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline).from_pretrained(model)
    ldm = pipeline_to_ldm_state_dict(family, pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None))
    unet_modules = {k[: -len(".weight")] for k in pipe.unet.state_dict() if k.endswith(".weight")}
    names, comfy = a1111_layer_names(ldm, family), comfy_keys(ldm, unet_modules, family)
    assert sorted(m for m in layers if not a1111_finds(m, names, family)) == []
    assert sorted(m for m in layers if m not in comfy) == []


def test_lokr_scale_rules_of_the_file(tiny_sd15, tiny_dataset, tmp_path):
    """Both LoKr cases are present and written as the loaders read them: a decomposed factor -> alpha / rank of
    it; no decomposed factor -> scale 1 (LyCORIS trains such layers at scale 1, alpha = rank)."""
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, network_type="lokr", network_dim=2, network_alpha=1,
                      conv_dim=4, conv_alpha=1, max_train_steps=1, network_train_unet_only=True)
    trainer = train_in_process(cfg)
    lora = read_lora(tmp_path / "lora.safetensors")
    layers = _file_modules(trainer)
    full = [n for n, m in lora.modules.items() if m.rank is None]
    decomposed = [n for n, m in lora.modules.items() if m.rank is not None]
    assert full and decomposed
    assert all(lora.modules[n].scale == 1.0 and layers[n].scaling[ADAPTER] == 1.0 for n in full)
    assert all(lora.modules[n].scale == pytest.approx(layers[n].scaling[ADAPTER]) for n in decomposed)
    assert {round(lora.modules[n].scale, 6) for n in decomposed} <= {0.5, 0.25}  # 1 / 2 linear, 1 / 4 conv
    assert any(lora.modules[n].scale == pytest.approx(0.5) for n in decomposed)


def test_inspect_cli_reports_lokr(tiny_sd15, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, network_type="lokr", max_train_steps=1,
                      network_train_unet_only=True)
    train_in_process(cfg)
    r = run_cli("lora", "inspect", str(tmp_path / "lora.safetensors"))
    assert r.returncode == 0, r.stderr
    assert "LoKr" in r.stdout.splitlines()[0] and "lycoris.kohya" in r.stdout
    from core.generation.lora_files import read_lora_info

    info = read_lora_info(tmp_path / "lora.safetensors")  # the Generate tab refuses it with this (diffusers cannot)
    assert info.lycoris == "LoKr" and info.family == "sd15"


class _StopAt(Trainer):
    stop_at = 4

    def _report_step(self, *a, **kw):
        super()._report_step(*a, **kw)
        if self.global_step == self.stop_at:
            self.stop_requested = True


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_lycoris_resume_is_bit_identical(kind, tiny_sd15, tiny_dataset, tmp_path, one_thread):
    opts = dict(network_type=kind, conv_dim=2, max_train_steps=8, learning_rate=1e-3, rank_dropout=0.2,
                module_dropout=0.2, scale_weight_norms={"loha": 0.0012, "lokr": 0.02}[kind])  # reached by step 2-3
    ref = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "ref", **opts)
    train_in_process(ref)
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "resumed", **opts)
    assert _StopAt(cfg, echo=lambda m: None).train() == 3
    events = [json.loads(x) for x in (tmp_path / "resumed" / "lora" / "events.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in events if e["type"] == "step") == 4
    norms = [(e.get("keys_scaled"), e.get("max_key_norm")) for e in events if e["type"] == "step"]
    assert any(k for k, _ in norms), f"max-norm never scaled a LyCORIS layer: {norms}"
    assert Trainer(cfg, resume=True, echo=lambda m: None).train() == 0
    a, b = load_file(tmp_path / "ref" / "lora.safetensors"), load_file(tmp_path / "resumed" / "lora.safetensors")
    assert a.keys() == b.keys() and any(k.endswith((".hada_w1_a", ".lokr_w1")) for k in a)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst == 0.0, f"the resumed {kind} differs from the uninterrupted one by {worst}"


def test_locon_is_the_conv_lora_and_lycoris_refusals(tiny_sd15, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, network_type="locon", conv_dim=2, max_train_steps=1,
                      network_train_unet_only=True)
    train_in_process(cfg)
    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert any("_conv1.lora_down" in k for k in keys) and not any("hada" in k or "lokr" in k for k in keys)
    assert meta["ss_network_module"] == "networks.lora" and json.loads(meta["ss_network_args"])["conv_dim"] == "2"
    assert validate({"conv_dim": 4}).network_type == "lora"  # today's conv LoRA stays what it was
    for bad, words in ((dict(network_type="locon"), "conv_dim"),
                       (dict(network_type="loha", use_dora=True), "use_dora"),
                       (dict(network_type="lokr", network_dropout=0.1), "network_dropout"),
                       (dict(network_type="loha", base_precision="nf4"), "base_precision"),
                       (dict(network_type="loha", export_diffusers_format=True), "export_diffusers_format"),
                       (dict(network_type="loha", factor=8), "factor"),
                       (dict(use_tucker=True), "use_tucker"),
                       (dict(network_type="lokr", factor=0), "factor"),
                       (dict(network_type="lokr", model_family="flux"), "network_type")):
        with pytest.raises(ConfigError) as e:
            validate(bad)
        assert words in str(e.value), (bad, str(e.value))
