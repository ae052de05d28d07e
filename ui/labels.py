"""The GUI's label of a training parameter, made from its sd-scripts key name."""
from __future__ import annotations

WORDS = {"lr": "LR", "snr": "SNR", "vae": "VAE", "lora": "LoRA", "ff": "FF", "sdpa": "SDPA", "n": "N", "reso": "resolution",
         "dir": "folder", "num": "number of", "dim": "dim", "te": "TE", "dora": "DoRA", "unet": "UNet", "proj": "proj",
         "diffusers": "diffusers", "pretrained": "Base", "clip": "CLIP", "l": "L", "t5xxl": "T5-XXL", "ae": "AE (autoencoder)",
         "tucker": "Tucker"}


def label_for(name: str) -> str:
    """'network_train_unet_only' -> 'Network train UNet only'."""
    words = [WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[0].upper() + text[1:]
