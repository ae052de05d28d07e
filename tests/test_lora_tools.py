"""LoRA tools against reference computations: diffusers' own LoRA loading and adapter stacking, from_single_file,
dense SVDs, known low-rank changes."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core.lora.tools import (ToolError, check_lora, convert_lora, extract_lora, inspect_lora, merge_into_base,
                             merge_loras, resize_lora)
from train_helpers import CaptureLogs, kohya_delta, run_cli, te_out, tiny_config, train_in_process, unet_inputs, unet_out


def _train(model, data, out, **kw):
    cfg = tiny_config(model, data, out, max_train_steps=3, **kw)
    train_in_process(cfg)
    return out / "lora.safetensors"


@pytest.fixture(scope="module")
def loras(tiny_sd15, tiny_sdxl, tmp_path_factory):
    from tiny_models import make_tiny_dataset

    root = tmp_path_factory.mktemp("tool_loras")
    data = make_tiny_dataset(root / "data")
    return {
        "a": _train(tiny_sd15, data, root / "a", network_train_unet_only=False, conv_dim=2, conv_alpha=1, lora_ff=True),
        "b": _train(tiny_sd15, data, root / "b", network_train_unet_only=False, seed=3, network_dim=2, network_alpha=2),
        "xl": _train(tiny_sdxl, data, root / "xl", network_train_unet_only=False),
    }


def _sd15(model):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32)


def _outputs(pipe, family="sd15"):
    inputs = unet_inputs(pipe.unet, family)
    return unet_out(pipe.unet, inputs), te_out(pipe.text_encoder, pipe.tokenizer)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_inspect_reports_family_format_rank_and_metadata(loras):
    info = inspect_lora(loras["a"])
    assert info["family"] == "sd15" and info["format"] == "kohya"
    assert info["modules"] == sum(info["parts"].values()) and set(info["parts"]) == {"unet", "text_encoder"}
    assert info["rank"] == "mixed" and info["ranks"] == {4: 172, 2: 13} and info["conv_rank"] == 2
    assert info["summary"]["top_tags"][0] == ["zqx", 4] and info["summary"]["steps"] == "3"
    xl = inspect_lora(loras["xl"])
    assert xl["family"] == "sdxl" and xl["rank"] == 4 and xl["alpha"] == 2
    assert set(xl["parts"]) == {"unet", "text_encoder", "text_encoder_2"}
    # SDXL uses the penultimate layer, so the last text-encoder layer gets no gradient: said, not hidden
    assert any("never trained" in w for w in xl["warnings"])
    res = run_cli("lora", "inspect", str(loras["b"]), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert (data["family"], data["format"], data["rank"], data["alpha"]) == ("sd15", "kohya", 2, 2)


def test_check_accepts_the_right_base_and_refuses_another_family(loras, tiny_sd15, tiny_sdxl):
    ok = check_lora(loras["a"], str(tiny_sd15))
    assert ok["ok"] and ok["mapped"] == ok["modules"] == 235 and ok["unmapped"] == []
    bad = check_lora(loras["xl"], str(tiny_sd15))
    assert not bad["ok"] and "an SDXL LoRA; the base model is SD1.5" in bad["message"]
    res = run_cli("lora", "check", str(loras["xl"]), "--base", str(tiny_sd15))
    assert res.returncode == 1 and "SDXL LoRA" in res.stdout
    # same family, other layer sizes: every module is named and refused by shape
    wrong = check_lora(loras["a"], str(tiny_sdxl))
    assert not wrong["ok"]


def test_merged_lora_equals_diffusers_stacking_at_the_strengths(loras, tiny_sd15, tmp_path):
    out = tmp_path / "ab.safetensors"
    s = merge_loras([(loras["a"], 0.7), (loras["b"], -0.5)], out)
    assert s.written == 235
    ref = _sd15(tiny_sd15)
    ref.load_lora_weights(str(loras["a"]), adapter_name="a")
    ref.load_lora_weights(str(loras["b"]), adapter_name="b")
    ref.set_adapters(["a", "b"], [0.7, -0.5])
    want_unet, want_te = _outputs(ref)
    pipe = _sd15(tiny_sd15)
    base_unet, _ = _outputs(pipe)
    with CaptureLogs() as logs:
        pipe.load_lora_weights(str(out))
    assert logs.key_problems(text_encoder_trained=True) == []
    got_unet, got_te = _outputs(pipe)
    assert (want_unet - base_unet).abs().max() > 1e-3
    assert _rel(got_unet, want_unet) < 1e-4 and _rel(got_te, want_te) < 1e-4
    # per module: the merged change is exactly 0.7 dA - 0.5 dB (kohya math on the file tensors)
    a, b, m = load_file(loras["a"]), load_file(loras["b"]), load_file(out)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    shape = (m[key + ".lora_up.weight"].shape[0], m[key + ".lora_down.weight"].shape[1])
    want = 0.7 * kohya_delta(a, key, shape) - 0.5 * kohya_delta(b, key, shape)
    assert torch.allclose(kohya_delta(m, key, shape), want, atol=1e-6)
    assert m[key + ".alpha"].item() == m[key + ".lora_down.weight"].shape[0] == 6


def test_merge_to_rank_is_the_truncated_svd_of_the_sum(loras, tmp_path):
    out = tmp_path / "r2.safetensors"
    s = merge_loras([(loras["a"], 1.0), (loras["b"], 1.0)], out, rank=2)
    a, b, m = load_file(loras["a"]), load_file(loras["b"]), load_file(out)
    key = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj"
    shape = (m[key + ".lora_up.weight"].shape[0], m[key + ".lora_down.weight"].shape[1])
    dense = kohya_delta(a, key, shape) + (kohya_delta(b, key, shape) if key + ".alpha" in b else 0)
    u, sv, vh = torch.linalg.svd(dense.double())
    best = (u[:, :2] * sv[:2]) @ vh[:2]
    assert torch.allclose(kohya_delta(m, key, shape).double(), best, atol=1e-5)
    assert s.details["retained"]["unet.up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj"] == \
        pytest.approx(float((sv[:2] ** 2).sum().sqrt() / (sv ** 2).sum().sqrt()), rel=1e-4)


def test_resize_at_full_rank_is_exact_and_lower_ranks_reach_the_svd_optimum(loras, tiny_sd15, tmp_path):
    full = tmp_path / "full.safetensors"
    resize_lora(loras["a"], full, rank=4)
    pipe = _sd15(tiny_sd15)
    pipe.load_lora_weights(str(loras["a"]))
    want = _outputs(pipe)
    pipe = _sd15(tiny_sd15)
    pipe.load_lora_weights(str(full))
    got = _outputs(pipe)
    assert _rel(got[0], want[0]) < 1e-4 and _rel(got[1], want[1]) < 1e-4
    low = tmp_path / "low.safetensors"
    s = resize_lora(loras["a"], low, rank=2)
    a, r = load_file(loras["a"]), load_file(low)
    for key in ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
                "lora_te_text_model_encoder_layers_0_mlp_fc1"):
        shape = (a[key + ".lora_up.weight"].shape[0], a[key + ".lora_down.weight"].shape[1])
        dense = kohya_delta(a, key, shape).double()
        sv = torch.linalg.svdvals(dense)
        err = torch.linalg.norm(kohya_delta(r, key, shape).double() - dense)
        assert float(err) == pytest.approx(float(sv[2:].pow(2).sum().sqrt()), rel=1e-4, abs=1e-7)
        assert r[key + ".lora_down.weight"].shape[0] == 2
    assert min(s.details["retained"].values()) < 1.0
    dyn = tmp_path / "dyn.safetensors"
    s = resize_lora(loras["a"], dyn, dynamic="sv_fro", param=0.9)
    assert all(f >= 0.9 - 1e-6 for f in s.details["retained"].values())
    with pytest.raises(ToolError, match="between 0 and 1"):
        resize_lora(loras["a"], tmp_path / "x.safetensors", dynamic="sv_fro", param=2)


def test_convert_keeps_the_diffusers_output(loras, tiny_sd15, tiny_sdxl, tmp_path):
    for name, model, family in (("a", tiny_sd15, "sd15"), ("xl", tiny_sdxl, "sdxl")):
        from diffusers import DiffusionPipeline

        out = tmp_path / f"{name}_diffusers.safetensors"
        s = convert_lora(loras[name], "diffusers", out, base=str(model))
        keys = list(load_file(out))
        assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in keys) and s.written == len(keys) // 2
        outs = []
        for f in (loras[name], out):
            pipe = DiffusionPipeline.from_pretrained(model, dtype=torch.float32)
            with CaptureLogs() as logs:
                pipe.load_lora_weights(str(f))
            assert logs.key_problems(text_encoder_trained=True) == []
            outs.append(unet_out(pipe.unet, unet_inputs(pipe.unet, family)))
        assert _rel(outs[1], outs[0]) < 1e-4
        back = tmp_path / f"{name}_back.safetensors"
        convert_lora(out, "kohya", back, base=str(model))
        orig, again = load_file(loras[name]), load_file(back)
        assert set(again) == set(orig)
        key = next(k[: -len(".alpha")] for k in orig if k.endswith(".alpha"))
        shape = (orig[key + ".lora_up.weight"].shape[0], orig[key + ".lora_down.weight"].shape[1])
        if orig[key + ".lora_down.weight"].dim() == 2:
            assert torch.allclose(kohya_delta(again, key, shape), kohya_delta(orig, key, shape), atol=1e-6)


def test_merged_checkpoint_loads_with_from_single_file_and_equals_base_plus_loras(loras, tiny_sd15, tmp_path):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "merged.safetensors"
    s = merge_into_base(str(tiny_sd15), [(str(loras["a"]), 0.7), (str(loras["b"]), 0.4)], out, save_precision="float")
    assert s.applied == 235 + 140 and not s.skipped
    ref = _sd15(tiny_sd15)
    ref.load_lora_weights(str(loras["a"]), adapter_name="a")
    ref.load_lora_weights(str(loras["b"]), adapter_name="b")
    ref.set_adapters(["a", "b"], [0.7, 0.4])
    want_unet, want_te = _outputs(ref)
    pipe = StableDiffusionPipeline.from_single_file(str(out), config=str(tiny_sd15), dtype=torch.float32)
    got_unet, got_te = _outputs(pipe)
    assert _rel(got_unet, want_unet) < 1e-3 and _rel(got_te, want_te) < 1e-3
    with pytest.raises(ToolError, match="already exists"):
        merge_into_base(str(tiny_sd15), [(str(loras["a"]), 1.0)], out)


def test_merged_sdxl_checkpoint_includes_both_text_encoders(loras, tiny_sdxl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    out = tmp_path / "xl.safetensors"
    s = merge_into_base(str(tiny_sdxl), [(str(loras["xl"]), 0.8)], out, save_precision="float")
    assert s.applied == 160
    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, dtype=torch.float32)
    ref.load_lora_weights(str(loras["xl"]), adapter_name="xl")
    ref.set_adapters(["xl"], [0.8])
    pipe = StableDiffusionXLPipeline.from_single_file(str(out), config=str(tiny_sdxl), dtype=torch.float32)
    inputs = unet_inputs(pipe.unet, "sdxl")
    assert _rel(unet_out(pipe.unet, inputs), unet_out(ref.unet, inputs)) < 1e-3
    for te, tok, rte in ((pipe.text_encoder, pipe.tokenizer, ref.text_encoder),
                         (pipe.text_encoder_2, pipe.tokenizer_2, ref.text_encoder_2)):
        assert _rel(te_out(te, tok), te_out(rte, tok)) < 1e-3


def test_extract_recovers_a_known_low_rank_change(tiny_sd15, tmp_path):

    pipe = _sd15(tiny_sd15)
    g = torch.Generator().manual_seed(1)
    known = {}
    with torch.no_grad():
        for name, mod in pipe.unet.named_modules():
            if name.endswith(("attn1.to_q", "attn2.to_v")):
                w = mod.weight
                d = torch.randn(w.shape[0], 2, generator=g) @ torch.randn(2, w.shape[1], generator=g) * 0.05
                w += d
                known[f"unet.{name}"] = d
        pipe.unet.time_embedding.linear_1.weight += 0.01  # changed, but not a layer LoRAs hold: reported
        pipe.text_encoder.get_submodule("encoder.layers.0.mlp.fc1").weight += 0.001  # below --min-diff: reported
    tuned = tmp_path / "tuned"
    pipe.save_pretrained(tuned)
    out = tmp_path / "extracted.safetensors"
    s = extract_lora(str(tiny_sd15), str(tuned), out, rank=2, clamp=1.0, save_precision="float")
    assert s.written == len(known)
    assert any("text encoder differs by at most" in n for n in s.notes)
    assert any(k == "unet.time_embedding.linear_1" and "not a layer LoRAs train" in why for k, why in s.skipped)
    sd = load_file(out)
    from core.lora.tools.names import name_table

    table = name_table("sd15", str(tiny_sd15))
    for key, d in known.items():
        k = table.kohya_out[key]
        got = kohya_delta(sd, k, d.shape)
        assert float((got - d).abs().max() / d.abs().max()) < 1e-4
    # clamping on by default changes the result only slightly, and is reported as retained fraction
    s2 = extract_lora(str(tiny_sd15), str(tuned), tmp_path / "clamped.safetensors", rank=1)
    assert 0.5 < min(s2.details["retained"].values()) < 1.0


def test_bad_inputs_get_clear_errors(loras, tiny_sd15, tmp_path):
    unet_file = next((tiny_sd15 / "unet").glob("*.safetensors"))
    with pytest.raises(ToolError, match="holds no LoRA modules"):
        inspect_lora(unet_file)
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"0")
    with pytest.raises(ToolError, match=".safetensors files only"):
        inspect_lora(ckpt)
    with pytest.raises(ToolError, match="is one of the inputs"):
        resize_lora(loras["a"], loras["a"], rank=2, overwrite=True)
    with pytest.raises(ToolError, match="different model families"):
        merge_loras([(loras["a"], 1), (loras["xl"], 1)], tmp_path / "m.safetensors")
    with pytest.raises(ToolError, match="SDXL LoRA; the base model is SD1.5"):
        merge_into_base(str(tiny_sd15), [(str(loras["xl"]), 1)], tmp_path / "c.safetensors")
    # a LoRA with a module no SD1.5 layer has: refused, nothing written
    sd = load_file(loras["b"])
    sd["lora_unet_not_a_layer.lora_down.weight"] = torch.zeros(2, 4)
    sd["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(4, 2)
    odd = tmp_path / "odd.safetensors"
    with safe_open(str(loras["b"]), "pt") as f:
        save_file(sd, str(odd), metadata=f.metadata())
    with pytest.raises(ToolError, match="do not map"):
        convert_lora(odd, "diffusers", tmp_path / "odd_d.safetensors")
    assert not (tmp_path / "odd_d.safetensors").exists()
    res = run_cli("lora", "resize", str(loras["a"]), "--rank", "2", "--out", str(loras["b"]))
    assert res.returncode == 2 and "already exists" in res.stderr and "Traceback" not in res.stderr


def test_loha_and_lokr_modules_apply_the_lycoris_math(loras, tiny_sd15, tmp_path):
    """Synthetic LyCORIS modules: inspect names the type, a merge into the base adds exactly the LoHa / LoKr change."""
    from diffusers import StableDiffusionPipeline

    g = torch.Generator().manual_seed(0)
    pipe = _sd15(tiny_sd15)
    q = pipe.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")
    k = pipe.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k")
    out_f, in_f = q.weight.shape
    r = 2
    ha = {n: torch.randn(*s, generator=g) * 0.1 for n, s in
          (("hada_w1_a", (out_f, r)), ("hada_w1_b", (r, in_f)), ("hada_w2_a", (out_f, r)), ("hada_w2_b", (r, in_f)))}
    w1 = torch.randn(2, 2, generator=g) * 0.1
    w2 = torch.randn(out_f // 2, in_f // 2, generator=g) * 0.1
    sd = {f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.{n}": t for n, t in ha.items()}
    sd["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha"] = torch.tensor(1.0)
    sd["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w1"] = w1
    sd["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w2"] = w2
    path = tmp_path / "lyco.safetensors"
    save_file(sd, str(path), metadata={"ss_base_model_version": "sd_v1"})
    info = inspect_lora(path)
    assert info["kinds"] == {"loha": 1, "lokr": 1} and info["network"] == "LoHa + LoKr"
    out = tmp_path / "lyco_merged.safetensors"
    s = merge_into_base(str(tiny_sd15), [(str(path), 1.0)], out, save_precision="float")
    assert s.applied == 2
    merged = StableDiffusionPipeline.from_single_file(str(out), config=str(tiny_sd15), dtype=torch.float32)
    mq = merged.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q").weight
    mk = merged.unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k").weight
    loha = (ha["hada_w1_a"] @ ha["hada_w1_b"]) * (ha["hada_w2_a"] @ ha["hada_w2_b"]) * (1.0 / r)
    lokr = torch.kron(w1, w2)  # no decomposed factor: scale 1
    assert torch.allclose(mq - q.weight, loha, atol=1e-5)
    assert torch.allclose(mk - k.weight, lokr, atol=1e-5)
    with pytest.raises(ToolError, match="only plain LoRA modules can be stacked exactly"):
        merge_loras([(path, 1.0)], tmp_path / "x.safetensors")


def test_dora_merged_into_the_base_reproduces_the_trained_model(tiny_sd15, tiny_dataset, tmp_path):
    """DoRA cannot be stacked or resized on its own, but merged into its base it gives exactly what was trained."""
    from diffusers import StableDiffusionPipeline

    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "run", max_train_steps=3, use_dora=True)
    trainer = train_in_process(cfg)
    unet = trainer.comps.denoiser.eval()
    inputs = unet_inputs(unet, "sd15")
    trained = unet_out(unet, inputs)
    lora = tmp_path / "run" / "lora.safetensors"
    out = tmp_path / "dora_merged.safetensors"
    s = merge_into_base(str(tiny_sd15), [(str(lora), 1.0)], out, save_precision="float")
    assert s.applied > 0
    merged = StableDiffusionPipeline.from_single_file(str(out), config=str(tiny_sd15), dtype=torch.float32)
    base = unet_out(_sd15(tiny_sd15).unet, inputs)
    assert (trained - base).abs().max() > 1e-3
    assert _rel(unet_out(merged.unet, inputs), trained) < 1e-3
    with pytest.raises(ToolError, match="DoRA"):
        resize_lora(lora, tmp_path / "r.safetensors", rank=2)
