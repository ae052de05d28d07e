"""The Gradio GUI. It holds no training logic: it writes configs, starts `python -m core train`,
and reads the run directory (core.runs.reader)."""
