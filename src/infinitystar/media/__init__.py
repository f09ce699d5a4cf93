"""Images and videos in and out of the package: the one place that probes, decodes and writes media.

- :mod:`.probe`: ``MediaError``, the accepted suffixes, ``media_kind``, ``probe_media`` (size, rate, frame count);
- :mod:`.decode`: images, sequential video decoding, chosen frame indices, the 16 fps uint8 reader,
  ``verify_decodes``;
- :mod:`.resample`: 16 fps frame indices, cover-resize and crop, short-edge scaling;
- :mod:`.frames`: decoder output to uint8 frames, uint8 frames to [-1, 1] tensors;
- :mod:`.read`: files as model input tensors (``read_image``, ``read_video``);
- :mod:`.write`: ``write_video`` (mp4, gif, png).

Names are imported on first use (PEP 562): ``probe``, ``decode`` and ``resample`` import no torch, so curation
workers that only probe and decode start fast, while ``from infinitystar.media import read_video`` still works.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "IMAGE_SUFFIXES": "probe",
    "VIDEO_SUFFIXES": "probe",
    "MediaError": "probe",
    "MediaInfo": "probe",
    "check_media_file": "probe",
    "media_kind": "probe",
    "probe_media": "probe",
    "VideoDecoder": "decode",
    "decode_frames": "decode",
    "decode_image": "decode",
    "frame_to_rgb": "decode",
    "iter_video_frames": "decode",
    "open_image": "probe",
    "read_image_rgb": "decode",
    "read_video_frames": "decode",
    "read_video_uint8": "decode",
    "verify_decodes": "decode",
    "cover_resize_crop": "resample",
    "resample_indices": "resample",
    "scaled_size": "resample",
    "frames_to_uint8": "frames",
    "to_unit_range": "frames",
    "read_image": "read",
    "read_video": "read",
    "write_video": "write",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
