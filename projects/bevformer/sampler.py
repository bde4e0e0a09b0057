"""``SceneShardSampler``: distributed testing of a temporal model by whole scenes.

BEVFormer predicts each test frame from its previous frame's BEV, so a process must see a scene's
frames in order and all of them. mmengine's ``DefaultSampler`` deals the frames out round-robin
(process r gets frames r, r + N, ...): with two or more processes no frame's predecessor is on its
process, and every frame is predicted without history. The official BEVFormer sampler cuts the
test set into contiguous chunks, so the first frame of every chunk loses its previous BEV. This
sampler gives each process whole scenes, contiguous in dataset order and balanced by frame
count, without padding: N processes predict exactly what one process does.

Config use: ``test_dataloader = dict(sampler=dict(type='SceneShardSampler'), ...)``. The dataset
must give ``scene_token`` in ``get_data_info`` (``BEVNuScenesDataset`` with temporal infos); the
results are gathered by mmengine without padding and matched to samples by ``sample_idx``.
"""
from typing import Iterator, List

from mmdet3d.registry import DATA_SAMPLERS
from mmengine.dist import get_dist_info
from torch.utils.data import Sampler

__all__ = ['SceneShardSampler', 'scene_shards']


def scene_shards(scene_tokens: List[str], num_shards: int) -> List[List[int]]:
    """Dataset indices per shard: runs of equal consecutive ``scene_tokens`` (a scene) kept
    whole, shard k taking the scenes whose middle frame falls in the k-th of ``num_shards`` equal
    parts of the dataset (contiguous, in order; a shard may be empty when there are fewer scenes
    than shards)."""
    runs, start = [], 0
    for index in range(1, len(scene_tokens) + 1):
        if index == len(scene_tokens) or scene_tokens[index] != scene_tokens[start]:
            runs.append(range(start, index))
            start = index
    shards: List[List[int]] = [[] for _ in range(num_shards)]
    total = len(scene_tokens)
    for run in runs:
        middle = (run.start + run.stop) / 2
        shards[min(num_shards - 1, int(middle * num_shards / total))].extend(run)
    return shards


@DATA_SAMPLERS.register_module()
class SceneShardSampler(Sampler):
    """This process's share of whole scenes, in dataset order (see module doc).

    Args:
        dataset: a dataset whose ``get_data_info(i)`` has ``scene_token``.
        shuffle: must be False (a temporal test runs frames in order); accepted so that configs
            written for ``DefaultSampler`` can switch the type only.
        seed: unused (no randomness), accepted for the same reason.
    """

    def __init__(self, dataset, shuffle: bool = False, seed=None) -> None:
        if shuffle:
            raise ValueError('SceneShardSampler(shuffle=True): a temporal test runs every scene '
                             'in order; use shuffle=False')
        self.rank, world_size = get_dist_info()
        tokens = []
        for index in range(len(dataset)):
            info = dataset.get_data_info(index)
            if 'scene_token' not in info:
                raise ValueError(f'SceneShardSampler needs scene_token in every sample of '
                                 f'{getattr(dataset, "ann_file", type(dataset).__name__)}; '
                                 f'sample {index} has none (add the temporal fields with '
                                 'tools/data/create_nuscenes_infos.py --augment)')
            tokens.append(info['scene_token'])
        self.indices = scene_shards(tokens, world_size)[self.rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the order never changes (mmengine calls this on samplers)."""
