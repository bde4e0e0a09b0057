"""The one place that turns official BEVFormer checkpoints into :class:`BEVFormerDetector` weights.

The official checkpoints (fundamentalvision/BEVFormer, tiny / small / base; mmdet3d 0.17, mmcv 1.x
``BaseTransformerLayer``) are ``dict(state_dict=..., meta=...)``. Their keys map onto ours one to
one (``{i}`` a layer, ``{p}`` weight or bias; ``{attn}`` one of sampling_offsets,
attention_weights, value_proj, output_proj)::

    official (H = pts_bbox_head., T = H + transformer.)  ours
    img_backbone.*, img_neck.*                          unchanged (mmdet 2.x and 3.x ResNet / FPN /
                                                        DCNv2 name their tensors alike)
    H.bev_embedding.weight                              encoder.bev_embedding.weight
    H.positional_encoding.{row,col}_embed.weight        encoder.positional_encoding.*
    T.cams_embeds, T.level_embeds                       encoder.cams_embeds, encoder.level_embeds
    T.encoder.layers.{i}.attentions.0.{attn}.{p}        encoder.layers.{i}.self_attn.{attn}.{p}
    T.encoder.layers.{i}.attentions.1.                  encoder.layers.{i}.cross_attn.{same}.{p}
        deformable_attention.{sampling_offsets,
        attention_weights,value_proj}.{p}
    T.encoder.layers.{i}.attentions.1.output_proj.{p}   encoder.layers.{i}.cross_attn.output_proj.*
    T.{en,de}coder.layers.{i}.ffns.0.layers.{0.0,1}.*   {encoder,bbox_head}.layers.{i}.ffn.layers.*
    T.{en,de}coder.layers.{i}.norms.{0,1,2}.{p}         {encoder,bbox_head}.layers.{i}.norms.*
    T.decoder.layers.{i}.attentions.0.attn.             bbox_head.layers.{i}.self_attn.attn.{same}
        {in_proj_weight,in_proj_bias,out_proj.*}
    T.decoder.layers.{i}.attentions.1.{attn}.{p}        bbox_head.layers.{i}.cross_attn.{attn}.{p}
    T.reference_points.{p}                              bbox_head.reference_points.{p}
    H.query_embedding.weight                            bbox_head.query_embedding.weight
    H.{cls,reg}_branches.{i}.{j}.{p}                    bbox_head.{cls,reg}_branches.{i}.{j}.{p};
                                                        the final reg Linear's rows go from the 0.17
                                                        to the 1.x box code
                                                        (convert_head_state_dict_from_v017), the
                                                        final cls Linear's rows from the official
                                                        class order (OFFICIAL_CLASSES) to mmdet3d
                                                        1.x's (NUSCENES_CLASSES)
    T.can_bus_mlp.{0,2,norm}.{p}                        encoder.can_bus_mlp.{0,2,norm}.{p}
                                                        (build the encoder with use_can_bus=True)
    H.code_weights                                      dropped (a loss constant: ours is the
                                                        head's code_weights argument)

The tensor layouts are the same, so no tensor is reshaped: temporal self-attention offsets are
(heads, frames=2 [previous, current], levels=1, points, 2) and its offset input is
[previous BEV, query + pos] in both; spatial cross-attention offsets are (heads, levels,
points / heights, heights, 2) with the pillar heights innermost in both (pinned against slow
references in ``tests/test_bevformer_encoder.py``); the decoder attentions are mmcv's in both.
One tensor is cut: the official transformer keeps 4 level embeddings whatever the number of image
feature levels (tiny and small use row 0 only), so ``level_embeds`` keeps the rows of the levels
the source's FPN produced (counted from ``img_neck.fpn_convs.*``).

The weights compute what the official model computes only with the official code path switched
on: ``BEVFormerEncoder(use_can_bus=True, temporal_alignment='official', hit_area='padded')``
(``configs/bevformer/bevformer_{tiny,small,base}_*`` do so; ``docs/official_differences.md`` says
what each switch changes) and CAN-bus values in the infos
(``tools/data/create_nuscenes_infos.py --can-bus-root``). The converted state dict carries a
marker (``encoder.official_bevformer_weights``) so that an encoder set otherwise warns, naming the
switches, when it loads them. Other differences, not in the weights: every sample of a batch uses
its own previous BEV (the official code reads sample 0's for the offsets when bs > 1); base uses
caffe-style BGR input normalisation (mean only, std 1) that the config must repeat.

``python tools/model_converters/bevformer_official_to_ours.py SRC DST [--report]`` runs
:func:`main`. :func:`install_official_checkpoint_guard` makes a model refuse official checkpoints
with an error that names that command.
"""
import argparse
import io
import os.path as osp
import pickle
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..common.checkpoint_io import write_atomic
from ..datasets.nuscenes_infos import NUSCENES_CLASSES
from .encoder import OFFICIAL_WEIGHTS_MARKER as ENCODER_WEIGHTS_MARKER
from .head import convert_head_state_dict_from_v017

