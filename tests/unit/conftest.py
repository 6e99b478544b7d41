import sys
from pathlib import Path

# Let unit tests import their local factories module.
sys.path.insert(0, str(Path(__file__).parent))
