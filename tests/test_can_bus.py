"""The CAN-bus vector (projects/datasets/can_bus.py): read through nuscenes-devkit's
NuScenesCanBus from small hand-written expansions and checked against the official converter's
rule written out the obvious way; the errors for a wrong folder; the ego-pose fallback; the
dataset's per-frame vector against pyquaternion's ``quaternion_yaw`` (the official code's)."""
import json
import os
import warnings

import numpy as np
import pytest

from projects.datasets.can_bus import CAN_BUS_DIM, CanBusReader, check_can_bus_root, frame_can_bus
from projects.datasets.nuscenes_infos import matrix_to_quaternion, pose_matrix

SCENE = 'scene-0001'
# message i at FIRST_UTIME + i * STEP, i = 0..NUM_MESSAGES-1
FIRST_UTIME, STEP, NUM_MESSAGES = 1_000_000, 20_000, 6


def _message(i: int, utime: int) -> dict:
    """Pose message ``i``: every value tells which message it came from."""
    yaw = 0.1 * i
    return dict(accel=[100.0 + i, 0.5, 9.8], orientation=[np.cos(yaw / 2), 0.0, 0.0,
                                                          np.sin(yaw / 2)],
                pos=[10.0 * i, 1.0, 0.0], rotation_rate=[0.0, 0.0, 0.01 * i + 0.001],
                utime=utime, vel=[5.0 + i, 0.0, 0.0])


def _write_expansion(root, scenes: dict) -> str:
    """``root/can_bus/<scene>_pose.json`` for each {scene: messages}; returns ``root``."""
    can_dir = root / 'can_bus'
    can_dir.mkdir(parents=True, exist_ok=True)
    for scene, messages in scenes.items():
        (can_dir / f'{scene}_pose.json').write_text(json.dumps(messages))
    return str(root)


def _obvious_can_bus(messages, timestamp, official_quirk=True):
    """The official converter's rule, spelled out: pose from the last message at or before the
    timestamp (else the first message); accel, rotation_rate, vel from the first message after
    it (else the last message) when ``official_quirk``, else from the pose's message."""
    at_or_before = [m for m in messages if m['utime'] <= timestamp]
    after = [m for m in messages if m['utime'] > timestamp]
    pose = at_or_before[-1] if at_or_before else messages[0]
    motion = (after[0] if after else messages[-1]) if official_quirk else pose
    return np.array(pose['pos'] + pose['orientation'] + motion['accel'] + motion['rotation_rate']
                    + motion['vel'] + [0.0, 0.0])


@pytest.fixture
def expansion(tmp_path):
    messages = [_message(i, FIRST_UTIME + i * STEP) for i in range(NUM_MESSAGES)]
    return _write_expansion(tmp_path / 'nuscenes', {SCENE: messages}), messages


@pytest.mark.parametrize('official_quirk', [True, False])
def test_vector_follows_the_official_rule(expansion, official_quirk):
    root, messages = expansion
    reader = CanBusReader(root) if official_quirk else CanBusReader(root, official_quirk=False)
    timestamps = [FIRST_UTIME - 5_000,  # before every message: the first one for everything
                  FIRST_UTIME,  # exactly at message 0: "at or before" includes it
                  FIRST_UTIME + 2 * STEP + 7_000,  # between 2 and 3
                  FIRST_UTIME + 3 * STEP - 1,  # just before 3
                  FIRST_UTIME + (NUM_MESSAGES - 1) * STEP,  # at the last one: nothing after
                  FIRST_UTIME + NUM_MESSAGES * STEP]  # after every message: the last one
    ego = ([7.0, 8.0, 9.0], [1.0, 0.0, 0.0, 0.0])  # not used with an expansion
    for timestamp in timestamps:
        can_bus = reader.sample_can_bus(SCENE, timestamp, *ego)
        assert can_bus.shape == (CAN_BUS_DIM, ) and can_bus.dtype == np.float64
        np.testing.assert_array_equal(can_bus, _obvious_can_bus(messages, timestamp,
                                                                official_quirk))
    # the quirk in numbers: between messages 2 and 3, pose from 2, motion from 3
    can_bus = reader.sample_can_bus(SCENE, FIRST_UTIME + 2 * STEP + 7_000, *ego)
    assert can_bus[0] == 20.0
    assert can_bus[7] == (103.0 if official_quirk else 102.0)
    assert can_bus[13] == (8.0 if official_quirk else 7.0)
    np.testing.assert_array_equal(can_bus[16:], [0.0, 0.0])


