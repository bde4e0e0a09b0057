"""Export an mmdet detector (or its backbone and neck) to ONNX and check the file in ONNX Runtime.

What is exported is the network up to its raw head outputs, as mmdet's own ``_forward`` gives them
(``ExportedNetwork``): a one-stage detector's per-level class scores and box deltas, a DETR's
per-layer class scores and boxes. Box decoding, score thresholds and NMS stay in Python, in the
head's own ``predict_by_feat`` (:mod:`projects.deploy.onnx_runtime`), so the exported model gives
mmdet's predictions. A two-stage detector exports as three files with mmdet's NMS between them
(:mod:`projects.deploy.two_stage_onnx`). ``part='backbone'`` exports the backbone and neck.

Exporters: torch's ``dynamo=True`` exporter (``torch.export``) by default. mmdet's DETR family
computes with its feature shapes as tensors (``torch._shape_as_tensor``, ``linspace`` over a
tensor's element) and the deformable attention (theirs, and BEVFormer's) needs the levels' sizes
as Python ints, which ``torch.export`` cannot trace; those export through torch's TorchScript
exporter, which evaluates shapes at trace time (the graph is then fixed to the exported size).
BEVFormer exports as one frame (:mod:`projects.deploy.bevformer_onnx`).

Our modules switch to their exportable formulation while traced (:mod:`projects.common.export`).
"""
import contextlib
import importlib.util
import os.path as osp
import re
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmdet.models.detectors import DetectionTransformer, TwoStageDetector
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.logging import print_log
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from ..common.export import export_mode
from .onnx_runtime import OnnxRuntimeNetwork, build_detector, graph_metadata
from .two_stage_onnx import CUSTOM_TRANSLATIONS, ExportedRoIStage, check_roi_head, stage_file

__all__ = ['ExportError', 'ExportedNetwork', 'EXPORTERS', 'PARTS', 'default_exporter',
           'export_detector', 'exported_network', 'export_onnx', 'verify_onnx', 'require_onnx',
           'default_input_hw']

EXPORTERS = ('dynamo', 'torchscript')
PARTS = ('detector', 'backbone')
DEFAULT_OPSET = 20  # 20: GELU as one op (ONNX Runtime ~3x faster on it than Erf, Div, Mul)
# exported outputs agree with PyTorch's within this (float32 rounding of reordered sums)
DEFAULT_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The model cannot be exported; the message names the module and the reason."""


def require_onnx() -> None:
    """ImportError saying how to install the deployment extra when a package of it is missing."""
    missing = [name for name in ('onnx', 'onnxruntime', 'onnxscript')
               if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f'ONNX export needs {", ".join(missing)}: pip install -e ".[deploy]" '
                          '(its pins keep numpy < 2)')


class ExportedNetwork(nn.Module):
    """The part of ``detector`` that is exported: images (B, 3, H, W), already normalised and
    padded as the data preprocessor does, -> the flat tuple of raw outputs.

    ``part='detector'``: ``detector._forward`` (the head's outputs, as its ``predict_by_feat``
    takes them); ``'backbone'``: the backbone and neck features. ``output_spec`` is the pytree
    structure of those outputs (set by each call), written into the file's metadata so that ONNX
    Runtime's flat outputs can be rebuilt.
    """

    def __init__(self, detector: nn.Module, part: str = 'detector'):
        super().__init__()
        if part not in PARTS:
            raise ValueError(f'part must be one of {PARTS}, got {part!r}')
        self.two_stage = part == 'detector' and isinstance(detector, TwoStageDetector)
        if self.two_stage:
            check_roi_head(detector)
        self.detector = detector
        self.part = part
        self.output_spec: Optional[pytree.TreeSpec] = None

    input_names = ['inputs']

    def example_inputs(self, input_hw: Tuple[int, int],
                       generator: torch.Generator) -> Tuple[Tensor]:
        """Random normalised images (1, 3, H, W)."""
        return (torch.randn(1, 3, *input_hw, generator=generator), )

    def dynamic_shapes(self, dynamic: bool) -> Optional[Tuple[dict]]:
        """``torch.export``'s dynamic shapes: height and width free with ``dynamic``."""
        free = torch.export.Dim.DYNAMIC
        return ({2: free, 3: free}, ) if dynamic else None

    @property
    def roi_branches(self) -> List[str]:
        """The RoI stages exported as files of their own (a two-stage detector's)."""
        if not self.two_stage:
            return []
        return ['bbox'] + ['mask'] * bool(self.detector.roi_head.with_mask)

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        if self.part == 'backbone':
            outputs = self.detector.extract_feat(inputs)
        elif self.two_stage:  # the features (for the RoI stages) and the RPN's raw outputs
            features = self.detector.extract_feat(inputs)
            outputs = (features, self.detector.rpn_head(features))
        else:
            outputs = self.detector._forward(inputs, self.data_samples(inputs))
        flat, self.output_spec = pytree.tree_flatten(outputs)
        return tuple(flat)

    def data_samples(self, inputs: Tensor) -> Optional[List[DetDataSample]]:
        """Metas the DETR family reads in ``_forward`` (no padding: every pixel is image)."""
        if not isinstance(self.detector, DetectionTransformer):
            return None
        hw = tuple(inputs.shape[-2:])
        return [DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=hw))
                for _ in range(inputs.shape[0])]