__all__ = [
    'ConversionReport', 'OfficialCheckpointError', 'convert_official_bevformer',
    'looks_like_official_bevformer', 'install_official_checkpoint_guard',
    'refuse_official_state_dict', 'load_official_checkpoint', 'save_converted_checkpoint',
    'main', 'CONVERTER_COMMAND', 'KEY_RULES',
    'OFFICIAL_WEIGHTS_MARKER'
]

CONVERTER_COMMAND = ('python tools/model_converters/bevformer_official_to_ours.py '
                     'OFFICIAL.pth CONVERTED.pth')

_HEAD = r'pts_bbox_head\.'
_TRANSFORMER = _HEAD + r'transformer\.'
_P = r'(weight|bias)'
_DEFORMABLE = r'(sampling_offsets|attention_weights|value_proj|output_proj)'
_FFN = r'ffns\.0\.layers\.(0\.0|1)\.' + _P
_NORM = r'norms\.([0-2])\.' + _P

# (official key pattern, our key template), matched in full; the first match wins.
KEY_RULES: Tuple[Tuple[str, str], ...] = (
    (r'(img_backbone|img_neck)\.(.+)', r'\1.\2'),
    (_HEAD + r'bev_embedding\.weight', r'encoder.bev_embedding.weight'),
    (_HEAD + r'positional_encoding\.(row|col)_embed\.weight',
     r'encoder.positional_encoding.\1_embed.weight'),
    (_TRANSFORMER + r'(cams_embeds|level_embeds)', r'encoder.\1'),
    (_TRANSFORMER + r'encoder\.layers\.(\d+)\.attentions\.0\.' + _DEFORMABLE + r'\.' + _P,
     r'encoder.layers.\1.self_attn.\2.\3'),
    (_TRANSFORMER + r'encoder\.layers\.(\d+)\.attentions\.1\.deformable_attention\.'
     r'(sampling_offsets|attention_weights|value_proj)\.' + _P,
     r'encoder.layers.\1.cross_attn.\2.\3'),
    (_TRANSFORMER + r'encoder\.layers\.(\d+)\.attentions\.1\.output_proj\.' + _P,
     r'encoder.layers.\1.cross_attn.output_proj.\2'),
    (_TRANSFORMER + r'encoder\.layers\.(\d+)\.' + _FFN, r'encoder.layers.\1.ffn.layers.\2.\3'),
    (_TRANSFORMER + r'encoder\.layers\.(\d+)\.' + _NORM, r'encoder.layers.\1.norms.\2.\3'),
    (_TRANSFORMER + r'decoder\.layers\.(\d+)\.attentions\.0\.attn\.'
     r'(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)',
     r'bbox_head.layers.\1.self_attn.attn.\2'),
    (_TRANSFORMER + r'decoder\.layers\.(\d+)\.attentions\.1\.' + _DEFORMABLE + r'\.' + _P,
     r'bbox_head.layers.\1.cross_attn.\2.\3'),
    (_TRANSFORMER + r'decoder\.layers\.(\d+)\.' + _FFN, r'bbox_head.layers.\1.ffn.layers.\2.\3'),
    (_TRANSFORMER + r'decoder\.layers\.(\d+)\.' + _NORM, r'bbox_head.layers.\1.norms.\2.\3'),
    (_TRANSFORMER + r'reference_points\.' + _P, r'bbox_head.reference_points.\1'),
    (_HEAD + r'query_embedding\.weight', r'bbox_head.query_embedding.weight'),
    (_HEAD + r'(cls|reg)_branches\.(\d+)\.(\d+)\.' + _P, r'bbox_head.\1_branches.\2.\3.\4'),
    (_TRANSFORMER + r'can_bus_mlp\.(0|2|norm)\.' + _P, r'encoder.can_bus_mlp.\1.\2'),
)
_COMPILED_RULES = tuple((re.compile(pattern), template) for pattern, template in KEY_RULES)

