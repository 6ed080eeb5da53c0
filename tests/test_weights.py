"""Local pretrained folders: the generator's CLIP ViT-B/32 and BERT-base folders load through the project's
own loading code and train; a folder's content, not its path, is a cell's identity (``bench.weights``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import models
import strategies
from bench.harness.cells import expand
from bench.harness.config import load_suite
from bench.spec import Cell, cell_id, result_key
from bench.weights import folder_fingerprint, folder_problems

F30K = "datasets=[{name: f30k_precomp, label: f30k}]"


def _full_cell(data: Path, weights: dict, matcher: str, **extra) -> Cell:
    overrides = [f"weights.{kind}={folder}" for kind, folder in weights.items()]
    cells = expand(load_suite("dbl", ["scale=full", "seeds=[0]", F30K, f"matchers=[{matcher}]", f"data_root={data}",
                                      *overrides, *[f"{k}={v}" for k, v in extra.items()]]))
    return next(c for c in cells if c.strategy.name == "baseline")


@pytest.mark.slow  # ~1 GB of generated weights (once per session) and a training step of each at full size
def test_generated_folders_load_and_train_as_published_snapshots(rehearsal_data, published_weights):
    """The full-scale CLIP and VSE∞-BERT cells, on data of the published shapes: the trainer's own data
    opening, matcher building (from_pretrained, local files only), strategy and optimiser, one step each."""
    from bench import train
    from bench.data.open import open_data
    from bench.spec import resolve

    clip_dir, bert_dir = published_weights["clip"], published_weights["bert"]
    assert sorted(p.name for p in clip_dir.iterdir() if not p.name.startswith(".")) == [
        "config.json", "merges.txt", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
        "tokenizer_config.json", "vocab.json"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {p.name for p in bert_dir.iterdir()}
    assert len(json.loads((clip_dir / "vocab.json").read_text())) == 49_408
    assert len((clip_dir / "merges.txt").read_text().splitlines()) == 1 + 48_894  # header + merges, as OpenAI's
    vocab = (bert_dir / "vocab.txt").read_text().splitlines()
    assert len(vocab) == 30_522 and [vocab[i] for i in (0, 100, 101, 102, 103)] == \
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for matcher, folder, kind, named, n_params in (("clip", clip_dir, "clip", {"preset": "vit_b32"}, 151_277_313),
                                                   ("vse_infty_bert", bert_dir, "bert", {}, None)):
        assert folder_problems(folder, kind, models.matcher_attribute(matcher, "architecture")(**named)) == []
        cell = resolve(_full_cell(rehearsal_data, {kind: folder}, matcher))
        data = open_data(cell, models.input_kind(matcher))
        model = train.build_matcher(cell, data)
        captions = data.train.captions
        tokens = model.tokenizer(captions, add_special_tokens=False)["input_ids"]
        assert model.tokenizer.unk_token_id not in {t for row in tokens for t in row}  # every caption known
        count = sum(p.numel() for p in model.parameters())
        assert count == models.parameter_count(matcher, **models.build_kwargs(
            matcher, data.build_kwargs, dict(cell.matcher.overrides)))  # the meta-device count equals the loaded
        if n_params:
            assert count == n_params  # ViT-B/32
        else:
            assert sum(p.numel() for p in model.txt_enc.bert.parameters()) == 108_891_648  # BERT-base, no pooler
        strategy = train.build_strategy(cell, model)
        branches = {b.name: model for b in strategy.branches()}
        specs = {b.name: b for b in strategy.branches()}
        optimizers = {b.name: train._make_optimizer(model, cell.schedule) for b in strategy.branches() if b.optimised}
        dataset = data.train_dataset(train.train_augment(model, cell.schedule), 0,
                                     one_caption_per_image=model.base_loss == "infonce")
        batch = data.collate()([dataset[i] for i in range(2)])
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim >= 2}
        ctx = strategies.StepContext(epoch=1, step=0, total_steps=1,
                                     logit_scales={n: getattr(m, "logit_scale", None) for n, m in branches.items()})
        losses = train._train_step(batch, branches, specs, optimizers, strategy, ctx, cell.schedule,
                                   torch.device("cpu"), Path("."))
        assert all(torch.isfinite(v) for v in losses.values())
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)


def _tiny_clip(folder: Path) -> Path:
    models.build("clip", preset="tiny", vocab_words=["a", "dog"]).save_pretrained(folder)
    return folder


def test_a_folders_content_not_its_path_is_the_cells_identity(tmp_path, tiny_data):
    """The same weights elsewhere: the same cell id; other weights (one tokenizer file changed): another id;
    the path is not in the result key; result.json's provenance records path and fingerprint."""
    from bench.provenance import provenance

    first = _tiny_clip(tmp_path / "a")
    moved = Path(shutil.copytree(first, tmp_path / "elsewhere" / "b"))
    other = Path(shutil.copytree(first, tmp_path / "c"))
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 31}))

    def cell(folder):
        (c,) = [c for c in expand(load_suite("dbl", ["scale=smoke", "seeds=[0]", F30K, "matchers=[clip]",
                                                     "strategies=[baseline]", f"data_root={tiny_data}",
                                                     f"weights.clip={folder}"]))]
        return c

    a, b, c = cell(first), cell(moved), cell(other)
    assert a.matcher.overrides["pretrained_path"] == str(first) and b.matcher.overrides["pretrained_path"] == str(moved)
    assert a.id == b.id != c.id
    key = result_key(a)
    assert key["weights"] == {"pretrained_path": folder_fingerprint(first)} and "pretrained_path" not in key["matcher"]
    assert str(first) not in json.dumps(key)
    without = cell("")  # no folder: the preset from scratch, the key as before weights existed
    assert "weights" not in result_key(without) and result_key(without)["matcher"]["pretrained_path"] is None
    assert cell_id(without) == without.id != a.id
    assert provenance(a)["weights"] == {"pretrained_path": {"path": str(first), "fingerprint": folder_fingerprint(first)}}
    # files the loader does not read (another framework's weights, the Hub's cache) do not count
    (moved / "tf_model.h5").write_bytes(b"other")
    (moved / ".cache").mkdir()
    assert folder_fingerprint(moved) == folder_fingerprint(first)


def test_a_cut_weights_file_is_named(tmp_path):
    folder = _tiny_clip(tmp_path / "clip")
    arch = models.matcher_attribute("clip", "architecture")(preset="tiny")
    assert folder_problems(folder, "clip", arch) == []
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    (problem,) = folder_problems(folder, "clip", arch)
    assert "model.safetensors: " in problem.what and "but its tensors end at byte" in problem.what
    assert "fetch it again" in problem.fix
    (folder / "preprocessor_config.json").unlink()
    assert [p.what for p in folder_problems(folder, "clip", arch)][1] == \
        "has no preprocessor_config.json (the image processor)"


@pytest.mark.slow  # the session's generated folders
def test_the_generator_keeps_a_folder_it_wrote_and_refuses_another(published_weights, tmp_path):
    from bench.data.weights import WeightsError, generate

    before = {k: folder_fingerprint(f) for k, f in published_weights.items()}
    again = generate(published_weights["clip"].parent, "all", seed=0)  # the same generation: left as it is
    assert again == published_weights and {k: folder_fingerprint(f) for k, f in again.items()} == before
    (tmp_path / "clip-vit-base-patch32").mkdir()
    with pytest.raises(WeightsError, match="exists and is not a folder this generator wrote"):
        generate(tmp_path, "clip")
