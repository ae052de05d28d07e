"""Low-VRAM modes on the CPU with tiny models: base_precision fp8 / nf4 train a LoRA with the same keys as auto,
blocks_to_swap gives the same LoRA as no swapping, and bad values are refused by name; CPU training keeps freed memory for reuse."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.config.toml_io import ConfigError, validate
from tiny_flux import make_tiny_flux
from tiny_klein import make_tiny_klein
from train_helpers import tiny_config, train_in_process

REPO = Path(__file__).resolve().parent.parent

T5_LEN = 32


def _cfg(family, model, data, out, **kw):
    base = dict(max_train_steps=4)
    if family == "flux":
        base.update(t5xxl_max_token_length=T5_LEN, bucket_reso_steps=32, network_train_unet_only=True)
    if family == "flux2_klein":
        base.update(bucket_reso_steps=32, network_train_unet_only=True, timestep_sampling="flux2_shift")
    base.update(kw)
    return tiny_config(model, data, out, **base)


def _lora(trainer) -> dict[str, torch.Tensor]:
    return load_file(str(trainer.run.lora_path()))


@pytest.fixture(scope="module")
def tiny_flux_dev():
    return make_tiny_flux("dev")


@pytest.fixture(scope="module")
def auto_runs(tiny_sd15, tiny_flux_dev, tiny_dataset, tmp_path_factory):
    """The auto-precision LoRA of each family (gradient checkpointing on, as fp8 and swapping turn it on), trained
    on one CPU thread like the swap runs compared with it."""
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for family, model in (("sd15", tiny_sd15), ("flux", tiny_flux_dev), ("flux2_klein", make_tiny_klein("base"))):
            t = train_in_process(_cfg(family, model, tiny_dataset, tmp_path_factory.mktemp(family),
                                      gradient_checkpointing=True))
            out[family] = (model, _lora(t))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("family", ["sd15", "flux", "flux2_klein"])
@pytest.mark.parametrize("precision", ["fp8", "nf4"])
def test_base_precision_trains_a_lora_with_the_keys_of_auto(family, precision, auto_runs, tiny_dataset, tmp_path):
    model, auto = auto_runs[family]
    t = train_in_process(_cfg(family, model, tiny_dataset, tmp_path, base_precision=precision))
    lora = _lora(t)
    assert set(lora) == set(auto)
    assert all(lora[k].shape == auto[k].shape and lora[k].dtype == auto[k].dtype for k in lora)
    unet = t.comps.denoiser
    if precision == "fp8":
        bases = [m.base_layer.weight.dtype for m in unet.modules() if hasattr(m, "base_layer")]
        assert bases and set(bases) == {torch.float8_e4m3fn}
    else:
        import bitsandbytes as bnb

        q = [m for m in unet.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert q and all(m.weight.bnb_quantized and m.weight.dtype == torch.uint8 for m in q)
        assert "peft" in type(next(m for m in unet.modules() if hasattr(m, "base_layer"))).__module__
    lora_params = [p for n, p in unet.named_parameters() if "lora_" in n]
    assert lora_params and all(p.dtype == torch.float32 and p.requires_grad for p in lora_params)
    # the LoRA learned: lora_up (zero at the start) moved, and the LoRA is close to but not the same as auto's
    ups = [k for k in lora if "lora_up" in k or "lora_B" in k]
    assert ups and all(lora[k].abs().sum() > 0 for k in ups)
    assert any(not torch.equal(lora[k], auto[k]) for k in ups)
    # ... and points the same way (the base weights differ only by their rounding to fp8 / NF4)
    a, b = torch.cat([auto[k].flatten() for k in ups]), torch.cat([lora[k].flatten() for k in ups])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0)
    print(f"{family} {precision}: cosine similarity with auto's LoRA {cos:.3f}")
    assert cos > 0.5, cos


@pytest.mark.parametrize("family", ["sd15", "flux", "flux2_klein"])
def test_blocks_to_swap_gives_the_same_lora(family, auto_runs, tiny_dataset, tmp_path, one_thread):
    """The same LoRA within float rounding, both runs on one CPU thread. Not bit for bit (measured: on SD1.5 142 of
    420 tensors equal, the rest within 4e-5; two threads late in a long session: up to 5e-4), although one forward
    and backward with swapping is (test_block_swap_forward_and_backward_are_bit_identical): the swapped weights are
    copies at other addresses, which CPU kernels may round differently, and 4 Adam steps enlarge that. A wrong swap
    changes the learned part by its own size; here it differs by about 1e-5 of it."""
    model, plain = auto_runs[family]
    n = 3 if family == "sd15" else 2  # tiny Flux / klein: 1 double + 1 single block, both swapped
    t = train_in_process(_cfg(family, model, tiny_dataset, tmp_path, blocks_to_swap=n))
    sw = t.memory.swapper
    assert sw is not None and len(sw.names) == n and sw.onloads > 0 and sw.offloads > 0
    assert "gradient_checkpointing turned on" in (tmp_path / "lora" / "train.log").read_text()
    lora = _lora(t)
    assert set(lora) == set(plain)
    ups = [k for k in lora if "lora_up" in k or "lora_B" in k]  # zero at the start: all of it was learned
    up, up_plain = torch.cat([lora[k].flatten() for k in ups]), torch.cat([plain[k].flatten() for k in ups])
    rel = ((up - up_plain).norm() / up_plain.norm()).item()
    worst = max((lora[k] - plain[k]).abs().max().item() for k in lora)
    print(f"{family}: swap vs no swap, learned part {rel:.2e} relative, largest difference {worst:.2e}")
    assert rel < 1e-2 and worst < 1e-3


@pytest.mark.parametrize("family", ["sd15", "flux"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_block_swap_forward_and_backward_are_bit_identical(family, checkpointing, tiny_sd15, tiny_flux_dev):
    from core.lora import network as net
    from core.models.blocks import denoiser_blocks
    from core.families import family_module
    from core.train.memory import BlockSwapper

    def run(swap: int):
        if family == "sd15":
            from diffusers import UNet2DConditionModel

            from train_helpers import unet_inputs

            model = UNet2DConditionModel.from_pretrained(tiny_sd15, subfolder="unet")
            x, t, ctx, _ = unet_inputs(model, "sd15")
            ctx.requires_grad_(True)
            call, probe = (lambda: model(x, t, encoder_hidden_states=ctx).sample), ctx
        else:
            from diffusers import FluxTransformer2DModel

            from test_flux import transformer_inputs

            model = FluxTransformer2DModel.from_pretrained(tiny_flux_dev, subfolder="transformer")
            inputs = transformer_inputs(model)
            inputs["encoder_hidden_states"].requires_grad_(True)
            call, probe = (lambda: model(**inputs, return_dict=False)[0]), inputs["encoder_hidden_states"]
        model.requires_grad_(False)
        torch.manual_seed(0)
        spec = net.NetworkSpec(4, 2)
        params = net.inject(model, spec, family_module(family).denoiser_targets(model, spec))
        with torch.no_grad():
            for p in params:
                p.add_(0.01 * torch.randn_like(p))  # lora_B is zero at the start: make every path count
        blocks = denoiser_blocks(model)
        swapper = BlockSwapper(blocks[len(blocks) - swap:], torch.device("cpu")) if swap else None
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        out = call()
        out.float().pow(2).mean().backward()
        return out.detach(), probe.grad, [p.grad for p in params], swapper

    ref = run(0)
    for swap in (1, 9 if family == "sd15" else 2):  # one block, every block
        got = run(swap)
        assert got[3].onloads > 0
        assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
        assert all(torch.equal(a, b) for a, b in zip(ref[2], got[2]))


def test_fp8_with_swap_trains(tiny_sd15, tiny_dataset, tmp_path):
    t = train_in_process(_cfg("sd15", tiny_sd15, tiny_dataset, tmp_path, base_precision="fp8", blocks_to_swap=9))
    assert t.memory.swapper.onloads > 0


def test_bad_memory_values_are_refused_by_name(tiny_sd15, tiny_dataset, tmp_path):
    with pytest.raises(ConfigError) as e:
        validate({"base_precision": "fp4"})
    assert "base_precision" in "\n".join(e.value.lines)
    with pytest.raises(ConfigError) as e:
        validate({"blocks_to_swap": 99})
    assert "blocks_to_swap" in "\n".join(e.value.lines)
    from core.train.trainer import Trainer

    for kw, words in ((dict(blocks_to_swap=10), ("blocks_to_swap = 10", "9 blocks")),
                      (dict(blocks_to_swap=2, base_precision="nf4"), ("blocks_to_swap", "nf4"))):
        cfg = _cfg("sd15", tiny_sd15, tiny_dataset, tmp_path / str(len(words[0])), **kw)
        t = Trainer(cfg, echo=lambda m: None)
        assert t.train() == 2
        log = (tmp_path / str(len(words[0])) / "lora" / "train.log").read_text()
        assert all(w in log for w in words), log[-800:]


FAULTS_PROBE = """
import resource, sys, torch
from core.train.process import keep_freed_memory_for_reuse
if sys.argv[1] == "tuned":
    assert keep_freed_memory_for_reuse()
