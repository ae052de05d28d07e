"""t5xxl_precision fp8 (Flux) on the CPU with the tiny Flux: while the captions are encoded T5's Linear weights are
float8_e4m3fn (computed in the training dtype), the cached T5 outputs are close to full precision's but not the
same, the LoRA has the same keys as without the mode, an fp8 T5 file is kept in fp8, and a model without T5 says the
setting is ignored."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.models.t5_fp8 import FP8, fp8_linear_weights, is_t5_fp8
from tiny_flux import make_tiny_flux
from train_helpers import tiny_config, train_in_process

T5_LEN = 32


@pytest.fixture(scope="module")
def tiny_flux_dev():
    return make_tiny_flux("dev")


def _cfg(model, data, out, **kw):
    return tiny_config(model, data, out, max_train_steps=4, t5xxl_max_token_length=T5_LEN, bucket_reso_steps=32,
                       network_train_unet_only=True, **kw)


class T5Seen:
    """T5 as Flux.cache_text uses it: the dtypes and device of its weights when each forward starts, and the dtype
    of what its Linear layers compute."""

    def __init__(self, monkeypatch):
        from core.models.flux import Flux

        self.stored: set[torch.dtype] = set()
        self.kept: set[torch.dtype] = set()  # embeddings and norms
        self.devices: set[str] = set()
        self.computed: set[torch.dtype] = set()
        self.calls = 0
        original = Flux.cache_text

        def cache_text(fam, comps, *args, **kw):
            t5 = comps.text_encoders[1]
            self.marked = is_t5_fp8(t5)
            handles = [t5.register_forward_pre_hook(lambda m, a: self._start(m))]
            handles += [m.register_forward_hook(lambda m, a, out: self.computed.add(out.dtype))
                        for m in t5.modules() if isinstance(m, torch.nn.Linear)]
            try:
                return original(fam, comps, *args, **kw)
            finally:
                for h in handles:
                    h.remove()

        monkeypatch.setattr(Flux, "cache_text", cache_text)

    def _start(self, t5) -> None:
        self.calls += 1
        self.stored |= {w.dtype for w in fp8_linear_weights(t5)}
        self.devices |= {str(w.device) for w in fp8_linear_weights(t5)}
        self.kept |= {t5.shared.weight.dtype} | {m.weight.dtype for n, m in t5.named_modules() if n.endswith("norm")}


def test_flux_trains_with_t5_in_fp8_while_caching(tiny_flux_dev, tiny_dataset, tmp_path, monkeypatch):
    cache = dict(cache_text_encoder_outputs_to_disk=True, cache_dir=str(tmp_path / "cache"))
    auto = train_in_process(_cfg(tiny_flux_dev, tiny_dataset, tmp_path / "auto", **cache))
    seen = T5Seen(monkeypatch)
    fp8 = train_in_process(_cfg(tiny_flux_dev, tiny_dataset, tmp_path / "fp8", t5xxl_precision="fp8", **cache))
    # while the captions were encoded: every Linear weight of T5 stored in fp8 on the device, computed in fp32
    assert seen.calls > 0 and seen.marked
    assert seen.stored == {FP8} and seen.devices == {"cpu"}
    assert seen.computed == {torch.float32} and seen.kept == {torch.float32}
    assert fp8.comps.text_encoders[1] is None and fp8.comps.pipeline.text_encoder_2 is None  # freed as before
    log = (tmp_path / "fp8" / "lora" / "train.log").read_text()
    assert "T5-XXL is stored in fp8 while caching (14 Linear weights as float8_e4m3fn, computed in float32" in log
    assert "T5-XXL stored in fp8 while caching; T5-XXL and CLIP-L freed from memory" in log
    assert "read from the disk cache" not in log  # auto's cached outputs are not reused: they differ
    # the cached T5 outputs: close to full precision's, not the same; CLIP-L's pooled output untouched
    rels = []
    for caption, full in auto.comps.extra["t5_cache"].items():
        got = fp8.comps.extra["t5_cache"][caption]
        assert got.dtype == full.dtype and got.shape == full.shape and not torch.equal(got, full)
        rels.append(((got - full).norm() / full.norm()).item())
        assert torch.nn.functional.cosine_similarity(got.flatten(), full.flatten(), dim=0) > 0.99
        assert torch.equal(fp8.comps.extra["text_cache"][caption].pooled, auto.comps.extra["text_cache"][caption].pooled)
    print(f"T5 in fp8 vs fp32: relative error of the cached outputs {min(rels):.4f}-{max(rels):.4f}")
    assert 0 < max(rels) < 0.1
    # the LoRA: the same keys, shapes and dtypes as without the mode
    a, b = load_file(str(tmp_path / "auto" / "lora.safetensors")), load_file(str(tmp_path / "fp8" / "lora.safetensors"))
    assert set(a) == set(b) and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


def test_an_fp8_t5_file_is_kept_in_fp8(tiny_flux_dev, tmp_path):
    """As ComfyUI's t5xxl_fp8_e4m3fn.safetensors: the fp8 Linear weights are used as stored (not upcast first), the
    embeddings and norms are upcast; computed in fp32 the result is exactly the upcast model's."""
    from core.models.flux_loading import load_t5, read_tensors

    sd = load_file(str(tiny_flux_dev / "text_encoder_2" / "model.safetensors"))
    path = tmp_path / "t5xxl_fp8_e4m3fn.safetensors"
    save_file({k: v.to(FP8) if v.is_floating_point() else v for k, v in sd.items()}, str(path))
    stored = load_file(str(path))
    folder = tiny_flux_dev / "text_encoder_2"
    t5 = load_t5(read_tensors(path, "", None), folder, torch.float32, path.name, fp8=True)
    linears = {n: m for n, m in t5.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears and is_t5_fp8(t5)
    for name, m in linears.items():
        assert m.weight.dtype == FP8 and torch.equal(m.weight.view(torch.uint8), stored[f"{name}.weight"].view(torch.uint8))
    assert t5.shared.weight.dtype == torch.float32 and torch.equal(t5.shared.weight, stored["shared.weight"].float())
    upcast = load_t5(read_tensors(path, "", torch.float32), folder, torch.float32, path.name)
    assert not is_t5_fp8(upcast) and {w.dtype for w in fp8_linear_weights(upcast)} == {torch.float32}
    ids = torch.randint(3, 60, (2, T5_LEN), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(t5(ids)[0], upcast(ids)[0])


def test_a_model_without_t5_says_t5xxl_precision_is_ignored(tiny_sd15, tiny_dataset, tmp_path):
    t = train_in_process(tiny_config(tiny_sd15, tiny_dataset, tmp_path, max_train_steps=1, t5xxl_precision="fp8"))
    assert t.comps.family.name == "sd15"
    log = (tmp_path / "lora" / "train.log").read_text()
    assert "t5xxl_precision does not apply to SD1.5 (it is for Flux.1) and is ignored." in log
