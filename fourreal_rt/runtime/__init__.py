"""Runtime: the pipeline that turns two videos into a grid, and the window scheduler."""
