"""How each loader applies a DoRA file of ours, against the weights that were trained; printed as JSON.

Trains the test suite's tiny SD1.5 with use_dora, then applies the saved file per module with the math
of DoRA itself (peft), of ComfyUI/Forge (comfy/weight_adapter/base.py weight_decompose; Forge's
backend/patcher/lora.py is the same code) and of AUTOMATIC1111 (extensions-builtin/Lora/network.py
apply_weight_decompose), re-stated in tests/train_helpers.py. Figures: ||W'_loader - W'_trained|| /
||W'_trained - W|| per module (median, max, median per layer kind), and the same ratio for the UNet's output
with every module replaced. docs/architecture.md ("DoRA files") quotes them.

  python bench/dora_loaders.py                      # attention layers, 4 steps
  python bench/dora_loaders.py --conv --steps 24    # + conv_dim 4 and lora_proj
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--conv", action="store_true", help="also train convolutions (conv_dim 4) and proj_in/out")
    args = ap.parse_args()
    from core.logs import quiet_library_notices

    quiet_library_notices()
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from core.lora.kohya_format import kohya_name
    from tiny_models import make_tiny_dataset, make_tiny_sd15
    from train_helpers import (dora_merge_a1111, dora_merge_comfyui, dora_merge_trained, dora_modules, kohya_delta,
                               tiny_config, train_in_process, trained_weight, unet_inputs, unet_out)

    loaders = {"dora_formula": dora_merge_trained, "comfyui_forge": dora_merge_comfyui, "a1111": dora_merge_a1111}
    extra = dict(conv_dim=4, conv_alpha=2, lora_proj=True) if args.conv else {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cfg = tiny_config(make_tiny_sd15(), make_tiny_dataset(out / "data"), out / "run", max_train_steps=args.steps,
                          use_dora=True, network_train_unet_only=True, **extra)
        t = train_in_process(cfg)
        sd = load_file(out / "run" / "lora.safetensors")

    weights: dict[str, dict[str, torch.Tensor]] = {k: {} for k in ["trained", *loaders]}
    errors: dict[str, list[tuple[str, float]]] = {k: [] for k in loaders}
    for name, layer in dora_modules(t.comps.denoiser).items():
        key = kohya_name("lora_unet", name)
        base, trained = trained_weight(layer)
        kind = "linear" if base.dim() == 2 else ("conv1x1" if base.shape[-1] == 1 else "conv3x3")
        weights["trained"][name] = trained
        change = (trained - base).norm()
        for loader, merge in loaders.items():
            w = merge(base, kohya_delta(sd, key, base.shape), sd[key + ".dora_scale"])
            weights[loader][name] = w
            errors[loader].append((kind, ((w - trained).norm() / change).item()))

    def unet_with(ws):
        u = UNet2DConditionModel.from_pretrained(make_tiny_sd15() / "unet").eval()
        with torch.no_grad():
            for n, w in (ws or {}).items():
                u.get_submodule(n).weight.copy_(w)
        return u

    inputs = unet_inputs(unet_with(None), "sd15")
    base_out = unet_out(unet_with(None), inputs)
    outs = {k: unet_out(unet_with(ws), inputs) for k, ws in weights.items()}
    trained_change = (outs["trained"] - base_out).norm()
    report = {"steps": args.steps, "modules": len(weights["trained"]),
              "trained_output_change_vs_base_output": round((trained_change / base_out.norm()).item(), 4)}
    for loader, errs in errors.items():
        vals = [e for _, e in errs]
        report[loader] = {
            "weight_error_vs_change_median": round(statistics.median(vals), 4),
            "weight_error_vs_change_max": round(max(vals), 4),
            "by_kind_median": {k: round(statistics.median([e for kk, e in errs if kk == k]), 4)
                               for k in sorted({k for k, _ in errs})},
            "unet_output_error_vs_change": round(((outs[loader] - outs["trained"]).norm() / trained_change).item(), 4),
        }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
