"""Write the bundled sample recording: a short noisy 640x480 synthetic deforming scene as a RealSense
`.db3` recording, plus its ground-truth sidecar `<name>.gt.npz`.

    python -m fusion.synthetic.make_sample --out assets/sample.db3

The recording goes through fusion.sources.recorder.write_recording (rs.software_device + rs.recorder,
lossless PNG compression, paced at the frames' timestamps), so it opens in our playback and in the
RealSense Viewer. The sample has sensor depth noise, edge holes, dropouts and 1 mm quantisation but no
colour noise: per-pixel colour noise does not compress (about 550 KB per frame with it, 140 KB without,
measured), and without it 90 frames (3 s at 30 fps) fit in about 13 MB.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fusion.synthetic.groundtruth import groundtruth_path, save_groundtruth
from fusion.synthetic.noise import NoiseConfig
from fusion.synthetic.scene import SceneConfig, make_scene

#: the scene of the bundled sample (frame count chosen for a recording under ~15 MB)
SAMPLE_CONFIG = SceneConfig("humanoid", width=640, height=480, n_frames=90, fps=30.0, seed=0, noise=True,
                            noise_params=NoiseConfig(color_sigma=0.0), speed=1.0)


@dataclass(frozen=True)
class SampleResult:
    """What `make_sample` wrote: the recording, its sidecar, their sizes in bytes, the frame count."""

    recording: Path
    groundtruth: Path
    recording_bytes: int
    groundtruth_bytes: int
    n_frames: int


def make_sample(out: str | os.PathLike, cfg: SceneConfig = SAMPLE_CONFIG, pace: bool = True,
                progress: Callable[[int, int], None] | None = None) -> SampleResult:
    """Render `cfg` and write it to the recording `out` (.db3, atomic) and its sidecar `<out stem>.gt.npz`.

    pace: feed the recorder in real time (the RealSense Viewer then plays the file at the right speed).
    progress(i, n) is called after each frame handed to the recorder.
    """
    from fusion.sources.recorder import write_recording

    out = Path(out)
    scene = make_scene(cfg)

    def frames():  # rendered lazily, one at a time
        for i in range(scene.n_frames):
            yield scene.render(i)
            if progress is not None:
                progress(i + 1, scene.n_frames)

    write_recording(frames(), out, fps=scene.fps, pace=pace)
    gt = save_groundtruth(scene, groundtruth_path(out))
    return SampleResult(out, gt, out.stat().st_size, gt.stat().st_size, scene.n_frames)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: write the sample and print what was written."""
    p = argparse.ArgumentParser(description="Write the bundled synthetic sample recording and its ground truth.")
    p.add_argument("--out", type=Path, default=Path("assets/sample.db3"), help="recording to write (.db3)")
    p.add_argument("--scene", default=SAMPLE_CONFIG.name, help="synthetic object (cloth, cylinder, humanoid)")
    p.add_argument("--frames", type=int, default=SAMPLE_CONFIG.n_frames, help="number of frames")
    p.add_argument("--seed", type=int, default=SAMPLE_CONFIG.seed)
    p.add_argument("--speed", type=float, default=SAMPLE_CONFIG.speed)
    p.add_argument("--no-pace", action="store_true", help="write as fast as possible (Viewer timing off)")
    args = p.parse_args(argv)
    from dataclasses import replace

    from fusion.errors import InputError

    try:
        cfg = replace(SAMPLE_CONFIG, name=args.scene, n_frames=args.frames, seed=args.seed, speed=args.speed)
        res = make_sample(args.out, cfg, pace=not args.no_pace)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {res.recording} ({res.recording_bytes / 1e6:.2f} MB, {res.n_frames} frames of "
          f"{cfg.width}x{cfg.height} at {cfg.fps:g} fps, scene {cfg.name}, seed {cfg.seed})")
    print(f"wrote {res.groundtruth} ({res.groundtruth_bytes / 1e6:.2f} MB ground truth)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
