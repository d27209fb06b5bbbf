"""`python -m robot_compress.edge`: the same as `robot-compress edge-serve`."""

import sys

from robot_compress.edge.command import main

sys.exit(main())
