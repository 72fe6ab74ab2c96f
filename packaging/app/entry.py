"""The bundled app's entry point: the ``diffrecon`` command (bare, it opens the viewer)."""

import sys

from diffrecon.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
