"""Run an exported detector in ONNX Runtime and turn its outputs into mmdet predictions.

``OnnxRuntimeNetwork`` runs the file (checking the input shape first: a graph exported for one
size refuses others by name). ``OnnxRuntimeDetector`` is the whole detector around it: mmdet's
data preprocessor before, the head's own ``predict_by_feat`` after (decoding, thresholds, NMS), so
its ``DetDataSample`` predictions are those of ``tools/test.py`` up to the graph's rounding.
``evaluate_onnx`` runs a config's test set and metric on it (BEVFormer: ``OnnxRuntimeBEVFormer``
of :mod:`projects.deploy.bevformer_onnx`; two-stage detectors: ``OnnxRuntimeTwoStageDetector`` of
:mod:`projects.deploy.two_stage_onnx`).
"""
import copy
import json
from typing import Dict, List, Optional

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner, load_checkpoint
from torch import nn
from torch.utils import _pytree as pytree

from ..common.pretrained import init_weights_quietly

__all__ = ['OnnxRuntimeNetwork', 'OnnxRuntimeDetector', 'build_detector', 'evaluate_onnx',
           'METADATA_KEY']

# key of the ONNX metadata entry (JSON) that says what the file holds: the config, the exported
# part and the pytree structure of the outputs (see ``onnx_export.ExportedNetwork``)
METADATA_KEY = 'mm_transformer_plugins'


class OnnxRuntimeNetwork:
    """An exported network in an ONNX Runtime session on the CPU."""

    def __init__(self, onnx_file: str, num_threads: Optional[int] = None,
                 memory_arena: bool = True):
        """``memory_arena`` False: allocations go to malloc and back after each run (as
        PyTorch's CPU allocator does), so that a process's peak memory compares."""
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.enable_cpu_mem_arena = memory_arena
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.onnx_file = onnx_file
        self.session = onnxruntime.InferenceSession(onnx_file, options,
                                                    providers=['CPUExecutionProvider'])
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        # per input: ints, or names for free dimensions
        self.input_shapes = [tuple(graph_input.shape) for graph_input in self.session.get_inputs()]
        metadata = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata: Dict = json.loads(metadata) if metadata else {}

    def check_input(self, name: str, shape: tuple, array: np.ndarray) -> None:
        """ValueError naming the file, the input and both shapes when the graph does not take
        ``array`` as its input ``name`` of ``shape``."""
        fixed = [(i, size) for i, size in enumerate(shape) if isinstance(size, int)]
        if array.ndim != len(shape) or any(array.shape[i] != size for i, size in fixed):
            free = [i for i, size in enumerate(shape) if not isinstance(size, int)]
            hint = ('' if free else '; the graph was exported for this size only: export one '
                    'for the other size (--shape H W), or with --dynamic where the model allows')
            raise ValueError(f'{self.onnx_file} takes {name} of shape {shape}, got '
                             f'{tuple(array.shape)}{hint}')

    def run(self, *inputs: np.ndarray) -> List[np.ndarray]:
        """The graph's inputs in order (a detector: (B, 3, H, W) normalised images) -> its flat
        outputs."""
        if len(inputs) != len(self.input_names):
            raise ValueError(f'{self.onnx_file} takes {len(self.input_names)} inputs '
                             f'{self.input_names}, got {len(inputs)}')
        return self.run_named(dict(zip(self.input_names, inputs)))

    def run_named(self, arrays: Dict[str, np.ndarray]) -> List[np.ndarray]:
        """Runs on the graph's inputs taken from ``arrays`` by name; names the graph does not take
        are left out (the exporter drops an input the model never reads, e.g. ``image_hw`` of a
        BEVFormer that clips hits to the padded input)."""
        missing = [name for name in self.input_names if name not in arrays]
        if missing:
            raise ValueError(f'{self.onnx_file} takes {self.input_names}; missing {missing}')
        feeds = {}
        for name, shape in zip(self.input_names, self.input_shapes):
            self.check_input(name, shape, arrays[name])
            feeds[name] = np.ascontiguousarray(arrays[name])
        return self.session.run(None, feeds)


