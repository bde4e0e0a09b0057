"""A small, deterministic nuScenes-format world: tables, camera images, LiDAR sweeps, infos.

The world is a flat ground plane (global z = 0) with boxes on it. In each scene the ego vehicle
drives forward at 4-8 m/s, speeding up or slowing down by up to 0.5 m/s^2, on a gentle curve (yaw
rate up to 0.06 rad/s, changing linearly in time): ``EgoTrajectory``; keyframes come at 2 Hz.
Around it stand or move, at constant velocity, objects of all ten nuScenes detection classes
with realistic sizes (plus one ``movable_object.debris``, a category outside the detection
classes): ``OBJECT_SPECS``. Every object stays within ``MAX_EGO_DISTANCE`` (28 m) of the
ego at every keyframe, inside every class's evaluation range, and no two objects (nor an object
and the ego) come close to overlapping. Attributes follow the motion (``vehicle.moving`` /
``vehicle.parked`` (a bus: ``vehicle.stopped``), ``pedestrian.moving`` / ``pedestrian.standing``,
``cycle.with_rider`` / ``cycle.without_rider``, none for cones, barriers and debris).

Sensors are the real nuScenes rig (``RIG``: the six cameras and LIDAR_TOP of log
n015-2018-07-24-11-22-45+0800 of nuScenes v1.0-mini; nuScenes is (c) Motional, CC BY-NC-SA 4.0,
https://www.nuscenes.org/terms-of-use). Extrinsics are unchanged; camera intrinsics are scaled
from the real 1600x900 images to ``image_size`` (default 400x224: ``fx, cx`` times 400/1600,
``fy, cy`` times 224/900, as mmdet3d's ``Resize`` scales ``cam2img``). All sensors of a keyframe
fire at the same instant (real nuScenes cameras trigger up to ~40 ms from the LiDAR sweep), so
every sample_data of a sample has the same timestamp and ego pose.

* Images (JPEG): sky and a ground plane with a 5 m checkerboard fixed in global coordinates
  (it slides past as the ego moves), then each box drawn as filled faces in its class colour
  (``OBJECT_SPECS``), shaded by the face's orientation to a fixed light, back faces culled, faces
  clipped at ``NEAR_PLANE`` in front of the camera, boxes painted far to near. Pixel ``(col, row)``
  has its centre at image coordinates ``(col, row)`` (OpenCV's convention).
* LiDAR (``.pcd.bin``, float32 ``(N, 5)``: x, y, z in the LIDAR_TOP frame, intensity, ring): a
  32-beam scanner (elevations -30.67..10.67 deg, like the real HDL-32E) cast against the boxes and
  the ground every ``AZIMUTH_STEP_DEG``. Box returns are stored 5 mm behind the surface hit
  (grazing returns within 1 mm of an edge are dropped, so no point sits on a box boundary);
  ground returns are thinned to one azimuth in ``GROUND_THINNING`` to keep the files small.
  ``num_lidar_pts`` of an annotation is the number of stored points inside its box; object
  placement is redrawn until every detection-class object has points at every keyframe, so the
  devkit's evaluation keeps every box. There is no radar (``num_radar_pts`` = 0).
* ``visibility_token``: the fraction of the object's silhouette (over the six images) left
  unoccluded, in the real nuScenes bins (tokens '1'..'4': 0-40, 40-60, 60-80, 80-100 %).
* Objects are annotated in every keyframe of their scene.

Layout written by :func:`generate_toy_nuscenes`::

    root/
        v1.0-mini/*.json                 the 13 tables nuscenes-devkit's NuScenes() loads
        samples/CAM_*/<log>__<CAM>__<us>.jpg, samples/LIDAR_TOP/<log>__LIDAR_TOP__<us>.pcd.bin
        maps/<token>.png                 placeholder semantic-prior masks (the devkit requires a
                                         file per map record; the world has no map content)
        can_bus/<scene>_pose.json        CAN bus expansion pose messages (see below)
        nuscenes_infos_train.pkl         mmdet3d 1.4 infos (+ temporal fields) of the train scenes
        nuscenes_infos_val.pkl           ... of 'scene-0103' and 'scene-0916' (the mini_val split)
        toy_nuscenes_manifest.json       generator arguments; written last, marks completeness

The CAN bus expansion holds only the ``pose`` messages, as nuscenes-devkit's ``NuScenesCanBus``
reads them: 50 Hz from 0.2 s before a scene's first keyframe to 0.2 s after its last, 12 ms off
the keyframes (a message 12 ms before and one 8 ms after each keyframe), with ``pos`` and
``orientation`` the ego pose at ``utime``, and ``vel``, ``accel`` (the time derivatives of the
ego's velocity, no gravity term) and ``rotation_rate`` in the ego frame (``ego_motion``). The
info files' ``can_bus`` is read back from it with the devkit (``can_bus.py``).

Scenes carry the names of the devkit's official v1.0-mini splits (``mini_train``: the first
``num_train_scenes`` of its 8 names; ``mini_val``: both of its names), so the devkit's
``DetectionEval(eval_set='mini_val')`` and mmdet3d's ``NuScenesMetric`` run on the world as is.

Everything is a function of the arguments: a scene is drawn from ``numpy.random.Generator`` s
seeded with ``(seed, scene number)``, tokens (32 hex digits) included, so the same arguments give
byte-identical tables and images, and the val scenes do not depend on ``num_train_scenes``.

The package splits the generator by job: ``rig`` the sensor rig, ``world`` the object classes and
the pose geometry they share, ``lidar`` the ray-cast LiDAR, ``plan`` scene planning (ego motion,
object layout, tokens), ``render`` the camera images, ``tables`` the table records and CAN bus
messages, and ``generate`` the public entry points that write it all to disk. Each module imports
only modules listed before it, never this ``__init__``.
"""

