"""LoRA tools (`python -m core lora ...`, the Tools tab): inspect, check, merge, resize, extract, convert."""
from .common import Summary
from .inspect import check_lora, inspect_lines, inspect_lora
from .lorafile import ToolError, read_lora
from .model_ops import extract_lora, merge_into_base
from .ops import convert_lora, merge_loras, resize_lora

__all__ = ["Summary", "ToolError", "read_lora", "inspect_lora", "inspect_lines", "check_lora", "merge_loras",
           "merge_into_base", "resize_lora", "extract_lora", "convert_lora"]
