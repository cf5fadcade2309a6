"""Tests for gbi_jax.validation: the shared argument checks and the config renaming."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gbi_jax.validation import (FieldError, check_choice, check_int, check_positive,
                                check_range, renamed, require)


def test_check_int():
    assert check_int("n", 3, 1) == 3 and isinstance(check_int("n", 3.0, 1), int)
    assert check_int("n", np.int64(4), 1, 4) == 4
    for bad in (0, 2.5, True, "3", None):
        with pytest.raises(FieldError, match=r"n must be an integer >= 1, got "):
            check_int("n", bad, 1)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 4\], got 5"):
        check_int("n", 5, 1, 4)


def test_check_positive_and_range_skip_traced_values():
    assert check_positive("lr", 0.1) == 0.1
    with pytest.raises(FieldError, match="lr must be > 0, got 0"):
        check_positive("lr", 0)
    with pytest.raises(FieldError, match="lr must be >= 0, got -1"):
        check_positive("lr", -1, allow_zero=True)
    with pytest.raises(FieldError, match=r"p must be in \(0.0, 1.0\], got 1.5"):
        check_range("p", np.float32(1.5), 0.0, 1.0, low_open=True)
    assert check_range("p", 1.0, 0.0, 1.0, low_open=True) == 1.0
    # Inside jit the value is a tracer: nothing to check, no error.
    f = jax.jit(lambda t: check_positive("t", t) + check_range("t", t, 0.0, 1.0))
    np.testing.assert_allclose(f(jnp.float32(-2.0)), -4.0)


def test_check_choice_and_require():
    assert check_choice("kind", "a", ("a", "b")) == "a"
    with pytest.raises(FieldError, match=r"kind must be one of \('a', 'b'\), got 'c'"):
        check_choice("kind", "c", ("a", "b"))
    with pytest.raises(FieldError, match="x needs two") as err:
        require(False, "x", "needs two.")
    assert err.value.field == "x" and err.value.message == "needs two."


def test_renamed_names_the_config_field():
    with pytest.raises(FieldError, match=r"^config\.grid\.sigmas: TaskInstance\.sigma must"):
        with renamed({"TaskInstance.sigma": "grid.sigmas"}, prefix="config."):
            check_positive("TaskInstance.sigma", -1.0)
    with pytest.raises(FieldError, match=r"^config\.task\.stds: SwitchingGaussianTask\.stds"):
        with renamed({"SwitchingGaussianTask.": "task."}, prefix="config."):
            require(False, "SwitchingGaussianTask.stds", "must all be > 0.")
    with pytest.raises(FieldError, match=r"^other: other must"):  # unmapped: kept
        with renamed({"a": "b"}):
            check_positive("other", 0)
    with pytest.raises(TypeError):  # other exceptions pass through untouched
        with renamed({"a": "b"}):
            raise TypeError("not a field")
