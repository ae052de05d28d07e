"""Low-VRAM modes of the denoiser: fp8 or NF4 base weights and block swapping (base_precision, blocks_to_swap).

* fp8: diffusers' layerwise casting (ModelMixin.enable_layerwise_casting) applied AFTER the LoRA is injected: the
  frozen weights are stored as float8_e4m3fn and cast to the compute dtype for each layer's forward; peft's LoRA
  layers and the norm/embedding layers diffusers skips by default keep their precision (LoRA: fp32, trainable).
* nf4: QLoRA. Every frozen nn.Linear of the blocks becomes a bitsandbytes Linear4bit (NF4, double-quantised
  statistics, computed in the compute dtype) before the LoRA is injected; peft then wraps them with its bnb LoRA
  layer (the model is flagged `is_loaded_in_4bit`, as diffusers' quantizer does). bitsandbytes >= 0.49 runs this on
  the CPU too.
* blocks_to_swap: the frozen weights of the last N blocks stay in (pinned) CPU RAM and are copied in for each forward
  (own hooks: diffusers' group offloading moves trainable parameters too, so the optimizer would see LoRA weights
  change device). Autograd keeps the weights a forward used until its backward, so the swap only frees VRAM with
  gradient checkpointing (the recompute in the backward pass brings the block in again): it turns that on.

Both fp8 and swapping turn gradient checkpointing on, for the same reason (without it the upcast/copied weights stay
alive until the backward pass). The LoRA (keys, shapes, fp32 weights) is the same in every mode.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..models.blocks import block_prefixes, blocks_word, denoiser_blocks
from .activations import keep_no_conv_inputs, keep_no_gelu_outputs

BASE_PRECISIONS = ("auto", "fp8", "nf4")
# fp8 (diffusers' layerwise casting with our own skip list): every Linear weight is stored in fp8, as sd-scripts'
# fp8_base does, including Flux's modulation Linears (norm1.linear ..., a quarter of its weights, which diffusers'
# default "norm" pattern would leave in bf16); norm layers are never cast; peft's LoRA layers and the position/patch
# embedders are skipped. Convolutions keep the compute dtype: they save their weight tensor itself for the backward
# pass, which the cast back to fp8 after each forward would change under it (a Linear saves a transposed view).
FP8_SKIP = ("pos_embed", "patch_embed", "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B",
            "lora_magnitude_vector")
FP8_SKIP_CLASSES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                    nn.Embedding)


def move(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a model, casting only when needed (diffusers warns about every cast)."""
    if module.dtype == dtype:
        module.to(device)
    else:
        module.to(device, dtype)


def place_text_encoders(encoders: list[nn.Module], device: torch.device, dtype: torch.dtype) -> str:
    """The text encoders onto the device in `dtype`; a T5 stored in fp8 (t5xxl_precision) keeps its dtypes.
    Returns what was done for that T5, in words ('' without one)."""
    from ..models.t5_fp8 import describe, is_t5_fp8

    note = ""
    for m in encoders:
        if is_t5_fp8(m):
            m.to(device)  # no dtype: its Linear weights stay float8, the rest is in `dtype` already
            note = describe(m, dtype)
        else:
            move(m, device, dtype)
    return note


def check_modes(base_precision: str, blocks_to_swap: int, n_blocks: int | None, word: str = "blocks") -> None:
    """Raise ValueError, naming the key, for values no run can use (shared with the estimate)."""
    if base_precision not in BASE_PRECISIONS:
        raise ValueError(f"base_precision = {base_precision!r}: use one of {', '.join(BASE_PRECISIONS)}")
    if blocks_to_swap < 0:
        raise ValueError(f"blocks_to_swap = {blocks_to_swap}: use 0 (off) or a positive number of blocks")
    if n_blocks is not None and blocks_to_swap > n_blocks:
        raise ValueError(f"blocks_to_swap = {blocks_to_swap} is larger than the {n_blocks} blocks this model has "
                         f"({word}): use 0-{n_blocks}")
    if base_precision == "nf4" and blocks_to_swap:
        raise ValueError("blocks_to_swap cannot be combined with base_precision = \"nf4\" (4-bit weights are already "
                         "small, and bitsandbytes keeps their statistics on the GPU): set blocks_to_swap = 0 or "
                         "base_precision = \"fp8\"")


