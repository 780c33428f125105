"""Train a LoRA adapter for a masked diffusion LM (LLaDA) with REINFORCE to reduce gender bias.

    accelerate launch examples/train_llada_bias.py                       # embedded tiny model, CPU, minutes
    accelerate launch examples/train_llada_bias.py --config examples/recipes/rloo_mc_elbo.yaml
    accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/train_llada_bias.py \
        --model_name_or_path GSAI-ML/LLaDA-8B-Instruct --output_dir outputs/llada-debias --push_to_hub true

Reward R = -(|GenBit bias of the completion| + kl_coef * KL(lora || base)); see `diffusion_rl.bias.train`
for the steps, and `python examples/train_llada_bias.py --help` for every flag (training, sampler, estimator,
LoRA, data). The job prints a before/after table and writes `report.json`, `report.md` and plots to output_dir.
"""

from diffusion_rl.bias.train import main

if __name__ == "__main__":
    main()