def test_unreadable_scenes_get_zeros_and_one_warning_each(tmp_path):
    root = _write_expansion(tmp_path, {SCENE: [_message(0, FIRST_UTIME)], 'scene-0002': []})
    reader = CanBusReader(root)
    ego = ([7.0, 8.0, 9.0], [1.0, 0.0, 0.0, 0.0])
    # scene-0003: no pose file; scene-0002: no messages; scene-0161: on the devkit's blacklist
    for scene in ('scene-0003', 'scene-0002', 'scene-0161'):
        with pytest.warns(UserWarning, match=scene) as record:
            for timestamp in (FIRST_UTIME, FIRST_UTIME + STEP):
                np.testing.assert_array_equal(reader.sample_can_bus(scene, timestamp, *ego),
                                              np.zeros(CAN_BUS_DIM))
        assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert reader.sample_can_bus(SCENE, FIRST_UTIME, *ego)[7] == 100.0


def test_wrong_folder_errors_name_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='does_not_exist.*not a directory'):
        CanBusReader(tmp_path / 'does_not_exist')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='empty.*no can_bus/ folder'):
        check_can_bus_root(tmp_path / 'empty')
    root = _write_expansion(tmp_path / 'data', {SCENE: [_message(0, FIRST_UTIME)]})
    # the can_bus/ folder itself instead of the folder holding it
    with pytest.raises(FileNotFoundError, match='pass its parent') as info:
        CanBusReader(os.path.join(root, 'can_bus'))
    assert str(tmp_path / 'data') in str(info.value)
    (tmp_path / 'other' / 'can_bus').mkdir(parents=True)
    (tmp_path / 'other' / 'can_bus' / 'readme.txt').write_text('')
    with pytest.raises(FileNotFoundError, match='holds no scene-XXXX_pose.json'):
        CanBusReader(tmp_path / 'other')
    assert check_can_bus_root(tmp_path / 'data') == root


def test_without_expansion_ego_pose_and_one_warning():
    reader = CanBusReader()
    translation, rotation = [600.5, 1640.25, 0.5], [-0.968, -0.004, -0.008, 0.248]
    with pytest.warns(UserWarning, match='no CAN bus expansion.*zeros') as record:
        first = reader.sample_can_bus('scene-0001', 0, translation, rotation)
        reader.sample_can_bus('scene-0002', 0, translation, rotation)
    assert len(record) == 1
    np.testing.assert_array_equal(first, [*translation, *rotation] + [0.0] * 11)


def _euler_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll): the rotated x axis points at heading ``yaw``."""
    cy, sy, cp, sp, cr, sr = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                              np.cos(roll), np.sin(roll))
    return (np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
            @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
            @ np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]]))


@pytest.mark.parametrize('yaw', [-3.0, -1.2, -0.01, 0.3, 2.5, 3.1])
def test_frame_vector_against_the_ego_pose(yaw):
    from nuscenes.eval.common.utils import Quaternion, quaternion_yaw

    ego2global = np.eye(4)
    ego2global[:3, :3] = _euler_rotation(yaw, 0.02, -0.03)
    ego2global[:3, 3] = [411.0, 1180.5, 0.7]
    stored = np.arange(CAN_BUS_DIM, dtype=np.float64) + 0.5
    can_bus = frame_can_bus(stored.tolist(), ego2global)
    assert can_bus.dtype == np.float64 and can_bus.shape == (CAN_BUS_DIM, )
    np.testing.assert_array_equal(can_bus[:3], ego2global[:3, 3])
    np.testing.assert_allclose(Quaternion(can_bus[3:7]).rotation_matrix, ego2global[:3, :3],
                               atol=1e-12)
    np.testing.assert_array_equal(can_bus[7:16], stored[7:16])
    expected = yaw % (2 * np.pi)  # the heading of the rotated x axis, in [0, 2 pi)
    assert 0 <= can_bus[16] < 2 * np.pi
    np.testing.assert_allclose(can_bus[16], expected, atol=1e-12)
    np.testing.assert_allclose(can_bus[17], np.degrees(expected), atol=1e-10)
    official = quaternion_yaw(Quaternion(matrix=ego2global[:3, :3]))  # the official's yaw
    np.testing.assert_allclose(can_bus[16], official % (2 * np.pi), atol=1e-12)


def test_frame_vector_quaternion_sign_follows_the_stored_one():
    ego2global = pose_matrix([1.0, 2.0, 0.0], [-0.968, -0.004, -0.008, 0.248])
    quaternion = matrix_to_quaternion(ego2global)  # w >= 0
    stored = np.zeros(CAN_BUS_DIM)
    np.testing.assert_allclose(frame_can_bus(stored, ego2global)[3:7], quaternion)
    stored[3:7] = [-0.968, -0.004, -0.008, 0.248]  # the database's sign (w < 0)
    np.testing.assert_allclose(frame_can_bus(stored, ego2global)[3:7], -quaternion)
    with pytest.raises(ValueError, match='18 values'):
        frame_can_bus(stored[:16], ego2global)
