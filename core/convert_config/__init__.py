"""Convert a kohya_ss GUI config (.json) or an sd-scripts config (.toml) into our TOML.

    python -m core convert-config my_kohya_config.json > run.toml
    python -m core convert-config sd-scripts.toml -o run.toml

Every key of the source ends up in exactly one place: converted into the output, converted with a
note (a changed name, a nearest choice, a computed value), listed as "not converted" with its value
and the reason, or, for empty/off/default GUI fields, named in one "ignored" line. The report goes to
stderr as lines starting with "# " and is also written as a comment header at the top of the TOML,
so nothing is lost when the output is redirected to a file. The converted values are checked with
:func:`core.config.toml_io.validate`; a value it rejects is reported and left out, so the TOML always loads.
"""
from __future__ import annotations

from ..config.toml_io import flatten
from .args import parse_cli_args, split_args
from .cli import add_arguments, main, run
from .converter import convert, convert_file
from .detect import KOHYA_GUI, OURS, SD_SCRIPTS
from .report import Conversion, render
from .samples import prompt_dict_to_line, read_prompt_file

__all__ = ["KOHYA_GUI", "OURS", "SD_SCRIPTS", "Conversion", "add_arguments", "convert", "convert_file", "flatten",
           "main", "parse_cli_args", "prompt_dict_to_line", "read_prompt_file", "render", "run", "split_args"]
