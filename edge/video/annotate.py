"""`facegate run --annotate out.mp4`: the frames as the daemon saw them, with its decisions.

Boxes per track, coloured by decision (green grant, orange deny, grey unknown, red spoof,
yellow still deciding, magenta asked for a step-up challenge), labelled with the track id, the
person and the score — or, while a challenge is pending, what is asked and the seconds left.
One file per camera when there are several (`out-<camera>.mp4`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import FacegateError
from edge.events import ChallengeEvent
from edge.video.capture import Frame
from edge.video.track import Track

# BGR, since the writer takes BGR frames.
COLOURS = {
    "grant": (60, 200, 60),
    "deny": (0, 140, 255),
    "unknown": (180, 180, 180),
    "spoof": (40, 40, 230),
    None: (0, 220, 240),
    "challenge": (230, 60, 230),
}
# What the overlay asks for, per `[[door]] liveness_challenge`.
PROMPTS = {"blink": "please blink", "turn": "please turn your head", "any": "please blink or turn your head",
           "both": "please turn your head and blink"}
# A `both` challenge's drawn steps, in the order asked (edge/video/challenge.py draw_steps).
STEP_PROMPTS = {"turn_left": "turn your head to your left", "turn_right": "turn your head to your right", "blink": "blink"}
DEFAULT_FPS = 15.0


def prompt(asked: ChallengeEvent) -> str:
    """What the person is asked to do, in order when the challenge is a drawn sequence."""
    if asked.steps:
        return "please " + ", then ".join(STEP_PROMPTS.get(step, step) for step in asked.steps)
    return PROMPTS[asked.challenge]


class Annotator:
    def __init__(self, path: Path, cameras: list[str]) -> None:
        path = Path(path)
        self.paths = {
            cam: path if len(cameras) == 1 else path.with_name(f"{path.stem}-{cam}{path.suffix}") for cam in cameras
        }
        self.writers: dict[str, cv2.VideoWriter] = {}

    def _writer(self, camera: str, image: np.ndarray, fps: float) -> cv2.VideoWriter:
        writer = self.writers.get(camera)
        if writer is None:
            h, w = image.shape[:2]
            path = self.paths[camera]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not writer.isOpened():
                raise FacegateError(f"--annotate: cannot write {path} (is the folder writable, the suffix .mp4/.avi?)")
            self.writers[camera] = writer
        return writer

    def write(self, frame: Frame, tracks: list[Track], labels: dict[int, object], fps: float = DEFAULT_FPS,
              challenges: dict[int, ChallengeEvent] | None = None) -> None:
        canvas = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        for track in tracks:
            decision = labels.get(track.track_id)
            kind = getattr(decision, "decision", None)
            asked = (challenges or {}).get(track.track_id) if decision is None else None
            colour = COLOURS["challenge"] if asked is not None else COLOURS.get(kind, COLOURS[None])
            x1, y1, x2, y2 = (round(v) for v in track.box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2 if track.detection is not None else 1)
            text = f"#{track.track_id}"
            if decision is not None:
                person = getattr(decision, "label", None)  # the name only with [privacy] show_names
                score = getattr(decision, "score", None)
                text += f" {kind} {person or ''}" + (f" {score:.2f}" if score is not None else "")
            elif asked is not None:
                # Counted on the source clock, as the decider counts the deadline.
                text += f" {prompt(asked)} ({max(0.0, asked.source_deadline - frame.t):.1f} s)"
            cv2.putText(canvas, text, (x1, max(12, y1 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        self._writer(frame.camera, canvas, fps).write(canvas)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
        self.writers.clear()