CAN_BUS_UNUSED_REASON = (
    'CAN-bus MLP: unused by the source model (its config has use_can_bus=False, the MLP output '
    'was multiplied by 0), so dropping it changes nothing')
_CAN_BUS = re.compile(_TRANSFORMER + r'can_bus_mlp\..+')
_CODE_WEIGHTS = re.compile(_HEAD + r'code_weights')
_LEVEL_EMBEDS = 'encoder.level_embeds'
_FPN_OUTPUT = re.compile(r'img_neck\.fpn_convs\.(\d+)\.')
# What the converter adds to mark the weights as the official code path's (see the module doc).
OFFICIAL_WEIGHTS_MARKER = 'encoder.' + ENCODER_WEIGHTS_MARKER
# The official configs' class order (their classification rows); ours is mmdet3d 1.x's
# (NUSCENES_CLASSES), so the rows of the last classification Linear are reordered.
OFFICIAL_CLASSES = ('car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier',
                    'motorcycle', 'bicycle', 'pedestrian', 'traffic_cone')
UNKNOWN_REASON = 'not part of the official BEVFormer layout this converter knows; no counterpart'

# Markers of an official BEVFormer state dict (after an optional "module." / "pts_bbox_head.").
_OFFICIAL_MARKERS = re.compile(r'^(bev_embedding\.weight$|transformer\.can_bus_mlp\.|'
                               r'transformer\.encoder\.layers\.\d+\.attentions\.\d+\.)')
# Head-level keys of an official head state dict saved without the detector's "pts_bbox_head.".
_HEAD_LEVEL = re.compile(r'^(transformer|bev_embedding|query_embedding|positional_encoding|'
                         r'cls_branches|reg_branches|code_weights)\b')


class OfficialCheckpointError(ValueError):
    """An official BEVFormer checkpoint was given where our layout is needed (or vice versa)."""


