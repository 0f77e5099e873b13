"""`python -m tflite_bench`: see `tflite_bench.cli`."""

import sys

from tflite_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
