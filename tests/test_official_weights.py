"""The authors' checkpoints into declip_jax (`convert --format=declip_official`): state dicts with the official
names and shapes (Sense-GVT/DeCLIP: `{"model": ..., "optimizer", "last_iter"}`, `module.` keys, the text tower
under `encode_text.`/`text_encoder.`, every method's heads), towers against open_clip's forward of the same
weights, heads against NumPy forwards of the official layers, keys listed by name, no pickle code run, and a
full-size ViT-B/32 DeCLIP checkpoint imported and evaluated from the command line."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from declip_jax import presets  # noqa: E402
from declip_jax.interop import open_clip_weights as ow  # noqa: E402
from declip_jax.models import declip  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.open_clip_cases import ARCHITECTURES, inputs, reduced_config  # noqa: E402
from tests.test_interop import _open_clip_embeddings, _random_open_clip  # noqa: E402

METHODS = {"clip": presets.use_clip_baseline, "declip": lambda c: c, "slip": presets.use_slip,
           "filip": presets.use_filip, "defilip": presets.use_defilip}


def _linear(rng, d_in, d_out):
  return {"weight": rng.normal(0, d_in**-0.5, (d_out, d_in)), "bias": rng.normal(0, 0.1, (d_out,))}


def _bn(rng, d):
  return {"weight": rng.uniform(0.5, 1.5, d), "bias": rng.normal(0, 0.1, d), "running_mean": rng.normal(0, 0.2, d),
          "running_var": rng.uniform(0.5, 1.5, d), "num_batches_tracked": np.array(7)}


def official_heads(config, rng) -> dict[str, dict]:
  """Random heads with the official module names and shapes of the config's method."""
  w, m, heads = config.loss.weights, config.model, {}
  feature = m.image.width * (32 if m.image.arch == "resnet" else 1)
  if w.iss > 0:
    d, p, h = m.embed_dim, config.ssl.projector_dim, config.ssl.predictor_hidden_dim
    heads.update({"projector.linear1": _linear(rng, d, p), "projector.bn1": _bn(rng, p),
                  "projector.linear2": _linear(rng, p, p), "projector.bn2": _bn(rng, p),
                  "projector.linear3": _linear(rng, p, p), "projector.bn3": _bn(rng, p),
                  "predictor.linear1": _linear(rng, p, h), "predictor.bn1": _bn(rng, h),
                  "predictor.layer2": _linear(rng, h, p)})
  if w.tss > 0 or w.filip > 0 and w.clip_mvs == 0:  # FILIP's config builds one that no loss uses.
    heads["text_label_predictor"] = _linear(rng, m.text.width, m.text.vocab_size)
  if w.simclr > 0:
    h, s = m.simclr.hidden_dim, m.simclr.out_dim
    heads.update({"predictor_sim.linear1": _linear(rng, feature, h), "predictor_sim.bn1": _bn(rng, h),
                  "predictor_sim.linear2": _linear(rng, h, h), "predictor_sim.bn2": _bn(rng, h),
                  "predictor_sim.linear3": _linear(rng, h, s), "predictor_sim.bn3": _bn(rng, h)})
  if w.filip > 0:
    heads.update({"image_mapping": _linear(rng, feature, m.filip.dim),
                  "text_mapping": _linear(rng, m.text.width, m.filip.dim)})
  return heads


