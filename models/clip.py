"""CLIP-style dual encoder on pixels (Radford et al., "Learning Transferable Visual Models From
Natural Language Supervision", ICML 2021), with Hugging Face transformers' ``CLIPModel`` as towers.

    f(x) = l2norm(W_v · ViT(x)[CLS]),   g(t) = l2norm(W_t · Transformer(t)[EOS])   (bias-free W)
    S    = f(x) · g(t)ᵀ                                   (cosine, what ``score`` returns)
    z    = exp(s) · S,   s = ``logit_scale``, init ln(1/0.07), clamped to [0, ln 100] after each step
    loss = ½ [CE(z, diag) + CE(zᵀ, diag)]                 (symmetric InfoNCE, done by the strategy)

The model comes either from a local pretrained directory (``pretrained_path``; model, tokenizer and
image processor are read from it, never downloaded) or from a size preset built offline from a
``CLIPConfig``. Without a pretrained directory the text tokenizer is a CLIP byte-level BPE trained on
``vocab_words`` (e.g. the synthetic dataset's words): every byte (and byte + ``</w>``) is a token, so
no text is ever unknown, and ``<|startoftext|>`` / ``<|endoftext|>`` are the last two ids of the
small vocabulary (as in OpenAI's vocabulary) and are written into the text config, so the EOS pooling
finds the end token (CLIP's defaults 49406/49407 would lie outside a small vocabulary).

Optimiser (``optimizer = "adamw"``): CLIP trains with AdamW, β = (0.9, 0.98), ε = 1e-6, decoupled
weight decay 0.2 on all weights except gains, biases and the logit scale (CLIP paper, Sec. 2.5 and
Table 10; ViT-B/32 lr 5e-4 from scratch). Fine-tuning a pretrained CLIP for retrieval is usually done
with a much smaller lr (~1e-5) and the same AdamW settings; ``tower_lr_mult`` scales the lr of the two
encoders relative to the projections and the logit scale. ``param_groups`` carries the per-group
weight decay; ``optimizer_kwargs`` holds β and ε for the training loop.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from models import register
from models.base import Matcher, l2norm

if TYPE_CHECKING:  # transformers is imported where a CLIP matcher is built: seconds saved at every start
    from transformers import CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

# Size presets. ``vit_b32`` is the ViT-B/32 architecture of CLIP (CLIPConfig's defaults, written out).
PRESETS: dict[str, dict] = {
    "tiny": {  # ~55k parameters, 18k of them the ~560-token table (spec: ~39k with a 99-token vocab)
        "text": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=32),
        "vision": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8),
        "projection_dim": 32,
    },
    "small": {  # ~1.7M parameters: CPU demos
        "text": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                     max_position_embeddings=32),
        "vision": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                       image_size=64, patch_size=8),
        "projection_dim": 128,
    },
    "vit_b32": {  # for users with ViT-B/32 weights in a local directory (or training it from scratch)
        "text": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                     max_position_embeddings=77),
        "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32),
        "projection_dim": 512,
    },
}


@functools.lru_cache(maxsize=8)
def _learn_bpe_merges_cached(pieces: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(learn_bpe_merges(pieces))


def learn_bpe_merges(pieces: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges (Sennrich et al., 2016) that join every piece into one ``piece</w>`` token.

    Each distinct piece counts once; each round merges the most frequent adjacent symbol pair (ties:
    the lexicographically smallest pair), so the result depends only on the set of pieces. Pair counts
    are updated incrementally (a heap with lazy deletion), so a 10k-word vocabulary takes about a second.
    """
    words = [[*p[:-1], p[-1] + "</w>"] for p in sorted(set(pieces)) if p]
    counts: dict[tuple[str, str], int] = {}
    words_with: dict[tuple[str, str], set[int]] = {}
    for k, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            counts[pair] = counts.get(pair, 0) + 1
            words_with.setdefault(pair, set()).add(k)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap:
        neg_count, best = heapq.heappop(heap)
        if counts.get(best, 0) != -neg_count or neg_count == 0:
            continue  # stale entry: the pair's count changed after it was pushed
        merges.append(best)
        touched = set()
        for k in sorted(words_with.pop(best)):
            symbols = words[k]
            for pair in zip(symbols, symbols[1:]):
                counts[pair] -= 1
                touched.add(pair)
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            words[k] = merged
            for pair in zip(merged, merged[1:]):
                counts[pair] = counts.get(pair, 0) + 1
                words_with.setdefault(pair, set()).add(k)
                touched.add(pair)
        for pair in touched:
            if counts[pair] > 0:
                heapq.heappush(heap, (-counts[pair], pair))
    return merges


