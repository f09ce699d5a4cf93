"""Settings every test shares. Test modules are packages (``tests.models.test_vae``...); helpers are imported as
``tests.helpers.*`` through the repository root, which pytest puts on the path: no ``sys.path`` edits here."""

import torch

# Tests use tiny tensors: one thread avoids oversubscription on small shared CI machines.
torch.set_num_threads(1)