@dataclass
class ConversionReport:
    """What :func:`convert_official_bevformer` did with every key.

    mapped: (official key, our key) pairs; dropped: (official key, reason) pairs; box_code_keys:
    our keys whose rows were rewritten from the 0.17 to the 1.x box code; class_order_keys: our
    keys whose rows were put in NUSCENES_CLASSES order; cut: (our key, what was kept) for
    tensors of which only a part is used; notes: findings to read.
    """
    mapped: List[Tuple[str, str]] = field(default_factory=list)
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    box_code_keys: List[str] = field(default_factory=list)
    class_order_keys: List[str] = field(default_factory=list)
    cut: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Whether no dropped key changes the output: the converted weights, in an encoder set
        to the official code path (module doc), compute what the official model computes."""
        return all(reason == CAN_BUS_UNUSED_REASON or reason.startswith('loss constant')
                   for _, reason in self.dropped)

    def dropped_for_meta(self) -> List[Dict[str, str]]:
        return [dict(key=key, reason=reason) for key, reason in self.dropped]

    def summary(self, verbose: bool = False) -> str:
        """Counts and reasons; with ``verbose`` every mapped and dropped key."""
        lines = [f'mapped {len(self.mapped)} tensors, dropped {len(self.dropped)}, '
                 f'{len(self.box_code_keys)} rewritten from the mmdet3d 0.17 to the 1.x box code']
        by_reason: Dict[str, List[str]] = {}
        for key, reason in self.dropped:
            by_reason.setdefault(reason, []).append(key)
        for reason, keys in by_reason.items():
            lines.append(f'dropped {len(keys)}: {reason}')
            lines.extend(f'    {key}' for key in keys)
        lines.extend(f'cut {key}: {what}' for key, what in self.cut)
        lines.extend(f'note: {note}' for note in self.notes)
        if verbose:
            lines.append('mapping (official -> ours):')
            lines.extend(f'    {old} -> {new}' for old, new in self.mapped)
            if self.box_code_keys:
                lines.append('box code 0.17 -> 1.x: ' + ', '.join(self.box_code_keys))
        return '\n'.join(lines)


# ---- recognising checkpoints --------------------------------------------------------------------
def _tensors(checkpoint: Mapping) -> Mapping:
    """The state dict of a checkpoint dict (``state_dict`` / ``model`` entry) or the dict itself."""
    for wrapper in ('state_dict', 'model'):
        inner = checkpoint.get(wrapper) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping):
            return inner
    return checkpoint


def _normalised_key(key: str) -> str:
    """Without DDP's ``module.``, and with ``pts_bbox_head.`` on head-level keys of a bare head."""
    if key.startswith('module.'):
        key = key[len('module.'):]
    if _HEAD_LEVEL.match(key):
        key = 'pts_bbox_head.' + key
    return key


def _is_official_key(key: str) -> bool:
    key = _normalised_key(key)
    if key.startswith('pts_bbox_head.'):
        key = key[len('pts_bbox_head.'):]
    return bool(_OFFICIAL_MARKERS.match(key))


def looks_like_official_bevformer(state_dict: Mapping) -> bool:
    """Whether ``state_dict`` (or a checkpoint dict holding one under ``state_dict``) is in the
    official BEVFormer layout: a BEV embedding under ``pts_bbox_head.``, the CAN-bus MLP or mmcv
    1.x ``attentions.{i}`` encoder layers under ``transformer.``. DETR3D (no encoder) and our
    own layout (``encoder.`` / ``bbox_head.``) are not."""
    return any(isinstance(key, str) and _is_official_key(key) for key in _tensors(state_dict))


def refuse_official_state_dict(module: nn.Module, state_dict: Mapping, prefix: str,
                               *args: Any) -> None:
    """A load-state-dict pre-hook (``module.register_load_state_dict_pre_hook``): raises
    :class:`OfficialCheckpointError` naming the converter when ``state_dict`` (the keys under
    ``prefix``) is an official BEVFormer checkpoint. Runs for ``nn.Module.load_state_dict`` and
    mmengine's ``load_checkpoint`` alike, strict or not."""
    keys = [key[len(prefix):] for key in state_dict if key.startswith(prefix)]
    if any(_is_official_key(key) for key in keys):
        raise OfficialCheckpointError(
            f'this is an official BEVFormer checkpoint (mmdet3d 0.17 layout: keys such as '
            f'"pts_bbox_head.transformer.encoder.layers.0.attentions.0.sampling_offsets.weight"); '
            f'{type(module).__name__} has another layout and box convention. Convert it first:\n'
            f'    {CONVERTER_COMMAND}\nand load CONVERTED.pth instead.')


def install_official_checkpoint_guard(module: nn.Module):
    """Make ``module`` refuse official BEVFormer checkpoints (see
    :func:`refuse_official_state_dict`); returns the hook handle."""
    return module.register_load_state_dict_pre_hook(refuse_official_state_dict)


