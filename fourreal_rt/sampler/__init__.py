"""Rectified-flow sampling (Euler) with known frames held fixed."""
from .flow import DEFAULT_SHIFT, fill, sample, sigma_schedule, to_model_range, to_uint8  # noqa: F401
