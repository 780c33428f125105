"""Supervised fine-tuning of a masked diffusion LM on `transformers.Trainer`: `DiffusionSFTTrainer`.

Why not TRL's `SFTTrainer`: it trains next-token prediction (shifted labels, causal attention), which is the wrong
objective for a mask predictor. This trainer keeps TRL's constructor, dataset formats and defaults, and swaps the
objective for LLaDA's SFT loss (`diffusion_rl.sft`):

```
rows (prompt/completion or messages) -> DiffusionSFTCollator -> tokenize_sft_pairs (the RL sampler's layout:
left-padded chat-templated prompt | answer + EOT + EOS padding to completion_length)
-> masked_diffusion_sft_loss (t ~ U(0,1), mask answer tokens w.p. p, CE on masked / p) -> backward
```

Every row is checked when the trainer is built (formats, roles, prompt and answer lengths, the mask token), so a bad
row fails before the first forward pass, not hours into a run. The masks come from a per-process `torch.Generator`
saved in every checkpoint, so a resumed run is bit-for-bit the uninterrupted one; evaluation draws from its own
generator, re-seeded at each `evaluate()`, so eval losses of successive checkpoints share their masks and differ only
by the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from transformers import AutoTokenizer, PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .checks import (
    check_lora_targets,
    check_not_already_peft,
    check_one_process_per_gpu,
    check_tokenizer_mask,
    check_trainable,
    load_masked_diffusion_model,
)
from .data.chat import tokenize_prompts
from .generator_state import load_generator_states, save_generator_states
from .model_card import write_model_card
from .output_lock import acquire_output_dir_lock
from .preflight import check_finite_weights
from .resume import checkpoint_to_resume
from .run_settings import COMMON_FIELDS, run_settings, save_run_settings
from .sft import masked_diffusion_sft_loss, tokenize_sft_pairs
from .sft_config import DiffusionSFTConfig

__all__ = ["DiffusionSFTCollator", "DiffusionSFTTrainer", "split_sft_example"]

logger = logging.get_logger(__name__)

SFT_TAGS = ["diffusion-rl", "llada", "sft"]

# Config fields shown in the model card (with the resolved completion_length).
_CARD_FIELDS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "max_prompt_length",
    "system_prompt",
    "mask_eps",
    "seed",
)

# Stored in every checkpoint and compared on resume (with the resolved completion_length; diffusion_rl.run_settings).
_RUN_SETTINGS_FIELDS = (*COMMON_FIELDS, "max_prompt_length", "system_prompt", "mask_eps")

# Offsets of the per-process generator seeds (primes, as in the RL trainer): ranks draw different masks.
_RANK_STRIDE = 7919
_EVAL_OFFSET = 104729


def _check_message(message: Any, where: str) -> dict[str, str]:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise ValueError(f"{where} must be a {{'role': str, 'content': str}} dict, got {message!r:.100}.")
    if not isinstance(message.get("content"), str):
        raise ValueError(
            f"{where} needs string 'content' (multimodal content is not supported), got {message!r:.100}."
        )
    return {"role": message["role"], "content": message["content"]}


def _check_answer(answer: str, where: str) -> str:
    # An empty answer is laid out as a lone EOT: the row silently taught the model to answer with nothing (and when
    # every answer is empty, completion_length became 1). Usually a missing or misnamed column filled with "".
    if not answer.strip():
        raise ValueError(
            f"{where} has an empty answer: it would teach the model to answer with nothing (an EOT at once). Remove "
            "the row, or give it the answer text (check that the completion column holds the answers)."
        )
    return answer


def split_sft_example(
    row: Mapping[str, Any],
    where: str = "row",
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    messages_field: str = "messages",
) -> tuple[str | list[dict[str, str]], str]:
    """One dataset row in any supported format -> `(prompt, answer text)` for `tokenize_sft_pairs`.

    Formats (TRL's): prompt-completion, where the prompt is a string or a list of chat messages and the completion a
    string or a list holding one assistant message; or conversational `messages`, whose last message is the
    assistant's answer and the messages before it the prompt. A string prompt is the user message, so the three
    spellings of the same exchange give the same tokens.

    Args:
        row (`Mapping[str, Any]`): The dataset row.
        where (`str`, *optional*, defaults to `"row"`): How errors name the row (e.g. `"train_dataset row 3"`).
        prompt_field (`str`, *optional*, defaults to `"prompt"`): Prompt column.
        completion_field (`str`, *optional*, defaults to `"completion"`): Answer column.
        messages_field (`str`, *optional*, defaults to `"messages"`): Conversation column.

    Returns:
        `tuple[str | list[dict], str]`: the prompt (string or messages) and the answer text.
    """
    if prompt_field in row:
        if completion_field not in row:
            raise ValueError(f"{where} has a {prompt_field!r} but no {completion_field!r} column.")
        prompt, completion = row[prompt_field], row[completion_field]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError(f"{where} has an empty prompt; remove the row or give it text.")
        elif isinstance(prompt, Sequence) and prompt:
            prompt = [_check_message(m, f"{where}, prompt message {j}") for j, m in enumerate(prompt)]
        else:
            raise ValueError(
                f"{where}: {prompt_field!r} must be a string or a non-empty list of chat messages, "
                f"got {prompt!r:.100}."
            )
        if isinstance(completion, str):
            return prompt, _check_answer(completion, where)
        if isinstance(completion, Sequence) and len(completion) == 1:
            message = _check_message(completion[0], f"{where}, completion message 0")
            if message["role"] != "assistant":
                raise ValueError(
                    f"{where}: the completion message has role {message['role']!r}; it must be 'assistant'."
                )
            return prompt, _check_answer(message["content"], where)
        raise ValueError(
            f"{where}: {completion_field!r} must be a string or a list with exactly one assistant message (the answer "
            f"slot holds one turn), got {completion!r:.100}."
        )
    if messages_field in row:
        messages = row[messages_field]
        if not isinstance(messages, Sequence) or isinstance(messages, str) or len(messages) < 2:
            raise ValueError(
                f"{where}: {messages_field!r} must be a list of at least two chat messages (a prompt, then the "
                f"assistant's answer), got {messages!r:.100}."
            )
        messages = [_check_message(m, f"{where}, message {j}") for j, m in enumerate(messages)]
        if messages[-1]["role"] != "assistant":
            raise ValueError(
                f"{where}: the last message has role {messages[-1]['role']!r}; in the {messages_field!r} format the "
                "last message must be the assistant's answer."
            )
        return messages[:-1], _check_answer(messages[-1]["content"], where)
    raise ValueError(
        f"{where} has neither {prompt_field!r}/{completion_field!r} nor {messages_field!r} (keys: {sorted(row)}); "
        "rename the columns or set dataset_prompt_field / dataset_completion_field / dataset_messages_field."
    )


class DiffusionSFTCollator:
    """Dataset rows -> `input_ids`, `attention_mask`, `answer_mask` `(B, P + C)` in the RL sampler's layout.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): Chat tokenizer (see `tokenize_sft_pairs`).
        completion_length (`int`): Answer slot length `C`.
        max_prompt_length (`int`, *optional*): Longer prompts raise `ValueError`.
        system_prompt (`str`, *optional*): System message prepended to every prompt.
        prompt_field (`str`, *optional*, defaults to `"prompt"`): Prompt column (see [`split_sft_example`]).
        completion_field (`str`, *optional*, defaults to `"completion"`): Answer column.
        messages_field (`str`, *optional*, defaults to `"messages"`): Conversation column.
    """

    def __init__(
        self,
        tokenizer,
        *,
        completion_length: int,
        max_prompt_length: int | None = None,
        system_prompt: str | None = None,
        prompt_field: str = "prompt",
        completion_field: str = "completion",
        messages_field: str = "messages",
    ):
        self.tokenizer = tokenizer
        self.completion_length = completion_length
        self.max_prompt_length = max_prompt_length
        self.system_prompt = system_prompt
        self.fields = {"prompt_field": prompt_field, "completion_field": completion_field}
        self.fields["messages_field"] = messages_field

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = [split_sft_example(row, f"batch row {i}", **self.fields) for i, row in enumerate(features)]
        return tokenize_sft_pairs(
            self.tokenizer,
            [prompt for prompt, _ in pairs],
            [answer for _, answer in pairs],
            completion_length=self.completion_length,
            max_prompt_length=self.max_prompt_length,
            system_prompt=self.system_prompt,
        )


class DiffusionSFTTrainer(Trainer):
    """Trainer for masked-diffusion SFT (LLaDA's objective) with LoRA or full fine-tuning.

    Args:
        model (`str` or `PreTrainedModel`):
            The model to train, or a path / Hub id loaded with `AutoModelForCausalLM.from_pretrained` (LLaDA is
            registered with the Auto classes). Its config must define `mask_token_id`.
        args ([`DiffusionSFTConfig`], *optional*):
            Configuration; defaults to `DiffusionSFTConfig(output_dir="<model name>-DiffusionSFT")`.
        train_dataset (`datasets.Dataset`, *optional*):
            Rows in TRL's prompt-completion format (strings or chat messages) or conversational `messages` format
            (see [`split_sft_example`]); other columns are ignored.
        eval_dataset (`datasets.Dataset` or `dict[str, datasets.Dataset]`, *optional*):
            Evaluation dataset(s), same formats; `evaluate()` reports the SFT loss as `eval_loss`.
        processing_class (`PreTrainedTokenizerBase`, *optional*):
            Tokenizer with a chat template; loaded from the model's path when omitted.
        peft_config (`peft.PeftConfig`, *optional*):
            Adapter configuration: only the adapter trains. Without it every parameter trains (full fine-tuning).
        callbacks (`list[TrainerCallback]`, *optional*):
            Extra callbacks.
        optimizers (`tuple`, *optional*, defaults to `(None, None)`):
            Optimizer and scheduler (AdamW and the configured schedule when `None`).

    Map-style datasets are checked row by row when the trainer is built (formats, roles, answers longer than
    `completion_length`, prompts longer than `max_prompt_length`, the mask token inside the text). A streaming
    (`IterableDataset`) one cannot be scanned: it needs `completion_length` and its rows are checked per batch.
    """

    _tag_names = SFT_TAGS

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: DiffusionSFTConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config: PeftConfig | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
    ):
        # ---- validate everything that needs no model first ----
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = DiffusionSFTConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-DiffusionSFT")
        elif not isinstance(args, DiffusionSFTConfig):
            raise TypeError(f"args must be a DiffusionSFTConfig, got {type(args).__name__}.")
        check_one_process_per_gpu(args)
        if train_dataset is None and eval_dataset is None:
            raise ValueError("pass a train_dataset (and/or an eval_dataset) with prompt/completion or messages rows.")
        datasets = {"train_dataset": train_dataset}
        if isinstance(eval_dataset, dict):
            datasets.update({f"eval_dataset[{key!r}]": value for key, value in eval_dataset.items()})
        else:
            datasets["eval_dataset"] = eval_dataset
        datasets = {name: value for name, value in datasets.items() if value is not None}
        check_not_already_peft(model, peft_config)

        # One run per output_dir (a second run would overwrite this one's checkpoints): before any model is loaded.
        output_lock = acquire_output_dir_lock(args)

        # ---- model, tokenizer ----
        model = load_masked_diffusion_model(model)
        mask_token_id = model.config.mask_token_id
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)
        self._check_tokenizer(processing_class, mask_token_id)
        self.mask_token_id = int(mask_token_id)

        # ---- every row, before any compute ----
        self.completion_length, longest_prompt = self._check_datasets(processing_class, args, datasets)
        self._check_positions(model, longest_prompt, self.completion_length)
        # NaN/inf weights would train on (transformers logs such a loss as 0.0) and be saved in every checkpoint.
        check_finite_weights(model)

        # ---- adapter ----
        if peft_config is not None:
            check_lora_targets(model, getattr(peft_config, "target_modules", None))
            # The adapter's random init depends only on args.seed (same on every rank), not on the global RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                model = get_peft_model(model, peft_config)
        check_trainable(model)

        collator = DiffusionSFTCollator(
            processing_class,
            completion_length=self.completion_length,
            max_prompt_length=args.max_prompt_length,
            system_prompt=args.system_prompt,
            prompt_field=args.dataset_prompt_field,
            completion_field=args.dataset_completion_field,
            messages_field=args.dataset_messages_field,
        )
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        # compute_loss returns a per-micro-batch mean: let Trainer divide it by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False

        seed = self.args.seed + _RANK_STRIDE * self.args.process_index
        self._mask_generator = torch.Generator(self.args.device).manual_seed(seed)
        self._eval_seed = seed + _EVAL_OFFSET
        self._eval_generator = torch.Generator(self.args.device).manual_seed(self._eval_seed)
        self._output_lock = output_lock  # released when the process ends

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`, with `resume_from_checkpoint` checked first (see [`diffusion_rl.resume`]).

        A checkpoint folder that lacks a file a resume needs (the optimizer, the scheduler, the RNG states, the
        mask generator's `diffusion_rng_state_<rank>.pth`) or holds a truncated one raises `IncompleteCheckpointError`
        naming the file, instead of resuming with fresh state; `True` picks the newest *complete* checkpoint and logs
        which newer ones it skipped. An adapter checkpoint must fit the model's adapter. Settings that differ from
        the checkpoint's (`run_settings.json`) are listed in one `ChangedSettingsWarning` (see
        [`diffusion_rl.run_settings`]).
        """
        checkpoint = checkpoint_to_resume(
            resume_from_checkpoint, self.model, self.args, self.accelerator, settings=self._run_settings()
        )
        return super().train(checkpoint, *args, **kwargs)

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _check_tokenizer(tokenizer, mask_token_id: int) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "the tokenizer has no chat_template; prompts are rendered with it exactly as the RL trainer does. Set "
                "tokenizer.chat_template (e.g. copy it from the model's tokenizer_config.json)."
            )
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; LLaDA-style answers are padded with EOS.")
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad_token_id; set tokenizer.pad_token (it must differ from the mask)."
            )
        for name in ("pad_token_id", "eos_token_id"):
            if getattr(tokenizer, name) == mask_token_id:
                raise ValueError(
                    f"tokenizer.{name} is the mask token id {mask_token_id}: the model could not tell padding from "
                    "masked positions. Use another pad/eos token."
                )
        check_tokenizer_mask(tokenizer, mask_token_id)

    def _check_datasets(
        self, tokenizer, args: DiffusionSFTConfig, datasets: dict[str, Any]
    ) -> tuple[int, tuple[int, str]]:
        """Check every row of the map-style datasets; return the completion length to use and the longest rendered
        prompt as `(tokens, where)`."""
        fields = {
            "prompt_field": args.dataset_prompt_field,
            "completion_field": args.dataset_completion_field,
            "messages_field": args.dataset_messages_field,
        }
        longest, longest_where = 0, ""
        longest_prompt: tuple[int, str] = (0, "")
        answer_lengths: dict[str, list[int]] = {}
        for name, dataset in datasets.items():
            if not hasattr(dataset, "__len__"):
                if args.completion_length is None:
                    raise ValueError(
                        f"{name} is a streaming dataset, so the longest answer cannot be measured: set "
                        "completion_length (the RL sampler's gen_length)."
                    )
                logger.warning(f"{name} is a streaming dataset: its rows are checked per batch, not in advance.")
                continue
            if len(dataset) == 0:
                raise ValueError(f"{name} is empty.")
            columns = getattr(dataset, "column_names", None) or list(dataset[0].keys())
            if args.dataset_prompt_field in columns and args.dataset_messages_field in columns:
                raise ValueError(
                    f"{name} has both a {args.dataset_prompt_field!r} and a {args.dataset_messages_field!r} column; "
                    "keep one format (prompt/completion or messages), e.g. dataset.remove_columns(...)."
                )
            rows = dataset.to_list() if hasattr(dataset, "to_list") else [dataset[i] for i in range(len(dataset))]
            pairs = [split_sft_example(row, f"{name} row {i}", **fields) for i, row in enumerate(rows)]
            prompt_lengths = self._check_prompts(tokenizer, [p for p, _ in pairs], args, name)
            i = max(range(len(prompt_lengths)), key=prompt_lengths.__getitem__)
            if prompt_lengths[i] > longest_prompt[0]:
                longest_prompt = (prompt_lengths[i], f"{name} row {i}")
            # The answer as tokenize_sft_pairs lays it out: its tokens, then the EOT.
            ids = tokenizer([a for _, a in pairs], add_special_tokens=False)["input_ids"]
            for i, row_ids in enumerate(ids):
                if self.mask_token_id in row_ids:
                    raise ValueError(f"{name} row {i}: the answer contains the mask token; remove it from the text.")
            answer_lengths[name] = [len(row_ids) + 1 for row_ids in ids]
            i = max(range(len(ids)), key=answer_lengths[name].__getitem__)
            if answer_lengths[name][i] > longest:
                longest, longest_where = answer_lengths[name][i], f"{name} row {i}"
        if args.completion_length is None:
            return longest, longest_prompt
        for name, lengths in answer_lengths.items():
            for i, length in enumerate(lengths):
                if length > args.completion_length:
                    raise ValueError(
                        f"{name} row {i}: the answer needs {length} tokens with its EOT but completion_length is "
                        f"{args.completion_length} (the longest answer, {longest_where}, needs {longest}); raise "
                        "completion_length or shorten the answer."
                    )
        return args.completion_length, longest_prompt

    @staticmethod
    def _check_positions(model, longest_prompt: tuple[int, str], completion_length: int) -> None:
        """The longest rendered prompt plus the answer slot must fit the model's positions (RoPE beyond the trained
        range gives garbage without an error)."""
        limit = getattr(model.config, "max_position_embeddings", None)
        length, where = longest_prompt
        where = where or "the rows"  # a streaming dataset's prompts are not measured in advance
        if limit is not None and length + completion_length > limit:
            raise ValueError(
                f"{where}: its prompt is {length} tokens and the answer slot {completion_length}, "
                f"{length + completion_length} in all, more than the model's max_position_embeddings "
                f"({limit}). DiffusionSFTTrainer does not cut prompts: shorten or drop the row, or lower "
                "completion_length."
            )

    def _check_prompts(self, tokenizer, prompts: list, args: DiffusionSFTConfig, name: str) -> list[int]:
        """Render every prompt as the collator will (chat template, system prompt, length limit); return each
        rendered prompt's length in tokens."""
        chunk = 256
        lengths: list[int] = []
        for start in range(0, len(prompts), chunk):
            part = prompts[start : start + chunk]
            try:
                # Measured without the limit, compared below: tokenize_prompts' own message offers truncate_left,
                # which this trainer does not have.
                rendered = tokenize_prompts(tokenizer, part, system_prompt=args.system_prompt)
                ids = rendered["input_ids"]  # (n, P)
                lengths += rendered["attention_mask"].sum(dim=1).tolist()
            except (TypeError, ValueError):
                for j, prompt in enumerate(part):  # find the row, then name it
                    try:
                        tokenize_prompts(tokenizer, [prompt], system_prompt=args.system_prompt)
                    except (TypeError, ValueError) as error:
                        raise ValueError(f"{name} row {start + j}: {error}") from error
                raise
            bad = (ids == self.mask_token_id).any(dim=1).nonzero()
            if len(bad):
                raise ValueError(
                    f"{name} row {start + int(bad[0])}: the prompt contains the mask token; remove it from the text."
                )
        limit = args.max_prompt_length
        too_long = [i for i, length in enumerate(lengths) if limit is not None and length > limit]
        if too_long:
            i = too_long[0]
            # Worded as tokenize_prompts' message ("prompt 0" of the row), with this trainer's fixes.
            raise ValueError(
                f"{name} row {i}: prompt 0 is {lengths[i]} tokens long after the chat template, more than "
                f"max_prompt_length={limit} ({len(too_long)} row(s) are). DiffusionSFTTrainer does not cut prompts: "
                "raise max_prompt_length (or leave it unset), or shorten or drop those rows."
            )
        return lengths

    # ------------------------------------------------------------------ data

    def _set_signature_columns_if_needed(self) -> None:
        # With remove_unused_columns=True, keep the columns the collator reads (the model's forward takes none).
        if self._signature_columns is None:
            args = self.args
            self._signature_columns = [
                args.dataset_prompt_field,
                args.dataset_completion_field,
                args.dataset_messages_field,
            ]

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """LLaDA's SFT loss of one micro-batch (`masked_diffusion_sft_loss`), masks from this process's generator."""
        generator = self._mask_generator if self.model.training else self._eval_generator
        loss = masked_diffusion_sft_loss(
            model,
            inputs["input_ids"],
            inputs["answer_mask"],
            attention_mask=inputs["attention_mask"],
            mask_token_id=self.mask_token_id,
            generator=generator,
            eps=self.args.mask_eps,
        )
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        """The SFT loss on an eval batch (no logits: a mask predictor's loss needs its own masks)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate` with the eval masks re-seeded: every evaluation of a dataset draws the same masks."""
        self._eval_generator.manual_seed(self._eval_seed)
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    # ------------------------------------------------------------------ checkpoints

    def _run_settings(self) -> dict[str, Any]:
        """What `run_settings.json` holds and a resume compares (see [`diffusion_rl.run_settings`])."""
        return run_settings(self.args, _RUN_SETTINGS_FIELDS, completion_length=self.completion_length)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            save_run_settings(folder, self._run_settings())

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        save_generator_states(output_dir, self.args.process_index, {"mask": self._mask_generator})

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)
        load_generator_states(checkpoint, self.args.process_index, {"mask": self._mask_generator})

    # ------------------------------------------------------------------ model card

    def _card_kwargs(self) -> dict[str, Any]:
        recipe = {"completion_length": self.completion_length}
        recipe.update({name: getattr(self.args, name) for name in _CARD_FIELDS})
        is_adapter = isinstance(self.accelerator.unwrap_model(self.model), PeftModel)
        return {
            "trainer_name": "DiffusionSFTTrainer",
            "method": "masked-diffusion SFT",
            "base_tags": [*SFT_TAGS, "lora"] if is_adapter else SFT_TAGS,
            "recipe": recipe,
        }

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        """Write `output_dir/README.md`: PEFT metadata, tags, the SFT recipe and final metrics."""
        if self.is_world_process_zero():
            write_model_card(self, self.args.output_dir, model_name, dataset_name, tags, **self._card_kwargs())

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            # After PEFT's own README: ours carries the SFT recipe and the metrics.
            directory = output_dir if output_dir is not None else self.args.output_dir
            write_model_card(self, directory, **self._card_kwargs())
