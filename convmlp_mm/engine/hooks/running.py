"""Whether a run is still going, for the parts that outlive a run that raised (mmengine calls no
hook then): the frame of its loop's ``run()``, and whether that frame is still on its thread's
stack."""
import sys
import threading
from types import FrameType
from typing import Optional


def loop_frame(loop) -> Optional[FrameType]:
    """The frame of ``loop.run()`` on the calling thread's stack (a hook asks from inside it);
    None outside it."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == 'run' and frame.f_locals.get('self') is loop:
            return frame
        frame = frame.f_back
    return None


def on_stack(target: Optional[FrameType], thread: Optional[int] = None,
             frame: Optional[FrameType] = None) -> bool:
    """Whether ``target`` is on the stack of ``thread`` (from its current frame, or from ``frame``:
    a signal handler's)."""
    frame = frame if frame is not None else sys._current_frames().get(thread or threading.get_ident())
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False
