"""Our trainer against diffusers' own LoRA script on the same model, data and settings; prints JSON.

Both train a real-size SD1.5 UNet (random weights from the shipped configs, saved once as a diffusers
folder) at 256 px, batch 1, rank 16 (alpha 16), UNet attention only, fp32, for a few steps, each in its own
process, one after the other. Measured per run: the whole run's wall time, the peak RSS of the process
(`wait4`, with its kernel time and minor page faults), and the steady step time (ours: the `step` events; diffusers':
the elapsed times on tqdm's bar, in whole seconds; the first step left out for both).

The reference is diffusers' examples/text_to_image/train_text_to_image_lora.py, run unmodified; it is not
part of this project: give its path. It needs the `datasets` package (and tensorboard, its default logger):
`venv/bin/pip install datasets tensorboard` in a benchmark environment.

  venv/bin/python bench/vs_diffusers.py --reference /path/to/train_text_to_image_lora.py [--steps 6] [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def build_model(folder: Path) -> Path:
    """Real-size SD1.5 with random weights, as a diffusers folder (both trainers load this)."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from core.models.loading import shipped_config_dir

    cfg = shipped_config_dir("sd15")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(cfg / "tokenizer"),
        scheduler=DDPMScheduler.from_pretrained(cfg / "scheduler"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def make_data(root: Path, n: int, size: int) -> tuple[Path, Path]:
    """The same n pictures and captions twice: our kohya folder (1 repeat) and an imagefolder with
    metadata.jsonl for diffusers' script."""
    import numpy as np
    from PIL import Image

    ours, theirs = root / "ours", root / "theirs"
    (ours / "1_bench").mkdir(parents=True)
    theirs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        img.save(ours / "1_bench" / f"{i}.png")
        img.save(theirs / f"{i}.png")
        (ours / "1_bench" / f"{i}.txt").write_text("bench, a photo", encoding="utf-8")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": "bench, a photo"}))
    (theirs / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ours, theirs


def timed(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    t0 = time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"exit_code": proc.returncode, "wall_s": round(time.time() - t0, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "kernel_s": round(usage.ru_stime, 1),
            "page_faults": usage.ru_minflt}


def run_ours(model: Path, data: Path, out: Path, steps: int, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "core", "train", "--set", f"pretrained_model_name_or_path={model}",
           "--set", f"train_data_dir={data}", "--set", f"output_dir={out}", "--set", "output_name=bench",
           "--set", "resolution=256", "--set", "train_batch_size=1", "--set", f"max_train_steps={steps}",
           "--set", "network_dim=16", "--set", "network_alpha=16", "--set", "network_train_unet_only=true",
           "--set", "mixed_precision=no", "--set", "sample_every_n_epochs=0", "--set", "learning_rate=1e-4",
           "--set", "save_state_every_n_steps=1000000", "--set", "seed=0", "--set", "min_bucket_reso=256",
           "--set", "max_bucket_reso=256", "--set", "enable_bucket=false"]
    res = timed(cmd, env, out.parent / "ours.log")
    events = [json.loads(x) for x in (out / "bench" / "events.jsonl").read_text().splitlines() if x.strip()]
    times = [e["time"] for e in events if e["type"] == "step"]
    res["sec_per_step"] = round((times[-1] - times[0]) / max(1, len(times) - 1), 3) if len(times) > 1 else None
    return res


def run_reference(script: Path, model: Path, data: Path, out: Path, steps: int, env: dict[str, str]) -> dict:
    cmd = [sys.executable, str(script), f"--pretrained_model_name_or_path={model}", f"--train_data_dir={data}",
           "--resolution=256", "--train_batch_size=1", f"--max_train_steps={steps}", "--rank=16",
           "--learning_rate=1e-4", "--lr_warmup_steps=0", "--mixed_precision=no", f"--output_dir={out}",
           "--seed=0", "--checkpointing_steps=1000000"]
    log = Path(os.environ.get("LW_BENCH_KEEP_LOG") or out.parent / "reference.log")
    res = timed(cmd, env, log)
    text = log.read_text(errors="replace")
    # tqdm's bar "Steps:  50%|...| 3/6 [00:12<00:12,  4.10s/it, ...]": the time between the first step's end and the
    # last step's, over the steps in between (the first step left out, as for ours); tqdm prints whole seconds
    done = {int(m.group(1)): int(m.group(2)) * 60 + int(m.group(3))
            for m in re.finditer(r"Steps:[^|]*\|[^|]*\|\s*(\d+)/\d+ \[(\d+):(\d+)<", text)}
    last = max(done, default=0)
    res["sec_per_step"] = round((done[last] - done[1]) / (last - 1), 3) if last > 1 and 1 in done else None
    if res["exit_code"] != 0:
        res["error"] = text[-1500:]
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="path of diffusers' train_text_to_image_lora.py")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--repeat", type=int, default=1, help="runs of each (which goes first alternates)")
    p.add_argument("--work", default="", help="folder for the model and data (kept between calls)")
    p.add_argument("--only", choices=["ours", "reference"], help="run only one side")
    args = p.parse_args(argv)
    work = Path(args.work or Path(tempfile.gettempdir()) / "lw-vs-diffusers")
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(work / "sd15-random")
    for f in model.rglob("*.safetensors"):  # the model in the page cache first, so that no run pays reading it
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="2",
               HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    results = []
    for r in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            tmp = Path(tmp)
            ours_data, their_data = make_data(tmp / "data", args.images, 256)
            sides = {"ours": ["ours"], "reference": ["diffusers"]}.get(args.only, ["ours", "diffusers"])
            for side in sides if r % 2 == 0 else sides[::-1]:  # each goes first every other time
                if side == "ours":
                    res = run_ours(model, ours_data, tmp / "out_ours", args.steps, env)
                else:
                    res = run_reference(Path(args.reference), model, their_data, tmp / "out_ref", args.steps, env)
                results.append({"trainer": side, "run": r, **res})
                print(json.dumps(results[-1]), flush=True)
    ours = [x for x in results if x["trainer"] == "ours" and x["exit_code"] == 0]
    ref = [x for x in results if x["trainer"] == "diffusers" and x["exit_code"] == 0]
    if ours and ref:
        def best(rows, key):
            vals = [x[key] for x in rows if x.get(key)]
            return min(vals) if vals else None

        ratio = {k: round(best(ours, k) / best(ref, k), 3) for k in ("sec_per_step", "peak_rss_mib", "wall_s")
                 if best(ours, k) and best(ref, k)}
        print(json.dumps({"summary": "ours / diffusers (best of each)", **ratio,
                          "goals": {"sec_per_step": 0.6, "peak_rss_mib": 0.8, "wall_s": 1.0}}))
    return 0 if all(x["exit_code"] == 0 for x in results) else 1


if __name__ == "__main__":
    sys.exit(main())