def build_word_tokenizer(vocab_words: Iterable[str] | None, model_max_length: int) -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer over a small vocabulary, built offline and deterministically.

    Ids: the 256 byte symbols, the same with ``</w>``, then the tokens of the BPE merges learned on the
    ``vocab_words`` (after CLIP's normaliser and pre-tokeniser; each word becomes one token), then
    ``<|startoftext|>``, ``<|endoftext|>``. Padding uses ``<|endoftext|>`` (OpenAI's convention; the
    attention mask hides it). The same set of words always gives the same ids.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    backend = CLIPTokenizer().backend_tokenizer  # CLIP's normaliser (NFC, lower case) and pre-tokeniser
    pieces = [piece for word in (vocab_words or ()) if word
              for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(word))]
    merges = list(_learn_bpe_merges_cached(tuple(sorted(set(pieces)))))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(c + "</w>" for c in alphabet), *(a + b for a, b in merges), BOS_TOKEN, EOS_TOKEN]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, unk_token=EOS_TOKEN, bos_token=BOS_TOKEN,
                         eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=model_max_length)


@register("clip")
class ClipMatcher(Matcher):
    """CLIP dual encoder: ``encode_images``/``encode_captions`` give L2-normalised embeddings, S = img · capᵀ.

    Args:
        pretrained_path: local directory written by ``save_pretrained`` (ours or Hugging Face's CLIP
            layout: config + weights + tokenizer + preprocessor_config.json). Loaded with
            ``local_files_only=True``; ``preset``, ``vocab_words`` and ``config_overrides`` are then unused.
        preset: ``"tiny"``, ``"small"`` or ``"vit_b32"`` (see ``PRESETS``), built from a CLIPConfig.
        vocab_words: words the BPE tokenizer learns as whole tokens (other text still tokenises, by bytes).
        image_size: input resolution of a preset (the processor resizes + centre-crops to it). With a
            pretrained directory it must equal the config's image size, or be None.
        tower_lr_mult: lr multiplier of the vision and text encoders (projections and logit scale keep lr).
        weight_decay: AdamW weight decay on weights with ≥ 2 dims (gains, biases, logit scale: none).
        config_overrides: extra CLIPConfig fields of a preset, e.g. ``{"text_config": {"num_hidden_layers": 1}}``.
    """

    dual_encoder = True
    input_kind = "pixels"
    base_loss = "infonce"
    optimizer = "adamw"
    optimizer_kwargs = {"betas": (0.9, 0.98), "eps": 1e-6}
    augment: dict = {}
    weight_decay = 0.2  # the published value (constructor default); the trainer passes the schedule's
    logit_scale_max = math.log(100.0)
    weights_args = {"pretrained_path": "clip"}  # a local CLIP folder (bench.weights; a suite's weights.clip)

    def __init__(
        self,
        pretrained_path: str | Path | None = None,
        preset: str = "tiny",
        vocab_words: Iterable[str] | None = None,
        image_size: int | None = None,
        tower_lr_mult: float = 1.0,
        weight_decay: float = 0.2,
        config_overrides: dict | None = None,
    ):
        super().__init__()
        self.pretrained_path = str(pretrained_path) if pretrained_path is not None else None
        self.tower_lr_mult = float(tower_lr_mult)
        self.weight_decay = float(weight_decay)
        if pretrained_path is not None:
            self._load_pretrained(Path(pretrained_path), image_size)
        else:
            self._build_from_preset(preset, vocab_words, image_size, config_overrides or {})
        self._check_special_tokens()

    @classmethod
    def architecture(cls, preset: str = "tiny", image_size: int | None = None, config_overrides: dict | None = None,
                     **_) -> dict:
        """The CLIPConfig fields a pretrained folder must hold for ``preset`` (its tower sizes, image and patch
        size, projection): ``{"vision_config.patch_size": 32, …}``. An unknown preset names none (the
        constructor refuses it)."""
        if preset not in PRESETS:
            return {}
        spec, overrides = PRESETS[preset], config_overrides or {}
        out = {f"{tower}_config.{k}": v for tower in ("text", "vision")
               for k, v in {**spec[tower], **overrides.get(f"{tower}_config", {})}.items()}
        if image_size is not None:
            out["vision_config.image_size"] = int(image_size)
        out["projection_dim"] = overrides.get("projection_dim", spec["projection_dim"])
        return out

    @classmethod
    def count_parameters(cls, **overrides) -> int:
        """Parameters on the meta device; with ``pretrained_path``, of the CLIPModel its config.json describes."""
        if overrides.get("pretrained_path") is None:
            return super().count_parameters(**overrides)
        from transformers import CLIPConfig, CLIPModel

        config = CLIPConfig.from_pretrained(overrides["pretrained_path"], local_files_only=True)
        with torch.device("meta"):
            return sum(p.numel() for p in CLIPModel(config).parameters())

    # ----------------------------------------------------------------------------------- construction
    def _load_pretrained(self, path: Path, image_size: int | None) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel

        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"ClipMatcher(pretrained_path={str(path)!r}): no config.json there. Pass a local directory "
                "written by ClipMatcher.save_pretrained or CLIPModel.save_pretrained (nothing is downloaded)."
            )
        config = CLIPConfig.from_pretrained(path, local_files_only=True)
        config_size = config.vision_config.image_size
        if image_size is not None and int(image_size) != config_size:
            raise ValueError(
                f"ClipMatcher: image_size={image_size} but the pretrained model in {str(path)!r} expects "
                f"{config_size}; pass image_size=None (or {config_size})."
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"ClipMatcher(pretrained_path={str(path)!r}): the directory needs the tokenizer files and "
                "preprocessor_config.json next to the weights (save them with tokenizer.save_pretrained / "
                f"image_processor.save_pretrained into the same directory). Loader said: {err}"
            ) from err
        self.clip = CLIPModel.from_pretrained(path, config=config, local_files_only=True)
        self.image_size = config_size

    def _build_from_preset(self, preset: str, vocab_words, image_size: int | None, overrides: dict) -> None:
        from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

        if preset not in PRESETS:
            raise ValueError(f"ClipMatcher: unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        spec = PRESETS[preset]
        text_cfg = {**spec["text"], **overrides.get("text_config", {})}
        vision_cfg = {**spec["vision"], **overrides.get("vision_config", {})}
        if image_size is not None:
            vision_cfg["image_size"] = int(image_size)
        if vision_cfg["image_size"] % vision_cfg["patch_size"]:
            raise ValueError(
                f"ClipMatcher: image_size {vision_cfg['image_size']} is not a multiple of the patch size "
                f"{vision_cfg['patch_size']}; choose an image_size divisible by it."
            )
        self.tokenizer = build_word_tokenizer(vocab_words, text_cfg["max_position_embeddings"])
        text_cfg.update(vocab_size=len(self.tokenizer), bos_token_id=self.tokenizer.bos_token_id,
                        eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id)
        top = {k: v for k, v in overrides.items() if k not in ("text_config", "vision_config")}
        config = CLIPConfig(text_config=text_cfg, vision_config=vision_cfg,
                            **{"projection_dim": spec["projection_dim"], "logit_scale_init_value": math.log(1 / 0.07), **top})
        self.clip = CLIPModel(config)
        self.image_size = vision_cfg["image_size"]
        self.image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": self.image_size}, crop_size={"height": self.image_size, "width": self.image_size}
        )

    def _check_special_tokens(self) -> None:
        eos = self.tokenizer.eos_token_id
        config_eos = self.clip.config.text_config.eos_token_id
        # eos_token_id == 2 is transformers' legacy mode (pooling at the largest id, OpenAI's released configs).
        if eos is None or (config_eos != 2 and config_eos != eos):
            raise ValueError(
                f"ClipMatcher: the text config's eos_token_id={config_eos} differs from the tokenizer's "
                f"eos id {eos}; text pooling would never find the end token. Set text_config.eos_token_id "
                f"(and bos/pad) in {self.pretrained_path or 'the config'} to the tokenizer's ids."
            )

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model, tokenizer and image processor to ``directory``; ``ClipMatcher(pretrained_path=directory)``
        reloads exactly this model."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.clip.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)

    # ----------------------------------------------------------------------------------------- inputs
    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def prepare(self, batch: dict) -> dict:
        """``raw_images`` (PIL) → ``pixel_values`` [B, 3, H, W]; ``raw_captions`` (str) → ``input_ids`` and
        ``attention_mask`` [B, L] (padded to the longest, truncated to the text positions). Other keys kept."""
        out = dict(batch)
        if "raw_images" in batch and "pixel_values" not in batch:
            images = list(batch["raw_images"])
            if not images:
                raise ValueError("ClipMatcher.prepare: batch['raw_images'] is empty")
            out["pixel_values"] = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if "raw_captions" in batch and "input_ids" not in batch:
            captions = batch["raw_captions"]
            if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
                raise TypeError("ClipMatcher.prepare: batch['raw_captions'] must be a list of str")
            tokens = self.tokenizer(list(captions), padding=True, truncation=True,
                                    max_length=self.clip.config.text_config.max_position_embeddings,
                                    return_tensors="pt")
            if not (tokens["input_ids"] == self.tokenizer.eos_token_id).any(dim=1).all():
                raise RuntimeError("ClipMatcher.prepare: a tokenised caption lacks the end token")
            out["input_ids"], out["attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
        return out

    # --------------------------------------------------------------------------------------- encoders
    @staticmethod
    def _pooled(features) -> torch.Tensor:
        """transformers ≥ 5 returns an output object (projected embedding in ``pooler_output``); 4.x a tensor."""
        return features if isinstance(features, torch.Tensor) else features.pooler_output

    def encode_images(self, batch: dict) -> torch.Tensor:
        """f(x) = l2norm(W_v · ViT(x)[CLS]), [B, projection_dim]."""
        if "pixel_values" not in batch:
            if "raw_images" not in batch:
                raise KeyError("ClipMatcher.encode_images: the batch has neither 'pixel_values' nor 'raw_images'")
            batch = self.prepare(batch)
        pixels = batch["pixel_values"].to(self.device, dtype=self.clip.logit_scale.dtype)
        return l2norm(self._pooled(self.clip.get_image_features(pixel_values=pixels)))

    def encode_captions(self, batch: dict) -> torch.Tensor:
        """g(t) = l2norm(W_t · Transformer(t)[EOS]), [B, projection_dim]."""
        if "input_ids" not in batch:
            if "raw_captions" not in batch:
                raise KeyError("ClipMatcher.encode_captions: the batch has neither 'input_ids' nor 'raw_captions'")
            batch = self.prepare(batch)
        input_ids = batch["input_ids"].to(self.device)
        mask = batch.get("attention_mask")
        mask = mask.to(self.device) if mask is not None else None
        return l2norm(self._pooled(self.clip.get_text_features(input_ids=input_ids, attention_mask=mask)))

    # ------------------------------------------------------------------------------- scale, optimiser
    @property
    def logit_scale(self) -> torch.nn.Parameter:
        """The learnable log-temperature s (init ln(1/0.07)); InfoNCE logits are exp(s) · S."""
        return self.clip.logit_scale

    def infonce_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """z = exp(s) · S for the symmetric InfoNCE loss (S the cosine score matrix)."""
        return self.logit_scale.exp() * scores

    def after_optimizer_step(self) -> None:
        """Clamp s to [0, ln 100] (CLIP: the temperature never scales logits by more than 100)."""
        with torch.no_grad():
            self.clip.logit_scale.clamp_(0.0, self.logit_scale_max)

    def param_groups(self, lr: float) -> list[dict]:
        """AdamW groups: towers at lr · tower_lr_mult, projections + logit scale at lr; weight decay on
        tensors with ≥ 2 dims only (no decay on gains, biases, class embedding, logit scale)."""
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in self.clip.named_parameters():
            if not param.requires_grad:
                continue
            tower = name.startswith(("vision_model.", "text_model."))
            decay = param.ndim >= 2 and name != "logit_scale"
            groups.setdefault((tower, decay), []).append(param)
        out = []
        for (tower, decay), params in sorted(groups.items()):
            out.append({
                "params": params,
                "lr": lr * (self.tower_lr_mult if tower else 1.0),
                "weight_decay": self.weight_decay if decay else 0.0,
                "name": f"{'towers' if tower else 'head'}_{'decay' if decay else 'no_decay'}",
            })
        return out
