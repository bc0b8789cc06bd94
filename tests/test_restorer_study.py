"""The restorer study's parts: its U-Net, its plan, its batches and its resumable runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


UNetRestorer = _benchmark("restorer_study").UNetRestorer


@pytest.fixture(scope="module")
def study():
    return _benchmark("restorer_study")


@pytest.fixture(scope="module")
def report():
    return _benchmark("restorer_study_report")


def test_unet_restorer_starts_as_the_identity_and_keeps_the_shape():
    net = UNetRestorer()
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(net(x), x)
    params = sum(p.numel() for p in net.parameters())
    low = sum(p.numel() for n, p in net.named_parameters() if n.startswith(("mid", "enc.3")))
    assert low > 0.5 * params  # most of the capacity at low resolution
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 3, 60, 60))


def test_plan_has_every_branch_curve_and_two_seeds_at_the_recommended_weights(study):
    runs = study.plan()
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    for branch, weights in study.WEIGHTS.items():
        assert {r.weight for r in runs if r.branch == branch} == set(weights)
        assert len(weights) >= 2
        seeds = {
            r.seed for r in runs if r.branch == branch and r.weight == study.RECOMMENDED[branch]
        }
        assert seeds == {0, 1}
    assert len(study.WEIGHTS["cotrained"]) == 3
    assert {r.seed for r in runs if r.branch == "l1"} == {0, 1}


def test_training_batches_depend_on_seed_and_step_only(study):
    faces = torch.rand(3, 3, 96, 96)
    a = study.training_batch(faces, 0, 5, 2, 64)
    b = study.training_batch(faces, 0, 5, 2, 64)
    c = study.training_batch(faces, 0, 6, 2, 64)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])
    assert a[0].shape == a[1].shape == (2, 3, 64, 64)
    assert a[2].shape == (2, 2) and int(a[2].min()) >= 0 and int(a[2].max()) <= 96 - 64


def test_region_masks_follow_the_crop_over_the_whole_face(study):
    from ifqa_loss.masks import face_region_masks

    st = study.Settings(size=256, crop=128)
    term = study.make_term(study.Run("frozen", 0.01, 0), None)
    origins = torch.tensor([[60, 40], [128, 0]])  # over the eyes; the lower left quarter
    masks = study.region_masks(term, origins, st)
    whole = face_region_masks(None, 256, term.region_names)[0]
    assert masks.shape == (2, len(term.region_names), 128, 128)
    assert torch.equal(masks[0], whole[:, 60:188, 40:168])
    eyes = term.region_names.index("eyes")
    assert masks[0, eyes].max() > 0.9 and masks[1, eyes].max() < 0.4  # eyes 8 px above it
    # the first recipe drew the template at the crop's size instead
    assert study.region_masks(term, origins, study.Settings(regions="template")) is None
    with pytest.raises(ValueError, match="'crop' or 'template'"):
        study.region_masks(term, origins, study.Settings(regions="nose"))


def test_only_the_co_trained_branches_train_their_discriminator(study):
    assert study.make_term(study.Run("l1", 0.0, 0), None) is None
    branches = (("features", False), ("frozen", False), ("cotrained", True), ("matched", True))
    for branch, trains in branches:
        assert study.trains_discriminator(study.Run(branch, 0.01, 0)) is trains
    random = study.make_term(study.Run("random", 0.01, 0), None)
    assert random.weights_origin == "random initialisation"
    feats = study.make_term(study.Run("features", 0.5, 0), None)
    assert feats.loss_weight == 0.0 and feats.feature_weight == 0.5
    assert feats.warmup == random.warmup == 0  # the study takes its own warm-up steps
    matched = study.make_term(study.Run("matched", 0.003, 0), None)
    assert matched.loss_weight == 0.003
    assert matched.feature_weight == pytest.approx(study.FM_RATIO * 0.003)
    assert matched.weights_origin != "random initialisation"
    for branch, origin in (("adaptive", "pinned"), ("adaptive-random", "random")):
        term = study.make_term(study.Run(branch, 0.5, 0), None)
        assert study.trains_discriminator(study.Run(branch, 0.5, 0))
        assert term.loss_weight == 1.0  # the per-step weight multiplies it
        assert (term.weights_origin == "random initialisation") is (origin == "random")


def test_adaptive_step_weighs_the_term_by_the_gradient_ratio_at_the_last_layer(study):
    torch.manual_seed(0)
    lq, gt = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    net = UNetRestorer(width=4, blocks=1)
    torch.nn.init.normal_(net.out.weight, std=0.01)  # not the identity: the term has a gradient
    term = study.make_term(study.Run("adaptive", 0.5, 0), None)
    out = net(lq)
    l1 = torch.nn.functional.l1_loss(out, gt)
    g = term(out, gt)
    norms = [torch.autograd.grad(v, net.out.weight, retain_graph=True)[0].norm() for v in (l1, g)]
    expected = float(0.5 * norms[0] / (norms[1] + 1e-4))
    before = net.out.weight.detach().clone()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    _, weight = study.restorer_step(net, opt, term, lq, gt, ratio=0.5)
    assert weight == pytest.approx(expected, rel=1e-4)
    assert not torch.equal(before, net.out.weight)
    fixed = study.make_term(study.Run("cotrained", 0.01, 0), None)
    assert study.restorer_step(net, opt, fixed, lq, gt)[1] == 0.01  # no ratio: the fixed weight


def test_the_uniform_branch_weighs_every_pixel_alike(study):
    uniform, regional = (
        study.make_term(study.Run(b, 0.01, 0), None) for b in ("uniform", "cotrained")
    )
    assert study.trains_discriminator(study.Run("uniform", 0.01, 0))
    assert not uniform.region_names and regional.region_names
    assert study.region_masks(uniform, torch.tensor([[60, 40]]), study.Settings()) is None
    uniform.load_state_dict(regional.state_dict())  # the same discriminator, weighted apart
    out = torch.full((1, 3, 128, 128), 0.2)
    out[..., 64:, :] = 0.9  # logits that differ from the eyes' rows to the mouth's
    masks = study.region_masks(regional, torch.tensor([[60, 40]]), study.Settings())
    with torch.no_grad():
        plain = torch.nn.functional.softplus(-uniform.logits(out)).mean()
        assert float(uniform(out)) == pytest.approx(0.01 * float(plain), rel=1e-5)
        weighted = float(regional(out, masks=masks))
    assert weighted != pytest.approx(0.01 * float(plain), rel=1e-2)


@pytest.mark.slow
def test_a_run_resumes_from_its_checkpoint(study, tmp_path):
    faces = torch.rand(3, 3, 96, 96)
    kw = {"size": 96, "crop": 64, "batch": 2, "warmup": 1, "save_every": 1, "d_warmup": 2}
    st = study.Settings(steps=2, **kw)
    run = study.Run("cotrained", 0.01, 0)
    _, _, _, log = study.fine_tune(run, tmp_path, faces, None, st)
    assert [r["step"] for r in log] == [-2, -1, 0, 1]  # discriminator-only steps first
    assert {"acc_real", "acc_fake", "d_loss"} <= set(log[0])
    _, _, term, log = study.fine_tune(run, tmp_path, faces, None, study.Settings(steps=3, **kw))
    assert [r["step"] for r in log] == [-2, -1, 0, 1, 2]  # read back; only step 2 trained
    assert term.d_steps == 5


@pytest.mark.slow
def test_an_adaptive_run_logs_its_per_step_weight(study, tmp_path):
    faces = torch.rand(3, 3, 96, 96)
    kw = {"size": 96, "crop": 64, "batch": 2, "warmup": 1, "d_warmup": 1, "steps": 2}
    _, _, term, log = study.fine_tune(
        study.Run("adaptive", 0.5, 0), tmp_path, faces, None, study.Settings(**kw)
    )
    assert term.loss_weight == 1.0
    assert "g_weight" not in log[0]  # the discriminator's warm-up has no restorer step
    assert [r["step"] for r in log if "g_weight" in r] == [0, 1]
    assert all(r["g_weight"] >= 0 for r in log[1:])
    mean = (log[-2]["g_weight"] + log[-1]["g_weight"]) / 2  # steps after the first 10%: both
    assert study.summary({"colour": torch.zeros(1)}, log, 2)["g_weight"] == pytest.approx(mean)


def test_the_moving_average_moves_each_weight_by_one_minus_decay(study):
    avg, net = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        avg.weight.fill_(1.0), net.weight.fill_(3.0)
    net.num_batches_tracked.fill_(7)
    study.ema_update(avg, net, 0.9)
    assert torch.allclose(avg.weight, torch.full((2,), 1.2))  # 0.9 x 1 + 0.1 x 3
    assert int(avg.num_batches_tracked) == 7  # counters are copied, not averaged


def test_a_resumed_run_ends_with_the_same_moving_average(study, tmp_path):
    faces = torch.rand(3, 3, 64, 64)
    kw = {"size": 64, "crop": 32, "batch": 2, "warmup": 1, "save_every": 1, "ema": 0.5}
    run = study.Run("l1", 0.0, 0)
    net, avg, _, _ = study.fine_tune(
        run, tmp_path / "a", faces, None, study.Settings(steps=3, **kw)
    )
    study.fine_tune(run, tmp_path / "b", faces, None, study.Settings(steps=2, **kw))
    _, again, _, _ = study.fine_tune(
        run, tmp_path / "b", faces, None, study.Settings(steps=3, **kw)
    )
    for p, q in zip(avg.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    moved = zip(avg.parameters(), net.parameters(), strict=True)
    assert any(not torch.equal(p, r) for p, r in moved)  # the average is not the last weights
    with pytest.raises(ValueError, match="--ema it started with"):
        study.fine_tune(
            run, tmp_path / "a", faces, None, study.Settings(steps=4, **kw | {"ema": 0})
        )


def test_run_names_parse_back_and_off_plan_weights_are_accepted(study):
    for run in study.plan():
        assert study.parse_run(run.name) == run
    assert study.parse_run("cotrained_0.001_s1") == study.Run("cotrained", 0.001, 1)
    for bad in ("l1_0.01_s0", "gan_0.01_s0", "cotrained_s0", "cotrained_0_s0", "cotrained_0.01"):
        with pytest.raises(ValueError, match="unknown run"):
            study.parse_run(bad)


def test_list_shows_off_plan_runs_found_in_the_folder(study, tmp_path):
    (tmp_path / "runs" / "cotrained_0.001_s0").mkdir(parents=True)
    rows = {r.name: state for r, state in study.status(tmp_path)}
    assert rows["cotrained_0.001_s0"] == "to do" and rows["l1_s0"] == "to do"
    assert study.main(["--out", str(tmp_path), "--only", "nonsense"]) == 2


def _result(branch: str, weight: float, seed: int, **summary) -> dict:
    base = {"psnr": 29.0, "ssim": 0.8, "niqe": 8.0, "judge": 0.1, "identity": 0.2, "colour": 0.2}
    return {"run": {"branch": branch, "weight": weight, "seed": seed}, "summary": base | summary}


def test_report_checks_each_seed_l1_ran_with_and_averages_the_differences(report):
    acc = {"d_acc_fake_window_min": 0.6, "d_acc_fake_window_max": 0.8}
    runs = [_result("l1", 0.0, s) for s in (0, 1, 2)] + [
        _result("matched", 0.01, 0, psnr=28.8, niqe=7.0, **acc),
        _result("matched", 0.01, 2, psnr=28.0, niqe=7.5, **acc),
    ]
    lines = report.target_check(runs, "matched")
    assert lines[0].startswith("- seed 0: PSNR -0.20 dB, NIQE -1.00")
    assert "PSNR at most 0.5 dB lower: yes" in lines[0]
    assert lines[1] == "- seed 1: not run yet"
    assert "PSNR at most 0.5 dB lower: NO" in lines[2]
    assert lines[3].startswith("- mean over 2 seeds: PSNR dB -0.60 (-1.00 to -0.20)")
    assert "NIQE -0.75 (-1.00 to -0.50)" in lines[3]
    assert report.target_check(runs, "cotrained")[0] == "- seed 0: not run yet"


def test_report_gives_the_spread_over_seeds_and_the_last_step_weights_apart(report):
    runs = [_result("l1", 0.0, s, psnr=29.0 + s) for s in (0, 1)] + [
        _result("cotrained", 0.01, 0),
    ]
    runs[0]["summary_raw"] = runs[0]["summary"] | {"psnr": 27.0}
    runs[1]["summary_raw"] = runs[1]["summary"] | {"psnr": 29.5}
    assert report.seed_spread(runs) == [
        "- l1, 2 seeds: PSNR dB 29.00 to 30.00 (range 1.00); NIQE 8.00 to 8.00 (range 0.00)"
    ]
    assert report.seed_spread(runs, "summary_raw")[0].startswith(
        "- l1, 2 seeds: PSNR dB 27.00 to 29.50 (range 2.50)"
    )
    text = "\n".join(report.sections(runs))
    assert "Targets (cotrained at 0.01 against L1, last step's weights):" in text
    assert report.target_check(runs, "cotrained", "summary_raw")[0].startswith(
        "- seed 0: not run yet"  # the cotrained run has no last-step summary
    )


def test_report_lists_every_run_against_its_seeds_l1_and_averages_each_branch(report):
    runs = [_result("l1", 0.0, s, psnr=29.0 + s) for s in (0, 1)] + [
        _result("random", 0.01, 0, psnr=28.5, niqe=7.5),
        _result("random", 0.01, 1, psnr=29.5, niqe=8.5),
        _result("frozen", 0.01, 2, psnr=28.0),  # no L1 of seed 2: left out
    ]
    lines = report.against_l1(runs)
    rows = [line for line in lines if line.startswith("| random")]
    assert rows[0].startswith("| random_0.01_s0 | -0.50 | -0.50 |")
    assert rows[1].startswith("| random_0.01_s1 | -0.50 | +0.50 |")
    assert not any("frozen" in line for line in lines)
    assert lines[-1].startswith("- random 0.01, mean over 2 seeds: PSNR dB -0.50 (-0.50 to -0.50)")
    assert "NIQE +0.00 (-0.50 to +0.50)" in lines[-1]
    assert report.against_l1(runs[2:]) == ["- no run has an L1 of its seed yet"]
    assert "Against L1 of the same seed:" in "\n".join(report.sections(runs))


def test_report_checks_the_adaptive_branch_at_its_ratio_and_shows_its_mean_weight(report):
    acc = {"d_acc_fake": 0.7, "d_acc_real": 0.8, "d_acc_fake_window_min": 0.6}
    acc["d_acc_fake_window_max"] = 0.8
    runs = [_result("l1", 0.0, 0), _result("adaptive", 0.5, 0, psnr=28.9, g_weight=0.0042, **acc)]
    runs[0]["run"]["name"], runs[1]["run"]["name"] = "l1_s0", "adaptive_0.5_s0"
    lines = report.target_check(runs, "adaptive")
    assert lines[0].startswith("- seed 0: PSNR -0.10 dB")
    assert "Targets (adaptive at 0.5 against L1):" in "\n".join(report.sections(runs))
    base = {"input": runs[0]["summary"], "clean": runs[0]["summary"]}
    row = next(line for line in report.table(base, runs) if line.startswith("| adaptive"))
    assert row.endswith("0.70 (0.60-0.80); real 0.80; term weight 0.0042 |")


def test_report_counts_dark_outlines_in_the_face_regions_from_saved_outputs(report, tmp_path):
    gt = torch.full((2, 3, 256, 256), 150, dtype=torch.uint8)
    torch.save({"lq": gt.clone(), "gt": gt}, tmp_path / "cases.pt")
    runs = [_result("l1", 0.0, 0), _result("cotrained", 0.01, 0)]
    for r, name in zip(runs, ("l1_s0", "cotrained_0.01_s0"), strict=True):
        r["run"]["name"] = name
        (tmp_path / "runs" / name).mkdir(parents=True)
    drawn = gt.clone()
    drawn[..., 120, 60:200] = 40  # a dark line across the eyes' rows of the template
    torch.save(gt.clone(), tmp_path / "runs" / "l1_s0" / "outputs.pt")
    torch.save(drawn, tmp_path / "runs" / "cotrained_0.01_s0" / "outputs.pt")
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")[1:]
        for line in report.outlines(tmp_path, runs)[2:]
    }
    assert rows["input"] == rows["l1_s0"] == ["0.000", "0.000 |"]
    assert float(rows["cotrained_0.01_s0"][0]) > 0.1


def test_report_pairs_each_run_with_its_seeds_l1_for_the_seed_curves(report, tmp_path):
    runs = [_result("l1", 0.0, s, psnr=29.0 + s) for s in (0, 1)] + [
        _result("cotrained", 0.01, 1, psnr=29.5, niqe=7.0, judge=0.4),
        _result("cotrained", 0.01, 0, psnr=28.5, niqe=7.5),
        _result("frozen", 0.01, 2),  # no L1 of seed 2: left out
        _result("random", 0.01, 0, niqe=None),  # judges extra missing: left out
    ]
    points = report.paired_points(runs)
    assert list(points) == [("cotrained", 0.01)]
    got = [x for p in points["cotrained", 0.01] for x in p]
    assert got == pytest.approx([-0.5, -0.5, 0.0, -0.5, -1.0, 0.3])
    path = report.paired_curves(runs, tmp_path / "paired.png")
    if path is not None:  # matplotlib installed
        assert path.stat().st_size > 10_000 and not (tmp_path / "paired.tmp.png").exists()
    assert report.paired_curves(runs[2:], tmp_path / "none.png") is None
    runs += [_result("l1", 0.0, s) for s in (3, 4)]
    runs += [_result("cotrained", 0.01, 3), _result("cotrained", 0.01, 4, psnr=25.0, niqe=14.0)]
    assert report.paired_curves(runs, tmp_path / "broken.png") is not None or path is None
    assert report.curves(runs, tmp_path / "curves.png") is not None or path is None  # no NIQE
    lo, hi = report._span([-0.2, 0.0, 0.1, -0.1, -3.7], keep=[-0.3])  # one broken run
    assert -0.4 < lo < -0.3 and 0.1 < hi < 0.2


class _PSNROnly:
    """A stand-in for the study's measures: PSNR and colour shift against the clean faces."""

    missing = ()

    def __call__(self, x: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        mse = (x - clean).square().mean((1, 2, 3))
        return {"psnr": -10 * torch.log10(mse), "colour": (x - clean).mean((2, 3))[:, 0] * 255}


def test_the_unsharp_control_sharpens_l1s_outputs_and_is_measured_like_a_run(study, tmp_path):
    gt = torch.rand(2, 3, 64, 64)
    blurred = torch.nn.functional.avg_pool2d(gt, 5, 1, 2, count_include_pad=False)
    l1 = tmp_path / "runs" / "l1_s0"
    l1.mkdir(parents=True)
    torch.save((blurred * 255).round().to(torch.uint8), l1 / "outputs.pt")
    pinned = tmp_path / "lite.safetensors"
    pinned.write_bytes(b"x")
    data = {"gt": gt, "pinned": {"ifqa-lite": pinned}}
    run = study.parse_run("unsharp_1_s0")
    res = study.sharpened_l1(run, tmp_path, data, _PSNROnly())
    assert res["control"] == {"of": "l1_s0", "sigma": study.CONTROL_SIGMA, "amount": 1.0}
    out = torch.load(tmp_path / "runs" / "unsharp_1_s0" / "outputs.pt", weights_only=True)

    def detail(x):  # high-frequency energy
        x = x.float()
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert detail(out) > 1.2 * detail(torch.load(l1 / "outputs.pt", weights_only=True))
    assert (tmp_path / "runs" / "unsharp_1_s0" / "result.json").is_file()
    assert "psnr" in res["summary"]
    with pytest.raises(FileNotFoundError, match="run it first"):
        study.sharpened_l1(study.parse_run("unsharp_1_s1"), tmp_path, data, _PSNROnly())


def test_report_compares_each_run_with_l1_sharpened_to_its_psnr(report):
    def summary(psnr, niqe, judge):
        return {"psnr": psnr, "niqe": niqe, "judge": judge, "ssim": 0.8}

    def run(branch, weight, seed, s):
        name = f"{branch}_s{seed}" if branch == "l1" else f"{branch}_{weight:g}_s{seed}"
        return {"run": {"branch": branch, "weight": weight, "seed": seed, "name": name},
                "summary": s}  # fmt: skip

    runs = [
        run("l1", 0.0, 0, summary(30.0, 9.0, 0.10)),
        run("unsharp", 1.0, 0, summary(29.0, 8.0, 0.30)),
        run("unsharp", 2.0, 0, summary(28.0, 8.5, 0.40)),
        run("features", 0.5, 0, summary(29.5, 7.0, 0.25)),
        run("cotrained", 0.01, 0, summary(27.0, 7.0, 0.25)),  # beyond the control's range
    ]
    amount, c = report.sharpened_at(29.5, [(0.0, runs[0]["summary"]), (1.0, runs[1]["summary"])])
    assert amount == pytest.approx(0.5) and c["niqe"] == pytest.approx(8.5)
    lines = report.against_sharpened(runs)
    row = next(line for line in lines if line.startswith("| features_0.5_s0"))
    assert "| 29.50 | 0.50 |" in row and "7.00 / 8.50" in row and "0.250 / 0.200" in row
    assert any("cotrained_0.01_s0 | 27.00 | outside the control" in line for line in lines)
