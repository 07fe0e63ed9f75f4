"""Two-stage rectified-flow training (paper §3.1, §3.3, §4.1) on synthetic 4D scenes.

Stage 1: the base video model on fixed-view videos (rows, context "dynamic") and freeze-time videos
(columns, context "freeze-time") with random masking: the first K ∈ [0, 4] frames are known.
Stage 2: the two-stream model built from the stage-1 blocks, blocks frozen, only the sync layers
trained (for `sequential`: the time pass's attention copy) on whole grids whose first row and column
are known: multi-view synthetic grids and pseudo-4D grids (2D affine sweeps of videos). `--tune-blocks LR`
trains the blocks too (their own peak LR; not the paper's recipe, see training/README.md); `--init` with a
stage-2 model of the same sync continues it whole
(`--fresh-sync`: new sync layers). σ is logit-normal, time-shifted by `--sigma-shift`
(the shipped model: 3, then 6) toward the high noise where the sampler spends most of its steps.

Runs in time-boxed chunks that resume: `--minutes 8` trains for 8 minutes (set-up included), saves, and
exits; the next call with the same `--out` continues from the checkpoint (weights, AdamW state, step, data
seed, log). The LR schedule runs over `--steps`, or over `--total-minutes` of training time if given.
Several GPUs: `torchrun --nproc-per-node N -m fourreal_rt.training …` trains data-parallel (DDP, NCCL); each
process renders its own batches (`--batch` grids each) from its own train seeds, and rank 0 writes the checkpoint.
The checkpoint keeps weights in float32 and the AdamW moments in bfloat16 (half the bytes: it has to travel
between device calls). `--ema DECAY` keeps an exponential moving average of the trained weights (float32, in the
checkpoint too) and exports it as `model/`, the raw weights as `model_online/`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.scenes import TRAIN_SEEDS
from ..model import PRESETS, GridConfig, TwoStreamModel
from ..model.blocks import DYNAMIC, FREEZE_TIME
from ..model.weights import load_model, read_meta, resolve, save_model

CKPT = "train_state.safetensors"
MOMENT_DTYPE = torch.bfloat16          # AdamW moments as stored (resume error: a relative 2^-8 at most on each)
LOG = "train_log.jsonl"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
class GridSource:
    """Batches of ground-truth grids [B, V, T, H, W, 3] in [-1, 1], rendered on the fly.

    Sampling a scene (its textures) is CPU work (~0.3 s); rendering is fast on the GPU. So a pool of
    scenes lives on the device, worker processes keep replacing its oldest entries with new train
    seeds, and every batch renders random scenes of the pool at a random sub-arc of views and a random
    time window: each scene yields many different grids.
    """

    def __init__(self, cfg: GridConfig, device, seed0: int, pool: int = 256, workers: int = 0):
        from ..data import scenes
        self.scenes, self.cfg, self.device = scenes, cfg, device
        self.next_seed = seed0                # train seeds are consumed in order, so resumes continue
        self.workers = workers
        self.procs = None
        if workers > 0:
            import multiprocessing as mp
            self.procs = mp.get_context("spawn").Pool(workers, initializer=torch.set_num_threads, initargs=(1,))
        self.pool = self._stack(self._sample(pool))
        self.pending = None

    def _take(self, n: int) -> list[int]:
        """The next n training seeds; never a validation or test seed (past the split's end they wrap around)."""
        seeds = [TRAIN_SEEDS[(self.next_seed + i) % len(TRAIN_SEEDS)] for i in range(n)]
        self.next_seed = (self.next_seed + n) % len(TRAIN_SEEDS)
        return seeds

    def _sample(self, n: int):
        seeds = self._take(n)
        if self.procs is None:
            return [self.scenes.sample_scene(s) for s in seeds]
        return self.procs.map(self.scenes.sample_scene, seeds, chunksize=4)

    def _stack(self, scenes):
        return self.scenes.stack_scenes(scenes).to(self.device)

    def _refresh(self):
        """Swap in scenes the workers have finished; queue the next chunk."""
        if self.procs is None:
            return
        if self.pending is not None and self.pending.ready():
            new = self._stack(self.pending.get())
            n = new.seed.shape[0]
            keep = {f.name: getattr(self.pool, f.name)[n:] for f in dataclasses.fields(self.pool)}
            self.pool = type(self.pool)(**{k: torch.cat([v, getattr(new, k)]) for k, v in keep.items()})
            self.pending = None
        if self.pending is None:
            seeds = self._take(2 * self.workers)
            self.pending = self.procs.map_async(self.scenes.sample_scene, seeds, chunksize=2)

    def grids(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        self._refresh()
        c, dev = self.cfg, self.device
        P = self.pool.seed.shape[0]
        idx = torch.randint(0, P, (batch,), generator=gen, device=dev)
        sub = type(self.pool)(**{f.name: getattr(self.pool, f.name)[idx] for f in dataclasses.fields(self.pool)})
        u = torch.rand(4, generator=gen, device=dev)
        v_span, t_span = 0.4 + 0.6 * u[0], 0.4 + 0.6 * u[1]          # a sub-arc and a time window
        view_pos = (1 - v_span) * u[2] + v_span * torch.linspace(0, 1, c.views, device=dev)
        times = (1 - t_span) * u[3] + t_span * torch.linspace(0, 1, c.times, device=dev)
        out = self.scenes.render_batch(sub, c.views, c.times, c.frame_h, c.frame_w, device=dev,
                                       view_pos=view_pos, times=times)
        frames = out["frames"] * 2 - 1                                           # [B, V, T, H, W, 3]
        flip = torch.rand(batch, generator=gen, device=dev) < 0.5               # mirror half the grids
        return torch.where(flip[:, None, None, None, None, None], frames.flip(-2), frames)

    def pseudo4d(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """Pseudo-4D grids: each grid's fixed-view video swept by continuous 2D affine transforms."""
        from ..data import pseudo4d
        rows = self.grids(batch, gen)[:, 0]                                      # [B, T, H, W, 3]
        return pseudo4d.pseudo4d_batch(rows, self.cfg.views, generator=gen)     # [B, V, T, H, W, 3]


def flow_pair(x0: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator):
    """x_σ = (1 - σ) x0 + σ ε and the velocity target ε - x0. x0: [B, ...]; sigma: [B]."""
    eps = torch.randn(x0.shape, generator=gen, device=x0.device)
    s = sigma.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * eps, eps - x0


def sample_sigma(n: int, gen: torch.Generator, device, shift: float = 1.0) -> torch.Tensor:
    """Logit-normal σ (SD3), time-shifted like the sampler's schedule: shift > 1 moves training toward high
    noise (shift 3: median σ 0.75), where pixel-space grids keep the most of their structure."""
    s = torch.sigmoid(torch.randn(n, generator=gen, device=device))
    return shift * s / (1 + (shift - 1) * s)


def masked_mse(pred, target, mask):
    """Mean squared error over unknown frames only. pred, target: [B, V, T, H, W, 3]; mask: [B, V, T]."""
    w = (~mask)[..., None, None, None].float()
    return ((pred.float() - target.float()) ** 2 * w).sum() / (w.sum() * pred[0, 0, 0].numel()).clamp(min=1)


# --------------------------------------------------------------------------------------------
# losses of the two stages
# --------------------------------------------------------------------------------------------
def stage1_loss(model: TwoStreamModel, grids: torch.Tensor, gen: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """Rows (dynamic context) and columns (freeze-time context) with the first K ∈ [0, 4] known."""
    base = model.base
    B, V, T = grids.shape[:3]
    rows = grids.reshape(B * V, 1, T, *grids.shape[3:])                        # [B*V, 1, T, H, W, 3]
    cols = grids.transpose(1, 2).reshape(B * T, V, 1, *grids.shape[3:])        # [B*T, V, 1, H, W, 3]
    total = 0.0
    for videos, context, n_frames in ((rows, DYNAMIC, T), (cols, FREEZE_TIME, V)):
        n = videos.shape[0]
        k = torch.randint(0, 5, (n,), generator=gen, device=grids.device)
        idx = torch.arange(n_frames, device=grids.device)
        known = idx[None] < k[:, None]                                          # [n, F]
        mask = known[:, None, :] if context == DYNAMIC else known[:, :, None]   # [n, 1, T] or [n, V, 1]
        sigma = sample_sigma(n, gen, grids.device, shift)
        x_s, target = flow_pair(videos, sigma, gen)
        pred = base(x_s, videos, mask, sigma, context)
        total = total + masked_mse(pred, target, mask)
    return total / 2


def stage2_loss(model: TwoStreamModel, grids: torch.Tensor, gen: torch.Generator, shift: float = 1.0) -> torch.Tensor:
    """Whole grids, first row and first column known (the inference setting)."""
    B, V, T = grids.shape[:3]
    mask = torch.zeros(B, V, T, dtype=torch.bool, device=grids.device)
    mask[:, 0] = True
    mask[:, :, 0] = True
    sigma = sample_sigma(B, gen, grids.device, shift)
    x_s, target = flow_pair(grids, sigma, gen)
    return masked_mse(model(x_s, grids, mask, sigma), target, mask)


class StageLoss(torch.nn.Module):
    """The stage's loss as one module, so DDP (and torch.compile) see a single forward."""

    def __init__(self, model: TwoStreamModel, stage: int, sigma_shift: float = 1.0):
        super().__init__()
        self.model, self.stage, self.sigma_shift = model, stage, sigma_shift

    def forward(self, grids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return (stage1_loss if self.stage == 1 else stage2_loss)(self.model, grids, gen, self.sigma_shift)


# --------------------------------------------------------------------------------------------
# checkpoints: safetensors for weights (float32) and AdamW moments (bfloat16), JSON for counters
# --------------------------------------------------------------------------------------------
def save_checkpoint(out: Path, model, opt, info: dict, ema: dict | None = None):
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {f"model/{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tensors.update({f"ema/{k}": v.contiguous().cpu() for k, v in (ema or {}).items()})
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                for key in ("exp_avg", "exp_avg_sq"):
                    tensors[f"opt/{names[id(p)]}/{key}"] = st[key].to(MOMENT_DTYPE).contiguous().cpu()
                info.setdefault("opt_step", {})[names[id(p)]] = float(st["step"])
    tmp = out / (CKPT + ".tmp")
    save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    os.replace(tmp, out / CKPT)


def checkpoint_info(out: Path) -> dict:
    """The counters of the run's checkpoint (step, data seeds, training time, EMA decay, ...)."""
    from safetensors import safe_open
    with safe_open(str(out / CKPT), "pt") as f:
        return json.loads(f.metadata()["info"])


def load_checkpoint(out: Path, model, opt, ema: dict | None = None) -> dict:
    """Restores model, optimizer and, where the checkpoint has them, the EMA weights (into `ema`, in place)."""
    info = checkpoint_info(out)
    tensors = load_file(str(out / CKPT))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    params = dict(model.named_parameters())
    dev = next(model.parameters()).device
    for name, step in info.get("opt_step", {}).items():
        p = params[name]
        opt.state[p] = {"step": torch.tensor(step),
                        "exp_avg": tensors[f"opt/{name}/exp_avg"].to(dev, torch.float32),
                        "exp_avg_sq": tensors[f"opt/{name}/exp_avg_sq"].to(dev, torch.float32)}
    if ema is not None and all(f"ema/{name}" in tensors for name in ema):
        for name, e in ema.items():
            e.copy_(tensors[f"ema/{name}"])
    else:
        info.pop("ema_updates", None)                         # no average to continue: a new one starts
    return info


def ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float, n: int):
    """ema ← d·ema + (1 − d)·θ after the n-th update (n = 0, 1, …) of this average, with d = min(decay,
    (1 + n) / (10 + n)): a short memory while the average is young (the warm-up of timm's ModelEmaV2)."""
    d = min(decay, (1 + n) / (10 + n))
    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)


# --------------------------------------------------------------------------------------------
def lr_at(step: int, progress: float, peak: float, warmup: int = 200) -> float:
    """Linear warm-up over `warmup` steps, then cosine to 10% over progress ∈ [0, 1] of the run."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


MAX_PROCESSES = 16    # data parallelism: each process draws seeds from its own 1/16 of TRAIN_SEEDS


def _distributed(cuda: bool) -> tuple[int, int]:
    """(rank, world size): torchrun's environment starts data parallelism (NCCL on GPUs, gloo on the CPU);
    (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if world > MAX_PROCESSES:
        raise ValueError(f"at most {MAX_PROCESSES} training processes, got {world}")
    import torch.distributed as dist
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), world


def _all_reduce(x: float | list[float], world: int, device, op: str) -> float | list[float]:
    """x (a number or a list of them) combined over all processes ("max" or "mean"), in one collective: every
    rank must take the same decisions."""
    if world == 1:
        return x
    import torch.distributed as dist
    t = torch.tensor(x if isinstance(x, list) else [x], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    out = [v / (world if op == "mean" else 1) for v in t.tolist()]
    return out if isinstance(x, list) else out[0]


def train(args) -> Path:
    t_end = time.time() + args.minutes * 60                  # the chunk's budget includes set-up
    torch.set_grad_enabled(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    rank, world = _distributed(cuda)
    if world > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    else:
        device = torch.device(args.device if args.device != "auto" else ("cuda" if cuda else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    init_meta = {}                                           # the model this run continues (stage 2), if any
    if args.stage == 1:
        cfg = PRESETS[args.preset].replace(sync="soft", prediction=args.prediction)
        model = TwoStreamModel(cfg)
        params = list(model.base.parameters())
    else:
        src = resolve(args.init)
        base_model = load_model(src)
        cfg = src.cfg.replace(sync=args.sync)
        meta = read_meta(src.directory)
        if meta.get("stage") == 2 and src.cfg.sync == args.sync and not args.fresh_sync:
            model = base_model                              # a stage-2 model of this sync: trained further, whole
            init_meta = {k: v for k, v in meta.items() if k != "config"}
            if rank == 0:
                print(f"continuing the stage-2 {args.sync} model {src.directory} (its sync layers too; "
                      "--fresh-sync starts new ones)", flush=True)
        else:
            model = TwoStreamModel(cfg, base=base_model.base)   # the stage-1 blocks: frozen (paper §4.1) ...
        for p in model.base.parameters():
            p.requires_grad_(bool(args.tune_blocks))        # ... unless --tune-blocks gives them a learning rate
        params = model.sync_parameters()
        for p in params:
            p.requires_grad_(True)
    model.to(device).train()
    groups = [{"params": params, "peak_lr": args.lr}]
    if args.stage == 2 and args.tune_blocks:
        sync_ids = {id(p) for p in params}
        blocks = [p for p in model.base.parameters() if id(p) not in sync_ids]
        groups.append({"params": blocks, "peak_lr": args.tune_blocks})
        params = params + blocks
    trained = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)                  # DDP syncs exactly the trained parameters
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)

    info = {"step": 0, "seed_next": 0, "train_s": 0.0, "stage": args.stage, "sync": cfg.sync, "argv": sys.argv[1:],
            "total_s": None, "world": world, "batch": args.batch}
    names = {id(p): n for n, p in model.named_parameters()}
    ema_decay = args.ema
    if not ema_decay and (out / CKPT).exists():             # a resumed run keeps its average going
        ema_decay = checkpoint_info(out).get("ema_decay", 0.0)
    ema = {names[id(p)]: p.detach().float().clone() for p in params} if ema_decay else None   # name -> fp32 copy
    if (out / CKPT).exists():
        info = load_checkpoint(out, model, opt, ema)
        if rank == 0:
            print(f"resumed {out} at step {info['step']}", flush=True)
    if ema is not None and "ema_updates" not in info:       # a new average (also on a run that had none)
        for p in params:
            ema[names[id(p)]].copy_(p.detach())
        info["ema_updates"] = 0
    if ema is not None:
        info["ema_decay"] = ema_decay
    ema_pairs = [list(ema.values()), params] if ema is not None else None   # (averages, their parameters)
    gen = torch.Generator(device=device).manual_seed(hash((args.seed, info["step"], rank)) % 2 ** 62)
    # each process takes train seeds from its own stretch of TRAIN_SEEDS, continuing where the last chunk stopped
    stride = len(TRAIN_SEEDS) // MAX_PROCESSES
    if info["step"] == 0:                                    # a new run: --seed picks where the stretches start
        start = (args.seed * 1_000_000) % len(TRAIN_SEEDS)
        seeds_next = [(start + r * stride) % len(TRAIN_SEEDS) for r in range(world)]
    else:
        seeds_next = info.get("seeds_next") or [info["seed_next"]]
        if len(seeds_next) != world:                         # another number of processes: new stretches past
            start = max(seeds_next)                          # the furthest seed used
            seeds_next = [(start + r * stride) % len(TRAIN_SEEDS) for r in range(world)]
    data = GridSource(cfg, device, seed0=seeds_next[rank], pool=args.pool, workers=args.workers)

    loss_fn = StageLoss(model, args.stage, args.sigma_shift)
    if args.compile:
        torch._dynamo.config.automatic_dynamic_shapes = False   # rows and columns: two static graphs
        (model.base if args.stage == 1 else model).compile()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        loss_fn = DistributedDataParallel(loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if args.total_minutes:                                   # the whole run's training time, over all chunks
        info["total_s"] = args.total_minutes * 60            # (kept in the checkpoint for later chunks)
    budget_s = info.get("total_s") or float("inf")           # none: the run's length is --steps
    log = open(out / LOG, "a") if rank == 0 else None
    t_last, losses = time.time(), []
    first_step = info["step"]
    while True:
        # one decision for all processes, one collective: any rank out of steps or of its chunk's time, and the
        # training clock of the slowest rank (which the LR schedule and the run's budget then read)
        done = float(info["step"] >= args.steps or time.time() >= t_end)
        done, info["train_s"] = _all_reduce([done, info["train_s"]], world, device, "max")
        if done or info["train_s"] >= budget_s:
            break
        step, t_step = info["step"], time.time()
        progress = max(step / args.steps, info["train_s"] / budget_s)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress, g["peak_lr"])
        with torch.no_grad():
            if args.stage == 2 and torch.rand((), generator=gen, device=device).item() < args.pseudo_frac:
                grids = data.pseudo4d(args.batch, gen)
            else:
                grids = data.grids(args.batch, gen)
        with amp:
            loss = loss_fn(grids, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema_update(*ema_pairs, ema_decay, info["ema_updates"])
            info["ema_updates"] += 1
        losses.append(loss.item())
        info["step"] = step + 1
        if not (args.compile and step == first_step):       # torch.compile's compilation is not training time
            info["train_s"] += time.time() - t_step          # this rank's; combined at the next loop's top
        if info["step"] % args.log_every == 0:
            mean = _all_reduce(sum(losses) / len(losses), world, device, "mean")
            rec = {"step": info["step"], "train_s": round(info["train_s"], 1), "loss": mean,
                   "lr": opt.param_groups[0]["lr"], "s_per_step": (time.time() - t_last) / len(losses),
                   "grids_per_step": args.batch * world}
            if rank == 0:
                print(json.dumps(rec), flush=True)
                log.write(json.dumps(rec) + "\n")
                log.flush()
            t_last, losses = time.time(), []
        if info["step"] % args.save_every == 0:
            _save(out, model, opt, info, data, world, device, rank, ema)
    _save(out, model, opt, info, data, world, device, rank, ema)
    if rank == 0:
        model.eval()
        blocks_trained = args.stage == 1 or args.tune_blocks or init_meta.get("blocks") == "trained"
        extra = {"stage": args.stage, "train_steps": info["step"], "grids_per_step": args.batch * world,
                 "sigma_shift": args.sigma_shift, "blocks": "trained" if blocks_trained else "frozen",
                 "trained_on": "fourreal_rt.data synthetic scenes (train seeds)",
                 **({"continued_from": init_meta} if init_meta else {})}
        if ema is not None:                                  # the raw weights, then the average as model/
            save_model(model, out / "model_online", dtype=getattr(torch, args.save_dtype),
                       extra={**extra, "weights": "online"})
            with torch.no_grad():
                torch._foreach_copy_(*ema_pairs[::-1])
            extra = {**extra, "weights": f"EMA {ema_decay:g} over {info['ema_updates']} updates"}
        else:                                                # no average: no raw-weights copy beside model/
            shutil.rmtree(out / "model_online", ignore_errors=True)
        save_model(model, out / "model", dtype=getattr(torch, args.save_dtype), extra=extra)
        print(f"saved {out / 'model'} at step {info['step']}", flush=True)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()
    return out / "model"


def _save(out, model, opt, info, data, world, device, rank, ema=None):
    """Rank 0 writes the checkpoint, with every process's next train seed."""
    seeds = torch.zeros(world, dtype=torch.float64, device=device)
    seeds[rank] = data.next_seed
    if world > 1:
        import torch.distributed as dist
        dist.all_reduce(seeds)
    info["seeds_next"] = [int(s) for s in seeds.tolist()]
    info["seed_next"] = max(info["seeds_next"])
    info["world"] = world
    if rank == 0:
        save_checkpoint(out, model, opt, info, ema)


def _positive(text: str) -> float:
    x = float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return x


def _decay(text: str) -> float:
    x = float(text)
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return x


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fourreal_rt.training", description=__doc__.split("\n")[0])
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--out", required=True, help="run directory (checkpoint, log, exported model/)")
    p.add_argument("--preset", default="small", help="stage 1: model preset")
    p.add_argument("--init", help="stage 2: the stage-1 model directory (or a stage-2 model of the same --sync: "
                   "trained further, sync layers kept)")
    p.add_argument("--prediction", default="x", choices=("v", "x"),
                   help="stage 1: what the head predicts (velocity, or clean frames turned into a velocity)")
    p.add_argument("--sync", default="soft", choices=("soft", "hard", "sequential"), help="stage 2 variant")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps (the LR schedule's length)")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of this chunk")
    p.add_argument("--total-minutes", type=float, default=None,
                   help="training time of the whole run (all chunks): the LR schedule's length [default: --minutes]")
    p.add_argument("--save-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="dtype of the exported model/ weights")
    p.add_argument("--batch", type=int, default=16, help="grids per step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--tune-blocks", type=float, default=0.0, metavar="LR",
                   help="stage 2: also train the stage-1 blocks at this peak LR (default 0: frozen, as the paper)")
    p.add_argument("--fresh-sync", action="store_true",
                   help="stage 2 from a stage-2 model of the same sync: new sync layers instead of continuing them")
    p.add_argument("--sigma-shift", type=_positive, default=1.0,
                   help="time shift of the training σ distribution (logit-normal; > 1: more high-noise training)")
    p.add_argument("--ema", type=_decay, default=0.0, metavar="DECAY",
                   help="also average the trained weights (e.g. 0.998) and export the average as model/ "
                        "(the raw weights as model_online/); default 0: none, or the resumed run's")
    p.add_argument("--pseudo-frac", type=float, default=0.25, help="stage 2: share of pseudo-4D batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=256, help="scenes kept on the device")
    p.add_argument("--workers", type=int, default=0, help="processes sampling new scenes into the pool")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training (GPU)")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=100)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.stage == 2 and not args.init:
        parser().error("--stage 2 needs --init (the stage-1 model directory)")
    train(args)


if __name__ == "__main__":
    main()