# ---- conversion ---------------------------------------------------------------------------------
def _rename(key: str) -> Optional[str]:
    for pattern, template in _COMPILED_RULES:
        match = pattern.fullmatch(key)
        if match:
            return match.expand(template)
    return None


def _config_flag(meta: Optional[Mapping], name: str) -> Optional[bool]:
    """``name=True/False`` from the config text mmdet 2.x stores in ``meta['config']``."""
    config = meta.get('config') if isinstance(meta, Mapping) else None
    if not isinstance(config, str):
        return None
    values = set(re.findall(rf'\b{name}\s*=\s*(True|False)\b', config))
    return values == {'True'} if len(values) == 1 else None


def _check_layout(state_dict: Mapping[str, Tensor]) -> None:
    """Raise for an official variant whose tensors cannot mean what ours do."""
    embedding = state_dict.get('pts_bbox_head.bev_embedding.weight')
    if embedding is None:
        return
    embed_dims = embedding.shape[1]
    pattern = re.compile(_TRANSFORMER + r'encoder\.layers\.\d+\.attentions\.0\.'
                         r'sampling_offsets\.weight')
    for key, value in state_dict.items():
        if pattern.fullmatch(key) and value.shape[1] != 2 * embed_dims:
            raise ValueError(
                f'{key} takes {value.shape[1]} input features; a temporal self-attention over '
                f'[previous BEV, current BEV] takes 2 * embed_dims = {2 * embed_dims} (ours has '
                'exactly 2 frames)')


def _notes(state_dict: Mapping[str, Tensor], report: ConversionReport) -> None:
    reg0, reg1 = (state_dict.get(f'pts_bbox_head.reg_branches.{i}.0.weight') for i in (0, 1))
    if reg0 is not None and reg1 is not None and torch.equal(reg0, reg1):
        report.notes.append(
            'the regression branches of all decoder layers are identical: the source was trained '
            'without box refinement (with_box_refine=False), ours always refines; build the head '
            'with share_branches=True and expect different outputs')