def nf4_available() -> str | None:
    """None when bitsandbytes can make NF4 layers here, else why not."""
    try:
        import bitsandbytes  # noqa: F401
        from bitsandbytes.nn import Linear4bit, Params4bit  # noqa: F401
    except Exception as e:  # missing, or broken for this platform
        return f"bitsandbytes cannot be used here ({type(e).__name__}: {e})"
    return None


def quantize_nf4(model: nn.Module, prefixes: tuple[str, ...], compute_dtype: torch.dtype,
                 device: torch.device | None) -> int:
    """Replace every nn.Linear inside the blocks by a bnb Linear4bit (quantised when it moves to a device)."""
    import bitsandbytes as bnb

    count = 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if type(child) is not nn.Linear or not full.startswith(prefixes):
                continue
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=compute_dtype, quant_type="nf4", device="meta")
            q.weight = bnb.nn.Params4bit(child.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                q.bias = nn.Parameter(child.bias.data.to(compute_dtype), requires_grad=False)
            if device is not None:
                q.to(device)  # Params4bit quantises here, one layer at a time
            setattr(parent, child_name, q)
            count += 1
    return count


class BlockSwapper:
    """Keeps the frozen weights of some blocks in CPU RAM; each layer of those blocks gets a device copy for its forward.

    The hooks sit on every layer (not the block): gradient checkpointing recomputes parts of a block (UNet resnets and
    attentions) in the backward pass without calling the block itself. The copy goes into the module in place of the
    parameter (module._parameters[name]) and the CPU parameter is put back after the forward, so nothing a forward
    saved for its backward is ever changed (no `.data` swapping: a convolution saves its weight tensor itself). A
    recompute that stops early skips the after-forward hook, so each onload first puts back any other layer's copy.
    LoRA parameters (trainable, small) stay on the device, so the optimizer never sees them move; the CPU weights
    never change, so offloading copies nothing back."""

    def __init__(self, blocks: list[tuple[str, nn.Module]], device: torch.device):
        self.device = device
        self.names = [n for n, _ in blocks]
        self.onloads = 0
        self.offloads = 0
        self.entries: dict[int, list[tuple[str, nn.Parameter]]] = {}
        self.loaded: dict[int, nn.Module] = {}
        self.handles = []
        pin = device.type == "cuda"
        for _, block in blocks:
            for mod in block.modules():
                entries = []
                for name, p in list(mod._parameters.items()):
                    if p is None:
                        continue
                    if p.requires_grad:
                        p.data = p.data.to(device)  # LoRA (trainable): always on the device
                        continue
                    p.data = p.data.to("cpu").pin_memory() if pin else p.data.to("cpu")
                    entries.append((name, p))
                for bname, b in list(mod._buffers.items()):
                    if b is not None:
                        mod._buffers[bname] = b.to(device)  # buffers are small: they stay on the device
                if entries:
                    self.entries[id(mod)] = entries
                    self.handles.append(mod.register_forward_pre_hook(self._onload))
                    self.handles.append(mod.register_forward_hook(self._offload))

    def _restore(self, mod: nn.Module) -> None:
        for name, p in self.entries[id(mod)]:
            mod._parameters[name] = p  # the device copy lives on only where autograd saved it for the backward
        self.loaded.pop(id(mod), None)

    def _onload(self, mod: nn.Module, args) -> None:
        for other in list(self.loaded.values()):
            self._restore(other)
        for name, p in self.entries[id(mod)]:
            mod._parameters[name] = p.detach().to(self.device, non_blocking=True, copy=True)
        self.loaded[id(mod)] = mod
        self.onloads += 1

    def _offload(self, mod: nn.Module, args, output) -> None:
        self._restore(mod)
        self.offloads += 1

    def swapped_params(self) -> set[int]:
        return {id(p) for entries in self.entries.values() for _, p in entries}


class MemoryModes:
    """base_precision and blocks_to_swap for one run: where the denoiser goes and how its weights are kept."""

    def __init__(self, cfg, device: torch.device, dtype: torch.dtype):
        self.precision = cfg.base_precision
        self.swap = cfg.blocks_to_swap
        self.device, self.dtype = device, dtype
        self.swapper: BlockSwapper | None = None
        self.pending: set[int] | None = None
        check_modes(self.precision, self.swap, None)
        if self.precision == "nf4":
            why = nf4_available()
            if why:
                raise ValueError(f"base_precision = \"nf4\" needs bitsandbytes: {why}. Use base_precision = \"fp8\".")

    @property
    def active(self) -> bool:
        return self.precision != "auto" or self.swap > 0

    @property
    def needs_checkpointing(self) -> bool:
        return self.precision == "fp8" or self.swap > 0

    def place(self, model: nn.Module) -> str:
        """Before the LoRA is injected: move the denoiser (with a low-VRAM mode: cast in RAM; nf4: its block Linears
        replaced by Linear4bit layers, quantised when to_device moves them).
        Returns what was done, in words ('' for the default)."""
        blocks = denoiser_blocks(model)
        check_modes(self.precision, self.swap, len(blocks), blocks_word(model))
        # cast in RAM: the full-precision model never is on the GPU, and the denoiser waits there while the text
        # encoders and the VAE cache their outputs (to_device), in every mode, so caching never sets the peak
        move(model, torch.device("cpu"), self.dtype)
        if self.precision == "nf4":
            n = quantize_nf4(model, block_prefixes(model), self.dtype, None)  # quantised in to_device
            model.is_loaded_in_4bit = True  # peft then wraps the Linear4bit layers with its bnb LoRA layer
            return f"base_precision nf4: {n} Linear layers of the blocks in 4-bit NF4 (QLoRA)"
        return ""

    def after_inject(self, model: nn.Module) -> str:
        """After the LoRA is injected: fp8 storage, block swapping, and everything else onto the device."""
        notes = []
        if self.precision == "fp8":
            from diffusers.hooks import apply_layerwise_casting

            apply_layerwise_casting(model, storage_dtype=torch.float8_e4m3fn, compute_dtype=self.dtype,
                                    skip_modules_pattern=FP8_SKIP, skip_modules_classes=FP8_SKIP_CLASSES)
            notes.append("base_precision fp8: frozen Linear weights stored as float8_e4m3fn, computed in "
                         f"{str(self.dtype).replace('torch.', '')}")
        if not self.active or self.precision == "nf4":
            self.pending = set()  # all of it goes to the device after caching (to_device)
            return "; ".join(notes)
        swapped: set[int] = set()
        if self.swap:
            blocks = denoiser_blocks(model)
            self.swapper = BlockSwapper(blocks[len(blocks) - self.swap:], self.device)
            model._block_swapper = self.swapper  # sampling leaves such a model where it is
            swapped = self.swapper.swapped_params()
            notes.append(f"blocks_to_swap {self.swap}: the last {self.swap} of {len(blocks)} {blocks_word(model)} "
                         "wait in CPU RAM and are copied in for each forward")
        self.pending = swapped  # the rest goes to the device after caching (to_device)
        return "; ".join(notes)

    def to_device(self, model: nn.Module) -> None:
        """After the latents and text-encoder outputs are cached: the denoiser (but its swapped weights) onto the
        device. Until then it waits in RAM (every mode), so the text encoders and the VAE do not share the GPU
        with it."""
        swapped = self.pending
        if swapped is None:
            return
        if self.precision == "nf4":
            model.to(self.device)  # bitsandbytes quantises each Params4bit as it moves
            self.pending = None
            return
        for p in model.parameters():
            if id(p) not in swapped:
                p.data = p.data.to(self.device)
        for mod in model.modules():
            for name, b in list(mod._buffers.items()):
                if b is not None:
                    mod._buffers[name] = b.to(self.device)
        self.pending = None


def setup_denoiser(cfg, model: nn.Module, device: torch.device, dtype: torch.dtype,
                   inject: Callable[[], list], say: Callable[[str], None]) -> tuple[MemoryModes, list]:
    """Place the denoiser for the run's memory modes around the LoRA injection `inject()`; returns (modes, params)."""
    modes = MemoryModes(cfg, device, dtype)
    for note in (modes.place(model),):
        if note:
            say(note)
    params = inject()
    note = modes.after_inject(model)
    if note:
        say(note)
    keep_no_conv_inputs(model)  # frozen convolutions keep only their weight for the backward pass
    keep_no_gelu_outputs(model)  # GEGLU computes gelu again in the backward pass
    if modes.needs_checkpointing and not cfg.gradient_checkpointing:
        say("gradient_checkpointing turned on: base_precision fp8 and blocks_to_swap save VRAM only with it "
            "(otherwise the weights each layer used stay in memory until the backward pass)")
    return modes, params
