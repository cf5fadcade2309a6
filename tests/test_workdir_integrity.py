"""Workdir integrity under ``training.fit``: metric rows logged before an interruption are
never duplicated nor lost (a garbled middle line stops the run, nothing changed), corrupt
checkpoints are skipped for the newest intact one (and never called a config mismatch),
incompatible ones are refused with one clear error."""

import glob
import os
import shutil

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gbi_jax import training
from gbi_jax.workdir import CorruptWorkdirError, Workdir

from test_training import TARGETS, _fit, _maxdiff, init_fn, loss_fn


class Killed(Exception):
    pass


def _kill_at(at):
    def on_chunk(step):
        if step == at:
            raise Killed()
    return on_chunk


def _steps(wd, name="train"):
    return [r[f"{name}_step"] for r in wd.read_metrics() if f"{name}_step" in r]


def test_rows_logged_before_the_first_checkpoint_are_not_duplicated(tmp_path):
    reference = _fit(num_steps=100, chunk_size=25)
    wd = Workdir(str(tmp_path))
    wd.append_metrics([{"other_step": 1, "loss": 5.0}])  # a row of another fit: kept
    with pytest.raises(Killed):  # checkpoints every 4 chunks: none written before the kill
        _fit(workdir=wd, num_steps=100, chunk_size=25, checkpoint_every=4,
             on_chunk=_kill_at(50))
    assert _steps(wd) == list(range(1, 51))
    resumed = _fit(workdir=wd, num_steps=100, chunk_size=25, checkpoint_every=4)
    assert resumed.resumed_from == 0
    assert _steps(wd) == list(range(1, 101))  # each step once
    assert wd.read_metrics()[0] == {"other_step": 1, "loss": 5.0}
    np.testing.assert_array_equal(resumed.history["loss"], reference.history["loss"])
    assert _maxdiff(resumed.state.params, reference.state.params) == 0.0


def _truncate_data(step_dir):
    files = [f for f in glob.glob(f"{step_dir}/default/**/d/*", recursive=True)
             if os.path.isfile(f)]
    assert files
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def _garble_metadata(step_dir):
    with open(f"{step_dir}/default/_METADATA", "w") as f:
        f.write('{"tree_metadata": {"garbled')


def _remove_item(step_dir):
    shutil.rmtree(f"{step_dir}/default")


@pytest.mark.parametrize("damage", [_truncate_data, _garble_metadata, _remove_item])
def test_a_corrupt_newest_checkpoint_is_skipped_for_the_intact_one(tmp_path, damage, caplog):
    reference = _fit(num_steps=150, chunk_size=50)
    wd = Workdir(str(tmp_path))
    with pytest.raises(Killed):
        _fit(workdir=wd, num_steps=150, chunk_size=50, on_chunk=_kill_at(100))
    ckpt = os.path.join(wd.checkpoint_dir, "train")
    damage(os.path.join(ckpt, "100"))
    with caplog.at_level("WARNING"):
        resumed = _fit(workdir=wd, num_steps=150, chunk_size=50)
    assert resumed.resumed_from == 50
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped the checkpoint at step 100: it is corrupt" in message
    assert "does not match" not in message
    assert [os.path.basename(p).split("-")[0] for p in glob.glob(ckpt + ".corrupt/*")] == ["100"]
    assert _maxdiff(resumed.state.params, reference.state.params) == 0.0
    assert _steps(wd) == list(range(1, 151))
    np.testing.assert_array_equal(resumed.history["loss"], reference.history["loss"])


def test_all_checkpoints_corrupt_restarts_from_scratch(tmp_path):
    wd = Workdir(str(tmp_path))
    _fit(workdir=wd, num_steps=100, chunk_size=50)
    for step in ("50", "100"):
        _garble_metadata(os.path.join(wd.checkpoint_dir, "train", step))
    again = _fit(workdir=wd, num_steps=100, chunk_size=50)
    assert again.resumed_from == 0 and _steps(wd) == list(range(1, 101))
    assert _maxdiff(again.state.params, _fit(num_steps=100, chunk_size=50).state.params) == 0.0


def test_an_incompatible_checkpoint_is_named_and_left_in_place(tmp_path):
    wd = Workdir(str(tmp_path))
    _fit(workdir=wd, num_steps=50)
    before = sorted(os.listdir(os.path.join(wd.checkpoint_dir, "train")))

    def wider(key, data):
        return {"w": jnp.zeros((5,)), "b": jnp.zeros(())}

    with pytest.raises(training.IncompatibleCheckpointError,
                       match=r"step 50 .*does not match the model.*params/w: shape/dtype "
                             r"\(3, 3\) float32 in the checkpoint, \(3, 5\) float32 here"):
        training.fit(init_fn=wider, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=(0, 1, 2),
                     member_data=TARGETS, num_steps=60, workdir=wd)
    assert sorted(os.listdir(os.path.join(wd.checkpoint_dir, "train"))) == before
    assert not os.path.exists(os.path.join(wd.checkpoint_dir, "train.corrupt"))


def test_a_corrupt_metrics_line_stops_fit_before_anything_changes(tmp_path):
    wd = Workdir(str(tmp_path))
    with pytest.raises(Killed):
        _fit(workdir=wd, num_steps=150, chunk_size=50, on_chunk=_kill_at(100))
    _garble_metadata(os.path.join(wd.checkpoint_dir, "train", "100"))
    with open(wd.file("metrics.jsonl")) as f:
        lines = f.read().splitlines()
    lines[7] = lines[7][:10]
    with open(wd.file("metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    before = sorted(os.listdir(os.path.join(wd.checkpoint_dir, "train")))
    with pytest.raises(CorruptWorkdirError, match="line 8"):
        _fit(workdir=wd, num_steps=150, chunk_size=50)
    assert sorted(os.listdir(os.path.join(wd.checkpoint_dir, "train"))) == before
    with open(wd.file("metrics.jsonl")) as f:
        assert f.read().splitlines() == lines  # no row dropped
