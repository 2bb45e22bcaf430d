"""Each hand-written σ' and ∇_a C against jax.grad of σ and C (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbp
from fbp.costs import CLOSED_FORMS

ELEMENTWISE = [a for a in fbp.ACTIVATIONS.values() if a.elementwise]
Z = jnp.concatenate([jnp.linspace(-6.0, 6.0, 121) + 0.013, jnp.array([-60.0, -30.0, 0.0, 30.0, 60.0, 800.0, -800.0])])


@pytest.mark.parametrize("act", ELEMENTWISE, ids=lambda a: a.name)
def test_elementwise_prime_equals_autodiff(act):
    ref = jax.vmap(jax.grad(act.fn))(Z)
    np.testing.assert_allclose(act.prime(Z), ref, rtol=1e-13, atol=1e-15)
    assert np.all(np.isfinite(act.fn(Z))) and np.all(np.isfinite(act.prime(Z)))


@pytest.mark.parametrize("act", ELEMENTWISE, ids=lambda a: a.name)
def test_backward_is_g_times_prime(act):
    g = jnp.sin(Z)
    np.testing.assert_allclose(act.backward(Z, act.fn(Z), g), g * act.prime(Z), rtol=0, atol=0)


def test_softmax_vjp_equals_autodiff():
    key = jax.random.key(1)
    for n in (1, 2, 5, 17):
        k1, k2, key = jax.random.split(key, 3)
        z = 3 * jax.random.normal(k1, (n,))
        g = jax.random.normal(k2, (n,))
        a, vjp = jax.vjp(fbp.ACTIVATIONS["softmax"].fn, z)
        np.testing.assert_allclose(fbp.ACTIVATIONS["softmax"].backward(z, a, g), vjp(g)[0], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(jnp.sum(a), 1.0, rtol=1e-14)


def test_softmax_is_shift_invariant_and_finite():
    z = jnp.array([1000.0, 999.0, -1000.0])
    a = fbp.ACTIVATIONS["softmax"].fn(z)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, fbp.ACTIVATIONS["softmax"].fn(z - 1000.0), rtol=1e-15)


@pytest.mark.parametrize("cost", fbp.COSTS.values(), ids=lambda c: c.name)
def test_cost_grad_equals_autodiff(cost):
    key = jax.random.key(2)
    for n in (1, 3, 10):
        k1, k2, key = jax.random.split(key, 3)
        a = jax.random.uniform(k1, (n,), minval=0.05, maxval=0.95)
        y = jax.nn.one_hot(jax.random.randint(k2, (), 0, n), n)
        np.testing.assert_allclose(cost.grad(a, y), jax.grad(cost.fn)(a, y), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("pair", list(CLOSED_FORMS), ids=lambda p: "+".join(p))
def test_closed_form_equals_general_bp1(pair):
    """a − y (from z) equals ∇_a C ⊙ σ'(z) (or Jᵀ∇_a C), and the z-form cost equals C(σ(z), y)."""
    cost, act = fbp.get_cost(pair[0]), fbp.get_activation(pair[1])
    form = CLOSED_FORMS[pair]
    z = jnp.array([-2.0, 0.3, 1.7, -0.4])
    y = jnp.array([0.0, 1.0, 0.0, 0.0])
    a = act.fn(z)
    np.testing.assert_allclose(form.delta(z, y), act.backward(z, a, cost.grad(a, y)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(form.loss(z, y), cost.fn(a, y), rtol=1e-13)
    np.testing.assert_allclose(form.delta(z, y), jax.grad(form.loss)(z, y), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("pair", list(CLOSED_FORMS), ids=lambda p: "+".join(p))
def test_closed_form_saturated_is_finite(pair):
    form = CLOSED_FORMS[pair]
    z = jnp.array([-500.0, 500.0, -50.0, 50.0, 0.0])
    y = jnp.array([1.0, 0.0, 0.0, 0.0, 0.0])
    assert np.all(np.isfinite(form.delta(z, y)))
    assert np.isfinite(form.loss(z, y))
