"""Video in (input videos -> row 0 and column 0 of the grid) and outputs (finished grid -> OUT/)."""
from .outputs import OutputExistsError, check_output_dir, write_outputs
from .video import RESIZE_POLICY, InputError, VideoInfo, probe, read_frames, read_inputs

__all__ = ["RESIZE_POLICY", "InputError", "OutputExistsError", "VideoInfo", "check_output_dir", "probe", "read_frames",
           "read_inputs", "write_outputs"]
