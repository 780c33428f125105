"""The completions table: prompts, completions, rewards and advantages logged since the last `log` call, written to
parquet, wandb, tensorboard and/or the console (`log_completions`, `num_completions_to_print`).
"""

from __future__ import annotations

import os


def log_completions_table(trainer, table: dict[str, list], mode: str) -> None:
    """Write the completions logged since the last `log` call (main process only).

    With `log_completions`: to `output_dir/completions/<mode>_step_<step>.parquet`, and to wandb / tensorboard when
    `report_to` asks for them. With `num_completions_to_print`: a rich table of that many rows on the console.

    Args:
        trainer (`DiffusionReinforceTrainer`):
            The trainer (its `args`, `state` and callbacks are read).
        table (`dict[str, list]`):
            Columns of equal length: `step`, `prompt`, `completion`, `rewards/<name>` per reward function,
            `reward` (weighted total), `advantage`, `logp` and `kl` (when computed).
        mode (`str`):
            `"train"` or `"eval"`.
    """
    args, step = trainer.args, trainer.state.global_step
    if args.log_completions:
        import pandas as pd  # a dependency of `datasets`

        frame = pd.DataFrame(table)
        directory = os.path.join(args.output_dir, "completions")
        os.makedirs(directory, exist_ok=True)
        frame.to_parquet(os.path.join(directory, f"{mode}_step_{step:07d}.parquet"), index=False)
        report_to = args.report_to or []
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({f"{mode}/completions": wandb.Table(dataframe=frame)})
        if "tensorboard" in report_to:
            for callback in trainer.callback_handler.callbacks:
                writer = getattr(callback, "tb_writer", None)
                if writer is not None:
                    writer.add_text(f"{mode}/completions", frame.to_string(index=False), step)
    num_print = args.num_completions_to_print
    if num_print:
        from trl.trainer.utils import print_prompt_completions_sample

        # The first rows, not TRL's random subset: that one draws from Python's global RNG.
        rows = {k: v[:num_print] for k, v in table.items()}
        rewards = {k: v for k, v in rows.items() if k == "reward" or k.startswith("rewards/")}
        extra = {k: rows[k] for k in ("logp", "kl") if k in rows}
        print_prompt_completions_sample(
            rows["prompt"], rows["completion"], rewards, rows["advantage"], step, extra=extra
        )
