"""The generated docs and --help come from the schema and stay in step with it."""
from __future__ import annotations

from pathlib import Path

from core.cli import build_parser, config_reference
from core.config.schema import TrainConfig

REPO = Path(__file__).resolve().parent.parent


def test_config_reference_doc_is_up_to_date():
    doc = (REPO / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert doc.strip() == config_reference().strip(), "run: python -m core config-reference > docs/config-reference.md"


def test_train_help_lists_every_parameter_with_its_help():
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    text = " ".join(sub.format_help().split())  # argparse wraps lines: compare with white space folded
    for name, field in TrainConfig.model_fields.items():
        assert f"--{name}" in text
        help_start = " ".join(field.description.split())[:70]
        assert help_start in text, f"--{name}: its help {help_start!r} is not shown"


def test_readme_shows_every_subcommand():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    names = build_parser()._subparsers._group_actions[0].choices
    assert "suggest" in names and "estimate" in names
    for name in names:
        assert f"python -m core {name}" in readme, f"README.md: add `python -m core {name}` to the Command line section"
