"""Shipped presets validate and hold sane values; user presets save, list and load back."""
from __future__ import annotations

import pytest

from core.config import presets
from core.config.recipes import MEMORY, TIERS
from core.config.suggest import recipe_values
from core.config.toml_io import ConfigError, validate
from core.config.schema import TrainConfig

REQUIRED = ["SD1.5 character", "SD1.5 style", "SDXL character", "SDXL style", "Demo (CPU)"]


def shipped() -> list[presets.Preset]:
    return [p for p in presets.list_presets(user_dir=presets.PRESETS_DIR / "no-user-dir") if not p.user]


def test_every_shipped_preset_validates_and_has_a_description():
    files = sorted(presets.PRESETS_DIR.glob("*.toml"))
    assert len(files) >= 5
    for f in files:
        pr = presets.read_preset(f)  # raises ConfigError on any bad key or value
        assert pr.description and pr.values
        cfg = presets.apply_preset(pr)
        assert isinstance(cfg, TrainConfig)
        for k, v in pr.values.items():
            assert getattr(cfg, k) == v, (f.name, k)  # no value dropped or changed on the way


def test_required_presets_in_order_with_unique_names():
    names = [p.name for p in shipped()]
    assert names[: len(REQUIRED)] == REQUIRED
    assert len(set(names)) == len(names)


def test_preset_values_are_the_well_known_ones():
    by = {p.name: presets.apply_preset(p) for p in shipped()}
    c = by["SD1.5 character"]
    assert 16 <= c.network_dim <= 32 and c.network_alpha == c.network_dim / 2
    assert c.learning_rate == 1e-4 and c.max_train_epochs == 10 and c.train_batch_size == 1 and c.resolution == "512"
    for name in ("SDXL character", "SDXL style"):
        x = by[name]
        assert x.resolution == "1024" and x.gradient_checkpointing and x.network_train_unet_only and x.cache_latents
        assert x.optimizer_type == "AdamW8bit" and x.learning_rate == 1e-4
        assert x.network_alpha == x.network_dim / 2
    d = by["Demo (CPU)"]
    # the toy model's native 32 px; conv + projection layers are what teach it a new shape quickly
    assert (d.resolution, d.network_dim, d.conv_dim, d.lora_ff, d.lora_proj) == ("32", 8, 8, True, True)
    assert d.mixed_precision == "no" and d.optimizer_type == "AdamW" and d.learning_rate == 3e-3
    assert d.max_train_epochs == 10 and d.train_batch_size == 4 and d.sample_every_n_epochs == 2
    assert d.sample_prompts and all("zqx" in p and "--w 32" in p for p in d.sample_prompts)
    for name in ("Flux dev character", "Flux dev style"):  # sd-scripts' Flux guide, at alpha = rank
        f = by[name]
        assert (f.timestep_sampling, f.discrete_flow_shift, f.model_prediction_type, f.guidance_scale) == \
            ("shift", 3.1582, "raw", 1.0)
        assert f.network_alpha == f.network_dim and f.learning_rate == 1e-4 and f.mixed_precision == "bf16"
        assert f.network_train_unet_only and f.gradient_checkpointing and f.resolution == "1024"
        assert not (f.min_snr_gamma or f.lora_ff or f.conv_dim)  # nothing that Flux would ignore
    for name, cfg in by.items():  # peers' complaint: learning rates 10x too high
        if cfg.optimizer_type in ("AdamW", "AdamW8bit") and name != "Demo (CPU)":
            assert cfg.learning_rate <= 2e-4, name


def test_hand_made_presets_are_their_table_cells():
    """Each shipped family x subject preset holds the values of its cell of core/config/recipes.py ([preset] family,
    subject, vram), the length in epochs instead of steps (presets.LENGTH_KEYS): a change on either side fails here.
    The Demo is for the built-in 32 px toy model: no cell, no tier."""
    cells = 0
    for pr in (p for p in shipped() if p.path):
        mine = presets.apply_preset(pr).model_dump()
        if pr.name == "Demo (CPU)":
            assert pr.vram is None and mine["resolution"] == "32"
            continue
        assert pr.vram in TIERS and MEMORY[pr.family][pr.vram].fits, pr.name
        table = validate(recipe_values(pr.family, pr.subject, pr.vram)[0]).model_dump()
        differ = {k: (mine[k], table[k]) for k in mine if mine[k] != table[k] and k not in presets.LENGTH_KEYS}
        assert not differ, (pr.path.name, f"{pr.family} x {pr.subject} x {pr.vram} GB", differ)
        assert mine["max_train_steps"] == 0 and mine["max_train_epochs"] > 0 and mine["save_every_n_epochs"], pr.name
        assert f"{pr.vram} GB" in pr.description, pr.name  # the file says which GPU it is for
        cells += 1
    assert cells == 6


def test_filter_presets_by_family_and_gpu_memory(tmp_path):
    presets.save_user_preset("Mine", TrainConfig(network_dim=48), user_dir=tmp_path)
    listed = presets.list_presets(user_dir=tmp_path)
    names = lambda *a: [p.label for p in presets.filter_presets(listed, *a)]  # noqa: E731
    assert names() == [p.label for p in listed] and len(listed) == 72
    assert names("sdxl", 12) == ["SDXL character", "SDXL style", "SDXL · character · 12 GB", "SDXL · style · 12 GB",
                                 "SDXL · concept · 12 GB", "SDXL · clothing · 12 GB", "Mine (mine)"]
    sd15 = names("sd15", 8)  # the hand-made ones, the demo (any size) and the user's (any family) stay listed
    assert sd15[:3] == ["SD1.5 character", "SD1.5 style", "Demo (CPU)"] and sd15[-1] == "Mine (mine)" and len(sd15) == 8
    assert names("flux", 8) == [f"Flux.1 dev · {s} · 8 GB" for s in ("character", "style", "concept", "clothing")] + \
        ["Mine (mine)"]  # the 24 GB files are not listed for an 8 GB card
    assert names("flux2_klein", 16)[:2] == ["FLUX.2 klein base 4B · character · 16 GB",
                                           "FLUX.2 klein base 4B · style · 16 GB"]
    assert names("flux", 24)[:2] == ["Flux dev character", "Flux dev style"]
    assert len(names("sdxl")) == 2 + 16 + 1  # the hand-made ones, 4 subjects x 4 sizes, the user's
    assert {p.vram for p in presets.filter_presets(listed, None, 16) if p.generated} == {16}


