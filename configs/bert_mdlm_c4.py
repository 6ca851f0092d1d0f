"""BERT turned generative: fine-tune a pretrained BERT with the MDLM objective on C4 (Sahoo et al.,
2024, section 5.1 and appendix D.6: C4 validation PPL <= 78 before, <= 35 after 5k steps; GLUE
kept, Table 4).

    python -m mdlm_jax.main --config=configs/bert_mdlm_c4.py --workdir=/runs/bert_mdlm_c4 \
        --config.model.pretrained=/models/bert-base-uncased \
        --config.data.path=/data/c4 --config.data.tokenizer_path=/models/bert-base-uncased
    # the bound of BERT before fine-tuning (an empty workdir: the pretrained weights as they are)
    python -m mdlm_jax.main --mode=eval --config=configs/bert_mdlm_c4.py --workdir=/runs/bert_before \
        --config.model.pretrained=/models/bert-base-uncased --config.data.path=/data/c4 \
        --config.data.tokenizer_path=/models/bert-base-uncased
    # after: --mode=eval --workdir=/runs/bert_mdlm_c4; watch it write: --mode=sample
    python -m mdlm_jax.interop export --workdir=/runs/bert_mdlm_c4 --format hf-bert --out /runs/bert_mdlm_hf
    python -m mdlm_jax.glue --init /runs/bert_mdlm_hf --data /data/glue --tasks all --out /runs/glue_ft

model.pretrained is a Hugging Face BERT directory (config.json + model.safetensors or
pytorch_model.bin, e.g. bert-base-uncased; a bare BertModel gets an MLM head initialised as HF
does): its architecture replaces the model fields and its weights the initialisation
(train.init_checkpoint=WORKDIR starts from one of our checkpoints instead). data.path holds
allenai/c4's en/c4-{train,validation}.*.json.gz shards (any subset; 5k steps x 512 x 128 is 328M
tokens, about 2% of C4's train split: the recipe is quoted as 32M tokens, which its batch and steps
do not give; we follow the batch and the steps); validation reads the published validation shards.

The recipe: bert-base-uncased at L = 128, documents wrapped, the tokenizer's own [MASK] (103) as
the diffusion mask, no time conditioning (a BERT sees only tokens), AdamW lr 5e-5 with betas
(0.95, 0.999) and 2,500 warmup steps, batch 512, 5k steps, continuous-time MDLM loss.
"""

from mdlm_jax.config import apply_arg, default_config


def get_config(arg=None):
    c = default_config()
    c.model.update(name="bert", time_conditioning=False)
    c.data.update(source="c4", tokenizer="bert-base-uncased", seq_len=128, packing="wrap")
    c.optim.update(lr=5e-5, beta1=0.95, beta2=0.999, warmup_steps=2500)
    c.train.update(batch_size=512, steps=5_000, eval_every=1_000, checkpoint_every=1_000)
    return apply_arg(c, arg)