def convert_official_bevformer(
        state_dict: Mapping[str, Any],
        meta: Optional[Mapping] = None) -> Tuple['OrderedDict[str, Tensor]', ConversionReport]:
    """An official BEVFormer (tiny / small / base) state dict -> ``BEVFormerDetector``'s.

    Args:
        state_dict: the official tensors (or the checkpoint dict holding them under
            ``state_dict``); a ``module.`` prefix and a bare head (no ``pts_bbox_head.``) are
            accepted.
        meta: the checkpoint's ``meta``; when its ``config`` text says ``use_can_bus=False`` the
            CAN-bus MLP is reported as unused (dropping it is then exact).

    Returns:
        Our state dict (same tensors; the final Linear of every regression branch rewritten to
        the mmdet3d 1.x box code by ``convert_head_state_dict_from_v017``, the unused level
        embeddings cut, the marker ``OFFICIAL_WEIGHTS_MARKER`` added) and the report. Keys are
        renamed, never reshaped (module doc); loading into a model of another size fails there
        with the shapes named.

    Raises:
        OfficialCheckpointError: ``state_dict`` is not in the official layout.
    """
    if isinstance(state_dict, Mapping) and meta is None and isinstance(state_dict.get('meta'),
                                                                       Mapping):
        meta = state_dict['meta']
    source = OrderedDict((_normalised_key(k), v) for k, v in _tensors(state_dict).items())
    if not looks_like_official_bevformer(source):
        raise OfficialCheckpointError(
            'the state dict does not look like an official BEVFormer checkpoint: expected keys '
            'such as "pts_bbox_head.bev_embedding.weight" and "pts_bbox_head.transformer.'
            'encoder.layers.0.attentions.0.sampling_offsets.weight"; got '
            + ', '.join(list(source)[:5]) + ('' if len(source) <= 5 else ' and more')
            + '. A checkpoint of BEVFormerDetector '
            '("encoder.", "bbox_head.") needs no conversion.')
    _check_layout(source)
    report = ConversionReport()
    uses_can_bus = _config_flag(meta, 'use_can_bus')
    renamed: 'OrderedDict[str, Tensor]' = OrderedDict()
    for key, value in source.items():
        if not isinstance(value, Tensor):
            report.dropped.append((key, f'not a tensor ({type(value).__name__})'))
            continue
        target = _rename(key)
        if _CAN_BUS.fullmatch(key) and uses_can_bus is False:
            report.dropped.append((key, CAN_BUS_UNUSED_REASON))
        elif target is not None:
            if target in renamed:
                raise ValueError(f'two official keys map onto {target}; the second is {key}')
            renamed[target] = value
            report.mapped.append((key, target))
        elif _CODE_WEIGHTS.fullmatch(key):
            report.dropped.append(
                (key, 'loss constant, not a weight: ours is BEVFormerHead(code_weights=...); the '
                 f'checkpoint has {[round(float(v), 4) for v in value.flatten()]}'))
        else:
            report.dropped.append((key, UNKNOWN_REASON))
    if not any(k.startswith('bbox_head.reg_branches.') for k in renamed):
        raise ValueError('the official checkpoint has no "pts_bbox_head.reg_branches.*": cannot '
                         'convert its box code to mmdet3d 1.x (is it complete?)')
    converted = convert_head_state_dict_from_v017(renamed, prefix='bbox_head.')
    report.box_code_keys = [k for k in converted if converted[k] is not renamed[k]]
    source_classes = (meta or {}).get('CLASSES') or OFFICIAL_CLASSES
    report.class_order_keys = reorder_class_rows(converted, source_classes, NUSCENES_CLASSES)

    _keep_used_level_embeds(converted, source, report)
    # the marker says whether the source added the CAN-bus MLP (its value is use_can_bus)
    converted[OFFICIAL_WEIGHTS_MARKER] = torch.tensor(int(uses_can_bus is not False))
    _notes(source, report)
    if any(reason == UNKNOWN_REASON for _, reason in report.dropped):
        report.notes.append('some keys are not part of the known official layout and were '
                            'dropped (listed above): is this a modified BEVFormer?')
    return converted, report


def _keep_used_level_embeds(converted: 'OrderedDict[str, Tensor]', source: Mapping[str, Tensor],
                            report: ConversionReport) -> None:
    """Cut ``encoder.level_embeds`` (official: always 4 rows) to the source's FPN outputs."""
    embeds = converted.get(_LEVEL_EMBEDS)
    levels = {match.group(1) for match in map(_FPN_OUTPUT.match, source) if match}
    if embeds is None or not levels or len(levels) >= embeds.shape[0]:
        return
    converted[_LEVEL_EMBEDS] = embeds[:len(levels)].clone()
    report.cut.append((_LEVEL_EMBEDS, f'rows 0..{len(levels) - 1} of {embeds.shape[0]}: the '
                       f'official transformer keeps {embeds.shape[0]} level embeddings, the '
                       f'source\'s FPN has {len(levels)} output level(s) (img_neck.fpn_convs.*), '
                       'the others were never used'))


def reorder_class_rows(state_dict: 'OrderedDict[str, Tensor]', source_classes: Sequence[str],
                       target_classes: Sequence[str]) -> List[str]:
    """Puts the rows of every classification branch's last Linear (``bbox_head.cls_branches.
    {i}.{last}``) from ``source_classes`` order into ``target_classes`` order, in place; returns
    the keys changed."""
    if sorted(source_classes) != sorted(target_classes):
        raise ValueError(f'the checkpoint\'s classes {list(source_classes)} are not the nuScenes '
                         f'detection classes {list(target_classes)}: cannot map its class rows')
    order = torch.tensor([list(source_classes).index(name) for name in target_classes])
    last_layer = {}
    for key in state_dict:
        match = re.fullmatch(r'bbox_head\.cls_branches\.(\d+)\.(\d+)\.(weight|bias)', key)
        if match:
            branch, layer = match.group(1), int(match.group(2))
            last_layer[branch] = max(last_layer.get(branch, -1), layer)
    changed = []
    for branch, layer in last_layer.items():
        for name in ('weight', 'bias'):
            key = f'bbox_head.cls_branches.{branch}.{layer}.{name}'
            if key in state_dict and state_dict[key].shape[0] == len(order):
                state_dict[key] = state_dict[key][order].clone()
                changed.append(key)
    return changed


