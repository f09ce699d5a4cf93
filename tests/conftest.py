import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests use tiny tensors: one thread avoids oversubscription on small shared CI machines.
torch.set_num_threads(1)
