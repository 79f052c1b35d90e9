"""A "wild" EchoNet-layout dataset made from a clean one (the phantom's), for testing the
pipeline on data unlike the phantom.

    python -m echomotion.wild data/phantom/echonet /tmp/wild --labels none

Each video of the source root is re-encoded with one variant of :data:`VARIANTS` (in
turn, after a seeded shuffle): a source frame rate of about 8 fps with 16 frames, 30 or
60 fps, a non-square (120 x 160, letterboxed) or large (600 x 600; the first such video
only, the others letterboxed) or side-by-side (twice as wide) frame, colour frames with a
burnt-in ECG trace, text and a caliper mark, clips made 3-4 times longer by looping.
``FileList.csv`` keeps the split of every video; the labels are ``none`` (empty EF, ESV,
EDV for every row) or ``partial`` (the first half, rounded up, of each split keeps its EF,
ESV and EDV). ``VolumeTracings.csv`` has its header only. One 8 fps video has an empty
FPS cell (the container's rate is used). ``wild.csv`` lists what was done to each video.
Deterministic given the source and the seed.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from echomotion.echonet import FILE_LIST, FILE_LIST_COLUMNS, TRACING_COLUMNS, TRACINGS, VIDEOS
from echomotion.video import read_video, resample_indices, write_video

__all__ = ["VARIANTS", "Variant", "WildVideo", "make_wild"]

LOW_FPS_FRAMES = 16
LARGE = (600, 600)
LETTERBOX = (120, 160)


@dataclass(frozen=True)
class Variant:
    """How one video is transformed. ``fps``: "low" (~8 fps, 16 frames), a number, or
    None (the source rate); ``layout``: square | letterbox | large | side_by_side."""

    name: str
    fps: str | float | None = None
    layout: str = "square"
    colour: bool = False
    loops: int = 1
    blank_fps: bool = False


VARIANTS = (
    Variant("low_fps", fps="low"),
    Variant("fps60_letterbox_colour", fps=60.0, layout="letterbox", colour=True),
    Variant("large", layout="large"),
    Variant("low_fps_letterbox_colour", fps="low", layout="letterbox", colour=True),
    Variant("long", loops=4),
    Variant("fps30_side_by_side_colour", fps=30.0, layout="side_by_side", colour=True),
    Variant("fps60", fps=60.0),
    Variant("colour", colour=True),
    Variant("low_fps_no_fps_cell", fps="low", blank_fps=True),
    Variant("long_letterbox", layout="letterbox", loops=3),
    Variant("fps30", fps=30.0),
    Variant("plain"),
)


@dataclass(frozen=True)
class WildVideo:
    """One video of the wild root (a row of ``wild.csv``)."""

    file_name: str
    source: str
    split: str
    variant: str
    fps: float
    n_frames: int
    height: int
    width: int
    colour: bool
    labelled: bool


def _times(n: int, fps: float, variant: Variant) -> tuple[np.ndarray, float]:
    """Source frame of each output frame, and the output rate."""
    loop = np.tile(np.arange(n), variant.loops)  # looping makes a long clip
    if variant.fps is None:
        return loop, fps
    if variant.fps == "low":
        step = max(1, round(fps / (25.0 / 3.0)))  # 50 fps -> every 6th frame: 8.33 fps
        return (np.arange(LOW_FPS_FRAMES) * step) % n, fps / step
    return loop[resample_indices(len(loop), fps, float(variant.fps))], float(variant.fps)


def _layout(frames: np.ndarray, layout: str) -> np.ndarray:
    """(T, h, w) gray -> (T, H, W) gray in the variant's frame layout."""
    if layout == "square":
        return frames
    if layout == "side_by_side":
        return np.concatenate([frames, frames[:, :, ::-1]], axis=2)
    if layout == "large":
        return np.stack(
            [cv2.resize(f, LARGE[::-1], interpolation=cv2.INTER_LINEAR) for f in frames]
        )
    h, w = LETTERBOX
    side = min(h, w)
    out = np.zeros((len(frames), h, w), np.uint8)
    top, left = (h - side) // 2, (w - side) // 2
    for t, f in enumerate(frames):
        out[t, top : top + side, left : left + side] = cv2.resize(
            f, (side, side), interpolation=cv2.INTER_AREA
        )
    return out


def _ecg(phase: np.ndarray) -> np.ndarray:
    """A stylised ECG (P, QRS, T waves) at cardiac phase in [0, 1); amplitude ~[-0.3, 1]."""
    bump = lambda c, w, a: a * np.exp(-0.5 * ((phase - c) / w) ** 2)  # noqa: E731
    return (
        bump(0.1, 0.025, 0.15)
        - bump(0.2, 0.008, 0.3)
        + bump(0.22, 0.01, 1.0)
        + bump(0.45, 0.04, 0.3)
    )


