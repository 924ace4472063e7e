"""`scitune demo`: SciTune end to end on SciFig with micro models it pretrains itself, resumable step by step."""

from scitune.demo.config import SIZES, DemoConfig, DemoSize, StageSize
from scitune.demo.runner import run_demo, step_records

__all__ = ["SIZES", "DemoConfig", "DemoSize", "StageSize", "run_demo", "step_records"]
