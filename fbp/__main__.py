import sys

from fbp.cli import main

sys.exit(main())
