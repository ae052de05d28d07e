"""The family registry (core/families): every declared family passes the same contract, and the code that used
to keep its own table of family facts now reads them from the registry."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core import families
from core.config.schema import TrainConfig

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "core" / "models" / "configs"
SPECS = families.all_families()


def test_the_registry_finds_every_family_module_without_a_list():
    modules = sorted(p.stem for p in (REPO / "core" / "families").glob("*.py") if p.stem != "__init__")
    declared = sorted({spec.module.split(":")[0].rsplit(".", 1)[-1] for spec in SPECS})
    assert modules and set(declared) <= set(modules)
    assert families.names() == ("sd15", "sd2", "sdxl", "flux", "flux2_klein")
    assert len({s.title for s in SPECS}) == len(SPECS)  # one title each, told apart
    with pytest.raises(families.UnknownFamily, match="unknown model family 'sd4' .known: sd15, sd2, sdxl, flux"):
        families.get("sd4")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_family_keeps_the_contract(spec):
    from core.models.base import ModelFamily

    fam = families.family_module(spec.name)
    assert isinstance(fam, ModelFamily) and fam.name == spec.name and fam.spec is spec
    assert fam.title == spec.title
    # its LoRA files say what they are for, and are read back as its own
    assert families.of_version(fam.ss_base_model_version) == spec.name
    assert families.of_architecture(fam.modelspec_architecture) == spec.name
    for pipeline in spec.pipelines:
        assert families.of_pipeline(pipeline) == spec.name
    # the settings it lists exist, and are marked as its own for the GUI and the docs
    fields = TrainConfig.model_fields
    for name in spec.fields:
        assert spec.name in fields[name].json_schema_extra["families"], name
    assert set(spec.settings) <= set(spec.fields)  # the settings it declares itself are among those it uses
    for part in spec.parts:
        assert part.setting in spec.fields and part.role in ("vae", "text_encoder", "text_encoder_2")
    # single files load offline with the configs it ships, one folder per variant
    for variant in spec.variants or (None,):
        folder = CONFIGS / spec.config_folder_for(variant)
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == fam.pipeline_class_name or families.of_pipeline(index["_class_name"]) \
            in (spec.name, *spec.siblings), folder
        assert (folder / spec.denoiser / "config.json").is_file()
    assert spec.native_resolution % spec.size_multiple == 0 and spec.min_resolution <= spec.native_resolution
    assert spec.lora_format in ("kohya", "diffusers") and spec.lycoris == (spec.lora_format == "kohya")


def test_lora_file_names_of_other_tools_are_read_to_the_right_family():
    cases = {"sd_v1": "sd15", "sd_v2": "sd2", "sdxl_base_v1-0": "sdxl", "flux1": "flux", "sd3": "sd3",
             "flux.2": "flux2", "flux2_klein_4b": "flux2_klein", "": None, "something": None}
    assert {v: families.of_version(v) for v in cases} == cases
    archs = {"stable-diffusion-v1/lora": "sd15", "stable-diffusion-v2-768-v/lora": "sd2", "flux-1-schnell/lora": "flux",
             "stable-diffusion-xl-v1-base/lora": "sdxl", "stable-diffusion-3-medium/lora": "sd3",
             "flux-2-klein-4b/lora": "flux2_klein", "Flux.2-klein-9b": "flux2_klein", "flux2_klein_4b": "flux2_klein",
             "flux-2-dev/lora": "flux2", "": None}
    assert {a: families.of_architecture(a) for a in archs} == archs
    # a family this program does not train is named, not loaded
    assert families.title("sd3") == "SD3" and families.find("sd3") is None


def test_family_only_settings_set_for_another_family_are_named_once():
    cfg = TrainConfig(t5xxl_precision="fp8", clip_skip=2, min_snr_gamma=5.0)
    assert cfg.unused_by("sd15") == ("t5xxl_precision does not apply to SD1.5 (it is for Flux.1) and is ignored. "
                                     "Set it back to the default to silence this.")
    assert cfg.unused_by("flux") == ("clip_skip, min_snr_gamma do not apply to Flux.1 (they are for SD1.5 / SD2 / "
                                     "SDXL) and are ignored. Set them back to the default to silence this.")
    assert TrainConfig().unused_by("flux") == "" == TrainConfig().unused_by("sdxl")


def test_loha_is_refused_by_what_the_family_says_of_its_files():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="network_type loha / lokr is not available for Flux.1: Flux.1 LoRAs are "
                                              "saved with diffusers key names"):
        TrainConfig(model_family="flux", network_type="loha")
    assert TrainConfig(model_family="sdxl", network_type="loha").network_type == "loha"


# Modules that may still name a family: the registry and the families' own modules, the converters of other
# tools' configs and LoRA files (they read those tools' words), the built-in toy (an SD 1.5 model) and detection.
ALLOWED = {
    "core/families/", "core/models/sd15.py", "core/models/sdxl.py", "core/models/flux.py", "core/models/flux_loading.py",
    "core/models/ldm_convert.py", "core/models/detect.py", "core/models/t5_fp8.py", "core/convert_config/",
    "core/toy/", "core/lora/tools/flux_bfl.py", "core/lora/tools/flux_merge.py", "core/config/recipes.py",
    "core/config/guided.py",
}
# What is left to move behind the family interface (issue 23); this list only shrinks (it is empty now).
KNOWN: dict[str, int] = {}
NAMES = "sd15|sd2|sdxl|flux|flux2_klein"
FAMILY_TEST = re.compile(rf"""(==|!=|\bin\b)\s*\(?["']({NAMES})["']|["']({NAMES})["']\s*(==|!=)""")


def test_no_new_code_asks_which_family_it_is():
    found = {}
    for path in sorted((REPO / "core").rglob("*.py")) + sorted((REPO / "ui").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if any(rel.startswith(a) for a in ALLOWED):
            continue
        n = len(FAMILY_TEST.findall(path.read_text(encoding="utf-8")))
        if n:
            found[rel] = n
    grown = {f: n for f, n in found.items() if n > KNOWN.get(f, 0)}
    assert not grown, f"ask core/families instead of comparing family names: {grown}"
    assert found == KNOWN, f"fewer family comparisons than KNOWN lists: lower it to {found}"
