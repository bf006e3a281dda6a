"""`python -m msir_keras.cli`: the `msir` command."""

import sys

from msir_keras.cli import main

sys.exit(main())