def default_exporter(detector: nn.Module) -> str:
    """'torchscript' for mmdet's DETR family and BEVFormer (module doc), 'dynamo' otherwise."""
    static = isinstance(detector, DetectionTransformer) or type(detector).__name__ == (
        'BEVFormerDetector')
    return 'torchscript' if static else 'dynamo'


def export_onnx(network: nn.Module, inputs: Tuple[Tensor, ...], out_file: str,
                exporter: Optional[str] = None, opset: int = DEFAULT_OPSET,
                dynamic: bool = False) -> List[np.ndarray]:
    """Writes ``network`` (an ``ExportedNetwork`` or ``ExportedBEVFormer``) traced on ``inputs``
    to ``out_file``; returns PyTorch's outputs on ``inputs`` (for :func:`verify_onnx`).

    ``dynamic``: the height and width stay free in the graph (dynamo exporter only, and only
    where the model's code allows it; otherwise an ExportError says which part fixes them).
    Raises ExportError naming the module being traced and the op or construct that failed.
    """
    exporter = exporter or default_exporter(network.detector)
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    if dynamic and exporter != 'dynamo':
        raise ExportError(f'{type(network.detector).__name__} exports through the TorchScript '
                          'exporter, whose graph is fixed to the exported size; export one file '
                          'per input size instead of --dynamic')
    backbone = getattr(network.detector, 'backbone', None)
    if dynamic and not getattr(backbone, 'onnx_free_input_size', True):
        raise ExportError(f'{type(network.detector).__name__}: {type(backbone).__name__} needs '
                          'the input size fixed in the graph (window padding and layout are '
                          'computed from it); export one file per input size (--shape H W) '
                          'instead of --dynamic')
    shapes = network.dynamic_shapes(dynamic) if exporter == 'dynamo' else None
    network.eval()
    with torch.no_grad():
        reference = [t.numpy() for t in network(*inputs)]
    tracker = _ModuleTracker(network)
    program = None
    try:
        with torch.no_grad(), export_mode(), tracker:
            if exporter == 'dynamo':
                # free height and width, with the ranges and guards the model's code implies
                program = torch.export.export(network, inputs, strict=False,
                                              dynamic_shapes=shapes)
                torch.onnx.export(program, dynamo=True, opset_version=opset,
                                  input_names=network.input_names, verbose=False,
                                  custom_translation_table=CUSTOM_TRANSLATIONS).save(out_file)
            else:
                with _quiet_torchscript_warnings():
                    torch.onnx.export(network, inputs, out_file, dynamo=False,
                                      opset_version=opset, input_names=network.input_names)
    except Exception as error:  # the exporters raise many types; all are reported the same way
        summary = _summary(error)
        where = _module_of_failed_op(program, summary) if program else tracker.describe()
        raise ExportError(f'exporting {type(network.detector).__name__} ({exporter} exporter) '
                          f'failed in {where}: {summary}') from error
    return reference


