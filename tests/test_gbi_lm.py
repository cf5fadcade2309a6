"""The GBI language-model experiment: model, windows, data errors, smoke run end to end."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.gbi_lm import config as config_lib
from experiments.gbi_lm import experiment as E
from gbi_jax import inference
from gbi_jax.data import DatasetNotFoundError
from gbi_jax.data import text as gtext
from gbi_jax.models import TokenLM, lm_inputs, token_nll
from gbi_jax.validation import FieldError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pydoc_text() -> str:
    from pydoc_data import topics

    return gtext.normalize("\n".join(topics.topics[k] for k in sorted(topics.topics)))


STYLES = {  # six training "corpora" that differ in their character statistics
    "upper": str.upper,
    "lower": str.lower,
    "novowels": lambda t: t.translate(str.maketrans("", "", "aeiouAEIOU")),
    "dashed": lambda t: t.replace(" ", "-"),
    "swapped": str.swapcase,
    "plain": lambda t: t,
}


def make_corpus(root, *, chars: int = 80_000) -> str:
    """A BabyLM-layout corpus from the standard library's pydoc topics: six styles to
    train on, two held out, one far-OOD corpus of digits and symbols."""
    text = _pydoc_text()
    groups = {"train": {n: f(text[:chars]) for n, f in STYLES.items()},
              "heldout": {"titled": text[chars:2 * chars].title(),
                          "spaced": text[chars:2 * chars].replace(" ", "  ")},
              "ood": {"digits": "".join(str(ord(c) % 10) if c.isalpha() else c
                                        for c in text[:chars])}}
    for group, corpora in groups.items():
        os.makedirs(os.path.join(root, group), exist_ok=True)
        for name, t in corpora.items():
            with open(os.path.join(root, group, f"{name}.txt"), "w") as f:
                f.write(t)
    return str(root)


def smoke_config(root, **overrides):
    c = config_lib.get_config("smoke")
    c.data.dir = str(root)
    c.figures = False
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------
def _constructed_lm(k: int = 2, vocab: int = 3, hidden: int = 2):
    """A TokenLM whose next-character distribution is set by z alone: corpus k writes
    character k. Embedding and recurrent weights are zero; z drives the LSTM candidate
    gate through the input kernel, the input and output gates are open (large bias), and
    the readout maps hidden unit k to character k."""
    model = TokenLM(vocab, embed=4, hidden=hidden)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 5), jnp.int32), jnp.zeros((1, k)))
    params = jax.tree_util.tree_map(jnp.zeros_like, params)
    p = params["params"]["network"]
    e = params["params"]["embed"]["embedding"].shape[1]
    kernel = np.zeros((e + k, 4 * hidden), np.float32)
    bias = np.zeros(4 * hidden, np.float32)
    bias[:hidden] = 10.0  # input gate open
    bias[3 * hidden:] = 10.0  # output gate open
    for j in range(k):
        kernel[e + j, 2 * hidden + j] = 3.0  # z_j -> candidate of unit j
    p["core"]["input"]["Dense_0"]["kernel"] = jnp.asarray(kernel)
    p["core"]["input"]["Dense_0"]["bias"] = jnp.asarray(bias)
    readout = np.zeros((hidden, vocab), np.float32)
    for j in range(k):
        readout[j, j] = 6.0
    p["readout"]["kernel"] = jnp.asarray(readout)
    return model, params


def test_tokenlm_shapes_and_bos_convention():
    model = TokenLM(7, embed=3, hidden=5)
    tok = jnp.asarray([[1, 2, 3, 4]])
    params = model.init(jax.random.PRNGKey(0), tok, jnp.zeros((1, 2)))
    assert params["params"]["embed"]["embedding"].shape == (8, 3)  # + BOS
    assert model.apply(params, tok, jnp.zeros((1, 2))).shape == (1, 4, 7)
    np.testing.assert_array_equal(lm_inputs(tok, model.bos), [[7, 1, 2, 3]])
    logits = jnp.log(jnp.asarray([[0.5, 0.25, 0.25]]))
    np.testing.assert_allclose(token_nll(logits, jnp.asarray([1])), [math.log(4)], rtol=1e-6)
    clf = TokenLM(7, embed=3, hidden=5, out_features=2)
    p = clf.init(jax.random.PRNGKey(0), tok)
    assert clf.apply(p, tok).shape == (1, 4, 2)
    with pytest.raises(ValueError, match="TokenLM.vocab_size"):
        TokenLM(1)


@pytest.mark.parametrize("true_class", [0, 1])
def test_one_step_gbi_finds_the_corpus_of_a_constructed_model(true_class):
    model, params = _constructed_lm()
    ids = jnp.full((16,), true_class, jnp.int32)
    mask, chars = jnp.ones(16), jnp.asarray(16.0)
    loss = lambda z: E.window_loss(model, params, z, ids, mask, chars)  # noqa: E731
    res = inference.one_step(loss, inference.max_entropy_latent(2))
    assert int(res.prediction) == true_class
    exh = inference.exhaustive(loss, 2)
    assert int(exh.prediction) == true_class
    # Under its own corpus's z the model predicts the window almost surely; under the
    # other corpus's z it is almost surely wrong.
    assert float(exh.grad[true_class]) < 0.05 < 2.0 < float(exh.grad[1 - true_class])
    # A window of the other character flips the answer.
    other = jnp.full((16,), 1 - true_class, jnp.int32)
    res = inference.one_step(lambda z: E.window_loss(model, params, z, other, mask, chars),
                             inference.max_entropy_latent(2))
    assert int(res.prediction) == 1 - true_class


def test_arm_latents():
    labels = jnp.asarray([0, 2, 1, 2])
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(E.arm_latent(0, labels, key, 3), jax.nn.one_hot(labels, 3))
    np.testing.assert_allclose(E.arm_latent(1, labels, key, 3), np.full((4, 3), 1 / 3))
    shuffled = np.asarray(E.arm_latent(2, jnp.zeros(2000, jnp.int32), key, 3))
    np.testing.assert_array_equal(shuffled.sum(-1), 1.0)  # one-hot
    counts = shuffled.sum(0)  # uniform over corpora whatever the true label
    assert np.all(np.abs(counts / 2000 - 1 / 3) < 0.05)


# ---------------------------------------------------------------------------
# Windows and data.
# ---------------------------------------------------------------------------
def test_windows_deterministic_disjoint_and_spread(tmp_path):
    root = make_corpus(tmp_path, chars=30_000)
    blocks = gtext.load_blocks(os.path.join(root, "train"), "test", budget_chars=20_480,
                               block_chars=1024)
    texts, labels = E.windows(blocks, 64, 20, field="eval.windows_per_corpus")
    again, _ = E.windows(blocks, 64, 20, field="eval.windows_per_corpus")
    assert texts == again and len(texts) == 6 * 20
    np.testing.assert_array_equal(np.bincount(labels), [20] * 6)
    later, _ = E.windows(blocks, 64, 10, field="x", skip=20)
    assert not set(later) & set(texts)  # the skipped windows are other windows
    normalised = gtext.read_corpora(os.path.join(root, "train"))
    for c, name in enumerate(blocks.class_names):  # every window is text of its own class
        corpus = normalised[name]
        assert all(t in corpus for t, y in zip(texts, labels) if y == c)
    with pytest.raises(FieldError, match="config.eval.windows_per_corpus.*fewer than"):
        E.windows(blocks, 512, 100, field="eval.windows_per_corpus")


def test_find_data_babylm_layout_with_held_out_sources(tmp_path):
    text = _pydoc_text()[:40_000]
    d = tmp_path / "babylm" / "train_10M"
    d.mkdir(parents=True)
    for name, f in list(STYLES.items())[:4]:
        (d / f"{name}.train").write_text(f(text))
    c = smoke_config(tmp_path / "babylm", **{"data.train": "train_10M", "data.heldout": "",
                                             "data.ood": "", "data.budget_chars": 20_480,
                                             "data.holdout_classes": ("dashed",)})
    (corpora,) = E.find_data(c)
    assert corpora.names == ("lower", "novowels", "upper")
    assert corpora.heldout["train"].class_names == ("dashed",)
    assert set(np.unique(corpora.train["train"].labels)) == {0, 1, 2}
    np.testing.assert_array_equal(np.unique(corpora.heldout["test"].labels), [0])
    assert corpora.ood is None
    c.data.holdout_classes = ("nothere",)
    with pytest.raises(FieldError, match="config.data.holdout_classes"):
        E.find_data(c)


def test_missing_corpus_errors_say_how_to_get_it(tmp_path):
    c = smoke_config(tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError, match=r"(?s)config.data.train.*"
                       r"python -m gbi_jax.data.corpora prepare"):
        E.find_data(c)
    root = make_corpus(tmp_path / "c")
    c = smoke_config(root, **{"data.ood": "nope"})
    with pytest.raises(DatasetNotFoundError, match="config.data.ood"):
        E.find_data(c)
    c = smoke_config(root, **{"data.budget_chars": 400_000})
    with pytest.raises(FieldError, match="config.data.budget_chars.*fewer than the budget"):
        E.find_data(c)


def test_validate_names_the_field():
    c = config_lib.get_config("smoke")
    c.arms = ("uniform",)
    with pytest.raises(FieldError, match="config.arms"):
        E.validate(c)
    c = config_lib.get_config("smoke")
    c.eval.window_chars = (16, 4096)
    with pytest.raises(FieldError, match="config.eval.window_chars"):
        E.validate(c)
    c = config_lib.get_config("smoke")
    c.model.hidden = 0
    with pytest.raises(ValueError, match="config.model.hidden"):
        E.validate(c)
    E.validate(config_lib.get_config())


# ---------------------------------------------------------------------------
# End to end.
# ---------------------------------------------------------------------------
def _strip_timing(results: dict) -> dict:
    out = json.loads(json.dumps(results))
    for key in ("train_s", "eval_s", "wall_time_s"):
        out.pop(key)
    for r in out["identification"]["lengths"].values():
        r.pop("cost_us_per_window")
    return out


def _filled(node, path="results"):
    """Every number in the results is finite and every table row has a value."""
    if isinstance(node, dict):
        for k, v in node.items():
            _filled(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _filled(v, f"{path}[{i}]")
    elif isinstance(node, float):
        assert math.isfinite(node), path


def test_smoke_end_to_end_and_resume(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    c = smoke_config(root)
    wd = str(tmp_path / "wd")
    results = E.run(c, wd)
    _filled(results)
    assert "skipped" not in results["adaptation"] and "skipped" not in results["ood"]
    ident = results["identification"]["lengths"]
    assert set(ident) == {"16", "64"}
    methods = set(ident["64"]["accuracy"])
    assert {"one_step", "iterative_1", "iterative_3", "exhaustive", "classifier",
            "naive_bayes_1", "naive_bayes_3", "naive_bayes_5"} <= methods
    # Iterative GBI's first normalised step from the uniform point is one-step GBI.
    for n in ident:
        assert ident[n]["accuracy"]["iterative_1"] == ident[n]["accuracy"]["one_step"]
    # The styles differ in their characters: a bag of characters tells them apart.
    assert ident["64"]["accuracy"]["naive_bayes_1"]["mean"] > 0.8
    conf = np.asarray(ident["64"]["confusion_one_step"])
    np.testing.assert_allclose(conf.sum(1), 1.0)
    ad = results["adaptation"]
    assert ad["corpora"] == ["spaced", "titled"] and len(ad["arms"]["gbi"]["titled"]["z_curve"]) == 3
    assert set(results["ood"]["auroc"]) == {"far", "near"}
    # The digits corpus is far from everything: naive Bayes on characters sees it.
    assert results["ood"]["auroc"]["far"]["naive_bayes_1"]["mean"] > 0.9
    for name in ("results.json", "results.md", "complete.json"):
        assert os.path.exists(os.path.join(wd, name))
    table = open(os.path.join(wd, "results.md")).read()
    assert "one-step GBI" in table and "| - |" not in table and "nan" not in table
    # A second start resumes from the checkpoints: no training, the same results.
    again = E.run(c, wd)
    assert _strip_timing(again) == _strip_timing(results)


def test_cli_sentencepiece_smoke_and_missing_data(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    base = [sys.executable, "-m", "experiments.gbi_lm.main",
            "--config=experiments/gbi_lm/config.py:smoke"]
    run = subprocess.run(base + [f"--workdir={tmp_path / 'wd'}", f"--config.data.dir={root}",
                                 "--config.data.tokenizer=sentencepiece",
                                 "--config.data.vocab_size=200", "--config.figures=True",
                                 "--config.seeds=1", "--config.train.steps=20"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.load(open(tmp_path / "wd" / "results.json"))
    assert results["data"]["tokenizer"] == "sentencepiece"
    assert results["data"]["vocab_size"] == 200
    assert os.path.exists(tmp_path / "wd" / "figures" / "summary.png")
    missing = subprocess.run(base + [f"--workdir={tmp_path / 'wd2'}",
                                     f"--config.data.dir={tmp_path / 'nothing'}"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "python -m gbi_jax.data.corpora prepare" in missing.stderr
    assert not os.path.exists(tmp_path / "wd2" / "config.json")  # nothing claimed


def test_tfds_source_gives_the_same_blocks(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="TFDS copy needs tensorflow-datasets")
    root = make_corpus(tmp_path / "corpus")
    files = E.find_data(smoke_config(root))[0]
    tfds = E.find_data(smoke_config(root, **{"data.source": "tfds",
                                             "data.tfds_dir": str(tmp_path / "tfds")}))[0]
    assert tfds.names == files.names
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(tfds.train[split].blocks, files.train[split].blocks)
        np.testing.assert_array_equal(tfds.train[split].labels, files.train[split].labels)
    np.testing.assert_array_equal(tfds.heldout["test"].blocks, files.heldout["test"].blocks)
    np.testing.assert_array_equal(tfds.ood.blocks, files.ood.blocks)
