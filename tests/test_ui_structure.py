"""The GUI's structure (docs/architecture.md, "GUI structure"): what a tab does lives in plain modules that import
neither gradio nor an ML library, so they are unit-tested without a browser and cheap to import; the tab files
stay short functions."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEHAVIOUR = ["training_actions", "generate_actions", "tools_actions", "dataset_actions", "caption_actions",
             "settings_actions", "queue_actions", "run_view", "fit_view", "generate_choices", "tools_view", "labels",
             "settings"]


def test_behaviour_modules_import_no_gradio_and_no_ml_library():
    """One fresh Python imports them one after another: the first that brings in gradio or an ML library is named."""
    code = ("import importlib, sys\n"
            "for m in sys.argv[1:]:\n"
            "    importlib.import_module('ui.' + m)\n"
            "    got = [n for n in ('gradio', 'torch', 'diffusers', 'transformers', 'peft') if n in sys.modules]\n"
            "    if got:\n"
            "        print(m, got)\n"
            "        break\n"
            "else:\n"
            "    print('none')\n")
    res = subprocess.run([sys.executable, "-c", code, *BEHAVIOUR], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "none", f"ui/<module>.py [what it imports]: {res.stdout.strip()}"


def test_every_tab_has_its_behaviour_module_and_no_long_functions():
    """Each tab file has its plain counterpart, and no function in ui/ runs past 80 lines."""
    for tab in ("dataset_tab", "caption_tab", "training_tab", "generate_tab", "tools_tab", "settings_tab"):
        assert (REPO / "ui" / f"{tab.replace('_tab', '')}_actions.py").is_file(), tab
    long = []
    for path in sorted((REPO / "ui").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"ui/{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
