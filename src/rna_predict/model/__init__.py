"""The model: Stages B-D, the Stage C NeRF and its ideal geometry, sampling and refinement."""
