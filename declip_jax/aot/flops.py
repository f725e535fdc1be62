"""Model FLOPs of one DeCLIP/CLIP training step, counted analytically from the config (for MFU).

Convention (as in the MFU literature): matmul FLOPs only (2 per multiply-add), the forward pass times 3 for
forward + backward, whatever the implementation executes (rematerialised recompute and fused attention kernels
do not change it). Exceptions: the frozen patch embedding is the first layer and gets no gradient of any kind
(forward only), and the nearest-neighbour lookup runs without gradient (forward only).

Exact gradient accumulation (train.accum_steps > 1) runs the towers' forward pass twice. The second run is not a
model FLOP (the model computes the same function), so it is kept apart: `executed` = `total` + the towers'
second forward (`accumulation_recompute`). MFU divides `total` by time; a roofline bound needs `executed`.
"""

import ml_collections

from declip_jax import config as config_lib
from declip_jax.models.patches import image_tokens

# Dense bf16 peak, TFLOP/s per chip (vendor figures).
PEAK_BF16_TFLOPS = {"TPU v4": 275.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "A100": 312.0, "H100 SXM": 989.0,
                    "H200": 989.0}


def transformer_forward(tokens: int, width: int, layers: int, mlp_ratio: int = 4) -> float:
  """Forward matmul FLOPs of `layers` pre-LN blocks on one sequence of `tokens`: q/k/v/out projections
  (4 W^2 per token), MLP (2 x mlp_ratio x W^2 per token) and attention scores and values (2 x T x W per token)."""
  per_token = (4 + 2 * mlp_ratio) * width**2 + 2 * tokens * width
  return 2.0 * layers * tokens * per_token


def _kernel_taps(r_out: int, kernel: int, stride: int, r_in: int, count_padding: bool) -> int:
  """Kernel taps summed over the output positions of one spatial dimension ('same'-style padding kernel // 2)."""
  if count_padding:
    return r_out * kernel
  pad = kernel // 2
  return sum(1 for i in range(r_out) for t in range(kernel) if 0 <= i * stride - pad + t < r_in)


def resnet_forward(image_size: int, width: int, stage_blocks, embed_dim: int, count_padding: bool = True) -> float:
  """Forward FLOPs of CLIP's ModifiedResNet on one image: stem and Bottleneck convolutions (incl. each stage's
  shortcut) and the attention pool (k/v projections of every position, q of the one pooled query, its scores
  and values, the output projection). count_padding: 3x3 taps on the zero padding count (the convention of
  fvcore and the MFU literature); False counts only the taps that touch the image (what XLA reports)."""
  def conv(resolution, kernel, c_in, c_out, stride=1):
    taps = _kernel_taps(resolution, kernel, stride, resolution * stride, count_padding)
    return 2.0 * taps**2 * c_in * c_out

  r = image_size // 2
  total = (conv(r, 3, 3, width // 2, stride=2) + conv(r, 3, width // 2, width // 2)
           + conv(r, 3, width // 2, width))
  r, c_in = r // 2, width
  for stage, blocks in enumerate(stage_blocks):
    planes = width * 2**stage
    for i in range(blocks):
      r_out = r // 2 if stage > 0 and i == 0 else r
      total += conv(r, 1, c_in, planes) + conv(r, 3, planes, planes) + conv(r_out, 1, planes, 4 * planes)
      if i == 0:
        total += conv(r_out, 1, c_in, 4 * planes)
      r, c_in = r_out, 4 * planes
  tokens = r * r + 1
  total += 2.0 * (2 * tokens + 1) * c_in**2 + 2.0 * 2 * tokens * c_in + 2.0 * c_in * embed_dim
  return total


def train_step(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Model FLOPs of one step at train.batch_size, per part and "total"; "accumulation_recompute" and "executed"
  (what runs, with accumulation's second forward of the towers) as the module docstring says."""
  m, w, b = config.model, config.loss.weights, config.train.batch_size
  img, txt = m.image, m.text
  patches = (img.image_size // img.patch_size) ** 2 if img.arch == "vit" else 0
  image_views = config.data.num_image_views
  text_passes = config_lib.text_views(config)
  parts = {}
  if img.arch == "resnet":
    image_tower = resnet_forward(img.image_size, img.width, img.resnet_layers, m.embed_dim)
  else:
    parts["patch_embedding"] = image_views * b * 2.0 * patches * img.patch_size**2 * 3 * img.width
    patches = image_tokens(img)  # FLIP: the transformer sees the kept patches and [CLS].
    image_tower = transformer_forward(patches + 1, img.width, img.layers) + 2.0 * img.width * m.embed_dim
  parts["image_tower"] = 3 * image_views * b * image_tower
  text_tower = transformer_forward(txt.context_length, txt.width, txt.layers) + 2.0 * txt.width * m.embed_dim
  parts["text_tower"] = 3 * text_passes * b * text_tower
  if w.tss > 0:
    k = config.mlm.max_predictions  # Logits at each caption's first k chosen positions (the usual path).
    scored = k if 0 < k < txt.context_length else txt.context_length
    parts["mlm_head"] = 3 * b * 2.0 * scored * txt.width * txt.vocab_size
  if w.iss > 0:
    s = config.ssl
    d, p, h = m.embed_dim, s.projector_dim, s.predictor_hidden_dim
    per_view = 2.0 * (d * p + p * p + p * p + p * h + h * p)
    parts["simsiam"] = 3 * image_views * b * per_view
  contrastive_views = 1 if w.simclr > 0 else image_views  # SLIP: views 2 and 3 are SimCLR's.
  if w.clip_mvs > 0:
    pairs = contrastive_views * text_passes
    parts["contrastive"] = 3 * pairs * 2.0 * b * b * m.embed_dim  # [B, B] logits per (image view, text view).
  if w.nns > 0:
    searched = config.nns.group_size * (config.nns.groups if config.nns.search == "global" else 1)
    parts["nn_lookup"] = text_passes * b * 2.0 * searched * m.embed_dim
    parts["nns_loss"] = 3 * text_passes * 2.0 * b * b * m.embed_dim
  feature = img.width * (32 if img.arch == "resnet" else 1)  # Pre-projection feature / token width.
  if w.simclr > 0:
    c = m.simclr
    parts["simclr_head"] = 3 * 2 * b * 2.0 * (feature * c.hidden_dim + c.hidden_dim**2 + c.hidden_dim * c.out_dim)
    parts["simclr_loss"] = 3 * 2.0 * (2 * b) ** 2 * c.out_dim  # [2B, 2B] logits.
  if w.filip > 0:
    f = m.filip
    tokens = image_tokens(img)
    parts["filip_mappings"] = 3 * b * 2.0 * (tokens * feature + txt.context_length * txt.width) * f.dim
    parts["filip_selection"] = b * 2.0 * tokens * txt.context_length * f.dim  # In-pair, no gradient.
    # Token-wise logits: every (image, text) pair of the global batch, both directions: each local token
    # against the other's top_k selected tokens.
    parts["filip_logits"] = 3 * 2.0 * b * b * (tokens + txt.context_length) * f.top_k * f.dim
  total = sum(parts.values())
  recompute = 0.0
  if config.train.accum_steps > 1:  # The towers' forward again, per micro-batch, under the VJP.
    recompute = (parts["image_tower"] + parts["text_tower"]) / 3 + parts.get("patch_embedding", 0.0)
  parts["total"] = total
  parts["accumulation_recompute"] = recompute
  parts["executed"] = total + recompute
  return parts
