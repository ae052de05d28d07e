"""Frozen convolutions keep no input and GEGLU no gelu output for the backward pass (core/train/activations.py),
with torch's own gradients; a training process without CUDA does not load triton (core/train/process.py)."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from core.train.activations import FrozenInputConv2d, gelu_recomputed_geglu, keep_no_conv_inputs, keep_no_gelu_outputs
from tiny_models import make_tiny_sd15
from train_helpers import REPO, unet_inputs


def saved_bytes(fn, skip: set[int]) -> tuple[object, int]:
    """Run fn() and return (its result, the bytes of the tensors autograd saved, those in `skip` left out)."""
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


CASES = {
    "3x3": dict(conv=dict(kernel_size=3, padding=1)),
    "stride 2, no bias": dict(conv=dict(kernel_size=3, stride=2, padding=1, bias=False)),
    "dilation 2": dict(conv=dict(kernel_size=3, padding=2, dilation=2)),
    "groups 4": dict(conv=dict(kernel_size=3, padding=1, groups=4)),
    "1x1": dict(conv=dict(kernel_size=1)),
    "channels-last": dict(conv=dict(kernel_size=3, padding=1), channels_last=True),
    "bf16 autocast": dict(conv=dict(kernel_size=3, padding=1), autocast=True),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_frozen_conv_gives_torchs_gradient_and_keeps_no_input(case, one_thread):
    spec = CASES[case]
    torch.manual_seed(0)
    ref = nn.Conv2d(8, 16, **spec["conv"]).requires_grad_(False)
    ours = copy.deepcopy(ref)
    assert keep_no_conv_inputs(ours) == 1 and type(ours) is FrozenInputConv2d
    x0 = torch.randn(2, 8, 12, 12)
    if spec.get("channels_last"):
        x0 = x0.contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(ref(x0))
    results = []
    for conv in (ref, ours):
        scale = nn.Parameter(torch.tensor(1.5))  # something trained before the convolution

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(spec.get("autocast"))):
                x = x0 * scale
                y = conv(x)
            y.float().mul(g).sum().backward()
            return y

        y, saved = saved_bytes(step, {conv.weight.untyped_storage().data_ptr()})
        results.append((y, scale.grad, saved))
    (y_ref, grad_ref, saved_ref), (y_ours, grad_ours, saved_ours) = results
    assert y_ours.dtype == y_ref.dtype and torch.equal(y_ours, y_ref)
    assert torch.equal(grad_ours, grad_ref), (grad_ours, grad_ref)
    # torch's convolution keeps its input (x, or its bf16 copy under autocast) and the Mul its own; ours only the Mul's
    assert saved_ref - saved_ours >= x0[0].numel() * 2 * (2 if spec.get("autocast") else 4)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16 autocast"])
def test_geglu_gives_torchs_gradient_and_keeps_no_gelu_output(autocast, one_thread):
    from diffusers.models.activations import GEGLU

    torch.manual_seed(0)
    ref = GEGLU(16, 24).requires_grad_(False)
    ours = copy.deepcopy(ref)
    assert keep_no_gelu_outputs(ours) == 1 and type(ours) is gelu_recomputed_geglu()
    x0 = torch.randn(2, 10, 16)
    g = torch.randn(2, 10, 24)
    results = []
    for ff in (ref, ours):
        scale = nn.Parameter(torch.tensor(1.5))  # something trained before it

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                y = ff(x0 * scale)
            y.float().mul(g).sum().backward()
            return y

        y, saved = saved_bytes(step, {p.untyped_storage().data_ptr() for p in ff.parameters()})
        results.append((y, scale.grad, saved))
    (y_ref, grad_ref, saved_ref), (y_ours, grad_ours, saved_ours) = results
    assert y_ours.dtype == y_ref.dtype and torch.equal(y_ours, y_ref)
    assert torch.equal(grad_ours, grad_ref), (grad_ours, grad_ref)
    assert saved_ref - saved_ours >= g.numel() * y_ref.element_size()  # gelu(g): the size of the output
    with torch.no_grad():  # sampling
        assert torch.equal(ours(x0), ref(x0))


def test_trained_and_no_grad_convolutions_run_torchs_path():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)  # trained: its weight needs the input
    assert keep_no_conv_inputs(conv) == 0 and type(conv) is nn.Conv2d
    frozen = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect").requires_grad_(False)
    plain = copy.deepcopy(frozen)
    assert keep_no_conv_inputs(frozen) == 1
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    y = frozen(x)  # reflect padding: torch's own path
    assert y.grad_fn.name() == "ConvolutionBackward0" and torch.equal(y, plain(x))
    with torch.no_grad():  # sampling: no graph at all
        assert torch.equal(frozen(x), plain(x))
    assert frozen(x.detach()).grad_fn is None
    same = nn.Conv2d(4, 4, 3, padding=1).requires_grad_(False)
    keep_no_conv_inputs(same)
    assert same(x).grad_fn.name() != "ConvolutionBackward0"  # ours, while frozen
    frozen.weight.requires_grad_(True)  # unfrozen later: its weight gradient needs the input again
    assert frozen(x).grad_fn.name() == "ConvolutionBackward0"


def test_a_lora_unet_learns_the_same_with_fewer_saved_tensors(one_thread):
    """A tiny SD1.5 UNet with peft LoRA on its attention and on its resnets' conv1 (a LoRA around a frozen conv):
    every LoRA gradient is bit for bit the same, and the backward pass keeps fewer bytes."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(0)
    ref = UNet2DConditionModel.from_pretrained(make_tiny_sd15() / "unet")
    ref.requires_grad_(False)
    ref.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                               target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1"]))
    ours = copy.deepcopy(ref)
    frozen = [n for n, m in ours.named_modules() if type(m) is nn.Conv2d and not m.weight.requires_grad]
    trained = [n for n, m in ours.named_modules() if type(m) is nn.Conv2d and m.weight.requires_grad]
    assert any(n.endswith("conv1.base_layer") for n in frozen) and any("lora_A" in n for n in trained)
    assert keep_no_conv_inputs(ours) == len(frozen)
    assert keep_no_gelu_outputs(ours) > 0
    assert all(type(ours.get_submodule(n)) is FrozenInputConv2d for n in frozen)
    assert all(type(ours.get_submodule(n)) is nn.Conv2d for n in trained)  # LoRA's own convs learn as before
    inputs = unet_inputs(ref, "sd15", size=16)
    grads, saved = [], []
    for unet in (ref, ours):
        params = {q.untyped_storage().data_ptr() for q in unet.parameters()}
        x, t, ctx, added = inputs

        def step():
            unet(x, t, encoder_hidden_states=ctx).sample.pow(2).mean().backward()

        saved.append(saved_bytes(step, params)[1])
        grads.append({n: p.grad for n, p in unet.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for n in grads[0]:
        assert torch.equal(grads[0][n], grads[1][n]), n
    assert saved[1] < 0.9 * saved[0], saved  # measured: 14 % fewer bytes (LoRA on conv1 keeps its input)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the training process keeps triton")
def test_a_training_process_without_cuda_does_not_load_triton():
    code = ("import sys, importlib.util\n"
            "from core.train.process import skip_triton\n"
            "skip_triton()\n"
            "import diffusers\n"
            "from diffusers import UNet2DConditionModel\n"
            "import torch._dynamo\n"
            "print(sys.modules.get('triton', 'absent'), importlib.util.find_spec('triton'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["None", "None"], out.stdout


def test_the_trainer_sets_up_the_denoiser_with_them(tmp_path):
    """setup_denoiser (the trainer's way to place the denoiser around the LoRA injection) applies both: the frozen
    convolutions keep no input, LoRA's own are left alone; every GEGLU computes gelu again."""
    from diffusers import UNet2DConditionModel

    from core.lora import network as net
    from core.models.sd15 import SD15
    from core.train.memory import setup_denoiser
    from train_helpers import tiny_config

    model = make_tiny_sd15()
    cfg = tiny_config(model, tmp_path, tmp_path / "out", conv_dim=4, conv_alpha=4)
    unet = UNet2DConditionModel.from_pretrained(model / "unet").requires_grad_(False)
    spec = net.NetworkSpec.from_config(cfg)
    _, params = setup_denoiser(cfg, unet, torch.device("cpu"), torch.float32,
                               lambda: net.inject(unet, spec, SD15().denoiser_targets(unet, spec)), lambda m: None)
    assert params
    kinds = {type(m) for m in unet.modules() if isinstance(m, nn.Conv2d) and not m.weight.requires_grad}
    assert kinds == {FrozenInputConv2d}
    assert all(type(m) is nn.Conv2d for m in unet.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad)
    from diffusers.models.activations import GEGLU

    gegl = [type(m) for m in unet.modules() if isinstance(m, GEGLU)]
    assert gegl and set(gegl) == {gelu_recomputed_geglu()}