x = torch.randn(10 << 20)  # 40 MiB activations: above the most glibc's own mmap threshold grows to (32 MiB)
w = torch.ones((), requires_grad=True)

def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ((x * w).sin() * 2).sum().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_a_step(), faults_of_a_step()  # the first steps grow the heap either way
print(sum(faults_of_a_step() for _ in range(8)))
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_cpu_training_reuses_freed_memory_instead_of_faulting_it_in_again():
    """On the CPU every step allocates and frees the same activations. By default glibc gives large blocks back to
    the system and the next step page-faults them in again; the trainer calls keep_freed_memory_for_reuse on the
    CPU, after which the steps reuse the freed memory."""
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS_PROBE, mode], cwd=REPO, capture_output=True, text=True,
                             check=True)
        return int(out.stdout.split()[-1])

    default, tuned = faults("default"), faults("tuned")
    assert default > 8 * 10_240, default  # every step faults its 40 MiB activations (10,240 pages each) in again
    assert tuned * 3 < default, (tuned, default)


@pytest.mark.parametrize("mode", [{}, {"base_precision": "fp8"}])
def test_the_denoiser_waits_in_ram_while_the_encoders_cache_in_every_mode(mode, tiny_sd15, tiny_dataset, tmp_path,
                                                                           monkeypatch):
    """The text encoders and the VAE cache their outputs before the denoiser goes to the GPU: setting it up moves it
    to RAM only, in the default mode too, and to_device (after caching) moves all of it."""
    from diffusers import UNet2DConditionModel

    from core.train import memory

    moved = []
    real_move = memory.move
    def move(m, device, dtype):  # records where the denoiser was sent; this machine has no GPU to send it to
        moved.append(device.type)
        real_move(m, torch.device("cpu"), dtype)

    monkeypatch.setattr(memory, "move", move)
    cfg = _cfg("sd15", tiny_sd15, tiny_dataset, tmp_path, **mode)
    unet = UNet2DConditionModel.from_pretrained(tiny_sd15, subfolder="unet")
    modes, _ = memory.setup_denoiser(cfg, unet, torch.device("cuda"), torch.float32, lambda: [], lambda m: None)
    assert moved == ["cpu"] and modes.pending == set()  # waiting in RAM for to_device, nothing kept back
