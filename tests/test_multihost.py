"""fbp.multihost's pieces that need no second process: the fingerprint by
which the processes of a run compare their arguments, and how a difference
is named. (The joined runs themselves are in test_parallel.py.)"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbp
from fbp import multihost


@pytest.fixture
def params():
    return fbp.init_mlp(jax.random.key(0), [5, 4, 3], output_activation="softmax", dtype=jnp.float32)


def test_the_same_thing_has_the_same_fingerprint(params):
    copy = jax.tree.map(lambda x: jnp.array(np.asarray(x)), params)
    assert multihost.fingerprint(params) == multihost.fingerprint(copy)
    assert multihost.fingerprint(jax.random.key(3)) == multihost.fingerprint(jax.random.key(3))
    assert multihost.fingerprint({"lr": 0.5, "sizes": [5, 4, 3]}) == multihost.fingerprint({"lr": 0.5, "sizes": [5, 4, 3]})
    assert multihost.fingerprint(None) == multihost.fingerprint(None)


def test_any_difference_changes_the_fingerprint(params):
    """One value, the dtype of the same bytes, the shape of the same bytes,
    the tree's structure, the activation (static metadata), a PRNG key's
    seed, a plain setting: each is a different run."""
    base = multihost.fingerprint(params)
    one_value = [dataclasses.replace(params[0], w=params[0].w.at[1, 2].add(1e-6)), params[1]]
    a = np.arange(6, dtype=np.float32)
    variants = {
        "one value": multihost.fingerprint(one_value),
        "structure": multihost.fingerprint(tuple(params)),
        "activation": multihost.fingerprint(
            fbp.init_mlp(jax.random.key(0), [5, 4, 3], activation="tanh", output_activation="softmax",
                         dtype=jnp.float32)),
    }
    assert all(code != base for code in variants.values()), variants
    assert multihost.fingerprint(a) != multihost.fingerprint(a.view(np.int32))  # same bytes, another dtype
    assert multihost.fingerprint(a) != multihost.fingerprint(a.reshape(2, 3))  # same bytes, another shape
    assert multihost.fingerprint(jax.random.key(3)) != multihost.fingerprint(jax.random.key(4))
    assert multihost.fingerprint({"lr": 0.5}) != multihost.fingerprint({"lr": 0.25})


def test_differing_names_each_setting_and_the_processes_where_it_differs():
    names = ["--lr", "--seed", "data"]
    rows = np.array([[7, 8, 9],  # process 0: the reference
                     [7, 1, 9],
                     [7, 1, 2]], np.int32)
    differ = multihost.differing(rows.reshape(-1), names)  # as an all-gather may return them, flat
    assert differ == {"--seed": [1, 2], "data": [2]}
    assert multihost.differing(np.tile(rows[0], 3), names) == {}
    assert multihost.differ_text(differ) == "--seed on processes 1, 2, data on process 2 differ"
    assert multihost.differ_text({"key": [1]}) == "key on process 1 differs"


def test_in_a_run_of_one_process_process_0_does_sends_and_agrees_with_plain_calls(params):
    assert jax.process_count() == 1
    assert multihost.from_process_0(params) is params
    assert multihost.process_0_does(lambda: {"epoch": 3}) == {"epoch": 3}
    with pytest.raises(ZeroDivisionError):
        multihost.process_0_does(lambda: 1 / 0)
    multihost.same_on_every_process({"epochs": 3, "params": params})  # nothing to compare with: no error
    assert multihost.agreed(lambda: "stop here") == "stop here" and multihost.agreed(lambda: None) is None
    with pytest.raises(ZeroDivisionError):  # as it is: no other process to tell
        multihost.agreed(lambda: 1 / 0, "on_epoch")


@pytest.mark.parametrize("coordinator, expected", [("host0:1234", ("host0", 1234)), ("[::1]:8476", ("::1", 8476)),
                                                   ("10.0.0.2:80", ("10.0.0.2", 80))])
def test_host_port_reads_ipv4_ipv6_and_names(coordinator, expected):
    assert multihost.host_port(coordinator) == expected


NCCL_SHARED_GPU = ("INTERNAL: NCCL operation ncclCommInitRankConfig(...) failed: invalid usage (run with "
                   "NCCL_DEBUG=WARN for details). Last NCCL warning(error) log entry (may be unrelated) 'Duplicate "
                   "GPU detected : rank 0 and rank 1 both on CUDA device 60'.")  # as jax 0.11.2 raised it on an H200


def test_two_processes_on_one_gpu_are_told_so_in_one_line(monkeypatch):
    """Two processes of a run started on a machine of one GPU both take it,
    and their first collective fails in NCCL. fbp names that and the way out,
    in the all-gather and the broadcast of fit and in fbp train's first
    all-gather (a one-line error, status 1); other failures go through as
    they were."""
    from jax.experimental import multihost_utils

    from fbp import cli_train

    def nccl_refuses(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(NCCL_SHARED_GPU)

    monkeypatch.setattr(multihost_utils, "process_allgather", nccl_refuses)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", nccl_refuses)
    for call in (lambda: multihost.allgather(np.zeros(3, np.int32)),
                 lambda: multihost._collective(multihost_utils.broadcast_one_to_all, [np.zeros(2)])):
        with pytest.raises(multihost.SharedDeviceError, match="two processes of this run drive the same GPU") as e:
            call()
        assert "CUDA_VISIBLE_DEVICES" in str(e.value) and "JAX_PLATFORMS=cpu" in str(e.value)
    with pytest.raises(cli_train._Exit) as e:
        cli_train._others_failed(failed=False, settings={name: 0 for name in cli_train.SHARED_SETTINGS})
    assert e.value.status == 1
    assert e.value.line.startswith("fbp train: error: two processes of this run drive the same GPU")
    assert "\n" not in e.value.line

    def other_failure(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("UNAVAILABLE: the coordination service went away")

    monkeypatch.setattr(multihost_utils, "process_allgather", other_failure)
    with pytest.raises(jax.errors.JaxRuntimeError, match="coordination service"):
        multihost.allgather(np.zeros(3, np.int32))
