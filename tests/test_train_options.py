"""Every training option runs on the CPU and does what it says."""
from __future__ import annotations

import json
import shutil
import types

import pytest
import torch
from safetensors import safe_open

from train_helpers import (CaptureLogs, dora_merge_comfyui, dora_merge_trained, dora_modules, kohya_delta,
                           tiny_config, train_in_process, trained_weight, unet_inputs, unet_out)

OPTIONS = {
    "lion": dict(optimizer_type="Lion", learning_rate=1e-4),
    "prodigy": dict(optimizer_type="Prodigy", learning_rate=1.0, optimizer_args=["d_coef=2", "weight_decay=0.01"]),
    "adafactor": dict(optimizer_type="Adafactor"),
    "sgd+cosine+warmup": dict(optimizer_type="SGD", lr_scheduler="cosine_with_restarts", lr_warmup_steps=2,
                              lr_scheduler_num_cycles=2),
    "vpred+minsnr+offset": dict(v_parameterization=True, min_snr_gamma=5, noise_offset=0.1),
    "accum+checkpointing+batch": dict(gradient_accumulation_steps=2, gradient_checkpointing=True, train_batch_size=2),
    "no-cache+flip+shuffle+dropout": dict(cache_latents=False, flip_aug=True, shuffle_caption=True, keep_tokens=1,
                                          caption_dropout_rate=0.3, network_dropout=0.1),
    "te-only+clip_skip": dict(network_train_text_encoder_only=True, clip_skip=2, text_encoder_lr=1e-3),
    "no-bucket+no-sdpa": dict(enable_bucket=False, sdpa=False),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_trains(name, tiny_sd15, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, max_train_steps=4, **OPTIONS[name])
    t = train_in_process(cfg)
    events = [json.loads(x) for x in t.run.events_file.read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(e["loss"] == e["loss"] for e in steps)
    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        keys = list(f.keys())
        ups = [f.get_tensor(k) for k in keys if k.endswith("lora_up.weight")]
    assert any(u.abs().max() > 0 for u in ups), "the LoRA learned nothing"
    if cfg.network_train_text_encoder_only:
        assert keys and all(k.startswith("lora_te_") for k in keys)
    if name.startswith("sgd"):
        lrs = [e["lr"] for e in steps]
        assert lrs[0] < lrs[1], "warmup raises the learning rate"


def check_dora_file(t, path) -> dict[str, int]:
    """Every DoRA module of the saved file against the weights peft trained; returns the modules by kind.

    diffusers drops kohya `dora_scale` keys for SD models (it says so); ComfyUI and Forge apply them. The file
    holds peft's magnitude m per output row, shaped (out, 1) or (out, 1, 1, 1), so that ComfyUI's and Forge's
    weight_decompose take their per-output branch (dora_scale.shape[0] == weight.shape[0]). With DoRA's own
    formula, W' = m * (W + s*up@down) / ||W + s*up@down||_row, the file gives back the trained weights exactly.
    ComfyUI/Forge divide by ||W||_row instead (the original weight): the same direction per row, each row's
    length off by ||W + dW|| / ||W|| (docs/architecture.md, "DoRA files", has the figures)."""
    from safetensors.torch import load_file

    from core.lora.kohya_format import kohya_name

    sd = load_file(path)
    kinds: dict[str, int] = {}
    layers = dora_modules(t.comps.denoiser)
    assert layers and len([k for k in sd if k.endswith(".dora_scale")]) == len(layers)
    for name, layer in layers.items():
        key = kohya_name("lora_unet", name)
        base, trained = trained_weight(layer)
        delta = kohya_delta(sd, key, base.shape)
        dora = sd[key + ".dora_scale"]
        assert dora.shape == (base.shape[0],) + (1,) * (base.dim() - 1), (key, dora.shape)
        assert (dora_merge_trained(base, delta, dora) - trained).abs().max() < 1e-5, key
        comfy = dora_merge_comfyui(base, delta, dora)
        calc = base + delta
        row = lambda w: w.reshape(w.shape[0], -1).norm(dim=1).reshape(dora.shape)  # noqa: E731
        assert torch.allclose(comfy, trained * row(calc) / row(base), rtol=1e-4, atol=1e-6), key
        kind = "linear" if base.dim() == 2 else ("conv1x1" if base.shape[-1] == 1 else "conv3x3")
        kinds[kind] = kinds.get(kind, 0) + 1
    assert any((trained_weight(m)[1] - trained_weight(m)[0]).abs().max() > 1e-4 for m in layers.values())
    return kinds


def test_dora_file_gives_back_the_trained_weights(tiny_sd15, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, max_train_steps=4, use_dora=True, network_train_unet_only=True)
    t = train_in_process(cfg)
    assert set(check_dora_file(t, tmp_path / "lora.safetensors")) == {"linear"}


@pytest.mark.parametrize("extra", [dict(conv_dim=4, conv_alpha=2), dict(lora_proj=True)], ids=["conv_dim", "lora_proj"])
def test_dora_on_convolutions_saves_and_gives_back_the_trained_weights(extra, tiny_sd15, tiny_dataset, tmp_path):
    """peft keeps a Conv2d magnitude as (1, out, 1, 1): saving used to crash after the whole training. SD1.5's
    proj_in/proj_out are 1x1 convolutions, so lora_proj reaches the same code."""
    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, max_train_steps=3, use_dora=True, network_train_unet_only=True,
                      **extra)
    t = train_in_process(cfg)
    kinds = check_dora_file(t, tmp_path / "lora.safetensors")
    assert kinds.get("conv1x1") and kinds.get("linear")
    if "conv_dim" in extra:
        assert kinds.get("conv3x3")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lora.safetensors"), "pt") as f:
        meta = f.metadata()
    assert "peft" in meta["lw_dora_exact_in"] and meta["lw_dora_approximate_in"].startswith("ComfyUI, Forge")
    assert "AUTOMATIC1111" in meta["lw_dora_not_in"]


def test_latent_disk_cache_is_reused_and_invalidated(tiny_sd15, tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    common = dict(max_train_steps=1, cache_latents_to_disk=True, cache_dir=str(tmp_path / "cache"))
    train_in_process(tiny_config(tiny_sd15, data, tmp_path / "a", **common))
    files = sorted((tmp_path / "cache" / "latents").glob("*.safetensors"))
    assert len(files) == 4
    t = train_in_process(tiny_config(tiny_sd15, data, tmp_path / "b", **common))
    assert t.latent_cache.hits == 4
    from PIL import Image

    img = data / "10_zqx" / "img_000.png"
    Image.new("RGB", Image.open(img).size, (0, 0, 255)).save(img)
    t = train_in_process(tiny_config(tiny_sd15, data, tmp_path / "c", **common))
    assert t.latent_cache.hits == 3, "a changed image is encoded again"
    t = train_in_process(tiny_config(tiny_sd15, data, tmp_path / "d", resolution="96", **common))
    assert t.latent_cache.hits < 4, "a changed resolution is encoded again"


def reachable(root, type_name: str, limit: int = 5_000_000) -> list:
    """Objects of that class reachable from root through references (what keeps them alive)."""
    import gc

    seen, todo, found = {id(root)}, [root], []
    while todo and len(seen) < limit:
        obj = todo.pop()
        if type(obj).__name__ == type_name:
            found.append(obj)
            continue
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, (type, types.ModuleType)):
                seen.add(id(ref))
                todo.append(ref)
    assert len(seen) < limit, "the search stopped before it saw everything"
    return found


def test_text_encoder_outputs_cached_only_when_valid(tiny_sd15, tiny_dataset, tmp_path):
    # the default: cached, and with no sample prompts the text encoder and the VAE are freed after caching
    t = train_in_process(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "a", max_train_steps=2,
                                     network_train_unet_only=True))
    assert t.text_cache is not None and len(t.text_cache) == 4
    assert t.comps.text_encoders == [None] and t.comps.vae is None and t.comps.pipeline.vae is None
    assert not reachable(t, "AutoencoderKL"), "nothing the trainer keeps (the latent cache...) holds on to the VAE"
    assert "the text encoder(s) freed from memory" in (tmp_path / "a" / "lora" / "train.log").read_text()
    # with sample prompts the text encoder stays for them, and the VAE keeps its decoder only
    t = train_in_process(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "s", max_train_steps=2,
                                     network_train_unet_only=True, sample_prompts=["zqx --w 64 --h 64 --s 2"],
                                     sample_every_n_steps=1))
    assert t.comps.text_encoders[0] is not None and t.comps.vae.encoder is None and t.comps.vae.decoder is not None
    assert reachable(t, "AutoencoderKL") == [t.comps.vae]
    assert len(list((tmp_path / "s" / "lora" / "samples").glob("*.png"))) == 2
    # a trained text encoder is not cached (said in the log, not as a warning)
    t = train_in_process(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "b", max_train_steps=2,
                                     cache_text_encoder_outputs=True))
    assert t.text_cache is None and t.comps.text_encoders[0] is not None
    assert "not cached: the text encoder is trained" in (tmp_path / "b" / "lora" / "train.log").read_text()
    warnings = [json.loads(x)["message"] for x in t.run.events_file.read_text().splitlines() if '"warning"' in x]
    assert not any("cached" in w for w in warnings)


def test_same_seed_same_lora_and_diffusers_export(tiny_sd15, tiny_dataset, tmp_path, one_thread):
    a = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "a", max_train_steps=3, export_diffusers_format=True)
    b = tiny_config(tiny_sd15, tiny_dataset, tmp_path / "b", max_train_steps=3)
    train_in_process(a)
    train_in_process(b)
    from safetensors.torch import load_file

    ta, tb = load_file(tmp_path / "a" / "lora.safetensors"), load_file(tmp_path / "b" / "lora.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    d = load_file(tmp_path / "a" / "lora.diffusers.safetensors")
    assert all(k.startswith(("unet.", "text_encoder.")) and (".lora_A." in k or ".lora_B." in k) for k in d)
    from diffusers import StableDiffusionPipeline

    outs = []
    for name in ("lora.safetensors", "lora.diffusers.safetensors"):
        pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15)
        with CaptureLogs() as logs:
            pipe.load_lora_weights(str(tmp_path / "a" / name))
        assert logs.key_problems() == []
        outs.append(unet_out(pipe.unet, unet_inputs(pipe.unet, "sd15")))
    assert (outs[0] - outs[1]).abs().max() < 1e-5, "both formats apply the same change"
