"""Depth colormap and contact sheet."""
import numpy as np

from fusion.camera import Intrinsics
from fusion.frame import RGBDFrame
from fusion.preview import colormap_turbo, contact_sheet, depth_to_rgb, save_png


def test_turbo_ends_and_nan():
    c = colormap_turbo(np.array([0.0, 1.0, np.nan]))
    assert tuple(c[0]) == (48, 18, 59) and tuple(c[1]) == (122, 4, 3) and tuple(c[2]) == (0, 0, 0)


def test_depth_to_rgb_invalid_black_and_monotone_hue():
    d = np.tile(np.linspace(0.5, 2.0, 64, dtype=np.float32), (8, 1))
    d[:, :4] = 0
    rgb = depth_to_rgb(d)
    assert (rgb[:, :4] == 0).all()
    assert not (rgb[:, 10] == rgb[:, 60]).all()


def test_contact_sheet_layout(tmp_path):
    k = Intrinsics(100, 100, 31.5, 23.5, 64, 48)
    frames = [RGBDFrame(i, i / 30, np.full((48, 64, 3), 40 * i, np.uint8), np.full((48, 64), 1.0 + i, np.float32), k)
              for i in range(5)]
    sheet = contact_sheet(frames, columns=2, thumb_width=32)
    assert sheet.shape == (3 * (2 * 24 + 6), 2 * 34 + 2, 3)
    assert sheet[2, 2].tolist() == [0, 0, 0]  # first frame color thumbnail
    save_png(str(tmp_path / "s.png"), sheet)
    assert (tmp_path / "s.png").stat().st_size > 0
