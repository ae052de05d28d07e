"""Tiny random-weight captioning models, built offline in a few seconds, in the layouts users download.

- ``make_tiny_wd14``: ``model.onnx`` (built with onnx.helper: mean colour -> linear -> sigmoid) and
  ``selected_tags.csv``. Its scores are chosen, not random: a red image gets "red hair", every image
  "1girl", "solo", "^_^", "simple background" and the character "hatsune miku"; "blue eyes" never.
- ``make_tiny_blip``: a transformers BLIP folder (config, safetensors, a BERT WordPiece tokenizer, image processor).
- ``make_tiny_florence2``: a transformers Florence-2 folder (byte-level BPE tokenizer, CLIP image processor).
- ``make_tiny_open_clip``: an open_clip folder (open_clip_config.json + open_clip_model.safetensors).
- ``make_label_lists``: short term lists for CLIP Interrogator.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

SEED = 1234
WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "green", "circle", "square", "on", "the", "table",
         "painting", "with", "sky", "small", "large", "sitting", "image", "shows", "in", "background"]

# (name, category, bias, weight on the red channel): score = sigmoid(bias + w * (R - (G + B) / 2) / 255)
WD14_TAGS = [
    ("general", "9", 6.0, 0.0),
    ("sensitive", "9", 0.0, 0.0),
    ("1girl", "0", 3.0, 0.0),
    ("solo", "0", 1.0, 0.0),
    ("red_hair", "0", -3.0, 10.0),
    ("blue_eyes", "0", -4.0, 0.0),
    ("^_^", "0", 0.5, 0.0),
    ("simple_background", "0", 2.0, 0.0),
    ("hatsune_miku", "4", 2.5, 0.0),
]


def make_tiny_wd14(path: Path, size: int = 32) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path.mkdir(parents=True, exist_ok=True)
    with open(path / "selected_tags.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat, _, _) in enumerate(WD14_TAGS):
            w.writerow([i, name, cat, 1000 - i])
    # input is BGR: red weight on channel 2, minus half on channels 0 and 1
    weight = np.zeros((3, len(WD14_TAGS)), dtype=np.float32)
    for j, (_, _, _, red) in enumerate(WD14_TAGS):
        weight[:, j] = np.array([-red / 2, -red / 2, red], dtype=np.float32) / 255.0
    bias = np.array([b for _, _, b, _ in WD14_TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
         helper.make_node("Add", ["logits0", "B"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["output"])],
        "tiny_wd14",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(WD14_TAGS)])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path / "model.onnx"))
    return path


def make_tiny_blip(path: Path) -> Path:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    ids = {t: i for i, t in enumerate(vocab)}
    tokenizer = BertTokenizer(vocab=ids, bos_token="[DEC]")
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
                         bos_token_id=ids["[DEC]"], sep_token_id=ids["[SEP]"], eos_token_id=ids["[SEP]"],
                         pad_token_id=ids["[PAD]"]),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(SEED)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # random weights: keep the special tokens out of the output, so captions have words
        model.text_decoder.cls.predictions.bias[:len(vocab) - len(WORDS)] = -1e4
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _bpe_tokenizer(specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS), "What does the image describe?", "Describe in detail what is shown in the image.",
              "Describe with a paragraph what is shown in the image."] * 5
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    return tok


def make_tiny_florence2(path: Path) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, PreTrainedTokenizerFast)

    path.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_bpe_tokenizer(specials), bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", image_token="<image>")
    image_size = 64  # DaViT strides 4*2*2*2 = 32: 2 x 2 patches, plus one pooled token = 5 image tokens
    image_processor = CLIPImageProcessor(size={"height": image_size, "width": image_size}, do_center_crop=False,
                                         image_seq_length=5)
    config = Florence2Config(
        text_config=dict(model_type="bart", vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
                         decoder_ffn_dim=37, max_position_embeddings=128, bos_token_id=0, pad_token_id=1,
                         eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=None,
                         forced_eos_token_id=2),
        vision_config=dict(depths=(1, 1, 1, 1), embed_dim=(8, 8, 16, 16), num_heads=(1, 1, 2, 2),
                           num_groups=(1, 1, 2, 2), window_size=2, projection_dim=32, drop_path_rate=0.0),
        image_token_id=specials.index("<image>"))
    torch.manual_seed(SEED)
    model = Florence2ForConditionalGeneration(config).eval()
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_tiny_open_clip(path: Path) -> Path:
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = CLIP(**TINY_CLIP_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    (path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CLIP_CFG,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }, indent=1), encoding="utf-8")
    return path


def make_label_lists(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    lists = {
        "artists.txt": ["Claude Monet", "Hokusai", "Ansel Adams"],
        "flavors.txt": ["highly detailed", "soft lighting", "vibrant colors", "minimalism", "sharp focus"],
        "mediums.txt": ["a photograph", "an oil painting", "a watercolor painting"],
        "movements.txt": ["impressionism", "pop art"],
        "negative.txt": ["blurry", "low quality"],
    }
    for name, lines in lists.items():
        (path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_images(folder: Path, colours: dict[str, tuple[int, int, int]] | None = None, size: int = 48) -> list[Path]:
    """Square PNGs of plain colours (with a lighter square in the middle)."""
    from PIL import Image, ImageDraw

    colours = colours or {"red": (220, 30, 30), "blue": (30, 40, 220), "green": (30, 200, 60)}
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, rgb in colours.items():
        im = Image.new("RGB", (size, size), rgb)
        ImageDraw.Draw(im).rectangle([size // 3, size // 3, 2 * size // 3, 2 * size // 3],
                                     fill=tuple(min(255, c + 60) for c in rgb))
        p = folder / f"{name}.png"
        im.save(p)
        out.append(p)
    return out
