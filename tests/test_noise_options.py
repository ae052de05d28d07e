"""sd-scripts' noise, loss and regularisation options: each does what sd-scripts' code does, checked by hand."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from core.config.toml_io import ConfigError, validate
from core.lora import network as net
from core.models import noise as nz
from train_helpers import kohya_delta, tiny_config, train_in_process, unet_inputs, unet_out

OFF = dict(noise_offset=0.0, noise_offset_random_strength=False, adaptive_noise_scale=0.0, multires_noise_iterations=0,
           multires_noise_discount=0.3, ip_noise_gamma=0.0, ip_noise_gamma_random_strength=False, min_snr_gamma=0.0,
           debiased_estimation_loss=False, min_timestep=0, max_timestep=1000)


def opts(**kw):
    return SimpleNamespace(**{**OFF, **kw})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def low_freq_energy(x: torch.Tensor, k: int = 8) -> float:
    """Variance of k x k block means: about 1/k^2 for white noise, much more for noise with large blobs."""
    return nn.functional.avg_pool2d(x, k).var().item()


# ------------------------------------------------------------------ noise
def test_pyramid_noise_statistics_and_draw_order():
    plain = torch.randn((4, 4, 64, 64), generator=gen(1))
    pyr = nz.pyramid_noise_like(plain.clone(), gen(2), 6, 0.3)
    assert pyr.shape == plain.shape
    assert abs(pyr.std().item() - 1.0) < 1e-5  # scaled back to unit variance
    assert low_freq_energy(plain) < 0.03  # white noise: 1/64
    assert low_freq_energy(pyr) > 1.15 * low_freq_energy(plain)  # discount 0.3: the low layers are faint
    strong = nz.pyramid_noise_like(plain.clone(), gen(2), 6, 0.8)
    assert low_freq_energy(strong) > 6 * low_freq_energy(plain)
    assert torch.equal(pyr, nz.pyramid_noise_like(plain.clone(), gen(2), 6, 0.3))  # the generator decides
    assert not torch.equal(pyr, nz.pyramid_noise_like(plain.clone(), gen(3), 6, 0.3))
    # by hand, 2 layers: r_i uniform in [2, 4), layer 0 at full size, layer 1 at size / r_1, weight discount^i
    g = gen(5)
    got = nz.pyramid_noise_like(plain.clone(), g, 2, 0.5)
    h = gen(5)
    _r0 = torch.rand(1, generator=h).item() * 2 + 2
    n0 = torch.randn((4, 4, 64, 64), generator=h)
    r1 = torch.rand(1, generator=h).item() * 2 + 2
    side = int(64 / r1)
    n1 = torch.randn((4, 4, side, side), generator=h)
    want = plain + n0 + nn.functional.interpolate(n1, size=(64, 64), mode="bilinear") * 0.5
    assert torch.allclose(got, want / want.std(), atol=1e-6)


def test_noise_offset_adaptive_and_random_strength_by_hand():
    latents = torch.randn((2, 4, 8, 8), generator=gen(0)) + torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 4, 1, 1)
    got = nz.sd_noise(latents, gen(9), opts(noise_offset=0.1, adaptive_noise_scale=0.05))
    h = gen(9)
    noise = torch.randn(latents.shape, generator=h)
    offset = 0.1 + 0.05 * latents.mean(dim=(2, 3), keepdim=True).abs()  # per image and channel
    want = noise + offset * torch.randn((2, 4, 1, 1), generator=h)
    assert torch.allclose(got, want, atol=1e-6)
    # a negative adaptive scale never makes the offset negative (sd-scripts clamps it at 0)
    got = nz.sd_noise(latents, gen(9), opts(noise_offset=0.01, adaptive_noise_scale=-1.0))
    h = gen(9)
    noise = torch.randn(latents.shape, generator=h)
    offset = (0.01 - latents.mean(dim=(2, 3), keepdim=True).abs()).clamp(min=0)
    assert (offset == 0).any() and torch.allclose(got, noise + offset * torch.randn((2, 4, 1, 1), generator=h), atol=1e-6)
    # random strength: offset x U(0, 1), drawn once per batch before the offset itself
    got = nz.sd_noise(latents, gen(4), opts(noise_offset=0.2, noise_offset_random_strength=True))
    h = gen(4)
    noise = torch.randn(latents.shape, generator=h)
    strength = torch.rand(1, generator=h) * 0.2
    assert 0 < strength.item() < 0.2
    assert torch.allclose(got, noise + strength * torch.randn((2, 4, 1, 1), generator=h), atol=1e-6)
    # off: plain noise, exactly as before these options existed
    assert torch.equal(nz.sd_noise(latents, gen(4), opts()), torch.randn(latents.shape, generator=gen(4)))


def _ddpm(prediction_type: str = "epsilon", **kw):
    from diffusers import DDPMScheduler

    from core.models.ddpm import DDPMObjective

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    comps = SimpleNamespace(pipeline=SimpleNamespace(scheduler=sched), prediction_type=prediction_type)
    return DDPMObjective(comps, opts(**kw), torch.device("cpu"))


def _snr(t: torch.Tensor) -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    ac = torch.cumprod(1 - betas, 0)
    return (ac / (1 - ac))[t]


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_debiased_estimation_weights(pred):
    t = torch.tensor([0, 1, 10, 250, 500, 999])
    snr = _snr(t)
    assert snr[0] > 1000  # t = 0: capped at 1000, as sd-scripts
    capped = snr.clamp(max=1000)
    want = 1 / (capped + 1) if pred == "v_prediction" else 1 / capped.sqrt()
    obj = _ddpm(pred, debiased_estimation_loss=True)
    assert torch.allclose(obj.loss_weights(t), want, rtol=1e-4)
    # with min_snr_gamma the two weights multiply (sd-scripts applies one after the other)
    both = _ddpm(pred, debiased_estimation_loss=True, min_snr_gamma=5.0).loss_weights(t)
    snr_w = snr.clamp(max=5) / (snr + 1 if pred == "v_prediction" else snr)
    assert torch.allclose(both, want * snr_w, rtol=1e-4)
    assert _ddpm(pred).loss_weights(t) is None


def test_min_max_timestep_bound_the_timesteps():
    latents = torch.zeros((512, 4, 2, 2))
    t = _ddpm(min_timestep=100, max_timestep=200).noisy_batch(latents, gen(0)).timesteps
    assert t.min().item() >= 100 and t.max().item() <= 199
    assert t.min().item() < 105 and t.max().item() > 194  # uniform over the whole range
    full = _ddpm().noisy_batch(latents, gen(0)).timesteps
    assert full.min().item() < 10 and full.max().item() > 990
    h = gen(0)
    torch.randn(latents.shape, generator=h)
    assert torch.equal(full, torch.randint(0, 1000, (512,), generator=h))  # the defaults draw as before


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_ip_noise_gamma_perturbs_the_input_not_the_target(pred):
    latents = torch.randn((64, 4, 8, 8), generator=gen(1))
    plain = _ddpm(pred).noisy_batch(latents, gen(3))
    ip = _ddpm(pred, ip_noise_gamma=0.5).noisy_batch(latents, gen(3))
    assert torch.equal(plain.timesteps, ip.timesteps) and torch.equal(plain.target, ip.target)
    ac = _ddpm().alphas_cumprod[ip.timesteps].view(-1, 1, 1, 1)
    extra = (ip.model_input - plain.model_input) / (1 - ac).sqrt()  # = gamma x N(0, 1)
    assert abs(extra.std().item() - 0.5) < 0.02 and abs(extra.mean().item()) < 0.02
    rnd = _ddpm(pred, ip_noise_gamma=0.5, ip_noise_gamma_random_strength=True).noisy_batch(latents, gen(3))
    extra_rnd = (rnd.model_input - plain.model_input) / (1 - ac).sqrt()
    assert 0.0 < extra_rnd.std().item() < 0.5 and torch.equal(rnd.target, plain.target)


def test_flux_ip_noise_gamma_perturbs_the_input_not_the_target():
    from core.models.flux import FlowMatchObjective

    cfg = SimpleNamespace(timestep_sampling="shift", sigmoid_scale=1.0, discrete_flow_shift=3.0,
                          model_prediction_type="raw", ip_noise_gamma=0.0, ip_noise_gamma_random_strength=False)
    latents = torch.randn((64, 16, 8, 8), generator=gen(1))
    plain = FlowMatchObjective(cfg, torch.device("cpu")).noisy_batch(latents, gen(2))
    cfg.ip_noise_gamma = 0.3
    ip = FlowMatchObjective(cfg, torch.device("cpu")).noisy_batch(latents, gen(2))
    assert torch.equal(plain.target, ip.target) and torch.equal(plain.timesteps, ip.timesteps)
    extra = (ip.model_input - plain.model_input) / ip.extra["sigmas"]
    assert abs(extra.std().item() - 0.3) < 0.01


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("bad,key", [
    (dict(min_timestep=500, max_timestep=500), "min_timestep"),
    (dict(min_timestep=900, max_timestep=100), "max_timestep"),
    (dict(max_timestep=1001), "max_timestep"),
    (dict(adaptive_noise_scale=0.01), "adaptive_noise_scale"),
    (dict(rank_dropout=1.0), "rank_dropout"),
    (dict(module_dropout=-0.1), "module_dropout"),
    (dict(multires_noise_iterations=-1), "multires_noise_iterations"),
    (dict(scale_weight_norms=-1), "scale_weight_norms"),
])
def test_bad_values_are_refused_naming_the_key(bad, key):
    with pytest.raises(ConfigError) as e:
        validate(bad)
    assert key in str(e.value)
    validate(dict(min_timestep=100, max_timestep=900, noise_offset=0.05, adaptive_noise_scale=0.005))


# ------------------------------------------------------------------ max-norm
class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 12)
        self.conv3 = nn.Conv2d(4, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(6, 5, 1)
        self.tiny = nn.Linear(16, 8)

    def forward(self, x, img):
        return self.lin(x), self.conv1(self.conv3(img)), self.tiny(x)


def _small_lora(rank_dropout: float = 0.0, module_dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Small()
    spec = net.NetworkSpec(4, 2.0, rank_dropout=rank_dropout, module_dropout=module_dropout, conv_dim=3, conv_alpha=1.5)
    net.inject(model, spec, (["lin", "tiny"], ["conv3", "conv1"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen(len(name))))
    return model


def test_max_norm_bounds_every_module_and_counts_the_scaled_ones():
    from core.train.regularize import apply_max_norm

    model = _small_lora()
    with torch.no_grad():
        model.tiny.lora_B["default"].weight.mul_(1e-4)  # far below the limit: left alone
    before = {n: m.get_delta_weight("default").norm().item() for n, m in model.named_modules() if hasattr(m, "lora_A")}
    tiny_b = model.tiny.lora_B["default"].weight.clone()
    limit = 0.5 * sorted(before.values())[-1]
    over = sum(v > limit for v in before.values())
    assert 1 <= over < len(before)
    keys, mean, top = apply_max_norm({"m": model}, limit)
    after = {n: m.get_delta_weight("default").norm().item() for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert keys == over
    assert all(v <= limit * (1 + 1e-5) for v in after.values()), after
    assert all(abs(after[n] - limit) < 1e-4 * limit for n in before if before[n] > limit)  # scaled exactly to it
    assert torch.equal(model.tiny.lora_B["default"].weight, tiny_b)
    assert abs(top - max(after.values())) < 1e-5 and abs(mean - sum(after.values()) / len(after)) < 1e-5


def test_scale_weight_norms_in_training_logs_and_bounds_the_saved_file(tiny_sd15, tiny_dataset, tmp_path):
    from safetensors.torch import load_file

    cfg = tiny_config(tiny_sd15, tiny_dataset, tmp_path, max_train_steps=4, scale_weight_norms=0.05)
    t = train_in_process(cfg)
    steps = [json.loads(x) for x in t.run.events_file.read_text().splitlines() if '"step"' in x]
    steps = [e for e in steps if e["type"] == "step"]
    assert all(e["keys_scaled"] > 0 and e["max_key_norm"] <= 0.05 + 1e-6 for e in steps[1:]), steps
    assert steps[-1]["keys_scaled"] > steps[0]["keys_scaled"]
    assert "keys scaled" in t.run.log_file.read_text()
    sd = load_file(tmp_path / "lora.safetensors")
    keys = [k[: -len(".lora_up.weight")] for k in sd if k.endswith(".lora_up.weight")]
    norms = [kohya_delta(sd, k, torch.Size([sd[k + ".lora_up.weight"].shape[0], sd[k + ".lora_down.weight"].shape[1]]))
             .norm().item() for k in keys if sd[k + ".lora_down.weight"].dim() == 2]
    assert norms and max(norms) <= 0.05 * (1 + 1e-4)
    assert sum(n > 0.045 for n in norms) >= steps[-1]["keys_scaled"] // 2  # many sit at the limit


# ------------------------------------------------------------------ rank / module dropout
def test_rank_dropout_by_hand_3d_input():
    model = _small_lora(rank_dropout=0.5)
    layer = model.lin
    x = torch.randn((3, 7, 16), generator=gen(1))
    model.train()
    torch.manual_seed(11)
    got = layer(x)
    torch.manual_seed(11)
    mask = (torch.rand((3, 4)) > 0.5).float().unsqueeze(1)  # per sample and rank, the same for every token
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    want = layer.base_layer(x) + ((x @ a.T) * mask / 0.5) @ b.T * (2.0 / 4)
    assert torch.allclose(got, want, atol=1e-5)
    model.eval()
    plain = _small_lora()
    plain.eval()
    assert torch.equal(layer(x), plain.lin(x))  # eval: no dropout at all


def test_module_dropout_skips_whole_layers_at_the_rate():
    model = _small_lora(module_dropout=0.3)
    x = torch.randn((2, 16), generator=gen(2))
    base = model.lin.base_layer(x)
    model.train()
    torch.manual_seed(0)
    skipped = sum(torch.equal(model.lin(x), base) for _ in range(400))
    assert 90 < skipped < 150  # 30 % of 400
    torch.manual_seed(0)
    draws = sum(torch.rand(1).item() < 0.3 for _ in range(400))
    assert skipped == draws  # one draw per call from the global generator, as sd-scripts' torch.rand(1)
    model.eval()
    assert not torch.equal(model.lin(x), base)
    # skipped layers still take part in the graph (distributed training needs every parameter to get a gradient)
    model.train()
    torch.manual_seed(1)
    while True:
        out = model.lin(x)
        if torch.equal(out, base):
            break
    out.sum().backward()
    assert model.lin.lora_A["default"].weight.grad is not None
    assert model.lin.lora_A["default"].weight.grad.abs().max() == 0


def test_rank_and_module_dropout_change_training_not_eval_nor_the_file(tiny_sd15, tiny_dataset, tmp_path):
    from diffusers import UNet2DConditionModel

    from core.lora.kohya_format import to_kohya

    spec_plain = net.NetworkSpec(4, 2.0)
    spec_drop = net.NetworkSpec(4, 2.0, rank_dropout=0.3, module_dropout=0.3)
    unets = []
    for spec in (spec_plain, spec_drop):
        unet = UNet2DConditionModel.from_pretrained(tiny_sd15, subfolder="unet")
        torch.manual_seed(0)
        net.inject(unet, spec, net.unet_targets(unet, spec))
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen(len(name))) * 0.1)
        unets.append(unet)
    inputs = unet_inputs(unets[0], "sd15")
    for u in unets:
        u.eval()
    assert torch.equal(unet_out(unets[0], inputs), unet_out(unets[1], inputs))
    for u in unets:
        u.train()
    torch.manual_seed(5)
    a = unet_out(unets[0], inputs)
    torch.manual_seed(5)
    b = unet_out(unets[1], inputs)
    assert (a - b).abs().max() > 1e-3
    torch.manual_seed(5)
    assert torch.equal(unet_out(unets[1], inputs), b)  # seeded: the same draws again
    keys = [set(to_kohya(net.peft_state_dict(u), "lora_unet", 2.0, {}, torch.float32)) for u in unets]
    assert keys[0] == keys[1]
    # a whole run with them: trains, and saves the same keys as a run without
    from safetensors.torch import load_file

    t0 = train_in_process(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "plain", max_train_steps=3))
    t1 = train_in_process(tiny_config(tiny_sd15, tiny_dataset, tmp_path / "drop", max_train_steps=3, rank_dropout=0.3,
                                      module_dropout=0.3))
    f0, f1 = (load_file(t.run.lora_path()) for t in (t0, t1))
    assert f0.keys() == f1.keys()
    assert max((f0[k] - f1[k]).abs().max().item() for k in f0) > 1e-4


def test_dropout_under_gradient_checkpointing_gives_the_same_gradients(tiny_sd15):
    """Checkpointing recomputes each block in the backward pass; the replayed global generator gives the same masks."""
    from diffusers import UNet2DConditionModel

    grads = []
    for checkpointing in (False, True):
        unet = UNet2DConditionModel.from_pretrained(tiny_sd15, subfolder="unet")
        spec = net.NetworkSpec(4, 2.0, rank_dropout=0.5, module_dropout=0.3)
        torch.manual_seed(0)
        net.inject(unet, spec, net.unet_targets(unet, spec))
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen(len(name))) * 0.1)
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        x, t, ctx, added = unet_inputs(unet, "sd15")
        torch.manual_seed(3)
        unet(x.requires_grad_(True), t, encoder_hidden_states=ctx).sample.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert max((grads[0][k] - grads[1][k]).abs().max().item() for k in grads[0]) < 1e-6
    assert any(g.abs().max() > 0 for g in grads[0].values())


# ------------------------------------------------------------------ whole runs
NEW_OPTIONS = {
    "multires": dict(multires_noise_iterations=6, multires_noise_discount=0.3),
    "adaptive": dict(noise_offset=0.05, adaptive_noise_scale=0.5),
    "random_offset": dict(noise_offset=0.1, noise_offset_random_strength=True),
    "ip": dict(ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True),
    "debiased": dict(debiased_estimation_loss=True),
    "timesteps": dict(min_timestep=200, max_timestep=800),
}


@pytest.fixture(scope="module")
def baseline(tiny_sd15, tiny_dataset, tmp_path_factory):
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("baseline")
    t = train_in_process(tiny_config(tiny_sd15, tiny_dataset, out, max_train_steps=3))
    return load_file(t.run.lora_path())


@pytest.mark.parametrize("name", list(NEW_OPTIONS))
def test_each_option_changes_the_trained_lora(name, baseline, tiny_sd15, tiny_dataset, tmp_path):
    from safetensors.torch import load_file

    t = train_in_process(tiny_config(tiny_sd15, tiny_dataset, tmp_path, max_train_steps=3, **NEW_OPTIONS[name]))
    got = load_file(t.run.lora_path())
    assert got.keys() == baseline.keys()
    assert max((got[k] - baseline[k]).abs().max().item() for k in got) > 1e-5, "the option changed nothing"
    meta_key = {"multires": "ss_multires_noise_iterations", "debiased": "ss_debiased_estimation",
                "ip": "ss_ip_noise_gamma"}.get(name)
    if meta_key:
        from safetensors import safe_open

        with safe_open(str(t.run.lora_path()), "pt") as f:
            assert f.metadata()[meta_key] in ("6", "True", "0.1")


def test_sdxl_trains_with_the_options(tiny_sdxl, tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_sdxl, tiny_dataset, tmp_path, max_train_steps=3, multires_noise_iterations=4, noise_offset=0.05,
                      adaptive_noise_scale=0.01, ip_noise_gamma=0.1, debiased_estimation_loss=True, min_timestep=50,
                      max_timestep=950, rank_dropout=0.2, module_dropout=0.1, scale_weight_norms=1.0)
    t = train_in_process(cfg)
    events = [json.loads(x) for x in t.run.events_file.read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3]
    assert all("keys_scaled" in e for e in events if e["type"] == "step")
    assert not [e for e in events if e["type"] == "warning" and "ignored" in e["message"]]


def test_flux_takes_ip_noise_and_dropout_and_says_what_it_ignores(tiny_dataset, tmp_path):
    from tiny_flux import make_tiny_flux

    cfg = tiny_config(make_tiny_flux("dev"), tiny_dataset, tmp_path, max_train_steps=2, t5xxl_max_token_length=32,
                      bucket_reso_steps=32, ip_noise_gamma=0.1, rank_dropout=0.2, module_dropout=0.1,
                      scale_weight_norms=1.0, multires_noise_iterations=6, debiased_estimation_loss=True,
                      min_timestep=100)
    t = train_in_process(cfg)
    events = [json.loads(x) for x in t.run.events_file.read_text().splitlines()]
    ignored = [e["message"] for e in events if e["type"] == "warning" and "do not apply to Flux" in e["message"]]
    assert len(ignored) == 1
    for key in ("multires_noise_iterations", "debiased_estimation_loss", "min_timestep"):
        assert key in ignored[0]
    for key in ("ip_noise_gamma", "rank_dropout", "module_dropout", "scale_weight_norms", "max_timestep"):
        assert key not in ignored[0]
    assert all("keys_scaled" in e for e in events if e["type"] == "step")
