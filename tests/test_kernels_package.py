"""Our top-level `kernels` package must not confuse transformers.

transformers probes an unrelated PyPI package also named `kernels` (Hugging Face kernel hub):
`find_spec("kernels")` finds ours when the repo root is on sys.path; with no distribution
metadata it imports the module and reads `__version__`. Ours is lazy (no jax import) and has no
`__version__`, so `is_kernels_available()` must be False and a transformers model must run.
Runs in a fresh interpreter: this pytest process has already imported jax and our kernels.
"""

import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, Qwen2Config
    from transformers.utils.import_utils import is_kernels_available

    assert not is_kernels_available(), "transformers thinks our kernels/ is the kernel hub"
    import kernels
    assert kernels.__file__.startswith({repo!r}), kernels.__file__
    assert "jax" not in sys.modules, "importing kernels (as transformers does) pulled in jax"

    cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        logits = model(torch.randint(0, 64, (2, 7))).logits
    assert logits.shape == (2, 7, 64) and torch.isfinite(logits).all()

    from kernels import flash_attention, reference_attention  # lazy exports resolve to functions
    assert callable(flash_attention) and callable(reference_attention)
    print("OK")
""")


def test_transformers_unaffected_by_our_kernels_package():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(repo=str(REPO))], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


def test_lazy_exports():
    import kernels
    from kernels.flash import flash_attention

    assert kernels.flash_attention is flash_attention
    assert sorted(dir(kernels)) == sorted(kernels.__all__)
    with pytest.raises(AttributeError, match="no_such_kernel"):
        kernels.no_such_kernel  # noqa: B018 - the attribute access is what raises
