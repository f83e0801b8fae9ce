import sys

from runner.embedded import main

sys.exit(main())
