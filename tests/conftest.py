"""Settings every test shares. Test modules are packages (``tests.models.test_vae``...); helpers are imported as
``tests.helpers.*`` through the repository root, which pytest puts on the path: no ``sys.path`` edits here."""

import pytest
import torch

from infinitystar.generation.pipeline import InfinityStarPipeline
from tests.helpers.pipeline import TINY_PIPELINE, make_released_layout

# Tests use tiny tensors: one thread avoids oversubscription on small shared CI machines.
torch.set_num_threads(1)


# The tiny released-layout model most pipeline-level tests use (written once per test module; modules that need
# another model define their own ``pipe``).
@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return make_released_layout(tmp_path_factory.mktemp("released"))


@pytest.fixture(scope="module")
def pipe(released):
    p = InfinityStarPipeline.from_pretrained(released, device="cpu", config=TINY_PIPELINE)
    p.set_progress_bar_config(disable=True)
    return p


# The tiny model saved in our layout: what command-line tests pass to --checkpoint (module-scoped: written once).
@pytest.fixture(scope="module")
def tiny_model_dir(released, tmp_path_factory):
    pipe = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE)
    return pipe.save_pretrained(tmp_path_factory.mktemp("ours") / "model")