def official_checkpoint(config, path, seed=0):
  """Writes an official-layout checkpoint of a random model of `config`; returns (its open_clip towers, the
  heads' arrays by official module name)."""
  towers = _random_open_clip(config, seed)
  text_prefix = "text_encoder." if config.loss.weights.simclr > 0 else "encode_text."
  state = {}
  for k, v in towers.state_dict().items():
    name = k if k.startswith("visual.") or k == "logit_scale" else text_prefix + k
    state[name] = v.reshape(1) if k == "logit_scale" else v
  rng = np.random.default_rng(seed)
  heads = official_heads(config, rng)
  for module, arrays in heads.items():
    for leaf, value in arrays.items():
      state[f"{module}.{leaf}"] = torch.from_numpy(np.asarray(value, np.float32 if leaf != "num_batches_tracked"
                                                              else np.int64))
  if config.loss.weights.filip > 0:
    state["logit_scale_dense"] = torch.tensor(4.2)
  if config.model.image.arch == "resnet":  # Unused by the official model.
    state["visual.fc.weight"] = torch.zeros(config.model.embed_dim, 32 * config.model.image.width)
    state["visual.fc.bias"] = torch.zeros(config.model.embed_dim)
  torch.save({"model": {f"module.{k}": v for k, v in state.items()},
              "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}, "last_iter": 42}, path)
  return towers, heads


def _np_bn(x, bn, eps=1e-5):
  return (x - bn["running_mean"]) / np.sqrt(bn["running_var"] + eps) * bn["weight"] + bn["bias"]


def _np_linear(x, linear):
  return x @ linear["weight"].T + linear["bias"]


def _relu(x):
  return np.maximum(x, 0.0)


def _import(config, tmp_path, seed=0):
  from declip_jax.interop import convert  # pylint: disable=g-import-not-at-top
  import declip_jax  # pylint: disable=g-import-not-at-top
  towers, heads = official_checkpoint(config, tmp_path / "official.pth.tar", seed)
  convert.import_weights(config, str(tmp_path / "official.pth.tar"), str(tmp_path / "run"), "declip_official")
  return towers, heads, declip_jax.load(str(tmp_path / "run"))


@pytest.mark.parametrize("method,arch", [("declip", "vit_b32"), ("slip", "vit_b32"), ("filip", "vit_b32"),
                                         ("defilip", "vit_b32"), ("clip", "rn50"), ("declip", "rn50"),
                                         ("slip", "rn50"), ("filip", "rn50")])
def test_every_methods_towers_and_heads_import(method, arch, tmp_path):
  config = METHODS[method](reduced_config(**ARCHITECTURES[arch], vocab=60))
  config.model.text.projection_bias = True  # The official text projection is a Linear with bias.
  config.model.simclr.hidden_dim, config.model.filip.top_k = 24, 1
  towers, heads, loaded = _import(config, tmp_path)
  images, tokens, eot = inputs(config, seed=1)
  want_image, want_text = _open_clip_embeddings(towers, images, tokens)
  model, variables = declip.build_model(config, eot), loaded.variables
  got_image = np.asarray(model.apply(variables, images, method=declip.DeCLIP.encode_image))
  got_text = np.asarray(model.apply(variables, tokens, method=declip.DeCLIP.encode_text))
  np.testing.assert_allclose(got_image, want_image, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_text, want_text, rtol=1e-4, atol=1e-4)
  rng = np.random.default_rng(2)
  if "projector.linear1" in heads:  # SimSiam in inference mode: the folded biases give the same function.
    z = rng.normal(size=(3, config.model.embed_dim))
    h = _relu(_np_bn(_np_linear(z, heads["projector.linear1"]), heads["projector.bn1"]))
    h = _relu(_np_bn(_np_linear(h, heads["projector.linear2"]), heads["projector.bn2"]))
    want_z = _np_bn(_np_linear(h, heads["projector.linear3"]), heads["projector.bn3"])
    h = _relu(_np_bn(_np_linear(want_z, heads["predictor.linear1"]), heads["predictor.bn1"]))
    want_p = _np_linear(h, heads["predictor.layer2"])
    got_p, got_z = model.apply(variables, z.astype(np.float32), method=lambda m, x: m.simsiam(x, False))
    np.testing.assert_allclose(got_z, want_z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_p, want_p, rtol=1e-4, atol=1e-4)
  if config.loss.weights.tss > 0:
    states = rng.normal(size=(2, 3, config.model.text.width)).astype(np.float32)
    np.testing.assert_allclose(model.apply(variables, states, method=declip.DeCLIP.mlm_logits),
                               _np_linear(states, heads["text_label_predictor"]), rtol=1e-4, atol=1e-4)
  if config.loss.weights.simclr > 0:
    f = rng.normal(size=(3, heads["predictor_sim.linear1"]["weight"].shape[1]))
    h = _relu(_np_bn(_np_linear(f, heads["predictor_sim.linear1"]), heads["predictor_sim.bn1"]))
    h = _relu(_np_bn(_np_linear(h, heads["predictor_sim.linear2"]), heads["predictor_sim.bn2"]))
    got = model.apply(variables, f.astype(np.float32), method=lambda m, x: m.simclr(x, False))
    np.testing.assert_allclose(got, _np_linear(h, heads["predictor_sim.linear3"]), rtol=1e-4, atol=1e-4)
  if config.loss.weights.filip > 0:
    assert float(variables["params"]["logit_scale_dense"]) == pytest.approx(4.2)
    t = rng.normal(size=(2, 3, config.model.text.width)).astype(np.float32)
    got = model.apply(variables, t, method=lambda m, x: m.filip_text_mapping(x))
    np.testing.assert_allclose(got, _np_linear(t, heads["text_mapping"]), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(float(variables["params"]["logit_scale"]), float(towers.logit_scale.detach()), rtol=1e-6)


def test_unknown_missing_and_mismatched_keys_are_named(tmp_path):
  from declip_jax.interop import convert  # pylint: disable=g-import-not-at-top
  config = reduced_config(**ARCHITECTURES["vit_b32"], vocab=60)
  config.model.text.projection_bias = True
  official_checkpoint(config, tmp_path / "declip.pth.tar")
  as_clip = presets.use_clip_baseline(config.copy_and_resolve_references())  # The DeCLIP heads have no place.
  with pytest.raises(ow.WeightMismatchError, match=r"unknown keys \(\d+\): predictor.bn1.bias"):
    convert.import_weights(as_clip, str(tmp_path / "declip.pth.tar"), str(tmp_path / "a"), "declip_official")
  checkpoint = torch.load(tmp_path / "declip.pth.tar", weights_only=True)
  del checkpoint["model"]["module.predictor.layer2.bias"]
  checkpoint["model"]["module.projector.linear1.weight"] = torch.zeros(3, 3)
  torch.save(checkpoint, tmp_path / "broken.pth.tar")
  with pytest.raises(ow.WeightMismatchError, match=r"missing keys \(1\): predictor.layer2.bias; shape mismatches "
                                                   r"\(1\): projector.linear1.weight: \(3, 3\)"):
    convert.import_weights(config, str(tmp_path / "broken.pth.tar"), str(tmp_path / "b"), "declip_official")


class _Exploit:
  def __reduce__(self):
    return (print, ("pickle code ran",))


def test_a_checkpoint_with_code_is_refused_without_running_it(tmp_path, capsys):
  from declip_jax.interop import official_weights  # pylint: disable=g-import-not-at-top
  with open(tmp_path / "evil.pth.tar", "wb") as f:
    pickle.dump({"model": {"x": _Exploit()}}, f)
  with pytest.raises(ow.WeightMismatchError, match="weights_only=True refused it"):
    official_weights.read_checkpoint(str(tmp_path / "evil.pth.tar"))
  assert "pickle code ran" not in capsys.readouterr().out


@pytest.mark.slow  # Minutes on 2 cores; the same code at small sizes is in the default suite above.
def test_a_full_size_official_declip_vit_b32_imports_and_evaluates(tmp_path):
  """The recipe's ViT-B/32 DeCLIP in the official layout: the command imports it; embeddings equal open_clip's
  forward of the same towers (max relative error, the parity figure in docs/interop.md); `--mode=eval` runs on it."""
  config_file = tmp_path / "official_declip_vit_b32.py"
  config_file.write_text(
      "from configs import declip_vit_b32\nfrom declip_jax import config as config_lib\n\n\ndef get_config():\n"
      "  c = declip_vit_b32.get_config()\n"
      "  c.data.source, c.data.builtin.num_test, c.data.builtin.num_train = 'builtin', 16, 16\n"
      f"  c.data.vocab_path = {open_clip.tokenizer.default_bpe()!r}\n"
      "  c.evals = config_lib.builtin_evals(('colour',))\n"
      "  c.nns.groups, c.nns.group_size = 1, 8192\n"
      "  return c\n")
  sys.path.insert(0, str(tmp_path))
  try:
    config = __import__("official_declip_vit_b32").get_config()
  finally:
    sys.path.remove(str(tmp_path))
  towers, _ = official_checkpoint(config, tmp_path / "declip_vitb32.pth.tar")
  env_run = dict(cwd=REPO, capture_output=True, text=True, timeout=1200)
  out = subprocess.run([sys.executable, "-m", "declip_jax.interop.convert", "--direction=import",
                        "--format=declip_official", f"--weights={tmp_path / 'declip_vitb32.pth.tar'}",
                        f"--config={config_file}", f"--workdir={tmp_path / 'run'}"], **env_run)
  assert out.returncode == 0, out.stderr[-3000:]
  # Towers 302 (image 152, text 150) + logit scale + SimSiam 26 (6 Linear, 4 BatchNorm x 4 arrays) + MLM head 2.
  assert "imported 331 arrays" in out.stdout
  import declip_jax  # pylint: disable=g-import-not-at-top
  loaded = declip_jax.load(str(tmp_path / "run"))
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 224, 224, 3)).astype(np.float32)
  tokens = np.zeros((2, 77), np.int32)
  tokens[:, 0], tokens[0, 1:6], tokens[1, 1:12] = 49407, 320, 1125  # SOT, words ...
  tokens[0, 6], tokens[1, 12] = 49408, 49408  # ... EOT (the declip layout's largest id, where the official pools).
  want_image, want_text = _open_clip_embeddings(towers, images, tokens)
  model = declip.build_model(config, 49408)
  got_image = np.asarray(model.apply(loaded.variables, images, method=declip.DeCLIP.encode_image))
  got_text = np.asarray(model.apply(loaded.variables, tokens, method=declip.DeCLIP.encode_text))
  image_error = np.abs(got_image - want_image).max() / np.abs(want_image).max()
  text_error = np.abs(got_text - want_text).max() / np.abs(want_text).max()
  print(f"parity: image {image_error:.1e}, text {text_error:.1e}")
  assert image_error < 1e-5 and text_error < 1e-5
  out = subprocess.run([sys.executable, "-m", "declip_jax.main", f"--config={config_file}",
                        f"--workdir={tmp_path / 'run'}", "--mode=eval"], **env_run)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "[zero_shot_colour] step 0 on builtin:test" in out.stdout