# Every public name of the former single module ``toy_nuscenes.py`` is re-exported here.
from .generate import (FORMAT_VERSION, INFO_PREFIX, JPEG_QUALITY, MANIFEST_NAME,  # noqa: F401
                       MAX_SAMPLES_PER_SCENE, MIN_IMAGE_SIDE, VERSION, generate_toy_nuscenes,
                       prepare_toy_nuscenes, toy_nuscenes_ready)
from .lidar import (AZIMUTH_STEP_DEG, GROUND_INTENSITY, GROUND_THINNING,  # noqa: F401
                    LIDAR_ELEVATIONS_DEG, LIDAR_MAX_RANGE, MIN_INSIDE_DEPTH, SURFACE_DEPTH)
from .plan import (CLEARANCE_STEPS, EGO_CLEARANCE, EGO_MAX_ACCEL, EGO_MAX_PATH,  # noqa: F401
                   EGO_MAX_YAW_RATE, EGO_SPEED, FIRST_TIMESTAMP_US, KEYFRAME_INTERVAL_US,
                   MAX_EGO_DISTANCE, MAX_OCCLUSION, MOVING_FRACTION, OBJECT_GAP, PLACEMENT_TRIES,
                   SCENE_ATTEMPTS, SIZE_JITTER, EgoTrajectory, ScenePlan, ToyObject, ego_motion,
                   plan_scene, scene_names, scene_trajectory)
from .render import CHECKER_SIZE, LIGHT_DIRECTION, NEAR_PLANE  # noqa: F401
from .rig import REAL_IMAGE_SIZE, RIG, camera_intrinsic, rig_from_info, sensor2ego  # noqa: F401
from .tables import CAN_POSE_INTERVAL_US, CAN_POSE_MARGIN_US, CAN_POSE_OFFSET_US  # noqa: F401
from .world import ATTRIBUTES, LOCATIONS, OBJECT_SPECS, VISIBILITY_BINS  # noqa: F401

__all__ = [
    'RIG', 'camera_intrinsic', 'sensor2ego', 'OBJECT_SPECS',
    'ToyObject', 'EgoTrajectory', 'ScenePlan', 'rig_from_info', 'scene_names',
    'scene_trajectory', 'ego_motion', 'plan_scene', 'generate_toy_nuscenes', 'toy_nuscenes_ready',
    'prepare_toy_nuscenes'
]
