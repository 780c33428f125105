"""Benchmark one DiffusionReinforceTrainer step: sampling vs log-prob vs reward vs backward, per estimator.

    python benchmarks/bench_trainer.py [--quick] [--threads N] [--trajectory-samples S]

Every estimator (``one_step``, ``mc_elbo`` with 4 draws, ``trajectory``) is measured in the same run, on a freshly
built tiny LLaDA (the default model's shape, 4 x 128, random weights) with LoRA r=16 on q/k/v/o, the tiny CPU recipe's
sampling settings (gen_length 48, block 16, 48 steps, temperature 1), synthetic MCQ prompts, and the seed's reward
(``NeutralChoiceReward`` + GenBit + ``0.1 KL``, the KL from one forward pair on the clean prompt, adapter on and
off: ``clean_prompt_kl``).

One step runs the trainer's own hooks in the order a generation does (``_generate`` = sampling and decoding; reward =
``clean_prompt_kl`` + ``_score``; ``_estimate_logprobs`` = policy log-probs with grad; then advantages, loss,
backward and the AdamW step on the LoRA parameters), timed per phase; one warm-up step, then the
median over the timed steps. The tables use this thread's CPU time, which other jobs on a shared machine do not
inflate (with 1 torch thread, forward and backward both run on it); wall seconds are printed beside them. Times are
also given in *forward-equivalents* (FE): the phase time divided by the time of one full no-grad forward of the
policy on the same batch shape (``N`` rows of prompt + completion, all logits). A phase of ``k`` FE costs ``k``
forwards per sample, whatever the batch size. NFE counts forward calls of the base model (policy and reference).

Peak memory per phase is the peak of torch.profiler's CPU allocation timeline while the phase runs, measured above
what was live when it started (torch tensors only, not the Python heap; weights excluded); "held" is what the
log-prob phase leaves allocated for backward (the autograd graph). It is measured in a separate, untimed pass.
A last table measures one log-prob estimate + backward against the number of draws, without and with the estimators'
per-draw recompute (activation checkpointing; ``estimate_logprobs(recompute=...)``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict

import torch
from peft import LoraConfig, get_peft_model
from torch.profiler import ProfilerActivity, profile

from diffusion_rl.bias.data import generate_mcq_dataset
from diffusion_rl.bias.rewards.choice import NeutralChoiceReward
from diffusion_rl.bias.rewards.genbit import GenBitReward
from diffusion_rl.config import DiffusionReinforceConfig
from diffusion_rl.logprobs import RolloutBatch, estimate_logprobs
from diffusion_rl.models.tiny import build_tiny_model, build_tiny_tokenizer
from diffusion_rl.objectives import reinforce_loss
from diffusion_rl.rewards.kl import clean_prompt_kl
from diffusion_rl.trainer import DiffusionReinforceTrainer

PHASES = ("sampling", "logprob", "reward", "backward")


def memory_mb(fn) -> tuple[float, float, object]:
    """(peak, held) MB of torch CPU allocations while `fn` runs, relative to its start, and `fn`'s result."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20, current / 2**20, result


def count_forwards(module: torch.nn.Module):
    """A list that grows by one at every forward call of `module`, and the hook handle to remove."""
    calls: list[int] = []
    return calls, module.register_forward_pre_hook(lambda *args: calls.append(1))


def build_trainer(args, estimator: str, samples: int, output_dir: str) -> DiffusionReinforceTrainer:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, hidden_size=args.hidden_size, num_hidden_layers=args.layers)
    config = DiffusionReinforceConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch,
        num_generations=args.num_generations,
        max_steps=1,
        learning_rate=2e-3,
        max_completion_length=args.gen_length,
        block_length=args.block_length,
        steps=args.gen_length,
        temperature=1.0,
        baseline="rloo",
        kl_coef=0.1,
        logprob_estimator=estimator,
        logprob_samples=samples,
        estimator_variance_every=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    dataset = generate_mcq_dataset(args.batch * (args.timed_steps + 2), seed=0, split="train")
    rewards = [NeutralChoiceReward(), GenBitReward()]
    return DiffusionReinforceTrainer(
        model, rewards, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )


class Clock:
    """Wall and CPU time of a block; CPU time (this thread) is what the tables use, being robust to other jobs."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.thread_time() - self._cpu


def forward_seconds(model: torch.nn.Module, inputs: dict, repeats: int) -> float:
    """Median CPU time of one no-grad policy forward over the whole canvas `(N, P + G)`, all logits."""
    canvas = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)  # (N, P + G)
    mask = torch.cat([inputs["prompt_mask"], torch.ones_like(inputs["completion_ids"])], dim=1)
    times = []
    with torch.no_grad():
        model(input_ids=canvas, attention_mask=mask)  # warm-up
        for _ in range(repeats):
            with Clock() as clock:
                model(input_ids=canvas, attention_mask=mask)
            times.append(clock.cpu)
    return statistics.median(times)


def reward(trainer: DiffusionReinforceTrainer, inputs: dict):
    """The generation-time reward of the trainer: the clean-prompt KL pair, then the reward functions."""
    kl = clean_prompt_kl(
        trainer.model, trainer._reference(), inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_mask"],
        mask_token_id=trainer.mask_token_id,
    )  # fmt: skip
    return trainer._score(inputs, kl)


def one_step(trainer: DiffusionReinforceTrainer, rows: list[dict]) -> tuple[dict, dict, dict]:
    """One REINFORCE step through the trainer's own hooks (what a generation + `training_step` run), timed and counted
    per phase.

    Returns `(cpu seconds, wall seconds, NFE)` per phase; backward includes the AdamW step on the LoRA parameters.
    """
    model = trainer.model
    calls, handle = count_forwards(model.get_base_model())
    clocks, nfe = {}, {}
    try:
        model.eval()
        with Clock() as clocks["sampling"]:
            inputs = trainer._generate(rows)
        nfe["sampling"] = len(calls)
        calls.clear()
        model.train()
        with Clock() as clocks["reward"]:
            scored = reward(trainer, inputs)
        nfe["reward"] = len(calls)
        calls.clear()
        with Clock() as clocks["logprob"]:
            lp = trainer._estimate_logprobs(model, rollout_batch(inputs), with_kl=False)
        nfe["logprob"] = len(calls)
        with Clock() as clocks["backward"]:
            advantages = trainer._compute_advantages(scored.total.float()).detach()
            reinforce_loss(lp.logps, advantages).backward()
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
    finally:
        handle.remove()
    return {p: c.cpu for p, c in clocks.items()}, {p: c.wall for p, c in clocks.items()}, nfe


def rollout_batch(inputs: dict) -> RolloutBatch:
    return RolloutBatch(
        prompt_ids=inputs["prompt_ids"],
        prompt_mask=inputs["prompt_mask"],
        completion_ids=inputs["completion_ids"],
        completion_mask=inputs["completion_mask"],
        commit_step=inputs["commit_step"],
    )


def measure(args, estimator: str, samples: int) -> dict:
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(args, estimator, samples, output_dir)
        trainer.create_optimizer()
        rows = [trainer.train_dataset[i] for i in range(args.batch)]
        cpu, wall = defaultdict(list), defaultdict(list)
        warmup = 0 if args.quick else 1  # a first step warms up lazy inits and the allocator
        for repeat in range(warmup + args.timed_steps):
            step_cpu, step_wall, nfe = one_step(trainer, rows)
            for phase in PHASES:
                if repeat >= warmup:
                    cpu[phase].append(step_cpu[phase])
                    wall[phase].append(step_wall[phase])
        seconds = {phase: statistics.median(cpu[phase]) for phase in PHASES}
        wall_seconds = {phase: statistics.median(wall[phase]) for phase in PHASES}

        # Untimed pass: memory of each phase.
        model = trainer.model
        model.eval()
        peak_sampling, _, inputs = memory_mb(lambda: trainer._generate(rows))
        model.train()
        peak_reward, _, scored = memory_mb(lambda: reward(trainer, inputs))
        peak_logprob, held_logprob, lp = memory_mb(
            lambda: trainer._estimate_logprobs(model, rollout_batch(inputs), with_kl=False)
        )
        loss = reinforce_loss(lp.logps, trainer._compute_advantages(scored.total.float()).detach())
        peak_backward, _, _ = memory_mb(loss.backward)
        model.zero_grad(set_to_none=True)

        model.eval()
        unit = forward_seconds(model, inputs, repeats=3 if args.quick else 10)
    return {
        "seconds": seconds,
        "wall": wall_seconds,
        "fe": {phase: seconds[phase] / unit for phase in PHASES},
        "forward_ms": unit * 1e3,
        "nfe": nfe,
        "peak_mb": {
            "sampling": peak_sampling,
            "logprob": peak_logprob,
            "reward": peak_reward,
            "backward": peak_backward,
        },
        "held_mb": held_logprob,
    }


def recompute_rows(args, model: torch.nn.Module, estimator: str, draws: int) -> tuple:
    """`(peak MB, peak MB, CPU s, CPU s, equal gradients)` of one estimate + backward without / with recompute."""
    generator = torch.Generator().manual_seed(0)
    vocab, rows, prompt, gen = model.config.vocab_size, args.batch, 40, args.gen_length
    batch = RolloutBatch(
        prompt_ids=torch.randint(10, vocab - 10, (rows, prompt), generator=generator),
        prompt_mask=torch.ones(rows, prompt, dtype=torch.long),
        completion_ids=torch.randint(10, vocab - 10, (rows, gen), generator=generator),
        completion_mask=torch.ones(rows, gen, dtype=torch.bool),
        commit_step=torch.arange(gen).expand(rows, gen).clone(),  # one token per step: `gen` steps
    )
    results = []
    for recompute in (False, True):
        model.zero_grad(set_to_none=True)

        def step(recompute=recompute):
            lp = estimate_logprobs(
                model,
                batch,
                estimator=estimator,
                mask_token_id=model.config.mask_token_id,
                generator=torch.Generator().manual_seed(1),
                num_samples=draws,
                reference=model.disable_adapter,
                kl_requires_grad=False,
                recompute=recompute,
                steps=gen,
                block_length=args.block_length,
            )
            (lp.logps * torch.linspace(-1, 1, rows)).mean().backward()

        with Clock() as clock:  # timed without the profiler, which slows every op down
            step()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        model.zero_grad(set_to_none=True)
        peak, _, _ = memory_mb(step)
        results.append((peak, clock.cpu, grads))
    model.zero_grad(set_to_none=True)
    (peak_off, cpu_off, grads_off), (peak_on, cpu_on, grads_on) = results
    return peak_off, peak_on, cpu_off, cpu_on, torch.equal(grads_off, grads_on)


def recompute_table(args) -> None:
    """Memory of one log-prob estimate + backward vs the number of draws, without and with per-draw recompute."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, hidden_size=args.hidden_size, num_hidden_layers=args.layers)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, lora).train()
    cases = [("mc_elbo", 4), ("trajectory", 4)]
    if not args.quick:
        cases = [("mc_elbo", 1), ("mc_elbo", 4), ("mc_elbo", 16), ("trajectory", 4), ("trajectory", 16)]
        cases.append(("trajectory", args.gen_length))
    print(f"\none estimate + backward, {args.batch} rows, prompt 40, completion {args.gen_length} (random tokens)")
    header = f"{'peak MB without':>17}{'with recompute':>16}{'CPU s without':>15}{'with':>7}"
    print(f"{'estimator, draws':<20}{header}  grads")
    for estimator, draws in cases:
        peak_off, peak_on, cpu_off, cpu_on, same = recompute_rows(args, model, estimator, draws)
        grads = "identical" if same else "DIFFER"
        print(f"{f'{estimator}, {draws}':<20}{peak_off:>17.1f}{peak_on:>16.1f}{cpu_off:>15.2f}{cpu_on:>7.2f}  {grads}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small settings for CI (~20 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--mc-samples", type=int, default=4, help="mc_elbo draws")
    parser.add_argument(
        "--trajectory-samples", type=int, default=None, help="trajectory steps evaluated (default: all = exact)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.batch, args.num_generations, args.gen_length, args.block_length, args.timed_steps = 2, 2, 8, 8, 1
        args.hidden_size, args.layers = 64, 2
    else:
        args.batch, args.num_generations, args.gen_length, args.block_length, args.timed_steps = 8, 4, 48, 16, 3
    trajectory_samples = args.trajectory_samples or args.gen_length
    estimators = [
        ("one_step", "one_step", 1),
        (f"mc_elbo x{args.mc_samples}", "mc_elbo", args.mc_samples),
        (f"trajectory x{trajectory_samples}", "trajectory", trajectory_samples),
    ]
    print(
        f"tiny LLaDA {args.layers}x{args.hidden_size} + LoRA r16 (q,k,v,o); batch {args.batch} "
        f"({args.num_generations} generations), gen_length {args.gen_length}, block {args.block_length}, "
        f"steps {args.gen_length}; {args.timed_steps} timed step(s){'' if args.quick else ' after 1 warm-up'}; "
        f"threads {args.threads}"
    )
    results = {label: measure(args, name, samples) for label, name, samples in estimators}

    labels = [label for label, _, _ in estimators]
    width = max(28, *(len(label) + 2 for label in labels))

    def row(name: str, cells: list[str]) -> None:
        print(f"{name:<30}" + "".join(f"{cell:>{width}}" for cell in cells))

    print()
    row("one forward (no grad), CPU ms", [f"{results[label]['forward_ms']:.1f}" for label in labels])
    print("\nCPU seconds / forward-equivalents (FE) [wall seconds]")
    row("phase", labels)
    for phase in PHASES:
        row(
            phase,
            [
                f"{r['seconds'][phase]:.3f}s / {r['fe'][phase]:.1f} [{r['wall'][phase]:.3f}s]"
                for r in (results[label] for label in labels)
            ],
        )
    outside = [sum(results[label]["fe"][p] for p in PHASES if p != "sampling") for label in labels]
    row("outside sampling, FE", [f"{value:.1f}" for value in outside])
    row("target <= 4 FE per sample", ["met" if value <= 4 else "not met" for value in outside])
    nfe = [results[label]["nfe"] for label in labels]
    row("NFE sampling / reward / logprob", [f"{n['sampling']} / {n['reward']} / {n['logprob']}" for n in nfe])
    print("\npeak MB above the phase's start (torch CPU allocations)")
    row("phase", labels)
    for phase in PHASES:
        row(phase, [f"{results[label]['peak_mb'][phase]:.2f}" for label in labels])
    row("held by logprob for backward", [f"{results[label]['held_mb']:.2f}" for label in labels])
    recompute_table(args)


if __name__ == "__main__":
    main()