class OnnxRuntimeDetector:
    """``detector``'s predictions with its network replaced by an exported file.

    ``detector`` (built from the same config, weights not needed) supplies the data preprocessor
    and the head's ``predict_by_feat``; the file must hold the whole detector network
    (``part='detector'``).
    """

    def __init__(self, onnx_file: str, detector: nn.Module, num_threads: Optional[int] = None):
        self.network = OnnxRuntimeNetwork(onnx_file, num_threads)
        part = self.network.metadata.get('part')
        if part != 'detector':
            raise ValueError(f'{onnx_file} holds {part or "no record of its part"!r}, not a whole '
                             'detector network (export it with --part detector)')
        self.output_spec = pytree.treespec_loads(self.network.metadata['output_spec'])
        self.detector = detector.eval()

    @torch.no_grad()
    def predict(self, data: dict) -> List[DetDataSample]:
        """A dataloader batch -> its data samples with ``pred_instances`` (rescaled to the
        original images), one image at a time through the graph."""
        data = self.detector.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        for image, sample in zip(inputs, samples):
            flat = [torch.from_numpy(out) for out in self.network.run(image[None].numpy())]
            head_outputs = pytree.tree_unflatten(flat, self.output_spec)
            results = self.detector.bbox_head.predict_by_feat(
                *head_outputs, batch_img_metas=[sample.metainfo], rescale=True)
            self.detector.add_pred_to_datasample([sample], results)
        return samples


def build_detector(config: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The config's detector (mmdet's or, for an mmdet3d-scoped config, mmdet3d's registry) on
    the CPU in eval mode, with ``checkpoint``'s weights, else initialised as for training from
    scratch (``init_weights``; the pretrained files the config names are not read). Without
    ``init_weights`` some parameters would hold uninitialised memory (mmdet's DETR
    ``level_embed``), sometimes non-finite."""
    scope = config.get('default_scope', 'mmdet')
    if scope == 'mmdet3d':
        from projects.common.requirements import require_mmdet3d
        require_mmdet3d('exporting an mmdet3d config')
    init_default_scope(scope)
    model = copy.deepcopy(config.model)
    if checkpoint is None:
        model = _without_pretrained(model)
    detector = MODELS.build(model)
    if checkpoint is None:
        init_weights_quietly(detector)
    else:
        load_checkpoint(detector, checkpoint, map_location='cpu')
    return detector.eval()


def _without_pretrained(cfg):
    """``cfg`` (nested dicts and lists) without ``pretrained`` file names and ``Pretrained``
    init_cfgs."""
    if isinstance(cfg, list):
        return [_without_pretrained(item) for item in cfg
                if not (isinstance(item, dict) and item.get('type') == 'Pretrained')]
    if not isinstance(cfg, dict):
        return cfg
    kept = {}
    for key, value in cfg.items():
        if key == 'pretrained' and isinstance(value, str):
            continue
        if key == 'init_cfg' and isinstance(value, dict) and value.get('type') == 'Pretrained':
            continue
        kept[key] = _without_pretrained(value)
    return type(cfg)(kept)


def evaluate_onnx(config: Config, onnx_file: str, num_threads: Optional[int] = None,
                  log_interval: int = 50) -> Dict[str, float]:
    """The config's test dataloader and evaluator on the exported model; returns the metrics
    (as ``tools/test.py`` prints them)."""
    detector = build_detector(config)
    if type(detector).__name__ == 'BEVFormerDetector':
        from .bevformer_onnx import OnnxRuntimeBEVFormer
        runtime = OnnxRuntimeBEVFormer(onnx_file, detector, num_threads)
    elif hasattr(detector, 'roi_head'):
        from .two_stage_onnx import OnnxRuntimeTwoStageDetector
        runtime = OnnxRuntimeTwoStageDetector(onnx_file, detector, num_threads)
    else:
        runtime = OnnxRuntimeDetector(onnx_file, detector, num_threads)
    dataloader = Runner.build_dataloader(config.test_dataloader)
    evaluator = Evaluator(config.test_evaluator)
    evaluator.dataset_meta = dataloader.dataset.metainfo
    for i, data in enumerate(dataloader):
        evaluator.process(data_samples=runtime.predict(data), data_batch=data)
        if (i + 1) % log_interval == 0 or i + 1 == len(dataloader):
            print_log(f'ONNX Runtime: batch {i + 1}/{len(dataloader)}', logger='current')
    return evaluator.evaluate(len(dataloader.dataset))


def graph_metadata(config_file: str, part: str, output_spec: pytree.TreeSpec,
                   stages: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The metadata entry ``onnx_export`` writes into a file (see :data:`METADATA_KEY`);
    ``stages``: a two-stage detector's RoI stage files by branch, beside this one."""
    entry = dict(config=config_file, part=part, output_spec=pytree.treespec_dumps(output_spec))
    if stages:
        entry['stages'] = stages
    return {METADATA_KEY: json.dumps(entry)}
