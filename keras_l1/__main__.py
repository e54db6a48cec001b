"""`python -m keras_l1` runs the `keras-l1` command line."""

import sys

from keras_l1.cli import main

sys.exit(main())
