"""A 2-machine job on this host: two `accelerate launch`es with ``--num_machines 2`` and machine ranks 0 and 1 (one
gloo process each) train, are killed, resume, and end with the same losses and weights as an uninterrupted job."""

from __future__ import annotations

import random

import pytest

from runkit import launch_nodes, losses, weights, write_run_config


@pytest.mark.slow
def test_two_node_job_trains_and_resumes_exactly(tmp_path, tiny_base, color_data):
    cfg = write_run_config(
        tmp_path, tiny_base, color_data, stage="align", save_every=1, micro_batch_size=1, global_batch_size=4, epochs=1
    )
    port = 29650 + random.Random().randint(0, 40)
    ref = launch_nodes(cfg, tmp_path / "ref", port=port)
    assert ref == [0, 0], (tmp_path / "ref-node0.log").read_text()[-3000:]
    node0 = (tmp_path / "ref-node0.log").read_text()
    assert "x 2 procs" in node0  # one process per "machine", two in all
    kill_at = random.Random().randint(1, 3)
    killed = launch_nodes(cfg, tmp_path / "run", port=port + 1, env={"SCITUNE_FAULT_AFTER_STEP": str(kill_at)})
    assert killed != [0, 0]
    resumed = launch_nodes(cfg, tmp_path / "run", "--train.resume", "latest", port=port + 2)
    log = (tmp_path / "run-node0.log").read_text()
    assert resumed == [0, 0], log[-3000:]
    assert "resumed from" in log
    assert losses(tmp_path / "run") == losses(tmp_path / "ref"), f"killed after step {kill_at}"
    assert weights(tmp_path / "run" / "final") == weights(tmp_path / "ref" / "final")
