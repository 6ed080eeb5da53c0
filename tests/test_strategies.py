"""Strategies: branch declarations per scenario and the loss each optimised branch receives."""

import math

import pytest
import torch

import strategies
from strategies import StepContext
from strategies import losses as L
from strategies.momentum import cosine_momentum


def _scores(*names, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(b, b, generator=g).mul(2).sub(1).requires_grad_(True) for n in names}


CTX = StepContext(epoch=3, step=10, total_steps=100)


def test_registry_lists_every_strategy_and_rejects_unknown_names():
    assert set(strategies.available()) >= {"baseline", "kd", "rkd", "sp", "darkrank", "dml", "momentum", "dbl"}
    with pytest.raises(KeyError, match="Did you mean dbl"):
        strategies.build("dbll")
    with pytest.raises(TypeError, match="Valid parameters"):
        strategies.build("dbl", lose="abs")
    with pytest.raises(ValueError, match="scenario"):
        strategies.build("dbl", scenario="xyz")


@pytest.mark.parametrize("scenario,names,updates,inits", [
    ("oas", ["anchor", "target"], ["frozen", "optimizer"], ["checkpoint", "checkpoint"]),
    ("oss", ["anchor", "target"], ["optimizer", "optimizer"], ["scratch", "scratch"]),
    ("mss", ["anchor", "target"], ["ema:target", "optimizer"], ["copy:target", "scratch"]),
])
def test_dbl_branches_follow_the_scenario(scenario, names, updates, inits):
    s = strategies.build("dbl", scenario=scenario)
    assert [b.name for b in s.branches()] == names
    assert [b.update for b in s.branches()] == updates
    assert [b.init for b in s.branches()] == inits
    assert s.reported == "target"
    assert s.needs_anchor_checkpoint == (scenario == "oas")
    anchor_mode = s.branches()[0].mode
    assert anchor_mode == ("train" if scenario == "oss" else "eval")


@pytest.mark.parametrize("loss", ["abs", "rel"])
def test_dbl_oss_target_gets_boosting_and_anchor_only_its_own_loss(loss):
    s = strategies.build("dbl", loss=loss, scenario="oss", alpha=0.7)
    sc = _scores("anchor", "target")
    out = s.losses(sc, CTX)
    boost = L.boost_abs(sc["target"], sc["anchor"]) if loss == "abs" else L.boost_rel(sc["target"], sc["anchor"])
    assert torch.allclose(out["anchor"], L.triplet(sc["anchor"]))
    assert torch.allclose(out["target"], L.triplet(sc["target"]) + 0.7 * boost)
    # the target's loss never reaches the anchor's scores
    out["target"].backward()
    assert sc["anchor"].grad is None or torch.all(sc["anchor"].grad == 0)
    assert sc["target"].grad.abs().sum() > 0


def test_dbl_oss_cascade_averages_boosting_over_earlier_branches():
    s = strategies.build("dbl", loss="rel", scenario="oss", branches=3)
    assert [b.name for b in s.branches()] == ["branch0", "branch1", "target"]
    sc = _scores("branch0", "branch1", "target")
    out = s.losses(sc, CTX)
    assert torch.allclose(out["branch0"], L.triplet(sc["branch0"]))
    assert torch.allclose(out["branch1"], L.triplet(sc["branch1"]) + L.boost_rel(sc["branch1"], sc["branch0"]))
    want = L.triplet(sc["target"]) + (L.boost_rel(sc["target"], sc["branch0"]) +
                                      L.boost_rel(sc["target"], sc["branch1"])) / 2
    assert torch.allclose(out["target"], want)
    with pytest.raises(ValueError, match="cascade"):
        strategies.build("dbl", scenario="mss", branches=3)


def test_dbl_variants_pass_their_options_to_the_loss():
    sc = _scores("anchor", "target")
    s = strategies.build("dbl", loss="abs", scenario="mss", reduction="sum", soft_margin="sigmoid", beta=2.0,
                         split=0.3)
    out = s.losses(sc, CTX)
    want = L.triplet(sc["target"]) + L.boost_abs(sc["target"], sc["anchor"], beta=2.0, split=0.3,
                                                  reduction="sum", soft_margin="sigmoid")
    assert set(out) == {"target"}
    assert torch.allclose(out["target"], want)


@pytest.mark.parametrize("name,fn", [("kd", L.kd), ("rkd", L.rkd), ("sp", L.sp), ("darkrank", L.darkrank)])
def test_distillation_student_loss_is_base_plus_distillation(name, fn):
    s = strategies.build(name)
    assert s.scenario == "oas" and s.needs_anchor_checkpoint
    assert [(b.name, b.update) for b in s.branches()] == [("teacher", "frozen"), ("target", "optimizer")]
    sc = _scores("teacher", "target")
    out = s.losses(sc, CTX)
    assert torch.allclose(out["target"], L.triplet(sc["target"]) + fn(sc["target"], sc["teacher"]))
    out["target"].backward()
    assert sc["teacher"].grad is None or torch.all(sc["teacher"].grad == 0)


def test_dml_is_symmetric_over_k_peers():
    s = strategies.build("dml", peers=3)
    assert [b.name for b in s.branches()] == ["peer1", "peer2", "peer3"] and s.reported == "peer1"
    sc = _scores("peer1", "peer2", "peer3")
    out = s.losses(sc, CTX)
    for k in sc:
        others = [l for l in sc if l != k]
        want = L.triplet(sc[k]) + sum(L.dml(sc[k], sc[l]) for l in others) / 2
        assert torch.allclose(out[k], want)
    with pytest.raises(ValueError):
        strategies.build("dml", peers=1)


