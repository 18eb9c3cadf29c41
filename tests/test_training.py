"""The training scaffold (conta_core.infra.training): data order, resume checkpoints, settings, progress lines."""

from __future__ import annotations

import logging

import pytest
import torch
from resume_helpers import assert_same_weights, resume_dir, stop_then_resume

from conta_core.infra import training
from conta_core.infra.config import checkpoint_settings
from conta_core.infra.progress import Progress
from conta_core.infra.training import Loop, Resume, fingerprint, fit, shuffled_loader


class Items(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), float(self.epoch)])


def test_shuffled_loader_matches_dataloader_shuffle_and_skips():
    """Same order as DataLoader(shuffle=True, generator=seeded) over epochs; skip starts later."""
    ds = Items(10)
    ref = torch.utils.data.DataLoader(
        ds, batch_size=3, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(4)
    )
    want = [[b[:, 0].tolist() for b in ref] for _ in range(3)]
    loader, batches = shuffled_loader(ds, 3, {"generator": torch.Generator().manual_seed(4)})
    assert len(loader) == 3
    got = [[b[:, 0].tolist() for b in batches(e, 0)] for e in range(3)]
    assert got == want
    gen = loader.generator
    state = gen.get_state()
    full = [b[:, 0].tolist() for b in batches(3, 0)]
    gen.set_state(state)
    assert [b[:, 0].tolist() for b in batches(3, 2)] == full[2:]
    assert [b[:, 1].tolist() for b in batches(5, 0)][0] == [5.0] * 3  # set_epoch before the pass


def _toy_loop(out, checkpoint=None, steps=7, seed=0) -> tuple[torch.nn.Module, list[dict]]:
    """A linear model on a shuffled toy set: 3 steps per epoch, `steps` steps."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader, batches = shuffled_loader(Items(7), 2, {"generator": torch.Generator().manual_seed(seed)})

    def step(batch, i, epoch):
        noise = torch.randn(len(batch), 1)  # global RNG: restored on resume
        loss = ((model(batch) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach()), "lr": 0.1, "epoch": epoch}

    resume = Resume(out, checkpoint, fingerprint("toy", steps, seed))
    loop = Loop(
        name="toy",
        model=model,
        optimizer=opt,
        max_step=steps,
        steps_per_epoch=len(loader),
        batches=batches,
        step=step,
        resume=resume,
        generators=[loader.generator],
    )
    rows = fit(loop)
    resume.finish()
    return model, rows


@pytest.mark.parametrize("stop", [1, 3, 4, 6], ids=["first", "boundary", "after-boundary", "last-boundary"])
def test_fit_resumes_bit_for_bit(tmp_path, monkeypatch, stop):
    ref, ref_rows = _toy_loop(tmp_path / "ref.pth")
    got = {}

    def run():
        got["model"], got["rows"] = _toy_loop(tmp_path / "cut.pth")
        (tmp_path / "cut.pth").write_bytes(b"done")  # the trainer's final weights

    stop_then_resume(monkeypatch, run, tmp_path / "cut.pth", stop)
    assert_same_weights(ref.state_dict(), got["model"].state_dict())
    assert got["rows"] == ref_rows


def test_periodic_checkpoints_keep_the_newest_two_and_keep_flag(tmp_path):
    out = tmp_path / "m.pth"
    _toy_loop(out, {"every": 2, "minutes": 0, "keep": True})
    names = sorted(p.name for p in resume_dir(out).iterdir())
    assert names == ["step_00000004.pth", "step_00000006.pth"]  # 2 and 4 pruned; 7 = the end, none
    _toy_loop(tmp_path / "n.pth", {"every": 2, "minutes": 0, "keep": False})
    assert not resume_dir(tmp_path / "n.pth").exists()


def test_stale_checkpoint_is_removed_and_training_starts_over(tmp_path, caplog):
    out = tmp_path / "m.pth"
    _toy_loop(out, {"every": 2, "minutes": 0, "keep": True})
    ref, ref_rows = _toy_loop(tmp_path / "ref.pth", steps=5)
    with caplog.at_level(logging.WARNING, logger="conta.training"):
        model, rows = _toy_loop(out, {"every": 0, "minutes": 0, "keep": True}, steps=5)  # another fingerprint
    assert "made with another config" in caplog.text
    assert rows == ref_rows
    assert_same_weights(ref.state_dict(), model.state_dict())


def test_checkpoint_of_other_optimizer_groups_is_removed_and_training_starts_over(tmp_path, caplog):
    """Same config fingerprint, but the code now splits the parameters into other groups (as
    SEAM's context got its own groups): the checkpoint cannot resume this optimizer."""
    out = tmp_path / "m.pth"
    _toy_loop(out, {"every": 2, "minutes": 0, "keep": True})
    ckpt_path = sorted(resume_dir(out).iterdir())[-1]
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["optimizer"]["param_groups"] = [
        dict(ckpt["optimizer"]["param_groups"][0], params=[0]),
        dict(ckpt["optimizer"]["param_groups"][0], params=[1]),
    ]
    torch.save(ckpt, ckpt_path)
    ref, ref_rows = _toy_loop(tmp_path / "ref.pth")
    with caplog.at_level(logging.WARNING, logger="conta.training"):
        model, rows = _toy_loop(out, {"every": 2, "minutes": 0, "keep": True})
    assert "other optimizer parameter groups" in caplog.text
    assert rows == ref_rows
    assert_same_weights(ref.state_dict(), model.state_dict())


def test_unreadable_newest_checkpoint_falls_back_to_the_older_one(tmp_path):
    out = tmp_path / "m.pth"
    _toy_loop(out, {"every": 2, "minutes": 0, "keep": True})
    (resume_dir(out) / "step_00000006.pth").write_bytes(b"truncated")
    ckpt = Resume(out, None, fingerprint("toy", 7, 0)).load()
    assert ckpt is not None and ckpt["step"] == 4


@pytest.mark.parametrize(
    "cfg,msg",
    [
        ({"every": -1}, "checkpoint.every"),
        ({"every": 1.5}, "checkpoint.every"),
        ({"minutes": "ten"}, "checkpoint.minutes"),
        ({"keep": "yes"}, "checkpoint.keep"),
        ({"evry": 3}, "checkpoint.evry: unknown"),
    ],
)
def test_checkpoint_settings_name_the_bad_key(cfg, msg):
    with pytest.raises(ValueError, match=msg):
        checkpoint_settings(cfg)


def test_progress_logs_lines_off_a_tty(monkeypatch, caplog):
    monkeypatch.setattr("conta_core.infra.progress.progress_enabled", lambda: False)
    monkeypatch.setenv("CONTA_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="conta.train_x"):
        p = Progress("train_x", 4)
        for i in range(4):
            p.update({"loss": 1.0 / (i + 1), "lr": 0.01}, ("loss", "lr"))
        p.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[0].startswith("train_x: 1/4 (25%), loss 1, lr 0.01, ")
    assert "ETA" in lines[0] and "ETA" not in lines[-1] and lines[-1].startswith("train_x: 4/4 (100%)")


def test_progress_rate_limited(monkeypatch, caplog):
    monkeypatch.setattr("conta_core.infra.progress.progress_enabled", lambda: False)
    monkeypatch.setenv("CONTA_PROGRESS_SECONDS", "3600")
    with caplog.at_level(logging.INFO, logger="conta.cam"):
        with Progress("cam", 100, unit="img") as p:
            for _ in range(100):
                p.update()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["cam: 100/100 (100%)"]


def test_interrupted_is_a_failing_exit():
    assert issubclass(training.Interrupted, SystemExit)
