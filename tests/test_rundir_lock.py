"""One writer per run directory: the lock primitive the trainer and `sweep status` share."""
import subprocess
import sys

import pytest

from train.rundir import RunDirBusy, RunLock, lock_holder

HOLD = "from train.rundir import RunLock; import sys, time; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_frees_the_directory(tmp_path):
    assert lock_holder(tmp_path) is None
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert lock_holder(tmp_path) == p.pid
        with pytest.raises(RunDirBusy, match=f"process {p.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        p.kill()
        p.wait()
    # the kernel dropped the dead holder's lock: the file left behind means nothing
    assert (tmp_path / ".lock").exists()
    assert lock_holder(tmp_path) is None
    with RunLock(tmp_path):
        assert lock_holder(tmp_path) is not None
    assert lock_holder(tmp_path) is None
