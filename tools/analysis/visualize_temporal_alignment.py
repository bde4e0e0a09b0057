"""Where the previous BEV lands on the current grid under ``temporal_alignment='exact'`` and
``'official'``, for one moving frame pair; one PNG.

    python tools/analysis/visualize_temporal_alignment.py [--forward 4] [--turn 5]
        [--out docs/images/temporal_alignment.png]

The previous BEV is a map of landmarks (a dot every 12.8 m in the world). The ego then drives
``--forward`` metres and turns ``--turn`` degrees. Each row is a published grid size (tiny 50x50,
base 200x200, both over +-51.2 m); the panels show, on the current grid, what the temporal
self-attention reads at each cell's reference point (before its learned offsets): the exact
alignment (the previous map resampled by the rigid ego motion) and the official one (the map
turned about the pixel (100, 100) by the heading change, read at the reference points shifted by
the CAN-bus translation). Circles: where the landmarks really are now.
"""
import argparse
import math
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import matplotlib  # noqa: E402

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from projects.bevformer.geometry import (align_previous_bev, bev_cell_centers,  # noqa: E402
                                         can_bus_bev_shift, rotate_bev_like_torchvision)

RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
GRIDS = {'tiny (50 x 50)': 50, 'base (200 x 200)': 200}
LANDMARK_SPACING = 12.8  # metres


def landmark_map(size: int) -> torch.Tensor:
    """(1, 1, size, size) previous BEV: Gaussian dots on a 12.8 m lattice (previous LiDAR frame)."""
    centres = bev_cell_centers(size, size, RANGE)  # (Q, 2)
    half = LANDMARK_SPACING / 2
    offset = torch.remainder(centres + half, LANDMARK_SPACING) - half  # to the nearest landmark
    return torch.exp(-(offset ** 2).sum(-1) / 2.0).view(1, 1, size, size)


def ego_motion(forward: float, turn_deg: float):
    """current->previous LiDAR transform (4, 4) and the official CAN-bus vector (1, 18) for an
    ego at the origin heading along +y (nuScenes LiDAR: y forward) that drives ``forward`` metres
    and turns ``turn_deg`` degrees to the left."""
    turn = math.radians(turn_deg)
    current2previous = torch.eye(4)
    current2previous[:2, :2] = torch.tensor([[math.cos(turn), -math.sin(turn)],
                                             [math.sin(turn), math.cos(turn)]])
    current2previous[:2, 3] = torch.tensor([-forward * math.sin(turn / 2),
                                            forward * math.cos(turn / 2)])
    # global frame = previous LiDAR frame turned so that the ego's heading (yaw) is +x, as nuScenes'
    # ego x axis is the LiDAR's +y
    heading = math.pi / 2 + turn
    can_bus = torch.zeros(1, 18)
    can_bus[0, 0:2] = current2previous[:2, 3]
    can_bus[0, 16], can_bus[0, 17] = heading, turn_deg
    return current2previous, can_bus


def read_at(bev: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear read of (1, 1, H, W) at (Q, 2) normalised [0, 1] (x, y) -> (H, W)."""
    size = bev.shape[-1]
    grid = (points * 2 - 1).view(1, size, size, 2)
    return F.grid_sample(bev, grid, align_corners=False)[0, 0]


def panels(size: int, forward: float, turn_deg: float):
    previous = landmark_map(size)
    current2previous, can_bus = ego_motion(forward, turn_deg)
    exact = align_previous_bev(previous, current2previous[None], RANGE)[0, 0]
    rotated = rotate_bev_like_torchvision(previous, can_bus[:, 17], (100, 100))
    centres = bev_cell_centers(size, size, RANGE)
    reference = (centres - torch.tensor(RANGE[:2])) / torch.tensor(
        [RANGE[3] - RANGE[0], RANGE[4] - RANGE[1]])
    official = read_at(rotated, reference + can_bus_bev_shift(can_bus, RANGE).float())
    truth = align_previous_bev(landmark_map(4 * size), current2previous[None], RANGE)
    return exact, official, truth[0, 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--forward', type=float, default=4.0, help='metres driven')
    parser.add_argument('--turn', type=float, default=5.0, help='degrees turned (left)')
    parser.add_argument('--out', default='docs/images/temporal_alignment.png')
    args = parser.parse_args(argv)
    figure, axes = plt.subplots(len(GRIDS), 2, figsize=(8, 4 * len(GRIDS)), squeeze=False)
    extent = [RANGE[0], RANGE[3], RANGE[1], RANGE[4]]
    for row, (name, size) in enumerate(GRIDS.items()):
        exact, official, truth = panels(size, args.forward, args.turn)
        for column, (label, image) in enumerate([('exact', exact), ('official', official)]):
            axis = axes[row, column]
            axis.imshow(image.numpy(), origin='lower', extent=extent, cmap='magma', vmin=0,
                        vmax=1)
            axis.contour(np.linspace(extent[0], extent[1], truth.shape[1]),
                         np.linspace(extent[2], extent[3], truth.shape[0]), truth.numpy(),
                         levels=[0.5], colors='cyan', linewidths=0.6)
            axis.set_title(f'{name}: {label}', fontsize=9)
            axis.set_xlabel('x (m, LiDAR)', fontsize=8)
            axis.set_ylabel('y (m, forward)', fontsize=8)
            axis.tick_params(labelsize=7)
    figure.suptitle(f'previous BEV read on the current grid after {args.forward:g} m and a '
                    f'{args.turn:g} degree turn; cyan: the landmarks\' true positions',
                    fontsize=9)
    figure.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    figure.savefig(args.out, dpi=90)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
