"""Family detection and plain-English errors for model files that are not usable base models."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from core.models.detect import (
    DetectResult,
    ModelFileError,
    detect_diffusers_folder,
    detect_single_file_family,
    inspect_model_file,
    read_safetensors_header,
)
from core.models.ldm_convert import pipeline_to_ldm_state_dict, unet_to_ldm_state_dict, vae_to_ldm_state_dict

CONFIGS = Path(__file__).resolve().parent.parent / "core" / "models" / "configs"
DTYPE_BYTES = {"F16": 2, "F32": 4, "U8": 1}


# ----------------------------------------------------------------------------- helpers


def write_header_only_safetensors(path: Path, shapes: dict, dtype="F16", metadata=None, cut: int = 0) -> Path:
    """A valid safetensors file for ``shapes`` whose data is a sparse run of zeros (costs no disk).
    ``cut`` removes that many bytes from the end to simulate an interrupted download."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = DTYPE_BYTES[dtype]
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset - cut)
    return path


def real_layout(family: str) -> dict[str, tuple]:
    """Tensor names and shapes of the released single files, built on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = CONFIGS / family
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        if family == "sd2v":  # SD2 text encoder is OpenCLIP; only the UNet + VAE matter here
            sd = unet_to_ldm_state_dict(unet.state_dict(), unet.config)
            sd.update(vae_to_ldm_state_dict(vae.state_dict(), vae.config))
            sd["cond_stage_model.model.token_embedding.weight"] = torch.empty(49408, 1024, device="meta")
            return {k: tuple(v.shape) for k, v in sd.items()}
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        te2 = None
        if family == "sdxl":
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
        sd = pipeline_to_ldm_state_dict(family, unet, vae, te, te2)
    return {k: tuple(v.shape) for k, v in sd.items()}


@pytest.fixture(scope="module")
def layouts():
    return {family: real_layout(family) for family in ("sd15", "sdxl", "sd2v")}


def only(layout: dict, *prefixes: str) -> dict:
    return {k: v for k, v in layout.items() if k.startswith(prefixes)}


# ----------------------------------------------------------------------------- base models


def test_detects_sd15(layouts):
    result = detect_single_file_family(layouts["sd15"])
    assert result == DetectResult("sd15", False, result.reason, ("unet", "vae", "text_encoder"))
    assert "768" in result.reason


def test_detects_sdxl(layouts):
    result = detect_single_file_family(layouts["sdxl"])
    assert (result.family, result.is_v_pred_guess) == ("sdxl", False)
    assert result.components == ("unet", "vae", "text_encoder", "text_encoder_2")
    assert "2816" in result.reason


def test_detects_sdxl_v_prediction_marker(layouts):
    result = detect_single_file_family({**layouts["sdxl"], "v_pred": (0,), "ztsnr": (0,)})
    assert (result.family, result.is_v_pred_guess) == ("sdxl", True)
    assert "v_pred" in result.reason


def test_detects_sd2_and_guesses_v_prediction(layouts):
    result = detect_single_file_family(layouts["sd2v"])
    assert (result.family, result.is_v_pred_guess) == ("sd2", True)
    assert "1024" in result.reason


def test_detects_inpainting_variant(layouts):
    keys = {**layouts["sd15"], "model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}
    result = detect_single_file_family(keys)
    assert result.family == "sd15" and "inpainting" in result.reason


def test_unet_only_file_reports_components(layouts):
    result = detect_single_file_family(only(layouts["sdxl"], "model.diffusion_model."))
    assert result.family == "sdxl" and result.components == ("unet",)


def test_detects_sdxl_refiner():
    keys = {
        "model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (768, 1280),
        "conditioner.embedders.0.model.text_projection": (1280, 1280),
    }
    assert detect_single_file_family(keys).family == "sdxl_refiner"


@pytest.mark.parametrize(
    "keys, family",
    [
        ({"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "single_blocks.0.linear1.weight": (21504, 3072)},
         "flux"),
        ({"model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale": (128,)}, "flux"),
        ({"single_transformer_blocks.0.attn.to_q.weight": (3072, 3072)}, "flux"),
        ({"model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": (9216,)}, "sd3"),
    ],
)
def test_detects_transformer_families(keys, family):
    assert detect_single_file_family(keys).family == family


# ----------------------------------------------------------------------------- not base models


@pytest.mark.parametrize(
    "keys, words",
    [
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320, 1, 1),
          "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": ()}, "LoRA"),
        ({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": (4, 320)}, "LoRA"),
        ({"lora_unet_input_blocks_4_1_proj_in.hada_w1_a": (640, 8)}, "LoRA"),
        ({"emb_params": (4, 768)}, "embedding"),
        ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "embedding"),
        ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3),
          "quant_conv.weight": (8, 8, 1, 1)}, "VAE"),
        ({"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
          "first_stage_model.decoder.conv_out.bias": (3,)}, "VAE"),
        ({"encoder.down_blocks.0.resnets.0.conv1.weight": (128, 128, 3, 3),
          "decoder.conv_in.weight": (512, 4, 3, 3)}, "VAE"),
        ({"text_model.embeddings.position_embedding.weight": (77, 768),
          "text_model.final_layer_norm.weight": (768,)}, "text encoder"),
        ({"cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)}, "text encoder"),
        ({"encoder.block.0.layer.0.SelfAttention.q.weight": (4096, 4096), "shared.weight": (32128, 4096)},
         "text encoder"),
        ({"control_model.input_hint_block.0.weight": (16, 3, 3, 3)}, "ControlNet"),
        ({"fc.weight": (10, 10), "fc.bias": (10,)}, "does not contain"),
        ({}, "no tensors"),
    ],
)
def test_non_base_models_are_explained(keys, words):
    with pytest.raises(ModelFileError, match=words) as info:
        detect_single_file_family(keys, name="thing.safetensors")
    assert "thing.safetensors" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_full_checkpoint_with_a_stray_lora_key_is_still_a_base_model(layouts):
    keys = {**layouts["sd15"], "lora_unet_conv_in.lora_down.weight": (4, 4, 3, 3)}
    assert detect_single_file_family(keys).family == "sd15"


def test_lora_recognised_from_kohya_metadata_alone():
    with pytest.raises(ModelFileError, match="LoRA"):
        detect_single_file_family({"some.weight": (4, 4)}, {"ss_network_module": "networks.lora"})


def test_unsupported_unet_layout():
    keys = {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 512)}
    with pytest.raises(ModelFileError, match="not one this trainer supports"):
        detect_single_file_family(keys)


# ----------------------------------------------------------------------------- safetensors files


def test_inspect_safetensors_reads_header_only(tmp_path, layouts):
    # ~7 GB of declared SDXL weights in a sparse file: only the header can be read in time.
    path = write_header_only_safetensors(tmp_path / "sd_xl_base.safetensors", layouts["sdxl"],
                                         metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base"})
    result = inspect_model_file(path)
    assert result.family == "sdxl" and "text_encoder_2" in result.components
    shapes, metadata = read_safetensors_header(path)
    assert shapes == layouts["sdxl"]
    assert metadata == {"modelspec.architecture": "stable-diffusion-xl-v1-base"}


def test_inspect_real_tiny_export(tmp_path, tiny_sd15):
    from diffusers import StableDiffusionPipeline

    from core.models.ldm_convert import save_single_file

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15)
    path = save_single_file(tmp_path / "tiny.safetensors",
                            pipeline_to_ldm_state_dict("sd15", pipe.unet, pipe.vae, pipe.text_encoder))
    shapes, _ = read_safetensors_header(path)
    assert shapes["first_stage_model.encoder.conv_in.weight"] == (8, 3, 3, 3)
    # The tiny model's cross-attention width (32) is no real family: refused with a clear message.
    with pytest.raises(ModelFileError, match="tiny.safetensors.*not one this trainer supports"):
        inspect_model_file(path)


def test_truncated_safetensors(tmp_path, layouts):
    path = write_header_only_safetensors(tmp_path / "cut.safetensors", only(layouts["sd15"], "first_stage"), cut=10)
    with pytest.raises(ModelFileError, match="cut.safetensors is truncated"):
        inspect_model_file(path)


def test_truncated_inside_header(tmp_path):
    full = write_header_only_safetensors(tmp_path / "full.safetensors", {"a": (2, 2)})
    path = tmp_path / "h.safetensors"
    path.write_bytes(full.read_bytes()[:20])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        inspect_model_file(path)


def test_corrupt_header(tmp_path):
    raw = b'{"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]' + b" " * 4  # missing brace
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(ModelFileError, match="bad.safetensors has a damaged safetensors header"):
        inspect_model_file(path)


@pytest.mark.parametrize(
    "content, words",
    [
        (b"PK\x03\x04" + b"\0" * 100, "PyTorch pickle archive"),
        (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P" + b"\0" * 100, "legacy PyTorch pickle"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>" + b" " * 100, "web page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 6938040682\n", "Git LFS pointer"),
        (bytes(range(256)) * 4, "not a safetensors file"),
        (b"abc", "only 3 bytes"),
    ],
)
def test_not_a_safetensors_file(tmp_path, content, words):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=words) as info:
        inspect_model_file(path)
    assert "model.safetensors" in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        inspect_model_file(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="is a folder"):
        inspect_model_file(tmp_path)


# ----------------------------------------------------------------------------- pickles


def _decisive_sd15_keys(layouts) -> dict[str, torch.Tensor]:
    names = [k for k in layouts["sd15"] if k.endswith("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")]
    names += ["first_stage_model.encoder.conv_in.weight", "cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    return {k: torch.zeros(layouts["sd15"][k], dtype=torch.float16) for k in names}


def test_ckpt_with_state_dict_wrapper(tmp_path, layouts):
    path = tmp_path / "v1-5.ckpt"
    torch.save({"state_dict": _decisive_sd15_keys(layouts), "global_step": 840000}, path)
    result = inspect_model_file(path)
    assert result.family == "sd15" and result.components == ("unet", "vae", "text_encoder")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.mkdir, (self.marker,))


def test_pickle_needing_code_execution_is_refused(tmp_path, layouts):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({**_decisive_sd15_keys(layouts), "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelFileError, match="evil.ckpt is a pickle that needs unsafe loading") as info:
        inspect_model_file(path)
    assert ".safetensors" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", b"PK\x03\x04broken zip"])
def test_damaged_pickle(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="broken.pt could not be read as a PyTorch checkpoint"):
        inspect_model_file(path)


def test_textual_inversion_pt(tmp_path):
    path = tmp_path / "style.pt"
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.zeros(4, 768)},
                "name": "style", "step": 3000}, path)
    with pytest.raises(ModelFileError, match="style.pt is a textual-inversion embedding"):
        inspect_model_file(path)


def test_lora_safetensors_file(tmp_path):
    path = write_header_only_safetensors(
        tmp_path / "my_lora.safetensors",
        {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 4, 1, 1)},
        metadata={"ss_network_module": "networks.lora"},
    )
    with pytest.raises(ModelFileError, match="my_lora.safetensors is a LoRA"):
        inspect_model_file(path)


# ----------------------------------------------------------------------------- diffusers folders


def test_diffusers_folders(tiny_sd15, tiny_sdxl):
    assert detect_diffusers_folder(tiny_sd15) == "sd15"
    assert detect_diffusers_folder(tiny_sdxl) == "sdxl"
    assert detect_diffusers_folder(CONFIGS / "sd15") == "sd15"
    assert detect_diffusers_folder(CONFIGS / "sdxl") == "sdxl"
    assert detect_diffusers_folder(CONFIGS / "sd2v") == "sd2"


@pytest.mark.parametrize(
    "index, family",
    [
        ({"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None],
          "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}, "sdxl_refiner"),
        ({"_class_name": "FluxPipeline"}, "flux"),
        ({"_class_name": "StableDiffusion3Pipeline"}, "sd3"),
        ({"_class_name": "StableDiffusionPipeline"}, "sd15"),  # no unet config: SD1.x assumed
    ],
)
def test_diffusers_folder_classes(tmp_path, index, family):
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert detect_diffusers_folder(tmp_path) == family


def test_diffusers_folder_errors(tmp_path):
    with pytest.raises(ModelFileError, match="no model_index.json"):
        detect_diffusers_folder(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelFileError, match="KandinskyPipeline"):
        detect_diffusers_folder(tmp_path)
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="damaged"):
        detect_diffusers_folder(tmp_path)


def test_sd2_folder_from_unet_config(tmp_path):
    shutil.copytree(CONFIGS / "sd2v", tmp_path / "m")
    assert detect_diffusers_folder(tmp_path / "m") == "sd2"
