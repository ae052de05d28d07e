"""python -m core.convert_config SOURCE [-o OUTPUT]"""
import sys

from .cli import main

sys.exit(main())
