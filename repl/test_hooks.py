"""Hooks for the crash tests (tests/test_crash.py, tests/test_workbench.py), off unless set.

A test that interrupts a job must do it while the job provably runs, however fast the machine:
a timer that fires "after 0.5 s" hits a finished job on a fast CPU, or the test runner itself.
So the job's own progress reports carry the interruption, in the steer process under test:

- STEER_TEST_SIGINT_AT=K: at the K-th progress report of a job, the process sends itself SIGINT
  (a real Ctrl+C, through the real handler) and goes on; the job must then stop.
- STEER_TEST_PAUSE_AT=K: at the K-th progress report, it writes "steer-test: paused mid-job" to
  stderr and sleeps, so a test can kill -9 it mid-job.
"""

from __future__ import annotations

import os
import signal
import time

SIGINT_ENV = "STEER_TEST_SIGINT_AT"
PAUSE_ENV = "STEER_TEST_PAUSE_AT"
PAUSED = "steer-test: paused mid-job"

_reports = 0


def progress_reported() -> None:
    """Count one progress report of a job; act when a hook asks for this one."""
    global _reports
    if not (os.environ.get(SIGINT_ENV) or os.environ.get(PAUSE_ENV)):
        return
    _reports += 1
    if _reports == int(os.environ.get(SIGINT_ENV) or 0):
        os.kill(os.getpid(), signal.SIGINT)
    if _reports == int(os.environ.get(PAUSE_ENV) or 0):
        os.write(2, f"{PAUSED}\n".encode())
        time.sleep(600)
