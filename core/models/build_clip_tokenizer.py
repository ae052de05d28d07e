"""Rebuild the shipped CLIP BPE tokenizer folders (offline, deterministic).

The CLIP tokenizer used by Stable Diffusion (openai/clip-vit-large-patch14) is fully
determined by OpenAI's ``bpe_simple_vocab_16e6.txt.gz``. This script reconstructs
``vocab.json`` and ``merges.txt`` from that file exactly as CLIP's ``SimpleTokenizer``
does and writes two Hugging Face tokenizer folders:

* ``configs/clip_tokenizer``   - SD1.5 / SDXL ``tokenizer`` (pad token ``<|endoftext|>``)
* ``configs/clip_tokenizer_2`` - SDXL ``tokenizer_2`` (same vocab, pad token ``!``)

The BPE file ships inside the open_clip wheel; fetch it without installing open_clip::

    pip download --no-deps open-clip-torch -d /tmp/oc
    python -m core.models.build_clip_tokenizer /tmp/oc/open_clip_torch-*.whl

The argument may be the wheel, the ``.txt.gz`` file or the extracted ``.txt``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 49408
MODEL_MAX_LENGTH = 77


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 reversible byte -> printable unicode character table (insertion order matters)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_bpe_text(source: Path) -> str:
    """Return the text of the BPE merges file from a wheel, a .gz or a plain .txt."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(BPE_NAME))
            data = gzip.decompress(wheel.read(member))
    elif source.suffix == ".gz":
        data = gzip.decompress(source.read_bytes())
    else:
        data = source.read_bytes()
    return data.decode("utf-8")


def build_vocab_and_merges(bpe_text: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Reconstruct (vocab, merges) exactly as CLIP's SimpleTokenizer.__init__ does."""
    lines = bpe_text.split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(bytes_to_unicode().values())
    tokens = base + [v + "</w>" for v in base] + ["".join(m) for m in merges] + [BOS, EOS]
    if len(tokens) != VOCAB_SIZE or len(set(tokens)) != VOCAB_SIZE:
        raise ValueError(f"unexpected vocabulary: {len(tokens)} tokens, {len(set(tokens))} unique")
    return {tok: i for i, tok in enumerate(tokens)}, merges


def tokenizer_files(vocab: dict[str, int], merges: list[tuple[str, str]], pad_token: str) -> dict[str, bytes]:
    """File name -> exact bytes for one Hugging Face CLIPTokenizer folder."""
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS}
    config = {
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "tokenizer_class": "CLIPTokenizer",
        **special,
    }
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)

    def dump(obj) -> bytes:
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False).encode("utf-8"),
        "merges.txt": merges_text.encode("utf-8"),
        "special_tokens_map.json": dump(special),
        "tokenizer_config.json": dump(config),
    }


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def build(source: Path, out_dir: Path = CONFIGS_DIR) -> list[Path]:
    vocab, merges = build_vocab_and_merges(read_bpe_text(source))
    folders = {"clip_tokenizer": EOS, "clip_tokenizer_2": "!"}
    written = []
    for name, pad in folders.items():
        write_folder(out_dir / name, tokenizer_files(vocab, merges, pad))
        written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="open_clip wheel, bpe_simple_vocab_16e6.txt.gz or .txt")
    parser.add_argument("--out", type=Path, default=CONFIGS_DIR, help="configs directory (default: shipped one)")
    args = parser.parse_args(argv)
    for folder in build(args.source, args.out):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
