"""Rectified-flow sampling (Euler) with known frames held fixed."""
from .flow import sample, sigma_schedule  # noqa: F401