def test_comparison_strategies_are_marked_as_reconstructions():
    # the DBL repository builds these losses as init_loss(name, margin=, beta=): a TypeError for each
    # (and KD is absent); only the boosting losses (and the baseline's) come from runnable code
    recon = {n for n in strategies.available() if strategies.get(n).reconstructed}
    assert recon == {"kd", "rkd", "sp", "darkrank", "dml", "momentum"}
    assert strategies.build("kd").describe()["reconstructed"] and not strategies.build("dbl").describe()["reconstructed"]
    note = strategies.reconstruction_note(["baseline", "dbl", "momentum", "kd", "unknown"])
    assert note.startswith("Reconstructed from the DBL paper's description: kd, momentum ")
    assert strategies.reconstruction_note(["baseline", "dbl"]) == ""


def test_dml_one_sided_is_the_reference_wiring():
    # DBL's OSS program: branch k > 0 learns from the detached earlier branches (mean), branch 0 from L_raw only
    s = strategies.build("dml", peers=3, symmetric=False)
    assert s.reported == "peer3"  # the branch that learns from all the others
    sc = _scores("peer1", "peer2", "peer3")
    out = s.losses(sc, CTX)
    assert torch.allclose(out["peer1"], L.triplet(sc["peer1"]))
    assert torch.allclose(out["peer2"], L.triplet(sc["peer2"]) + L.dml(sc["peer2"], sc["peer1"]))
    want3 = L.triplet(sc["peer3"]) + (L.dml(sc["peer3"], sc["peer1"]) + L.dml(sc["peer3"], sc["peer2"])) / 2
    assert torch.allclose(out["peer3"], want3)
    sum(out.values()).backward()  # no term reaches a later peer: peer1's gradient is its L_raw's alone
    g1 = sc["peer1"].grad.clone()
    sc1 = sc["peer1"].detach().requires_grad_(True)
    L.triplet(sc1).backward()
    assert torch.allclose(g1, sc1.grad)
    assert strategies.build("dml", peers=3, symmetric=False, report="peer1").reported == "peer1"
    assert strategies.build("dml").symmetric and strategies.build("dml").reported == "peer1"


@pytest.mark.parametrize("variant", ["dino", "reverse"])
def test_momentum_uses_ema_teacher_and_dino_loss(variant):
    s = strategies.build("momentum", loss=variant)
    assert [(b.name, b.init, b.update, b.mode) for b in s.branches()] == [
        ("teacher", "copy:target", "ema:target", "eval"), ("target", "scratch", "optimizer", "train")]
    sc = _scores("teacher", "target")
    out = s.losses(sc, CTX)
    assert torch.allclose(out["target"], L.triplet(sc["target"]) +
                          L.dino(sc["target"], sc["teacher"], reverse=variant == "reverse"))
    assert s.eps == 1e-8  # the reference's eps inside the reverse KL's log; eps=0: the exact KL
    exact = strategies.build("momentum", loss=variant, eps=0.0).losses(sc, CTX)["target"]
    assert torch.allclose(exact, L.triplet(sc["target"]) +
                          L.dino(sc["target"], sc["teacher"], reverse=variant == "reverse", eps=0.0))


def test_cosine_momentum_schedule_goes_from_m0_to_one():
    m0 = 0.99
    assert cosine_momentum(0, 100, m0) == pytest.approx(m0)
    assert cosine_momentum(50, 100, m0) == pytest.approx(1 - (1 - m0) / 2)
    assert cosine_momentum(100, 100, m0) == pytest.approx(1.0)
    values = [cosine_momentum(t, 100, m0) for t in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_hinge_warmup_uses_sum_of_negatives_then_hardest():
    s = strategies.build("baseline", hinge_warmup_epochs=1)
    sc = _scores("target")
    first = s.losses(sc, StepContext(epoch=0, step=0, total_steps=10))["target"]
    later = s.losses(sc, StepContext(epoch=1, step=5, total_steps=10))["target"]
    assert torch.allclose(first, L.triplet(sc["target"], max_violation=False))
    assert torch.allclose(later, L.triplet(sc["target"], max_violation=True))
    assert not torch.allclose(first, later)


def test_infonce_base_loss_uses_the_branch_logit_scale():
    s = strategies.build("baseline", base_loss="infonce")
    sc = _scores("target")
    scale = torch.tensor(math.log(1 / 0.07))
    out = s.losses(sc, StepContext(epoch=0, step=0, total_steps=1, logit_scales={"target": scale}))
    assert torch.allclose(out["target"], L.infonce(sc["target"], scale))


def test_a_strategy_with_an_ema_branch_but_no_momentum_is_refused_when_built(monkeypatch):
    """The missing momentum is named when the strategy is built (before any training), not at the first EMA step."""
    from strategies.base import Branch, Strategy

    class Unfinished(Strategy):
        name = "unfinished"

        def branches(self):
            return [Branch("shade", init="copy:target", update="ema:target", mode="eval"), Branch("target")]

        def losses(self, scores, ctx):
            return {"target": self.base(scores["target"], ctx, "target")}

    monkeypatch.setitem(strategies._REGISTRY, "unfinished", Unfinished)
    with pytest.raises(TypeError, match=r"strategy 'unfinished': branch\(es\) shade follow another by EMA but "
                                        r"Unfinished defines no momentum"):
        strategies.build("unfinished")
    assert strategies.build("momentum").momentum(0, 10) > 0  # a strategy that defines it builds as before