def verify_onnx(onnx_file: str, inputs: Dict[str, Tensor], reference: Sequence[np.ndarray],
                tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Runs ``onnx_file`` in ONNX Runtime on ``inputs`` (by input name); returns the largest
    absolute difference from ``reference`` (PyTorch's outputs). ValueError when it exceeds
    ``tolerance`` times the largest output magnitude (at least 1), an output's shape differs or
    one is non-finite."""
    outputs = OnnxRuntimeNetwork(onnx_file).run_named(
        {name: tensor.numpy() for name, tensor in inputs.items()})
    if len(outputs) != len(reference):
        raise ValueError(f'{onnx_file}: {len(outputs)} outputs, PyTorch gave {len(reference)}')
    differences, scale = [], 1.0
    for i, (ours, theirs) in enumerate(zip(outputs, reference)):
        if ours.shape != theirs.shape:
            raise ValueError(f'{onnx_file}: output {i} has shape {ours.shape}, PyTorch\'s '
                             f'{theirs.shape}')
        if not np.isfinite(theirs).all():
            raise ValueError(f'PyTorch\'s output {i} is non-finite at '
                             f'{int((~np.isfinite(theirs)).sum())} places: nothing to compare '
                             '(random weights? give a checkpoint)')
        if not np.isfinite(ours).all():
            raise ValueError(f'{onnx_file}: output {i} is non-finite at '
                             f'{int((~np.isfinite(ours)).sum())} places in ONNX Runtime')
        differences.append(np.abs(ours.astype(np.float64) - theirs))
        scale = max(scale, float(np.abs(theirs).max(initial=0.0)))
    worst = max(float(d.max(initial=0.0)) for d in differences)
    if worst > tolerance * scale:
        beyond = sum(int((d > tolerance * scale).sum()) for d in differences)
        total = sum(d.size for d in differences)
        raise ValueError(f'{onnx_file}: ONNX Runtime differs from PyTorch by {worst:.3g} '
                         f'(tolerance {tolerance:g} x output scale {scale:.3g}) at {beyond} of '
                         f'{total} values (a few values: a near tie in a top-k selection, as '
                         'random weights make likely; many: the export)')
    return worst


def export_detector(config: Config, out_file: str, checkpoint: Optional[str] = None,
                    input_hw: Optional[Tuple[int, int]] = None, part: str = 'detector',
                    exporter: Optional[str] = None, opset: int = DEFAULT_OPSET,
                    dynamic: bool = False, verify: bool = False,
                    tolerance: float = DEFAULT_TOLERANCE) -> Optional[float]:
    """Exports ``part`` of the detector of ``config`` (:func:`exported_network`) to ``out_file``
    with the metadata ``OnnxRuntimeDetector`` reads (a two-stage detector: also its RoI stages,
    :func:`~projects.deploy.two_stage_onnx.stage_file`), and with ``verify`` runs each file in
    ONNX Runtime on the same random inputs: returns the largest absolute difference from PyTorch
    (ValueError past the tolerance), else None."""
    network, inputs = exported_network(config, checkpoint, input_hw, part)
    stages = {branch: stage_file(out_file, branch)
              for branch in getattr(network, 'roi_branches', [])}
    graphs = [(out_file, network, inputs, exporter, part)]
    if stages:  # a two-stage detector's RoI stages, on its features of the same images
        with torch.no_grad():
            features = network.detector.extract_feat(*inputs)
        generator = torch.Generator().manual_seed(0)
        for branch, path in stages.items():
            stage = ExportedRoIStage(network.detector, branch).eval()
            stage_inputs = stage.example_inputs(features, inputs[0].shape[-2:], generator)
            graphs.append((path, stage, stage_inputs, 'dynamo', f'{branch}_roi'))
    worst = None
    for path, graph, graph_inputs, graph_exporter, graph_part in graphs:
        reference = export_onnx(graph, graph_inputs, path, graph_exporter, opset, dynamic)
        _write_metadata(path, graph_metadata(
            config.filename, graph_part, graph.output_spec,
            {branch: osp.basename(name) for branch, name in stages.items()}
            if graph is network else None))
        print_log(f'wrote {path} ({graph_part})', logger='current')
        if verify:
            difference = verify_onnx(path, dict(zip(graph.input_names, graph_inputs)),
                                     reference, tolerance)
            worst = max(worst or 0.0, difference)
    return worst


def exported_network(config: Config, checkpoint: Optional[str] = None,
                     input_hw: Optional[Tuple[int, int]] = None, part: str = 'detector'
                     ) -> Tuple[nn.Module, Tuple[Tensor, ...]]:
    """The module that is exported from ``config``'s detector (weights from ``checkpoint``, else
    seeded random ones) and random example inputs for (H, W) = ``input_hw`` (default
    :func:`default_input_hw`): an ``ExportedNetwork``, or an ``ExportedBEVFormer``."""
    require_onnx()
    if checkpoint is None:
        torch.manual_seed(0)  # the same random weights every time
    detector = build_detector(config, checkpoint)
    if type(detector).__name__ == 'BEVFormerDetector':
        from .bevformer_onnx import ExportedBEVFormer
        if part != 'detector':
            raise ValueError(f'part={part!r}: BEVFormer exports as a whole frame (part=detector)')
        network = ExportedBEVFormer(detector)
    else:
        network = ExportedNetwork(detector, part)
    input_hw = input_hw or default_input_hw(config)
    return network.eval(), network.example_inputs(input_hw, torch.Generator().manual_seed(0))


def default_input_hw(config: Config) -> Tuple[int, int]:
    """(H, W) of the test pipeline's ``Resize`` scale, rounded up to the data preprocessor's
    ``pad_size_divisor``: the size of every test image when the scale is reached exactly."""
    resize = [step for step in config.test_dataloader.dataset.pipeline
              if step['type'] == 'Resize']
    if not resize:
        raise ValueError(f'{config.filename}: no Resize in the test pipeline to take the input '
                         'size from; give it (--shape H W)')
    width, height = resize[0]['scale']
    divisor = config.model.get('data_preprocessor', {}).get('pad_size_divisor', 1)
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def _write_metadata(onnx_file: str, entries: Dict[str, str]) -> None:
    """Adds ``entries`` to the file's metadata_props (the weights stay where they are)."""
    import onnx
    model = onnx.load(onnx_file, load_external_data=False)
    for key, value in entries.items():
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            key: value})
    onnx.save(model, onnx_file)


