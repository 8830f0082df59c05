"""splitmind/node/shm_spin_fix.py: vLLM's shared-memory readers spin for a short window on CPU.
(That every engine process loads it: tests/node/test_sampling.py's plugin test.)"""

from __future__ import annotations

import inspect
import subprocess
import sys

from splitmind.node import shm_spin_fix

# Two real readers in one fresh process, before and after the fix: each one's window, and how
# often its wait returned over half a second of waiting for a write that never comes (spinning:
# at once, every time; asleep: at each timeout, 50 ms or the fix's shorter cap).
SCRIPT = """
import time, zmq
from vllm.distributed.device_communicators.shm_broadcast import SpinCondition
from vllm.utils.network_utils import get_open_zmq_ipc_path
from splitmind.node import shm_spin_fix
ctx = zmq.Context()

def measure():
    addr = get_open_zmq_ipc_path()
    writer = SpinCondition(is_reader=False, context=ctx, notify_address=addr)
    reader = SpinCondition(is_reader=True, context=ctx, notify_address=addr)
    reader.record_read()
    t0, waits = time.monotonic(), 0
    while time.monotonic() - t0 < 0.5:
        reader.wait(timeout_ms=50)
        waits += 1
    return reader.busy_loop_s, waits

def lost_notification():
    # A reader idle for a second whose notification never comes (the write is in the ring, the
    # ping is lost): how long one wait sleeps before it looks again. vLLM's own: 5 s.
    addr = get_open_zmq_ipc_path()
    writer = SpinCondition(is_reader=False, context=ctx, notify_address=addr)
    reader = SpinCondition(is_reader=True, context=ctx, notify_address=addr)
    reader.last_read = time.monotonic() - 1.0
    t0 = time.monotonic()
    reader.wait(timeout_ms=5000)
    return time.monotonic() - t0

before = measure()
shm_spin_fix.apply()
print(*before, *measure(), lost_notification(), shm_spin_fix.status)
"""


def test_installed_vllm_still_spins_for_a_second() -> None:
    """Notices the day vLLM shortens (or drops) its one-second spin: then the fix can go."""
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition

    default = inspect.signature(inspect.unwrap(SpinCondition.__init__)).parameters["busy_loop_s"].default
    assert default == 1, f"vLLM's readers now spin {default} s: reconsider splitmind's shm_spin_fix"


def test_a_reader_spins_for_the_window_and_then_sleeps() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    *numbers, status = done.stdout.split()[-6:]
    window_before, waits_before, window_after, waits_after, lost_s = map(float, numbers)
    assert status == "fixed"
    assert window_before == 1 and waits_before > 1000, numbers  # vLLM's own: it spins
    # 2 ms of spinning, then sleeps of at most a quarter of the time since the last read
    assert window_after == shm_spin_fix.SPIN_S and waits_after < waits_before / 20, numbers
    assert lost_s < 0.5, numbers  # a lost notification costs at most MAX_SLEEP_MS, not vLLM's 5 s
