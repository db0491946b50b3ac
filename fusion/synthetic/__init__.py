"""Synthetic deforming scenes with exact ground truth: procedural textured objects (cloth, cylinder,
humanoid) rendered to RGB-D by a numba z-buffer rasteriser, with optional sensor noise, per-pixel scene
flow / optical flow / masks, the surface at every frame, a FrameSource, a ground-truth sidecar and a
DeepDeform-layout writer.

    from fusion.synthetic import SceneConfig, make_scene
    scene = make_scene(SceneConfig("humanoid", width=320, height=240, noise=True))
    frame = scene.render(0); flow = scene.optical_flow(0, 10)
"""
from fusion.synthetic.deepdeform import read_flow, write_deepdeform_folder, write_flow
from fusion.synthetic.groundtruth import GroundTruth, groundtruth_path, load_groundtruth, save_groundtruth
from fusion.synthetic.noise import NoiseConfig
from fusion.synthetic.scene import RenderLayers, SceneConfig, SyntheticScene, list_scenes, make_scene
from fusion.synthetic.source import SyntheticSource

__all__ = [
    "GroundTruth", "NoiseConfig", "RenderLayers", "SceneConfig", "SyntheticScene", "SyntheticSource",
    "groundtruth_path", "list_scenes", "load_groundtruth", "make_scene", "read_flow", "save_groundtruth",
    "write_deepdeform_folder", "write_flow",
]