# ---- files --------------------------------------------------------------------------------------
def load_official_checkpoint(path: str, unsafe_pickle: bool = False) -> Tuple[Dict, Dict]:
    """(state dict, meta) of an official checkpoint file.

    Loads with ``torch.load(weights_only=True)`` (tensors and plain containers only: the official
    files, ``state_dict`` + ``meta``, need nothing else). ``unsafe_pickle=True`` loads any pickled
    object, which runs code from the file: only for files you trust.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'SRC: no checkpoint file at {path!r}')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f'refusing to load {path!r} with torch.load(weights_only=True): it pickles an object '
            f'that is not a tensor or a plain container ({str(error).strip().splitlines()[0]}). '
            'Official BEVFormer checkpoints need nothing else, so the file may not be one, or '
            'may be tampered with. If you trust it, rerun with --unsafe-pickle (unpickling can '
            'run arbitrary code).') from error
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{path!r} holds a {type(checkpoint).__name__}, expected a checkpoint '
                         'dict (state_dict + meta) or a state dict')
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), Mapping) else {}
    return dict(_tensors(checkpoint)), dict(meta)


def save_converted_checkpoint(path: str, state_dict: Mapping[str, Tensor],
                              report: ConversionReport, source: str) -> None:
    """Write ``dict(state_dict, meta=dict(converted_from, dropped, ...))`` atomically: to a
    temporary file next to ``path``, then renamed over it (an interrupted run leaves no half
    file)."""
    meta = dict(converted_from=source, dropped=report.dropped_for_meta(),
                box_code='mmdet3d 1.x (regression branches converted from 0.17)',
                exact=report.exact, notes=list(report.notes))
    # the class rows are in mmdet3d 1.x order after the conversion, whatever the source's order
    meta['dataset_meta'] = dict(classes=list(NUSCENES_CLASSES))
    buffer = io.BytesIO()
    torch.save(dict(state_dict=OrderedDict(state_dict), meta=meta), buffer)
    write_atomic(buffer.getvalue(), path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The converter command; returns the exit status (errors are printed, not raised)."""
    parser = argparse.ArgumentParser(
        prog='bevformer_official_to_ours.py',
        description='Convert an official BEVFormer checkpoint (fundamentalvision/BEVFormer, '
        'mmdet3d 0.17) to BEVFormerDetector weights (mmdet3d 1.x box convention).')
    parser.add_argument('src', metavar='SRC', help='official checkpoint (.pth)')
    parser.add_argument('dst', metavar='DST', help='converted checkpoint to write')
    parser.add_argument('--report', action='store_true',
                        help='also print every mapped and dropped key')
    parser.add_argument('--unsafe-pickle', action='store_true',
                        help='load SRC with full pickle (runs code from the file: only for files '
                        'you trust) when weights_only loading refuses it')
    args = parser.parse_args(argv)
    if osp.exists(args.src) and osp.exists(args.dst) and osp.samefile(args.src, args.dst):
        print(f'error: DST {args.dst!r} is SRC: refusing to overwrite the official checkpoint',
              file=sys.stderr)
        return 1
    try:
        state_dict, meta = load_official_checkpoint(args.src, unsafe_pickle=args.unsafe_pickle)
        converted, report = convert_official_bevformer(state_dict, meta=meta)
        save_converted_checkpoint(args.dst, converted, report, args.src)
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(report.summary(verbose=args.report))
    print(f'wrote {args.dst}' + ('' if report.exact else
                                 ' (not an exact reproduction: see the notes above)'))
    return 0
