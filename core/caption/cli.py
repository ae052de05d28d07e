"""`python -m core caption DIR --backend blip|clip-interrogator|wd14|florence2 [...]`.

Exit codes: 0 done (every image captioned or skipped), 1 some images failed, 2 bad input (folder or
model not found, model not downloadable), 3 stopped (Ctrl+C).
"""
from __future__ import annotations

import argparse
import json
import sys

from ..cli_args import positive_int
from .base import CaptionError, all_options, backends, get_backend
from .run import EXISTING, Progress, caption_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    found = backends()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "Backends:\n" + "\n".join(
        f"  {name:<18} {cls.description}\n  {'':<18} default model: {cls.default_model}" for name, cls in found.items())
    parser.add_argument("dir", help="Folder of images (sub-folders included); captions are written next to them.")
    parser.add_argument("--backend", choices=list(found), default="blip", help="Captioning model family (default blip).")
    parser.add_argument("--model", default="", help="Hugging Face repo id or local model folder (default: the "
                        "backend's default model, downloaded on first use). For clip-interrogator: the CLIP model.")
    parser.add_argument("--prefix", default="", help="Text put in front of every caption, e.g. your trigger word "
                        "\"zqx, \" (not added twice).")
    parser.add_argument("--existing", choices=list(EXISTING), default="skip",
                        help="Images that already have a caption: " + "; ".join(f"{k} = {v}" for k, v in EXISTING.items()))
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:1, mps.")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="Images per batch (default: the backend's).")
    parser.add_argument("--caption-ext", default=".txt", help="Extension of the caption files (default .txt).")
    parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    parser.add_argument("--quiet", action="store_true", help="No progress lines.")
    group = parser.add_argument_group("backend options")
    for name, (opt, defaults) in all_options().items():
        default = (repr(opt.default) if len(set(map(repr, defaults.values()))) == 1
                   else ", ".join(f"{title} {value!r}" for title, value in defaults.items()))
        kw: dict = {"dest": f"opt_{name}", "default": None,
                    "help": f"[{', '.join(defaults)}] {opt.help} (default {default})"}
        if opt.choices:
            kw["choices"] = list(opt.choices)
        elif opt.kind in (int, float):
            kw.update(type=opt.kind, metavar="NUMBER")
        else:
            kw["metavar"] = "TEXT"
        group.add_argument(opt.flag, **kw)


def make_captioner(args: argparse.Namespace):
    cls = get_backend(args.backend)
    options = {o.name: getattr(args, f"opt_{o.name}", None) for o in cls.options}
    ignored = [o.flag for name, (o, _) in all_options().items()
               if getattr(args, f"opt_{name}", None) is not None and name not in options]
    if ignored:
        print(f"note: {', '.join(ignored)} do(es) not apply to {cls.title}; ignored.", file=sys.stderr)
    return cls(args.model, device=args.device, **options)


def run(args: argparse.Namespace) -> int:
    def show(p: Progress) -> None:
        if not args.quiet:
            print(p.text, file=sys.stderr, flush=True)

    try:
        captioner = make_captioner(args)
        summary = caption_folder(args.dir, captioner, prefix=args.prefix, existing=args.existing,
                                 caption_ext=args.caption_ext, batch_size=args.batch_size, progress=show)
    except CaptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Stopped. The captions written so far are kept.", file=sys.stderr)
        return 3
    if not summary.results:
        print(f"error: no images found in {summary.folder} (.png, .jpg, .webp ...; sub-folders included).",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary.to_dict(), indent=1, ensure_ascii=False))
    else:
        print("\n".join(summary.lines()))
    return 1 if summary.failed else 0
