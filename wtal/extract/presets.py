"""TV-L1 parameter presets, shared by every flow backend (`wtal.extract.flow`, `wtal.extract.tvl1`).

Their own module so that the backend dispatcher and the torch implementation both import them
without importing each other.
"""
from __future__ import annotations

# One parameter set per preset; wtal.extract.tvl1 takes them unchanged (its defaults are "default").
PRESETS: dict = {
    "default": {  # OpenCV's TV-L1 defaults
        "tau": 0.25,
        "lambda_": 0.15,
        "theta": 0.3,
        "nscales": 5,
        "warps": 5,
        "epsilon": 0.01,
        "inner_iterations": 30,
        "outer_iterations": 10,
        "scale_step": 0.8,
        "gamma": 0.0,
        "median_filtering": 5,
    },
}
PRESETS["fast"] = {**PRESETS["default"], "nscales": 3, "warps": 1, "inner_iterations": 10,
                   "outer_iterations": 2}

__all__ = ["PRESETS"]