class _ModuleTracker:
    """Keeps the stack of modules whose forward is running, so that a failure while tracing can
    name the innermost one (qualified name and class)."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.stack: List[str] = []
        self.handles = []

    def __enter__(self):
        for name, module in self.root.named_modules():
            name = re.sub(r'^detector\.?', '', name)  # the path in the detector
            label = f'{name or "<model>"} ({type(module).__name__})'
            self.handles.append(module.register_forward_pre_hook(self._enter(label)))
            self.handles.append(module.register_forward_hook(self._leave))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _enter(self, label: str):
        def hook(module, args):
            self.stack.append(label)
        return hook

    def _leave(self, module, args, output) -> None:
        if self.stack:
            self.stack.pop()

    def describe(self) -> str:
        """The innermost module running when the export stopped, or the traced graph when the
        failure came after tracing (the TorchScript exporter converts the whole graph then)."""
        return self.stack[-1] if self.stack else 'converting the traced graph'


def _summary(error: BaseException, limit: int = 1) -> str:
    """The exception's own summary: torch's export errors are pages long, with the cause after
    an '## Exception summary' heading."""
    text = str(error)
    if '## Exception summary' in text:
        text = text.split('## Exception summary', 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    summary = ' '.join(lines[:limit]) or type(error).__name__
    return re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r'\1', summary)  # <class 'a.b.C'> -> C


def _module_of_failed_op(program: 'torch.export.ExportedProgram', summary: str) -> str:
    """The module (qualified name and class) whose graph node calls the op named in a
    conversion error's ``summary``; 'the exported graph' when none is named or found."""
    match = re.search(r"op='([\w.]+)'", summary)
    if match:
        for node in program.graph.nodes:
            if node.op == 'call_function' and str(node.target).startswith(match.group(1)):
                stack = list(node.meta.get('nn_module_stack', {}).values())
                if stack:
                    path, module_type = stack[-1]
                    name = re.sub(r'^(L__self__\.?)?(detector\.?)?', '', path)
                    type_name = getattr(module_type, '__name__', str(module_type))
                    return f'{name or "<model>"} ({type_name.rsplit(".", 1)[-1]})'
    return 'the exported graph'


@contextlib.contextmanager
def _quiet_torchscript_warnings() -> Iterator[None]:
    """The TorchScript exporter warns once per shape it evaluates (TracerWarning) and about its
    own deprecation; the choice is explained in this module's doc."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', message='You are using the legacy TorchScript')
        yield
