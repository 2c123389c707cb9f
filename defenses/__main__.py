import sys

from defenses.cli import main

sys.exit(main())
