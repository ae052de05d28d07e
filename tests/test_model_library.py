"""Model folders recognised by content (core/models/library.py): a made-up ComfyUI tree and an AUTOMATIC1111 tree of
tiny files with real tensor names and the shapes that tell them apart, every role, a misnamed file, a damaged one,
links (one out of the folder, one broken, one looping back), a vanished folder; the parts a transformer-only Flux.1
or klein file needs are chosen by content; nothing is modified."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from core.models.library import classify, scan


def write(path: Path, shapes: dict[str, tuple], dtype=torch.float16, meta: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(s, dtype=dtype) for k, s in shapes.items()}, str(path), metadata=meta)
    return path


def clip(width: int, prefix: str = "text_model.") -> dict:
    return {f"{prefix}encoder.layers.0.self_attn.q_proj.weight": (4, 4), f"{prefix}final_layer_norm.weight": (width,)}


def vae(channels: int, bn: bool = False) -> dict:
    shapes = {"encoder.conv_in.weight": (8, 3, 3, 3), "decoder.conv_in.weight": (512, channels, 3, 3)}
    if bn:
        shapes["bn.running_mean"] = (4 * channels,)
    return shapes


def comfy_tree(root: Path, outside: Path) -> Path:
    m = root / "ComfyUI" / "models"
    write(m / "checkpoints" / "v1-5-pruned-emaonly.safetensors",
          {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
           "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
           "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)})
    write(m / "checkpoints" / "sd_xl_base_1.0.safetensors",
          {"model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
           "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
           "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,)})
    write(m / "diffusion_models" / "flux1-dev.safetensors",
          {"double_blocks.0.img_attn.qkv.weight": (9, 3), "guidance_in.in_layer.bias": (3,), "txt_in.weight": (3, 4096)})
    write(m / "diffusion_models" / "flux-2-klein-base-4b.safetensors",
          {"double_blocks.0.img_attn.qkv.weight": (9, 3), "single_stream_modulation.lin.weight": (3, 3072),
           "txt_in.weight": (3, 7680)}, dtype=torch.float8_e4m3fn)
    write(m / "text_encoders" / "clip_l.safetensors", clip(768))
    write(m / "text_encoders" / "clip_g.safetensors", clip(1280))
    for name in ("t5xxl_fp8_e4m3fn.safetensors", "t5xxl_fp16.safetensors"):
        write(m / "text_encoders" / name, {"encoder.block.0.layer.0.SelfAttention.q.weight": (4, 4),
                                           "shared.weight": (8, 4096)}, dtype=torch.float8_e4m3fn)
    for name, width in (("qwen_3_8b.safetensors", 4096), ("qwen_3_4b.safetensors", 2560)):
        write(m / "text_encoders" / name, {"model.layers.0.self_attn.q_norm.weight": (128,),
                                           "model.norm.weight": (width,)})
    write(m / "vae" / "ae.safetensors", vae(16))
    write(m / "vae" / "flux2-vae.safetensors", vae(32, bn=True))
    write(m / "vae" / "sdxl_vae.safetensors", vae(4))
    write(m / "vae" / "clip_l_backup.safetensors", vae(16))  # misnamed: a Flux.1 autoencoder, by its content
    write(m / "loras" / "zqx_style.safetensors", {"lora_unet_down_blocks_0.lora_down.weight": (4, 320),
                                                  "lora_unet_down_blocks_0.lora_up.weight": (320, 4),
                                                  "lora_unet_down_blocks_0.alpha": ()},
          meta={"ss_network_module": "networks.lora"})
    (m / "checkpoints" / "broken.safetensors").write_bytes(b"<!doctype html><html>429 Too Many Requests</html>")
    (m / "text_encoders" / "elsewhere_clip.safetensors").symlink_to(write(outside / "clip_l.safetensors", clip(768)))
    (m / "vae" / "gone.safetensors").symlink_to(root / "no-such-file.safetensors")
    (m / "loop").symlink_to(m, target_is_directory=True)
    return m


def a1111_tree(root: Path) -> Path:
    m = root / "stable-diffusion-webui" / "models"
    write(m / "Stable-diffusion" / "anything.safetensors",
          {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
           "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
           "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)})
    write(m / "VAE" / "vae-ft-mse-840000.safetensors", vae(4))
    write(m / "Lora" / "mine.safetensors", {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768),
                                            "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": (3072, 4)})
    return m


def diffusers_folder(m: Path) -> None:
    folder = m / "diffusers" / "my-sdxl"
    write(folder / "vae" / "diffusion_pytorch_model.safetensors", vae(4))
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline", "text_encoder": ["t", "C"]}')


def test_folders_are_recognised_by_content(tmp_path):
    comfy, a1111 = comfy_tree(tmp_path, tmp_path / "outside"), a1111_tree(tmp_path)
    diffusers_folder(comfy)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    lib = scan([comfy, a1111, tmp_path / "unplugged-drive"])
    by_name = {Path(f.path).name: f for f in lib.files}
    roles = {n: (f.role, f.family or f.kind) for n, f in by_name.items()}
    assert roles["v1-5-pruned-emaonly.safetensors"] == ("checkpoint", "sd15")
    assert roles["sd_xl_base_1.0.safetensors"] == ("checkpoint", "sdxl")
    assert roles["flux1-dev.safetensors"] == ("denoiser", "flux")
    assert roles["flux-2-klein-base-4b.safetensors"] == ("denoiser", "flux2_klein")
    assert roles["clip_l.safetensors"] == ("text_encoder", "clip-l") and roles["clip_g.safetensors"][1] == "clip-g"
    assert roles["t5xxl_fp16.safetensors"] == ("text_encoder", "t5xxl")
    assert roles["qwen_3_4b.safetensors"] == roles["qwen_3_8b.safetensors"] == ("text_encoder", "qwen3")
    assert by_name["qwen_3_4b.safetensors"].width == 2560 and "Qwen3 text encoder (8B)" in by_name["qwen_3_8b.safetensors"].words
    assert roles["ae.safetensors"] == ("vae", "vae-flux") and roles["flux2-vae.safetensors"] == ("vae", "vae-flux2")
    assert roles["sdxl_vae.safetensors"] == ("vae", "vae-sd") and roles["vae-ft-mse-840000.safetensors"][1] == "vae-sd"
    assert roles["clip_l_backup.safetensors"] == ("vae", "vae-flux")  # the content decides, not the name
    assert roles["zqx_style.safetensors"][0] == "lora" and roles["mine.safetensors"][0] == "lora"
    assert roles["anything.safetensors"] == ("checkpoint", "sd15")
    assert roles["my-sdxl"] == ("checkpoint", "sdxl")  # a diffusers folder is one model: its VAE is no part to pick
    assert "diffusion_pytorch_model.safetensors" not in roles
    assert roles["elsewhere_clip.safetensors"] == ("text_encoder", "clip-l")  # a link out of the folder is followed
    assert sum(Path(f.path).name == "clip_l.safetensors" for f in lib.files) == 1  # the loop is not walked twice
    notes = "\n".join(lib.notes)
    assert "unplugged-drive: folder not found" in notes and "gone.safetensors: a link to a file that is not there" in notes
    assert "broken.safetensors: broken.safetensors is not a safetensors file: it is a web page" in notes
    groups = lib.by_family()
    assert list(groups) == ["sd15", "sdxl", "flux", "flux2_klein"] and len(groups["sd15"]) == 2
    assert len(groups["sdxl"]) == 2
    # the parts of the transformer-only files, by content and size
    flux = lib.parts_for(str(comfy / "diffusion_models" / "flux1-dev.safetensors"))
    assert Path(flux["t5xxl"][0]).name == "t5xxl_fp16.safetensors"  # fp16 before fp8
    assert {Path(p).name for p in flux["ae"]} == {"ae.safetensors", "clip_l_backup.safetensors"}
    assert {Path(p).name for p in flux["clip_l"]} == {"clip_l.safetensors", "elsewhere_clip.safetensors"}
    klein = lib.best_parts(str(comfy / "diffusion_models" / "flux-2-klein-base-4b.safetensors"))
    assert {k: Path(v).name for k, v in klein.items()} == {"ae": "flux2-vae.safetensors",
                                                          "qwen3": "qwen_3_4b.safetensors"}
    assert lib.parts_for(str(comfy / "checkpoints" / "v1-5-pruned-emaonly.safetensors")) == {}
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == before and not list(tmp_path.rglob("*.part"))


def test_a_9b_klein_file_gets_the_8b_qwen3(tmp_path):
    m = tmp_path / "models"
    write(m / "flux-2-klein-base-9b.safetensors",
          {"double_blocks.0.img_attn.qkv.weight": (9, 3), "single_stream_modulation.lin.weight": (3, 4096),
           "txt_in.weight": (3, 12288)}, dtype=torch.float8_e4m3fn)
    for name, width in (("qwen_3_4b.safetensors", 2560), ("qwen_3_8b.safetensors", 4096)):
        write(m / name, {"model.layers.0.self_attn.q_norm.weight": (128,), "model.norm.weight": (width,)})
    assert classify(m / "flux-2-klein-base-9b.safetensors").needs == ("ae", "qwen3")
    parts = scan([m]).parts_for(str(m / "flux-2-klein-base-9b.safetensors"))
    assert [Path(p).name for p in parts["qwen3"]] == ["qwen_3_8b.safetensors"] and parts["ae"] == []


def test_the_guided_start_chooses_a_base_of_the_family_from_the_folders(tmp_path, tiny_dataset):
    from core.config.guided import guided_start

    comfy = comfy_tree(tmp_path, tmp_path / "outside")
    g = guided_start("character", "", "flux", str(tiny_dataset), 24, model_folders=[str(comfy)])
    assert g.ok and Path(g.values["pretrained_model_name_or_path"]).name == "flux1-dev.safetensors", g.problems
    assert {k: Path(g.values[k]).name for k in ("clip_l", "t5xxl", "ae")} == {
        "clip_l": "clip_l.safetensors", "t5xxl": "t5xxl_fp16.safetensors", "ae": "ae.safetensors"}
    assert g.reasons[0].startswith("Base model: flux1-dev.safetensors from your model folders")
    g = guided_start("character", "", "flux2_klein", str(tiny_dataset), 12, model_folders=[str(comfy)])
    assert Path(g.values["qwen3"]).name == "qwen_3_4b.safetensors" and Path(g.values["ae"]).name == "flux2-vae.safetensors"
    g = guided_start("character", "", "sdxl", str(tiny_dataset), 12, model_folders=[str(tmp_path / "empty")])
    assert "pretrained_model_name_or_path" not in g.values and "catalog's SDXL model" in g.reasons[0]
