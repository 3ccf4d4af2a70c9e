"""The distributed path: two CPU processes on gloo train a tiny model with DDP and end with identical weights."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ssgan.train.loop import Trainer, TrainOptions
from ssgan.train.snapshot import list_snapshots, load_snapshot

import ssgan

TINY = ssgan.SSGConfig(
    size=16, style_dim=16, n_mlp=2, class_names=("background", "a", "b"), transparent=(), local_channel=16,
    coarse_channel=16, coarse_size=8, min_feat_size=4, render_channels={8: 16, 16: 16},
    disc_channels={4: 16, 8: 16, 16: 16},
)  # fmt: skip


class TinyData(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        labels = torch.randint(0, 3, (16, 16), generator=g)
        mask = torch.nn.functional.one_hot(labels, 3).permute(2, 0, 1).float() * 2 - 1
        return {"image": torch.rand(3, 16, 16, generator=g) * 2 - 1, "mask": mask}


def worker(rank, world_size, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        opts = TrainOptions(out=f"{tmp}/runs", kimg=0.012, batch=2, d_reg_every=2, g_reg_every=2, path_reg=0.5,
                            tick_kimg=0.004, snap=3, metrics=(), ema_kimg=0.01, mixing=0.5)  # fmt: skip
        trainer = Trainer(opts, rank=rank, world_size=world_size, device="cpu", dataset=TinyData(), config=TINY,
                          log=lambda *a, **k: None)  # fmt: skip
        initial = {k: v.clone() for k, v in trainer.G.state_dict().items()}
        run_dir = trainer.run()
        result = {"G": trainer.G.state_dict(), "D": trainer.D.state_dict(), "G_ema": trainer.G_ema.state_dict(),
                  "initial": initial, "run_dir": str(run_dir), "step": trainer.step}  # fmt: skip
        torch.save(result, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_agree_on_weights(tmp_path):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["run_dir"] == r1["run_dir"] and r0["step"] == r1["step"] == 3
    for key in ("G", "D", "G_ema"):
        for name, t in r0[key].items():
            torch.testing.assert_close(r1[key][name], t, rtol=0, atol=1e-6, msg=f"{key}.{name} differs between ranks")
    assert not torch.equal(r0["G"]["mapping.layers.0.weight"], r0["initial"]["mapping.layers.0.weight"])
    # one snapshot with each rank's RNG state; 2 ranks x batch 2 x 3 steps = 12 images
    state = load_snapshot(list_snapshots(r0["run_dir"])[-1])
    assert state["images_seen"] == 12 and state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