def test_preset_keeps_the_users_inputs_and_resets_the_rest():
    base = TrainConfig(train_data_dir="/data/x", output_name="mine", network_dim=64, seed=7, trigger_word="zqx",
                       sample_prompts=["zqx dog"], output_dir="/out", conditioning_data_dir="/masks", masked_loss=True,
                       network_type="locon", conv_dim=8, noise_offset=0.05, adaptive_noise_scale=0.005,
                       lora_ff=True, clip_skip=2, training_comment="v2")
    cfg = presets.apply_preset(presets.find_preset("SD1.5 character"), base)
    assert (cfg.train_data_dir, cfg.output_name, cfg.output_dir, cfg.trigger_word, cfg.sample_prompts) == \
        ("/data/x", "mine", "/out", "zqx", ["zqx dog"])
    assert (cfg.conditioning_data_dir, cfg.clip_skip, cfg.training_comment) == ("/masks", 2, "v2")  # also own
    assert cfg.network_dim == 32 and cfg.min_snr_gamma == 5.0  # the preset's
    defaults = TrainConfig()
    for k in ("network_type", "conv_dim", "masked_loss", "noise_offset", "adaptive_noise_scale", "lora_ff", "seed"):
        assert getattr(cfg, k) == getattr(defaults, k), k  # an earlier choice, not the preset's: the default


def test_own_fields_are_the_users_files_folders_names_and_words():
    assert presets.own_fields() == {
        "pretrained_model_name_or_path", "model_family", "v_parameterization", "vae", "base_config_dir", "clip_l",
        "t5xxl", "ae", "qwen3", "clip_skip",  # the base model group: what the user's model is
        "train_data_dir", "reg_data_dir", "trigger_word", "caption_extension", "conditioning_data_dir",
        "validation_data_dir",
        "output_dir", "output_name", "training_comment", "cache_dir", "sample_prompts"}
    for p in presets.generated_presets():  # the table never chooses one of them
        assert not set(p.values) & presets.own_fields(), p.name


def test_fill_values_after_the_demo_resets_its_sample_prompts_unless_edited():
    demo = presets.find_preset("Demo (CPU)")
    form = presets.apply_preset(demo, TrainConfig(train_data_dir="/d", trigger_word="zqx"))
    assert form.conv_dim == 8 and form.sample_prompts == demo.values["sample_prompts"]
    earlier = presets.own_values_set(demo.values)
    assert earlier == {"sample_prompts": demo.values["sample_prompts"]}
    sdxl = presets.find_preset("SDXL · character · 12 GB")
    as_form = {**form.model_dump(), "sample_prompts": "\n".join(form.sample_prompts)}  # a list is text in the form
    fill = presets.fill_values(sdxl.values, as_form, earlier)
    assert fill["conv_dim"] == 0 and fill["lora_ff"] is False and fill["sample_prompts"] == []
    assert "train_data_dir" not in fill and "trigger_word" not in fill  # kept: not written at all
    edited = presets.fill_values(sdxl.values, {**as_form, "sample_prompts": "zqx on a beach"}, earlier)
    assert "sample_prompts" not in edited  # the user's own now
    assert presets.own_values_set({"train_data_dir": "/d", "sample_prompts": ["x"], "conv_dim": 4},
                                  typed=("train_data_dir",)) == {"sample_prompts": ["x"]}


def test_user_preset_round_trip(tmp_path):
    cfg = TrainConfig(network_dim=48, network_alpha=24, learning_rate=3e-4, sample_prompts=["zqx cat"])
    path = presets.save_user_preset("My cats / v2", cfg, user_dir=tmp_path)
    assert path.parent == tmp_path and path.name == "My_cats_v2.toml"
    listed = presets.list_presets(user_dir=tmp_path)
    mine = [p for p in listed if p.user]
    assert [p.label for p in mine] == ["My cats / v2 (mine)"]
    assert mine[0].values == {"network_dim": 48, "network_alpha": 24.0, "learning_rate": 3e-4,
                              "sample_prompts": ["zqx cat"]}
    assert presets.apply_preset(presets.find_preset("My cats / v2 (mine)", listed)) == cfg
    with pytest.raises(ConfigError):
        presets.save_user_preset("  ", cfg, user_dir=tmp_path)


def test_bad_preset_is_reported_with_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[preset]\nname = "Bad"\n[network]\nnetwork_dimm = 8\nlearning_rate = -1\n')
    with pytest.raises(ConfigError) as e:
        presets.read_preset(bad)
    text = "\n".join(e.value.lines)
    assert "bad.toml: unknown key 'network_dimm' (did you mean 'network_dim'?)" in text
    # a broken user preset does not break the list
    assert all(p.name != "Bad" for p in presets.list_presets(user_dir=tmp_path))
    tier = tmp_path / "tier.toml"
    tier.write_text('[preset]\nname = "Tier"\nvram = "big"\n[network]\nnetwork_dim = 8\n')
    with pytest.raises(ConfigError, match="tier.toml: \\[preset\\] vram = 'big'"):
        presets.read_preset(tier)