def _overlay(frames: np.ndarray, fps: float, seed: int) -> np.ndarray:
    """Gray (T, H, W) -> RGB with a green ECG trace up to a moving cursor, white text and a
    yellow caliper cross burnt in."""
    t_total, h, w = frames.shape
    rng = np.random.default_rng(seed)
    bpm = float(rng.uniform(55, 100))
    rgb = np.repeat(frames[..., None], 3, axis=3).copy()
    xs = np.arange(w)
    seconds = xs / w * (t_total / fps)  # the trace spans the clip
    trace = _ecg((seconds * bpm / 60.0) % 1.0)
    base, amp = h - max(4, h // 12), max(3, h // 10)
    ys = np.clip(base - amp * trace, 0, h - 1).astype(np.int32)
    points = np.stack([xs, ys], axis=1).astype(np.int32)
    scale, thick = max(0.25, w / 640), max(1, w // 300)
    cross = (int(w * 0.6), int(h * 0.45))
    for t in range(t_total):
        frame = rgb[t]
        cursor = max(2, int((t + 1) / t_total * w))
        cv2.polylines(frame, [points[:cursor]], False, (40, 220, 60), thick)
        font, top = cv2.FONT_HERSHEY_SIMPLEX, int(12 * scale / 0.35)
        cv2.putText(frame, f"HR {bpm:.0f}", (2, top), font, scale, (255, 255, 255), thick)
        right = w - int(60 * scale / 0.35 * 0.6)
        cv2.putText(frame, f"{fps:.0f} Hz", (right, top), font, scale, (230, 230, 230), thick)
        cv2.drawMarker(frame, cross, (250, 220, 0), cv2.MARKER_CROSS, max(5, w // 25), thick)
    return rgb


def _labelled(rows: list[dict[str, str]], labels: str) -> list[bool]:
    """Which rows keep their labels: none, or the first half (rounded up) of each split."""
    if labels == "none":
        return [False] * len(rows)
    seen: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r["Split"]] = sizes.get(r["Split"], 0) + 1
    keep = []
    for r in rows:
        seen[r["Split"]] = seen.get(r["Split"], 0) + 1
        keep.append(seen[r["Split"]] <= math.ceil(sizes[r["Split"]] / 2))
    return keep


def make_wild(
    src_root: str | Path, dst_root: str | Path, seed: int = 0, labels: str = "none"
) -> list[WildVideo]:
    """Write the wild version of the EchoNet-layout ``src_root`` to ``dst_root``."""
    if labels not in ("none", "partial"):
        raise ValueError(f"labels must be 'none' or 'partial', got {labels!r}")
    src, dst = Path(src_root), Path(dst_root)
    with (src / FILE_LIST).open(newline="") as f:
        rows = list(csv.DictReader(f))
    order = np.random.default_rng(seed).permutation(len(VARIANTS))
    keep = _labelled(rows, labels)
    out_rows, summary, large_done = [], [], False
    (dst / VIDEOS).mkdir(parents=True, exist_ok=True)
    for i, (row, labelled) in enumerate(zip(rows, keep, strict=True)):
        variant = VARIANTS[int(order[i % len(VARIANTS)])]
        if variant.layout == "large":
            variant = (
                variant if not large_done else Variant("large_as_letterbox", layout="letterbox")
            )
            large_done = True
        name = row["FileName"].removesuffix(".avi")
        source_fps = float(row["FPS"])
        gray = read_video(src / VIDEOS / f"{name}.avi", fps=source_fps).frames
        index, fps = _times(len(gray), source_fps, variant)
        frames = _layout(gray[index], variant.layout)
        if variant.colour:
            rgb = _overlay(frames, fps, seed * 1000 + i)
        else:
            rgb = np.repeat(frames[..., None], 3, axis=3)
        wild_name = f"WILD{i:04d}"
        write_video(dst / VIDEOS / f"{wild_name}.avi", rgb, fps)
        h, w = frames.shape[1:]
        out_rows.append(
            {
                "FileName": wild_name,
                **{k: row[k] if labelled else "" for k in ("EF", "ESV", "EDV")},
                "FrameHeight": str(h),
                "FrameWidth": str(w),
                "FPS": "" if variant.blank_fps else f"{fps:.4f}".rstrip("0").rstrip("."),
                "NumberOfFrames": str(len(frames)),
                "Split": row["Split"],
            }
        )
        summary.append(
            WildVideo(
                wild_name,
                name,
                row["Split"],
                variant.name,
                fps,
                len(frames),
                h,
                w,
                variant.colour,
                labelled,
            )
        )
    _write_csv(dst / FILE_LIST, FILE_LIST_COLUMNS, out_rows)
    _write_csv(dst / TRACINGS, TRACING_COLUMNS, [])
    _write_csv(dst / "wild.csv", tuple(asdict(summary[0])), [asdict(s) for s in summary])
    return summary


def _write_csv(path: Path, columns, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="EchoNet-layout root, e.g. data/phantom/echonet")
    parser.add_argument("dst", type=Path, help="where the wild root is written")
    parser.add_argument("--labels", choices=("none", "partial"), default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    videos = make_wild(args.src, args.dst, args.seed, args.labels)
    print(f"{len(videos)} videos written to {args.dst} (see wild.csv)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
