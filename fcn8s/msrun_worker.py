"""One msrun worker of ``fcn8s launch``: msrun runs this file as a script, with the launching python.

As a script its own folder (the fcn8s package) would come first on sys.path, where module names
such as ``config`` or ``log`` could hide other packages' modules; it is taken off before fcn8s loads.
"""
import sys
from pathlib import Path

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from fcn8s.cli import main
    sys.exit(main())
